//! Fatal errors: one clear `AVM-ERROR <kind>: <message>` line on the console,
//! then exit with the matching code. Used by the panic handler, the CPU
//! exception handler and the boot sequence.

use crate::arch::x86_64::{cpu, idt};
use crate::shutdown;
use avm_kernel::exit::ExitCode;
use core::fmt;

/// The `<kind>` of an `AVM-ERROR` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No TPM (CRB interface absent).
    NoTpm,
    /// The TPM failed.
    Tpm,
    /// A Rust panic.
    Panic,
    /// A CPU exception.
    Exception,
}

impl ErrorKind {
    fn name(self) -> &'static str {
        match self {
            Self::NoTpm => "no-tpm",
            Self::Tpm => "tpm",
            Self::Panic => "panic",
            Self::Exception => "exception",
        }
    }

    fn exit_code(self) -> ExitCode {
        match self {
            Self::NoTpm => ExitCode::NoTpm,
            Self::Tpm => ExitCode::TpmFailure,
            Self::Panic | Self::Exception => ExitCode::Panic,
        }
    }
}

/// Prints the error line and ends the VM.
pub fn fail(kind: ErrorKind, message: fmt::Arguments<'_>) -> ! {
    println!("AVM-ERROR {}: {}", kind.name(), message);
    shutdown::exit(kind.exit_code())
}

/// Reports a CPU exception (called from the exception stubs).
pub fn exception(frame: &idt::ExceptionFrame) -> ! {
    fail(
        ErrorKind::Exception,
        format_args!(
            "vector {} ({}) rip={:#x} error={:#x} cr2={:#x} rsp={:#x}",
            frame.vector,
            idt::exception_name(frame.vector),
            frame.rip,
            frame.error_code,
            cpu::read_cr2(),
            frame.rsp
        ),
    )
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(l) => fail(
            ErrorKind::Panic,
            format_args!(
                "{} at {}:{}:{}",
                info.message(),
                l.file(),
                l.line(),
                l.column()
            ),
        ),
        None => fail(ErrorKind::Panic, format_args!("{}", info.message())),
    }
}
