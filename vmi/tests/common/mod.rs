//! Helpers of the host tests: the stock Debian kernels fetched by `make deps`
//! (scripts/fetch-monvm-kernels.sh), unpacked with `vmi::kernel_image`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use vmi::kernel_image::Vmlinux;

/// `.cache/monvm` of the repository (or `MONVM_CACHE_DIR`).
pub fn monvm_cache() -> PathBuf {
    match std::env::var_os("MONVM_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/monvm"),
    }
}

/// The fetched kernel of a series ("6.1", "6.12"): its vmlinuz bytes and the
/// resolved package name and version. Fails (never skips) when it is missing.
pub struct MonvmKernel {
    pub series: &'static str,
    pub package: String,
    pub version: String,
    pub release: String,
    pub vmlinuz: Vec<u8>,
}

pub fn monvm_kernel(series: &'static str) -> MonvmKernel {
    let dir = monvm_cache().join(series);
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| {
                panic!(
                    "the Mon-VM kernel {series} is missing ({}: {e}): run `make deps` \
                     (scripts/fetch-monvm-kernels.sh)",
                    dir.join(name).display()
                )
            })
    };
    let package = read("package");
    let version = read("version");
    let release = read("release");
    let vmlinuz = std::fs::read(dir.join("vmlinuz")).unwrap_or_else(|e| {
        panic!(
            "the Mon-VM kernel {series} is missing ({}: {e}): run `make deps`",
            dir.join("vmlinuz").display()
        )
    });
    MonvmKernel {
        series,
        package,
        version,
        release,
        vmlinuz,
    }
}

/// A flat RAM image with the ELF's load segments placed as the kernel's
/// loader would at physical load address `load` (the lowest segment at
/// `load`, the others at their link-time distance from it).
pub fn load_kernel(elf: &Vmlinux<'_>, load: u64, ram_size: usize) -> Vec<u8> {
    let first = elf.segments().iter().map(|s| s.paddr).min().unwrap();
    let mut ram = vec![0u8; ram_size];
    for s in elf.segments() {
        let at = (load + s.paddr - first) as usize;
        let from = s.offset as usize;
        ram[at..at + s.filesz as usize]
            .copy_from_slice(&elf.data()[from..from + s.filesz as usize]);
    }
    ram
}
