//! The TPM at boot: find the CRB interface, start the TPM, read what the
//! firmware measured (PCRs 0-7 and its event log), create EK and AK, and
//! print the boot report.

use crate::fatal::{self, ErrorKind};
use crate::physmem::IdentityMemory;
use crate::time::{self, KernelClock};
use alloc::vec;
use alloc::vec::Vec;
use avm_attest::eventlog::EventLog;
use avm_kernel::acpi::{LogArea, Tpm2Table};
use avm_kernel::memory::is_ram_page;
use avm_kernel::phys::PhysRead;
use avm_kernel::report::{BootReport, StartupOutcome, vendor_string};
use tpm_crb::{
    AkAlgorithm, Crb, CrbError, EkAlgorithm, LOCALITY_REGION_LEN, LoadedKey, PcrSelection, Tpm,
    VolatileMmio,
};

/// Locality 0 of the CRB interface on PC platforms (QEMU `tpm-crb`), used
/// when no `TPM2` table says otherwise.
pub const DEFAULT_CRB_BASE: u64 = 0xfed4_0000;
/// Largest event-log area copied (QEMU's is 64 KiB).
const MAX_LOG_AREA: u32 = 1 << 20;

/// The TPM as the kernel uses it after boot.
pub type KernelTpm = Tpm<Crb<VolatileMmio, KernelClock>>;

/// What the boot sequence leaves for the services that run afterwards.
pub struct TpmState {
    /// The TPM.
    pub tpm: KernelTpm,
    /// The endorsement key (ECC P-256), loaded.
    pub ek: LoadedKey,
    /// The attestation key (ECC P-256), loaded.
    pub ak: LoadedKey,
    /// The used part of the firmware event log.
    pub event_log: Vec<u8>,
}

/// The CRB locality-0 base: from the `TPM2` table if it names device memory
/// below 4 GiB (mapped uncached by `paging::init`), else the PC default.
fn crb_base(tpm2: Option<&Tpm2Table>, mem: &[avm_kernel::boot_info::MemoryRegion]) -> u64 {
    match tpm2.map(|t| t.control_area & !0xfff) {
        Some(base) if base < (4 << 30) - 0x1000 && !is_ram_page(mem, base, 0x1000) => base,
        Some(base) => {
            warn!(
                "tpm: TPM2 control area {:#x} unusable, trying {:#x}",
                base, DEFAULT_CRB_BASE
            );
            DEFAULT_CRB_BASE
        }
        None => DEFAULT_CRB_BASE,
    }
}

/// Runs the TPM boot sequence and prints the report; any failure is fatal
/// (`no-tpm` or `tpm`).
pub fn boot(tpm2: Option<&Tpm2Table>, memory: &[avm_kernel::boot_info::MemoryRegion]) -> TpmState {
    let base = crb_base(tpm2, memory);
    // SAFETY: `base` is a 4 KiB-aligned device page below 4 GiB, identity
    // mapped uncached by `paging::init`; the CRB driver is its only user for
    // the lifetime of the kernel.
    let mmio = unsafe { VolatileMmio::new(base as usize as *mut u8, LOCALITY_REGION_LEN) };
    let crb = match Crb::probe(mmio, KernelClock) {
        Ok(crb) => crb,
        Err(e @ (CrbError::NotPresent | CrbError::NotCrb { .. })) => fatal::fail(
            ErrorKind::NoTpm,
            format_args!("{e} at {base:#x} (attach a TPM: -device tpm-crb)"),
        ),
        Err(e) => fatal::fail(ErrorKind::Tpm, format_args!("CRB at {base:#x}: {e}")),
    };
    info!("tpm: CRB interface at {:#x}", base);
    let mut tpm = Tpm::new(crb);

    let startup = match tpm.startup_clear() {
        Ok(tpm_crb::StartupOutcome::Started) => StartupOutcome::Started,
        Ok(tpm_crb::StartupOutcome::AlreadyStarted) => StartupOutcome::AlreadyStarted,
        Err(e) => fatal::fail(ErrorKind::Tpm, format_args!("startup: {e}")),
    };
    let props = tpm
        .properties()
        .unwrap_or_else(|e| fatal::fail(ErrorKind::Tpm, format_args!("properties: {e}")));
    let vendor = vendor_string(u32::from_be_bytes(props.manufacturer));
    let firmware =
        (u64::from(props.firmware_version_1) << 32) | u64::from(props.firmware_version_2);

    let selection = PcrSelection::new(&[0, 1, 2, 3, 4, 5, 6, 7])
        .unwrap_or_else(|e| fatal::fail(ErrorKind::Tpm, format_args!("PCR selection: {e}")));
    let values = tpm
        .pcr_read(selection)
        .unwrap_or_else(|e| fatal::fail(ErrorKind::Tpm, format_args!("PCR read: {e}")));
    let mut pcrs = [[0u8; 32]; 8];
    for (i, pcr) in pcrs.iter_mut().enumerate() {
        match values.get(i as u8) {
            Some(v) => *pcr = *v,
            None => fatal::fail(ErrorKind::Tpm, format_args!("TPM did not return PCR {i}")),
        }
    }

    let mem = IdentityMemory::new(memory);
    let (event_log, entries) = match tpm2.and_then(|t| t.log_area) {
        Some(area) => read_event_log(&mem, area),
        None => {
            warn!("tpm: no event-log area in the ACPI TPM2 table");
            (Vec::new(), 0)
        }
    };

    let ek = tpm
        .create_ek(EkAlgorithm::EccP256)
        .unwrap_or_else(|e| fatal::fail(ErrorKind::Tpm, format_args!("create EK: {e}")));
    let ak = tpm
        .create_ak(AkAlgorithm::EccP256)
        .unwrap_or_else(|e| fatal::fail(ErrorKind::Tpm, format_args!("create AK: {e}")));

    let report = BootReport {
        tpm_vendor: &vendor,
        tpm_firmware: firmware,
        tpm_startup: startup,
        pcrs_sha256: &pcrs,
        eventlog_entries: entries,
        eventlog: &event_log,
        ek_name: &ek.name,
        ak_name: &ak.name,
        boot_us: time::now_us(),
    };
    let _ = report.write(&mut crate::console::Serial);

    TpmState {
        tpm,
        ek,
        ak,
        event_log,
    }
}

/// Copies the firmware's event-log area and cuts it to the records it holds.
/// A log that does not parse is reported empty (the verifier would reject
/// it anyway) with a warning.
fn read_event_log(mem: &IdentityMemory<'_>, area: LogArea) -> (Vec<u8>, usize) {
    let len = area.min_len.min(MAX_LOG_AREA) as usize;
    let mut bytes = vec![0u8; len];
    if let Err(e) = mem.read(area.start, &mut bytes) {
        warn!(
            "tpm: event-log area {:#x}+{:#x} unreadable: {}",
            area.start, len, e
        );
        return (Vec::new(), 0);
    }
    match EventLog::parse(&bytes) {
        Ok(log) => {
            bytes.truncate(log.used_len());
            info!(
                "tpm: event log at {:#x}: {} records, {} bytes",
                area.start,
                log.len(),
                bytes.len()
            );
            (bytes, log.len())
        }
        Err(e) => {
            warn!("tpm: event log at {:#x} rejected: {}", area.start, e);
            (Vec::new(), 0)
        }
    }
}
