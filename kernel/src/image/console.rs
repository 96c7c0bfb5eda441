//! The serial console: a polled 16550 UART on COM1 and the logging macros.
//!
//! Log lines look like `[    0.012345] info: message`; the boot report and
//! `AVM-ERROR` lines are printed bare with [`println!`] so that tools can
//! match them exactly.

use crate::arch::x86_64::port::{inb, outb};
use avm_kernel::cmdline::LogLevel;
use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

const COM1: u16 = 0x3f8;
const LINE_STATUS: u16 = COM1 + 5;
const TRANSMIT_EMPTY: u8 = 1 << 5;
/// Bound on polling for a free transmitter, so a missing UART cannot hang
/// the kernel (it then drops output instead).
const MAX_POLLS: u32 = 100_000;

/// Depth of the 16550A transmit FIFO (enabled by `init`).
const TX_FIFO_LEN: u8 = 16;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
/// Bytes that can still be written without polling the line status: once
/// the FIFO is seen empty, a whole FIFO's worth fits. Each port access is
/// an exit to the VMM, so this halves the cost of console output.
static TX_ROOM: AtomicU8 = AtomicU8::new(0);

/// Programs COM1 for 115200 8N1, FIFOs on, interrupts off.
pub fn init() {
    // SAFETY: the standard 16550 initialisation on COM1's own ports.
    unsafe {
        outb(COM1 + 1, 0x00); // no interrupts: the console is polled
        outb(COM1 + 3, 0x80); // DLAB on
        outb(COM1, 0x01); // divisor 1: 115200 baud
        outb(COM1 + 1, 0x00);
        outb(COM1 + 3, 0x03); // 8N1, DLAB off
        outb(COM1 + 2, 0xc7); // FIFO on, cleared
        outb(COM1 + 4, 0x03); // DTR, RTS
    }
}

/// Sets the most verbose level that is printed.
pub fn set_level(level: LogLevel) {
    LEVEL.store(level.as_u8(), Ordering::Relaxed);
}

/// Whether messages at `level` are printed.
pub fn enabled(level: LogLevel) -> bool {
    level.as_u8() >= LEVEL.load(Ordering::Relaxed)
}

fn write_byte(b: u8) {
    // SAFETY: COM1's line status and data registers; polling reads have no
    // side effects beyond the UART state we own.
    unsafe {
        if TX_ROOM.load(Ordering::Relaxed) == 0 {
            for _ in 0..MAX_POLLS {
                if inb(LINE_STATUS) & TRANSMIT_EMPTY != 0 {
                    break;
                }
            }
            TX_ROOM.store(TX_FIFO_LEN, Ordering::Relaxed);
        }
        outb(COM1, b);
    }
    TX_ROOM.fetch_sub(1, Ordering::Relaxed);
}

/// A `fmt::Write` sink onto COM1 (translating `\n` to `\r\n`). It holds no
/// lock: the kernel runs on one CPU and the timer interrupt never prints, so
/// only a fatal exception can interleave, and it never returns.
#[derive(Debug)]
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                write_byte(b'\r');
            }
            write_byte(b);
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let _ = fmt::Write::write_fmt(&mut Serial, args);
}

#[doc(hidden)]
pub fn _log(level: LogLevel, args: fmt::Arguments<'_>) {
    if enabled(level) {
        let us = crate::time::now_us();
        _print(format_args!(
            "[{:5}.{:06}] {}: {}\n",
            us / 1_000_000,
            us % 1_000_000,
            level.name(),
            args
        ));
    }
}

/// Prints a line to the serial console (no timestamp, no level).
macro_rules! println {
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Logs at debug level.
macro_rules! debug {
    ($($arg:tt)*) => { $crate::console::_log(avm_kernel::cmdline::LogLevel::Debug, format_args!($($arg)*)) };
}

/// Logs at info level.
macro_rules! info {
    ($($arg:tt)*) => { $crate::console::_log(avm_kernel::cmdline::LogLevel::Info, format_args!($($arg)*)) };
}

/// Logs at warn level.
macro_rules! warn {
    ($($arg:tt)*) => { $crate::console::_log(avm_kernel::cmdline::LogLevel::Warn, format_args!($($arg)*)) };
}
