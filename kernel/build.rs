//! Link arguments for the freestanding A-VM image (see shared FACTS.md).
//! `rustc-link-arg-bins` keeps them off the host-tested library target.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-Wl,--build-id=none",
        "-Wl,-n",
        "-Wl,--gc-sections",
        // Identical code folding (rust-lld, the toolchain's default linker
        // here): monomorphised copies that compiled to the same bytes are
        // kept once, 1.8 KB of the 512 KiB the image may take. Sound for
        // Rust, whose functions are `unnamed_addr` (no code compares their
        // addresses).
        "-Wl,--icf=all",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/link.ld");
}
