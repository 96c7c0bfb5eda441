//! TSC calibration arithmetic. The kernel samples the TSC together with a
//! down-counting PIT channel; a sample is only trusted when the two TSC reads
//! that bracket the PIT read are close together (the virtual CPU was not
//! preempted in between), so a busy host cannot skew the result.

/// One bracketed reading: the TSC before and after reading the PIT counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// TSC just before latching the counter.
    pub tsc_before: u64,
    /// TSC just after reading it.
    pub tsc_after: u64,
    /// The PIT counter value (counts down).
    pub pit_count: u16,
}

impl Sample {
    /// Whether the bracket is at most `max_bracket` TSC cycles wide.
    pub fn is_tight(&self, max_bracket: u64) -> bool {
        self.tsc_after >= self.tsc_before && self.tsc_after - self.tsc_before <= max_bracket
    }

    fn tsc_mid(&self) -> u64 {
        self.tsc_before / 2 + self.tsc_after / 2
    }
}

/// PIT ticks from `start` to `end` (the counter counts down and must not
/// have wrapped in between).
pub fn pit_ticks_between(start: &Sample, end: &Sample) -> Option<u16> {
    start.pit_count.checked_sub(end.pit_count)
}

/// The TSC frequency in Hz from two samples `pit_hz` apart in PIT input
/// clock, or `None` if they are not in order or too close to tell.
pub fn tsc_hz(start: &Sample, end: &Sample, pit_hz: u64) -> Option<u64> {
    let ticks = pit_ticks_between(start, end).filter(|&t| t > 0)?;
    let cycles = end.tsc_mid().checked_sub(start.tsc_mid())?;
    let hz = u128::from(cycles) * u128::from(pit_hz) / u128::from(ticks);
    u64::try_from(hz).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PIT_HZ: u64 = 1_193_182;

    #[test]
    fn two_ghz_over_five_ms() {
        let start = Sample {
            tsc_before: 1_000,
            tsc_after: 3_000,
            pit_count: 60_000,
        };
        // 5966 PIT ticks = 5 ms = 10_000_000 cycles at 2 GHz.
        let end = Sample {
            tsc_before: 10_001_000,
            tsc_after: 10_003_000,
            pit_count: 54_034,
        };
        let hz = tsc_hz(&start, &end, PIT_HZ).unwrap();
        assert!((1_999_000_000..2_001_000_000).contains(&hz), "{hz}");
        assert!(start.is_tight(2_000) && !start.is_tight(1_999));
    }

    #[test]
    fn rejects_wrapped_or_reversed_samples() {
        let a = Sample {
            tsc_before: 0,
            tsc_after: 10,
            pit_count: 100,
        };
        let b = Sample {
            tsc_before: 1_000,
            tsc_after: 1_010,
            pit_count: 200,
        };
        assert_eq!(tsc_hz(&a, &b, PIT_HZ), None);
        assert_eq!(tsc_hz(&a, &a, PIT_HZ), None);
        assert_eq!(tsc_hz(&b, &Sample { pit_count: 50, ..a }, PIT_HZ), None);
    }

    proptest! {
        #[test]
        fn recovers_the_frequency_of_exact_samples(hz in 100_000_000u64..6_000_000_000, ticks in 1_000u16..60_000, t0 in 0u64..1 << 40) {
            let cycles = u64::from(ticks) * hz / PIT_HZ;
            let start = Sample { tsc_before: t0, tsc_after: t0, pit_count: 65_000 };
            let end = Sample { tsc_before: t0 + cycles, tsc_after: t0 + cycles, pit_count: 65_000 - ticks };
            let got = tsc_hz(&start, &end, PIT_HZ).unwrap();
            // Integer rounding only: within one PIT tick's worth of cycles.
            prop_assert!(got.abs_diff(hz) <= hz / u64::from(ticks) + 1);
        }
    }
}
