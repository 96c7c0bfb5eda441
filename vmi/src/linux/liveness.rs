//! Whether a kernel image in guest RAM belongs to a running kernel, from its
//! tick count (`jiffies_64`) alone.
//!
//! The A-VM takes a kernel image that turns up elsewhere in RAM for the
//! rebooted Mon-VM's new kernel. A rootkit could instead write a clean copy
//! of the running kernel elsewhere (a decoy) for the A-VM to watch, while
//! the real kernel runs on unwatched. Two facts tell them apart:
//! - the kernel the A-VM watches must tick: a running kernel updates
//!   `jiffies_64` every fraction of a second even when idle (an idle
//!   Debian Mon-VM at least every 0.52 s, docs/monitoring.md), a copy
//!   nobody runs never does ([`Ticking`]);
//! - the kernel left behind at a reboot must not tick: QEMU's reset stops
//!   it for good, while the real kernel behind a decoy goes on counting
//!   ([`LeftBehind`]).
//!
//! Both are pure state machines fed with reads, so the A-VM's use of them
//! is tested here on made-up sequences.

/// Most ticks a second any Linux configuration counts (`CONFIG_HZ=1000`).
pub const MAX_HZ: u64 = 1000;
/// Rises of a left-behind kernel's tick count that show it runs.
pub const LEFT_BEHIND_RISES: u32 = 3;

/// The watched kernel's tick count, which must move.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ticking {
    /// The last value read, and when it last changed (or was first read).
    last: Option<u64>,
    moved_at_us: u64,
    started: bool,
}

impl Ticking {
    /// Feeds one read of `jiffies_64` (`None`: it could not be read, which
    /// moves nothing) at `now_us`. Returns whether the kernel has stalled:
    /// its count has not changed for more than `stall_us`.
    pub fn read(&mut self, value: Option<u64>, now_us: u64, stall_us: u64) -> bool {
        if !self.started {
            self.started = true;
            self.last = value;
            self.moved_at_us = now_us;
            return false;
        }
        if value.is_some() && value != self.last {
            self.last = value;
            self.moved_at_us = now_us;
        }
        now_us.saturating_sub(self.moved_at_us) > stall_us
    }
}

/// The kernel left behind at a reboot, whose tick count must stay still.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeftBehind {
    last: Option<u64>,
    at_us: u64,
    rises: u32,
    running: bool,
}

impl LeftBehind {
    /// Starts watching with the tick count as read at the reboot.
    pub fn new(value: Option<u64>, now_us: u64) -> Self {
        LeftBehind {
            last: value,
            at_us: now_us,
            rises: 0,
            running: false,
        }
    }

    /// Feeds one read of the left-behind kernel's `jiffies_64` at `now_us`;
    /// `intact` says its image is still where it was. Returns whether it
    /// was seen running since the reboot (for good, once seen):
    /// [`LEFT_BEHIND_RISES`] rises of its count while intact, each by at
    /// most what [`MAX_HZ`] ticks in the time since the read before. A
    /// value that falls, jumps further, or cannot be read, or an image no
    /// longer intact, starts the count again: the new kernel reusing the
    /// old one's memory writes anything there, but not a clock.
    pub fn read(&mut self, value: Option<u64>, intact: bool, now_us: u64) -> bool {
        if self.running {
            return true;
        }
        let elapsed_us = now_us.saturating_sub(self.at_us);
        // At most MAX_HZ ticks a second, one more for a tick between.
        let most = elapsed_us.saturating_mul(MAX_HZ) / 1_000_000 + 1;
        match (self.last, value) {
            (Some(last), Some(now)) if intact && now > last && now - last <= most => {
                self.rises += 1;
            }
            (Some(last), Some(now)) if intact && now == last => {}
            _ => self.rises = 0,
        }
        self.last = value;
        self.at_us = now_us;
        self.running = self.rises >= LEFT_BEHIND_RISES;
        self.running
    }

    /// Whether it was seen running.
    pub fn running(&self) -> bool {
        self.running
    }
}

#[cfg(test)]
mod tests;
