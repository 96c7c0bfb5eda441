//! The Mon-VM as the A-VM sees it: its RAM through the `ivshmem-plain`
//! BAR (QEMU maps the Mon-VM's RAM file there with a read-only backend, so
//! the A-VM can read but never write it), laid out by the launcher's
//! `monvm.ram=` option; the profile of its kernel (PVH module 0), measured
//! into PCR 8 before anything uses it; and a survey of the running kernel,
//! tried until the kernel is found (it may still be booting).

use alloc::vec;
use alloc::vec::Vec;
use avm_attest::ima;
use avm_kernel::boot_info::StartInfo;
use avm_kernel::pci::{self as kpci, Bar};
use avm_kernel::phys::PhysRead;
use sha2::{Digest, Sha256};
use vmi::linux::{Survey, SurveyLimits, checks, survey};
use vmi::memory::{Backing, BackingError, LayoutMemory, RamLayout};
use vmi::profile::{self, KernelProfile};

use crate::arch::x86_64::paging;
use crate::measurements::{CONFIG_PCR, MeasurementLog};
use crate::pci::PortConfigAccess;
use crate::physmem::IdentityMemory;
use crate::text_watch::{self, TextWatch};
use crate::time;
use crate::tpm_boot::KernelTpm;

/// QEMU's ivshmem-plain device.
const IVSHMEM_VENDOR: u16 = 0x1af4;
const IVSHMEM_DEVICE: u16 = 0x1110;
/// The shared-memory BAR of ivshmem.
const IVSHMEM_BAR: u8 = 2;
/// Time between attempts to find the kernel while the Mon-VM boots.
const RETRY_US: u64 = 1_000_000;
/// Name of the profile's record in the measurement log.
const PROFILE_RECORD: &[u8] = b"avm-config:kernel-profile";
/// PCR of the A-VM's start-up measurements of the Mon-VM.
const MONVM_PCR: u8 = 11;
/// PCR of monitoring events (every change of a check's verdict).
const EVENT_PCR: u8 = 12;
/// How often the system-call table and the IDT are checked.
const CHECK_PERIOD_US: u64 = 100_000;
/// The IMA list is walked every this many check rounds (500 ms).
const IMA_ROUNDS: u64 = 5;
/// The checked areas, in the order of [`MonVm::current`]: the system-call
/// table, the IDT, the IMA list, then those of [`text_watch::AREAS`].
const AREAS: [&str; 7] = [
    "sys_call_table",
    "idt",
    "ima",
    text_watch::AREAS[0],
    text_watch::AREAS[1],
    text_watch::AREAS[2],
    text_watch::AREAS[3],
];

/// The Mon-VM's RAM: the ivshmem BAR, identity-mapped.
#[derive(Debug)]
pub struct IvshmemRam {
    base: u64,
    len: u64,
}

impl Backing for IvshmemRam {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or(BackingError)?;
        let src = self.base.checked_add(offset).ok_or(BackingError)?;
        // SAFETY: `src..src + len` lies inside the BAR, which `find_ram`
        // sized and identity-mapped; it is device memory outside every Rust
        // allocation. The Mon-VM may change it at any moment, so the bytes
        // are only copied out (never referenced) and every caller treats
        // them as untrusted.
        unsafe {
            core::ptr::copy_nonoverlapping(src as usize as *const u8, buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }
}

/// Finds the ivshmem device and maps its shared-memory BAR.
fn find_ram() -> Option<IvshmemRam> {
    let cfg = PortConfigAccess;
    let mut found = None;
    kpci::enumerate(&cfg, |f| {
        if found.is_none() && f.vendor_id == IVSHMEM_VENDOR && f.device_id == IVSHMEM_DEVICE {
            found = Some(f.addr);
        }
    });
    let addr = found?;
    let Some(Bar::Memory { addr: base, .. }) = kpci::read_bar(&cfg, addr, IVSHMEM_BAR) else {
        warn!(
            "monvm: ivshmem at {} has no memory BAR{}",
            addr, IVSHMEM_BAR
        );
        return None;
    };
    let Some(len) = kpci::size_memory_bar(&cfg, addr, IVSHMEM_BAR) else {
        warn!("monvm: ivshmem BAR{} could not be sized", IVSHMEM_BAR);
        return None;
    };
    if let Err(e) = paging::map_mmio(base, len) {
        warn!(
            "monvm: ivshmem BAR at {:#x} ({} MiB) not mapped: {:?}",
            base,
            len >> 20,
            e
        );
        return None;
    }
    info!(
        "monvm: ivshmem {} BAR{} at {:#x}, {} MiB",
        addr,
        IVSHMEM_BAR,
        base,
        len >> 20
    );
    Some(IvshmemRam { base, len })
}

/// PVH module 0, the kernel profile, copied out of the boot data.
fn profile_module(info: &StartInfo) -> Option<Vec<u8>> {
    let module = info.modules.first()?;
    let len = usize::try_from(module.len)
        .ok()
        .filter(|&len| len <= profile::MAX_PROFILE_LEN)?;
    let mut bytes = vec![0u8; len];
    let mem = IdentityMemory::new(&info.memory);
    match mem.read(module.start, &mut bytes) {
        Ok(()) => Some(bytes),
        Err(e) => {
            warn!("monvm: profile module unreadable: {:?}", e);
            None
        }
    }
}

/// The Mon-VM being watched.
pub struct MonVm {
    memory: LayoutMemory<IvshmemRam>,
    profile: KernelProfile,
    next_try_us: u64,
    surveyed: bool,
    /// The violations the last check found, by area of [`AREAS`] (their
    /// texts).
    current: [Vec<alloc::string::String>; 7],
    /// The kernel text and rodata sweep, once the kernel is up.
    text: Option<TextWatch>,
    /// Template hash of every IMA list entry seen so far, in list order.
    ima_seen: Vec<[u8; 20]>,
    rounds: u64,
    next_check_us: u64,
    events: u32,
    /// Whether the start-up state went into PCR 11.
    startup_measured: bool,
}

/// Sets up the Mon-VM view if the launcher gave one: measures the profile
/// into PCR 8 (before decoding it) and maps the RAM. `None` for an A-VM
/// without a Mon-VM; a Mon-VM whose profile or RAM is unusable is logged
/// as such (its profile is measured all the same, so a verifier sees it).
pub fn start(info: &StartInfo, tpm: &mut KernelTpm, log: &mut MeasurementLog) -> Option<MonVm> {
    let layout = match RamLayout::from_kernel_cmdline(info.cmdline())? {
        Ok(layout) => layout,
        Err(e) => {
            warn!("monvm: bad monvm.ram= option: {:?}", e);
            return None;
        }
    };
    let Some(bytes) = profile_module(info) else {
        warn!("monvm: no kernel profile module: the Mon-VM is not introspected");
        return None;
    };
    let digest = profile::digest(&bytes);
    if let Err(e) = log.measure(tpm, CONFIG_PCR, &digest, PROFILE_RECORD) {
        warn!(
            "monvm: measuring the profile into PCR {} failed: {}",
            CONFIG_PCR, e
        );
        return None;
    }
    info!(
        "monvm: profile {} bytes, sha256 {} measured into PCR {}",
        bytes.len(),
        avm_attest::hex::Hex(&digest),
        CONFIG_PCR
    );
    let profile = match KernelProfile::decode(&bytes) {
        Ok(profile) => profile,
        Err(e) => {
            warn!("monvm: profile refused: {:?}", e);
            return None;
        }
    };
    info!("monvm: profile of {}", profile.kernel.release.as_str());
    let ram = find_ram()?;
    let memory = match LayoutMemory::new(ram, layout) {
        Ok(memory) => memory,
        Err(e) => {
            warn!("monvm: {}", e);
            return None;
        }
    };
    Some(MonVm {
        memory,
        profile,
        next_try_us: 0,
        surveyed: false,
        current: Default::default(),
        text: None,
        ima_seen: Vec::new(),
        rounds: 0,
        next_check_us: 0,
        events: 0,
        startup_measured: false,
    })
}

impl MonVm {
    /// Tries to find and survey the kernel until it succeeds once; called
    /// from the main loop. Returns whether it did any work.
    pub fn poll(&mut self, now_us: u64, tpm: &mut KernelTpm, log: &mut MeasurementLog) -> bool {
        if self.surveyed {
            let swept = match self.text.as_mut() {
                Some(t) => t.sweep(&self.memory, &self.profile, now_us),
                None => false,
            };
            return self.watch(now_us, tpm, log) || swept;
        }
        if now_us < self.next_try_us {
            return false;
        }
        self.next_try_us = now_us + RETRY_US;
        let started = time::now_us();
        match survey(
            &self.memory,
            self.memory.layout().regions(),
            &self.profile,
            &SurveyLimits::default(),
        ) {
            // Up means user space runs: a task with an address space. Until
            // then (the A-VM may find the kernel while it still boots) the
            // survey is tried again.
            Ok(found) if !found.tasks.items.iter().any(|t| !t.is_kernel_thread()) => {
                debug!(
                    "monvm: kernel found, no user space yet ({} tasks)",
                    found.tasks.items.len()
                );
            }
            Ok(found) => {
                self.surveyed = true;
                report(&found, &self.profile, time::now_us() - started);
                measure_startup(&found, &self.profile, tpm, log);
                self.text = measure_text(&self.memory, &self.profile, &found, tpm, log);
                self.ima_seen = anchor_ima(&found, tpm, log);
                self.watch(now_us, tpm, log);
            }
            Err(e) => debug!("monvm: kernel not found yet: {}", e),
        }
        true
    }

    /// Checks the system-call table and the IDT every [`CHECK_PERIOD_US`].
    /// The first check's results are measured into PCR 11 (start-up);
    /// afterwards every change of an area's violations is an event in
    /// PCR 12 (`monvm:event:N:violation:TEXT` or `monvm:event:N:clean:AREA`),
    /// so it cannot be hidden later. Returns whether it checked.
    fn watch(&mut self, now_us: u64, tpm: &mut KernelTpm, log: &mut MeasurementLog) -> bool {
        if now_us < self.next_check_us {
            return false;
        }
        self.next_check_us = now_us + CHECK_PERIOD_US;
        let Ok(view) =
            vmi::linux::view(&self.memory, self.memory.layout().regions(), &self.profile)
        else {
            return true;
        };
        let mut found: [Vec<alloc::string::String>; 7] = Default::default();
        if let Some(t) = &self.text {
            for (slot, texts) in found[3..].iter_mut().zip(t.found()) {
                *slot = texts;
            }
        }
        // The IMA list every IMA_ROUNDS rounds (it grows; walking it costs
        // more), else its last verdict stands.
        self.rounds += 1;
        found[2] = if self.rounds.is_multiple_of(IMA_ROUNDS) {
            watch_ima(&view, &self.profile, &mut self.ima_seen, tpm, log)
        } else {
            self.current[2].clone()
        };
        match checks::syscall_table(&view.space, &view.location, &self.profile) {
            Ok(report) => found[0] = report.findings.iter().map(to_text).collect(),
            Err(e) => found[0].push(to_text(&e)),
        }
        let mut idt_digest = [0u8; 32];
        match checks::idt(&view.space, &view.location, &self.profile) {
            Ok(report) => {
                found[1] = report.violations().map(to_text).collect();
                idt_digest = report.digest;
            }
            Err(e) => found[1].push(to_text(&e)),
        }
        if !self.startup_measured {
            self.startup_measured = true;
            let table_digest = link_relative_digest(&view, &self.profile);
            let records: [(&[u8; 32], &[u8]); 2] = [
                (&table_digest, b"monvm:sys_call_table"),
                (&idt_digest, b"monvm:idt"),
            ];
            for (digest, name) in records {
                if let Err(e) = log.measure(tpm, MONVM_PCR, digest, name) {
                    warn!("monvm: measuring into PCR {} failed: {}", MONVM_PCR, e);
                }
            }
        }
        for (area, (now, before)) in found.iter().zip(self.current.iter()).enumerate() {
            if now == before {
                continue;
            }
            let area_name = AREAS[area];
            let mut texts: Vec<alloc::string::String> = now
                .iter()
                .filter(|t| !before.contains(t))
                .cloned()
                .collect();
            if now.is_empty() {
                texts.push(text(format_args!("clean:{area_name}")));
            } else {
                texts = texts
                    .into_iter()
                    .map(|t| text(format_args!("violation:{area_name}:{t}")))
                    .collect();
            }
            for event in texts {
                self.events += 1;
                let name = text(format_args!("monvm:event:{}:{}", self.events, event));
                let digest: [u8; 32] = Sha256::digest(name.as_bytes()).into();
                if let Err(e) = log.measure(tpm, EVENT_PCR, &digest, name.as_bytes()) {
                    warn!("monvm: event not recorded: {}", e);
                }
                println!("AVM-MONVM-EVENT {} at_us={}", name, now_us);
            }
        }
        self.current = found;
        true
    }
}

/// Walks the Mon-VM's IMA list: entries seen before (`seen`) must be
/// unchanged (same template hash, still SHA-1 of their data) and still
/// there; new consistent entries are anchored into PCR 10 as they appear.
/// Returns the violations found.
fn watch_ima(
    view: &vmi::linux::KernelView<'_, LayoutMemory<IvshmemRam>>,
    profile: &KernelProfile,
    seen: &mut Vec<[u8; 20]>,
    tpm: &mut KernelTpm,
    log: &mut MeasurementLog,
) -> Vec<alloc::string::String> {
    let mut violations = Vec::new();
    let Some(head) = view.location.runtime_of(profile.symbols.ima_measurements) else {
        return violations;
    };
    let limits = vmi::linux::ImaLimits::default();
    let walk = vmi::linux::measurements(
        &view.space,
        head,
        &profile.offsets.ima,
        &limits,
        SurveyLimits::default().max_ima_entries,
    );
    let mut index = 0usize;
    let mut new_entries = 0usize;
    for entry in walk {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                violations.push(text(format_args!("list broken after entry {index}: {e}")));
                return violations;
            }
        };
        let data = entry.template_data();
        let record = made_by_ima(&entry, &data);
        match seen.get(index) {
            Some(seen) if *seen == entry.template_hash && record.is_some() => {}
            Some(_) => violations.push(text(format_args!("entry {index} rewritten"))),
            None => {
                seen.push(entry.template_hash);
                match record.map(|r| log.anchor(tpm, &r)) {
                    Some(Ok(())) => new_entries += 1,
                    Some(Err(e)) => warn!("monvm: anchoring IMA entry failed: {}", e),
                    None => violations.push(text(format_args!("entry {index} inconsistent"))),
                }
            }
        }
        index += 1;
    }
    if index < seen.len() {
        violations.push(text(format_args!("{} entries removed", seen.len() - index)));
    }
    if new_entries > 0 {
        println!(
            "AVM-MONVM-IMA-NEW anchored={} total_seen={}",
            new_entries,
            seen.len()
        );
    }
    violations
}

fn to_text(value: &impl core::fmt::Display) -> alloc::string::String {
    text(format_args!("{value}"))
}

/// Formats without `alloc::format!`, which the freestanding image cannot
/// link (it needs unwinding symbols).
pub(crate) fn text(args: core::fmt::Arguments<'_>) -> alloc::string::String {
    use core::fmt::Write;
    let mut out = alloc::string::String::new();
    let _ = out.write_fmt(args);
    out
}

/// SHA-256 of the system-call table with the slide taken out (each slot
/// as a link-time address): the same on every clean boot of this kernel,
/// so a verifier can compute it from the profile.
fn link_relative_digest(
    view: &vmi::linux::KernelView<'_, LayoutMemory<IvshmemRam>>,
    profile: &KernelProfile,
) -> [u8; 32] {
    let slots = profile.syscalls.slots.len();
    let mut hasher = Sha256::new();
    let Some(table) = view.location.runtime_of(profile.symbols.sys_call_table) else {
        return [0; 32];
    };
    let mut bytes = vec![0u8; slots * 8];
    if vmi::paging::VirtualMemory::read_virt(&view.space, table, &mut bytes).is_err() {
        return [0; 32];
    }
    for raw in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(raw);
        let link = u64::from_le_bytes(word).wrapping_sub(view.location.slide());
        hasher.update(link.to_le_bytes());
    }
    hasher.finalize().into()
}

/// A Mon-VM IMA entry as a record of the binary list, if IMA made it: a
/// printable template name, and a template hash that is SHA-1 of its
/// template data (or a violation record's zeros).
fn made_by_ima<'a>(entry: &'a vmi::linux::ImaEntry, data: &'a [u8]) -> Option<ima::ImaRecord<'a>> {
    let name = core::str::from_utf8(&entry.template_name)
        .ok()
        .filter(|n| !n.is_empty())?;
    let record = ima::ImaRecord {
        pcr: ima::IMA_PCR,
        template_hash: entry.template_hash,
        template_name: name,
        template_data: data,
    };
    record.template_hash_matches().then_some(record)
}

/// Anchors the Mon-VM's IMA entries in the A-VM's TPM, as IMA would
/// (PCR 10, each extended with SHA-256 of its template data, appended to
/// the A-VM's log as it is). The Mon-VM has no TPM: its kernel keeps the
/// list in memory, where a rootkit could rewrite it; once anchored, an
/// entry cannot be changed unnoticed. An entry whose template hash is not
/// SHA-1 of its template data is not anchored (it was not made by IMA).
fn anchor_ima(found: &Survey, tpm: &mut KernelTpm, log: &mut MeasurementLog) -> Vec<[u8; 20]> {
    let (mut anchored, mut inconsistent) = (0usize, 0usize);
    let seen = found.ima.items.iter().map(|e| e.template_hash).collect();
    for entry in &found.ima.items {
        let data = entry.template_data();
        let Some(record) = made_by_ima(entry, &data) else {
            inconsistent += 1;
            warn!(
                "monvm: IMA entry {} is inconsistent (template hash)",
                anchored + inconsistent
            );
            continue;
        };
        if let Err(e) = log.anchor(tpm, &record) {
            warn!("monvm: anchoring IMA entry failed: {}", e);
            return seen;
        }
        anchored += 1;
    }
    let pcr10 = tpm
        .pcr_read(tpm_crb::PcrSelection::new(&[10]).unwrap_or(tpm_crb::PcrSelection::EMPTY))
        .ok()
        .and_then(|values| values.get(10).copied());
    println!(
        "AVM-MONVM-IMA anchored={} inconsistent={} log_records={} pcr10={}",
        anchored,
        inconsistent,
        log.records(),
        avm_attest::hex::Hex(&pcr10.unwrap_or([0; 32]))
    );
    seen
}

/// The start-up state of the Mon-VM in PCR 11: its kernel, each loaded
/// module and each user-space process, one record each (the name says
/// what; the digest is SHA-256 of the name, or the profile's digest for
/// the kernel), so a verifier can count and name them.
fn measure_startup(
    found: &Survey,
    profile: &KernelProfile,
    tpm: &mut KernelTpm,
    log: &mut MeasurementLog,
) {
    let mut names: Vec<alloc::string::String> = Vec::new();
    names.push(text(format_args!(
        "monvm:kernel:{}",
        profile.kernel.release.as_str()
    )));
    for module in &found.modules.items {
        names.push(text(format_args!(
            "monvm:module:{}",
            core::str::from_utf8(module.name.as_bytes()).unwrap_or("?")
        )));
    }
    for task in found.tasks.items.iter().filter(|t| !t.is_kernel_thread()) {
        names.push(text(format_args!(
            "monvm:process:{}:{}",
            task.pid,
            core::str::from_utf8(task.comm.as_bytes()).unwrap_or("?")
        )));
    }
    for name in names {
        let digest: [u8; 32] = Sha256::digest(name.as_bytes()).into();
        if let Err(e) = log.measure(tpm, MONVM_PCR, &digest, name.as_bytes()) {
            warn!("monvm: measuring {} failed: {}", name.as_str(), e);
            return;
        }
    }
}

/// Measures the kernel's text and rodata once in full (PCR 11:
/// `monvm:text`, `monvm:rodata`, `monvm:boot_patches`,
/// `monvm:ro_after_init`) and returns the sweep that keeps checking them.
/// What it finds becomes events with the first check round.
fn measure_text(
    memory: &LayoutMemory<IvshmemRam>,
    profile: &KernelProfile,
    found: &Survey,
    tpm: &mut KernelTpm,
    log: &mut MeasurementLog,
) -> Option<TextWatch> {
    let started = time::now_us();
    let Some((watch, startup)) = TextWatch::start(memory, profile, found.location, started) else {
        warn!("monvm: the profile has no text reference: kernel text is not checked");
        return None;
    };
    let took = time::now_us() - started;
    let records: [(&[u8; 32], &[u8]); 4] = [
        (&startup.text, b"monvm:text"),
        (&startup.rodata, b"monvm:rodata"),
        (&startup.boot_patches, b"monvm:boot_patches"),
        (&startup.ro_after_init, b"monvm:ro_after_init"),
    ];
    for (digest, name) in records {
        if let Err(e) = log.measure(tpm, MONVM_PCR, digest, name) {
            warn!("monvm: measuring into PCR {} failed: {}", MONVM_PCR, e);
        }
    }
    let [text_v, sites_v, rodata_v, _] = watch.found();
    println!(
        "AVM-MONVM-TEXT chunks={} copied={} modified_text={} sites={} modified_rodata={} boot_patches={} us={}",
        startup.chunks,
        startup.copied,
        text_v.len(),
        sites_v.len(),
        rodata_v.len(),
        avm_attest::hex::Hex(&startup.boot_patches),
        took
    );
    Some(watch)
}

/// Logs the survey, and one `AVM-MONVM` line for tests and tools.
fn report(found: &Survey, profile: &KernelProfile, took_us: u64) {
    let location = &found.location;
    info!(
        "monvm: {} at phys {:#x}, _text {:#x} (slide {:#x}), {:?} paging",
        profile.kernel.release.as_str(),
        location.phys_text.0,
        location.runtime_text,
        location.slide(),
        found.paging
    );
    for (what, error) in [
        ("task list", &found.tasks.error),
        ("module list", &found.modules.error),
        ("IMA list", &found.ima.error),
    ] {
        if let Some(e) = error {
            warn!("monvm: {} walk stopped: {}", what, e);
        }
    }
    let complete = |ok: bool| if ok { "" } else { "+broken" };
    println!(
        "AVM-MONVM release={} phys_text={:#x} slide={:#x} tasks={}{} modules={}{} ima={}{} us={}",
        profile.kernel.release.as_str(),
        location.phys_text.0,
        location.slide(),
        found.tasks.items.len(),
        complete(found.tasks.error.is_none()),
        found.modules.items.len(),
        complete(found.modules.error.is_none()),
        found.ima.items.len(),
        complete(found.ima.error.is_none()),
        took_us
    );
}
