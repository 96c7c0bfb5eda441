//! The 8254 PIT: channel 0 as the periodic wake-up timer, channel 2 (gated
//! through port 0x61) as the fixed 1.193182 MHz reference that calibrates the
//! TSC.

use super::cpu::rdtsc;
use super::port::{inb, outb};

/// PIT input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;
const CHANNEL0: u16 = 0x40;
const CHANNEL2: u16 = 0x42;
const COMMAND: u16 = 0x43;
const GATE_PORT: u16 = 0x61;

/// Starts channel 0 as a rate generator at `hz` interrupts per second.
pub fn start_periodic(hz: u32) {
    let divisor = (PIT_HZ / u64::from(hz.max(19))).min(0xffff) as u16;
    // SAFETY: programming channel 0 of the PIT on its own ports.
    unsafe {
        outb(COMMAND, 0x34); // channel 0, lobyte/hibyte, mode 2
        outb(CHANNEL0, divisor as u8);
        outb(CHANNEL0, (divisor >> 8) as u8);
    }
}

/// Counts TSC ticks over `pit_ticks` PIT periods using channel 2 in one-shot
/// mode. Returns `None` if the PIT never signals (bounded by `max_tsc`
/// cycles), e.g. when there is no PIT.
pub fn measure_tsc(pit_ticks: u16, max_tsc: u64) -> Option<u64> {
    // SAFETY: channel 2 and its gate are owned by this calibration; the
    // speaker output bit is kept off.
    unsafe {
        let gate = inb(GATE_PORT);
        outb(GATE_PORT, (gate & !0x02) | 0x01); // gate on, speaker off
        outb(COMMAND, 0xb0); // channel 2, lobyte/hibyte, mode 0
        outb(CHANNEL2, pit_ticks as u8);
        outb(CHANNEL2, (pit_ticks >> 8) as u8);
        let start = rdtsc();
        let result = loop {
            let now = rdtsc();
            if inb(GATE_PORT) & 0x20 != 0 {
                break Some(now.wrapping_sub(start));
            }
            if now.wrapping_sub(start) > max_tsc {
                break None;
            }
        };
        outb(GATE_PORT, gate & !0x03);
        result
    }
}
