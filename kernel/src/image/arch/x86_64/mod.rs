//! x86-64: PVH entry to long mode, descriptor tables, paging, port I/O,
//! the legacy timer chips, the TSC and a helper CPU.

pub mod cpu;
mod entry;
pub mod gdt;
pub mod idt;
pub mod mem_fns;
pub mod paging;
pub mod pic;
pub mod pit;
pub mod port;
pub mod smp;
