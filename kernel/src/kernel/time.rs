//! The monotonic clock: the TSC, calibrated once at boot against the PIT's
//! fixed 1.193182 MHz input over about 10 ms.

use crate::arch::x86_64::{cpu::rdtsc, pit};
use core::sync::atomic::{AtomicU64, Ordering};

/// TSC at kernel entry: the clock's zero.
static TSC_AT_ENTRY: AtomicU64 = AtomicU64::new(0);
/// Calibrated TSC frequency; 0 until `calibrate` ran (the clock reads 0).
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// PIT periods to measure over: 11932 / 1.193182 MHz = 10 ms.
const CALIBRATION_PIT_TICKS: u16 = 11_932;
/// Give up waiting for the PIT after this many TSC cycles (a few seconds on
/// any plausible CPU), e.g. on a platform without a PIT.
const CALIBRATION_MAX_TSC: u64 = 20_000_000_000;
/// Used when calibration fails; wrong but monotonic.
const FALLBACK_TSC_HZ: u64 = 2_000_000_000;
/// Anything slower than this is a failed measurement.
const MIN_PLAUSIBLE_TSC_HZ: u64 = 100_000_000;

/// Marks the clock's zero. Call first thing at kernel entry.
pub fn mark_entry() {
    TSC_AT_ENTRY.store(rdtsc(), Ordering::Relaxed);
}

/// How the TSC frequency was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calibration {
    /// Measured against the PIT.
    Pit {
        /// Frequency in Hz.
        hz: u64,
    },
    /// The PIT did not answer plausibly: a fixed guess is used.
    Fallback {
        /// Frequency in Hz.
        hz: u64,
    },
}

/// Measures the TSC frequency (takes about 10 ms).
pub fn calibrate() -> Calibration {
    let measured = pit::measure_tsc(CALIBRATION_PIT_TICKS, CALIBRATION_MAX_TSC)
        .map(|cycles| cycles * pit::PIT_HZ / u64::from(CALIBRATION_PIT_TICKS))
        .filter(|&hz| hz >= MIN_PLAUSIBLE_TSC_HZ);
    let result = match measured {
        Some(hz) => Calibration::Pit { hz },
        None => Calibration::Fallback {
            hz: FALLBACK_TSC_HZ,
        },
    };
    let (Calibration::Pit { hz } | Calibration::Fallback { hz }) = result;
    TSC_HZ.store(hz, Ordering::Relaxed);
    result
}

/// Microseconds since kernel entry (0 before calibration).
pub fn now_us() -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz == 0 {
        return 0;
    }
    let cycles = rdtsc().saturating_sub(TSC_AT_ENTRY.load(Ordering::Relaxed));
    (u128::from(cycles) * 1_000_000 / u128::from(hz)) as u64
}

/// The kernel clock for drivers that take a clock object.
#[derive(Debug, Clone, Copy)]
pub struct KernelClock;

impl tpm_crb::Clock for KernelClock {
    fn now_us(&self) -> u64 {
        now_us()
    }
}
