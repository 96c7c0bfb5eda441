//! The monotonic clock: the TSC, calibrated once at boot against the PIT's
//! fixed 1.193182 MHz input over about 5 ms, with
//! preemption-proof bracketed samples (see `avm_kernel::calibration`).

use crate::arch::x86_64::{
    cpu::{idle_until_interrupt, rdtsc},
    pit,
};
use avm_kernel::calibration::{pit_ticks_between, tsc_hz};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// TSC at kernel entry: the clock's zero.
static TSC_AT_ENTRY: AtomicU64 = AtomicU64::new(0);
/// Calibrated TSC frequency; 0 until `calibrate` ran (the clock reads 0).
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// PIT ticks to measure over: 5966 / 1.193182 MHz = 5 ms, short for a fast
/// boot. With samples bracketed to `MAX_BRACKET` cycles the error stays
/// below 0.5% even at 1 GHz.
const CALIBRATION_PIT_TICKS: u16 = 5_966;
/// Widest accepted TSC bracket around one PIT read (a few microseconds; a
/// preempted virtual CPU shows up as a much wider one).
const MAX_BRACKET: u64 = 20_000;
/// Attempts before giving up (each is cut short if the reference wraps).
const ATTEMPTS: u32 = 5;
/// Give up an attempt after this many TSC cycles (the 16-bit reference lasts
/// 55 ms; this also ends the wait on a platform without a PIT).
const MAX_ATTEMPT_TSC: u64 = 1 << 31;
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
        /// Attempts it took.
        attempts: u32,
    },
    /// The PIT did not answer plausibly: a fixed guess is used.
    Fallback {
        /// Frequency in Hz.
        hz: u64,
    },
}

/// One measurement: a tight sample at the start, then the first tight sample
/// at least `CALIBRATION_PIT_TICKS` later.
fn measure_once() -> Option<u64> {
    pit::start_reference_countdown();
    let deadline = rdtsc().saturating_add(MAX_ATTEMPT_TSC);
    let mut start = None;
    let mut result = None;
    loop {
        let sample = pit::sample_reference();
        if pit::reference_expired() || sample.tsc_after > deadline {
            break;
        }
        if !sample.is_tight(MAX_BRACKET) {
            continue;
        }
        match start {
            None => start = Some(sample),
            Some(first) => {
                if pit_ticks_between(&first, &sample).is_some_and(|t| t >= CALIBRATION_PIT_TICKS) {
                    result = tsc_hz(&first, &sample, pit::PIT_HZ);
                    break;
                }
            }
        }
    }
    pit::stop_reference();
    result.filter(|&hz| hz >= MIN_PLAUSIBLE_TSC_HZ)
}

impl core::fmt::Display for Calibration {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Pit { hz, attempts } => {
                write!(f, "{hz} Hz, measured against the PIT (attempt {attempts})")
            }
            Self::Fallback { hz } => write!(f, "{hz} Hz, a guess (the PIT did not answer)"),
        }
    }
}

/// Measures the TSC frequency (takes about 5 ms).
pub fn calibrate() -> Calibration {
    let result = (1..=ATTEMPTS)
        .find_map(|attempts| measure_once().map(|hz| Calibration::Pit { hz, attempts }))
        .unwrap_or(Calibration::Fallback {
            hz: FALLBACK_TSC_HZ,
        });
    let (Calibration::Pit { hz, .. } | Calibration::Fallback { hz }) = result;
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

/// Timer rate while the A-VM waits for its TPM: a poll every 100 us.
const TPM_WAIT_HZ: u32 = 10_000;
/// Whether a TPM wait has sped the timer up.
static TPM_WAIT_RATE: AtomicBool = AtomicBool::new(false);

impl tpm_crb::Clock for KernelClock {
    fn now_us(&self) -> u64 {
        now_us()
    }

    /// Halts until the next timer interrupt, the timer sped up to
    /// [`TPM_WAIT_HZ`] for the wait. Under emulation the TPM (swtpm) and
    /// QEMU's thread that completes its commands need host CPU time, which
    /// a guest CPU spinning on the CRB registers held (and every poll took
    /// QEMU's device lock). Measured on the monitor's event extends
    /// (`tpm_us=` of `AVM-MONVM-EVENT`, 82 events): spinning p50 0.63 ms,
    /// p90 3.5 ms, max 4.6 ms; halting p50 0.41 ms, p90 0.53 ms, max 0.9 ms.
    fn relax(&self) {
        if !pit::periodic_running() {
            core::hint::spin_loop();
            return;
        }
        if !TPM_WAIT_RATE.swap(true, Ordering::Relaxed) {
            pit::speed_up(TPM_WAIT_HZ);
        }
        idle_until_interrupt();
    }

    fn wait_over(&self) {
        if TPM_WAIT_RATE.swap(false, Ordering::Relaxed) {
            pit::restore_periodic();
        }
    }
}
