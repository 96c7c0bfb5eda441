//! The 8254 PIT: channel 0 as the periodic wake-up timer, channel 2 (gated
//! through port 0x61, speaker off) as the fixed 1.193182 MHz reference that
//! calibrates the TSC.

use super::cpu::rdtsc;
use super::port::{inb, outb};
use avm_kernel::calibration::Sample;
use core::sync::atomic::{AtomicU32, Ordering};

/// PIT input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;
const CHANNEL0: u16 = 0x40;
const CHANNEL2: u16 = 0x42;
const COMMAND: u16 = 0x43;
const GATE_PORT: u16 = 0x61;
const GATE_OUT2: u8 = 0x20;

/// The rate `start_periodic` last set (0: channel 0 not started).
static PERIODIC_HZ: AtomicU32 = AtomicU32::new(0);

/// Starts channel 0 as a rate generator at `hz` interrupts per second.
pub fn start_periodic(hz: u32) {
    PERIODIC_HZ.store(hz, Ordering::Relaxed);
    program_channel0(hz);
}

/// Whether channel 0 runs (its interrupt then ends every `hlt`).
pub fn periodic_running() -> bool {
    PERIODIC_HZ.load(Ordering::Relaxed) != 0
}

/// Runs channel 0 at `hz` for a while, until [`restore_periodic`].
pub fn speed_up(hz: u32) {
    program_channel0(hz);
}

/// Back to the rate `start_periodic` set.
pub fn restore_periodic() {
    let hz = PERIODIC_HZ.load(Ordering::Relaxed);
    if hz != 0 {
        program_channel0(hz);
    }
}

fn program_channel0(hz: u32) {
    let divisor = (PIT_HZ / u64::from(hz.max(19))).min(0xffff) as u16;
    // SAFETY: programming channel 0 of the PIT on its own ports.
    unsafe {
        outb(COMMAND, 0x34); // channel 0, lobyte/hibyte, mode 2
        outb(CHANNEL0, divisor as u8);
        outb(CHANNEL0, (divisor >> 8) as u8);
    }
}

/// Starts channel 2 counting down from 0xffff (about 55 ms) in mode 0, so
/// its output goes high (and stays high) when it reaches zero.
pub fn start_reference_countdown() {
    // SAFETY: channel 2 and its gate belong to the calibration; the speaker
    // data bit stays off.
    unsafe {
        let gate = inb(GATE_PORT);
        outb(GATE_PORT, (gate & !0x02) | 0x01);
        outb(COMMAND, 0xb0); // channel 2, lobyte/hibyte, mode 0
        outb(CHANNEL2, 0xff);
        outb(CHANNEL2, 0xff);
    }
}

/// Reads channel 2's counter between two TSC reads.
pub fn sample_reference() -> Sample {
    let tsc_before = rdtsc();
    // SAFETY: latching and reading channel 2's counter (started above).
    let (lo, hi) = unsafe {
        outb(COMMAND, 0x80); // latch channel 2
        (inb(CHANNEL2), inb(CHANNEL2))
    };
    let tsc_after = rdtsc();
    Sample {
        tsc_before,
        tsc_after,
        pit_count: u16::from_le_bytes([lo, hi]),
    }
}

/// Whether channel 2 has counted down to zero since it was started.
pub fn reference_expired() -> bool {
    // SAFETY: reading the gate port has no side effects.
    unsafe { inb(GATE_PORT) & GATE_OUT2 != 0 }
}

/// Stops channel 2 (gate off).
pub fn stop_reference() {
    // SAFETY: as in `start_reference_countdown`.
    unsafe {
        let gate = inb(GATE_PORT);
        outb(GATE_PORT, gate & !0x03);
    }
}
