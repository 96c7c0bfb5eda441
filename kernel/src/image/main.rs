//! The A-VM unikernel: boots through PVH, sets up the CPU, memory, console,
//! clock and timer, finds the TPM, prints the boot report and then serves
//! attestation requests over the network from a polled main loop.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
#[macro_use]
mod console;
mod attestation;
mod cross_watch;
mod fatal;
mod fw_cfg;
mod heap;
mod ima_watch;
mod measurements;
mod monvm;
mod net;
mod pci;
mod physmem;
mod shutdown;
mod text_watch;
mod time;
mod tpm_boot;

use arch::x86_64::{cpu, gdt, idt, paging, pic, pit, smp};
use avm_kernel::acpi::{Rsdp, Tpm2Table};
use avm_kernel::boot_info::{MemoryKind, MemoryRegion, StartInfo};
use avm_kernel::cmdline::{CrashKind, KernelOptions, OptionProblem};
use avm_kernel::exit::ExitCode;
use avm_kernel::memory::choose_heap_region;
use fatal::ErrorKind;
use physmem::IdentityMemory;

/// Timer rate while idle: wakes the loop often enough to poll devices,
/// rarely enough that an idle A-VM costs the host almost nothing (1 kHz
/// measured 7% of a host core under TCG, 100 Hz stays well under 5%). A
/// watched Mon-VM asks for more when its monitor policy's shortest period
/// needs it ([`monvm::MonVm::timer_hz`]).
const TIMER_HZ: u32 = 100;
/// Timer rate while the network is busy: the device raises no interrupts,
/// so each packet waits for the next tick (a Hello round trip took about
/// 10 ms at 100 Hz, 2-3 ms at 1 kHz).
const BUSY_TIMER_HZ: u32 = 1000;
/// How long after the last network activity the fast rate is kept.
const BUSY_WINDOW_US: u64 = 1_000_000;
/// An address no page table maps (for `crash=page-fault`).
const UNMAPPED_ADDRESS: usize = 1 << 40;
/// How often the idle loop logs that it is alive (debug level).
const HEARTBEAT_US: u64 = 10_000_000;
/// The heap is capped: firmware keeps its own data (ACPI tables, the TPM
/// event log) at the top of RAM (128 MiB by default). What the Mon-VM can
/// make it hold is bounded part by part (docs/monitoring.md, "Memory"):
/// the copy of the kernel's text and rodata the sweep compares against
/// (about 28 MiB), the measurement log (16 MiB), the IMA entries taken
/// (8 MiB) and their files (24 MiB), a round's executables (4 MiB), and
/// the lists a round walks, each bounded by its walk's limit.
const HEAP_MAX: u64 = 112 << 20;
/// Where the start info may be before the memory map is known: anything
/// below the device region under 4 GiB.
const BOOT_DATA_REGION: MemoryRegion = MemoryRegion {
    start: 0,
    len: 0xfec0_0000,
    kind: MemoryKind::Ram,
};

unsafe extern "C" {
    // Linker-script symbols bounding the loaded image and its .bss.
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// Called by the entry assembly in long mode on the boot stack.
pub extern "C" fn kernel_entry(start_info_paddr: u64) -> ! {
    time::mark_entry();
    console::init();
    gdt::init();
    idt::init();

    let boot_memory = [BOOT_DATA_REGION];
    let info = match StartInfo::parse(&IdentityMemory::new(&boot_memory), start_info_paddr) {
        Ok(info) => info,
        Err(e) => fatal::fail(
            ErrorKind::Panic,
            format_args!("bad PVH start info at {start_info_paddr:#x}: {e}"),
        ),
    };
    let mut problems: heapless::Vec<OptionProblem<'_>, 8> = heapless::Vec::new();
    let options = KernelOptions::parse(info.cmdline(), |p| {
        let _ = problems.push(p);
    });
    console::set_level(options.log_level);

    paging::init(&info.memory);
    let calibration = time::calibrate();
    pic::init_timer_only();
    pit::start_periodic(TIMER_HZ);

    info!("avm-kernel {} starting", env!("CARGO_PKG_VERSION"));
    info!("tsc: {}", calibration);
    // Nothing in the image is formatted with Debug: it brings in the
    // formatter's builders and Unicode escaping (some 12 KB).
    info!("cmdline: \"{}\"", info.cmdline());
    for p in &problems {
        match p {
            OptionProblem::UnknownKey(key) => warn!("cmdline: ignored unknown option \"{}\"", key),
            OptionProblem::BadValue(arg) => warn!(
                "cmdline: ignored \"{}\": bad or missing value \"{}\"",
                arg.key,
                arg.value.unwrap_or("")
            ),
        }
    }
    for r in &info.memory {
        debug!("memmap: {:#012x}-{:#012x} {}", r.start, r.end(), r.kind);
    }
    for m in &info.modules {
        info!("module: {:#x}-{:#x}", m.start, m.end());
    }
    if let Some(kind) = options.crash {
        crash(kind);
    }

    let mem = IdentityMemory::new(&info.memory);
    let tpm2 = find_tpm2_table(&mem, info.rsdp_paddr);
    let occupied = occupied_ranges(&info, tpm2.as_ref());
    setup_heap(&info, &occupied);
    setup_helper_cpu(&info, &occupied);
    list_pci_devices();

    let mut tpm = tpm_boot::boot(tpm2.as_ref(), &info.memory);
    let mut log = match options.log_max_records {
        Some(max) => measurements::MeasurementLog::with_max_records(max),
        None => measurements::MeasurementLog::default(),
    };
    let monvm = monvm::start(&info, &mut tpm.tpm, &mut log);
    info!(
        "measurement log: {} records, {} bytes",
        log.records(),
        log.as_bytes().len()
    );
    info!("boot done after {} us", time::now_us());
    if options.exit_after_report {
        shutdown::exit(ExitCode::Success);
    }
    main_loop(tpm, monvm, log, info.cmdline(), options.attest_port)
}

/// Fails on purpose (`crash=` on the command line), so tests can check the
/// panic and exception paths of the real image.
fn crash(kind: CrashKind) -> ! {
    warn!("crashing on request: {}", kind);
    match kind {
        CrashKind::Panic => panic!("crash requested on the command line"),
        CrashKind::PageFault => {
            // 1 TiB is far above the identity map, so this read page-faults.
            let unmapped = UNMAPPED_ADDRESS as *const u64;
            // SAFETY: deliberately faulting; the exception handler reports it
            // and ends the VM, so the read never completes.
            let value = unsafe { unmapped.read_volatile() };
            panic!("read of unmapped {UNMAPPED_ADDRESS:#x} returned {value:#x}")
        }
    }
}

/// The ACPI `TPM2` table, if the firmware published one.
fn find_tpm2_table(mem: &IdentityMemory<'_>, rsdp_hint: u64) -> Option<Tpm2Table> {
    let rsdp = match Rsdp::find(mem, rsdp_hint) {
        Ok(r) => r,
        Err(e) => {
            warn!("acpi: no RSDP: {}", e);
            return None;
        }
    };
    debug!(
        "acpi: RSDP at {:#x} revision {} RSDT {:#x} XSDT {:#x}",
        rsdp.paddr,
        rsdp.revision,
        rsdp.rsdt,
        rsdp.xsdt.unwrap_or(0)
    );
    match Tpm2Table::find(mem, &rsdp) {
        Ok(Some(t)) => {
            info!(
                "acpi: TPM2 rev {} control area {:#x} start method {}",
                t.revision, t.control_area, t.start_method
            );
            if let Some(area) = t.log_area {
                info!("acpi: TPM2 log area {:#x}+{:#x}", area.start, area.min_len);
            }
            Some(t)
        }
        Ok(None) => {
            info!("acpi: no TPM2 table");
            None
        }
        Err(e) => {
            warn!("acpi: TPM2 lookup failed: {}", e);
            None
        }
    }
}

/// What RAM holds already: the image, the boot data and modules, the
/// firmware's TPM log.
fn occupied_ranges(info: &StartInfo, tpm2: Option<&Tpm2Table>) -> heapless::Vec<(u64, u64), 32> {
    // Only the addresses of the linker symbols are taken, never their bytes.
    let image_start = &raw const __kernel_start as u64;
    let image_end = &raw const __kernel_end as u64;
    let mut occupied: heapless::Vec<(u64, u64), 32> = heapless::Vec::new();
    let _ = occupied.push((image_start, image_end));
    for r in info.occupied_ranges() {
        let _ = occupied.push(r);
    }
    if let Some(log) = tpm2.and_then(|t| t.log_area) {
        let _ = occupied.push((log.start, log.start.saturating_add(u64::from(log.min_len))));
    }
    occupied
}

/// Gives the helper CPU's real-mode trampoline a page of low RAM that
/// nothing uses (the heap lies above the image, at 1 MiB and up).
fn setup_helper_cpu(info: &StartInfo, occupied: &[(u64, u64)]) {
    let cpus = fw_cfg::cpu_count().unwrap_or(1);
    if cpus < 2 {
        // One CPU: no page to set aside.
        return;
    }
    match choose_heap_region(&info.memory, occupied, 0x8000, 0x9_f000) {
        Some((page, _)) if smp::init(cpus, page) => {
            info!("smp: {} CPUs, a helper at {:#x}", cpus, page);
        }
        Some((page, _)) => warn!(
            "smp: the helper cannot start from {:#x}: one CPU only",
            page
        ),
        None => warn!("smp: no free page below 640 KiB: one CPU only"),
    }
}

fn setup_heap(info: &StartInfo, occupied: &[(u64, u64)]) {
    let image_end = &raw const __kernel_end as u64;
    let Some((start, end)) = choose_heap_region(&info.memory, occupied, image_end, 4 << 30) else {
        fatal::fail(ErrorKind::Panic, format_args!("no free RAM for the heap"));
    };
    let end = end.min(start + HEAP_MAX);
    // SAFETY: the range is RAM per the memory map, above the kernel image and
    // outside the boot data, modules and TPM log; nothing else uses it.
    if unsafe { heap::init(start, end) }.is_err() {
        fatal::fail(
            ErrorKind::Panic,
            format_args!("heap {start:#x}-{end:#x} too small"),
        );
    }
    info!(
        "heap: {:#x}-{:#x} ({} KiB)",
        start,
        end,
        (end - start) / 1024
    );
}

/// Lists the PCI functions and maps their 64-bit memory BARs (the boot map
/// covers only the first 4 GiB), so drivers can use them later.
fn list_pci_devices() {
    use avm_kernel::pci::{Bar, read_bar};
    let cfg = pci::PortConfigAccess;
    avm_kernel::pci::enumerate(&cfg, |f| {
        info!("pci: {}", f);
        if f.header_type != 0 {
            return;
        }
        let mut index = 0;
        while index < 6 {
            let bar = read_bar(&cfg, f.addr, index);
            if let Some(bar) = bar {
                debug!("pci: {} bar{} {}", f.addr, index, bar);
            }
            if let Some(Bar::Memory { addr, is_64bit, .. }) = bar {
                if addr >= 4 << 30 {
                    // Without sizing the BAR, map one 2 MiB page; drivers map
                    // the rest once they know the BAR's size.
                    if let Err(e) = paging::map_mmio(addr, 1) {
                        warn!(
                            "pci: {} bar{} at {:#x} not mapped: {}",
                            f.addr, index, addr, e
                        );
                    }
                }
                if is_64bit {
                    index += 1;
                }
            }
            index += 1;
        }
    });
}

/// The main loop: the network (and with it the attestation server) is
/// polled while there is work; otherwise the CPU halts until the next timer
/// tick, so an idle A-VM costs the host almost nothing. The tick is fast
/// for a second after network activity and slow otherwise.
fn main_loop(
    tpm: tpm_boot::TpmState,
    mut monvm: Option<monvm::MonVm>,
    log: measurements::MeasurementLog,
    cmdline: &str,
    attest_port: u16,
) -> ! {
    let mut backend = attestation::TpmBackend::new(tpm, log);
    let mut network = net::start(cmdline, attest_port, &mut backend);
    let mut next_heartbeat = time::now_us() + HEARTBEAT_US;
    let mut last_busy_us = 0;
    let mut timer_hz = TIMER_HZ;
    // Time spent outside `hlt` since the last heartbeat (debug level): what
    // the A-VM itself costs the host, beside QEMU's own wake-ups.
    let mut awake_us = 0u64;
    let mut woke_us = time::now_us();
    loop {
        let mut busy = match network.as_mut() {
            Some(network) => network.poll(&mut backend),
            None => false,
        };
        let now = time::now_us();
        if let Some(monvm) = monvm.as_mut() {
            // Not "busy": finding the kernel needs no fast timer.
            let (tpm, log) = backend.measuring();
            monvm.poll(now, tpm, log);
        }
        // Events go out in the round that recorded them.
        let events = backend.take_events();
        if !events.is_empty() {
            if let Some(network) = network.as_mut() {
                network.publish(events.as_slices().0);
                network.publish(events.as_slices().1);
            }
            busy = true;
        }
        if let Some(monvm) = monvm.as_mut() {
            monvm.print_events();
        }
        if busy {
            last_busy_us = now;
        }
        let want_fast = network.is_some() && now.saturating_sub(last_busy_us) < BUSY_WINDOW_US;
        let idle_hz = monvm.as_ref().map_or(TIMER_HZ, monvm::MonVm::timer_hz);
        let want_hz = if want_fast {
            BUSY_TIMER_HZ.max(idle_hz)
        } else {
            idle_hz
        };
        if want_hz != timer_hz {
            timer_hz = want_hz;
            debug!("timer: {} Hz", timer_hz);
            pit::start_periodic(timer_hz);
        }
        if now >= next_heartbeat {
            debug!(
                "idle: {} timer ticks, awake {} us per second",
                idt::timer_ticks(),
                awake_us / (HEARTBEAT_US / 1_000_000)
            );
            awake_us = 0;
            if let Some(network) = network.as_mut() {
                network.log_stats();
            }
            next_heartbeat = now + HEARTBEAT_US;
        }
        if !busy {
            awake_us += time::now_us().saturating_sub(woke_us);
            cpu::idle_until_interrupt();
            woke_us = time::now_us();
        }
    }
}
