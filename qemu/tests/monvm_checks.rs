//! The syscall-table and IDT checks of `vmi::linux::checks` against a live
//! Mon-VM of each Debian kernel (one node each), reading its RAM file as the
//! A-VM reads the ivshmem BAR: a clean boot gives no violation; a
//! `sys_call_table` slot rewritten through the RAM file (as a rootkit
//! writes it from inside) is named with the handler it now points to; an IDT
//! gate moved into module space is named, and one redirected to another
//! kernel entry is named by the entry the profile expects; restoring the bytes makes both
//! checks clean again, with the IDT's digest back to its boot value.
//!
//! Why the writes are safe for the running guest:
//! - `sys_call_table`: on both kernels native 64-bit system calls go
//!   through `x64_sys_call` (direct jumps) and nothing in `.text` reads the
//!   table (FACTS-linux.md), so a rewritten slot changes no call; the test
//!   runs a command on the console while the slot is rewritten to show it.
//! - The IDT: vector 0x1d is `#VC` (VMM communication exception), installed
//!   because the kernels have `CONFIG_AMD_MEM_ENCRYPT`, and raised only by
//!   an AMD SEV-ES/SNP CPU; the Mon-VM is a `qemu64` vCPU under TCG (or
//!   KVM without SEV), which never raises it. The gate is restored at once
//!   (and by a guard if an assertion fails first).

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use avm_qemu::testing::MonVmPatch;
use vmi::RamLayout;
use vmi::linux::checks::{
    Gate, IdtFindingKind, IdtReport, MODULES_START, SyscallReport, Target, idt, syscall_table,
};
use vmi::linux::{KernelView, view};
use vmi::profile::KernelProfile;

static BOOTS: Mutex<()> = Mutex::new(());

const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `#VC`: never raised without SEV-ES hardware (see the module docs).
const UNUSED_VECTOR: u8 = 0x1d;
/// The slot rewritten: getpid (39), pointed at getuid's handler (102).
const SLOT: usize = 39;
const OTHER_SLOT: usize = 102;

fn checks<M: vmi::GuestMemory>(
    view: &KernelView<'_, M>,
    profile: &KernelProfile,
) -> (SyscallReport, IdtReport) {
    let sc = syscall_table(&view.space, &view.location, profile).expect("sys_call_table readable");
    let idt = idt(&view.space, &view.location, profile).expect("idt_table readable");
    (sc, idt)
}

/// Writes `gate` over its vector's gate in the live Mon-VM and checks that
/// the host check reports exactly one violation: the vector does not
/// point at `expected_name`, its target being in the kernel text. The
/// gate stays written until the returned patch is dropped.
fn redirect_gate<M: vmi::GuestMemory>(
    record: &avm_qemu::NodeRecord,
    view: &KernelView<'_, M>,
    profile: &KernelProfile,
    series: &str,
    gate: Gate,
    expected_name: &str,
) -> MonVmPatch {
    let tamper = MonVmPatch::kernel(
        record,
        |p| p.symbols.idt_table + 16 * u64::from(gate.vector),
        |_, _| gate.encode().to_vec(),
        16,
    );
    let (_, report) = checks(view, profile);
    let violations: Vec<_> = report.violations().collect();
    assert_eq!(violations.len(), 1, "{series}: {violations:#?}");
    eprintln!("{series}: {}", violations[0]);
    assert!(
        matches!(
            &violations[0].kind,
            IdtFindingKind::NotExpected { expected_name: name, found: Some(_), .. }
                if name == expected_name
        ),
        "{series}: {:?}",
        violations[0]
    );
    tamper
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_live(series: &str) {
    let _boot = BOOTS.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    // Dropping the node (also when an assertion fails) stops both VMs and
    // removes the RAM file.
    let node = avm_qemu::testing::monvm_node(dir.path(), series, 256);
    let record = node.record().clone();
    let ram: PathBuf = record.monvm_ram.clone().expect("monvm_ram");
    let layout = RamLayout::parse_cmdline(record.monvm_ram_layout.as_deref().expect("layout"))
        .expect("the recorded layout parses");
    let profile_path = record.monvm_profile.clone().expect("monvm_profile");
    let profile = KernelProfile::decode(&std::fs::read(&profile_path).expect("reading profile"))
        .expect("the node's profile decodes");
    let memory = vmi::file::FileMemory::open(&ram, layout).expect("opening the RAM file");
    let view = view(&memory, layout.regions(), &profile).expect("kernel located");
    let slide = view.location.slide();
    eprintln!(
        "{series}: kernel at {} slide {slide:#x}, {:?}",
        view.location.phys_text, view.paging
    );

    // A clean boot.
    let t = std::time::Instant::now();
    let (sc, clean_idt) = checks(&view, &profile);
    eprintln!("{series}: both checks in {:?}", t.elapsed());
    assert!(sc.is_clean(), "{series}: {:#?}", sc.findings);
    assert_eq!(sc.slots, profile.syscall_count());
    eprintln!(
        "{series}: IDT digest {} with {} present gates; notes: {:?}",
        hex(&clean_idt.digest),
        clean_idt.gates.len(),
        clean_idt
            .findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    assert!(clean_idt.is_clean(), "{series}: {:#?}", clean_idt.findings);
    // Linux fills every gate: the exceptions it handles and all external
    // vectors with their entries, the rest of the 32 exception vectors with
    // the early boot handlers it never replaced (measured: 6.1 without a
    // machine-check handler, X86_MCE off, #VE without TDX and #CP without
    // IBT; 6.12 has all three). Those are notes, not violations.
    assert_eq!(clean_idt.gates.len(), 256, "{series}");
    let notes: Vec<u8> = clean_idt.findings.iter().map(|f| f.vector).collect();
    let mut expected: Vec<u8> = if series == "6.1" {
        vec![0x12, 0x14, 0x15]
    } else {
        vec![]
    };
    expected.extend((0x16..=0x1c).chain([0x1e, 0x1f]));
    assert_eq!(notes, expected, "{series}: leftover early handlers");
    assert!(
        clean_idt
            .findings
            .iter()
            .all(|f| f.kind == IdtFindingKind::LeftoverEarlyHandler)
    );
    let unused = *clean_idt
        .gates
        .iter()
        .find(|g| g.vector == UNUSED_VECTOR)
        .expect("the #VC gate is present");

    // sys_call_table: getpid's slot pointed at getuid's handler.
    let other = view
        .location
        .runtime_of(profile.syscalls.slots[OTHER_SLOT].address)
        .expect("handler in the image")
        .value();
    {
        let _tamper = MonVmPatch::kernel(
            &record,
            |p| p.symbols.sys_call_table + 8 * SLOT as u64,
            |_, _| other.to_le_bytes().to_vec(),
            8,
        );
        let (sc, _) = checks(&view, &profile);
        assert_eq!(sc.findings.len(), 1, "{series}: {:#?}", sc.findings);
        let f = &sc.findings[0];
        eprintln!("{series}: {f}");
        assert_eq!(f.slot, SLOT);
        assert_eq!(f.expected_name, profile.syscalls.slots[SLOT].name);
        assert_eq!(f.expected_name, "__x64_sys_getpid");
        assert_eq!(f.found, other);
        assert_eq!(
            f.target,
            Target::KernelText {
                symbol: Some("__x64_sys_getuid".to_owned())
            }
        );
        // The guest does not dispatch through the table: getpid still
        // works (busybox's shell reports its pid via getpid).
        let mut console = node
            .monvm_console(CONSOLE_TIMEOUT)
            .expect("connecting to the console");
        let out = console.run_ok("sh -c 'echo $$'").expect("a command runs");
        assert!(out.trim().parse::<u32>().is_ok(), "{out:?}");
    }
    let (sc, _) = checks(&view, &profile);
    assert!(
        sc.is_clean(),
        "{series} after restoring: {:#?}",
        sc.findings
    );

    // The IDT: the #VC gate moved into module space.
    let moved_target = MODULES_START + 0x1000;
    let moved = Gate {
        target: moved_target,
        ..unused
    };
    {
        let _tamper = MonVmPatch::kernel(
            &record,
            |p| p.symbols.idt_table + 16 * u64::from(UNUSED_VECTOR),
            |_, _| moved.encode().to_vec(),
            16,
        );
        let (_, report) = checks(&view, &profile);
        let violations: Vec<_> = report.violations().collect();
        assert_eq!(violations.len(), 1, "{series}: {violations:#?}");
        eprintln!("{series}: {}", violations[0]);
        assert_eq!(violations[0].vector, UNUSED_VECTOR);
        assert_eq!(violations[0].found, moved_target);
        assert_eq!(
            violations[0].kind,
            IdtFindingKind::OutsideText {
                target: Target::ModuleArea
            }
        );
        assert_ne!(report.digest, clean_idt.digest);
    }
    // Redirected to another kernel entry (the divide-error handler): still
    // in the kernel text, so only the profile's expected entry per vector
    // (from the image's idt_data tables) names it. Volatility misses this.
    let other = profile
        .idt
        .as_ref()
        .expect("an IDT reference")
        .gates
        .iter()
        .find(|(v, _)| *v == 0)
        .expect("vector 0")
        .1
        .address
        .wrapping_add(view.location.slide());
    let redirected = Gate {
        target: other,
        ..unused
    };
    drop(redirect_gate(
        &record,
        &view,
        &profile,
        series,
        redirected,
        "asm_exc_vmm_communication",
    ));
    // Vector 0x1f, which no idt_data table names (it keeps its early boot
    // handler on both kernels), pointed at the divide-error handler in
    // the text, a clean interrupt gate otherwise: the image says where its
    // early handler is, so this is a violation (before, any target in the
    // text passed until the A-VM's per-boot digest).
    let unnamed = Gate {
        vector: 0x1f,
        target: other,
        selector: unused.selector,
        ist_byte: 0,
        type_attr: 0x8e,
        reserved: 0,
    };
    {
        let _tamper = redirect_gate(
            &record,
            &view,
            &profile,
            series,
            unnamed,
            "early_idt_handler_array[31]",
        );
        avm_qemu::testing::wait_for_avm_serial(&record, ":violation:idt:IDT vector 0x1f points to");
    }
    // The #VC gate made callable from user space (DPL 3), its target
    // unchanged: only the attribute word the image's idt_data gives the
    // vector says so. The A-VM reports it too.
    let user_callable = Gate {
        type_attr: unused.type_attr | 0x60,
        ..unused
    };
    {
        let _tamper = MonVmPatch::kernel(
            &record,
            |p| p.symbols.idt_table + 16 * u64::from(UNUSED_VECTOR),
            |_, _| user_callable.encode().to_vec(),
            16,
        );
        let (_, report) = checks(&view, &profile);
        let violations: Vec<_> = report.violations().collect();
        assert_eq!(violations.len(), 1, "{series}: {violations:#?}");
        assert!(
            matches!(
                violations[0].kind,
                IdtFindingKind::Attributes { expected, found }
                    if expected >> 13 & 3 == 0 && found >> 13 & 3 == 3
            ),
            "{series}: {:?}",
            violations[0]
        );
        avm_qemu::testing::wait_for_avm_serial(
            &record,
            &format!(":violation:idt:IDT vector {UNUSED_VECTOR:#04x} has DPL 3"),
        );
    }
    let (_, report) = checks(&view, &profile);
    assert!(report.is_clean(), "{series} after restoring");
    assert_eq!(report.digest, clean_idt.digest);
    // The guest still runs.
    let mut console = node
        .monvm_console(CONSOLE_TIMEOUT)
        .expect("connecting to the console");
    assert_eq!(
        console.run_ok("echo alive").expect("a command runs").trim(),
        "alive"
    );

    // The A-VM (its own watch; the brief tamperings above may fall between
    // two of its checks) notices an IMA entry rewritten after it anchored
    // it, and the entry back as it was.
    avm_qemu::testing::wait_for_avm_serial(&record, "AVM-MONVM-IMA ");
    let rewritten = MonVmPatch::ima_template_hash(&record, 1);
    avm_qemu::testing::wait_for_avm_serial(&record, ":violation:ima:entry 1 rewritten");
    rewritten.restore();
    avm_qemu::testing::wait_for_avm_serial(&record, ":clean:ima");
}

#[test]
fn checks_on_a_live_6_1_mon_vm() {
    check_live("6.1");
}

#[test]
fn checks_on_a_live_6_12_mon_vm() {
    check_live("6.12");
}
