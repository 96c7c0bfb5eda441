//! Statistics for benchmark verdicts on noisy hosts.
//!
//! A target such as "slowdown at most 0.5%" compared with the difference of
//! two medians says "met" whenever noise happens to push the difference
//! down: it fails open. [`paired_shift`] gives the shift between paired
//! runs with a 95% confidence interval, and [`verdict`] says "met" only when
//! the whole interval meets the target, "not met" only when none of it
//! does, and "inconclusive" otherwise, also when all of it says the load
//! made the runs faster (host noise, not a result).

/// A shift between paired runs: the Hodges-Lehmann estimate (median of the
/// Walsh averages of the paired differences) and its 95% confidence
/// interval from the Wilcoxon signed-rank test (normal approximation of
/// the critical rank; it matches the exact tables from 10 pairs up).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shift {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

impl Shift {
    /// `+1.20% (95% interval -0.40..+2.80%)`, for a shift in percent.
    pub fn describe(&self) -> String {
        format!(
            "{:+.2}% (95% interval {:+.2}..{:+.2}%)",
            self.estimate, self.low, self.high
        )
    }

    /// The same shift as percentages of `base`; `None` unless `base > 0`.
    pub fn percent_of(&self, base: f64) -> Option<Shift> {
        (base > 0.0).then(|| Shift {
            estimate: 100.0 * self.estimate / base,
            low: 100.0 * self.low / base,
            high: 100.0 * self.high / base,
        })
    }
}

/// Fewest pairs for an interval (below 6 the signed-rank test cannot reach
/// 95% at all).
pub const MIN_PAIRS: usize = 6;

/// The shift `with[i] - without[i]` over the pairs both have; `None` with
/// fewer than [`MIN_PAIRS`] pairs or a value that is not finite.
pub fn paired_shift(with: &[f64], without: &[f64]) -> Option<Shift> {
    let diffs: Vec<f64> = with.iter().zip(without).map(|(a, b)| a - b).collect();
    let n = diffs.len();
    if n < MIN_PAIRS || diffs.iter().any(|d| !d.is_finite()) {
        return None;
    }
    let mut walsh = Vec::with_capacity(n * (n + 1) / 2);
    for i in 0..n {
        for j in i..n {
            walsh.push((diffs[i] + diffs[j]) / 2.0);
        }
    }
    walsh.sort_by(f64::total_cmp);
    let m = walsh.len();
    let nf = n as f64;
    let sd = (nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0).sqrt();
    // Critical rank C (1-based): the interval is [W(C), W(M + 1 - C)].
    let c = ((m as f64 / 2.0 - 1.96 * sd).floor() as usize + 1).clamp(1, m.div_ceil(2));
    let estimate = if m % 2 == 1 {
        walsh[m / 2]
    } else {
        (walsh[m / 2 - 1] + walsh[m / 2]) / 2.0
    };
    Some(Shift {
        estimate,
        low: walsh[c - 1],
        high: walsh[m - c],
    })
}

/// Verdict on a slowdown of "at most `target`" for a shift's interval
/// (`None`: too few runs to tell). An interval wholly below `-target`
/// says the runs with the load were faster by more than the target, which
/// the load cannot cause: the host disturbed the pairs, and the interval
/// says nothing of the slowdown ("inconclusive", never "met").
pub fn verdict(shift: Option<&Shift>, target: f64) -> &'static str {
    match shift {
        Some(s) if s.high < -target => "inconclusive",
        Some(s) if s.high <= target => "met",
        Some(s) if s.low > target => "not met",
        _ => "inconclusive",
    }
}

/// Ten pairs whose medians differ by -0.9% while single runs swing by
/// 20%: noise, for tests of verdicts.
#[cfg(test)]
pub(crate) const NOISY_WITHOUT: [f64; 10] = [
    100.0, 120.0, 95.0, 110.0, 130.0, 90.0, 105.0, 115.0, 98.0, 125.0,
];
#[cfg(test)]
pub(crate) const NOISY_WITH: [f64; 10] = [
    118.0, 96.0, 112.0, 92.0, 104.0, 128.0, 99.0, 101.0, 122.0, 94.0,
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ten_pairs_use_the_exact_critical_rank() {
        // n = 10: the exact two-sided 5% critical value is T = 8, so the
        // interval runs from the 9th to the 47th of the 55 Walsh averages.
        let without = [0.0; 10];
        let with: Vec<f64> = (1..=10).map(f64::from).collect();
        let s = paired_shift(&with, &without).expect("ten pairs");
        let mut walsh = Vec::new();
        for i in 0..10 {
            for j in i..10 {
                walsh.push((with[i] + with[j]) / 2.0);
            }
        }
        walsh.sort_by(f64::total_cmp);
        assert_eq!(s.low, walsh[8]);
        assert_eq!(s.high, walsh[46]);
        assert_eq!(s.estimate, 5.5);
    }

    #[test]
    fn noise_around_zero_is_inconclusive_not_met() {
        // The old verdict (difference of medians <= target) called this met.
        let s = paired_shift(&NOISY_WITH, &NOISY_WITHOUT)
            .and_then(|s| s.percent_of(108.0))
            .expect("shift");
        assert!(s.low < 0.0 && s.high > 0.5, "{s:?}");
        assert_eq!(verdict(Some(&s), 0.5), "inconclusive");
    }

    #[test]
    fn clear_results_get_clear_verdicts() {
        let without = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2, 99.8, 100.1];
        let slower: Vec<f64> = without.iter().map(|v| v * 1.05).collect();
        let same: Vec<f64> = without.iter().map(|v| v + 0.01).collect();
        let pct = |w: &[f64]| paired_shift(w, &without).and_then(|s| s.percent_of(100.0));
        assert_eq!(verdict(pct(&slower).as_ref(), 0.5), "not met");
        assert_eq!(verdict(pct(&same).as_ref(), 0.5), "met");
        // Faster with the load than the target's width: disturbed pairs.
        let faster: Vec<f64> = without.iter().map(|v| v * 0.9).collect();
        assert_eq!(verdict(pct(&faster).as_ref(), 0.5), "inconclusive");
        let slightly: Vec<f64> = without.iter().map(|v| v * 0.998).collect();
        assert_eq!(verdict(pct(&slightly).as_ref(), 0.5), "met");
    }

    #[test]
    fn too_few_or_broken_runs_give_no_interval() {
        assert_eq!(paired_shift(&[1.0; 5], &[1.0; 5]), None);
        assert_eq!(paired_shift(&[1.0; 9], &[1.0; 5]), None);
        let mut with = [1.0; 8];
        with[3] = f64::NAN;
        assert_eq!(paired_shift(&with, &[1.0; 8]), None);
        assert_eq!(verdict(None, 0.5), "inconclusive");
    }

    proptest! {
        #[test]
        fn the_interval_holds_the_estimate(
            pairs in prop::collection::vec((0.0f64..1e4, 0.0f64..1e4), 0..40),
        ) {
            let (with, without): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
            if let Some(s) = paired_shift(&with, &without) {
                prop_assert!(s.low <= s.estimate && s.estimate <= s.high);
            } else {
                prop_assert!(with.len() < MIN_PAIRS);
            }
        }

        #[test]
        fn a_constant_shift_is_found_exactly(
            base in prop::collection::vec(1.0f64..1e4, MIN_PAIRS..30),
            shift in -100.0f64..100.0,
        ) {
            let with: Vec<f64> = base.iter().map(|b| b + shift).collect();
            let s = paired_shift(&with, &base).expect("enough pairs");
            prop_assert!((s.estimate - shift).abs() < 1e-6);
            prop_assert!((s.low - shift).abs() < 1e-6 && (s.high - shift).abs() < 1e-6);
        }
    }
}
