//! The kernel heap: talc over one free RAM region chosen at boot.

use core::sync::atomic::{AtomicBool, Ordering};
use talc::TalcLock;
use talc::source::Manual;

/// A spin lock for the allocator. The kernel runs on one CPU and the timer
/// handler never allocates, so the lock is never contended; it only makes
/// the allocator `Sync`.
#[derive(Debug)]
pub struct SpinLock(AtomicBool);

// SAFETY: `lock` only returns once it has swapped the flag from false to
// true, `unlock` releases it, so at most one holder exists at a time.
unsafe impl lock_api::RawMutex for SpinLock {
    const INIT: Self = SpinLock(AtomicBool::new(false));
    type GuardMarker = lock_api::GuardSend;

    fn lock(&self) {
        while !self.try_lock() {
            core::hint::spin_loop();
        }
    }

    fn try_lock(&self) -> bool {
        self.0
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    unsafe fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }
}

#[global_allocator]
static ALLOCATOR: TalcLock<SpinLock, Manual> = TalcLock::new(Manual);

/// Why the heap could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapTooSmall;

/// Hands `[start, end)` to the allocator.
///
/// # Safety
/// The range must be identity-mapped RAM that nothing else uses, now or
/// later (not the kernel image, boot data, firmware tables or modules).
pub unsafe fn init(start: u64, end: u64) -> Result<(), HeapTooSmall> {
    let len = end.checked_sub(start).ok_or(HeapTooSmall)? as usize;
    // SAFETY: the caller gives us exclusive RAM; `Manual` allows claims.
    unsafe { ALLOCATOR.lock().claim(start as *mut u8, len) }
        .map(|_| ())
        .ok_or(HeapTooSmall)
}
