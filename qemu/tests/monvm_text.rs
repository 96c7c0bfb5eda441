//! The A-VM's check of the Mon-VM kernel's text and read-only data
//! (`vmi::linux::text`, swept by the A-VM), on a live node of each Debian
//! kernel with KASLR on:
//! - at start-up the whole text and rodata match the image (no chunk
//!   modified, every patch site allowed by its rule);
//! - legitimate self-patching raises nothing: a tracepoint enabled and
//!   disabled (jump labels, static calls), modules loaded and removed;
//! - each tampering, written into the Mon-VM's RAM file as a rootkit inside
//!   would write it, becomes an event with its own area within a few sweep
//!   periods, and a clean event once restored: a byte of text outside every
//!   patch site, a jump-label site that jumps elsewhere than its target, a
//!   byte of rodata.
//!
//!
//! The function tracer switched on and off raises nothing either, although
//! it points nearly every fentry site at a trampoline it allocates in the
//! module area (and rewrites them through `int3` forms); a trampoline whose
//! body differs from the kernel's template is a violation naming the
//! lowest site that calls it, and a site left in an `int3` form is one
//! (`function_tracer_*`).
//!
//! Why the writes are harmless to the running guest: the text byte is in
//! the handler of `kexec_load`, which nothing in the Mon-VM calls; the
//! jump-label site is made `jmp +0` (a jump to the next instruction: the
//! same effect as its NOP); the rodata byte is in the middle of rodata
//! (BTF or the symbol tables, read only by BPF and module loading), one
//! bit flipped. Each is restored by a guard.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use avm_qemu::monvm::console::MonVmConsole;
use avm_qemu::testing::{
    MonVmPatch, avm_events, console_sh, unused_text_offset, wait_for_avm_serial,
};
use vmi::linux::text::TextReference;
use vmi::paging::VirtualMemory;
use vmi::profile::KernelProfile;

static BOOTS: Mutex<()> = Mutex::new(());

const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Long enough for several whole sweeps (one per second).
const SETTLE: Duration = Duration::from_secs(3);

fn reference(profile: &KernelProfile) -> &TextReference {
    profile
        .text_reference
        .as_ref()
        .expect("the launcher's profile has a text reference")
}

fn profile_of(record: &avm_qemu::NodeRecord) -> KernelProfile {
    let bytes = std::fs::read(record.monvm_profile.as_ref().expect("a profile")).expect("profile");
    KernelProfile::decode(&bytes).expect("profile decodes")
}

fn check_text(series: &str) {
    let _boot = BOOTS.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let node = avm_qemu::testing::monvm_node(dir.path(), series, 256);
    let record = node.record().clone();
    wait_for_avm_serial(&record, "AVM-MONVM-TEXT ");
    let serial = std::fs::read_to_string(&record.avm_serial).expect("serial log");
    let line = serial
        .lines()
        .find(|l| l.starts_with("AVM-MONVM-TEXT "))
        .expect("the text line")
        .to_string();
    let line = line.as_str();
    for clean in [
        "copied=true",
        // The helper CPU took its part of the check.
        "cpus=2 ",
        "modified_text=0 ",
        "sites=0 ",
        "modified_rodata=0 ",
    ] {
        assert!(
            line.contains(clean),
            "{series}: not clean at start-up: {line}\n{serial}"
        );
    }
    let profile = profile_of(&record);
    let text = reference(&profile);
    let link_text = profile.symbols.text;

    // Legitimate self-patching: a tracepoint on and off (jump labels and
    // static calls), a module in and out.
    let mut console = MonVmConsole::connect(
        record.monvm_console.as_ref().expect("a console"),
        CONSOLE_TIMEOUT,
    )
    .expect("console");
    let module = record
        .monvm_module("dummy")
        .expect("the dummy module is in the Mon-VM's root")
        .to_string();
    let tracing = "/sys/kernel/tracing";
    console
        .run_ok(&format!(
            "mount -t tracefs none {tracing} && echo 1 > {tracing}/events/sched/sched_switch/enable && insmod {module}"
        ))
        .expect("tracepoint on, module in");
    std::thread::sleep(SETTLE);
    console
        .run_ok(&format!(
            "echo 0 > {tracing}/events/sched/sched_switch/enable && rmmod dummy"
        ))
        .expect("tracepoint off, module out");
    std::thread::sleep(SETTLE);
    assert_eq!(
        avm_events(&record),
        Vec::<String>::new(),
        "{series}: legitimate self-patching was reported"
    );

    // 1. A byte of text outside every patch site.
    let byte = unused_text_offset(&profile, 16).expect("a byte outside every site");
    let chunk = link_text + byte / 4096 * 4096;
    let patch = MonVmPatch::kernel(&record, |_| link_text + byte, |b, _| vec![b[0] ^ 0xff], 1);
    wait_for_avm_serial(&record, &format!(":violation:text:chunk:{chunk:#x}"));
    patch.restore();
    wait_for_avm_serial(&record, ":clean:text");

    // 2. A 5-byte jump-label site jumping elsewhere than its target.
    let jumps = &text.sites.jumps;
    let i = (0..jumps.offsets.len())
        .find(|&i| jumps.lens[i] == 5 && jumps.targets[i] != 5)
        .expect("a 5-byte jump label");
    let site = link_text + u64::from(jumps.offsets.as_slice()[i]);
    let patch = MonVmPatch::kernel(&record, |_| site, |_, _| vec![0xe9, 0, 0, 0, 0], 5);
    wait_for_avm_serial(
        &record,
        &format!(":violation:patch_site:jump-label@{site:#x}:e900000000"),
    );
    patch.restore();
    wait_for_avm_serial(&record, ":clean:patch_site");

    // 3. A byte of rodata (outside ro_after_init, which is baselined per
    // boot and reported as an area of its own).
    let (ro, end) = (
        profile.symbols.start_ro_after_init..profile.symbols.end_ro_after_init,
        text.rodata.start + text.rodata.len,
    );
    let mut at = text.rodata.start + text.rodata.len / 2;
    if ro.contains(&at) {
        at = ro.end + (end - ro.end) / 2;
    }
    assert!(!ro.contains(&at) && at < end);
    let chunk = at / 4096 * 4096;
    let patch = MonVmPatch::kernel(&record, |_| at, |b, _| vec![b[0] ^ 1], 1);
    wait_for_avm_serial(&record, &format!(":violation:rodata:chunk:{chunk:#x}"));
    patch.restore();
    wait_for_avm_serial(&record, ":clean:rodata");

    // Only these: three violations, three clean events.
    let all = avm_events(&record);
    assert_eq!(all.len(), 6, "{series}: {all:#?}");
    drop(node);

    // What alternatives and paravirt chose depends on the CPU, not on the
    // boot: another boot (another KASLR slide) gives the same digest, which
    // is what lets a verifier learn it once. That boot's A-VM has one CPU
    // (no helper): it checks every chunk itself, with the same verdicts.
    let boot_patches = |line: &str| {
        line.split(' ')
            .find_map(|w| w.strip_prefix("boot_patches="))
            .expect("boot_patches")
            .to_string()
    };
    let first = boot_patches(line);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = avm_qemu::testing::tcg_config(dir.path());
    let mut monvm = avm_qemu::testing::monvm_config(series, 256);
    monvm.avm_cpus = 1;
    config.monvm = Some(monvm);
    let node = avm_qemu::Node::up_on_free_port(&config, avm_qemu::testing::BOOT_TIMEOUT)
        .expect("a node whose A-VM has one CPU");
    let again = node.record().clone();
    wait_for_avm_serial(&again, "AVM-MONVM-TEXT ");
    let serial = std::fs::read_to_string(&again.avm_serial).expect("serial log");
    let line = serial
        .lines()
        .find(|l| l.starts_with("AVM-MONVM-TEXT "))
        .expect("the text line");
    assert!(
        line.contains("cpus=1 modified_text=0 sites=0 modified_rodata=0"),
        "{line}"
    );
    assert_eq!(
        boot_patches(line),
        first,
        "{series}: boot patches differ between boots"
    );
}

#[test]
fn text_and_rodata_of_a_live_6_1_mon_vm() {
    check_text("6.1");
}

#[test]
fn text_and_rodata_of_a_live_6_12_mon_vm() {
    check_text("6.12");
}

/// How many fentry sites call each target (runtime addresses), read from
/// the Mon-VM's RAM file.
fn fentry_calls(record: &avm_qemu::NodeRecord) -> BTreeMap<u64, usize> {
    let ram = record.monvm_ram.clone().expect("a Mon-VM");
    let layout = vmi::RamLayout::parse_cmdline(record.monvm_ram_layout.as_deref().expect("layout"))
        .expect("the layout parses");
    let profile = profile_of(record);
    let memory = vmi::file::FileMemory::open(&ram, layout).expect("the RAM file");
    let view = vmi::linux::view(&memory, layout.regions(), &profile).expect("kernel located");
    let runtime_text = view.location.runtime_text;
    let mut calls = BTreeMap::new();
    for &o in reference(&profile).sites.fentry.as_slice() {
        let site = runtime_text + u64::from(o);
        let mut b = [0u8; 5];
        let va = vmi::GuestVirtAddr::new(site).expect("canonical");
        if view.space.read_virt(va, &mut b).is_ok() && b[0] == 0xe8 {
            let rel = i32::from_le_bytes([b[1], b[2], b[3], b[4]]);
            let target = (site + 5).wrapping_add(i64::from(rel) as u64);
            *calls.entry(target).or_default() += 1;
        }
    }
    calls
}

fn check_function_tracer(series: &str) {
    let _boot = BOOTS.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let node = avm_qemu::testing::monvm_node(dir.path(), series, 256);
    let record = node.record().clone();
    wait_for_avm_serial(&record, "AVM-MONVM-TEXT ");
    let profile = profile_of(&record);
    let text = reference(&profile);
    let ftrace = text
        .ftrace
        .as_ref()
        .expect("the profile has ftrace templates");
    let mut console = MonVmConsole::connect(
        record.monvm_console.as_ref().expect("a console"),
        CONSOLE_TIMEOUT,
    )
    .expect("console");
    let tracer = "/sys/kernel/tracing/current_tracer";
    console_sh(&mut console, "mount -t tracefs none /sys/kernel/tracing");
    let on = |console: &mut MonVmConsole| {
        console_sh(console, &format!("echo function > {tracer}"));
        std::thread::sleep(3 * SETTLE);
    };
    let off = |console: &mut MonVmConsole| {
        console_sh(console, &format!("echo nop > {tracer}"));
        std::thread::sleep(3 * SETTLE);
    };

    // On: nearly every fentry site calls one trampoline in the module
    // area, and nothing is reported.
    on(&mut console);
    let calls = fentry_calls(&record);
    let (&trampoline, &sites) = calls
        .iter()
        .max_by_key(|(_, n)| **n)
        .expect("fentry sites call something");
    eprintln!(
        "{series}: {sites} of {} fentry sites call {trampoline:#x}; all targets {calls:x?}",
        text.sites.fentry.len()
    );
    assert!(
        vmi::linux::text::ftrace::MODULE_AREA.contains(&trampoline)
            && sites > text.sites.fentry.len() / 2,
        "{series}: the function tracer did not use a trampoline: {calls:x?}"
    );
    assert_eq!(
        avm_events(&record),
        Vec::<String>::new(),
        "{series}: the function tracer was reported"
    );
    off(&mut console);
    assert!(
        fentry_calls(&record).is_empty(),
        "{series}: tracer still on"
    );
    assert_eq!(
        avm_events(&record),
        Vec::<String>::new(),
        "{series}: the function tracer off was reported"
    );

    // On again, then one instruction of the trampoline's body re-encoded
    // (`mov %rbp,%rdx` as `48 8b d5` instead of `48 89 ea`: the same
    // effect, so the traced guest runs on): every site that calls it is a
    // violation, and clean again once restored.
    on(&mut console);
    let calls = fentry_calls(&record);
    let (&trampoline, _) = calls.iter().max_by_key(|(_, n)| **n).expect("calls");
    let template = &ftrace.templates[0];
    let at = template
        .bytes
        .windows(3)
        .position(|w| w == [0x48, 0x89, 0xea])
        .expect("`mov %rbp,%rdx` in ftrace_caller") as u64;
    let patch = MonVmPatch::at(
        &record,
        |_, _, _| vmi::GuestVirtAddr::new(trampoline + at + 1).expect("canonical"),
        |b, _| {
            assert_eq!(b, [0x89, 0xea], "the trampoline copies ftrace_caller");
            vec![0x8b, 0xd5]
        },
        2,
    );
    wait_for_avm_serial(&record, ":violation:patch_site:fentry@0xffffffff8");
    wait_for_avm_serial(&record, &format!(":trampoline@{trampoline:#x}"));
    patch.restore();
    wait_for_avm_serial(&record, ":clean:patch_site");
    off(&mut console);
    // One violation (the trampoline, naming its lowest caller), one clean.
    let events = avm_events(&record);
    assert_eq!(events.len(), 2, "{series}: {events:#?}");
    assert!(
        events[0].contains(":violation:patch_site:fentry@0xffffffff8")
            && events[0].contains(&format!(":trampoline@{trampoline:#x}"))
            && events[1].contains(":clean:patch_site"),
        "{series}: {events:#?}"
    );

    // A site left in `text_poke_bp`'s intermediate form (`int3` and the
    // NOP's other bytes): given one sweep round, then reported. The site
    // is the fentry site of kexec_load's handler, which nothing calls.
    let handler = profile
        .syscalls
        .slots
        .iter()
        .find(|s| s.name == "__x64_sys_kexec_load")
        .expect("kexec_load's handler")
        .address;
    let link_text = profile.symbols.text;
    let site = text
        .sites
        .fentry
        .as_slice()
        .iter()
        .map(|&o| link_text + u64::from(o))
        .find(|a| (handler..handler + 16).contains(a))
        .expect("the handler's fentry site");
    let patch = MonVmPatch::kernel(
        &record,
        |_| site,
        |b, _| {
            assert_eq!(b, [0x0f, 0x1f, 0x44, 0, 0], "the fentry NOP");
            vec![0xcc, 0x1f, 0x44, 0, 0]
        },
        5,
    );
    wait_for_avm_serial(
        &record,
        &format!(":violation:patch_site:fentry@{site:#x}:cc1f440000"),
    );
    patch.restore();
    wait_for_avm_serial(&record, "monvm:event:4:clean:patch_site");
}

#[test]
fn function_tracer_on_a_live_6_1_mon_vm() {
    check_function_tracer("6.1");
}

#[test]
fn function_tracer_on_a_live_6_12_mon_vm() {
    check_function_tracer("6.12");
}
