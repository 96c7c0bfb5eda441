//! The caller's notion of time, so every wait in the driver has a deadline.

/// A monotonic microsecond clock supplied by the caller (the kernel passes
/// its TSC clock; tests pass a simulated clock that advances on every read).
pub trait Clock {
    /// Microseconds since an arbitrary, fixed origin. Must never go backwards.
    fn now_us(&self) -> u64;
}
