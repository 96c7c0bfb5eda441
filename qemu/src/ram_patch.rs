//! Writes into a live Mon-VM's kernel memory through its RAM file, as a
//! rootkit inside it would: the outside attacks of `avm-demo` and of the
//! integration tests. The Mon-VM's kernel is located in its RAM as the
//! A-VM locates it (the node's kernel profile, KASLR undone from memory
//! alone); the original bytes go back on [`RamPatch::restore`] or when the
//! patch is dropped (also when a test or the demo fails).

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use vmi::file::FileMemory;
use vmi::linux::{KernelLocation, KernelView};
use vmi::profile::KernelProfile;

use crate::NodeRecord;

/// Why a patch could not be made or undone.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

fn error(text: impl Into<String>) -> PatchError {
    PatchError(text.into())
}

/// The Mon-VM's RAM file and kernel profile, as the A-VM sees them.
pub struct MonVmRam {
    ram: PathBuf,
    avm_serial: PathBuf,
    layout: vmi::RamLayout,
    pub profile: KernelProfile,
    memory: FileMemory,
}

/// Bytes written into the Mon-VM's memory; the original bytes go back on
/// [`RamPatch::restore`] or on drop.
#[derive(Debug)]
pub struct RamPatch {
    file: std::fs::File,
    offset: u64,
    original: Vec<u8>,
    restored: bool,
    /// When the new bytes were in the file.
    pub written_at: Instant,
}

impl MonVmRam {
    /// The RAM file, layout and profile the node's record names.
    pub fn open(record: &NodeRecord) -> Result<Self, PatchError> {
        let ram = record
            .monvm_ram
            .clone()
            .ok_or_else(|| error("the node has no Mon-VM RAM file"))?;
        let layout = vmi::RamLayout::parse_cmdline(
            record
                .monvm_ram_layout
                .as_deref()
                .ok_or_else(|| error("no Mon-VM RAM layout"))?,
        )
        .map_err(|e| error(format!("the Mon-VM RAM layout: {e:?}")))?;
        let profile_path = record
            .monvm_profile
            .as_ref()
            .ok_or_else(|| error("no Mon-VM kernel profile"))?;
        let bytes = std::fs::read(profile_path)
            .map_err(|e| error(format!("{}: {e}", profile_path.display())))?;
        let profile = KernelProfile::decode(&bytes)
            .map_err(|e| error(format!("the kernel profile: {e:?}")))?;
        let memory = FileMemory::open(&ram, layout)
            .map_err(|e| error(format!("opening the RAM file: {e:?}")))?;
        Ok(Self {
            ram,
            avm_serial: record.avm_serial.clone(),
            layout,
            profile,
            memory,
        })
    }

    /// The Mon-VM's running kernel. After a reboot the RAM still holds the
    /// image of the kernel before; the running one is then the image at
    /// the physical address of the A-VM's last survey (its last
    /// `AVM-MONVM phys_text=` line; tests check that against the Mon-VM's
    /// own `/proc/kallsyms`).
    pub fn view(&self) -> Result<KernelView<'_, FileMemory>, PatchError> {
        match vmi::linux::view(&self.memory, self.layout.regions(), &self.profile) {
            Ok(view) => Ok(view),
            Err(vmi::linux::KaslrError::Ambiguous { .. }) => {
                let serial = std::fs::read_to_string(&self.avm_serial).unwrap_or_default();
                let phys = serial
                    .lines()
                    .rev()
                    .filter(|l| l.starts_with("AVM-MONVM "))
                    .find_map(|l| {
                        l.split(' ')
                            .find_map(|w| w.strip_prefix("phys_text=0x"))
                            .and_then(|v| u64::from_str_radix(v, 16).ok())
                    })
                    .ok_or_else(|| error("several kernel images in RAM and no A-VM survey line"))?;
                let slot = [vmi::memory::RamRegion::new(phys, 1, 0)];
                vmi::linux::view(&self.memory, &slot, &self.profile)
                    .map_err(|e| error(format!("kernel not at the surveyed address: {e:?}")))
            }
            Err(e) => Err(error(format!("locating the Mon-VM kernel: {e:?}"))),
        }
    }

    /// Writes `bytes(original, location)` (`len` bytes) at the kernel
    /// virtual address `locate` finds in the running kernel.
    pub fn patch(
        &self,
        locate: impl FnOnce(
            &KernelView<'_, FileMemory>,
            &KernelProfile,
            &FileMemory,
        ) -> Result<vmi::GuestVirtAddr, String>,
        bytes: impl FnOnce(&[u8], &KernelLocation) -> Vec<u8>,
        len: usize,
    ) -> Result<RamPatch, PatchError> {
        let view = self.view()?;
        let va = locate(&view, &self.profile, &self.memory).map_err(PatchError)?;
        let phys = view
            .space
            .translate(va)
            .map_err(|e| error(format!("{:#x} does not translate: {e:?}", va.value())))?;
        self.patch_phys(phys, |original| bytes(original, &view.location), len)
    }

    /// Writes `bytes(original)` (`len` bytes) at guest-physical `phys`.
    pub fn patch_phys(
        &self,
        phys: vmi::GuestPhysAddr,
        bytes: impl FnOnce(&[u8]) -> Vec<u8>,
        len: usize,
    ) -> Result<RamPatch, PatchError> {
        let (offset, run) = self
            .layout
            .locate(phys)
            .ok_or_else(|| error("the address is outside the RAM layout"))?;
        if run < len as u64 {
            return Err(error("the patch crosses a RAM region"));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.ram)
            .map_err(|e| error(format!("{}: {e}", self.ram.display())))?;
        let mut original = vec![0u8; len];
        file.read_exact_at(&mut original, offset)
            .map_err(|e| error(format!("reading the RAM file: {e}")))?;
        let new = bytes(&original);
        if new.len() != len {
            return Err(error("patch of the wrong length"));
        }
        file.write_all_at(&new, offset)
            .map_err(|e| error(format!("writing the RAM file: {e}")))?;
        Ok(RamPatch {
            file,
            offset,
            original,
            restored: false,
            written_at: Instant::now(),
        })
    }

    /// Writes `bytes` at the runtime address of the link-time kernel
    /// address `link`.
    pub fn patch_kernel(
        &self,
        link: u64,
        bytes: impl FnOnce(&[u8], &KernelLocation) -> Vec<u8>,
        len: usize,
    ) -> Result<RamPatch, PatchError> {
        self.patch(
            |view, _, _| {
                view.location
                    .runtime_of(link)
                    .ok_or_else(|| format!("{link:#x} is not a kernel-image address"))
            },
            bytes,
            len,
        )
    }
}

impl RamPatch {
    /// Leaves the bytes written: for values the Mon-VM moves on by itself
    /// (putting the old bytes back later would be a second change).
    pub fn keep(mut self) {
        self.restored = true;
    }

    /// Writes the original bytes back; the time they were back.
    pub fn restore(&mut self) -> Result<Instant, PatchError> {
        self.file
            .write_all_at(&self.original, self.offset)
            .map_err(|e| error(format!("restoring the RAM file: {e}")))?;
        self.restored = true;
        Ok(Instant::now())
    }
}

impl Drop for RamPatch {
    fn drop(&mut self) {
        if !self.restored {
            let _ = self.file.write_all_at(&self.original, self.offset);
        }
    }
}

/// `sys_call_table[39]` (getpid) moved 16 bytes into its handler: a
/// redirected system call, as the demo and the tests inject it.
pub fn redirect_getpid_slot(ram: &MonVmRam) -> Result<RamPatch, PatchError> {
    ram.patch_kernel(
        ram.profile.symbols.sys_call_table + 39 * 8,
        |old, _| {
            let mut word = [0u8; 8];
            word.copy_from_slice(old);
            u64::from_le_bytes(word)
                .wrapping_add(0x10)
                .to_le_bytes()
                .to_vec()
        },
        8,
    )
}

/// Where the SHA-1 template hash of the Mon-VM's IMA entry `index` lies
/// (the entry's `digests` array, first digest), read through the kernel's
/// list as the A-VM reads it.
pub fn ima_template_hash_va(
    view: &KernelView<'_, FileMemory>,
    profile: &KernelProfile,
    index: usize,
) -> Result<vmi::GuestVirtAddr, String> {
    let head = view
        .location
        .runtime_of(profile.symbols.ima_measurements)
        .ok_or("ima_measurements is not in the image")?;
    let entry = vmi::linux::measurements(
        &view.space,
        head,
        &profile.offsets.ima,
        &vmi::linux::ImaLimits::default(),
        index.saturating_add(1),
    )
    .nth(index)
    .ok_or_else(|| format!("the Mon-VM has no IMA entry {index}"))?
    .map_err(|e| format!("IMA entry {index}: {e:?}"))?;
    let at = entry
        .address
        .checked_add(profile.offsets.ima.entry_digests)
        .ok_or("entry address overflows")?;
    let digests = vmi::paging::VirtualMemory::read_pointer(&view.space, at)
        .map_err(|e| format!("IMA entry {index}'s digests: {e:?}"))?;
    digests
        .checked_add(profile.offsets.ima.tpm_digest_digest)
        .ok_or_else(|| "digest address overflows".to_string())
}

/// The SHA-1 template hash of IMA entry `index`, its first byte flipped
/// (a rootkit rewriting the measurement list).
pub fn rewrite_ima_template_hash(ram: &MonVmRam, index: usize) -> Result<RamPatch, PatchError> {
    ram.patch(
        |view, profile, _| ima_template_hash_va(view, profile, index),
        |old, _| {
            let mut hash = old.to_vec();
            hash[0] ^= 0xff;
            hash
        },
        20,
    )
}
