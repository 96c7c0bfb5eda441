//! The Mon-VM, for both Debian kernels: a node comes up with a stock kernel
//! booted with KASLR on, a busybox userland on an ext4 root that the
//! kernel's own IMA measures, a console that runs commands, and its RAM in
//! a shared memory file whose layout (also above the PCI hole) matches what
//! the guest reports; the A-VM still boots and serves attestation with the
//! RAM file attached; `down`, a dropped node and a failed `up` leave no
//! process and no RAM file behind.
//!
//! Each Mon-VM costs a few seconds of TCG boot: the boots here run one at a
//! time, and each test checks everything it can on one node.

mod common;

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use avm_qemu::NodeRecord;
use avm_qemu::monvm::{self, MonVmConsole, rootfs};
use avm_qemu::placement;
use avm_qemu::process::is_running;
use common::client::Client;
use common::{avm_qemu, status_json};
use vmi::RamLayout;

/// Bound on connecting to the console (the shell is up once `up` returned).
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `_text` of an x86-64 kernel that was not randomised.
const UNRANDOMISED_TEXT: u64 = 0xffff_ffff_8100_0000;
/// Physical load address of a kernel that was not randomised.
const UNRANDOMISED_PHYS: u64 = 0x100_0000;
const FOUR_GIB: u64 = 1 << 32;

static BOOTS: Mutex<()> = Mutex::new(());

/// Serialises the tests that boot Mon-VMs (2 shared cores).
fn one_boot_at_a_time() -> MutexGuard<'static, ()> {
    BOOTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `down` when dropped, so a failing assertion does not leave the
/// detached VMs, swtpm and the RAM file behind.
struct DownOnDrop<'a>(&'a str);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        let _ = avm_qemu(&["down", "--state", self.0]);
    }
}

/// A file `make deps` wrote for a kernel series (`release`, `version`).
fn cache_meta(series: &str, name: &str) -> String {
    let path = monvm::kernel::default_cache_dir().join(series).join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err}: run `make deps`", path.display()))
        .trim()
        .to_owned()
}

/// `[start, end)` of every /proc/iomem line labelled `label`.
fn iomem_ranges(iomem: &str, label: &str) -> Vec<(u64, u64)> {
    iomem
        .lines()
        .filter_map(|line| {
            let (range, name) = line.split_once(" : ")?;
            if name.trim() != label {
                return None;
            }
            let (start, end) = range.trim().split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            Some((start, end + 1))
        })
        .collect()
}

/// The IMA list's `(template, digest, path)` for every entry.
fn ima_entries(list: &str) -> Vec<(String, String, String)> {
    list.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((
                (*fields.get(2)?).to_owned(),
                (*fields.get(3)?).to_owned(),
                (*fields.get(4)?).to_owned(),
            ))
        })
        .collect()
}

/// Runs `command` on the Mon-VM's console; it must succeed.
fn sh(console: &mut MonVmConsole, command: &str) -> String {
    console
        .run_ok(command)
        .unwrap_or_else(|err| panic!("`{command}` on the Mon-VM: {err}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    avm_qemu::hex::encode(&avm_qemu::measure::sha256(bytes))
}

/// Asserts an IMA entry for `path` with `sha256:<digest>` (when given) and
/// a template the Debian kernels use.
fn assert_measured(list: &str, path: &str, digest: Option<&str>) {
    let entries = ima_entries(list);
    let entry = entries
        .iter()
        .find(|(_, _, p)| p == path)
        .unwrap_or_else(|| panic!("no IMA entry for {path}:\n{list}"));
    assert!(
        entry.0 == "ima-sig" || entry.0 == "ima-ng",
        "template {}",
        entry.0
    );
    if let Some(digest) = digest {
        assert_eq!(entry.1, format!("sha256:{digest}"), "{path}");
    }
}

/// Puts a marker string in a process's environment in the guest, finds its
/// guest-physical address through /proc/PID/pagemap, and checks that the
/// RAM file holds the marker where `layout` says that address lives.
/// Returns the physical address.
fn marker_lands_where_the_layout_says(
    console: &mut MonVmConsole,
    ram: &Path,
    layout: &RamLayout,
    tag: u32,
) -> u64 {
    let marker = format!(
        "AVMMARK={}",
        avm_qemu::hex::encode(&common::random_bytes(12))
    );
    let pid = sh(console, &format!("env -i {marker} sleep 600 & echo $!"));
    let pid: u32 = pid.trim().parse().expect("pid of the marker process");
    let out = sh(
        console,
        &format!(
            "set -- $(cat /proc/{pid}/stat); shift 49; echo $1; \
             dd if=/proc/{pid}/pagemap bs=8 skip=$(($1 / 4096)) count=1 2>/dev/null | od -An -tx8"
        ),
    );
    let mut lines = out.lines();
    let env_start: u64 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("env_start in {out:?}"));
    let entry = lines
        .next()
        .and_then(|l| u64::from_str_radix(l.trim(), 16).ok())
        .unwrap_or_else(|| panic!("pagemap entry in {out:?}"));
    assert_ne!(entry >> 63, 0, "marker page {tag} not present: {entry:#x}");
    let pfn = entry & ((1 << 55) - 1);
    let phys = pfn * 4096 + (env_start & 0xfff);
    let (offset, run) = layout
        .locate(vmi::GuestPhysAddr(phys))
        .unwrap_or_else(|| panic!("{phys:#x} is not in the reported layout {layout}"));
    let len = (marker.len() as u64)
        .min(4096 - (env_start & 0xfff))
        .min(run);
    let mut file = std::fs::File::open(ram).expect("opening the RAM file");
    file.seek(SeekFrom::Start(offset))
        .expect("seeking in the RAM file");
    let mut found = vec![0u8; len as usize];
    file.read_exact(&mut found).expect("reading the RAM file");
    // Killed only now: its freed page could be reused before the read.
    sh(console, &format!("kill {pid}"));
    assert_eq!(
        found,
        &marker.as_bytes()[..len as usize],
        "RAM file offset {offset:#x} (guest-physical {phys:#x}) does not hold the marker"
    );
    phys
}

/// Everything checked on a running node with a Mon-VM of `series`;
/// returns the reported layout.
/// The A-VM's `AVM-MONVM key=value ...` survey line, waited for.
fn avm_survey(record: &NodeRecord) -> std::collections::BTreeMap<String, String> {
    avm_line(record, "AVM-MONVM ")
}

/// The A-VM's first serial line starting with `prefix`, as key=value pairs.
fn avm_line(record: &NodeRecord, prefix: &str) -> std::collections::BTreeMap<String, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let serial = std::fs::read_to_string(&record.avm_serial).unwrap_or_default();
        if let Some(line) = serial.lines().find(|l| l.starts_with(prefix)) {
            return line
                .split_whitespace()
                .skip(1)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the A-VM never printed {prefix:?}:\n{serial}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn hex_field(survey: &std::collections::BTreeMap<String, String>, key: &str) -> u64 {
    survey
        .get(key)
        .and_then(|v| v.strip_prefix("0x"))
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .unwrap_or_else(|| panic!("{key} in {survey:?}"))
}

/// A count of the survey line, which must be a complete walk.
fn count_field(survey: &std::collections::BTreeMap<String, String>, key: &str) -> usize {
    let value = survey
        .get(key)
        .unwrap_or_else(|| panic!("{key} in {survey:?}"));
    assert!(!value.ends_with("+broken"), "{key} walk broke: {survey:?}");
    value
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {survey:?}"))
}

fn check_node(record: &NodeRecord, series: &str) -> RamLayout {
    let release = cache_meta(series, "release");
    assert_eq!(record.monvm_kernel, Some(cache_meta(series, "version")));
    assert_eq!(
        record.monvm_kernel_release.as_deref(),
        Some(release.as_str())
    );
    assert_eq!(record.monvm_series.as_deref(), Some(series));
    let ready_ms = record.monvm_ready_ms.expect("ready time recorded");
    eprintln!("Mon-VM {series}: QEMU start to ready line {ready_ms} ms");

    // The RAM file: where and how big the record says, layout consistent.
    let ram = record.monvm_ram.clone().expect("monvm_ram");
    assert!(ram.starts_with("/dev/shm"), "{}", ram.display());
    let ram_bytes = record.monvm_ram_mib.expect("monvm_ram_mib") << 20;
    assert_eq!(
        std::fs::metadata(&ram).expect("the RAM file exists").len(),
        ram_bytes
    );
    let layout = RamLayout::parse_cmdline(record.monvm_ram_layout.as_deref().expect("layout"))
        .expect("the recorded layout parses");
    assert_eq!(Ok(layout), RamLayout::qemu_pc(ram_bytes));

    let socket = record.monvm_console.clone().expect("monvm_console");
    let mut console =
        MonVmConsole::connect(&socket, CONSOLE_TIMEOUT).expect("connecting to the console");
    assert_eq!(sh(&mut console, "uname -r").trim(), release);
    let cmdline = sh(&mut console, "cat /proc/cmdline");
    assert!(!cmdline.contains("nokaslr"), "{cmdline}");
    assert!(cmdline.contains("ima_policy=tcb"), "{cmdline}");
    let failed = console.run("cat /nonexistent").expect("a failing command");
    assert_ne!(failed.status, 0);
    assert!(failed.output.contains("No such file"), "{failed:?}");

    // KASLR: the kernel is neither at its link address nor at its default
    // physical address (either alone could coincide by chance).
    let text = sh(&mut console, "grep ' _text$' /proc/kallsyms");
    let text = text
        .split_whitespace()
        .next()
        .and_then(|a| u64::from_str_radix(a, 16).ok())
        .unwrap_or_else(|| panic!("_text in {text:?}"));
    let iomem = sh(&mut console, "cat /proc/iomem");
    let kernel_code = iomem_ranges(&iomem, "Kernel code");
    let phys = kernel_code.first().expect("Kernel code in /proc/iomem").0;
    eprintln!("Mon-VM {series}: _text {text:#x} at physical {phys:#x}");
    assert_ne!(text, 0, "kallsyms addresses hidden");
    assert!(
        text != UNRANDOMISED_TEXT || phys != UNRANDOMISED_PHYS,
        "kernel not randomised: _text {text:#x}, physical {phys:#x}"
    );

    // Every System RAM range the guest sees lies inside the layout.
    let system_ram = iomem_ranges(&iomem, "System RAM");
    assert!(!system_ram.is_empty(), "{iomem}");
    for (start, end) in &system_ram {
        assert!(
            layout.contains(vmi::GuestPhysAddr(*start), end - start),
            "System RAM {start:#x}-{end:#x} outside the layout {layout}"
        );
    }
    assert!(layout.contains(vmi::GuestPhysAddr(phys), 4096));
    marker_lands_where_the_layout_says(&mut console, &ram, &layout, 0);

    // The A-VM found the same kernel from the RAM alone (its profile came
    // as a boot module and went into PCR 8 first): release, load address
    // and slide as the guest reports them, and its lists as the guest has
    // them (the survey ran at the A-VM's boot; the tasks spawned since by
    // this console count at most a few).
    let survey = avm_survey(record);
    eprintln!("Mon-VM {series}: A-VM survey {survey:?}");
    assert_eq!(survey.get("release"), Some(&release));
    assert_eq!(hex_field(&survey, "phys_text"), phys);
    assert_eq!(
        hex_field(&survey, "slide"),
        text.wrapping_sub(UNRANDOMISED_TEXT)
    );
    let modules = sh(&mut console, "cat /proc/modules").lines().count();
    assert_eq!(count_field(&survey, "modules"), modules);
    // The task list starts with init_task (pid 0), which /proc does not show.
    // Listed by the shell's glob alone: `ls` fails on a process that ended
    // after the glob was expanded (one did, during boot).
    let processes = sh(&mut console, "echo /proc/[0-9]*")
        .split_whitespace()
        .count();
    let tasks = count_field(&survey, "tasks");
    assert!(
        tasks > 10 && (tasks - 1).abs_diff(processes) <= 4,
        "A-VM saw {tasks} tasks, the guest lists {processes} processes"
    );
    let ima_now = sh(
        &mut console,
        "cat /sys/kernel/security/ima/ascii_runtime_measurements",
    )
    .lines()
    .count();
    let ima = count_field(&survey, "ima");
    assert!(
        ima > 0 && ima <= ima_now,
        "A-VM saw {ima} IMA entries, the guest has {ima_now}"
    );

    // Those entries are anchored in the A-VM's TPM as IMA would: replaying
    // the guest's own binary list (its first `ima` records) gives the
    // A-VM's PCR 10.
    let anchoring = avm_line(record, "AVM-MONVM-IMA ");
    assert_eq!(count_field(&anchoring, "anchored"), ima, "{anchoring:?}");
    assert_eq!(count_field(&anchoring, "inconsistent"), 0, "{anchoring:?}");
    let dump = sh(
        &mut console,
        "od -An -v -tx1 /sys/kernel/security/ima/binary_runtime_measurements",
    );
    let binary: Vec<u8> = dump
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("od prints hex bytes"))
        .collect();
    let records = avm_attest::ima::parse_list(&binary, 100_000).expect("the guest's list parses");
    assert!(records.len() >= ima);
    assert!(records.iter().all(|r| r.template_hash_matches()));
    let pcrs = avm_attest::ima::replay_sha256(&records[..ima], &[[0; 32]; 24]);
    assert_eq!(
        anchoring.get("pcr10").map(String::as_str),
        Some(avm_qemu::hex::encode(&pcrs[10]).as_str()),
        "the A-VM's PCR 10 is not the replay of the guest's first {ima} IMA records"
    );

    // A program that appears later is measured by the guest's IMA, and
    // the A-VM anchors the new entry as it appears (no violation: the
    // entries anchored before are unchanged).
    sh(
        &mut console,
        "printf '#!/bin/sh\\necho later\\n' > /usr/bin/avm-later && chmod +x /usr/bin/avm-later",
    );
    assert_eq!(sh(&mut console, "/usr/bin/avm-later").trim(), "later");
    let later = avm_line(record, "AVM-MONVM-IMA-NEW ");
    assert!(count_field(&later, "anchored") >= 1, "{later:?}");
    let serial = std::fs::read_to_string(&record.avm_serial).expect("the A-VM serial log");
    assert!(
        !serial.contains(":violation:ima"),
        "a false IMA violation:\n{serial}"
    );

    // 600 entries at once (one `cat` as root opens 600 files of the
    // measured root filesystem): the A-VM takes at most 256 a round, and
    // catches up in the rounds right after, with no false alarm (no
    // process is judged unmeasured on a list taken only in part).
    let seen = |serial: &str| -> Vec<(usize, usize)> {
        serial
            .lines()
            .filter(|l| l.starts_with("AVM-MONVM-IMA-NEW "))
            .map(|l| {
                let field = |key: &str| {
                    l.split_whitespace()
                        .find_map(|kv| kv.strip_prefix(key))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| panic!("{key} in {l:?}"))
                };
                (field("anchored="), field("total_seen="))
            })
            .collect()
    };
    let total_before = seen(&serial).last().map_or(0, |&(_, total)| total);
    sh(
        &mut console,
        "mkdir -p /var/avm-many && for i in $(seq 600); do echo $i > /var/avm-many/$i; done && cat /var/avm-many/* > /dev/null",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let rounds = loop {
        let serial = std::fs::read_to_string(&record.avm_serial).expect("the A-VM serial log");
        let rounds = seen(&serial);
        if rounds
            .last()
            .is_some_and(|&(_, total)| total >= total_before + 600)
        {
            assert!(
                !serial.contains(":violation:"),
                "{series}: a false alarm while catching up:\n{serial}"
            );
            break rounds;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series}: the 600 entries were never all anchored: {rounds:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        rounds.iter().all(|&(anchored, _)| anchored <= 256),
        "{series}: more than 256 entries in a round: {rounds:?}"
    );
    assert!(
        rounds.iter().any(|&(anchored, _)| anchored == 256),
        "{series}: the 600 entries never filled a round: {rounds:?}"
    );
    // A round reads 128 known entries again, in turn: one far down the
    // list, rewritten, is found within a few rounds, stays reported while
    // it is rewritten (no "clean" in the rounds that do not read it) and
    // is clean once it reads as it was.
    let index = total_before + 500;
    let rewritten = avm_qemu::testing::MonVmPatch::ima_template_hash(record, index);
    let found = format!(":violation:ima:entry {index} rewritten");
    avm_qemu::testing::wait_for_avm_serial(record, &found);
    std::thread::sleep(Duration::from_secs(3));
    let serial = std::fs::read_to_string(&record.avm_serial).expect("the A-VM serial log");
    let after = &serial[serial.find(&found).expect("the violation")..];
    assert!(
        !after.contains(":clean:ima"),
        "{series}: the rewritten entry was reported clean while rewritten:\n{after}"
    );
    let seen_before = serial.len();
    rewritten.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let serial = std::fs::read_to_string(&record.avm_serial).expect("the A-VM serial log");
        if serial
            .get(seen_before..)
            .is_some_and(|s| s.contains(":clean:ima"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series}: entry {index} was never clean again after its restore"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every symbol the A-VM uses, and every system-call handler, is where
    // the profile says (plus the slide) in the running guest's kallsyms.
    let profile = vmi::profile::KernelProfile::decode(
        &std::fs::read(record.monvm_profile.as_ref().expect("a profile")).expect("profile"),
    )
    .expect("the node's profile decodes");
    let slide = text.wrapping_sub(UNRANDOMISED_TEXT);
    // Every symbol of the profile (so a new one is compared too), the
    // system-call handlers and the patch-site targets.
    let names: Vec<&str> = profile
        .symbols
        .named()
        .iter()
        .map(|(name, _)| *name)
        .chain([
            "__x64_sys_[a-z0-9_]+",
            "__x86_return_thunk",
            "__fentry__",
            "ftrace_caller",
            "ftrace_regs_caller",
        ])
        .collect();
    let kallsyms = sh(
        &mut console,
        &format!("grep -E ' ({})$' /proc/kallsyms", names.join("|")),
    );
    let guest: std::collections::BTreeMap<&str, u64> = kallsyms
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let address = u64::from_str_radix(parts.next()?, 16).ok()?;
            let name = parts.nth(1)?;
            Some((name, address))
        })
        .collect();
    let mut compared = 0;
    for (name, link) in profile.symbols.named() {
        let (Some(link), Some(running)) = (link, guest.get(name)) else {
            // 6.1 does not list kallsyms_relative_base (the profile takes it
            // from the table's location), and some kernels lack a symbol.
            assert!(
                name == "kallsyms_relative_base"
                    || name == "pgdir_shift"
                    || name == "ia32_sys_call",
                "{name} missing from the guest's kallsyms"
            );
            continue;
        };
        assert_eq!(*running, link.wrapping_add(slide), "{name}");
        compared += 1;
    }
    for slot in &profile.syscalls.slots {
        if let Some(running) = guest.get(slot.name.as_str()) {
            assert_eq!(*running, slot.address.wrapping_add(slide), "{}", slot.name);
            compared += 1;
        }
    }
    // The text reference's return thunk and fentry targets (offsets from
    // _text) too.
    let reference = profile.text_reference.as_ref().expect("a text reference");
    for (name, list) in [
        ("__x86_return_thunk", &reference.return_thunks),
        ("__fentry__", &reference.fentry_targets),
        ("ftrace_caller", &reference.fentry_targets),
        ("ftrace_regs_caller", &reference.fentry_targets),
    ] {
        let running = guest
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the guest's kallsyms"));
        let offset = running.wrapping_sub(text) as u32;
        assert!(
            list.contains(&offset),
            "{name} at _text+{offset:#x} not in the profile"
        );
        compared += 1;
    }
    eprintln!("Mon-VM {series}: {compared} profile symbols equal the guest's kallsyms");
    assert!(compared > 300, "only {compared} symbols compared");
    let serial = std::fs::read_to_string(&record.avm_serial).expect("the A-VM serial log");
    let profile_sha = record
        .monvm_profile_sha256
        .as_deref()
        .expect("a profile was handed over");
    assert!(
        serial.contains(&format!("sha256 {profile_sha} measured into PCR 8")),
        "the A-VM did not measure the profile it was given"
    );

    // Programs run, modules load; IMA measures each, with its digest.
    assert_eq!(
        sh(&mut console, rootfs::HELLO_PATH).trim(),
        rootfs::HELLO_OUTPUT
    );
    let module = record
        .monvm_modules
        .first()
        .expect("modules on the root")
        .clone();
    let name = Path::new(&module)
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("module file name")
        .to_owned();
    sh(&mut console, &format!("insmod {module}"));
    assert!(sh(&mut console, "lsmod").contains(&name));
    sh(&mut console, &format!("rmmod {name}"));
    let list = sh(
        &mut console,
        "cat /sys/kernel/security/ima/ascii_runtime_measurements",
    );
    let busybox = rootfs::find_busybox().expect("busybox-static");
    let busybox = std::fs::read(busybox).expect("reading busybox");
    assert_measured(&list, "/bin/busybox", Some(&sha256_hex(&busybox)));
    assert_measured(
        &list,
        "/sbin/init",
        Some(&sha256_hex(rootfs::init_script().as_bytes())),
    );
    assert_measured(
        &list,
        rootfs::HELLO_PATH,
        Some(&sha256_hex(rootfs::hello_script().as_bytes())),
    );
    assert_measured(&list, &module, None);
    drop(console);

    // The A-VM booted with the RAM file attached and the layout on its
    // command line, and answers on its attestation address.
    let serial = std::fs::read_to_string(&record.avm_serial).expect("the A-VM serial log");
    assert!(
        serial.contains(&format!("monvm.ram={layout}")),
        "the A-VM's command line lacks the layout"
    );
    let addr = record.attest_addr.as_deref().expect("attest_addr");
    let hello = Client::connect(addr.parse().expect("attest_addr is host:port"))
        .and_then(|mut client| client.hello())
        .expect("Hello from the A-VM");
    assert_eq!(
        record.ek_name_ecc_p256.as_deref(),
        Some(avm_qemu::hex::encode(&hello.ek.name).as_str())
    );
    layout
}

/// `avm-qemu up` starts the 6.1 Mon-VM by default; status names it;
/// `--cpus split` puts every thread of the A-VM's QEMU and swtpm on the
/// last CPU and the Mon-VM's QEMU on the others; down stops everything and
/// removes the RAM file.
#[test]
fn cli_up_starts_the_default_6_1_mon_vm_and_down_removes_it() {
    let _boot = one_boot_at_a_time();
    let image = avm_qemu::testing::avm_image();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let _cleanup = DownOnDrop(state);
    let up = avm_qemu(&[
        "up",
        "--state",
        state,
        "--image",
        image.to_str().unwrap(),
        "--accel",
        "tcg",
        "--timeout",
        "120",
        "--cpus",
        "split",
    ]);
    assert!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let status = status_json(state);
    assert_eq!(status["running"], true);
    assert_eq!(status["monvm_series"], monvm::kernel::DEFAULT_SERIES);
    let pid = |field: &str| status[field].as_u64().expect("a pid") as u32;
    match placement::CpuSplit::of(&placement::allowed_cpus(None).unwrap()) {
        Some(split) => {
            assert_eq!(status["cpu_split"], split.describe());
            for (field, cpus) in [
                ("qemu_pid", &split.avm),
                ("swtpm_pid", &split.avm),
                ("monvm_pid", &split.monvm),
            ] {
                let threads = placement::threads_of(pid(field)).unwrap();
                // A thread may exit between the listing and the look.
                let placed: Vec<Vec<usize>> = threads
                    .iter()
                    .filter_map(|&tid| placement::allowed_cpus(Some(tid)).ok())
                    .collect();
                assert!(!placed.is_empty(), "{field}: no threads");
                assert!(placed.iter().all(|c| c == cpus), "{field}: {placed:?}");
            }
        }
        None => assert!(status["cpu_split"].is_null(), "one CPU: {status}"),
    }
    assert_eq!(status["monvm_kernel"], cache_meta("6.1", "version"));
    for field in ["monvm_ram", "monvm_console", "monvm_ram_layout"] {
        assert!(status[field].is_string(), "{field} in {status}");
    }
    let record: NodeRecord = serde_json::from_value(status.clone()).unwrap();
    check_node(&record, "6.1");

    let ram = record.monvm_ram.clone().unwrap();
    let pids = [record.qemu_pid, record.monvm_pid, record.swtpm_pid].map(Option::unwrap);
    let down = avm_qemu(&["down", "--state", state]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    for pid in pids {
        assert!(!is_running(pid), "process {pid} still running after down");
    }
    assert!(!ram.exists(), "{} left behind", ram.display());
    assert_eq!(status_json(state)["running"], false);
}

/// A library node with the 6.12 Mon-VM; dropping it cleans up.
#[test]
fn node_with_the_6_12_mon_vm() {
    let _boot = one_boot_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let node = avm_qemu::testing::monvm_node(dir.path(), "6.12", 256);
    let record = node.record().clone();
    let monvm = node.monvm().expect("a Mon-VM");
    assert_eq!(monvm.pid(), record.monvm_pid.unwrap());
    check_node(&record, "6.12");
    // A command that ends the shell is reported; init starts a new one.
    let mut console = node.monvm_console(CONSOLE_TIMEOUT).unwrap();
    let err = console.run("exit 3").unwrap_err();
    assert!(
        matches!(err, avm_qemu::monvm::ConsoleError::ShellRestarted { .. }),
        "{err}"
    );
    assert_eq!(sh(&mut console, "echo again"), "again\n");
    drop(console);
    let ram = record.monvm_ram.clone().unwrap();
    let pids = [node.qemu_pid(), monvm.pid()];
    drop(node);
    for pid in pids {
        assert!(!is_running(pid), "process {pid} survived the node");
    }
    assert!(!ram.exists(), "{} left behind", ram.display());
}

/// 4 GiB on `pc`: RAM above 3 GiB moves above 4 GiB, at file offset
/// phys - 1 GiB. The guest's own view (/proc/iomem, page frames of a
/// process) agrees with the layout the launcher reports, the high region
/// included.
#[test]
fn ram_above_the_pci_hole() {
    let _boot = one_boot_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let node = avm_qemu::testing::monvm_node(dir.path(), "6.1", 4096);
    let record = node.record().clone();
    let layout = check_node(&record, "6.1");
    assert_eq!(
        layout.to_string(),
        "0x0-0xc0000000@0x0,0x100000000-0x140000000@0xc0000000"
    );
    let mut console = node.monvm_console(CONSOLE_TIMEOUT).unwrap();
    let iomem = sh(&mut console, "cat /proc/iomem");
    let system_ram = iomem_ranges(&iomem, "System RAM");
    assert!(
        system_ram
            .iter()
            .any(|&(start, end)| start == FOUR_GIB && end == 0x1_4000_0000),
        "no System RAM at 4G-5G: {system_ram:x?}"
    );
    // User pages come from ZONE_NORMAL (above 4 GiB here) first; a few
    // tries make a low one vanishingly unlikely.
    let ram = record.monvm_ram.clone().unwrap();
    let high = (1..=8).find_map(|tag| {
        let phys = marker_lands_where_the_layout_says(&mut console, &ram, &layout, tag);
        (phys >= FOUR_GIB).then_some(phys)
    });
    let high = high.expect("no marker page above 4 GiB");
    eprintln!(
        "marker at guest-physical {high:#x} found at file offset {:#x}",
        high - (1 << 30)
    );
}

/// Bad requests fail before anything starts; an `up` that fails after the
/// Mon-VM started leaves no process and no RAM file behind.
#[test]
fn failures_leave_nothing_behind() {
    let image = avm_qemu::testing::avm_image();
    let image = image.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node");
    let state = state.to_str().unwrap();
    let ram_dir = dir.path().join("shm");
    std::fs::create_dir(&ram_dir).unwrap();
    let ram_dir = ram_dir.to_str().unwrap();
    let _cleanup = DownOnDrop(state);
    let up = |extra: &[&str]| {
        let mut args = vec![
            "up",
            "--state",
            state,
            "--image",
            image,
            "--accel",
            "tcg",
            "--monvm-ram-dir",
            ram_dir,
        ];
        args.extend_from_slice(extra);
        let output = avm_qemu(&args);
        assert!(!output.status.success(), "up {extra:?} succeeded");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let nowhere = dir.path().join("no-such-vmlinuz");
    for (extra, expected) in [
        (
            vec!["--monvm-kernel", nowhere.to_str().unwrap()],
            "not found",
        ),
        (vec!["--monvm-ram", "3000"], "power of two"),
        (vec!["--monvm-ram", "lots"], "is not a size"),
        (vec!["--monvm-cmdline", "quiet nokaslr"], "nokaslr"),
        (
            vec!["--no-monvm", "--monvm-kernel", "6.12"],
            "cannot be used with",
        ),
    ] {
        let stderr = up(&extra);
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
    }
    let empty_cache = dir.path().join("cache");
    let output = Command::new(env!("CARGO_BIN_EXE_avm-qemu"))
        .args(["up", "--state", state, "--image", image, "--accel", "tcg"])
        .args(["--monvm-ram-dir", ram_dir])
        .env(monvm::kernel::CACHE_ENV, &empty_cache)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("run `make deps`"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Both VMs start, but nothing can be ready within a second.
    let _boot = one_boot_at_a_time();
    let stderr = up(&["--timeout", "1"]);
    assert!(
        stderr.contains("within") || stderr.contains("ready"),
        "{stderr}"
    );
    let left: Vec<PathBuf> = std::fs::read_dir(ram_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(left.is_empty(), "RAM files left: {left:?}");
    let record: NodeRecord =
        serde_json::from_value(status_json(state)).expect("the failed node's record");
    assert!(record.monvm_ram.is_some(), "the Mon-VM was not started");
    for pid in [record.qemu_pid, record.monvm_pid, record.swtpm_pid]
        .into_iter()
        .flatten()
    {
        assert!(!is_running(pid), "process {pid} left running");
    }
}
