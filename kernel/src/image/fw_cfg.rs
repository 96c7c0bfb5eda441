//! QEMU's firmware configuration device (fw_cfg, I/O ports 0x510-0x51b):
//! how the launcher hands the A-VM files too large for a PVH module (the
//! Mon-VM kernel profile is about 0.6-0.8 MiB; QEMU places an `-initrd`
//! just below the top of RAM, where SeaBIOS keeps its ACPI tables and TPM
//! log, and a module that large overwrote them). A file is found in the
//! fw_cfg directory by name and copied with one DMA transfer into A-VM
//! memory. What the device returns is data like any other: the caller
//! measures it before use.

use alloc::vec;
use alloc::vec::Vec;

use crate::arch::x86_64::port::{inb, outl, outw};

const SELECTOR: u16 = 0x510;
const DATA: u16 = 0x511;
/// The DMA address register (high half; the low half at +4 starts it).
const DMA: u16 = 0x514;
const SIGNATURE: u16 = 0x00;
const ID: u16 = 0x01;
const FILE_DIR: u16 = 0x19;
/// The number of CPUs the machine booted with (16-bit, little-endian).
const NB_CPUS: u16 = 0x05;
/// `ID` bit: the DMA interface exists.
const ID_DMA: u32 = 1 << 1;
const DMA_ERROR: u32 = 1 << 0;
const DMA_READ: u32 = 1 << 1;
const DMA_SELECT: u32 = 1 << 3;
/// Most directory entries looked at.
const MAX_FILES: u32 = 4096;
const NAME_LEN: usize = 56;

/// Why a file was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwCfgError {
    /// No fw_cfg device (no "QEMU" signature).
    Absent,
    /// fw_cfg without the DMA interface.
    NoDma,
    NotFound,
    TooLarge {
        len: u32,
        max: usize,
    },
    /// The device reported an error, or never finished.
    Transfer,
}

impl core::fmt::Display for FwCfgError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Absent => f.write_str("no fw_cfg device"),
            Self::NoDma => f.write_str("fw_cfg without DMA"),
            Self::NotFound => f.write_str("no such file"),
            Self::TooLarge { len, max } => write!(f, "{len} bytes, more than {max}"),
            Self::Transfer => f.write_str("transfer failed"),
        }
    }
}

/// The DMA request, as the device reads it (big-endian fields).
#[repr(C, align(16))]
struct DmaAccess {
    control: u32,
    length: u32,
    address: u64,
}

fn select(key: u16) {
    // SAFETY: 0x510 is fw_cfg's selector register on QEMU's x86 machines;
    // selecting an item has no effect beyond the device.
    unsafe { outw(SELECTOR, key) }
}

fn read_bytes(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: 0x511 is fw_cfg's data register; reading advances within
        // the selected item only.
        *b = unsafe { inb(DATA) };
    }
}

fn read_be32() -> u32 {
    let mut b = [0u8; 4];
    read_bytes(&mut b);
    u32::from_be_bytes(b)
}

/// Whether the fw_cfg device is there (its "QEMU" signature).
fn present() -> bool {
    select(SIGNATURE);
    let mut signature = [0u8; 4];
    read_bytes(&mut signature);
    &signature == b"QEMU"
}

/// The number of CPUs QEMU gave the machine (`-smp`); `None` without
/// fw_cfg.
pub fn cpu_count() -> Option<u16> {
    if !present() {
        return None;
    }
    select(NB_CPUS);
    let mut count = [0u8; 2];
    read_bytes(&mut count);
    Some(u16::from_le_bytes(count))
}

/// Reads the fw_cfg file `name` (at most `max` bytes).
pub fn read_file(name: &str, max: usize) -> Result<Vec<u8>, FwCfgError> {
    if !present() {
        return Err(FwCfgError::Absent);
    }
    select(ID);
    let mut id = [0u8; 4];
    read_bytes(&mut id);
    if u32::from_le_bytes(id) & ID_DMA == 0 {
        return Err(FwCfgError::NoDma);
    }
    select(FILE_DIR);
    let count = read_be32().min(MAX_FILES);
    let mut found = None;
    for _ in 0..count {
        let size = read_be32();
        let mut key = [0u8; 2];
        read_bytes(&mut key);
        let mut reserved = [0u8; 2];
        read_bytes(&mut reserved);
        let mut entry_name = [0u8; NAME_LEN];
        read_bytes(&mut entry_name);
        let len = entry_name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        if found.is_none() && &entry_name[..len] == name.as_bytes() {
            found = Some((u16::from_be_bytes(key), size));
        }
    }
    let (key, size) = found.ok_or(FwCfgError::NotFound)?;
    let len = usize::try_from(size)
        .ok()
        .filter(|&l| l <= max)
        .ok_or(FwCfgError::TooLarge { len: size, max })?;
    let mut data = vec![0u8; len];
    let mut access = DmaAccess {
        control: ((u32::from(key) << 16) | DMA_SELECT | DMA_READ).to_be(),
        length: size.to_be(),
        // Identity-mapped: the heap address is the physical address.
        address: (data.as_mut_ptr() as u64).to_be(),
    };
    let request = &mut access as *mut DmaAccess as u64;
    // SAFETY: 0x514/0x518 are fw_cfg's DMA address registers (big-endian
    // halves; writing the low half starts the transfer). `access` and
    // `data` are live, identity-mapped A-VM memory for the whole transfer,
    // which QEMU completes before the port write returns; the device writes
    // only `data` (`size` bytes, its exact length) and `access.control`.
    unsafe {
        outl(DMA, ((request >> 32) as u32).swap_bytes());
        outl(DMA + 4, (request as u32).swap_bytes());
    }
    for _ in 0..1_000_000 {
        // SAFETY: `access` is live; the device may have written it, so it is
        // read volatile.
        let control = u32::from_be(unsafe { core::ptr::read_volatile(&access.control) });
        if control & DMA_ERROR != 0 {
            return Err(FwCfgError::Transfer);
        }
        if control == 0 {
            return Ok(data);
        }
        core::hint::spin_loop();
    }
    Err(FwCfgError::Transfer)
}
