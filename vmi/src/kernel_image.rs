//! A kernel package's image, host side (feature `builder`): the vmlinux ELF
//! out of a vmlinuz (x86 bzImage), and a checked view of that ELF (load
//! segments, sections, link address <-> file offset).
//!
//! The bzImage payload starts at `(setup_sects + 1) * 512 + payload_offset`
//! (boot protocol 2.08+, u32 at 0x248) and is `payload_length` (0x24c) long;
//! its last four bytes are the uncompressed size (the gzip trailer's ISIZE,
//! or the size the kernel build appends after the other formats). The
//! format is recognised by its magic; Debian has used gzip, XZ (with the x86
//! BCJ filter), LZ4 (the legacy frame format) and ZSTD. Every decoder is
//! pure Rust and every output is bounded ([`MAX_VMLINUX_SIZE`]): a payload
//! that claims or produces more is refused, as is one whose output does not
//! have exactly the size its trailer states.

use std::fmt;
use std::io::Read;

use object::read::elf::{ElfFile64, ProgramHeader};
use object::{LittleEndian, Object, ObjectSection};

/// Largest vmlinux accepted (the Debian kernels are 40-70 MiB).
pub const MAX_VMLINUX_SIZE: usize = 256 << 20;
/// Memory the XZ decoder may use (the kernel's XZ dictionary is 32 MiB).
const XZ_MEM_LIMIT_KIB: u32 = 128 << 10;
/// The kernel's LZ4 legacy blocks hold at most 8 MiB uncompressed.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;

/// The payload's compression, as recognised by its magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    /// LZ4 in the legacy frame format (`lz4 -l`), as the kernel builds it.
    Lz4Legacy,
}

impl Compression {
    /// The format of a payload starting with `head`, or the name of a known
    /// kernel format this crate does not decode.
    pub fn detect(head: &[u8]) -> Result<Compression, ImageError> {
        match head {
            [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Ok(Compression::Xz),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Compression::Zstd),
            [0x02, 0x21, 0x4c, 0x18, ..] => Ok(Compression::Lz4Legacy),
            [b'B', b'Z', b'h', ..] => Err(ImageError::UnsupportedCompression("bzip2")),
            [0x5d, 0x00, 0x00, ..] => Err(ImageError::UnsupportedCompression("lzma")),
            [0x89, b'L', b'Z', b'O', ..] => Err(ImageError::UnsupportedCompression("lzo")),
            _ => {
                let mut magic = [0u8; 4];
                let n = head.len().min(4);
                magic[..n].copy_from_slice(&head[..n]);
                Err(ImageError::UnknownCompression(magic))
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Lz4Legacy => "lz4",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why no vmlinux came out of an image, or its ELF is unusable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Not an x86 bzImage (no `HdrS` setup header, or a protocol older
    /// than 2.08, which has no payload fields).
    NotBzImage(&'static str),
    /// The payload lies (partly) outside the file.
    Truncated {
        what: &'static str,
        end: u64,
        len: u64,
    },
    UnknownCompression([u8; 4]),
    /// A format the kernel can use that Debian does not (bzip2, lzma, lzo).
    UnsupportedCompression(&'static str),
    /// The stated or produced size exceeds [`MAX_VMLINUX_SIZE`].
    TooLarge {
        size: u64,
        max: u64,
    },
    /// The decoder failed (corrupt or truncated stream).
    Decompress {
        format: Compression,
        reason: String,
    },
    /// The output is not as long as the payload's size trailer says.
    SizeMismatch {
        stated: u64,
        actual: u64,
    },
    /// The output is not a little-endian x86-64 ELF64.
    NotElf(String),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::NotBzImage(why) => write!(f, "not a bzImage: {why}"),
            ImageError::Truncated { what, end, len } => write!(
                f,
                "truncated image: {what} ends at byte {end}, the file has {len}"
            ),
            ImageError::UnknownCompression(m) => write!(
                f,
                "unknown kernel compression (payload starts {:02x} {:02x} {:02x} {:02x})",
                m[0], m[1], m[2], m[3]
            ),
            ImageError::UnsupportedCompression(name) => {
                write!(f, "unsupported kernel compression: {name}")
            }
            ImageError::TooLarge { size, max } => {
                write!(
                    f,
                    "decompressed kernel of {size} bytes exceeds the limit of {max}"
                )
            }
            ImageError::Decompress { format, reason } => {
                write!(f, "{format} payload does not decompress: {reason}")
            }
            ImageError::SizeMismatch { stated, actual } => write!(
                f,
                "decompressed {actual} bytes where the payload states {stated}"
            ),
            ImageError::NotElf(why) => write!(f, "the decompressed kernel is no x86-64 ELF: {why}"),
        }
    }
}

impl std::error::Error for ImageError {}

/// The parts of a bzImage that matter here.
#[derive(Clone, Copy, Debug)]
pub struct BzImage<'a> {
    /// Boot protocol version (e.g. 0x020f).
    pub protocol: u16,
    pub compression: Compression,
    /// The compressed stream (for gzip with its own trailer; for the other
    /// formats without the appended size).
    pub stream: &'a [u8],
    /// The uncompressed size the payload states.
    pub uncompressed_size: u32,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> BzImage<'a> {
    /// Reads the setup header and locates the payload.
    pub fn parse(vmlinuz: &'a [u8]) -> Result<Self, ImageError> {
        if vmlinuz.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
            return Err(ImageError::NotBzImage("no HdrS setup header at 0x202"));
        }
        let protocol =
            u16_at(vmlinuz, 0x206).ok_or(ImageError::NotBzImage("setup header cut short"))?;
        if protocol < 0x0208 {
            return Err(ImageError::NotBzImage(
                "boot protocol older than 2.08 (no payload fields)",
            ));
        }
        let setup_sects = match vmlinuz.get(0x1f1) {
            Some(0) => 4u64,
            Some(&n) => u64::from(n),
            None => return Err(ImageError::NotBzImage("setup header cut short")),
        };
        let payload_offset =
            u32_at(vmlinuz, 0x248).ok_or(ImageError::NotBzImage("setup header cut short"))?;
        let payload_length =
            u32_at(vmlinuz, 0x24c).ok_or(ImageError::NotBzImage("setup header cut short"))?;
        if payload_length < 8 {
            return Err(ImageError::NotBzImage("payload shorter than 8 bytes"));
        }
        let start = (setup_sects + 1) * 512 + u64::from(payload_offset);
        let end = start + u64::from(payload_length);
        let len = vmlinuz.len() as u64;
        if end > len {
            return Err(ImageError::Truncated {
                what: "the compressed payload",
                end,
                len,
            });
        }
        let payload = vmlinuz
            .get(start as usize..end as usize)
            .ok_or(ImageError::Truncated {
                what: "the compressed payload",
                end,
                len,
            })?;
        let (body, trailer) = payload.split_at(payload.len() - 4);
        let uncompressed_size =
            u32_at(trailer, 0).ok_or(ImageError::NotBzImage("payload without size trailer"))?;
        let compression = Compression::detect(payload)?;
        // gzip's own trailer ends in ISIZE; the others have it appended.
        let stream = match compression {
            Compression::Gzip => payload,
            _ => body,
        };
        Ok(BzImage {
            protocol,
            compression,
            stream,
            uncompressed_size,
        })
    }

    /// Decompresses the payload: exactly `uncompressed_size` bytes, at most
    /// `max`.
    pub fn decompress(&self, max: usize) -> Result<Vec<u8>, ImageError> {
        let stated = self.uncompressed_size as usize;
        if stated > max {
            return Err(ImageError::TooLarge {
                size: stated as u64,
                max: max as u64,
            });
        }
        decompress(self.compression, self.stream, stated, max)
    }
}

/// Decompresses `stream` in `format` into exactly `expected` bytes; never
/// produces more than `max` (nor more than `expected` + 1, to detect a
/// longer output).
pub fn decompress(
    format: Compression,
    stream: &[u8],
    expected: usize,
    max: usize,
) -> Result<Vec<u8>, ImageError> {
    let limit = expected.min(max);
    let fail = |reason: String| ImageError::Decompress { format, reason };
    let out = match format {
        Compression::Lz4Legacy => lz4_legacy(stream, limit + 1).map_err(fail)?,
        Compression::Gzip => {
            read_bounded(flate2::read::GzDecoder::new(stream), limit).map_err(fail)?
        }
        Compression::Xz => read_bounded(
            lzma_rust2::XzReader::new_mem_limit(stream, false, XZ_MEM_LIMIT_KIB),
            limit,
        )
        .map_err(fail)?,
        Compression::Zstd => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(stream)
                .map_err(|e| fail(format!("{e}")))?;
            read_bounded(decoder, limit).map_err(fail)?
        }
    };
    if out.len() > max {
        return Err(ImageError::TooLarge {
            size: out.len() as u64,
            max: max as u64,
        });
    }
    if out.len() != expected {
        return Err(ImageError::SizeMismatch {
            stated: expected as u64,
            actual: out.len() as u64,
        });
    }
    Ok(out)
}

/// Everything `reader` gives, up to `limit` + 1 bytes (one more than allowed
/// shows an overlong output without reading it all).
fn read_bounded<R: Read>(reader: R, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(limit.min(MAX_VMLINUX_SIZE) + 1);
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The LZ4 legacy format: the magic, then blocks of a u32 length and a raw
/// LZ4 block of at most 8 MiB output; the magic may repeat (concatenated
/// frames). Stops at `limit` bytes of output (one 8 MiB block more in
/// memory at most).
fn lz4_legacy(mut data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    // The largest compressed form of an 8 MiB block (LZ4_compressBound).
    const MAX_BLOCK_IN: usize = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;
    let mut out = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while !data.is_empty() {
        let word = u32_at(data, 0).ok_or("truncated block header")?;
        data = &data[4..];
        if word == LZ4_LEGACY_MAGIC {
            continue;
        }
        let len = word as usize;
        if len > MAX_BLOCK_IN {
            return Err(format!("block of {len} bytes exceeds the format's bound"));
        }
        let input = data
            .get(..len)
            .ok_or_else(|| format!("block of {len} bytes, {} left", data.len()))?;
        let n = lz4_flex::block::decompress_into(input, &mut block).map_err(|e| e.to_string())?;
        out.extend_from_slice(block.get(..n).unwrap_or(&[]));
        data = &data[len..];
        if out.len() > limit {
            // Overlong: what is beyond the limit is not kept.
            out.truncate(limit);
            break;
        }
    }
    Ok(out)
}

/// vmlinux out of a vmlinuz: the decompressed payload, checked to be an
/// x86-64 ELF ([`Vmlinux::parse`] gives its view).
pub fn extract_vmlinux(vmlinuz: &[u8]) -> Result<Vec<u8>, ImageError> {
    let image = BzImage::parse(vmlinuz)?;
    let vmlinux = image.decompress(MAX_VMLINUX_SIZE)?;
    Vmlinux::parse(&vmlinux)?;
    Ok(vmlinux)
}

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// A vmlinux ELF, parsed with checks: its load segments (inside the file)
/// and sections by name.
#[derive(Debug)]
pub struct Vmlinux<'a> {
    data: &'a [u8],
    elf: ElfFile64<'a, LittleEndian>,
    segments: Vec<Segment>,
}

impl<'a> Vmlinux<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, ImageError> {
        if data.get(..4) != Some(b"\x7fELF".as_slice()) {
            return Err(ImageError::NotElf("no ELF magic".into()));
        }
        let elf = ElfFile64::<LittleEndian>::parse(data)
            .map_err(|e| ImageError::NotElf(e.to_string()))?;
        let endian = elf.endian();
        if elf.elf_header().e_machine.get(endian) != object::elf::EM_X86_64 {
            return Err(ImageError::NotElf("not an x86-64 image".into()));
        }
        let mut segments = Vec::new();
        for ph in elf.elf_program_headers() {
            if ph.p_type(endian) != object::elf::PT_LOAD {
                continue;
            }
            let s = Segment {
                offset: ph.p_offset(endian),
                vaddr: ph.p_vaddr(endian),
                paddr: ph.p_paddr(endian),
                filesz: ph.p_filesz(endian),
                memsz: ph.p_memsz(endian),
            };
            let inside = s
                .offset
                .checked_add(s.filesz)
                .is_some_and(|end| end <= data.len() as u64);
            if !inside || s.vaddr.checked_add(s.memsz).is_none() || s.filesz > s.memsz {
                return Err(ImageError::NotElf(format!(
                    "load segment at {:#x} outside the file or the address space",
                    s.vaddr
                )));
            }
            segments.push(s);
        }
        if segments.is_empty() {
            return Err(ImageError::NotElf("no load segments".into()));
        }
        Ok(Vmlinux {
            data,
            elf,
            segments,
        })
    }

    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The contents of section `name`, if present and inside the file.
    pub fn section(&self, name: &str) -> Option<&'a [u8]> {
        let section = self.elf.section_by_name(name)?;
        section.data().ok()
    }

    /// A section's link address and contents, if present and inside the
    /// file.
    pub fn section_at(&self, name: &str) -> Option<(u64, &'a [u8])> {
        let section = self.elf.section_by_name(name)?;
        Some((section.address(), section.data().ok()?))
    }

    /// Every allocated section with file contents: name, link address and
    /// size, in section-table order.
    pub fn sections(&self) -> Vec<(String, u64, u64)> {
        self.elf
            .sections()
            .filter(|s| s.kind() != object::SectionKind::UninitializedData)
            .filter(|s| s.address() != 0 && s.size() != 0)
            .filter_map(|s| Some((s.name().ok()?.to_string(), s.address(), s.size())))
            .collect()
    }

    /// Where the ELF's own contents end (its segments, sections and
    /// tables): data after this is appended (KASLR relocations).
    pub fn content_end(&self) -> u64 {
        let endian = self.elf.endian();
        let h = self.elf.elf_header();
        let tables = [
            h.e_shoff.get(endian).saturating_add(
                u64::from(h.e_shnum.get(endian)) * u64::from(h.e_shentsize.get(endian)),
            ),
            h.e_phoff.get(endian).saturating_add(
                u64::from(h.e_phnum.get(endian)) * u64::from(h.e_phentsize.get(endian)),
            ),
        ];
        let sections = self.elf.sections().filter_map(|s| {
            s.file_range()
                .map(|(offset, size)| offset.saturating_add(size))
        });
        let segments = self
            .segments
            .iter()
            .map(|s| s.offset.saturating_add(s.filesz));
        tables
            .into_iter()
            .chain(sections)
            .chain(segments)
            .max()
            .unwrap_or(0)
    }

    /// The file offset of link address `va` (in a segment's file part).
    pub fn file_offset(&self, va: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| va >= s.vaddr && va - s.vaddr < s.filesz)
            .map(|s| s.offset + (va - s.vaddr))
    }

    /// The link address of a file offset inside a segment.
    pub fn address_of_offset(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| offset >= s.offset && offset - s.offset < s.filesz)
            .map(|s| s.vaddr + (offset - s.offset))
    }

    /// `len` bytes at link address `va`, all from one segment's file part.
    pub fn read(&self, va: u64, len: usize) -> Option<&'a [u8]> {
        let s = self
            .segments
            .iter()
            .find(|s| va >= s.vaddr && va - s.vaddr < s.filesz)?;
        let within = va - s.vaddr;
        if within.checked_add(len as u64)? > s.filesz {
            return None;
        }
        let start = usize::try_from(s.offset + within).ok()?;
        self.data.get(start..start.checked_add(len)?)
    }

    pub fn read_u64(&self, va: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.read(va, 8)?.try_into().ok()?))
    }

    /// The NUL-terminated string at `va` (at most `max` bytes before it).
    pub fn read_cstr(&self, va: u64, max: usize) -> Option<&'a [u8]> {
        let s = self
            .segments
            .iter()
            .find(|s| va >= s.vaddr && va - s.vaddr < s.filesz)?;
        let available = (s.filesz - (va - s.vaddr)).min(max as u64 + 1) as usize;
        let bytes = self.read(va, available)?;
        let nul = bytes.iter().position(|&b| b == 0)?;
        bytes.get(..nul)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage around `payload` (setup_sects = 1, protocol 2.15).
    pub(crate) fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 1024];
        img[0x1f1] = 1;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(&[0u8; 16]);
        img.extend_from_slice(payload);
        img
    }

    fn with_size(mut stream: Vec<u8>, size: usize) -> Vec<u8> {
        stream.extend_from_slice(&(size as u32).to_le_bytes());
        stream
    }

    fn lz4_legacy_stream(data: &[u8]) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in data.chunks(LZ4_LEGACY_BLOCK) {
            let block = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(block.len() as u32).to_le_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    fn gzip_stream(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn sample() -> Vec<u8> {
        let mut v = b"\x7fELF".to_vec();
        for i in 0..100_000u32 {
            v.extend_from_slice(&(i % 251).to_le_bytes());
        }
        v
    }

    #[test]
    fn lz4_and_gzip_payloads_round_trip() {
        let data = sample();
        for (stream, format) in [
            (
                with_size(lz4_legacy_stream(&data), data.len()),
                Compression::Lz4Legacy,
            ),
            (gzip_stream(&data), Compression::Gzip),
        ] {
            let img = bzimage(&stream);
            let bz = BzImage::parse(&img).expect("bzImage");
            assert_eq!(bz.compression, format);
            assert_eq!(bz.uncompressed_size as usize, data.len());
            assert_eq!(
                bz.decompress(MAX_VMLINUX_SIZE).as_deref(),
                Ok(data.as_slice())
            );
            // A smaller limit is a refusal, not a partial output.
            assert!(matches!(
                bz.decompress(1000),
                Err(ImageError::TooLarge { .. })
            ));
        }
    }

    #[test]
    fn lying_trailers_and_broken_streams_are_refused() {
        let data = sample();
        // The trailer states less than the stream holds: at most one byte
        // more is produced, then refused.
        let img = bzimage(&with_size(lz4_legacy_stream(&data), 10));
        let bz = BzImage::parse(&img).expect("bzImage");
        assert_eq!(
            bz.decompress(MAX_VMLINUX_SIZE),
            Err(ImageError::SizeMismatch {
                stated: 10,
                actual: 11
            })
        );
        // More than stated.
        let img = bzimage(&with_size(lz4_legacy_stream(&data), data.len() + 5));
        assert!(matches!(
            BzImage::parse(&img).and_then(|b| b.decompress(MAX_VMLINUX_SIZE)),
            Err(ImageError::SizeMismatch { .. })
        ));
        // A bomb's trailer is refused before decompressing.
        let img = bzimage(&with_size(lz4_legacy_stream(&data), u32::MAX as usize));
        assert!(matches!(
            BzImage::parse(&img).and_then(|b| b.decompress(MAX_VMLINUX_SIZE)),
            Err(ImageError::TooLarge { .. })
        ));
        // A cut stream.
        let mut stream = lz4_legacy_stream(&data);
        stream.truncate(stream.len() / 2);
        let img = bzimage(&with_size(stream, data.len()));
        assert!(matches!(
            BzImage::parse(&img).and_then(|b| b.decompress(MAX_VMLINUX_SIZE)),
            Err(ImageError::Decompress { .. })
        ));
        let mut gz = gzip_stream(&data);
        let n = gz.len();
        gz[n / 2] ^= 0xff;
        let img = bzimage(&gz);
        assert!(
            BzImage::parse(&img)
                .and_then(|b| b.decompress(MAX_VMLINUX_SIZE))
                .is_err()
        );
    }

    #[test]
    fn formats_by_magic() {
        assert_eq!(Compression::detect(b"\x1f\x8b\x08"), Ok(Compression::Gzip));
        assert_eq!(Compression::detect(b"\xfd7zXZ\x00"), Ok(Compression::Xz));
        assert_eq!(
            Compression::detect(b"\x28\xb5\x2f\xfd"),
            Ok(Compression::Zstd)
        );
        assert_eq!(
            Compression::detect(b"\x02\x21\x4c\x18"),
            Ok(Compression::Lz4Legacy)
        );
        assert_eq!(
            Compression::detect(b"BZh9"),
            Err(ImageError::UnsupportedCompression("bzip2"))
        );
        assert_eq!(
            Compression::detect(b"\x5d\x00\x00\x80"),
            Err(ImageError::UnsupportedCompression("lzma"))
        );
        assert_eq!(
            Compression::detect(b"\x89LZO"),
            Err(ImageError::UnsupportedCompression("lzo"))
        );
        assert_eq!(
            Compression::detect(b"ab"),
            Err(ImageError::UnknownCompression(*b"ab\0\0"))
        );
    }

    #[test]
    fn headers_that_are_no_bzimage() {
        assert!(matches!(
            BzImage::parse(b""),
            Err(ImageError::NotBzImage(_))
        ));
        assert!(matches!(
            BzImage::parse(&[0u8; 4096]),
            Err(ImageError::NotBzImage(_))
        ));
        let data = sample();
        let img = bzimage(&gzip_stream(&data));
        // Old protocol.
        let mut old = img.clone();
        old[0x206..0x208].copy_from_slice(&0x0204u16.to_le_bytes());
        assert!(matches!(
            BzImage::parse(&old),
            Err(ImageError::NotBzImage(_))
        ));
        // Cut anywhere inside the payload, or with a payload length past
        // the end.
        for cut in [0x250, 1100, img.len() - 1] {
            assert!(BzImage::parse(&img[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = img.clone();
        long[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            BzImage::parse(&long),
            Err(ImageError::Truncated { .. })
        ));
        // Garbage where the payload should be.
        let garbage = bzimage(&[0xeeu8; 64]);
        assert_eq!(
            BzImage::parse(&garbage).map(|b| b.compression),
            Err(ImageError::UnknownCompression([0xee; 4]))
        );
        // Decompresses, but to no ELF.
        let not_elf = bzimage(&gzip_stream(b"hello, world"));
        assert!(matches!(
            extract_vmlinux(&not_elf),
            Err(ImageError::NotElf(_))
        ));
    }
}
