//! Introspection of the Mon-VM from outside: the A-VM (and host tools) read the
//! Mon-VM's RAM and nothing else. Everything read is attacker-controlled, so
//! every pointer read from the guest is an allegation: it becomes an address
//! only through a checked constructor, every read is bounds-checked and
//! all-or-nothing, every walk is bounded and cycle-safe, and garbage yields an
//! error, never a panic or a hang.
//!
//! - [`addr`]: [`GuestPhysAddr`], [`GuestVirtAddr`] (canonical by construction).
//! - [`memory`]: the [`GuestMemory`] trait, [`RamLayout`] (guest-physical
//!   ranges to backing offsets, e.g. RAM above the PCI hole), slice-backed
//!   memory; `file` adds RAM files (feature `std`).
//! - [`paging`]: the x86-64 page walker ([`AddressSpace`]).
//! - [`list`]: bounded walks of kernel `list_head` lists.
//! - [`kallsyms`]: the kernel's symbol table recovered from its kallsyms
//!   tables, in a kernel image or a RAM image, without System.map.
//! - [`linux`]: the Linux layer: KASLR (load address, slide), the kernel's
//!   own address space and paging depth.
//! - [`profile`]: the kernel profile (symbols, syscall table, struct
//!   offsets of one kernel build) the A-VM decodes; its builder and
//!   `kernel_image` (vmlinuz -> vmlinux, ELF view) need feature `builder`.
//! - [`craft`]: builders of synthetic memory images for tests and fuzzing.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod addr;
pub mod craft;
#[cfg(any(feature = "std", test))]
pub mod file;
pub mod firmware;
pub mod kallsyms;
#[cfg(feature = "builder")]
pub mod kernel_image;
pub mod linux;
pub mod list;
pub mod memory;
pub mod paging;
pub mod profile;
pub mod sort;
mod words;

pub use addr::{GuestPhysAddr, GuestVirtAddr, NonCanonical, PAGE_SIZE};
pub use list::{ListError, ListOptions, ListWalk, list_len, walk_list};
pub use memory::{
    Backing, BackingError, CountingMemory, GuestMemory, LayoutError, LayoutMemory, MemoryError,
    RamLayout, RamRegion, SliceMemory,
};
pub use paging::{AddressSpace, PageSize, PagingMode, Translation, VirtualMemory, WalkError};
