//! Helpers of the host tests: the stock Debian kernels fetched by `make deps`
//! (scripts/fetch-monvm-kernels.sh) and their decompression.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::PathBuf;

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

fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The compressed payload of a bzImage and the uncompressed size from its
/// 4-byte trailer: the payload starts at (setup_sects + 1) * 512 +
/// payload_offset (u32 at 0x248) and is payload_length (u32 at 0x24c) long.
pub fn bzimage_payload(vmlinuz: &[u8]) -> (&[u8], usize) {
    assert_eq!(&vmlinuz[0x202..0x206], b"HdrS", "not a bzImage");
    let setup_sects = match vmlinuz[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_le(vmlinuz, 0x248) as usize;
    let len = u32_le(vmlinuz, 0x24c) as usize;
    let payload = &vmlinuz[start..start + len];
    let (data, trailer) = payload.split_at(len - 4);
    (data, u32_le(trailer, 0) as usize)
}

/// vmlinux (an ELF) out of a vmlinuz: LZ4 (legacy frames, 6.1) or ZSTD (6.12).
pub fn extract_vmlinux(vmlinuz: &[u8]) -> Vec<u8> {
    let (data, size) = bzimage_payload(vmlinuz);
    let out = match data {
        [0x02, 0x21, 0x4c, 0x18, ..] => lz4_legacy(data, size),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            let mut decoder =
                ruzstd::decoding::StreamingDecoder::new(data).expect("zstd frame header");
            let mut out = Vec::with_capacity(size);
            decoder.read_to_end(&mut out).expect("zstd payload");
            out
        }
        other => panic!(
            "unsupported kernel compression (magic {:02x?})",
            &other[..4.min(other.len())]
        ),
    };
    assert_eq!(out.len(), size, "size trailer");
    assert_eq!(&out[..4], b"\x7fELF", "vmlinux is an ELF");
    out
}

/// The LZ4 legacy format the kernel uses: magic, then blocks of u32 length +
/// raw LZ4 block, each at most 8 MiB uncompressed.
fn lz4_legacy(mut data: &[u8], size: usize) -> Vec<u8> {
    const MAGIC: u32 = 0x184c_2102;
    const BLOCK: usize = 8 << 20;
    let mut out = Vec::with_capacity(size);
    let mut block = vec![0u8; BLOCK];
    while data.len() >= 4 {
        let word = u32_le(data, 0);
        data = &data[4..];
        if word == MAGIC {
            continue;
        }
        let len = word as usize;
        if len > data.len() {
            break;
        }
        let n = lz4_flex::block::decompress_into(&data[..len], &mut block).expect("lz4 block");
        out.extend_from_slice(&block[..n]);
        data = &data[len..];
        if out.len() >= size {
            break;
        }
    }
    out
}

/// A PT_LOAD segment of an ELF64: (file offset, virtual, physical, file size).
pub fn elf_load_segments(elf: &[u8]) -> Vec<(u64, u64, u64, u64)> {
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    let phoff = u64_at(0x20) as usize;
    let phentsize = usize::from(u16_at(0x36));
    let phnum = usize::from(u16_at(0x38));
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&ph| u32_le(elf, ph) == 1)
        .map(|ph| {
            (
                u64_at(ph + 8),
                u64_at(ph + 16),
                u64_at(ph + 24),
                u64_at(ph + 32),
            )
        })
        .collect()
}

/// The file offset of a virtual address of the image.
pub fn elf_file_offset(elf: &[u8], va: u64) -> Option<usize> {
    elf_load_segments(elf)
        .into_iter()
        .find(|&(_, v, _, filesz)| va >= v && va - v < filesz)
        .map(|(off, v, _, _)| (off + (va - v)) as usize)
}

/// The virtual address of a file offset inside a load segment.
pub fn elf_va_of_offset(elf: &[u8], offset: u64) -> Option<u64> {
    elf_load_segments(elf)
        .into_iter()
        .find(|&(off, _, _, filesz)| offset >= off && offset - off < filesz)
        .map(|(off, v, _, _)| v + (offset - off))
}

/// A flat RAM image with the ELF's load segments placed as the kernel's
/// loader would at physical load address `load` (the lowest segment at
/// `load`, the others at their link-time distance from it).
pub fn load_kernel(elf: &[u8], load: u64, ram_size: usize) -> Vec<u8> {
    let segments = elf_load_segments(elf);
    let first = segments.iter().map(|s| s.2).min().unwrap();
    let mut ram = vec![0u8; ram_size];
    for &(off, _, paddr, filesz) in &segments {
        let at = (load + paddr - first) as usize;
        ram[at..at + filesz as usize].copy_from_slice(&elf[off as usize..(off + filesz) as usize]);
    }
    ram
}

/// The bytes of a named ELF64 section.
pub fn elf_section<'a>(elf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    let shoff = u64_at(0x28) as usize;
    let shentsize = usize::from(u16_at(0x3a));
    let shnum = usize::from(u16_at(0x3c));
    let shstrndx = usize::from(u16_at(0x3e));
    let strtab = shoff + shstrndx * shentsize;
    let strtab_off = u64_at(strtab + 0x18) as usize;
    (0..shnum).map(|i| shoff + i * shentsize).find_map(|sh| {
        let name_at = strtab_off + u32_le(elf, sh) as usize;
        let end = elf[name_at..].iter().position(|&b| b == 0)? + name_at;
        (&elf[name_at..end] == name.as_bytes()).then(|| {
            let off = u64_at(sh + 0x18) as usize;
            let size = u64_at(sh + 0x20) as usize;
            &elf[off..off + size]
        })
    })
}
