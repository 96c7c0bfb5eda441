//! The Mon-VM as the A-VM sees it: its RAM through the `ivshmem-plain`
//! BAR (QEMU maps the Mon-VM's RAM file there with a read-only backend, so
//! the A-VM can read but never write it), laid out by the launcher's
//! `monvm.ram=` option; the profile of its kernel (fw_cfg file
//! `opt/avm/kernel-profile`), measured
//! into PCR 8 before anything uses it, as is the monitor policy (fw_cfg
//! file `opt/avm/monitor-policy`, the check periods); and a survey of the
//! running kernel, tried until the kernel is found (it may still be
//! booting). The kernel's location found then is kept: every check round
//! reads through it instead of searching RAM again, and a slower round
//! searches RAM for a kernel elsewhere (the Mon-VM rebooted: a new KASLR
//! slide), after which everything is measured again as at first start-up.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use avm_attest::ima;
use avm_attest::monitor_policy::{self, MonitorPolicy};
use avm_kernel::boot_info::StartInfo;
use avm_kernel::findings::{CappedFindings, cap_findings};
use avm_kernel::ima_backlog::{IMA_LIST_BEHIND, ImaBacklog};
use avm_kernel::path_budget::{PathInterner, PathMap};
use avm_kernel::pci::{self as kpci, Bar};
use sha2::{Digest, Sha256};
use vmi::GuestVirtAddr;
use vmi::firmware::{FirmwareTicks, bios_timer_ticks};
use vmi::linux::liveness::{LeftBehind, OldKernels, Revived, Ticking, leaves_old_kernel_behind};
use vmi::linux::structs::heapless_str::FixedStr;
use vmi::linux::{
    ImaEntry, KernelLocation, KernelView, Module, PathError, Survey, SurveyLimits, Task, checks,
    locate_kernel, survey,
};
use vmi::memory::{Backing, BackingError, GuestMemory, LayoutMemory, RamLayout, RamRegion};
use vmi::paging::PagingMode;
use vmi::profile::{self, KernelProfile};

use crate::arch::x86_64::{cpu, paging, smp};
use crate::cross_watch::{self, CrossWatch, Unwalked};
use crate::ima_watch::ImaWatch;
use crate::measurements::{CONFIG_PCR, LogError, MeasurementLog};
use crate::pci::PortConfigAccess;
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
/// The full system-call table and IDT checks run at least this often
/// (between them, rounds compare the raw bytes with the last copy).
const FULL_CHECK_US: u64 = 1_000_000;
/// How often RAM is searched for a kernel elsewhere (a reboot).
const RELOCATE_US: u64 = 500_000;
/// A changed system-call table or IDT searches RAM at once, at most this
/// often (a reboot overwrites them before the slow search sees it).
const FORCED_RELOCATE_US: u64 = 100_000;
/// A check counts as due this fraction of its period early (the timer
/// ticks once per shortest period and may come a little before the due
/// time; without the slack the check would wait a whole tick more).
const DUE_SLACK_DIVISOR: u64 = 4;
/// The text sweep runs a slice at most this often (it checks the chunks
/// due since its last slice; a faster timer would only make the slices
/// smaller and each one costs a set-up).
const TEXT_SLICE_US: u64 = 10_000;
/// Sweep passes at whose start the A-VM's TLB is flushed (see
/// [`grow_soft_tlb`]): QEMU's TCG doubles a vCPU's software TLB at a
/// flush that finds most of it used, starting from 256 entries, so eight
/// flushes grow it to 65,536, more than the 14,000 pages a pass touches on
/// the 6.12 kernel (the BAR and the copy, 28 MB each).
const TLB_GROWTH_PASSES: u64 = 8;
/// Most `AVM-MONVM-EVENT` lines kept between two main-loop rounds (the
/// events themselves are all in the log; only their console lines beyond
/// this are skipped).
const MAX_EVENT_LINES: usize = 4096;

/// A round with this many changes to report holds them (see
/// [`MonVm::hold`]): a reboot in progress, not a rootkit.
const MASS_CHANGE: usize = 32;
/// How long changes are held at most.
const HOLD_US: u64 = 15_000_000;
/// Size of the IDT (256 gates of 16 bytes).
const IDT_BYTES: usize = 256 * 16;
/// Most 2 MiB candidates searched for a kernel (64 GiB of RAM).
const MAX_CANDIDATES: u64 = 1 << 15;
/// Longest monitor policy file read (longer ones are refused unread).
const MAX_POLICY_FILE: usize = monitor_policy::MAX_TEXT_LEN;
/// The checked areas, in the order of [`MonVm::current`]: the system-call
/// table, the IDT, the IMA list, those of [`text_watch::AREAS`], then
/// processes and modules the Mon-VM's IMA did not measure.
const AREAS: [&str; AREA_COUNT] = [
    "sys_call_table",
    "idt",
    "ima",
    text_watch::AREAS[0],
    text_watch::AREAS[1],
    text_watch::AREAS[2],
    text_watch::AREAS[3],
    "measurement_evaded",
    cross_watch::AREAS[0],
    cross_watch::AREAS[1],
    cross_watch::AREAS[2],
    cross_watch::AREAS[3],
    cross_watch::AREAS[4],
    "decoy",
];
const AREA_COUNT: usize = 14;
/// Index of `decoy` in [`AREAS`]: the watched kernel stopped ticking, or
/// the one left at a reboot did not ([`vmi::linux::liveness`]).
const DECOY: usize = 13;
/// How long the watched kernel's tick count may stand still before it is
/// taken for a copy nobody runs. An idle Mon-VM's changed at least every
/// 0.52 s when measured (docs/monitoring.md); a reboot's new kernel
/// replaces the watched one within seconds of the reset.
const STALL_US: u64 = 30_000_000;
/// Index of the first of [`cross_watch::AREAS`] in [`AREAS`].
const CROSS: usize = 8;
/// Index of `measurement_evaded` in [`AREAS`].
const EVADED: usize = 7;
/// EXE of a process record whose executable could not be named.
const EXE_UNRESOLVED: &str = "/?unresolved";
/// EXE of a user process whose address space has no executable file.
const EXE_NONE: &str = "/?no-exe-file";

/// The Mon-VM's RAM: the ivshmem BAR, identity-mapped.
#[derive(Debug)]
pub struct IvshmemRam {
    base: u64,
    len: u64,
}

/// The word at `at` in the Mon-VM's RAM.
///
/// `read_at` and `equals_at` copy and compare eight and sixteen of them
/// per loop iteration, written out: the kernel is built for size
/// (opt-level "s"), so a loop stays a loop, and under TCG every iteration
/// costs a translation-block entry and a branch on top of its load
/// (`make bench` times the text check and the A-VM's CPU use).
///
/// # Safety
/// `at..at + 8` must lie inside the BAR.
#[inline(always)]
unsafe fn bar_word(at: usize) -> u64 {
    // SAFETY: inside the BAR (the caller's promise), which `find_ram` sized
    // and identity-mapped; it is device memory outside every Rust
    // allocation. The Mon-VM may change it at any moment, so its bytes are
    // only copied out or compared (never referenced; unaligned reads) and
    // every caller treats them as untrusted.
    unsafe { core::ptr::read_unaligned(at as *const u64) }
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
        let src = self.base.checked_add(offset).ok_or(BackingError)? as usize;
        // Word by word: under TCG a loop of 8-byte loads runs several times
        // faster than string instructions; eight per iteration (`bar_word`).
        let (blocks, rest) = buf.as_chunks_mut::<64>();
        for (i, block) in blocks.iter_mut().enumerate() {
            let at = src + 64 * i;
            let (words, _) = block.as_chunks_mut::<8>();
            // SAFETY: `src..src + buf.len()` is inside the BAR (checked above).
            let mut put = |j: usize| words[j] = unsafe { bar_word(at + 8 * j) }.to_ne_bytes();
            put(0);
            put(1);
            put(2);
            put(3);
            put(4);
            put(5);
            put(6);
            put(7);
        }
        let base = src + 64 * blocks.len();
        let (words, tail) = rest.as_chunks_mut::<8>();
        for (i, word) in words.iter_mut().enumerate() {
            // SAFETY: as above.
            *word = unsafe { bar_word(base + 8 * i) }.to_ne_bytes();
        }
        let done = 8 * words.len();
        for (i, byte) in tail.iter_mut().enumerate() {
            // SAFETY: inside the BAR, as above.
            *byte = unsafe { core::ptr::read((base + done + i) as *const u8) };
        }
        Ok(())
    }

    /// Compares in place, word by word: the text sweep compares
    /// megabytes a second with its copy, and under TCG every store into a
    /// buffer costs as much as the load.
    fn equals_at(&self, offset: u64, expected: &[u8]) -> Result<bool, BackingError> {
        offset
            .checked_add(expected.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or(BackingError)?;
        let src = self.base.checked_add(offset).ok_or(BackingError)? as usize;
        // Sixteen words per branch: differences are OR-ed together and
        // tested once per 128 bytes (the sweep's bytes almost never differ).
        let (blocks, rest) = expected.as_chunks::<128>();
        for (i, block) in blocks.iter().enumerate() {
            let at = src + 128 * i;
            let (words, _) = block.as_chunks::<8>();
            // SAFETY: `src..src + expected.len()` is inside the BAR (checked
            // above).
            let diff = |j: usize| unsafe { bar_word(at + 8 * j) } ^ u64::from_ne_bytes(words[j]);
            let low = diff(0) | diff(1) | diff(2) | diff(3) | diff(4) | diff(5) | diff(6) | diff(7);
            let high =
                diff(8) | diff(9) | diff(10) | diff(11) | diff(12) | diff(13) | diff(14) | diff(15);
            // Opaque to the optimiser: otherwise it turns the OR-ed test back
            // into sixteen compare-and-branch pairs, and under TCG every
            // branch ends a translation block. Only speed depends on it.
            if core::hint::black_box(low | high) != 0 {
                return Ok(false);
            }
        }
        let base = src + 128 * blocks.len();
        let (words, tail) = rest.as_chunks::<8>();
        for (i, word) in words.iter().enumerate() {
            // SAFETY: as above.
            if unsafe { bar_word(base + 8 * i) }.to_ne_bytes() != *word {
                return Ok(false);
            }
        }
        let done = 8 * words.len();
        for (i, byte) in tail.iter().enumerate() {
            // SAFETY: inside the BAR, as above.
            if unsafe { core::ptr::read((base + done + i) as *const u8) } != *byte {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Flushes the TLB when the sweep began one of its first
/// [`TLB_GROWTH_PASSES`] passes (`before` and `after` a slice).
///
/// Under TCG, QEMU sizes each vCPU's software TLB only when the guest
/// flushes it, and the A-VM never does once it runs: the TLB stays at its
/// initial 256 entries and every page of every pass misses it (a page
/// walk in QEMU for each of the BAR's and the copy's pages, every
/// second). Measured on 6.12, two nodes side by side: the sweep's time
/// fell from 35 to 29 ms a second, the A-VM's CPU use from 8.5% to 7.0%.
/// Under KVM a flush costs a few microseconds and changes nothing.
fn grow_soft_tlb(before: u64, after: u64) {
    if before != after && after <= TLB_GROWTH_PASSES {
        cpu::flush_tlb();
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
            "monvm: ivshmem BAR at {:#x} ({} MiB) not mapped: {}",
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

/// The fw_cfg file the launcher hands the kernel profile in.
pub const PROFILE_FW_CFG: &str = "opt/avm/kernel-profile";

/// The kernel profile, read from fw_cfg.
fn profile_file() -> Option<Vec<u8>> {
    match crate::fw_cfg::read_file(PROFILE_FW_CFG, profile::MAX_PROFILE_LEN) {
        Ok(bytes) => Some(bytes),
        Err(crate::fw_cfg::FwCfgError::NotFound) => None,
        Err(e) => {
            warn!("monvm: profile not read from fw_cfg: {}", e);
            None
        }
    }
}

/// The monitor policy in effect: the fw_cfg file's, else the defaults,
/// measured into PCR 8 before use (`avm-config:monitor-policy:TEXT`,
/// SHA-256 of TEXT). `None`: a file that did not parse (or could not be
/// read), measured as `avm-config:monitor-policy-invalid` (SHA-256 of its
/// bytes): the Mon-VM is then not introspected (fail closed).
fn monitor_policy(tpm: &mut KernelTpm, log: &mut MeasurementLog) -> Option<MonitorPolicy> {
    let (policy, digest, name) =
        match crate::fw_cfg::read_file(monitor_policy::FW_CFG_NAME, MAX_POLICY_FILE) {
            Err(crate::fw_cfg::FwCfgError::NotFound) => {
                let policy = MonitorPolicy::default();
                let text = to_text(&policy);
                (Some(policy), Sha256::digest(text.as_bytes()).into(), text)
            }
            Ok(bytes) => match MonitorPolicy::parse(&bytes) {
                Ok(policy) => {
                    let text = to_text(&policy);
                    (Some(policy), Sha256::digest(text.as_bytes()).into(), text)
                }
                Err(e) => {
                    warn!("monvm: monitor policy refused: {}", e);
                    (None, Sha256::digest(&bytes).into(), String::new())
                }
            },
            Err(e) => {
                warn!("monvm: monitor policy not read from fw_cfg: {}", e);
                (None, [0u8; 32], String::new())
            }
        };
    let record = match &policy {
        Some(_) => text(format_args!("{}{}", monitor_policy::RECORD_PREFIX, name)),
        None => String::from(monitor_policy::INVALID_RECORD),
    };
    if let Err(e) = log.measure(tpm, CONFIG_PCR, &digest, record.as_bytes()) {
        warn!("monvm: measuring the monitor policy failed: {}", e);
        return None;
    }
    println!("AVM-MONVM-POLICY {}", record);
    policy
}

/// When each check is next due (A-VM clock, microseconds).
#[derive(Debug, Default, Clone, Copy)]
struct Due {
    /// The raw comparison of the system-call table and the IDT.
    syscall_idt: u64,
    /// Their full checks.
    full: u64,
    ima: u64,
    cross: u64,
    relocate: u64,
    /// The next read of the kernel left behind at the last reboot.
    left_behind: u64,
    /// The next slice of the text sweep.
    text: u64,
    /// The earliest a changed table may search RAM again.
    forced_relocate: u64,
}

/// Whether `due` has come (within a quarter period); if so, moves it a
/// `period` on (from `now` if it fell more than a period behind, so a long
/// round causes no burst).
fn take_due(due: &mut u64, now_us: u64, period_us: u64) -> bool {
    if now_us.saturating_add(period_us / DUE_SLACK_DIVISOR) < *due {
        return false;
    }
    let next = due.saturating_add(period_us);
    *due = if next <= now_us {
        now_us.saturating_add(period_us)
    } else {
        next
    };
    true
}

/// The kernel being watched: where the survey found it.
#[derive(Debug, Clone, Copy)]
struct Watched {
    location: KernelLocation,
    paging: PagingMode,
}

/// The watched kernel's view, rebuilt from its location without searching
/// RAM (a few field copies).
fn kernel_view<'m>(
    memory: &'m LayoutMemory<IvshmemRam>,
    profile: &KernelProfile,
    kernel: &Watched,
) -> Option<KernelView<'m, LayoutMemory<IvshmemRam>>> {
    let space = kernel
        .location
        .address_space(memory, profile.symbols.init_top_pgt, kernel.paging)
        .ok()?;
    Some(KernelView {
        location: kernel.location,
        paging: kernel.paging,
        space,
    })
}

/// Every kernel image of `profile` in RAM: each 2 MiB-aligned candidate
/// that holds the banner and a consistent `_text` (bounded).
fn find_kernels<M: GuestMemory + ?Sized>(
    memory: &M,
    regions: &[RamRegion],
    profile: &KernelProfile,
) -> Vec<KernelLocation> {
    let image = profile.kernel_image();
    let align = vmi::linux::kaslr::KERNEL_ALIGN;
    let mut found = Vec::new();
    let mut candidates = 0u64;
    for r in regions {
        let Some(end) = r.phys.0.checked_add(r.size) else {
            continue;
        };
        let mut p = r.phys.0.div_ceil(align).saturating_mul(align);
        while p < end && candidates < MAX_CANDIDATES {
            candidates += 1;
            if let Ok(location) = locate_kernel(memory, &[RamRegion::new(p, 1, 0)], &image) {
                found.push(location);
            }
            p = match p.checked_add(align) {
                Some(next) => next,
                None => break,
            };
        }
    }
    found
}

/// What a recurring piece of work costs the A-VM: how often it ran, the
/// time it took and since when.
#[derive(Debug, Default)]
struct Cost {
    runs: u64,
    us: u64,
    since_us: u64,
}

impl Cost {
    /// Adds a run that started at `started_us` and ends now; every `every`
    /// runs, the cost of those (to log) and counting starts afresh.
    fn add(&mut self, started_us: u64, every: u64) -> Option<Cost> {
        if self.runs == 0 {
            self.since_us = started_us;
        }
        self.runs += 1;
        self.us += time::now_us().saturating_sub(started_us);
        (self.runs >= every).then(|| core::mem::take(self))
    }

    fn us_each(&self) -> u64 {
        self.us / self.runs.max(1)
    }

    /// The share of the A-VM's time it took up to `now_us`, in
    /// microseconds per second.
    fn us_per_second(&self, now_us: u64) -> u64 {
        let wall_us = now_us.saturating_sub(self.since_us).max(1);
        // As a u64: formatting a u128 takes 1.2 KB of the image.
        u64::try_from(u128::from(self.us) * 1_000_000 / u128::from(wall_us)).unwrap_or(u64::MAX)
    }
}

/// The watched kernel's `jiffies_64` as last read, and whether it was ever
/// lower than the read before (sticky until the reboot is handled).
#[derive(Debug, Default)]
struct Jiffies {
    last: Option<u64>,
    went_back: bool,
}

/// The Mon-VM being watched.
pub struct MonVm {
    memory: LayoutMemory<IvshmemRam>,
    profile: KernelProfile,
    policy: MonitorPolicy,
    next_try_us: u64,
    /// The kernel located by the last survey; `None` until then, and again
    /// from a reboot until the new kernel's user space runs.
    kernel: Option<Watched>,
    /// Images of kernels from before a reboot (never taken for a new one).
    old_kernels: OldKernels,
    /// Whether the last search of RAM missed the watched kernel (logged
    /// once).
    lost: bool,
    due: Due,
    /// The system-call table and the IDT as the last full check saw them.
    raw_syscalls: Vec<u8>,
    raw_idt: Vec<u8>,
    /// The buffer each round reads them into.
    raw_scratch: Vec<u8>,
    /// Where the text sweep's clock started (see [`MonVm::text_clock`]).
    text_epoch_us: u64,
    /// Reboots of the Mon-VM seen.
    reboots: u32,
    /// The firmware's tick count while the watched kernel runs: another
    /// one means the machine was reset ([`MonVm::hold`]).
    firmware: FirmwareTicks,
    /// Since when changes are held back ([`MonVm::hold`]), and how many.
    hold_since: Option<u64>,
    held: usize,
    /// The events of the round that started the hold: reported when it
    /// ends even if the changes were undone meanwhile (a rootkit must not
    /// make a change disappear by undoing it within the hold).
    held_events: Vec<(usize, String)>,
    /// Cost of the system-call table and IDT rounds, and the full checks
    /// among them (logged at debug level).
    fast_cost: Cost,
    full_rounds: u64,
    /// Cost of the text sweep's slices (logged at debug level).
    sweep_cost: Cost,
    /// Cost of the rounds that walk the IMA list or the cross-views, and
    /// with them the task and module lists (logged at debug level).
    list_cost: Cost,
    /// What the searches for a rebooted kernel cost (debug level).
    relocate_cost: Cost,
    /// The watched kernel's `jiffies_64` (see [`MonVm::booted_again`]).
    jiffies: Jiffies,
    /// Whether it moves, and whether it stood still for [`STALL_US`].
    ticking: Ticking,
    stalled: bool,
    /// Old images' tick counts while the kernel is gone (see `relocate`).
    revived: Revived,
    /// The kernel left where it was at the last reboot to a new place,
    /// whose tick count must stand still.
    left_behind: Option<(KernelLocation, LeftBehind)>,
    /// The violations the last check found, by area of [`AREAS`] (their
    /// texts).
    current: [Vec<String>; AREA_COUNT],
    /// The kernel text and rodata sweep, once the kernel is up.
    text: Option<TextWatch>,
    /// `monvm.bench` on the command line.
    bench: bool,
    /// The cross-views (hidden modules and processes, credentials,
    /// function-pointer tables).
    cross: CrossWatch,
    /// Rounds in a row the task or module list did not walk (IMA round).
    evaded_unwalked: Unwalked,
    /// The IMA list entries taken so far (see [`ImaWatch`]).
    ima: ImaWatch,
    /// The last IMA round stopped at its bound of new entries: the next
    /// one runs at once (outside the schedule, which stays in step with the
    /// cross-views', so that the two keep sharing one task-list read).
    ima_behind: bool,
    /// Since when the rounds have been behind the IMA list.
    ima_backlog: ImaBacklog,
    /// The file digests of the consistent IMA entries seen so far.
    ima_files: ImaFiles,
    events: u32,
    /// `AVM-MONVM-EVENT` lines not yet printed: the serial console costs
    /// some microseconds a byte under TCG, so they are printed after the
    /// events are pushed ([`MonVm::print_events`]).
    event_lines: Vec<String>,
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
            warn!("monvm: bad monvm.ram= option: {}", e);
            return None;
        }
    };
    let Some(bytes) = profile_file() else {
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
    // Its exact bytes are measured above: what it says is theirs.
    let profile = match KernelProfile::decode_measured(&bytes) {
        Ok(profile) => profile,
        Err(e) => {
            warn!("monvm: profile refused: {}", e);
            return None;
        }
    };
    info!("monvm: profile of {}", profile.kernel.release.as_str());
    let Some(policy) = monitor_policy(tpm, log) else {
        warn!("monvm: no valid monitor policy: the Mon-VM is not introspected");
        return None;
    };
    info!("monvm: monitor policy {}", policy);
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
        policy,
        next_try_us: 0,
        kernel: None,
        old_kernels: OldKernels::default(),
        lost: false,
        due: Due::default(),
        raw_syscalls: Vec::new(),
        raw_idt: Vec::new(),
        raw_scratch: Vec::new(),
        text_epoch_us: 0,
        reboots: 0,
        firmware: FirmwareTicks::default(),
        hold_since: None,
        held: 0,
        held_events: Vec::new(),
        fast_cost: Cost::default(),
        full_rounds: 0,
        sweep_cost: Cost::default(),
        list_cost: Cost::default(),
        relocate_cost: Cost::default(),
        jiffies: Jiffies::default(),
        ticking: Ticking::default(),
        stalled: false,
        revived: Revived::default(),
        left_behind: None,
        current: Default::default(),
        text: None,
        bench: avm_kernel::cmdline::KernelOptions::parse(info.cmdline(), |_| {}).monvm_bench,
        cross: CrossWatch::default(),
        evaded_unwalked: Unwalked::default(),
        ima: ImaWatch::default(),
        ima_behind: false,
        ima_backlog: ImaBacklog::default(),
        ima_files: ImaFiles::default(),
        events: 0,
        event_lines: Vec::new(),
        startup_measured: false,
    })
}

impl MonVm {
    /// Finds and surveys the kernel until its user space runs (at start-up
    /// and after each reboot), then runs each check when it is due;
    /// called from the main loop. Returns whether it did any work.
    pub fn poll(&mut self, now_us: u64, tpm: &mut KernelTpm, log: &mut MeasurementLog) -> bool {
        if self.left_behind.is_some() && take_due(&mut self.due.left_behind, now_us, RELOCATE_US) {
            self.check_left_behind(now_us);
        }
        if let Some(kernel) = self.kernel {
            if take_due(&mut self.due.relocate, now_us, RELOCATE_US) {
                let started = time::now_us();
                let moved = self.relocate(&kernel, now_us, tpm, log);
                if let Some(cost) = self.relocate_cost.add(started, 20) {
                    debug!(
                        "monvm: searches for a rebooted kernel, last {}: {} us each",
                        cost.runs,
                        cost.us_each()
                    );
                }
                if moved {
                    return true;
                }
            }
            let clock = self.text_clock(now_us);
            let swept = match self.text.as_mut() {
                Some(t) if take_due(&mut self.due.text, now_us, TEXT_SLICE_US) => {
                    let started = time::now_us();
                    let passes = t.passes();
                    let swept = t.sweep(&self.memory, &self.profile, clock);
                    grow_soft_tlb(passes, t.passes());
                    if let Some(cost) = self.sweep_cost.add(started, 1000) {
                        debug!(
                            "monvm: text sweep, last {} slices: {} us of sweep per second",
                            cost.runs,
                            cost.us_per_second(started)
                        );
                    }
                    swept
                }
                _ => false,
            };
            return self.watch(&kernel, now_us, swept, tpm, log) || swept;
        }
        if now_us < self.next_try_us {
            return false;
        }
        self.next_try_us = now_us + RETRY_US;
        let started = time::now_us();
        // The one kernel image in RAM that is not an old kernel's (a
        // rebooted Mon-VM's RAM still holds the one before).
        let fresh: Vec<KernelLocation> =
            find_kernels(&self.memory, self.memory.layout().regions(), &self.profile)
                .into_iter()
                .filter(|l| !self.old_kernels.contains(l))
                .collect();
        let [location] = fresh.as_slice() else {
            debug!("monvm: {} new kernel images in RAM", fresh.len());
            return true;
        };
        let slot = [RamRegion::new(location.phys_text.0, 1, 0)];
        match survey(&self.memory, &slot, &self.profile, &SurveyLimits::default()) {
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
                let kernel = Watched {
                    location: found.location,
                    paging: found.paging,
                };
                self.kernel = Some(kernel);
                self.lost = false;
                self.firmware = FirmwareTicks::at(bios_timer_ticks(&self.memory).ok());
                report(&found, &self.profile, time::now_us() - started);
                self.text_epoch_us = time::now_us();
                self.text = measure_text(&self.memory, &self.profile, &found, tpm, log, self.bench);
                self.ima = ImaWatch::start(&found.ima.items, &mut self.ima_files, tpm, log);
                measure_startup(
                    &self.memory,
                    &found,
                    &self.profile,
                    &mut self.ima_files,
                    tpm,
                    log,
                );
                // Every check runs in this round: the first system-call
                // table and IDT check goes into PCR 11.
                let now = time::now_us();
                self.due = Due {
                    relocate: now + RELOCATE_US,
                    ..Due::default()
                };
                self.watch(&kernel, now, true, tpm, log);
                // After a reboot, the new boot measured is an event too:
                // pushed, it tells a verifier that the start-up records
                // before it are there to prove (the reboot event left the
                // node without a measured Mon-VM). Lost if the TPM refuses
                // it: the records stand, the next attestation finds them.
                if self.reboots > 0 {
                    let _ = self.record_event(
                        &text(format_args!(
                            "remeasured:slide {:#x}, phys {:#x}",
                            found.location.slide(),
                            found.location.phys_text.0
                        )),
                        now,
                        tpm,
                        log,
                    );
                }
                // Everything of the start-up is in the log now.
                println!("AVM-MONVM-STARTUP records={}", log.records());
            }
            Err(e) => debug!("monvm: kernel not found yet: {}", e),
        }
        true
    }

    /// The timer rate the checks need: a tick every shortest period (a
    /// check then runs on the first tick from a quarter period before it
    /// is due), between 100 Hz and 1 kHz. 100 Hz while no kernel is
    /// watched.
    pub fn timer_hz(&self) -> u32 {
        if self.kernel.is_none() {
            return 100;
        }
        let shortest = self.policy.shortest_ms().max(1);
        1000u32.div_ceil(shortest).clamp(100, 1000)
    }

    /// The clock the text sweep runs on: the A-VM's, from
    /// [`MonVm::text_epoch_us`] on, scaled so that one sweep period of
    /// [`text_watch::SWEEP_PERIOD_US`] takes one pass of the policy's
    /// `text` period (`MonitorPolicy::text_pass_us`: a little shorter, so
    /// that a change is seen within the period although slices run up
    /// to [`TEXT_SLICE_US`] and a timer tick late).
    fn text_clock(&self, now_us: u64) -> u64 {
        let tick_us = 1_000_000 / u64::from(self.timer_hz().max(1));
        let pass_us = self.policy.text_pass_us(TEXT_SLICE_US + tick_us).max(1);
        let elapsed = u128::from(now_us.saturating_sub(self.text_epoch_us));
        let scaled = elapsed * u128::from(text_watch::SWEEP_PERIOD_US) / u128::from(pass_us);
        self.text_epoch_us
            .saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX))
    }

    /// Searches RAM for the kernel (every [`RELOCATE_US`], and at once when
    /// the system-call table or the IDT changed): a kernel image elsewhere
    /// that is no old kernel's means the Mon-VM rebooted (QEMU reset it and
    /// its kernel chose a new KASLR slide); so does the kernel still where
    /// it was with its `jiffies_64` gone back ([`MonVm::booted_again`]: the
    /// new kernel chose the old slide, which a search alone cannot tell).
    /// The reboot is an event in PCR 12, `monvm:event:N:reboot:slide
    /// OLD->NEW` (`..., in place` for the second kind), so whatever a
    /// reboot (or a guest faking one) resets is on record; then every
    /// per-boot state is dropped (without `clean:` events: a verifier
    /// resets every area at the reboot event) and the start-up measurement
    /// runs again once the new kernel's user space runs. Returns whether
    /// it rebooted.
    fn relocate(
        &mut self,
        kernel: &Watched,
        now_us: u64,
        tpm: &mut KernelTpm,
        log: &mut MeasurementLog,
    ) -> bool {
        let old = kernel.location;
        let found = find_kernels(&self.memory, self.memory.layout().regions(), &self.profile);
        let fresh: Vec<&KernelLocation> = found
            .iter()
            .filter(|l| **l != old && !self.old_kernels.contains(l))
            .collect();
        let lost = !found.contains(&old);
        if lost != self.lost {
            self.lost = lost;
            if lost {
                warn!(
                    "monvm: the kernel is no longer at phys {:#x} (slide {:#x})",
                    old.phys_text.0,
                    old.slide()
                );
            }
        }
        // Read on every search while the kernel is in place, so that the
        // last value is at most one search old.
        let went_back = !lost && self.booted_again(kernel, now_us);
        // No new image while the kernel is gone (lost, changes held, or
        // the firmware ran: a reset): a new kernel may lie exactly where an
        // old one did, with its slide; it ticks (`Revived`). Not for a
        // watched kernel that merely stalled: the real kernel behind a
        // decoy ticks where it was left, and is reported (`decoy`).
        let mut revived = None;
        if fresh.is_empty()
            && (lost || self.held > 0 || self.firmware.ran(bios_timer_ticks(&self.memory).ok()))
        {
            for l in found.iter().filter(|l| **l != old) {
                let jiffies = self.jiffies_at(l);
                if self.revived.read(*l, jiffies, now_us) {
                    revived = Some(*l);
                }
            }
        }
        let (new, in_place) = match (fresh.as_slice(), revived) {
            ([new], _) => (**new, false),
            ([], Some(new)) => (new, false),
            ([], None) if went_back => (old, true),
            _ => {
                if fresh.len() > 1 {
                    warn!("monvm: {} new kernel images in RAM", fresh.len());
                }
                return false;
            }
        };
        self.reboots += 1;
        let mut detail = text(format_args!("slide {:#x}->{:#x}", old.slide(), new.slide()));
        if in_place {
            detail.push_str(", in place");
        }
        if self.held > 0 {
            detail.push_str(&text(format_args!(", {} changes held", self.held)));
        }
        info!(
            "monvm: reboot {}: kernel at phys {:#x}->{:#x}, {}",
            self.reboots,
            old.phys_text.0,
            new.phys_text.0,
            detail.as_str()
        );
        // A reboot event the TPM refused is lost; the new boot's start-up
        // records still follow, and the old boot's findings keep counting.
        let _ = self.record_event(&text(format_args!("reboot:{detail}")), now_us, tpm, log);
        println!(
            "AVM-MONVM-REBOOT count={} old_slide={:#x} new_slide={:#x} at_us={} tick_rate={}",
            self.reboots,
            old.slide(),
            new.slide(),
            now_us,
            self.ticking.rate().unwrap_or(0)
        );
        // The old image stays in RAM until overwritten: it is not a new
        // kernel the next time it is seen (unless the new one took its
        // place).
        self.old_kernels.rebooted(old, new, &found);
        // The kernel left behind must not tick on: a decoy copy of the
        // running kernel leaves the real one running there, counting at
        // the rate it was seen counting at. A new kernel in the old one's
        // place (in place, or put there again) leaves none behind.
        self.left_behind = leaves_old_kernel_behind(&old, &new).then(|| {
            let jiffies = self.jiffies_at(&old);
            (old, LeftBehind::new(jiffies, now_us, self.ticking.rate()))
        });
        self.ticking = Ticking::default();
        self.stalled = false;
        self.jiffies = Jiffies::default();
        self.kernel = None;
        self.lost = false;
        self.next_try_us = now_us;
        self.current = Default::default();
        self.text = None;
        self.cross = CrossWatch::default();
        self.evaded_unwalked = Unwalked::default();
        self.ima = ImaWatch::default();
        self.ima_behind = false;
        self.ima_backlog = ImaBacklog::default();
        self.firmware = FirmwareTicks::default();
        self.revived = Revived::default();
        self.ima_files = ImaFiles::default();
        self.raw_syscalls.clear();
        self.raw_idt.clear();
        self.startup_measured = false;
        self.hold_since = None;
        self.held = 0;
        self.held_events.clear();
        self.due = Due::default();
        true
    }

    /// `jiffies_64` of the kernel at `location`, if it reads.
    fn jiffies_at(&self, location: &KernelLocation) -> Option<u64> {
        location
            .phys_of(self.profile.symbols.jiffies_64)
            .and_then(|at| self.memory.read_u64(at).ok())
    }

    /// Reads the tick count of the kernel left behind at the last reboot
    /// (while its image is still intact where it was): once it is seen
    /// counting on, the reboot was a decoy (`decoy` area).
    fn check_left_behind(&mut self, now_us: u64) {
        let Some((location, _)) = self.left_behind else {
            return;
        };
        let jiffies = self.jiffies_at(&location);
        let slot = [RamRegion::new(location.phys_text.0, 1, 0)];
        let intact = locate_kernel(&self.memory, &slot, &self.profile.kernel_image())
            .is_ok_and(|l| l == location);
        if let Some((_, left)) = self.left_behind.as_mut() {
            let was = left.running();
            if left.read(jiffies, intact, now_us) && !was {
                warn!(
                    "monvm: the kernel left at phys {:#x} at the reboot still ticks: the new one is a decoy",
                    location.phys_text.0
                );
            }
        }
    }

    /// The `decoy` area's findings: the watched kernel stalled, the one
    /// left behind runs.
    fn liveness(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.stalled {
            out.push(String::from("watched-kernel-stalled"));
        }
        if let Some((location, left)) = &self.left_behind
            && left.running()
        {
            out.push(text(format_args!(
                "left-behind-kernel-running@{:#x}",
                location.phys_text.0
            )));
        }
        out
    }

    /// Whether the watched kernel's `jiffies_64` was ever seen lower than
    /// the read before it (sticky until the reboot is handled, or until a
    /// hold it started ends without one). The tick count only rises while
    /// a kernel runs and starts again at every boot, so going back means a
    /// new kernel runs where the old one was.
    /// One aligned 8-byte load (`IvshmemRam::read_at`), so a read is never
    /// torn by the Mon-VM's tick. A guest that writes it back fakes a
    /// reboot: that is on record as one, and everything is measured again
    /// from the reference values (docs/threat-model.md).
    ///
    /// Each read also tells whether the kernel still ticks
    /// ([`MonVm::stalled`]).
    fn booted_again(&mut self, kernel: &Watched, now_us: u64) -> bool {
        let now = self.jiffies_at(&kernel.location);
        let stalled = self.ticking.read(now, now_us, STALL_US);
        if stalled && !self.stalled {
            warn!(
                "monvm: the watched kernel's jiffies_64 stood still for {} s",
                STALL_US / 1_000_000
            );
        }
        self.stalled = stalled;
        let Some(now) = now else {
            return self.jiffies.went_back;
        };
        if let Some(last) = self.jiffies.last
            && now < last
            && !self.jiffies.went_back
        {
            warn!(
                "monvm: jiffies_64 went back from {} to {}: the Mon-VM booted again",
                last, now
            );
            self.jiffies.went_back = true;
        }
        self.jiffies.last = Some(now);
        self.jiffies.went_back
    }

    /// Appends event `monvm:event:N:TEXT` to the log and PCR 12 (digest:
    /// SHA-256 of the name) and prints it. False if the TPM refused the
    /// extend (nothing was recorded: the caller reports the change again);
    /// a full log records nothing more, and that is in the log already.
    fn record_event(
        &mut self,
        event: &str,
        now_us: u64,
        tpm: &mut KernelTpm,
        log: &mut MeasurementLog,
    ) -> bool {
        if log.is_full() {
            return true;
        }
        self.events += 1;
        let name = text(format_args!("monvm:event:{}:{}", self.events, event));
        let digest: [u8; 32] = Sha256::digest(name.as_bytes()).into();
        let started = crate::time::now_us();
        match log.measure(tpm, EVENT_PCR, &digest, name.as_bytes()) {
            Ok(()) => {}
            // Recorded as far as it can be: the log ends with the record
            // that says it is full.
            Err(LogError::Full) if log.is_full() => {}
            Err(e) => {
                warn!("monvm: event not recorded: {}", e);
                // Its number is taken again by the next event.
                self.events -= 1;
                return false;
            }
        }
        let tpm_us = crate::time::now_us().saturating_sub(started);
        if self.event_lines.len() < MAX_EVENT_LINES {
            self.event_lines.push(text(format_args!(
                "AVM-MONVM-EVENT {} at_us={} tpm_us={}",
                name, now_us, tpm_us
            )));
        }
        true
    }

    /// Prints the `AVM-MONVM-EVENT` lines of the events recorded since the
    /// last call (the main loop calls it after pushing them).
    pub fn print_events(&mut self) {
        for line in self.event_lines.drain(..) {
            println!("{}", line);
        }
    }

    /// Runs the checks that are due, through the kept view of the kernel:
    /// the system-call table and the IDT (their raw bytes compared with
    /// the last full check's copy; the full checks when they changed and
    /// every [`FULL_CHECK_US`]), the IMA list with the processes and
    /// modules it must cover, and the cross-views, each on its period of
    /// the monitor policy; `swept` says the text sweep ran (its verdicts
    /// may have changed). The first check's results are measured into
    /// PCR 11 (start-up); afterwards every change of an area's violations
    /// is an event in PCR 12 (`monvm:event:N:violation:TEXT` or
    /// `monvm:event:N:clean:AREA`), so it cannot be hidden later. Returns
    /// whether it checked.
    fn watch(
        &mut self,
        kernel: &Watched,
        now_us: u64,
        swept: bool,
        tpm: &mut KernelTpm,
        log: &mut MeasurementLog,
    ) -> bool {
        let [syscall_idt_ms, _, ima_ms, cross_ms] = self.policy.periods_ms();
        let ms = |period: u32| u64::from(period) * 1000;
        let fast = take_due(&mut self.due.syscall_idt, now_us, ms(syscall_idt_ms));
        let ima_due =
            take_due(&mut self.due.ima, now_us, ms(ima_ms)) | core::mem::take(&mut self.ima_behind);
        let cross_due = take_due(&mut self.due.cross, now_us, ms(cross_ms));
        let text_changed = swept
            && self
                .text
                .as_ref()
                .is_some_and(|t| t.found()[..] != self.current[3..EVADED]);
        // (Allocates nothing without a finding: this runs 200 times a
        // second.)
        let liveness = self.liveness();
        let liveness_changed = liveness != self.current[DECOY];
        if !(fast || ima_due || cross_due || text_changed || liveness_changed) {
            return false;
        }
        let round_started = time::now_us();
        let changed = fast
            && !kernel_view(&self.memory, &self.profile, kernel).is_some_and(|view| {
                same_bytes(
                    &view,
                    &self.profile,
                    &mut self.raw_syscalls,
                    &mut self.raw_idt,
                    &mut self.raw_scratch,
                )
            });
        // A reboot rewrites the tables before the slow search sees the new
        // kernel: search at once, before reporting them.
        if changed
            && self.startup_measured
            && take_due(&mut self.due.forced_relocate, now_us, FORCED_RELOCATE_US)
        {
            self.due.relocate = now_us.saturating_add(RELOCATE_US);
            if self.relocate(kernel, now_us, tpm, log) {
                return true;
            }
        }
        let full = fast && (changed | take_due(&mut self.due.full, now_us, FULL_CHECK_US));
        if fast && let Some(cost) = self.fast_cost.add(round_started, 2000) {
            debug!(
                "monvm: system-call table/IDT, last {} rounds: {} us each ({} full checks so far)",
                cost.runs,
                cost.us_each(),
                self.full_rounds
            );
        }
        // Most rounds end here: the tables hold the bytes last judged,
        // nothing else is due and no report is held, so no verdict can
        // have changed.
        if !(full
            || ima_due
            || cross_due
            || text_changed
            || liveness_changed
            || self.hold_since.is_some())
        {
            return false;
        }
        let Some(view) = kernel_view(&self.memory, &self.profile, kernel) else {
            return true;
        };
        let mut found: [Vec<String>; AREA_COUNT] = self.current.clone();
        // The areas judged again this round; the others keep their last
        // verdict (a periodic check that was not due).
        let mut rechecked = [true; AREA_COUNT];
        rechecked[0] = full;
        rechecked[1] = full;
        rechecked[2] = ima_due;
        rechecked[EVADED] = false;
        for area in &mut rechecked[CROSS..DECOY] {
            *area = cross_due;
        }
        found[DECOY] = liveness;
        if let Some(t) = &self.text {
            for (slot, texts) in found[3..EVADED].iter_mut().zip(t.found()) {
                *slot = texts;
            }
        }
        if full {
            full_check(
                &view,
                &self.profile,
                &mut self.startup_measured,
                &mut found,
                tpm,
                log,
            );
            self.full_rounds += 1;
        }
        // The processes and modules are read first: IMA measures a file
        // before it runs or loads, so each one read has its entry in the
        // list walked after it.
        if ima_due || cross_due {
            let started = time::now_us();
            let running = Running::read(&view, &self.profile, ima_due);
            let mut ima_caught_up = true;
            if ima_due {
                (found[2], ima_caught_up) =
                    self.ima
                        .round(&view, &self.profile, &mut self.ima_files, tpm, log);
                self.ima_behind = !ima_caught_up;
                // A list left behind too long is said to be: the verdict
                // below waits for the whole list (ima_backlog).
                found[EVADED].retain(|f| f != IMA_LIST_BEHIND);
                if let Some(f) = self.ima_backlog.round(ima_caught_up, now_us) {
                    found[EVADED].push(String::from(f));
                }
            }
            // Whether a process or module went unmeasured is judged on
            // the whole list only (the last verdict stands meanwhile).
            if ima_due && ima_caught_up {
                rechecked[EVADED] = true;
                if let Some(running) = &running {
                    found[EVADED] = running.evaded(&view, &self.profile, &self.ima_files);
                }
                // A list that did not walk (a task exiting under the walk):
                // the last verdict stands until one does, for a few rounds;
                // a list that stays broken (a rootkit broke a link the
                // kernel never follows, to freeze the verdict) is reported.
                if let Some(t) = self
                    .evaded_unwalked
                    .round(running.is_some(), "task-or-module-list")
                {
                    found[EVADED] = alloc::vec![t];
                }
            }
            if cross_due {
                let lists = running
                    .as_ref()
                    .map(|r| (r.tasks.as_slice(), r.modules.as_slice()));
                for (slot, texts) in found[CROSS..DECOY].iter_mut().zip(self.cross.check(
                    &view,
                    &self.profile,
                    lists,
                    &self.policy,
                )) {
                    *slot = texts;
                }
            }
            if let Some(cost) = self.list_cost.add(started, 20) {
                debug!(
                    "monvm: IMA list/cross-views, last {} rounds: {} us each, {} us per second",
                    cost.runs,
                    cost.us_each(),
                    cost.us_per_second(started)
                );
            }
        }
        // At most MAX_AREA_FINDINGS per area, the rest counted in one: a
        // rootkit that forges thousands (tasks, say) must not make the
        // comparison below (each with the last round's) nor the events
        // recorded grow with them.
        for texts in found.iter_mut() {
            cap_findings(texts, 0);
        }
        let mut events: Vec<(usize, String)> = Vec::new();
        for (area, (now, before)) in found.iter().zip(self.current.iter()).enumerate() {
            if now == before {
                continue;
            }
            let area_name = AREAS[area];
            let mut texts: Vec<String> = now
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
            events.extend(texts.into_iter().map(|t| (area, t)));
        }
        if !events.is_empty() {
            let booted_again = self.booted_again(kernel, now_us);
            let reset = self.firmware.ran(bios_timer_ticks(&self.memory).ok());
            if self.hold(
                kernel,
                now_us,
                events.len(),
                (booted_again, reset),
                tpm,
                log,
            ) {
                if self.held_events.is_empty() && self.hold_since.is_some() {
                    self.held_events = events;
                }
                return true;
            }
        } else if let Some(since) = self.hold_since {
            // A held change of an area not judged this round (the IMA list
            // and the cross-views run every few hundred ms) is not undone:
            // the hold goes on until that check runs again (within its
            // bound). Otherwise every held change was undone: no reboot,
            // and nothing to wait for.
            if now_us.saturating_sub(since) < HOLD_US
                && self.held_events.iter().any(|(area, _)| !rechecked[*area])
            {
                return true;
            }
            self.end_hold();
        }
        // The violations the hold started on that are gone now are
        // reported all the same, their area then clean again if it is (a
        // held `clean:` is not: its area may be in violation again).
        let mut held = core::mem::take(&mut self.held_events);
        held.retain(|e| e.1.starts_with("violation:") && !events.contains(e));
        for area in 0..AREA_COUNT {
            if held.iter().any(|(a, _)| *a == area)
                && found[area].is_empty()
                && self.current[area].is_empty()
            {
                held.push((area, text(format_args!("clean:{}", AREAS[area]))));
            }
        }
        held.extend(events);
        let events = held;
        let mut next = found;
        for (area, event) in events {
            if log.is_full() {
                break;
            }
            // An area whose change could not be recorded keeps its old
            // verdict, so the next round reports the change again rather
            // than losing it.
            if !self.record_event(&event, now_us, tpm, log)
                && let (Some(slot), Some(before)) = (next.get_mut(area), self.current.get(area))
            {
                *slot = before.clone();
            }
        }
        self.current = next;
        true
    }

    /// Before changes are reported: whether the kernel is still the one
    /// watched (a RAM search, at most every [`FORCED_RELOCATE_US`]), and
    /// whether to hold the `changes` back. A reboot overwrites the old
    /// kernel while the new one decompresses, before the search can find
    /// the new one: a round with at least [`MASS_CHANGE`] changes, with
    /// the kernel's `jiffies_64` gone back (`booted_again`), or with the
    /// firmware's tick count changed since the kernel was found (`reset`:
    /// the machine was reset, and the new kernel may overwrite the old
    /// one's tables a few gates at a time, never 32 at once), holds
    /// every report for up to [`HOLD_US`], searching meanwhile. If a new
    /// kernel turns up, the reboot event says how many changes were held
    /// back; if not, they are all reported when the hold ends (at most
    /// that late). Returns whether the changes wait (or the Mon-VM
    /// rebooted).
    fn hold(
        &mut self,
        kernel: &Watched,
        now_us: u64,
        changes: usize,
        (booted_again, reset): (bool, bool),
        tpm: &mut KernelTpm,
        log: &mut MeasurementLog,
    ) -> bool {
        if (changes >= MASS_CHANGE || booted_again || reset) && self.hold_since.is_none() {
            warn!(
                "monvm: {} changes{}: held while RAM is searched for a new kernel",
                changes,
                if booted_again {
                    " with jiffies_64 gone back"
                } else if reset {
                    " after a firmware reset"
                } else {
                    " at once"
                }
            );
            self.hold_since = Some(now_us);
        }
        self.held = changes;
        if take_due(&mut self.due.forced_relocate, now_us, FORCED_RELOCATE_US) {
            self.due.relocate = now_us.saturating_add(RELOCATE_US);
            if self.relocate(kernel, now_us, tpm, log) {
                return true;
            }
        }
        let Some(since) = self.hold_since else {
            self.held = 0;
            return false;
        };
        if now_us.saturating_sub(since) < HOLD_US {
            return true;
        }
        warn!(
            "monvm: no new kernel within {} ms: reporting the {} changes",
            HOLD_US / 1000,
            changes
        );
        self.end_hold();
        false
    }

    /// Ends a hold that no reboot followed (its changes undone, or its
    /// time up). A tick count gone back, or a firmware count changed,
    /// holds nothing again until it changes again: both are taken afresh
    /// from here.
    fn end_hold(&mut self) {
        self.hold_since = None;
        self.held = 0;
        self.jiffies = Jiffies::default();
        self.firmware = FirmwareTicks::at(bios_timer_ticks(&self.memory).ok());
    }
}

/// The full system-call table and IDT checks (their verdicts into
/// `found`); the first one after start-up also goes into PCR 11.
fn full_check(
    view: &KernelView<'_, LayoutMemory<IvshmemRam>>,
    profile: &KernelProfile,
    startup_measured: &mut bool,
    found: &mut [Vec<String>; AREA_COUNT],
    tpm: &mut KernelTpm,
    log: &mut MeasurementLog,
) {
    found[0].clear();
    found[1].clear();
    match checks::syscall_table(&view.space, &view.location, profile) {
        Ok(report) => found[0] = report.findings.iter().map(to_text).collect(),
        Err(e) => found[0].push(to_text(&e)),
    }
    let mut idt_digest = [0u8; 32];
    match checks::idt(&view.space, &view.location, profile) {
        Ok(report) => {
            found[1] = report.violations().map(to_text).collect();
            idt_digest = report.digest;
        }
        Err(e) => found[1].push(to_text(&e)),
    }
    if !*startup_measured {
        *startup_measured = true;
        let table_digest = link_relative_digest(view, profile);
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
}

/// Reads the system-call table and the IDT and compares them with their
/// copies, which take the bytes read. `false` if they differ, either could
/// not be read, or there was no copy yet.
fn same_bytes(
    view: &KernelView<'_, LayoutMemory<IvshmemRam>>,
    profile: &KernelProfile,
    syscalls: &mut Vec<u8>,
    idt: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> bool {
    let tables = [
        (
            profile.symbols.sys_call_table,
            profile.syscalls.slots.len() * 8,
            syscalls,
        ),
        (profile.symbols.idt_table, IDT_BYTES, idt),
    ];
    let mut same = true;
    for (symbol, len, copy) in tables {
        let at = view.location.runtime_of(symbol);
        // Compared in place; read out only when they differ.
        if copy.len() == len && at.is_some_and(|at| view.space.equals_virt(at, copy) == Ok(true)) {
            continue;
        }
        scratch.resize(len, 0);
        let read = at.is_some_and(|at| {
            vmi::paging::VirtualMemory::read_virt(&view.space, at, scratch).is_ok()
        });
        if !read {
            copy.clear();
            same = false;
            continue;
        }
        if copy != scratch {
            core::mem::swap(copy, scratch);
            same = false;
        }
    }
    same
}

fn to_text(value: &impl core::fmt::Display) -> String {
    text(format_args!("{value}"))
}

/// Formats without `alloc::format!`, which the freestanding image cannot
/// link (it needs unwinding symbols).
pub(crate) fn text(args: core::fmt::Arguments<'_>) -> String {
    use core::fmt::Write;
    let mut out = String::new();
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
pub(crate) fn made_by_ima<'a>(
    entry: &'a vmi::linux::ImaEntry,
    data: &'a [u8],
) -> Option<ima::ImaRecord<'a>> {
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

/// The start-up state of the Mon-VM in PCR 11: its kernel (the profile's
/// digest is in PCR 8; the record's digest is SHA-256 of its name), each
/// loaded module (`monvm:module:NAME`) and each user-space process
/// (`monvm:process:PID:COMM:EXE`), whose digest is the SHA-256 file digest
/// of the Mon-VM's IMA entry for the module's file or the executable, all
/// zero when it has none (measurement evaded).
fn measure_startup(
    memory: &LayoutMemory<IvshmemRam>,
    found: &Survey,
    profile: &KernelProfile,
    files: &mut ImaFiles,
    tpm: &mut KernelTpm,
    log: &mut MeasurementLog,
) {
    let release = profile.kernel.release.as_str();
    let kernel = text(format_args!("monvm:kernel:{release}"));
    let kernel_digest: [u8; 32] = Sha256::digest(kernel.as_bytes()).into();
    // The survey's kernel (a search of all RAM could find an old kernel's
    // image too, after a reboot).
    let view = kernel_view(
        memory,
        profile,
        &Watched {
            location: found.location,
            paging: found.paging,
        },
    )
    .ok_or("no address space");
    let mut paths = PathInterner::new(EXE_PATHS_BYTES);
    let processes: Vec<Process> = match &view {
        Ok(view) => found
            .tasks
            .items
            .iter()
            .filter_map(|t| Process::read(view, profile, t, &mut paths))
            .collect(),
        Err(e) => {
            warn!("monvm: no view for the executables: {}", e);
            Vec::new()
        }
    };
    // The survey walked the IMA list after the task list, but an
    // executable read just now may be newer: an entry missing for it is
    // looked for in the list as it is now.
    let missing = processes.iter().any(|p| p.digest(files).is_none())
        || found
            .modules
            .items
            .iter()
            .any(|m| files.module(m).is_none());
    if let (true, Ok(view)) = (missing, &view) {
        files.refresh(view, profile);
    }
    // Each record is written as it is measured: thousands of processes
    // running one file with a 4 KiB path share that path, not their texts.
    let modules = found
        .modules
        .items
        .iter()
        .map(|m| (module_name(m), files.module(m).unwrap_or([0; 32])));
    let processes = processes.iter().map(|p| {
        (
            text(format_args!("monvm:process:{}", p.text())),
            p.digest(files).unwrap_or([0; 32]),
        )
    });
    for (name, digest) in core::iter::once((kernel, kernel_digest))
        .chain(modules)
        .chain(processes)
    {
        if let Err(e) = log.measure(tpm, MONVM_PCR, &digest, name.as_bytes()) {
            warn!("monvm: measuring {} failed: {}", name.as_str(), e);
            return;
        }
    }
}

/// `monvm:module:NAME`.
fn module_name(module: &Module) -> String {
    text(format_args!(
        "monvm:module:{}",
        avm_attest::monvm::EscapedPath(module.name.as_bytes())
    ))
}

/// The SHA-256 file digests of the Mon-VM's consistent IMA entries
/// (`ima-ng` / `ima-sig` with a `sha256` digest), by path, and by module
/// name for files named like modules. A path measured again (its file
/// changed) takes the later digest. Each map is held to a byte budget
/// ([`IMA_FILES_BYTES`], [`IMA_MODULES_BYTES`]): a path past it is not
/// learned, so a process running that file, or a module loaded from it,
/// counts as unmeasured (fail closed).
#[derive(Debug)]
pub(crate) struct ImaFiles {
    by_path: PathMap<[u8; 32]>,
    /// Module file stems, `-` written `_`.
    by_module: PathMap<[u8; 32]>,
}

/// Heap the measured files' paths may take: more than the paths of every
/// record the A-VM's log can hold (16 MiB) with their bookkeeping, so a
/// node whose log is not full never meets it.
const IMA_FILES_BYTES: usize = 24 << 20;
/// Heap the module names may take (a name is at most 55 bytes).
const IMA_MODULES_BYTES: usize = 1 << 20;

impl Default for ImaFiles {
    fn default() -> Self {
        ImaFiles {
            by_path: PathMap::new(IMA_FILES_BYTES),
            by_module: PathMap::new(IMA_MODULES_BYTES),
        }
    }
}

/// Suffixes of module files.
const MODULE_SUFFIXES: [&[u8]; 4] = [b".ko", b".ko.xz", b".ko.zst", b".ko.gz"];

/// A module name as the kernel compares them (`-` and `_` alike).
fn module_key(name: &[u8]) -> Vec<u8> {
    name.iter()
        .map(|&b| if b == b'-' { b'_' } else { b })
        .collect()
}

impl ImaFiles {
    /// Adds an entry that IMA made (its template hash checked).
    pub(crate) fn add(&mut self, entry: &ImaEntry) {
        let Some((path, digest)) = ima_file(entry) else {
            return;
        };
        let file = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let refused = self.by_path.refused();
        if let Some(stem) = MODULE_SUFFIXES.iter().find_map(|s| file.strip_suffix(*s)) {
            self.by_module.insert(&module_key(stem), digest);
        }
        if !self.by_path.insert(path, digest) && refused == 0 {
            warn!("monvm: IMA file budget spent");
        }
    }

    fn file(&self, path: &[u8]) -> Option<[u8; 32]> {
        self.by_path.get(path).copied()
    }

    fn module(&self, module: &Module) -> Option<[u8; 32]> {
        self.by_module
            .get(&module_key(module.name.as_bytes()))
            .copied()
    }

    /// Learns the entries of the IMA list as it is now (not anchoring
    /// them: the watch does that as they appear).
    fn refresh(
        &mut self,
        view: &vmi::linux::KernelView<'_, LayoutMemory<IvshmemRam>>,
        profile: &KernelProfile,
    ) {
        let Some(head) = view.location.runtime_of(profile.symbols.ima_measurements) else {
            return;
        };
        let walk = vmi::linux::measurements(
            &view.space,
            head,
            &profile.offsets.ima,
            &vmi::linux::ImaLimits::default(),
            SurveyLimits::default().max_ima_entries,
        );
        for entry in walk {
            let Ok(entry) = entry else {
                return;
            };
            let data = entry.template_data();
            if made_by_ima(&entry, &data).is_some() {
                self.add(&entry);
            }
        }
    }
}

/// The path and SHA-256 file digest of an `ima-ng` / `ima-sig` entry:
/// d-ng = `sha256:` NUL digest, n-ng = the path and its NUL. A violation
/// record (all-zero template hash: IMA could not measure the file) names
/// no measurement, so it never stands for one.
fn ima_file(entry: &ImaEntry) -> Option<(&[u8], [u8; 32])> {
    if !matches!(entry.template_name.as_slice(), b"ima-ng" | b"ima-sig")
        || entry.template_hash == [0; 20]
    {
        return None;
    }
    let digest = entry.fields.first()?.strip_prefix(b"sha256:\0")?;
    let digest = <[u8; 32]>::try_from(digest).ok()?;
    let path = entry.fields.get(1)?.strip_suffix(&[0])?;
    (!path.is_empty() && !path.contains(&0)).then_some((path, digest))
}

/// A user process and its executable, as one walk read them.
#[derive(Debug)]
struct Process {
    task: GuestVirtAddr,
    mm: GuestVirtAddr,
    pid: i32,
    comm: FixedStr<16>,
    exe: Exe,
}

/// A process's executable as the A-VM keeps it.
#[derive(Debug, PartialEq, Eq)]
enum Exe {
    /// Its path, kept once for every process running it.
    Path(Rc<[u8]>),
    /// Its address space has no executable file.
    NoExeFile,
    /// The path did not resolve (a broken or over-long dentry chain).
    Unresolved,
    /// Resolved, but past the round's budget for paths
    /// ([`EXE_PATHS_BYTES`]): unjudged, so unmeasured (fail closed).
    OverBudget,
}

/// Heap a round's executable paths may take. Processes running one file
/// share its path, so a real Mon-VM's (a few hundred files) takes tens of
/// KiB; 32,768 forged tasks, each with its own 4 KiB path, would take
/// 128 MiB without it.
const EXE_PATHS_BYTES: usize = 4 << 20;

impl Exe {
    fn keep(read: Result<Vec<u8>, PathError>, paths: &mut PathInterner) -> Self {
        match read {
            Ok(path) => paths.intern(&path).map_or(Exe::OverBudget, Exe::Path),
            Err(PathError::NoExeFile) => Exe::NoExeFile,
            Err(_) => Exe::Unresolved,
        }
    }

    /// Whether a second reading gives what was kept (a path over the
    /// budget was read whole: only its task's `mm` must have held).
    fn same_as(&self, read: &Result<Vec<u8>, PathError>) -> bool {
        match (self, read) {
            (Exe::Path(kept), Ok(path)) => kept[..] == path[..],
            (Exe::NoExeFile, Err(PathError::NoExeFile)) => true,
            (Exe::Unresolved, Err(e)) => !matches!(e, PathError::NoExeFile),
            (Exe::OverBudget, Ok(_)) => true,
            _ => false,
        }
    }
}

impl Process {
    /// The process of a task read from the task list; `None` for a kernel
    /// thread, and for a task whose address space changed while its
    /// executable was read (it exits or execs: the next round sees it).
    fn read(
        view: &vmi::linux::KernelView<'_, LayoutMemory<IvshmemRam>>,
        profile: &KernelProfile,
        task: &Task,
        paths: &mut PathInterner,
    ) -> Option<Self> {
        let mm = task.mm?;
        let exe = Exe::keep(exe_of(view, profile, task.address, mm)?, paths);
        Some(Process {
            task: task.address,
            mm,
            pid: task.pid,
            comm: task.comm,
            exe,
        })
    }

    /// The file digest of its executable's IMA entry.
    fn digest(&self, files: &ImaFiles) -> Option<[u8; 32]> {
        match &self.exe {
            Exe::Path(path) => files.file(path),
            _ => None,
        }
    }

    /// `PID:COMM:EXE`: COMM with every byte that is not printable ASCII
    /// as `?` (it stays at most 15 bytes, so a reader can split it from
    /// the path), EXE escaped ([`avm_attest::monvm::EscapedPath`]) and last, so a `:` in it
    /// changes nothing.
    fn text(&self) -> String {
        let comm: String = self
            .comm
            .as_bytes()
            .iter()
            .map(|&b| {
                // `:` too: the record then has one reading.
                if (0x20..0x7f).contains(&b) && b != b':' {
                    b as char
                } else {
                    '?'
                }
            })
            .collect();
        match &self.exe {
            Exe::Path(path) => text(format_args!(
                "{}:{}:{}",
                self.pid,
                comm,
                avm_attest::monvm::EscapedPath(path)
            )),
            Exe::NoExeFile => text(format_args!("{}:{}:{}", self.pid, comm, EXE_NONE)),
            Exe::Unresolved | Exe::OverBudget => {
                text(format_args!("{}:{}:{}", self.pid, comm, EXE_UNRESOLVED))
            }
        }
    }
}

/// A task's executable path; `None` if the task's `mm` is no longer `mm`
/// after the walk (the walk may have read freed memory).
fn exe_of(
    view: &vmi::linux::KernelView<'_, LayoutMemory<IvshmemRam>>,
    profile: &KernelProfile,
    task: GuestVirtAddr,
    mm: GuestVirtAddr,
) -> Option<Result<Vec<u8>, PathError>> {
    let exe = vmi::linux::exe_path(&view.space, mm, &profile.offsets.path)
        .map(|path| path.as_bytes().to_vec());
    let still = vmi::linux::structs::read_pointer(&view.space, task, profile.offsets.task.mm);
    (still == Ok(Some(mm))).then_some(exe)
}

/// The user processes and modules running, read before the IMA list.
struct Running {
    /// The task list as walked (kernel threads included).
    tasks: Vec<Task>,
    processes: Vec<Process>,
    modules: Vec<Module>,
}

impl Running {
    /// `None` if the task or module list did not walk to its end. The
    /// processes' executables are read only `with_processes`.
    fn read(
        view: &vmi::linux::KernelView<'_, LayoutMemory<IvshmemRam>>,
        profile: &KernelProfile,
        with_processes: bool,
    ) -> Option<Self> {
        let limits = SurveyLimits::default();
        let init_task = view.location.runtime_of(profile.symbols.init_task)?;
        let offsets = &profile.offsets;
        let tasks = vmi::linux::tasks(
            &view.space,
            init_task,
            &offsets.task,
            &offsets.cred,
            limits.max_tasks,
        )
        .ok()?
        .collect::<Result<Vec<Task>, _>>()
        .ok()?;
        let processes = if with_processes {
            let mut paths = PathInterner::new(EXE_PATHS_BYTES);
            tasks
                .iter()
                .filter_map(|task| Process::read(view, profile, task, &mut paths))
                .collect()
        } else {
            Vec::new()
        };
        let head = view.location.runtime_of(profile.symbols.modules)?;
        let modules = vmi::linux::modules(&view.space, head, &offsets.module, limits.max_modules)
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        Some(Running {
            tasks,
            processes,
            modules,
        })
    }

    /// `process:PID:COMM:EXE` for each process whose executable has no
    /// IMA entry, `module:NAME` for each module without one. A process is
    /// named only if a second walk of its executable gives the same and
    /// the task kept its address space (not a read torn by the guest).
    fn evaded(
        &self,
        view: &vmi::linux::KernelView<'_, LayoutMemory<IvshmemRam>>,
        profile: &KernelProfile,
        files: &ImaFiles,
    ) -> Vec<String> {
        // Texts for the first MAX_AREA_FINDINGS only (CappedFindings).
        let mut out = CappedFindings::default();
        for p in &self.processes {
            if p.digest(files).is_some()
                || !exe_of(view, profile, p.task, p.mm).is_some_and(|now| p.exe.same_as(&now))
            {
                continue;
            }
            out.push_with(|| text(format_args!("process:{}", p.text())));
        }
        for m in &self.modules {
            if files.module(m).is_none() {
                out.push_with(|| {
                    text(format_args!(
                        "module:{}",
                        avm_attest::monvm::EscapedPath(m.name.as_bytes())
                    ))
                });
            }
        }
        out.finish()
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
    bench: bool,
) -> Option<TextWatch> {
    // `make bench`: plain SHA-256 of as many bytes as the check reads,
    // timed right before it (see `bench_text_check`).
    let sha_before_us = profile
        .text_reference
        .as_ref()
        .filter(|_| bench)
        .map(|r| time_sha256(r.text.len + r.rodata.len).0);
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
    if let Some(before) = sha_before_us {
        bench_text_check(memory, profile, found, &startup, before);
    }
    let [text_v, sites_v, rodata_v, _] = watch.found();
    println!(
        "AVM-MONVM-TEXT chunks={} copied={} cpus={} modified_text={} sites={} modified_rodata={} boot_patches={} check_us={} parts_us={} us={}",
        startup.chunks,
        startup.copied,
        startup.cpus,
        text_v.len(),
        sites_v.len(),
        rodata_v.len(),
        avm_attest::hex::Hex(&startup.boot_patches),
        startup.check_us,
        List(&startup.parts_us),
        took
    );
    Some(watch)
}

/// Repeats of the text check in `make bench` after the start-up one: with
/// two, one run of SHA-256 in a quiet moment against checks that all met
/// a busy one put VMI at +63% in one run and +20% in the next; with four,
/// the worse kernel's figure was +16%, +19% and +35% in three runs (6.12's
/// medians +10% in the last), so eight, for more quiet moments on both
/// sides.
const BENCH_REPEATS: usize = 8;

/// `make bench`: microseconds of SHA-256 over a buffer of `bytes` bytes in
/// A-VM memory, 4 KiB at a time as the check hashes chunks, and the size of
/// the buffer it used: one as large as the kernel's text and rodata (the
/// peer the benchmark asks for: the same bytes' worth of memory, caches and
/// TLB missed as the check misses them), or, if the heap has no room for
/// one, a 1 MiB buffer hashed over and over (which stays in the caches and
/// so flatters plain hashing).
fn time_sha256(bytes: u64) -> (u64, usize) {
    const FALLBACK: usize = 1 << 20;
    let total = usize::try_from(bytes).unwrap_or(usize::MAX);
    let mut buffer: Vec<u8> = Vec::new();
    let len = if buffer.try_reserve_exact(total).is_ok() {
        total
    } else {
        FALLBACK.min(total)
    };
    buffer.extend((0..len).map(|i| i as u8));
    // Both CPUs hash, as both check at start-up ([`TextWatch::start`]):
    // this one the first half of the bytes, the helper the rest.
    let half = total / 2 / 4096 * 4096;
    let (first, second) = if buffer.len() >= total {
        buffer.split_at(half)
    } else {
        (&buffer[..], &buffer[..])
    };
    let started = time::now_us();
    let (a, b, _) = smp::join(
        || hash_chunks(first, half),
        || hash_chunks(second, total - half),
    );
    core::hint::black_box(a ^ b);
    (time::now_us() - started, buffer.len())
}

/// SHA-256 of `total` bytes, 4 KiB at a time, from `buffer` (over and
/// over if it is shorter).
fn hash_chunks(buffer: &[u8], total: usize) -> u8 {
    let mut left = total;
    let mut sink = 0u8;
    while left > 0 && !buffer.is_empty() {
        for chunk in buffer.chunks(4096) {
            let n = chunk.len().min(left);
            sink ^= Sha256::digest(&chunk[..n])[0];
            left -= n;
            if left == 0 {
                break;
            }
        }
    }
    sink
}

/// `make bench`: the text check next to plain SHA-256 of as many bytes,
/// alternating (SHA-256, the start-up check, SHA-256, then
/// [`BENCH_REPEATS`] more checks that measure nothing, each followed by
/// SHA-256): the host's speed drifts by tens of percent within seconds
/// (the Mon-VM is still starting its userland meanwhile), so each side
/// reports its fastest run (the same estimator for both; the first runs
/// are cold). A repeated
/// check without room for its copy is not counted (it would skip the
/// copying).
fn bench_text_check(
    memory: &LayoutMemory<IvshmemRam>,
    profile: &KernelProfile,
    found: &Survey,
    startup: &text_watch::Startup,
    sha_before_us: u64,
) {
    let mut checks = alloc::vec![startup.check_us];
    let (sha_us, mut buffer) = time_sha256(startup.bytes);
    let mut shas = alloc::vec![sha_before_us, sha_us];
    for _ in 0..BENCH_REPEATS {
        let started = time::now_us();
        if let Some((_, again)) = TextWatch::start(memory, profile, found.location, started)
            && again.copied
        {
            checks.push(again.check_us);
        }
        let (sha_us, len) = time_sha256(startup.bytes);
        shas.push(sha_us);
        buffer = buffer.min(len);
    }
    let fastest = |v: &[u64]| v.iter().copied().min().unwrap_or(0);
    println!(
        "AVM-MONVM-BENCH bytes={} text_check_us={} sha256_us={} checks={} sha256_runs={} sha256_buffer={}",
        startup.bytes,
        fastest(&checks),
        fastest(&shas),
        List(&checks),
        List(&shas),
        buffer
    );
}

/// Numbers joined by commas.
struct List<'a>(&'a [u64]);

impl core::fmt::Display for List<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// Logs the survey, and one `AVM-MONVM` line for tests and tools.
fn report(found: &Survey, profile: &KernelProfile, took_us: u64) {
    let location = &found.location;
    info!(
        "monvm: {} at phys {:#x}, _text {:#x} (slide {:#x}), {}-level paging",
        profile.kernel.release.as_str(),
        location.phys_text.0,
        location.runtime_text,
        location.slide(),
        found.paging.levels()
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
