//! Pure, host-testable logic of the A-VM kernel.
//!
//! Everything here parses or formats data without touching hardware: the
//! PVH start info, the kernel command line, ACPI tables, the TCG event log,
//! the choice of the heap region and the boot report. Physical memory is
//! reached through the [`phys::PhysRead`] trait, so the same code reads real
//! memory in the A-VM and byte buffers in tests and fuzzers. All input is
//! untrusted: every parser is bounded and returns errors instead of panicking.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod acpi;
pub mod boot_info;
pub mod calibration;
pub mod cmdline;
pub mod exit;
pub mod findings;
pub mod ima_backlog;
pub mod memory;
pub mod path_budget;
pub mod pci;
pub mod phys;
pub mod report;
pub mod sweep_pace;
