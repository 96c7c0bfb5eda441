//! Leaving the A-VM: QEMU's `isa-debug-exit` device at port 0xf4 makes QEMU
//! exit with status `(code << 1) | 1`. Without that device (or on Xen) the
//! write does nothing and the CPU halts.

use crate::arch::x86_64::{cpu, port::outl};
use avm_kernel::exit::ExitCode;

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Ends the VM with `code`.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: writing to the debug-exit port only ends the VM; if no device
    // is there the write is ignored.
    unsafe { outl(DEBUG_EXIT_PORT, code as u32) };
    cpu::halt_forever()
}
