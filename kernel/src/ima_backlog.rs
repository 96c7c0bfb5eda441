//! How long the A-VM may stay behind the Mon-VM's IMA list before it says
//! so.
//!
//! Whether every running process and module was measured is judged on the
//! whole list only: judged on part of it, a process whose entry is still
//! to be taken would be reported as unmeasured. While the list is behind
//! (a round took its most new entries and more are waiting), the last
//! verdict stands. A rootkit that keeps appending valid entries faster
//! than the A-VM anchors them (a TPM extend each) would keep that verdict
//! standing for as long as it likes, and anything it started meanwhile
//! unjudged: a check skipped while its input is incomplete fails open.
//! So a list behind for longer than [`IMA_BEHIND_LIMIT_US`] is reported
//! as what it is, [`IMA_LIST_BEHIND`] in `measurement_evaded`, until the
//! A-VM has caught up and judges again.

/// How long the A-VM may be behind the Mon-VM's IMA list before the
/// verdict on unmeasured processes and modules is reported as unjudged:
/// some 25,000 entries at the A-VM's pace under TCG (about 0.4 ms per
/// TPM extend), far more than a Mon-VM's own bursts (a boot, a package
/// upgrade) leave it behind.
pub const IMA_BEHIND_LIMIT_US: u64 = 10_000_000;

/// The `measurement_evaded` finding while the list is too far behind.
pub const IMA_LIST_BEHIND: &str = "unjudged:ima-list-behind";

/// Since when the A-VM has been behind the IMA list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImaBacklog {
    since_us: Option<u64>,
}

impl ImaBacklog {
    /// After an IMA round at `now_us`: whether it took the list to its
    /// end. Returns [`IMA_LIST_BEHIND`] once the list has been behind,
    /// round after round, for [`IMA_BEHIND_LIMIT_US`], and for as long as
    /// it stays behind.
    pub fn round(&mut self, caught_up: bool, now_us: u64) -> Option<&'static str> {
        if caught_up {
            self.since_us = None;
            return None;
        }
        let since = *self.since_us.get_or_insert(now_us);
        (now_us.saturating_sub(since) >= IMA_BEHIND_LIMIT_US).then_some(IMA_LIST_BEHIND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUND_US: u64 = 5_000;

    /// Rounds every 5 ms from `start_us` for `for_us`, each behind.
    fn behind(backlog: &mut ImaBacklog, start_us: u64, for_us: u64) -> Option<&'static str> {
        let mut last = None;
        let mut now = start_us;
        while now <= start_us + for_us {
            last = backlog.round(false, now);
            now += ROUND_US;
        }
        last
    }

    #[test]
    fn a_list_caught_up_is_judged() {
        let mut b = ImaBacklog::default();
        assert_eq!(b.round(true, 0), None);
        assert_eq!(b.round(true, 60_000_000), None);
    }

    #[test]
    fn a_short_burst_is_not_reported() {
        let mut b = ImaBacklog::default();
        assert_eq!(behind(&mut b, 1_000, IMA_BEHIND_LIMIT_US - ROUND_US), None);
        assert_eq!(b.round(true, IMA_BEHIND_LIMIT_US), None);
    }

    #[test]
    fn a_list_behind_past_the_limit_is_reported_until_caught_up() {
        let mut b = ImaBacklog::default();
        let start = 7_000_000;
        assert_eq!(
            behind(&mut b, start, IMA_BEHIND_LIMIT_US),
            Some(IMA_LIST_BEHIND)
        );
        // A flood that goes on stays reported, however long.
        assert_eq!(
            b.round(false, start + 100 * IMA_BEHIND_LIMIT_US),
            Some(IMA_LIST_BEHIND)
        );
        assert_eq!(b.round(true, start + 101 * IMA_BEHIND_LIMIT_US), None);
    }

    #[test]
    fn bursts_apart_do_not_add_up() {
        // Behind for most of the limit, caught up, behind again: each
        // burst is timed from its own start.
        let mut b = ImaBacklog::default();
        let half = IMA_BEHIND_LIMIT_US * 3 / 4;
        assert_eq!(behind(&mut b, 0, half), None);
        assert_eq!(b.round(true, half + ROUND_US), None);
        let again = half + 2 * ROUND_US;
        assert_eq!(behind(&mut b, again, half), None);
        assert_eq!(
            behind(&mut b, again + half + ROUND_US, IMA_BEHIND_LIMIT_US),
            Some(IMA_LIST_BEHIND)
        );
    }

    #[test]
    fn a_clock_going_back_never_reports_early() {
        let mut b = ImaBacklog::default();
        assert_eq!(b.round(false, 50_000_000), None);
        assert_eq!(b.round(false, 10), None);
        assert_eq!(
            b.round(false, 50_000_000 + IMA_BEHIND_LIMIT_US),
            Some(IMA_LIST_BEHIND)
        );
    }
}
