//! The caller's notion of time, so every wait in the driver has a deadline.

/// A monotonic microsecond clock supplied by the caller (the kernel passes
/// its TSC clock; tests pass a simulated clock that advances on every read).
pub trait Clock {
    /// Microseconds since an arbitrary, fixed origin. Must never go backwards.
    fn now_us(&self) -> u64;

    /// Lets a little time pass between two polls of the TPM. The default
    /// spins. A kernel can halt until its next timer interrupt instead:
    /// under emulation the TPM is a host process that needs the host CPU
    /// the spinning guest CPU would hold.
    fn relax(&self) {
        core::hint::spin_loop();
    }

    /// Called when a wait is over (done or timed out), to undo what
    /// [`Clock::relax`] set up for it. The default does nothing.
    fn wait_over(&self) {}
}
