//! Reading kernel structures through [`VirtualMemory`] with member offsets
//! from the profile (BTF of the package's vmlinux): fixed-size fields,
//! pointers (checked canonical), bounded C strings.

use alloc::vec::Vec;
use core::fmt;

use crate::addr::GuestVirtAddr;
use crate::list::ListError;
use crate::paging::{VirtualMemory, WalkError};

/// Why a kernel structure could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructError {
    /// `base + offset` overflows or leaves the canonical range.
    Address {
        base: GuestVirtAddr,
        offset: u64,
    },
    Walk(WalkError),
    List(ListError),
    /// A string without NUL within its bound.
    Unterminated {
        at: GuestVirtAddr,
        max: usize,
    },
    /// A count or length read from the guest beyond its bound.
    TooLarge {
        what: &'static str,
        value: u64,
        max: u64,
    },
    /// A NULL pointer where one is required.
    Null {
        what: &'static str,
    },
}

impl fmt::Display for StructError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StructError::Address { base, offset } => {
                write!(f, "{base} + {offset:#x} is not an address")
            }
            StructError::Walk(e) => write!(f, "{e}"),
            StructError::List(e) => write!(f, "{e}"),
            StructError::Unterminated { at, max } => {
                write!(f, "string at {at} longer than {max} bytes")
            }
            StructError::TooLarge { what, value, max } => {
                write!(f, "{what} {value} exceeds {max}")
            }
            StructError::Null { what } => write!(f, "{what} is NULL"),
        }
    }
}

impl From<WalkError> for StructError {
    fn from(e: WalkError) -> Self {
        StructError::Walk(e)
    }
}

impl From<ListError> for StructError {
    fn from(e: ListError) -> Self {
        StructError::List(e)
    }
}

/// `base + offset` as an address.
pub fn field(base: GuestVirtAddr, offset: u64) -> Result<GuestVirtAddr, StructError> {
    base.checked_add(offset)
        .ok_or(StructError::Address { base, offset })
}

/// The structure containing the member at `member` (`container_of`).
pub fn container_of(member: GuestVirtAddr, offset: u64) -> Result<GuestVirtAddr, StructError> {
    member.checked_sub(offset).ok_or(StructError::Address {
        base: member,
        offset,
    })
}

pub fn read_u8<V: VirtualMemory + ?Sized>(
    mem: &V,
    base: GuestVirtAddr,
    offset: u64,
) -> Result<u8, StructError> {
    Ok(mem.read_virt_u8(field(base, offset)?)?)
}

pub fn read_u32<V: VirtualMemory + ?Sized>(
    mem: &V,
    base: GuestVirtAddr,
    offset: u64,
) -> Result<u32, StructError> {
    Ok(mem.read_virt_u32(field(base, offset)?)?)
}

pub fn read_u64<V: VirtualMemory + ?Sized>(
    mem: &V,
    base: GuestVirtAddr,
    offset: u64,
) -> Result<u64, StructError> {
    Ok(mem.read_virt_u64(field(base, offset)?)?)
}

pub fn read_bytes<V: VirtualMemory + ?Sized>(
    mem: &V,
    base: GuestVirtAddr,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), StructError> {
    Ok(mem.read_virt(field(base, offset)?, buf)?)
}

/// A pointer member; `None` for NULL, an error for a non-canonical value.
pub fn read_pointer<V: VirtualMemory + ?Sized>(
    mem: &V,
    base: GuestVirtAddr,
    offset: u64,
) -> Result<Option<GuestVirtAddr>, StructError> {
    let at = field(base, offset)?;
    let raw = mem.read_virt_u64(at)?;
    if raw == 0 {
        return Ok(None);
    }
    Ok(Some(pointer(raw)?))
}

/// A pointer value read from the guest as an address; an error if it is
/// not canonical.
pub fn pointer(raw: u64) -> Result<GuestVirtAddr, StructError> {
    Ok(GuestVirtAddr::new(raw).map_err(WalkError::from)?)
}

/// A NUL-terminated string at `at` of at most `max` bytes (NUL excluded),
/// read in small pieces so a short string near unmapped memory still reads.
pub fn read_cstr<V: VirtualMemory + ?Sized>(
    mem: &V,
    at: GuestVirtAddr,
    max: usize,
) -> Result<Vec<u8>, StructError> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 64];
    let mut pos = at;
    loop {
        // Never cross a page in one read: the next page may be unmapped.
        let to_page_end = (0x1000 - pos.page_offset()) as usize;
        let n = chunk.len().min(to_page_end);
        let piece = &mut chunk[..n];
        mem.read_virt(pos, piece)?;
        if let Some(nul) = piece.iter().position(|&b| b == 0) {
            out.extend_from_slice(&piece[..nul]);
            if out.len() > max {
                return Err(StructError::Unterminated { at, max });
            }
            return Ok(out);
        }
        out.extend_from_slice(piece);
        if out.len() > max {
            return Err(StructError::Unterminated { at, max });
        }
        pos = field(pos, n as u64)?;
    }
}

/// A fixed-size `char[N]` member, up to its first NUL.
pub fn read_char_array<V: VirtualMemory + ?Sized, const N: usize>(
    mem: &V,
    base: GuestVirtAddr,
    offset: u64,
) -> Result<heapless_str::FixedStr<N>, StructError> {
    let mut buf = [0u8; N];
    read_bytes(mem, base, offset, &mut buf)?;
    Ok(heapless_str::FixedStr::new(buf))
}

/// A tiny fixed-capacity byte string (a kernel `char[N]`).
pub mod heapless_str {
    /// Up to `N` bytes, cut at the first NUL.
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct FixedStr<const N: usize> {
        bytes: [u8; N],
        len: usize,
    }

    impl<const N: usize> FixedStr<N> {
        pub fn new(bytes: [u8; N]) -> Self {
            let len = bytes.iter().position(|&b| b == 0).unwrap_or(N);
            FixedStr { bytes, len }
        }

        pub fn as_bytes(&self) -> &[u8] {
            self.bytes.get(..self.len).unwrap_or(&[])
        }

        /// The bytes as text if they are UTF-8.
        pub fn as_str(&self) -> Option<&str> {
            core::str::from_utf8(self.as_bytes()).ok()
        }
    }

    impl<const N: usize> core::fmt::Debug for FixedStr<N> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "\"{}\"", self.as_bytes().escape_ascii())
        }
    }
}
