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
