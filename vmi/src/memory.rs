//! Guest-physical memory: one trait with all-or-nothing checked reads, a RAM
//! layout that maps guest-physical ranges to offsets in a backing store (RAM
//! above the PCI hole lives elsewhere in the RAM file), and a slice-backed
//! implementation.

use core::fmt;

use crate::addr::GuestPhysAddr;

/// Why a guest-physical read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// Some byte of `[at, at + len)` is not guest RAM (a hole, beyond the end).
    OutOfRange { at: GuestPhysAddr, len: u64 },
    /// The backing store failed (an I/O error, a short file).
    Backing { at: GuestPhysAddr, len: u64 },
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryError::OutOfRange { at, len } => {
                write!(f, "{len} bytes at {at} are not guest RAM")
            }
            MemoryError::Backing { at, len } => {
                write!(
                    f,
                    "reading {len} bytes at {at} from the backing store failed"
                )
            }
        }
    }
}

/// The guest's physical memory as the A-VM (or a host tool) sees it.
///
/// Reads copy out; nothing ever hands out a reference into guest memory, which
/// the guest may change at any time. A read either fills the whole buffer or
/// fails; on failure the buffer is zeroed, so a caller that ignores the error
/// still sees no partial data.
pub trait GuestMemory {
    /// Copies `buf.len()` bytes starting at `at`.
    fn read(&self, at: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Whether every byte of `[at, at + len)` is readable RAM.
    fn contains(&self, at: GuestPhysAddr, len: u64) -> bool;

    /// Whether the bytes at `at` are `expected`, without copying them out
    /// where the memory can compare in place (a watcher comparing with
    /// its last copy). Errors as [`GuestMemory::read`].
    fn equals(&self, at: GuestPhysAddr, expected: &[u8]) -> Result<bool, MemoryError> {
        let mut buf = [0u8; 256];
        let mut done = 0;
        for part in expected.chunks(buf.len()) {
            let here = &mut buf[..part.len()];
            self.read(GuestPhysAddr(at.0.wrapping_add(done)), here)?;
            if here != part {
                return Ok(false);
            }
            done += part.len() as u64;
        }
        Ok(true)
    }

    fn read_u8(&self, at: GuestPhysAddr) -> Result<u8, MemoryError> {
        let mut b = [0u8; 1];
        self.read(at, &mut b)?;
        Ok(b[0])
    }

    fn read_u16(&self, at: GuestPhysAddr) -> Result<u16, MemoryError> {
        let mut b = [0u8; 2];
        self.read(at, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn read_u32(&self, at: GuestPhysAddr) -> Result<u32, MemoryError> {
        let mut b = [0u8; 4];
        self.read(at, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_u64(&self, at: GuestPhysAddr) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read(at, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

impl<M: GuestMemory + ?Sized> GuestMemory for &M {
    fn read(&self, at: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        (**self).read(at, buf)
    }
    fn contains(&self, at: GuestPhysAddr, len: u64) -> bool {
        (**self).contains(at, len)
    }
    fn equals(&self, at: GuestPhysAddr, expected: &[u8]) -> Result<bool, MemoryError> {
        (**self).equals(at, expected)
    }
}

/// One guest-physical RAM range and where it lives in the backing store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RamRegion {
    pub phys: GuestPhysAddr,
    pub size: u64,
    /// Offset of `phys` in the backing store.
    pub offset: u64,
}

impl RamRegion {
    pub const fn new(phys: u64, size: u64, offset: u64) -> Self {
        RamRegion {
            phys: GuestPhysAddr(phys),
            size,
            offset,
        }
    }
}

/// Why a RAM layout was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// More regions than [`RamLayout::MAX_REGIONS`].
    TooManyRegions,
    /// A region of size zero.
    EmptyRegion(usize),
    /// A region whose guest-physical or backing end overflows u64.
    Overflow(usize),
    /// Regions not sorted by guest-physical address, or overlapping there.
    Unsorted(usize),
    /// Two regions share bytes of the backing store.
    BackingOverlap(usize),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::TooManyRegions => write!(f, "too many RAM regions"),
            LayoutError::EmptyRegion(i) => write!(f, "RAM region {i} is empty"),
            LayoutError::Overflow(i) => write!(f, "RAM region {i} overflows"),
            LayoutError::Unsorted(i) => {
                write!(f, "RAM region {i} is not above the previous one")
            }
            LayoutError::BackingOverlap(i) => {
                write!(f, "RAM region {i} overlaps another in the backing store")
            }
        }
    }
}

/// Guest-physical RAM ranges mapped to backing-store offsets: sorted, disjoint,
/// validated once on construction. Fixed capacity, no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamLayout {
    regions: [RamRegion; RamLayout::MAX_REGIONS],
    count: usize,
}

/// End of RAM below 4 GiB on QEMU `pc` once RAM is split (the 3 GiB split
/// of QEMU's gigabyte-aligned machine types).
const PC_LOWMEM_SPLIT: u64 = 0xc000_0000;
/// `pc`'s default `max-ram-below-4g`: RAM up to this size stays below 4 GiB.
const PC_MAX_RAM_BELOW_4G: u64 = 0xe000_0000;
const FOUR_GIB: u64 = 0x1_0000_0000;

impl RamLayout {
    pub const MAX_REGIONS: usize = 8;

    /// Validates `regions`: non-empty, sorted and disjoint in guest-physical
    /// space, disjoint in the backing store, no overflow.
    pub fn new(regions: &[RamRegion]) -> Result<Self, LayoutError> {
        if regions.len() > Self::MAX_REGIONS {
            return Err(LayoutError::TooManyRegions);
        }
        let mut out = [RamRegion::default(); Self::MAX_REGIONS];
        for (i, r) in regions.iter().enumerate() {
            if r.size == 0 {
                return Err(LayoutError::EmptyRegion(i));
            }
            let (Some(_), Some(backing_end)) =
                (r.phys.0.checked_add(r.size), r.offset.checked_add(r.size))
            else {
                return Err(LayoutError::Overflow(i));
            };
            for (j, other) in regions.iter().enumerate().take(i) {
                // Earlier regions were checked for overflow already.
                if other.phys.0.saturating_add(other.size) > r.phys.0 {
                    return Err(LayoutError::Unsorted(i));
                }
                let other_end = other.offset.saturating_add(other.size);
                if r.offset < other_end && other.offset < backing_end {
                    return Err(LayoutError::BackingOverlap(i.max(j)));
                }
            }
            out[i] = *r;
        }
        Ok(RamLayout {
            regions: out,
            count: regions.len(),
        })
    }

    /// One region: guest-physical address = backing offset, `size` bytes.
    pub fn flat(size: u64) -> Result<Self, LayoutError> {
        Self::new(&[RamRegion::new(0, size, 0)])
    }

    /// QEMU `pc` (i440fx) with one RAM backend of `ram_size` bytes: RAM below
    /// 3.5 GiB stays flat; a larger RAM is split at 3 GiB, the rest mapped at
    /// 4 GiB and stored right after the low part (so file offset = phys -
    /// 1 GiB above 4 GiB).
    pub fn qemu_pc(ram_size: u64) -> Result<Self, LayoutError> {
        Self::split_at(
            ram_size,
            if ram_size >= PC_MAX_RAM_BELOW_4G {
                PC_LOWMEM_SPLIT
            } else {
                ram_size
            },
        )
    }

    /// QEMU `q35`: RAM of 2.75 GiB or more is split at 2 GiB.
    pub fn qemu_q35(ram_size: u64) -> Result<Self, LayoutError> {
        Self::split_at(
            ram_size,
            if ram_size >= 0xb000_0000 {
                0x8000_0000
            } else {
                ram_size
            },
        )
    }

    fn split_at(ram_size: u64, lowmem: u64) -> Result<Self, LayoutError> {
        let low = ram_size.min(lowmem);
        let high = ram_size - low;
        if high == 0 {
            Self::flat(ram_size)
        } else {
            Self::new(&[
                RamRegion::new(0, low, 0),
                RamRegion::new(FOUR_GIB, high, low),
            ])
        }
    }

    pub fn regions(&self) -> &[RamRegion] {
        &self.regions[..self.count]
    }

    /// Bytes of guest RAM in all regions.
    pub fn ram_size(&self) -> u64 {
        self.regions().iter().map(|r| r.size).sum()
    }

    /// The smallest backing store that holds every region.
    pub fn backing_size(&self) -> u64 {
        self.regions()
            .iter()
            .map(|r| r.offset + r.size)
            .max()
            .unwrap_or(0)
    }

    /// The backing offset of `at` and how many bytes from `at` on are in the
    /// same region; `None` if `at` is not RAM.
    pub fn locate(&self, at: GuestPhysAddr) -> Option<(u64, u64)> {
        let r = self
            .regions()
            .iter()
            .find(|r| at.0 >= r.phys.0 && at.0 - r.phys.0 < r.size)?;
        let into = at.0 - r.phys.0;
        Some((r.offset + into, r.size - into))
    }

    /// Whether every byte of `[at, at + len)` is RAM (possibly spanning
    /// adjacent regions).
    pub fn contains(&self, at: GuestPhysAddr, len: u64) -> bool {
        let mut at = at.0;
        let mut left = len;
        while left > 0 {
            let Some((_, run)) = self.locate(GuestPhysAddr(at)) else {
                return false;
            };
            let step = run.min(left);
            left -= step;
            match at.checked_add(step) {
                Some(next) => at = next,
                None => return left == 0,
            }
        }
        true
    }

    /// Splits `[at, at + len)` into `(phys, backing offset, len)` pieces, one
    /// per region it touches, calling `f` for each; fails before calling `f`
    /// at all if any byte is not RAM.
    pub fn for_each_piece<E>(
        &self,
        at: GuestPhysAddr,
        len: u64,
        mut f: impl FnMut(u64, u64, u64) -> Result<(), E>,
    ) -> Result<(), PieceError<E>> {
        if !self.contains(at, len) {
            return Err(PieceError::OutOfRange);
        }
        let mut phys = at.0;
        let mut done = 0u64;
        while done < len {
            let Some((offset, run)) = self.locate(GuestPhysAddr(phys)) else {
                return Err(PieceError::OutOfRange);
            };
            let step = run.min(len - done);
            f(done, offset, step).map_err(PieceError::Inner)?;
            done += step;
            phys = phys.wrapping_add(step);
        }
        Ok(())
    }
}

/// Why a `monvm.ram=` value did not parse (see [`RamLayout::parse_cmdline`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseLayoutError {
    /// No region at all (an empty value).
    Empty,
    /// Region `i` is not `START-END@OFFSET`.
    Syntax(usize),
    /// A number in region `i` is not `0x` followed by 1 to 16 hex digits.
    Number(usize),
    /// Region `i` ends at or before its start.
    EndNotAboveStart(usize),
    /// The regions parse but do not form a valid layout.
    Layout(LayoutError),
}

impl fmt::Display for ParseLayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseLayoutError::Empty => write!(f, "no RAM region"),
            ParseLayoutError::Syntax(i) => {
                write!(f, "RAM region {i} is not START-END@OFFSET")
            }
            ParseLayoutError::Number(i) => {
                write!(f, "RAM region {i} has a number that is not 0x<hex>")
            }
            ParseLayoutError::EndNotAboveStart(i) => {
                write!(f, "RAM region {i} does not end above its start")
            }
            ParseLayoutError::Layout(e) => e.fmt(f),
        }
    }
}

/// `0x` then 1..=16 hex digits (either case), nothing else.
fn parse_hex_u64(text: &str) -> Option<u64> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

impl RamLayout {
    /// The kernel command-line key under which the launcher hands the A-VM
    /// the Mon-VM's RAM layout: `monvm.ram=<value>` (docs/monvm.md).
    pub const CMDLINE_KEY: &'static str = "monvm.ram";

    /// Parses the value of `monvm.ram=`: comma-separated regions
    /// `START-END@OFFSET`, each a guest-physical range `[START, END)` (END
    /// exclusive) stored at byte OFFSET of the RAM file (the ivshmem BAR),
    /// every number `0x` + hex, regions sorted by START, e.g.
    /// `0x0-0xc0000000@0x0,0x100000000-0x140000000@0xc0000000` (QEMU `pc`
    /// with 4 GiB). Whitespace is not allowed. The result is validated like
    /// [`RamLayout::new`]; [`fmt::Display`] prints the same syntax.
    pub fn parse_cmdline(value: &str) -> Result<Self, ParseLayoutError> {
        if value.is_empty() {
            return Err(ParseLayoutError::Empty);
        }
        let mut regions = [RamRegion::default(); Self::MAX_REGIONS];
        let mut count = 0usize;
        for (i, text) in value.split(',').enumerate() {
            if i >= Self::MAX_REGIONS {
                return Err(ParseLayoutError::Layout(LayoutError::TooManyRegions));
            }
            let (range, offset) = text.split_once('@').ok_or(ParseLayoutError::Syntax(i))?;
            let (start, end) = range.split_once('-').ok_or(ParseLayoutError::Syntax(i))?;
            let number = |t: &str| parse_hex_u64(t).ok_or(ParseLayoutError::Number(i));
            let (start, end, offset) = (number(start)?, number(end)?, number(offset)?);
            if end <= start {
                return Err(ParseLayoutError::EndNotAboveStart(i));
            }
            regions[i] = RamRegion::new(start, end - start, offset);
            count = i + 1;
        }
        Self::new(&regions[..count]).map_err(ParseLayoutError::Layout)
    }

    /// Finds `monvm.ram=` among the whitespace-separated words of a kernel
    /// command line and parses its value; `None` if the key is absent (the
    /// last occurrence wins, as for other options).
    pub fn from_kernel_cmdline(cmdline: &str) -> Option<Result<Self, ParseLayoutError>> {
        cmdline
            .split_ascii_whitespace()
            .rev()
            .find_map(|word| {
                word.strip_prefix(Self::CMDLINE_KEY)
                    .and_then(|rest| rest.strip_prefix('='))
            })
            .map(Self::parse_cmdline)
    }
}

/// The `monvm.ram=` syntax of [`RamLayout::parse_cmdline`].
impl fmt::Display for RamLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.regions().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            // Valid layouts never overflow (checked in `new`).
            let end = r.phys.0.saturating_add(r.size);
            write!(f, "{:#x}-{:#x}@{:#x}", r.phys.0, end, r.offset)?;
        }
        Ok(())
    }
}

/// Error of [`RamLayout::for_each_piece`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceError<E> {
    OutOfRange,
    Inner(E),
}

/// The backing store failed to deliver bytes it claims to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackingError;

/// A byte store addressed by offset: a slice, a RAM file, an ivshmem BAR.
/// [`LayoutMemory`] turns one into [`GuestMemory`] through a [`RamLayout`].
pub trait Backing {
    /// Bytes available.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `buf.len()` bytes from `offset`; the caller has checked that
    /// `offset + buf.len() <= self.len()`. An error means the store failed.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackingError>;

    /// Whether the bytes at `offset` are `expected` (checked range as for
    /// [`Backing::read_at`]); a store that can compare in place overrides
    /// this copy-and-compare.
    fn equals_at(&self, offset: u64, expected: &[u8]) -> Result<bool, BackingError> {
        let mut buf = [0u8; 256];
        let mut done = 0;
        for part in expected.chunks(buf.len()) {
            let here = &mut buf[..part.len()];
            self.read_at(offset.checked_add(done).ok_or(BackingError)?, here)?;
            if here != part {
                return Ok(false);
            }
            done += part.len() as u64;
        }
        Ok(true)
    }
}

impl Backing for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        let start = usize::try_from(offset).map_err(|_| BackingError)?;
        let end = start.checked_add(buf.len()).ok_or(BackingError)?;
        let src = self.get(start..end).ok_or(BackingError)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Guest memory over any [`Backing`] through a [`RamLayout`]. Regions that
/// the backing store does not fully hold are refused at construction.
#[derive(Debug)]
pub struct LayoutMemory<B> {
    backing: B,
    layout: RamLayout,
}

/// The backing store is smaller than the layout needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackingTooSmall {
    pub needed: u64,
    pub available: u64,
}

impl fmt::Display for BackingTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the RAM layout needs {} bytes of backing store, {} are there",
            self.needed, self.available
        )
    }
}

impl<B: Backing> LayoutMemory<B> {
    pub fn new(backing: B, layout: RamLayout) -> Result<Self, BackingTooSmall> {
        let needed = layout.backing_size();
        let available = backing.len();
        if needed > available {
            return Err(BackingTooSmall { needed, available });
        }
        Ok(LayoutMemory { backing, layout })
    }

    pub fn layout(&self) -> &RamLayout {
        &self.layout
    }

    pub fn backing(&self) -> &B {
        &self.backing
    }
}

impl<B: Backing> GuestMemory for LayoutMemory<B> {
    fn read(&self, at: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        let result = self.layout.for_each_piece(at, len, |done, offset, step| {
            // Pieces lie inside `buf` by construction of for_each_piece.
            let (Ok(from), Ok(n)) = (usize::try_from(done), usize::try_from(step)) else {
                return Err(BackingError);
            };
            let piece = buf
                .get_mut(from..from.saturating_add(n))
                .ok_or(BackingError)?;
            self.backing.read_at(offset, piece)
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                buf.fill(0);
                Err(match e {
                    PieceError::OutOfRange => MemoryError::OutOfRange { at, len },
                    PieceError::Inner(BackingError) => MemoryError::Backing { at, len },
                })
            }
        }
    }

    fn equals(&self, at: GuestPhysAddr, expected: &[u8]) -> Result<bool, MemoryError> {
        let len = expected.len() as u64;
        let mut same = true;
        let result = self.layout.for_each_piece(at, len, |done, offset, step| {
            let (Ok(from), Ok(n)) = (usize::try_from(done), usize::try_from(step)) else {
                return Err(BackingError);
            };
            let piece = expected
                .get(from..from.saturating_add(n))
                .ok_or(BackingError)?;
            // Every piece is checked even after a difference: an
            // unreadable one is an error either way.
            same &= self.backing.equals_at(offset, piece)?;
            Ok(())
        });
        match result {
            Ok(()) => Ok(same),
            Err(PieceError::OutOfRange) => Err(MemoryError::OutOfRange { at, len }),
            Err(PieceError::Inner(BackingError)) => Err(MemoryError::Backing { at, len }),
        }
    }

    fn contains(&self, at: GuestPhysAddr, len: u64) -> bool {
        self.layout.contains(at, len)
    }
}

/// Guest memory held in a byte slice (a RAM image read into memory, a
/// crafted test image, a fuzz input).
pub type SliceMemory<'a> = LayoutMemory<&'a [u8]>;

impl<'a> SliceMemory<'a> {
    /// The whole slice as RAM starting at guest-physical 0.
    pub fn flat(bytes: &'a [u8]) -> Self {
        let layout = match RamLayout::flat(bytes.len() as u64) {
            Ok(layout) => layout,
            // Only an empty slice is refused by `flat`: no RAM at all.
            Err(_) => RamLayout {
                regions: [RamRegion::default(); RamLayout::MAX_REGIONS],
                count: 0,
            },
        };
        LayoutMemory {
            backing: bytes,
            layout,
        }
    }
}

/// Guest memory that counts the reads made through it: tests bound the
/// work a walk does on crafted memory with it.
#[derive(Debug)]
pub struct CountingMemory<M> {
    inner: M,
    reads: core::cell::Cell<usize>,
}

impl<M> CountingMemory<M> {
    pub fn new(inner: M) -> Self {
        Self {
            inner,
            reads: core::cell::Cell::new(0),
        }
    }

    /// Reads since it was made or last reset.
    pub fn reads(&self) -> usize {
        self.reads.get()
    }

    pub fn reset(&self) {
        self.reads.set(0);
    }
}

impl<M: GuestMemory> GuestMemory for CountingMemory<M> {
    fn read(&self, at: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.reads.set(self.reads.get().saturating_add(1));
        self.inner.read(at, buf)
    }

    fn contains(&self, at: GuestPhysAddr, len: u64) -> bool {
        self.inner.contains(at, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_pc_layouts() {
        let small = RamLayout::qemu_pc(256 << 20).expect("256M");
        assert_eq!(small.regions(), &[RamRegion::new(0, 256 << 20, 0)]);
        let four = RamLayout::qemu_pc(4 << 30).expect("4G");
        assert_eq!(
            four.regions(),
            &[
                RamRegion::new(0, 0xc000_0000, 0),
                RamRegion::new(0x1_0000_0000, 0x4000_0000, 0xc000_0000),
            ]
        );
        // FACTS: phys 0x100000000+ at file offset phys - 0x40000000.
        assert_eq!(
            four.locate(GuestPhysAddr(0x1_2345_6000)),
            Some((0x1_2345_6000 - 0x4000_0000, 0x1_4000_0000 - 0x1_2345_6000))
        );
        assert_eq!(four.locate(GuestPhysAddr(0xc000_0000)), None);
        assert_eq!(four.backing_size(), 4 << 30);
        let q35 = RamLayout::qemu_q35(3 << 30).expect("3G");
        assert_eq!(q35.regions()[0].size, 0x8000_0000);
        assert_eq!(q35.regions()[1].offset, 0x8000_0000);
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert_eq!(
            RamLayout::new(&[RamRegion::new(0, 0, 0)]),
            Err(LayoutError::EmptyRegion(0))
        );
        assert_eq!(
            RamLayout::new(&[RamRegion::new(u64::MAX, 2, 0)]),
            Err(LayoutError::Overflow(0))
        );
        assert_eq!(
            RamLayout::new(&[
                RamRegion::new(0x1000, 0x1000, 0),
                RamRegion::new(0, 0x1000, 0x1000)
            ]),
            Err(LayoutError::Unsorted(1))
        );
        assert_eq!(
            RamLayout::new(&[
                RamRegion::new(0, 0x2000, 0),
                RamRegion::new(0x10000, 0x1000, 0x1000)
            ]),
            Err(LayoutError::BackingOverlap(1))
        );
        assert_eq!(
            RamLayout::new(&[RamRegion::new(0, 1, 0); 9]),
            Err(LayoutError::TooManyRegions)
        );
    }

    #[test]
    fn reads_are_all_or_nothing_and_split_across_regions() {
        let backing: Vec<u8> = (0..=255u8).cycle().take(0x3000).collect();
        // phys 0..0x1000 -> 0..0x1000; phys 0x1000..0x2000 -> 0x2000..0x3000
        // (adjacent in guest-physical space, not in the backing store).
        let layout = RamLayout::new(&[
            RamRegion::new(0, 0x1000, 0),
            RamRegion::new(0x1000, 0x1000, 0x2000),
            RamRegion::new(0x10000, 0x1000, 0x1000),
        ])
        .expect("layout");
        let mem = LayoutMemory::new(backing.as_slice(), layout).expect("memory");
        let mut buf = [0u8; 8];
        mem.read(GuestPhysAddr(0xffc), &mut buf)
            .expect("spanning read");
        assert_eq!(buf[..4], backing[0xffc..0x1000]);
        assert_eq!(buf[4..], backing[0x2000..0x2004]);
        // Crossing from RAM into a hole fails and leaves nothing behind.
        let mut buf = [0xaau8; 8];
        assert_eq!(
            mem.read(GuestPhysAddr(0x1ffc), &mut buf),
            Err(MemoryError::OutOfRange {
                at: GuestPhysAddr(0x1ffc),
                len: 8
            })
        );
        assert_eq!(buf, [0; 8]);
        assert_eq!(mem.read_u32(GuestPhysAddr(0x10000)), Ok(0x0302_0100));
        assert!(mem.read_u64(GuestPhysAddr(u64::MAX - 3)).is_err());
        // An empty read touches nothing and succeeds anywhere.
        assert!(mem.read(GuestPhysAddr(u64::MAX), &mut []).is_ok());
    }

    /// `equals` answers as a read and a comparison would, across
    /// regions, for the layout's in-place comparison and for the default
    /// (copying) one; a range that is not all RAM is an error.
    #[test]
    fn equals_is_read_and_compare() {
        let backing: Vec<u8> = (0..=255u8).cycle().take(0x3000).collect();
        let layout = RamLayout::new(&[
            RamRegion::new(0, 0x1000, 0),
            RamRegion::new(0x1000, 0x1000, 0x2000),
        ])
        .expect("layout");
        let mem = LayoutMemory::new(backing.as_slice(), layout).expect("memory");
        let flat = SliceMemory::flat(&backing);
        for (at, len) in [(0xff0u64, 0x20usize), (0, 0x2000), (0x1234, 3), (0x7, 0)] {
            let mut want = std::vec![0u8; len];
            mem.read(GuestPhysAddr(at), &mut want).expect("read");
            assert_eq!(mem.equals(GuestPhysAddr(at), &want), Ok(true));
            let mut flat_want = std::vec![0u8; len];
            flat.read(GuestPhysAddr(at), &mut flat_want).expect("read");
            assert_eq!(flat.equals(GuestPhysAddr(at), &flat_want), Ok(true));
            for i in [0, len / 2, len.saturating_sub(1)]
                .into_iter()
                .filter(|&i| i < len)
            {
                want[i] ^= 0x80;
                assert_eq!(
                    mem.equals(GuestPhysAddr(at), &want),
                    Ok(false),
                    "{at:#x}+{i}"
                );
                want[i] ^= 0x80;
                flat_want[i] ^= 1;
                assert_eq!(flat.equals(GuestPhysAddr(at), &flat_want), Ok(false));
                flat_want[i] ^= 1;
            }
        }
        assert!(mem.equals(GuestPhysAddr(0x1ff0), &[0; 0x20]).is_err());
        assert!(flat.equals(GuestPhysAddr(0x2ff0), &[0; 0x20]).is_err());
    }

    #[test]
    fn cmdline_syntax_roundtrips() {
        let four = RamLayout::qemu_pc(4 << 30).expect("4G");
        let text = four.to_string();
        assert_eq!(
            text,
            "0x0-0xc0000000@0x0,0x100000000-0x140000000@0xc0000000"
        );
        assert_eq!(RamLayout::parse_cmdline(&text), Ok(four));
        let small = RamLayout::qemu_pc(256 << 20).expect("256M");
        assert_eq!(small.to_string(), "0x0-0x10000000@0x0");
        assert_eq!(RamLayout::parse_cmdline("0X0-0X10000000@0x0"), Ok(small));
        assert_eq!(
            RamLayout::from_kernel_cmdline("log=debug monvm.ram=0x0-0x10000000@0x0 x"),
            Some(Ok(small))
        );
        assert_eq!(
            RamLayout::from_kernel_cmdline("monvm.ram=0x0-0x1000@0x0 monvm.ram=0x0-0x10000000@0x0"),
            Some(Ok(small))
        );
        assert_eq!(
            RamLayout::from_kernel_cmdline("monvm.ramx=1 log=debug"),
            None
        );
        assert_eq!(
            RamLayout::from_kernel_cmdline("monvm.ram="),
            Some(Err(ParseLayoutError::Empty))
        );
    }

    #[test]
    fn cmdline_syntax_errors_are_named() {
        use ParseLayoutError as E;
        for (text, err) in [
            ("", E::Empty),
            ("0x0-0x1000", E::Syntax(0)),
            ("0x0@0x0", E::Syntax(0)),
            ("0x0-0x1000@0x0,", E::Syntax(1)),
            ("0x0-0x1000@0x0 ", E::Number(0)),
            ("0-0x1000@0x0", E::Number(0)),
            ("0x-0x1000@0x0", E::Number(0)),
            ("0x0-0x1000@0x0,0x2000-0x3000@-0x1", E::Number(1)),
            ("0x0-0x10000000000000000@0x0", E::Number(0)),
            ("0x0-0x00000000000000001@0x0", E::Number(0)),
            ("+0x0-0x1000@0x0", E::Number(0)),
            ("0x1000-0x1000@0x0", E::EndNotAboveStart(0)),
            ("0x2000-0x1000@0x0", E::EndNotAboveStart(0)),
            (
                "0x1000-0x2000@0x0,0x0-0x1000@0x1000",
                E::Layout(LayoutError::Unsorted(1)),
            ),
            (
                "0x0-0x2000@0x0,0x10000-0x11000@0x1000",
                E::Layout(LayoutError::BackingOverlap(1)),
            ),
            (
                "0x0-0x1000@0xfffffffffffff800",
                E::Layout(LayoutError::Overflow(0)),
            ),
        ] {
            assert_eq!(RamLayout::parse_cmdline(text), Err(err), "{text:?}");
        }
        let nine = ["0x0-0x1@0x0"; 9].join(",");
        assert_eq!(
            RamLayout::parse_cmdline(&nine),
            Err(E::Layout(LayoutError::TooManyRegions))
        );
    }

    proptest::proptest! {
        #[test]
        fn cmdline_parse_never_panics(text in "\\PC{0,80}") {
            let _ = RamLayout::parse_cmdline(&text);
            let _ = RamLayout::from_kernel_cmdline(&text);
        }

        #[test]
        fn cmdline_display_parses_back(
            sizes in proptest::collection::vec((1u64..1 << 40, 0u64..1 << 40), 1..=8),
        ) {
            // Sorted, disjoint regions with gaps, stored back to back.
            let mut regions = std::vec::Vec::new();
            let (mut phys, mut offset) = (0u64, 0u64);
            for (size, gap) in sizes {
                phys += gap;
                regions.push(RamRegion::new(phys, size, offset));
                phys += size;
                offset += size;
            }
            let layout = RamLayout::new(&regions).expect("valid by construction");
            proptest::prop_assert_eq!(RamLayout::parse_cmdline(&layout.to_string()), Ok(layout));
        }
    }

    #[test]
    fn backing_must_hold_the_layout() {
        let bytes = [0u8; 0x1000];
        let layout = RamLayout::qemu_pc(0x2000).expect("layout");
        assert_eq!(
            LayoutMemory::new(&bytes[..], layout).err(),
            Some(BackingTooSmall {
                needed: 0x2000,
                available: 0x1000
            })
        );
        let empty = SliceMemory::flat(&[]);
        assert!(!empty.contains(GuestPhysAddr(0), 1));
        assert!(empty.read_u8(GuestPhysAddr(0)).is_err());
    }
}
