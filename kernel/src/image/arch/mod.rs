//! Architecture support. Only x86-64 (PVH) for now; all of the kernel's
//! `unsafe` for the CPU lives below this module.

pub mod x86_64;
