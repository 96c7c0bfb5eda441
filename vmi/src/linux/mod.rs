//! The Linux layer: where the kernel is (KASLR) and its own address space,
//! from guest memory alone. Link-time facts (symbol addresses from kallsyms,
//! the banner) come from the profile built from the kernel package.

pub mod kaslr;

pub use kaslr::{KaslrError, KernelImage, KernelLocation, locate_kernel};
