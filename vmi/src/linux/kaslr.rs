//! Finding the running kernel from its memory alone (the A-VM has no access
//! to the Mon-VM's registers): the physical load address is the one
//! 2 MiB-aligned candidate whose banner (at its link-time offset from
//! `_text`) matches the package's banner byte for byte (a plain string
//! search is ambiguous: RAM holds several copies); the virtual slide is read
//! from `kallsyms_relative_base` in RAM, which the kernel relocates to the
//! runtime `_text`; `phys_base`, when given, must agree. The kernel's own
//! page tables (`init_top_pgt`) then give its address space without CR3, and
//! `pgdir_shift` tells the paging depth.

use core::fmt;

use crate::addr::{GuestPhysAddr, GuestVirtAddr};
use crate::kallsyms::KERNEL_TEXT_PREFIX;
use crate::memory::{GuestMemory, MemoryError, RamRegion};
use crate::paging::{AddressSpace, PagingMode};

/// Alignment of the kernel's physical and virtual placement
/// (`CONFIG_PHYSICAL_ALIGN` on Debian's x86-64 kernels).
pub const KERNEL_ALIGN: u64 = 2 << 20;
/// The kernel image mapping ends here (`KERNEL_IMAGE_SIZE` = 1 GiB above
/// `__START_KERNEL_map`).
pub const KERNEL_IMAGE_END: u64 = 0xffff_ffff_c000_0000;
/// Longest banner compared (the kernel's is about 150 bytes).
pub const MAX_BANNER: usize = 512;

/// Link-time facts about the kernel image, from the profile: addresses as
/// linked (kallsyms of the package's vmlinux) and the banner bytes.
#[derive(Clone, Copy, Debug)]
pub struct KernelImage<'a> {
    /// `_text` as linked (0xffffffff81000000 on Debian).
    pub link_text: u64,
    /// `linux_banner` as linked.
    pub banner_va: u64,
    /// The banner as in the image ("Linux version ...\n"; NUL excluded or
    /// included, compared as given).
    pub banner: &'a [u8],
    /// `kallsyms_relative_base` as linked (from the kallsyms recovery's table
    /// location when the kernel does not list it).
    pub relative_base_va: u64,
    /// `phys_base` as linked, to cross-check the slide.
    pub phys_base_va: Option<u64>,
}

/// Where the running kernel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLocation {
    /// Physical address of `_text`.
    pub phys_text: GuestPhysAddr,
    pub link_text: u64,
    /// `_text` at run time.
    pub runtime_text: u64,
}

/// Why the kernel was not located.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KaslrError {
    /// The profile's link-time addresses are not inside the image mapping
    /// (or the banner is empty or too long).
    BadProfile,
    /// No 2 MiB-aligned candidate holds the banner.
    BannerNotFound,
    /// Several candidates hold it.
    Ambiguous {
        first: GuestPhysAddr,
        second: GuestPhysAddr,
    },
    /// The relocated `kallsyms_relative_base` is no kernel-image address.
    BadRelativeBase(u64),
    /// `phys_base` disagrees with the slide read from kallsyms.
    Inconsistent {
        from_kallsyms: u64,
        from_phys_base: u64,
    },
    /// `pgdir_shift` is neither 39 nor 48.
    BadPgdirShift(u32),
    Memory(MemoryError),
}

impl fmt::Display for KaslrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KaslrError::BadProfile => write!(f, "profile addresses outside the kernel image"),
            KaslrError::BannerNotFound => write!(f, "kernel banner not found in guest RAM"),
            KaslrError::Ambiguous { first, second } => {
                write!(
                    f,
                    "kernel banner found at two load addresses ({first}, {second})"
                )
            }
            KaslrError::BadRelativeBase(v) => {
                write!(f, "relocated kallsyms base {v:#x} is not a kernel address")
            }
            KaslrError::Inconsistent {
                from_kallsyms,
                from_phys_base,
            } => write!(
                f,
                "runtime _text {from_kallsyms:#x} (kallsyms) vs {from_phys_base:#x} (phys_base)"
            ),
            KaslrError::BadPgdirShift(s) => write!(f, "pgdir_shift {s} is neither 39 nor 48"),
            KaslrError::Memory(e) => write!(f, "{e}"),
        }
    }
}

impl From<MemoryError> for KaslrError {
    fn from(e: MemoryError) -> Self {
        KaslrError::Memory(e)
    }
}

impl KernelImage<'_> {
    /// Offset of a link-time image address from `_text`, if inside the image.
    fn offset_of(&self, link_va: u64) -> Option<u64> {
        if !(self.link_text..KERNEL_IMAGE_END).contains(&link_va) {
            return None;
        }
        Some(link_va - self.link_text)
    }
}

impl KernelLocation {
    /// Runtime `_text` minus linked `_text` (the KASLR virtual slide).
    pub fn slide(&self) -> u64 {
        self.runtime_text.wrapping_sub(self.link_text)
    }

    /// Physical address of a link-time kernel-image address (the image is
    /// physically contiguous from `_text` on).
    pub fn phys_of(&self, link_va: u64) -> Option<GuestPhysAddr> {
        if !(self.link_text..KERNEL_IMAGE_END).contains(&link_va) {
            return None;
        }
        self.phys_text.checked_add(link_va - self.link_text)
    }

    /// Runtime virtual address of a link-time kernel-image address.
    pub fn runtime_of(&self, link_va: u64) -> Option<GuestVirtAddr> {
        if !(self.link_text..KERNEL_IMAGE_END).contains(&link_va) {
            return None;
        }
        GuestVirtAddr::new(link_va.wrapping_add(self.slide())).ok()
    }

    /// Paging depth from `pgdir_shift` (39: 4 levels, 48: 5 levels), read
    /// at its physical address; `None` (a kernel without 5-level support)
    /// means 4 levels.
    pub fn paging_mode<M: GuestMemory + ?Sized>(
        &self,
        memory: &M,
        pgdir_shift_va: Option<u64>,
    ) -> Result<PagingMode, KaslrError> {
        let Some(va) = pgdir_shift_va else {
            return Ok(PagingMode::FourLevel);
        };
        let at = self.phys_of(va).ok_or(KaslrError::BadProfile)?;
        match memory.read_u32(at)? {
            39 => Ok(PagingMode::FourLevel),
            48 => Ok(PagingMode::FiveLevel),
            other => Err(KaslrError::BadPgdirShift(other)),
        }
    }

    /// The kernel's own address space, rooted at `init_top_pgt` (its
    /// physical address follows from the load address: no CR3 needed).
    pub fn address_space<'m, M: GuestMemory + ?Sized>(
        &self,
        memory: &'m M,
        init_top_pgt_va: u64,
        mode: PagingMode,
    ) -> Result<AddressSpace<'m, M>, KaslrError> {
        let root = self
            .phys_of(init_top_pgt_va)
            .ok_or(KaslrError::BadProfile)?;
        Ok(AddressSpace::new(memory, root, mode))
    }
}

/// Locates the running kernel in the RAM `regions` of `memory`.
pub fn locate_kernel<M: GuestMemory + ?Sized>(
    memory: &M,
    regions: &[RamRegion],
    image: &KernelImage<'_>,
) -> Result<KernelLocation, KaslrError> {
    let banner_off = image
        .offset_of(image.banner_va)
        .ok_or(KaslrError::BadProfile)?;
    let base_off = image
        .offset_of(image.relative_base_va)
        .ok_or(KaslrError::BadProfile)?;
    if image.banner.is_empty() || image.banner.len() > MAX_BANNER {
        return Err(KaslrError::BadProfile);
    }
    let mut buf = [0u8; MAX_BANNER];
    let buf = &mut buf[..image.banner.len()];
    let mut found: Option<GuestPhysAddr> = None;
    for r in regions {
        // 2 MiB-aligned candidates inside the region.
        let Some(end) = r.phys.0.checked_add(r.size) else {
            continue;
        };
        let mut p = r.phys.0.div_ceil(KERNEL_ALIGN).saturating_mul(KERNEL_ALIGN);
        while p < end {
            let holds_banner = p.checked_add(banner_off).is_some_and(|at| {
                memory.read(GuestPhysAddr(at), buf).is_ok() && buf == image.banner
            });
            if holds_banner {
                match found {
                    None => found = Some(GuestPhysAddr(p)),
                    Some(first) => {
                        return Err(KaslrError::Ambiguous {
                            first,
                            second: GuestPhysAddr(p),
                        });
                    }
                }
            }
            p = match p.checked_add(KERNEL_ALIGN) {
                Some(next) => next,
                None => break,
            };
        }
    }
    let phys_text = found.ok_or(KaslrError::BannerNotFound)?;
    let base_at = phys_text
        .checked_add(base_off)
        .ok_or(KaslrError::BadProfile)?;
    let runtime_text = memory.read_u64(base_at)?;
    if !(KERNEL_TEXT_PREFIX..KERNEL_IMAGE_END).contains(&runtime_text)
        || runtime_text % KERNEL_ALIGN != 0
    {
        return Err(KaslrError::BadRelativeBase(runtime_text));
    }
    let location = KernelLocation {
        phys_text,
        link_text: image.link_text,
        runtime_text,
    };
    if let Some(va) = image.phys_base_va {
        // _text = __START_KERNEL_map + P - phys_base.
        let at = location.phys_of(va).ok_or(KaslrError::BadProfile)?;
        let phys_base = memory.read_u64(at)?;
        let from_phys_base = KERNEL_TEXT_PREFIX
            .wrapping_add(phys_text.0)
            .wrapping_sub(phys_base);
        if from_phys_base != runtime_text {
            return Err(KaslrError::Inconsistent {
                from_kallsyms: runtime_text,
                from_phys_base,
            });
        }
    }
    Ok(location)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::SliceMemory;

    const LINK: u64 = 0xffff_ffff_8100_0000;
    const BANNER: &[u8] = b"Linux version 6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org)\n";

    fn image() -> KernelImage<'static> {
        KernelImage {
            link_text: LINK,
            banner_va: LINK + 0x1_1900,
            banner: BANNER,
            relative_base_va: LINK + 0x2_0000,
            phys_base_va: Some(LINK + 0x3_0000),
        }
    }

    /// RAM of 16 MiB with the kernel's banner, base and phys_base at P.
    fn ram(p: u64, runtime_text: u64, phys_base: u64) -> Vec<u8> {
        let mut ram = vec![0u8; 16 << 20];
        let at = (p + 0x1_1900) as usize;
        ram[at..at + BANNER.len()].copy_from_slice(BANNER);
        let at = (p + 0x2_0000) as usize;
        ram[at..at + 8].copy_from_slice(&runtime_text.to_le_bytes());
        let at = (p + 0x3_0000) as usize;
        ram[at..at + 8].copy_from_slice(&phys_base.to_le_bytes());
        ram
    }

    fn regions(ram: &[u8]) -> [RamRegion; 1] {
        [RamRegion::new(0, ram.len() as u64, 0)]
    }

    #[test]
    fn finds_load_address_and_slide() {
        let p = 0x60_0000;
        let runtime = LINK + 0x1e00_0000;
        // _text = 0xffffffff80000000 + P - phys_base
        let phys_base = (KERNEL_TEXT_PREFIX + p).wrapping_sub(runtime);
        let mut ram = ram(p, runtime, phys_base);
        // Decoys: the banner at unaligned places and a prefix of it at an
        // aligned candidate.
        ram[0x1234..0x1234 + BANNER.len()].copy_from_slice(BANNER);
        let decoy = 0xa0_0000 + 0x1_1900;
        ram[decoy..decoy + 20].copy_from_slice(&BANNER[..20]);
        let mem = SliceMemory::flat(&ram);
        let loc = locate_kernel(&mem, &regions(&ram), &image()).expect("located");
        assert_eq!(loc.phys_text, GuestPhysAddr(p));
        assert_eq!(loc.runtime_text, runtime);
        assert_eq!(loc.slide(), 0x1e00_0000);
        assert_eq!(loc.phys_of(LINK + 0x100), Some(GuestPhysAddr(p + 0x100)));
        assert_eq!(
            loc.runtime_of(LINK + 0x100).map(|v| v.value()),
            Some(runtime + 0x100)
        );
        assert_eq!(loc.phys_of(LINK - 1), None);
        assert_eq!(loc.runtime_of(0xffff_ffff_c000_0000), None);
    }

    #[test]
    fn refuses_missing_ambiguous_and_inconsistent_kernels() {
        let p = 0x60_0000;
        let runtime = LINK;
        let phys_base = (KERNEL_TEXT_PREFIX + p).wrapping_sub(runtime);
        let good = ram(p, runtime, phys_base);
        let mem_of = |r: &Vec<u8>| SliceMemory::flat(r).layout().regions().to_vec();
        // No banner.
        let empty = vec![0u8; 16 << 20];
        assert_eq!(
            locate_kernel(&SliceMemory::flat(&empty), &mem_of(&empty), &image()),
            Err(KaslrError::BannerNotFound)
        );
        // Two aligned candidates.
        let mut two = good.clone();
        let at = 0xc0_0000 + 0x1_1900;
        two[at..at + BANNER.len()].copy_from_slice(BANNER);
        assert!(matches!(
            locate_kernel(&SliceMemory::flat(&two), &mem_of(&two), &image()),
            Err(KaslrError::Ambiguous { .. })
        ));
        // A relocated base that is no kernel address / not aligned.
        for bad in [0x1000u64, LINK + 0x1000, 0xffff_ffff_c000_0000] {
            let r = ram(p, bad, phys_base);
            assert_eq!(
                locate_kernel(&SliceMemory::flat(&r), &mem_of(&r), &image()),
                Err(KaslrError::BadRelativeBase(bad))
            );
        }
        // phys_base telling another story.
        let r = ram(p, runtime, phys_base + KERNEL_ALIGN);
        assert!(matches!(
            locate_kernel(&SliceMemory::flat(&r), &mem_of(&r), &image()),
            Err(KaslrError::Inconsistent { .. })
        ));
        // Profile addresses outside the image.
        let mut bad = image();
        bad.banner_va = 0x1000;
        assert_eq!(
            locate_kernel(&SliceMemory::flat(&good), &mem_of(&good), &bad),
            Err(KaslrError::BadProfile)
        );
    }

    #[test]
    fn paging_mode_from_pgdir_shift() {
        let mut ram = vec![0u8; 0x10_0000];
        let loc = KernelLocation {
            phys_text: GuestPhysAddr(0x1000),
            link_text: LINK,
            runtime_text: LINK,
        };
        let mem = SliceMemory::flat(&ram);
        assert_eq!(loc.paging_mode(&mem, None), Ok(PagingMode::FourLevel));
        for (shift, mode) in [
            (39u32, Ok(PagingMode::FourLevel)),
            (48, Ok(PagingMode::FiveLevel)),
            (7, Err(KaslrError::BadPgdirShift(7))),
        ] {
            ram[0x2000..0x2004].copy_from_slice(&shift.to_le_bytes());
            let mem = SliceMemory::flat(&ram);
            assert_eq!(loc.paging_mode(&mem, Some(LINK + 0x1000)), mode);
        }
        let mem = SliceMemory::flat(&ram);
        assert!(matches!(
            loc.paging_mode(&mem, Some(LINK + 0x10_0000)),
            Err(KaslrError::Memory(_))
        ));
    }
}
