//! The PVH `hvm_start_info` structure (Xen `arch-x86/hvm/start_info.h`).
//!
//! The loader (QEMU's PVH option ROM or Xen) passes its physical address in
//! `%ebx`. Everything in it is checked: the magic, the counts (bounded by the
//! capacities below) and every pointer (read through [`PhysRead`]).

use crate::phys::{PhysRead, PhysReadError};
use heapless::Vec;

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Size of the version-0 header (up to and including `rsdp_paddr`).
const HEADER_V0_LEN: usize = 40;
/// Size of the version-1 header (adds the memory map).
pub const HEADER_V1_LEN: usize = 56;
const MODLIST_ENTRY_LEN: u64 = 32;
const MEMMAP_ENTRY_LEN: u64 = 24;

/// Most memory-map entries accepted.
pub const MAX_MEMORY_REGIONS: usize = 128;
/// Most modules accepted.
pub const MAX_MODULES: usize = 16;
/// Longest command line accepted, in bytes, without its NUL.
pub const MAX_CMDLINE_LEN: usize = 2048;

/// Why the start info was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootInfoError {
    /// A read outside readable memory.
    Unreadable(PhysReadError),
    /// The magic field is not [`START_INFO_MAGIC`].
    BadMagic(u32),
    /// More memory-map entries than [`MAX_MEMORY_REGIONS`].
    TooManyMemoryRegions(u32),
    /// More modules than [`MAX_MODULES`].
    TooManyModules(u32),
    /// No NUL within [`MAX_CMDLINE_LEN`] bytes.
    CmdlineTooLong,
    /// The command line is not UTF-8.
    CmdlineNotUtf8,
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unreadable(e) => write!(f, "{e}"),
            Self::BadMagic(m) => write!(f, "bad magic {m:#x}"),
            Self::TooManyMemoryRegions(n) => write!(f, "{n} memory-map entries"),
            Self::TooManyModules(n) => write!(f, "{n} modules"),
            Self::CmdlineTooLong => f.write_str("command line too long"),
            Self::CmdlineNotUtf8 => f.write_str("command line not UTF-8"),
        }
    }
}

impl From<PhysReadError> for BootInfoError {
    fn from(e: PhysReadError) -> Self {
        Self::Unreadable(e)
    }
}

/// The type of a memory-map entry (E820 numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Usable RAM (1).
    Ram,
    /// Reserved (2).
    Reserved,
    /// ACPI tables, reclaimable after reading them (3).
    AcpiReclaimable,
    /// ACPI non-volatile storage (4).
    AcpiNvs,
    /// Defective RAM (5).
    Unusable,
    /// Any other type number.
    Other(u32),
}

impl core::fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Ram => f.write_str("RAM"),
            Self::Reserved => f.write_str("reserved"),
            Self::AcpiReclaimable => f.write_str("ACPI reclaimable"),
            Self::AcpiNvs => f.write_str("ACPI NVS"),
            Self::Unusable => f.write_str("unusable"),
            Self::Other(ty) => write!(f, "type {ty}"),
        }
    }
}

impl MemoryKind {
    /// The kind for an E820 type number.
    pub fn from_e820(ty: u32) -> Self {
        match ty {
            1 => Self::Ram,
            2 => Self::Reserved,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Unusable,
            other => Self::Other(other),
        }
    }
}

/// One memory-map entry. `end()` saturates, so a bogus size cannot wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the region is.
    pub kind: MemoryKind,
}

impl MemoryRegion {
    /// One past the last byte (saturating at `u64::MAX`).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// One boot module (QEMU `-initrd` becomes module 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module {
    /// Physical address of the module.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Physical address of its NUL-terminated command line, or 0.
    pub cmdline_paddr: u64,
}

impl Module {
    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// The validated start info, copied out of guest memory.
#[derive(Debug, Clone)]
pub struct StartInfo {
    /// Physical address of the structure itself.
    pub paddr: u64,
    /// Structure version (0 has no memory map).
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Physical address of the ACPI RSDP, or 0 if the loader did not give one.
    pub rsdp_paddr: u64,
    /// Physical address of the command line, or 0.
    pub cmdline_paddr: u64,
    cmdline: Vec<u8, MAX_CMDLINE_LEN>,
    /// Physical address and byte length of the module list.
    pub modlist: (u64, u64),
    /// Physical address and byte length of the memory map.
    pub memmap_table: (u64, u64),
    /// The memory map.
    pub memory: Vec<MemoryRegion, MAX_MEMORY_REGIONS>,
    /// The modules.
    pub modules: Vec<Module, MAX_MODULES>,
}

impl StartInfo {
    /// Reads and validates the start info at `paddr`.
    pub fn parse(mem: &impl PhysRead, paddr: u64) -> Result<Self, BootInfoError> {
        let head: [u8; HEADER_V0_LEN] = mem.read_array(paddr)?;
        let u32_at = |o: usize| crate::phys::le_u32(&head, o).unwrap_or(0);
        let u64_at = |o: usize| crate::phys::le_u64(&head, o).unwrap_or(0);
        let magic = u32_at(0);
        if magic != START_INFO_MAGIC {
            return Err(BootInfoError::BadMagic(magic));
        }
        let version = u32_at(4);
        let flags = u32_at(8);
        let nr_modules = u32_at(12);
        let modlist_paddr = u64_at(16);
        let cmdline_paddr = u64_at(24);
        let rsdp_paddr = u64_at(32);

        let mut info = StartInfo {
            paddr,
            version,
            flags,
            rsdp_paddr,
            cmdline_paddr,
            cmdline: Vec::new(),
            modlist: (modlist_paddr, 0),
            memmap_table: (0, 0),
            memory: Vec::new(),
            modules: Vec::new(),
        };

        if cmdline_paddr != 0 {
            info.cmdline = read_c_string(mem, cmdline_paddr)?;
            if core::str::from_utf8(&info.cmdline).is_err() {
                return Err(BootInfoError::CmdlineNotUtf8);
            }
        }

        if nr_modules as usize > MAX_MODULES {
            return Err(BootInfoError::TooManyModules(nr_modules));
        }
        info.modlist.1 = u64::from(nr_modules) * MODLIST_ENTRY_LEN;
        for i in 0..u64::from(nr_modules) {
            let e: [u8; MODLIST_ENTRY_LEN as usize] =
                mem.read_array(entry_addr(modlist_paddr, i, MODLIST_ENTRY_LEN)?)?;
            let m = Module {
                start: crate::phys::le_u64(&e, 0).unwrap_or(0),
                len: crate::phys::le_u64(&e, 8).unwrap_or(0),
                cmdline_paddr: crate::phys::le_u64(&e, 16).unwrap_or(0),
            };
            // Capacity was checked against nr_modules above.
            let _ = info.modules.push(m);
        }

        if version >= 1 {
            let tail: [u8; 16] = mem.read_array(paddr.checked_add(40).ok_or(PhysReadError {
                addr: paddr,
                len: HEADER_V1_LEN,
            })?)?;
            let memmap_paddr = crate::phys::le_u64(&tail, 0).unwrap_or(0);
            let entries = crate::phys::le_u32(&tail, 8).unwrap_or(0);
            if entries as usize > MAX_MEMORY_REGIONS {
                return Err(BootInfoError::TooManyMemoryRegions(entries));
            }
            info.memmap_table = (memmap_paddr, u64::from(entries) * MEMMAP_ENTRY_LEN);
            for i in 0..u64::from(entries) {
                let e: [u8; MEMMAP_ENTRY_LEN as usize] =
                    mem.read_array(entry_addr(memmap_paddr, i, MEMMAP_ENTRY_LEN)?)?;
                let r = MemoryRegion {
                    start: crate::phys::le_u64(&e, 0).unwrap_or(0),
                    len: crate::phys::le_u64(&e, 8).unwrap_or(0),
                    kind: MemoryKind::from_e820(crate::phys::le_u32(&e, 16).unwrap_or(0)),
                };
                let _ = info.memory.push(r);
            }
        }
        Ok(info)
    }

    /// The kernel command line (empty if the loader gave none).
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline).unwrap_or("")
    }

    /// Physical ranges (start, end) that the loader's data occupies and that
    /// must not be handed to the heap: this structure, its tables, the command
    /// line and the modules.
    pub fn occupied_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let own = [
            (self.paddr, HEADER_V1_LEN as u64),
            (self.cmdline_paddr, self.cmdline.len() as u64 + 1),
            self.modlist,
            self.memmap_table,
        ];
        own.into_iter()
            .chain(self.modules.iter().map(|m| (m.start, m.len)))
            .filter(|&(start, len)| start != 0 && len != 0)
            .map(|(start, len)| (start, start.saturating_add(len)))
    }
}

fn entry_addr(table: u64, index: u64, entry_len: u64) -> Result<u64, PhysReadError> {
    index
        .checked_mul(entry_len)
        .and_then(|off| table.checked_add(off))
        .ok_or(PhysReadError {
            addr: table,
            len: entry_len as usize,
        })
}

fn read_c_string(
    mem: &impl PhysRead,
    paddr: u64,
) -> Result<Vec<u8, MAX_CMDLINE_LEN>, BootInfoError> {
    let mut out = Vec::new();
    for i in 0..=MAX_CMDLINE_LEN as u64 {
        let addr = paddr.checked_add(i).ok_or(PhysReadError {
            addr: paddr,
            len: 1,
        })?;
        let [b] = mem.read_array::<1>(addr)?;
        if b == 0 {
            return Ok(out);
        }
        out.push(b).map_err(|_| BootInfoError::CmdlineTooLong)?;
    }
    Err(BootInfoError::CmdlineTooLong)
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_and_kinds_read_as_text() {
        assert_eq!(
            BootInfoError::BadMagic(0x1234).to_string(),
            "bad magic 0x1234"
        );
        assert_eq!(MemoryKind::from_e820(1).to_string(), "RAM");
        assert_eq!(MemoryKind::from_e820(12).to_string(), "type 12");
    }

    use super::*;
    use crate::phys::BufferMemory;
    use proptest::prelude::*;

    const BASE: u64 = 0x1000;

    /// Builds a start info image at BASE: header at 0, cmdline at 0x100,
    /// modlist at 0x200, memmap at 0x400.
    fn image(
        cmdline: &[u8],
        modules: &[(u64, u64)],
        regions: &[(u64, u64, u32)],
    ) -> std::vec::Vec<u8> {
        let mut b = vec![0u8; 0x1000];
        b[0..4].copy_from_slice(&START_INFO_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&(modules.len() as u32).to_le_bytes());
        b[16..24].copy_from_slice(&(BASE + 0x200).to_le_bytes());
        b[24..32].copy_from_slice(&(BASE + 0x100).to_le_bytes());
        b[32..40].copy_from_slice(&0xf5a40u64.to_le_bytes());
        b[40..48].copy_from_slice(&(BASE + 0x400).to_le_bytes());
        b[48..52].copy_from_slice(&(regions.len() as u32).to_le_bytes());
        b[0x100..0x100 + cmdline.len()].copy_from_slice(cmdline);
        for (i, (start, len)) in modules.iter().enumerate() {
            let o = 0x200 + i * 32;
            b[o..o + 8].copy_from_slice(&start.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&len.to_le_bytes());
        }
        for (i, (start, len, ty)) in regions.iter().enumerate() {
            let o = 0x400 + i * 24;
            b[o..o + 8].copy_from_slice(&start.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&len.to_le_bytes());
            b[o + 16..o + 20].copy_from_slice(&ty.to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_qemu_like_start_info() {
        let b = image(
            b"exit-after-report log=debug",
            &[(0x700_0000, 0x1234)],
            &[
                (0, 0x9fc00, 1),
                (0xf0000, 0x10000, 2),
                (0x10_0000, 0x7f0_0000, 1),
            ],
        );
        let info = StartInfo::parse(&BufferMemory::new(BASE, &b), BASE).unwrap();
        assert_eq!(info.cmdline(), "exit-after-report log=debug");
        assert_eq!(info.rsdp_paddr, 0xf5a40);
        assert_eq!(info.modules.len(), 1);
        assert_eq!(info.modules[0].end(), 0x700_1234);
        assert_eq!(info.memory.len(), 3);
        assert_eq!(info.memory[1].kind, MemoryKind::Reserved);
        assert_eq!(info.memory[2].end(), 0x800_0000);
        let occ: std::vec::Vec<_> = info.occupied_ranges().collect();
        assert!(occ.contains(&(BASE, BASE + 56)));
        assert!(occ.contains(&(0x700_0000, 0x700_1234)));
        assert!(occ.contains(&(BASE + 0x100, BASE + 0x100 + 28)));
    }

    #[test]
    fn rejects_bad_magic_and_oversized_counts() {
        let mut b = image(b"", &[], &[]);
        b[0] ^= 1;
        assert!(matches!(
            StartInfo::parse(&BufferMemory::new(BASE, &b), BASE),
            Err(BootInfoError::BadMagic(_))
        ));
        let mut b = image(b"", &[], &[]);
        b[48..52].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            StartInfo::parse(&BufferMemory::new(BASE, &b), BASE).unwrap_err(),
            BootInfoError::TooManyMemoryRegions(u32::MAX)
        );
        let mut b = image(b"", &[], &[]);
        b[12..16].copy_from_slice(&17u32.to_le_bytes());
        assert_eq!(
            StartInfo::parse(&BufferMemory::new(BASE, &b), BASE).unwrap_err(),
            BootInfoError::TooManyModules(17)
        );
    }

    #[test]
    fn rejects_unterminated_and_non_utf8_cmdline() {
        let mut b = image(b"", &[], &[]);
        b[0x100..].fill(b'a');
        assert!(StartInfo::parse(&BufferMemory::new(BASE, &b), BASE).is_err());
        let b = image(&[0xff, 0xfe], &[], &[]);
        assert_eq!(
            StartInfo::parse(&BufferMemory::new(BASE, &b), BASE).unwrap_err(),
            BootInfoError::CmdlineNotUtf8
        );
    }

    #[test]
    fn version_0_has_no_memory_map() {
        let mut b = image(b"", &[], &[(0, 0x1000, 1)]);
        b[4..8].copy_from_slice(&0u32.to_le_bytes());
        let info = StartInfo::parse(&BufferMemory::new(BASE, &b), BASE).unwrap();
        assert!(info.memory.is_empty());
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048), magic in any::<bool>()) {
            let mut bytes = bytes;
            if magic && bytes.len() >= 4 {
                bytes[0..4].copy_from_slice(&START_INFO_MAGIC.to_le_bytes());
            }
            let _ = StartInfo::parse(&BufferMemory::new(BASE, &bytes), BASE);
        }

        #[test]
        fn memory_map_round_trips(regions in proptest::collection::vec((any::<u64>(), any::<u64>(), 0u32..8), 0..20)) {
            let b = image(b"x", &[], &regions);
            let info = StartInfo::parse(&BufferMemory::new(BASE, &b), BASE).unwrap();
            prop_assert_eq!(info.memory.len(), regions.len());
            for (r, (start, len, ty)) in info.memory.iter().zip(regions) {
                prop_assert_eq!(r.start, start);
                prop_assert_eq!(r.len, len);
                prop_assert_eq!(r.kind, MemoryKind::from_e820(ty));
                prop_assert!(r.end() >= r.start);
            }
        }
    }
}
