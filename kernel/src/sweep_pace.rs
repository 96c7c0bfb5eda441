//! How many steps of a periodic sweep are due: a whole sweep per period,
//! at most a bounded number per call, and what a call could not take is
//! owed to the next ones (at most one whole sweep: a pass behind is caught
//! up by one pass, not by as many as the stall lasted). A stall of the
//! loop thus delays the sweep; it does not lose its place in the period.

/// The pace of one sweep of `steps` steps per `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepPace {
    last_us: u64,
    owed: usize,
}

impl SweepPace {
    /// A pace whose first steps come due after `now_us`.
    pub const fn starting(now_us: u64) -> Self {
        SweepPace {
            last_us: now_us,
            owed: 0,
        }
    }

    /// The steps to take now, at most `max_per_call`. Time shorter than
    /// one step's share of the period carries over to the next call.
    pub fn take(
        &mut self,
        now_us: u64,
        steps: usize,
        period_us: u64,
        max_per_call: usize,
    ) -> usize {
        let period_us = period_us.max(1);
        let elapsed = now_us.saturating_sub(self.last_us);
        let new = u128::from(elapsed) * steps as u128 / u128::from(period_us);
        let due = usize::try_from(new)
            .unwrap_or(usize::MAX)
            .saturating_add(self.owed)
            .min(steps);
        if due == 0 {
            return 0;
        }
        self.last_us = now_us;
        let now = due.min(max_per_call);
        self.owed = due - now;
        now
    }

    /// Steps owed from earlier calls.
    pub fn owed(&self) -> usize {
        self.owed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: usize = 6824;
    const PERIOD: u64 = 1_000_000;
    const MAX: usize = 256;

    /// Steps taken by calls every `every_us` from `from_us` to `to_us`.
    fn run(pace: &mut SweepPace, from_us: u64, to_us: u64, every_us: u64) -> usize {
        (1..=(to_us - from_us) / every_us)
            .map(|i| pace.take(from_us + i * every_us, STEPS, PERIOD, MAX))
            .sum()
    }

    #[test]
    fn calls_every_ten_milliseconds_take_about_one_sweep_a_period() {
        let mut pace = SweepPace::starting(0);
        let taken = run(&mut pace, 0, 10 * PERIOD, 10_000);
        // Each call drops less than one step's share of its 10 ms.
        assert!(
            taken <= 10 * STEPS && taken + 10 * 100 >= 10 * STEPS,
            "{taken}"
        );
        assert_eq!(pace.owed(), 0);
    }

    #[test]
    fn a_stall_is_caught_up_by_one_sweep_at_most_and_in_bounded_calls() {
        let mut pace = SweepPace::starting(0);
        run(&mut pace, 0, PERIOD, 10_000);
        // The loop stalls for three periods: one call then may take only
        // MAX, the rest of one sweep is owed, not the three.
        assert_eq!(pace.take(4 * PERIOD, STEPS, PERIOD, MAX), MAX);
        assert_eq!(pace.owed(), STEPS - MAX);
        // Caught up within the next half period, each call bounded.
        let mut taken = MAX;
        let mut at = 4 * PERIOD;
        while pace.owed() > 0 {
            at += 10_000;
            let now = pace.take(at, STEPS, PERIOD, MAX);
            assert!(now <= MAX);
            taken += now;
            assert!(at < 4 * PERIOD + PERIOD / 2, "still owing at {at}");
        }
        assert!(taken >= STEPS, "{taken}");
    }

    #[test]
    fn without_a_stall_nothing_is_owed_and_absurd_clocks_do_not_overflow() {
        let mut pace = SweepPace::starting(u64::MAX - 5);
        assert_eq!(pace.take(u64::MAX, STEPS, PERIOD, MAX), 0);
        assert_eq!(pace.take(0, STEPS, PERIOD, MAX), 0);
        let mut pace = SweepPace::starting(0);
        assert_eq!(pace.take(u64::MAX, usize::MAX, 1, MAX), MAX);
        assert_eq!(pace.take(u64::MAX, 0, 0, MAX), 0);
    }
}
