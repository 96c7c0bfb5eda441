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
//!   ([`LeftBehind`]), at the rate it counted at while it was watched and
//!   from where it was at the switch, whatever a rootkit did to the rest
//!   of its image (one changed byte of its banner makes it no longer a
//!   kernel image to a search).
//!
//! Both are pure state machines fed with reads, so the A-VM's use of them
//! is tested here on made-up sequences.

use alloc::vec::Vec;

use super::kaslr::KernelLocation;

/// Most ticks a second any Linux configuration counts (`CONFIG_HZ=1000`).
pub const MAX_HZ: u64 = 1000;
/// The most a kernel's tick count can rise in `elapsed_us` (at
/// [`MAX_HZ`], one more for a tick read at its edge).
fn most_ticks(elapsed_us: u64) -> u64 {
    elapsed_us.saturating_mul(MAX_HZ) / 1_000_000 + 1
}

/// Rises of a left-behind kernel's tick count that show it runs.
pub const LEFT_BEHIND_RISES: u32 = 3;
/// Shortest time between two moves of the watched kernel's count that its
/// rate is taken from ([`Ticking::rate`]): a move is seen up to one read
/// late (half a second), so the rate is within a tenth from here on.
pub const RATE_SPAN_US: u64 = 10_000_000;
/// How long after a reboot the kernel left behind is watched
/// ([`LeftBehind::read`], both rules): a kernel that runs on is seen in
/// its first seconds (it ticks at least every 0.52 s when idle), and the
/// band around the clock widens with the time since. Later, the new
/// kernel has had time to reuse the old one's memory for anything,
/// counters and time stamps of its own included, which must not read as
/// the old kernel running.
pub const LEFT_BEHIND_WINDOW_US: u64 = 30_000_000;
/// How far an idle kernel's count may lag its clock: NO_HZ catches it up
/// at the next wake-up (at least every 0.52 s on an idle Debian Mon-VM).
pub const IDLE_LAG_US: u64 = 1_000_000;

/// The watched kernel's tick count, which must move.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ticking {
    /// The last value read, and when it last changed (or was first read).
    last: Option<u64>,
    moved_at_us: u64,
    started: bool,
    /// The first change seen since the count last jumped, and the last
    /// one (value, when): its rate.
    first_move: Option<(u64, u64)>,
    last_move: Option<(u64, u64)>,
    /// The rate learnt before the count last jumped or went back.
    learnt: Option<u64>,
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
        if let Some(v) = value
            && value != self.last
        {
            // A count gone back (a new kernel) or jumping further than any
            // Linux counts (written by hand) starts the span anew; the
            // rate learnt before stands meanwhile, so a rootkit cannot
            // unlearn it with one write before a decoy switch.
            let jumped = self.last_move.is_some_and(|(last, at)| {
                let most = most_ticks(now_us.saturating_sub(at));
                v < last || v - last > most
            });
            if jumped {
                self.learnt = self.rate().or(self.learnt);
                self.first_move = None;
            }
            if self.last.is_some() {
                self.first_move.get_or_insert((v, now_us));
                self.last_move = Some((v, now_us));
            }
            self.last = value;
            self.moved_at_us = now_us;
        }
        now_us.saturating_sub(self.moved_at_us) > stall_us
    }

    /// Ticks a second the kernel counted, from the first change seen to
    /// the last if they are [`RATE_SPAN_US`] apart (each is the first read
    /// of a new value: the count had just moved), rounded; else the rate
    /// learnt before the count last jumped; `None` before either, or at a
    /// rate no Linux counts at.
    pub fn rate(&self) -> Option<u64> {
        let span_rate = || {
            let ((v0, t0), (v1, t1)) = (self.first_move?, self.last_move?);
            let span = t1.checked_sub(t0).filter(|&s| s >= RATE_SPAN_US)?;
            let ticks = v1.checked_sub(v0)?;
            let rate = ticks.checked_mul(1_000_000)?.checked_add(span / 2)? / span;
            Some(rate).filter(|&r| r > 0 && r <= MAX_HZ + MAX_HZ / 10)
        };
        span_rate().or(self.learnt)
    }
}

/// Whether a reboot from the kernel at `old` to the one at `new` leaves
/// the old kernel behind to watch ([`LeftBehind`]): not when the new one
/// was put where the old one was. Its tick count is then where the old
/// one's was and counts on at the old rate from a low start, so watching
/// it would see the old kernel running. Nor can a decoy be there: a copy
/// of the running kernel cannot lie on top of it.
pub fn leaves_old_kernel_behind(old: &KernelLocation, new: &KernelLocation) -> bool {
    old.phys_text != new.phys_text
}

/// Old kernels' images remembered ([`OldKernels`]): more than RAM keeps
/// at once in all but the largest Mon-VMs (about 40 MiB each).
pub const MAX_OLD_KERNELS: usize = 64;

/// Images of the kernels that ran before a reboot and may still lie in RAM
/// (a rebooted Mon-VM's memory keeps the image of the kernel before until
/// something overwrites it): a search that finds one of them has not found
/// a new kernel. At most [`MAX_OLD_KERNELS`]. An image one search misses
/// is not forgotten: around a reboot the old image comes and goes while
/// the new kernel boots over it (seen under TCG), and one forgotten, then
/// found again, would be a second new kernel, which the A-VM cannot tell
/// from the real one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OldKernels {
    images: Vec<KernelLocation>,
}

impl OldKernels {
    /// Whether the image at `location` is an old kernel's.
    pub fn contains(&self, location: &KernelLocation) -> bool {
        self.images.contains(location)
    }

    /// The Mon-VM rebooted from the kernel at `old` to the one at `new`
    /// (`found`: every kernel image the search that saw it found). The
    /// new image overwrote whatever lay where it is now, so no old one is
    /// remembered there (a later kernel put there again, with any slide,
    /// is new); the old image stays in RAM unless the new one took its
    /// place ([`leaves_old_kernel_behind`]). With no room left, an image
    /// the search did not find makes room first, else the oldest.
    pub fn rebooted(&mut self, old: KernelLocation, new: KernelLocation, found: &[KernelLocation]) {
        self.images.retain(|l| l.phys_text != new.phys_text);
        if leaves_old_kernel_behind(&old, &new) && !self.images.contains(&old) {
            if self.images.len() >= MAX_OLD_KERNELS {
                let gone = self
                    .images
                    .iter()
                    .position(|l| !found.contains(l))
                    .unwrap_or(0);
                self.images.remove(gone);
            }
            self.images.push(old);
        }
    }
}

/// Rises in a row of an old image's tick count that show a kernel was
/// booted again where it lay ([`Revived`]).
pub const REVIVED_RISES: u32 = 2;

/// The tick counts of old kernels' images ([`OldKernels`]) read at each
/// search while the watched kernel is gone: a new kernel that physical
/// and virtual KASLR happened to put exactly where an old one lay, with
/// its slide, is that old image to a search (the same place, the same
/// image), but it ticks. An image's count must rise, by no more than a
/// kernel counts, [`REVIVED_RISES`] reads of it in a row; a read that
/// fails or does not rise so starts over. At most [`MAX_OLD_KERNELS`]
/// images (one per old kernel).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revived {
    counts: Vec<(KernelLocation, Option<u64>, u64, u32)>,
}

impl Revived {
    /// Feeds one read of the count of the old image at `location`
    /// (`None`: unreadable) at `now_us`. Returns whether it has risen
    /// [`REVIVED_RISES`] times in a row: a kernel runs there.
    pub fn read(&mut self, location: KernelLocation, value: Option<u64>, now_us: u64) -> bool {
        let i = match self.counts.iter().position(|c| c.0 == location) {
            Some(i) => i,
            None if self.counts.len() < MAX_OLD_KERNELS => {
                self.counts.push((location, None, now_us, 0));
                self.counts.len() - 1
            }
            None => return false,
        };
        let (_, last, at_us, rises) = &mut self.counts[i];
        let most = most_ticks(now_us.saturating_sub(*at_us));
        *rises = match (*last, value) {
            (Some(l), Some(v)) if v > l && v - l <= most => *rises + 1,
            _ => 0,
        };
        *last = value;
        *at_us = now_us;
        *rises >= REVIVED_RISES
    }
}

/// The kernel left behind at a reboot, whose tick count must stay still.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeftBehind {
    last: Option<u64>,
    at_us: u64,
    rises: u32,
    /// The count at the reboot and when, and the rate it had counted at.
    start: Option<u64>,
    start_us: u64,
    rate: Option<u64>,
    /// Rises in a row along that rate's clock from the start.
    clock_rises: u32,
    running: bool,
}

impl LeftBehind {
    /// Starts watching with the tick count as read at the reboot and the
    /// rate it counted at while watched ([`Ticking::rate`]; `None`: not
    /// watched long enough to know it).
    pub fn new(value: Option<u64>, now_us: u64, rate: Option<u64>) -> Self {
        LeftBehind {
            last: value,
            at_us: now_us,
            rises: 0,
            start: value,
            start_us: now_us,
            rate,
            clock_rises: 0,
            running: false,
        }
    }

    /// Whether `value` at `now_us` is where the count would be had it gone
    /// on at its rate since the reboot: above the start, within an idle
    /// lag plus a fifth of the time since (the rate is known within a
    /// tenth) of the clock, in the first [`LEFT_BEHIND_WINDOW_US`]. The new
    /// kernel's own counts and time stamps written into reused memory are
    /// below it by at least the old kernel's uptime, which its rate took
    /// [`RATE_SPAN_US`] to learn.
    fn on_clock(&self, value: u64, now_us: u64) -> bool {
        let (Some(start), Some(rate)) = (self.start, self.rate) else {
            return false;
        };
        let since = now_us.saturating_sub(self.start_us);
        if since > LEFT_BEHIND_WINDOW_US || value <= start {
            return false;
        }
        // At most 1100 Hz (`Ticking::rate`) for at most 37 s: no overflow.
        let ticks = |us: u64| rate.min(MAX_HZ + MAX_HZ / 10) * us / 1_000_000;
        let expected = start.saturating_add(ticks(since));
        value.abs_diff(expected) <= ticks(IDLE_LAG_US + since / 5)
    }

    /// Feeds one read of the left-behind kernel's `jiffies_64` at `now_us`;
    /// `intact` says its image is still where it was. Returns whether it
    /// was seen running since the reboot (for good, once seen), by either
    /// of two rules, in the first [`LEFT_BEHIND_WINDOW_US`] only:
    /// - [`LEFT_BEHIND_RISES`] rises of its count while intact, each by at
    ///   most what [`MAX_HZ`] ticks in the time since the read before. A
    ///   value that falls, jumps further, or cannot be read, or an image no
    ///   longer intact, starts the count again: the new kernel reusing the
    ///   old one's memory in its first seconds writes anything there, but
    ///   not a clock (later, time stamps of its own may rise there);
    /// - as many rises in a row each on the clock it counted by before the
    ///   reboot ([`LeftBehind::new`]'s rate, from where it was then), intact
    ///   or not: a rootkit cannot make the real kernel's image look gone
    ///   (one byte of its banner) and keep it running unseen.
    pub fn read(&mut self, value: Option<u64>, intact: bool, now_us: u64) -> bool {
        if self.running {
            return true;
        }
        if now_us.saturating_sub(self.start_us) > LEFT_BEHIND_WINDOW_US {
            return false;
        }
        let elapsed_us = now_us.saturating_sub(self.at_us);
        // At most MAX_HZ ticks a second, one more for a tick between.
        let most = most_ticks(elapsed_us);
        match (self.last, value) {
            (Some(last), Some(now)) if intact && now > last && now - last <= most => {
                self.rises += 1;
            }
            (Some(last), Some(now)) if intact && now == last => {}
            _ => self.rises = 0,
        }
        match (self.last, value) {
            (Some(last), Some(now)) if now > last && self.on_clock(now, now_us) => {
                self.clock_rises += 1;
            }
            // An idle read between two ticks.
            (Some(last), Some(now)) if now == last => {}
            _ => self.clock_rises = 0,
        }
        self.last = value;
        self.at_us = now_us;
        self.running = self.rises >= LEFT_BEHIND_RISES || self.clock_rises >= LEFT_BEHIND_RISES;
        self.running
    }

    /// Whether it was seen running.
    pub fn running(&self) -> bool {
        self.running
    }
}

#[cfg(test)]
mod tests;
