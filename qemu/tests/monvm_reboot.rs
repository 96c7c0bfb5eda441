//! The A-VM's monitor scheduler on a live node (docs/monitoring.md):
//! - the monitor policy given to `avm-qemu` is measured into PCR 8 as
//!   `avm-config:monitor-policy:<canonical text>` before the Mon-VM is
//!   watched, and an invalid one is refused by `avm-qemu up` itself;
//! - the Mon-VM (6.1 and 6.12) rebooted from its console (QEMU resets it, its kernel
//!   picks a new KASLR slide) is noticed without restarting the A-VM: a
//!   `reboot` event in PCR 12, a second start-up measurement and a
//!   `remeasured` event after it, the A-VM's
//!   new location agrees with the Mon-VM's own `/proc/kallsyms`, a text
//!   write after the reboot is still detected, and attestation answers
//!   while the Mon-VM is down;
//! - a kernel whose `jiffies_64` goes back has booted again where the old
//!   one was (a new kernel that drew the old KASLR slide): an `, in place`
//!   reboot, measured again. A test cannot make KASLR draw the same slide
//!   twice (`nokaslr` is refused), so it writes the tick count back
//!   through the RAM file, as a guest faking a reboot would: that too is
//!   on record as a reboot.

mod common;

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use avm_attest::monitor_policy::MonitorPolicy;
use avm_qemu::monvm::console::MonVmConsole;
use avm_qemu::testing::{
    MonVmPatch, avm_events, console_sh, unused_text_offset, wait_for_avm_lines, wait_for_avm_serial,
};

/// One node at a time: two Mon-VMs booting at once on 2 cores make the
/// timeouts meaningless.
static BOOTS: Mutex<()> = Mutex::new(());

const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A Mon-VM boot under TCG on a loaded 2-core host.
const REBOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Not the default, so the record shows it came from the launcher.
const POLICY: &str = "syscall_idt=5,text=1000,ima=500,cross=400";

fn serial(record: &avm_qemu::NodeRecord) -> String {
    std::fs::read_to_string(&record.avm_serial).unwrap_or_default()
}

/// Waits until `count` lines of the A-VM's serial log start with `prefix`.
fn wait_for_lines(record: &avm_qemu::NodeRecord, prefix: &str, count: usize) {
    wait_for_avm_lines(record, prefix, count, REBOOT_TIMEOUT);
}

/// `KEY=VALUE` of the `n`th line starting with `prefix`.
fn field(record: &avm_qemu::NodeRecord, prefix: &str, n: usize, key: &str) -> String {
    let text = serial(record);
    let line = text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .nth(n)
        .unwrap_or_else(|| panic!("no line {n} {prefix:?}"))
        .to_string();
    line.split(' ')
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .to_string()
}

fn hex(value: &str) -> u64 {
    u64::from_str_radix(value.trim_start_matches("0x"), 16).expect("hex")
}

/// The Mon-VM's runtime `_text`, as its own kernel tells root.
fn kallsyms_text(console: &mut MonVmConsole) -> u64 {
    let out = console_sh(console, "grep ' _text$' /proc/kallsyms");
    hex(out.split_whitespace().next().expect("an address"))
}

fn profile_of(record: &avm_qemu::NodeRecord) -> vmi::profile::KernelProfile {
    let bytes = std::fs::read(record.monvm_profile.as_ref().expect("a profile")).expect("profile");
    vmi::profile::KernelProfile::decode(&bytes).expect("profile decodes")
}

#[test]
fn an_invalid_monitor_policy_is_refused_by_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("node");
    let out = common::avm_qemu(&[
        "up",
        "--state",
        state.to_str().expect("utf-8"),
        "--monitor-policy",
        "syscall_idt=0,text=1000,ima=500,cross=500",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "up accepted it: {stderr}");
    assert!(
        stderr.contains("invalid monitor policy: `syscall_idt`=0 is outside 1..=60000 ms"),
        "{stderr}"
    );
    assert!(!state.join("node.json").exists(), "a node was started");
}

/// A reset of the machine shows first in the firmware's data: SeaBIOS
/// sets the BIOS data area's tick count anew (a running Linux never
/// writes it). The new kernel then decompresses over the old one, which
/// changed the old IDT a few gates at a time under the A-VM's eyes (20
/// reboots in a row, `make soak`): far fewer than the 32 changes at once
/// that hold reports back, so they were reported as an attack. Now a
/// change seen after the firmware's count moved is held back while the
/// A-VM looks for the new kernel, for at most 15 s: with no new kernel,
/// it is reported then, and the count is taken afresh (the next change
/// is reported at once).
#[test]
fn changes_after_a_firmware_reset_wait_for_the_new_kernel_at_most_15_s() {
    let _boot = BOOTS.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = avm_qemu::testing::tcg_config(dir.path());
    config.monvm = Some(avm_qemu::testing::monvm_config("6.1", 256));
    let node = avm_qemu::node::Node::up_on_free_port(&config, avm_qemu::testing::BOOT_TIMEOUT)
        .unwrap_or_else(|err| panic!("node with a 6.1 Mon-VM did not come up: {err}"));
    let record = node.record().clone();
    wait_for_lines(&record, "AVM-MONVM-STARTUP", 1);
    let link_text = profile_of(&record).symbols.text;
    let profile = profile_of(&record);
    let byte = unused_text_offset(&profile, 16).expect("a byte outside every site");
    let chunk = link_text + byte / 4096 * 4096;
    let violation = format!(":violation:text:chunk:{chunk:#x}");

    // The firmware's count moves, as at a reset; then a byte of text.
    MonVmPatch::phys(
        &record,
        vmi::firmware::BDA_TIMER_TICKS,
        |b| {
            let ticks = u32::from_le_bytes(b.try_into().expect("4 bytes"));
            ticks.wrapping_add(1000).to_le_bytes().to_vec()
        },
        4,
    )
    .keep();
    let events_before = avm_events(&record).len();
    let written = Instant::now();
    let patch = MonVmPatch::kernel(&record, |_| link_text + byte, |b, _| vec![b[0] ^ 0xff], 1);
    // Seen by the sweep within a second, then held: nothing for 10 s.
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        &avm_events(&record)[events_before..],
        &[] as &[String],
        "reported during the hold"
    );
    assert!(
        serial(&record).contains("held while RAM is searched for a new kernel"),
        "no hold logged"
    );
    // No new kernel: reported when the hold ends, at most 15 s after the
    // change was seen.
    wait_for_avm_serial(&record, &violation);
    let reported = written.elapsed();
    assert!(
        reported <= Duration::from_secs(20),
        "reported {reported:?} after the write"
    );
    // The count was taken afresh: the next change is reported at once.
    patch.restore();
    let restored = Instant::now();
    wait_for_avm_serial(&record, ":clean:text");
    assert!(
        restored.elapsed() < Duration::from_secs(8),
        "the clean event was held too: {:?}",
        restored.elapsed()
    );
    assert!(
        !avm_events(&record).iter().any(|e| e.contains(":reboot:")),
        "a reboot without one"
    );
}

#[test]
fn a_rebooted_6_1_mon_vm_is_measured_again() {
    check_reboot("6.1");
}

#[test]
fn a_rebooted_6_12_mon_vm_is_measured_again() {
    check_reboot("6.12");
}

fn check_reboot(series: &str) {
    let _boot = BOOTS.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = avm_qemu::testing::tcg_config(dir.path());
    config.monvm = Some(avm_qemu::testing::monvm_config(series, 256));
    config.monitor_policy = Some(MonitorPolicy::parse(POLICY.as_bytes()).expect("policy"));
    // Why a new kernel is not measured (a search's count of new images, a
    // survey's error, no user space yet) is logged at debug level only.
    config.extra_cmdline.push("log=debug".into());
    let node = avm_qemu::node::Node::up_on_free_port(&config, avm_qemu::testing::BOOT_TIMEOUT)
        .unwrap_or_else(|err| panic!("node with a {series} Mon-VM did not come up: {err}"));
    let record = node.record().clone();
    wait_for_lines(&record, "AVM-MONVM-STARTUP", 1);

    // Part A: the policy given is the one measured, before the start-up.
    let text = serial(&record);
    let policy_line = format!("AVM-MONVM-POLICY avm-config:monitor-policy:{POLICY}");
    let at = text.find(&policy_line).expect("the policy record");
    assert!(at < text.find("AVM-MONVM-STARTUP").expect("start-up"));
    assert_eq!(record.monitor_policy.as_deref(), Some(POLICY));

    let mut console = MonVmConsole::connect(
        record.monvm_console.as_ref().expect("a console"),
        CONSOLE_TIMEOUT,
    )
    .expect("console");
    let old_slide = hex(&field(&record, "AVM-MONVM ", 0, "slide"));
    let link_text = profile_of(&record).symbols.text;
    assert_eq!(
        kallsyms_text(&mut console),
        link_text.wrapping_add(old_slide)
    );
    let events_before = avm_events(&record).len();
    // Watched long enough for the A-VM to learn the kernel's tick rate,
    // so that the kernel left behind is also held to that clock (which a
    // real reboot's must never match: it stopped).
    std::thread::sleep(Duration::from_micros(
        vmi::linux::liveness::RATE_SPAN_US + 1_000_000,
    ));

    // Reboot from the console: the shell never answers.
    let _ = console.run_timeout("reboot -f", Duration::from_secs(2));
    drop(console);
    let rebooted_at = Instant::now();
    wait_for_lines(&record, "AVM-MONVM-REBOOT", 1);

    // Attestation answers while the Mon-VM boots.
    let addr = node.attest_addr().expect("an attestation address");
    let nonce = common::random_bytes(32);
    let (_, evidence) =
        common::client::hello_and_challenge(addr, &nonce, avm_attest::pcr::PcrMask::FIRMWARE)
            .expect("attestation during the Mon-VM's reboot");
    assert!(!evidence.pcrs.is_empty());

    wait_for_lines(&record, "AVM-MONVM-STARTUP", 2);
    eprintln!(
        "{series}: reboot to second start-up {:?}; {}",
        rebooted_at.elapsed(),
        serial(&record)
            .lines()
            .filter(|l| l.starts_with("AVM-MONVM"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let new_slide = hex(&field(&record, "AVM-MONVM ", 1, "slide"));
    let reboot_old = hex(&field(&record, "AVM-MONVM-REBOOT", 0, "old_slide"));
    let reboot_new = hex(&field(&record, "AVM-MONVM-REBOOT", 0, "new_slide"));
    assert_eq!((reboot_old, reboot_new), (old_slide, new_slide));
    // Debian's 250 Hz, learnt within a tenth.
    let rate: u64 = field(&record, "AVM-MONVM-REBOOT", 0, "tick_rate")
        .parse()
        .expect("a rate");
    assert!((225..=275).contains(&rate), "{series}: tick rate {rate}");
    let old_phys = hex(&field(&record, "AVM-MONVM ", 0, "phys_text"));
    let new_phys = hex(&field(&record, "AVM-MONVM ", 1, "phys_text"));
    assert!(
        (old_slide, old_phys) != (new_slide, new_phys),
        "the same placement after the reboot"
    );

    // Reads of the kernel left behind every 500 ms: one on its old clock
    // three times in a row would be on record by now.
    std::thread::sleep(Duration::from_secs(3));
    // No reboot event before this one.
    assert!(
        !avm_events(&record)[..events_before]
            .iter()
            .any(|e| e.contains(":reboot:"))
    );
    assert_reboot_event(
        &record,
        events_before,
        &format!("slide {old_slide:#x}->{new_slide:#x}"),
        1,
    );

    // The Mon-VM agrees where its kernel is now.
    let mut console = MonVmConsole::connect(
        record.monvm_console.as_ref().expect("a console"),
        CONSOLE_TIMEOUT,
    )
    .expect("console after the reboot");
    assert_eq!(
        kallsyms_text(&mut console),
        link_text.wrapping_add(new_slide)
    );

    // A text write after the reboot is still detected (a byte of the
    // kexec_load handler, which nothing calls; put back by the guard).
    let profile = profile_of(&record);
    let byte = unused_text_offset(&profile, 16).expect("a byte outside every site");
    let chunk = link_text + byte / 4096 * 4096;
    let patch = MonVmPatch::kernel(&record, |_| link_text + byte, |b, _| vec![b[0] ^ 0xff], 1);
    wait_for_avm_serial(&record, &format!(":violation:text:chunk:{chunk:#x}"));
    patch.restore();
    wait_for_avm_serial(&record, ":clean:text");

    // The tick count back by 250 (a second at Debian's HZ): a kernel
    // booted again in place. Left as written: the Mon-VM counts on from it.
    let events_before = avm_events(&record).len();
    MonVmPatch::kernel(
        &record,
        |p| p.symbols.jiffies_64,
        |b, _| {
            let now = u64::from_le_bytes(b.try_into().expect("8 bytes"));
            now.saturating_sub(250).to_le_bytes().to_vec()
        },
        8,
    )
    .keep();
    wait_for_lines(&record, "AVM-MONVM-REBOOT", 2);
    wait_for_lines(&record, "AVM-MONVM-STARTUP", 3);
    let reboot_old = hex(&field(&record, "AVM-MONVM-REBOOT", 1, "old_slide"));
    let reboot_new = hex(&field(&record, "AVM-MONVM-REBOOT", 1, "new_slide"));
    assert_eq!((reboot_old, reboot_new), (new_slide, new_slide));
    assert_eq!(
        hex(&field(&record, "AVM-MONVM ", 2, "phys_text")),
        new_phys,
        "measured again where it was"
    );
    assert_reboot_event(
        &record,
        events_before,
        &format!("slide {new_slide:#x}->{new_slide:#x}, in place"),
        2,
    );
}

/// The first event after the first `events_before` events: a reboot event
/// (nothing before it), numbered on from them, `reboot:DETAIL` (`, N changes held` may follow when the
/// new kernel overwrote the old one before the A-VM found it,
/// docs/monitoring.md), followed by one event only: the new boot measured
/// (`remeasured:slide S, phys P`, S and P as `AVM-MONVM ` line `boot`
/// says), which starts clean.
fn assert_reboot_event(
    record: &avm_qemu::NodeRecord,
    events_before: usize,
    detail: &str,
    boot: usize,
) {
    let events = avm_events(record);
    let reboot = events[events_before..]
        .iter()
        .position(|e| e.contains(":reboot:"))
        .map(|i| i + events_before)
        .expect("a reboot event");
    // Nothing before it: what the new kernel overwrote of the old one
    // while it booted is no attack (held back until the reboot is found).
    assert_eq!(
        &events[events_before..reboot],
        &[] as &[String],
        "events before the reboot"
    );
    let name = events[reboot].split(" at_us=").next().expect("name");
    let expected = format!("monvm:event:{}:reboot:{detail}", reboot + 1);
    assert!(
        name == expected || name.starts_with(&format!("{expected}, ")),
        "{name}"
    );
    let remeasured = format!(
        "monvm:event:{}:remeasured:slide {}, phys {}",
        reboot + 2,
        field(record, "AVM-MONVM ", boot, "slide"),
        field(record, "AVM-MONVM ", boot, "phys_text")
    );
    let after: Vec<&str> = events[reboot + 1..]
        .iter()
        .map(|e| e.split(" at_us=").next().expect("name"))
        .collect();
    assert_eq!(after, [remeasured.as_str()], "events after the reboot");
}
