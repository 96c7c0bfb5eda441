//! Helpers for this workspace's integration tests (here and in
//! avm-verifier), so every test finds the image and boots a node the same
//! way. They panic with the reason instead of returning errors: a missing
//! image or a node that does not come up is a test failure, never a skip.
//! Nodes have no Mon-VM unless a test asks for one ([`monvm_node`]): a
//! Mon-VM costs seconds of boot under TCG.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::monvm::{KernelChoice, MonVmConfig};
use crate::qemu::Accel;
use crate::ram_patch::{MonVmRam, RamPatch, redirect_getpid_slot, rewrite_ima_template_hash};
use crate::{Node, NodeConfig};

/// Bound on a node's boot plus network bring-up (TCG on a busy 2-core host).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The A-VM kernel image under test: `$AVM_IMAGE`, else `build/avm.elf` in
/// the workspace.
pub fn avm_image() -> PathBuf {
    let path = std::env::var_os("AVM_IMAGE").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/avm.elf"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "A-VM image {} not found: run `make build` first (or set AVM_IMAGE)",
        path.display()
    );
    path
}

/// A node of `image` with its state in `dir`, under TCG (tests do not
/// depend on the KVM probe).
pub fn tcg_config_with(dir: &Path, image: &Path) -> NodeConfig {
    let mut config = NodeConfig::new(dir, image);
    config.accel = Some(Accel::Tcg);
    config
}

/// [`tcg_config_with`] the image under test.
pub fn tcg_config(dir: &Path) -> NodeConfig {
    tcg_config_with(dir, &avm_image())
}

/// A node booted from `image` in `dir` under TCG, its attestation server
/// forwarded from a free loopback port; QEMU and swtpm are stopped when the
/// returned `Node` is dropped.
pub fn network_node_with(dir: &Path, image: &Path) -> Node {
    Node::up_on_free_port(&tcg_config_with(dir, image), BOOT_TIMEOUT)
        .unwrap_or_else(|err| panic!("node did not come up: {err}"))
}

/// [`network_node_with`] the image under test.
pub fn network_node(dir: &Path) -> Node {
    network_node_with(dir, &avm_image())
}

/// The Mon-VM kernel series the tests boot (`make deps` fetches both).
pub const MONVM_SERIES: [&str; 2] = crate::monvm::kernel::SERIES;

/// A Mon-VM of kernel `series` with `ram_mib` MiB, after checking that
/// `make deps` fetched the kernel.
pub fn monvm_config(series: &str, ram_mib: u64) -> MonVmConfig {
    let mut config = MonVmConfig::new(KernelChoice::Series(series.to_owned()));
    config.ram_mib = ram_mib;
    let vmlinuz = config.cache_dir.join(series).join("vmlinuz");
    assert!(
        vmlinuz.is_file(),
        "Mon-VM kernel {} not found: run `make deps` first",
        vmlinuz.display()
    );
    config
}

/// [`network_node`] with a Mon-VM of kernel `series` and `ram_mib` MiB;
/// returns once the A-VM's attestation server is up and the Mon-VM's
/// userland is ready. Dropping the node stops both VMs and swtpm and
/// removes the Mon-VM's RAM file.
pub fn monvm_node(dir: &Path, series: &str, ram_mib: u64) -> Node {
    monvm_node_and(dir, series, ram_mib, |_| {})
}

/// [`monvm_node`] whose configuration `configure` changed first (more
/// files in the Mon-VM's root, a monitor policy).
pub fn monvm_node_and(
    dir: &Path,
    series: &str,
    ram_mib: u64,
    configure: impl FnOnce(&mut NodeConfig),
) -> Node {
    let mut config = tcg_config(dir);
    config.monvm = Some(monvm_config(series, ram_mib));
    configure(&mut config);
    Node::up_on_free_port(&config, BOOT_TIMEOUT)
        .unwrap_or_else(|err| panic!("node with a {series} Mon-VM did not come up: {err}"))
}

/// Where the test rootkit (docs/rootkit.md) lies in the Mon-VM's root.
pub const ROOTKIT_GUEST_PATH: &str = "/root/avm_rootkit.ko";

/// The test rootkit built for kernel `series` by `make deps`
/// (`scripts/build-rootkit.sh`); panics when it is missing.
pub fn rootkit_ko(series: &str) -> PathBuf {
    let ko = crate::monvm::kernel::default_cache_dir()
        .join(series)
        .join("rootkit/avm_rootkit.ko");
    assert!(
        ko.is_file(),
        "the test rootkit {} is missing: run `make deps` first",
        ko.display()
    );
    ko
}

/// [`monvm_node`] whose Mon-VM root also holds the test rootkit built for
/// its kernel, at [`ROOTKIT_GUEST_PATH`] (not loaded: [`Rootkit::load`]).
pub fn monvm_node_with_rootkit(dir: &Path, series: &str, ram_mib: u64) -> Node {
    monvm_node_with_rootkit_and(dir, series, ram_mib, |_| {})
}

/// [`monvm_node_with_rootkit`] whose configuration `configure` changed
/// first (more files in the Mon-VM's root, a monitor policy).
pub fn monvm_node_with_rootkit_and(
    dir: &Path,
    series: &str,
    ram_mib: u64,
    configure: impl FnOnce(&mut NodeConfig),
) -> Node {
    let rootkit = rootkit_ko(series);
    monvm_node_and(dir, series, ram_mib, |config| {
        if let Some(monvm) = config.monvm.as_mut() {
            monvm.extra_files.push(crate::monvm::rootfs::ExtraFile {
                host_path: rootkit,
                guest_path: ROOTKIT_GUEST_PATH.into(),
                mode: 0o600,
            });
        }
        configure(config);
    })
}

/// `qemu/testprogs/NAME.c` (`avm_wait`: a program that waits for a
/// signal; `avm_threads`: one whose second thread has a cred and a network
/// namespace of its own) built into `dir` for the Mon-VM: static, without
/// libc, with the host's C compiler (`make deps` installs it). Panics if it
/// does not build.
pub fn build_test_program(dir: &Path, name: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("testprogs/{name}.c"));
    let out = dir.join(name);
    let status = std::process::Command::new("cc")
        .args([
            "-static",
            "-nostdlib",
            "-fno-stack-protector",
            "-fno-pie",
            "-no-pie",
            "-O2",
        ])
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running cc (run `make deps`): {e}"));
    assert!(status.success(), "cc {} failed: {status}", source.display());
    out
}

/// Runs `body` in the background under a shell of `nobody` that waits for
/// it (so the shell, not the console's root shell, is its parent; the
/// user is added to `/etc/passwd` first if missing); returns (the shell's
/// PID, the PID of its child). The child is the one running as nobody:
/// the root subshell that adds the user is a child of the same PID for a
/// moment.
pub fn under_nobody(console: &mut crate::monvm::console::MonVmConsole, body: &str) -> (u32, u32) {
    let shell: u32 = console_sh(
        console,
        &format!(
            "({}) && su -s /bin/sh nobody -c '{body} & wait' >/dev/null 2>&1 & echo $!",
            crate::monvm::ADD_USER_NOBODY
        ),
    )
    .trim()
    .parse()
    .expect("a PID");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = console_sh(
            console,
            &format!(
                "for f in $(grep -l '^PPid:[[:space:]]*{shell}$' /proc/[0-9]*/status 2>/dev/null); do \
                 grep -q '^Uid:[[:space:]]*65534[[:space:]]' $f && echo $f | cut -d/ -f3; done; true"
            ),
        );
        if let Some(child) = found.lines().find_map(|l| l.trim().parse().ok()) {
            return (shell, child);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{shell} started no child"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until PID runs a program whose `comm` is `comm`.
pub fn wait_comm(console: &mut crate::monvm::console::MonVmConsole, pid: u32, comm: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while console_sh(console, &format!("cat /proc/{pid}/comm; true")).trim() != comm {
        assert!(
            std::time::Instant::now() < deadline,
            "{pid} never became {comm}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How long the process left in the namespace [`Attack::HideNetns`] hides
/// sleeps (`pkill -f "sleep 602"` ends it).
pub const HIDDEN_NETNS_SLEEP: u32 = 602;

/// One attack of the test rootkit (docs/rootkit.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// `sys_call_table[__NR_getpid]` points into the module.
    SyscallTable,
    /// IDT gate 0x1d (#VC) points into the module.
    Idt,
    /// One byte of `__x64_sys_kexec_load`'s text changed.
    Text,
    /// One letter of a BTF type name (`.rodata`) changes case.
    Rodata,
    /// `tcp_prot.init` (a function-pointer table in writable data) hooked.
    FopsTable,
    /// `n_tty_ops.receive_buf2` (the structure `tty_ldiscs[N_TTY]` points
    /// at, in writable data) hooked: every byte typed at a terminal.
    Keylog,
    /// A netfilter hook on IPv4 PRE_ROUTING in `init_net`, registered
    /// with `nf_register_net_hook` (the module's own function).
    NetfilterHook,
    /// The same in a network namespace of its own (`unshare -n`: a
    /// container's), which the module keeps alive while it is on.
    NetfilterHookNetns,
    /// The same among the ingress hooks of `init_net`'s loopback device.
    NetfilterHookIngress,
    /// A new network namespace, a process left in it, unlinked from the
    /// kernel's list of namespaces.
    HideNetns,
    /// The module unlinked from the kernel's module list.
    HideModule,
    /// The task of this PID unlinked from the task list.
    HidePid(u32),
    /// The thread of this TID unlinked from its group's thread list
    /// (`signal->nr_threads` left as it was).
    HideTid(u32),
    /// The same, and `signal->nr_threads` lowered by one: only the PID
    /// table still has the thread.
    HideTidCount(u32),
    /// The process of this PID taken off every list: the task list, its
    /// parent's children and the PID table.
    VanishPid(u32),
    /// The same, and the task off its cgroup's task list too: on no list
    /// the kernel keeps of its tasks.
    VanishCgPid(u32),
    /// The same, and the stack's vmalloc area off the kernel's list of busy
    /// areas: the stack is left only in the page tables.
    VanishVaPid(u32),
    /// The cred ids of this PID's task set to 0 (root).
    RootPid(u32),
    /// The euid (and fsuid) alone of this PID's task set to 0, its real uid
    /// left: what the exec of a set-uid root program makes.
    EuidPid(u32),
    /// This PID's task given a whole new root cred, a copy of init's (ids
    /// 0, charged to root's account), its old one kept to put back.
    AdoptPid(u32),
    /// [`Attack::AdoptPid`], and its executable's `struct file` made to
    /// look opened with the new cred (`f_cred`).
    AdoptExePid(u32),
    /// This PID's `real_parent` pointed at init (PID 1), the task left on
    /// its parent's children list.
    ReparentPid(u32),
    /// This PID's task taken off its parent's children list (still on the
    /// task list).
    UntreePid(u32),
    /// This many valid entries linked into the IMA measurement list at
    /// once, each a copy of the newest genuine one (no "off": entries are
    /// never removed).
    ImaFlood(u32),
}

impl Attack {
    /// The line written to `/proc/avm_rootkit` to switch it on or off.
    pub fn command(self, on: bool) -> String {
        let (name, value) = match self {
            Attack::SyscallTable => ("syscall", u32::from(on)),
            Attack::Idt => ("idt", u32::from(on)),
            Attack::Text => ("text", u32::from(on)),
            Attack::Rodata => ("rodata", u32::from(on)),
            Attack::FopsTable => ("fops", u32::from(on)),
            Attack::Keylog => ("keylog", u32::from(on)),
            Attack::NetfilterHook => ("nf_hook", u32::from(on)),
            Attack::NetfilterHookNetns => ("nf_hook_netns", u32::from(on)),
            Attack::NetfilterHookIngress => ("nf_hook_ingress", u32::from(on)),
            Attack::HideNetns => ("hide_netns", u32::from(on)),
            Attack::HideModule => ("hide_module", u32::from(on)),
            Attack::HidePid(pid) => ("hide_pid", if on { pid } else { 0 }),
            Attack::HideTid(tid) => ("hide_tid", if on { tid } else { 0 }),
            Attack::HideTidCount(tid) => ("hide_tid_count", if on { tid } else { 0 }),
            Attack::VanishPid(pid) => ("vanish_pid", if on { pid } else { 0 }),
            Attack::VanishCgPid(pid) => ("vanish_cg_pid", if on { pid } else { 0 }),
            Attack::VanishVaPid(pid) => ("vanish_va_pid", if on { pid } else { 0 }),
            Attack::RootPid(pid) => ("root_pid", if on { pid } else { 0 }),
            Attack::EuidPid(pid) => ("euid_pid", if on { pid } else { 0 }),
            Attack::AdoptPid(pid) => ("adopt_pid", if on { pid } else { 0 }),
            Attack::AdoptExePid(pid) => ("adopt_exe_pid", if on { pid } else { 0 }),
            Attack::ReparentPid(pid) => ("reparent_pid", if on { pid } else { 0 }),
            Attack::UntreePid(pid) => ("untree_pid", if on { pid } else { 0 }),
            Attack::ImaFlood(n) => ("ima_flood", if on { n } else { 0 }),
        };
        format!("{name} {value}")
    }
}

/// The test rootkit loaded into a Mon-VM, driven through its console.
#[derive(Debug)]
pub struct Rootkit {
    _loaded: (),
}

impl Rootkit {
    /// Loads [`ROOTKIT_GUEST_PATH`] with `insmod`, giving it the address of
    /// `kallsyms_lookup_name` read from the guest's `/proc/kallsyms`.
    pub fn load(console: &mut crate::monvm::MonVmConsole) -> Result<Self, String> {
        let command = format!(
            "insmod {ROOTKIT_GUEST_PATH} kln=0x$(awk '$3 == \"kallsyms_lookup_name\" {{ print $1 }}' /proc/kallsyms)"
        );
        console.run_ok(&command).map_err(|e| e.to_string())?;
        Ok(Self { _loaded: () })
    }

    /// Switches `attack` on or off.
    pub fn set(
        &self,
        console: &mut crate::monvm::MonVmConsole,
        attack: Attack,
        on: bool,
    ) -> Result<(), String> {
        let write = format!("echo {} > /proc/avm_rootkit", attack.command(on));
        // The module hooks the namespace of the process that writes.
        let line = match (attack, on) {
            (Attack::NetfilterHookNetns, true) => format!("unshare -n sh -c '{write}'"),
            // A process stays in the namespace (`HIDDEN_NETNS_SLEEP`).
            (Attack::HideNetns, true) => {
                format!("(unshare -n sh -c '{write}; exec sleep {HIDDEN_NETNS_SLEEP}' &); sleep 1")
            }
            _ => write,
        };
        console.run_ok(&line).map(|_| ()).map_err(|e| e.to_string())
    }

    /// `/proc/avm_rootkit` as name -> value.
    pub fn status(
        &self,
        console: &mut crate::monvm::MonVmConsole,
    ) -> Result<std::collections::BTreeMap<String, String>, String> {
        let text = console
            .run_ok("cat /proc/avm_rootkit")
            .map_err(|e| e.to_string())?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect())
    }
}

/// Bytes written into a live Mon-VM's kernel memory through its RAM file,
/// as a rootkit inside it would write them ([`crate::ram_patch`]); the
/// original bytes are put back when this is dropped (also when a test
/// fails).
#[derive(Debug)]
pub struct MonVmPatch(RamPatch);

impl MonVmPatch {
    /// Leaves the bytes written (see [`RamPatch::keep`]).
    pub fn keep(self) {
        self.0.keep();
    }

    /// Puts the original bytes back now (dropping the patch does too).
    pub fn restore(mut self) {
        self.0
            .restore()
            .unwrap_or_else(|e| panic!("restoring the Mon-VM's RAM: {e}"));
    }

    /// Writes `bytes` at the runtime address of the link-time kernel
    /// address `link_va(profile)` (the node's profile, KASLR resolved from
    /// RAM). `bytes` may be a function of the bytes there now.
    pub fn kernel(
        record: &crate::NodeRecord,
        link_va: impl FnOnce(&vmi::profile::KernelProfile) -> u64,
        bytes: impl FnOnce(&[u8], &vmi::linux::KernelLocation) -> Vec<u8>,
        len: usize,
    ) -> Self {
        let ram = open_ram(record);
        let link = link_va(&ram.profile);
        Self(
            ram.patch_kernel(link, bytes, len)
                .unwrap_or_else(|e| panic!("patching the Mon-VM's RAM: {e}")),
        )
    }

    /// Writes `bytes` (a function of the bytes there now) at
    /// guest-physical `phys`, outside any kernel: the firmware's data.
    pub fn phys(
        record: &crate::NodeRecord,
        phys: vmi::GuestPhysAddr,
        bytes: impl FnOnce(&[u8]) -> Vec<u8>,
        len: usize,
    ) -> Self {
        Self(
            open_ram(record)
                .patch_phys(phys, bytes, len)
                .unwrap_or_else(|e| panic!("patching the Mon-VM's RAM: {e}")),
        )
    }

    /// Writes `bytes` at the kernel virtual address `locate` finds (it
    /// gets the located kernel, the profile and the RAM to read from).
    pub fn at(
        record: &crate::NodeRecord,
        locate: impl FnOnce(
            &vmi::linux::KernelView<'_, vmi::file::FileMemory>,
            &vmi::profile::KernelProfile,
            &vmi::file::FileMemory,
        ) -> vmi::GuestVirtAddr,
        bytes: impl FnOnce(&[u8], &vmi::linux::KernelLocation) -> Vec<u8>,
        len: usize,
    ) -> Self {
        Self(
            open_ram(record)
                .patch(
                    |view, profile, memory| Ok(locate(view, profile, memory)),
                    bytes,
                    len,
                )
                .unwrap_or_else(|e| panic!("patching the Mon-VM's RAM: {e}")),
        )
    }

    /// Moves getpid's system-call slot (39) 16 bytes into its handler, as
    /// a rootkit redirecting a system call would.
    pub fn redirect_getpid_slot(record: &crate::NodeRecord) -> Self {
        Self(
            redirect_getpid_slot(&open_ram(record))
                .unwrap_or_else(|e| panic!("redirecting getpid's slot: {e}")),
        )
    }

    /// Rewrites the SHA-1 template hash of the Mon-VM's IMA entry `index`
    /// (its first byte flipped), as a rootkit rewriting the list would.
    pub fn ima_template_hash(record: &crate::NodeRecord, index: usize) -> Self {
        Self(
            rewrite_ima_template_hash(&open_ram(record), index)
                .unwrap_or_else(|e| panic!("rewriting IMA entry {index}: {e}")),
        )
    }
}

fn open_ram(record: &crate::NodeRecord) -> MonVmRam {
    MonVmRam::open(record).unwrap_or_else(|e| panic!("the Mon-VM's RAM: {e}"))
}

/// The offset into the kernel's text of a byte of `__x64_sys_kexec_load`
/// (a handler nothing in the tests calls) outside every patch site, at
/// least `skip` bytes into the handler (past its entry's sites): the
/// byte the text attacks change. `None` without the handler or a text
/// reference.
pub fn unused_text_offset(profile: &vmi::profile::KernelProfile, skip: u64) -> Option<u64> {
    let handler = profile
        .syscalls
        .slots
        .iter()
        .find(|s| s.name == "__x64_sys_kexec_load")?
        .address;
    let sites = &profile.text_reference.as_ref()?.sites;
    (skip..256)
        .map(|d| handler.wrapping_sub(profile.symbols.text).wrapping_add(d))
        .find(|&o| !sites.covers(o))
}

/// The A-VM's monitoring events so far (`AVM-MONVM-EVENT` lines of its
/// serial log, without the prefix: `monvm:event:N:violation:AREA:...`).
pub fn avm_events(record: &crate::NodeRecord) -> Vec<String> {
    // Lossy: one stray byte on the serial line must not hide every event.
    String::from_utf8_lossy(&std::fs::read(&record.avm_serial).unwrap_or_default())
        .lines()
        .filter_map(|l| l.strip_prefix("AVM-MONVM-EVENT "))
        .map(str::to_string)
        .collect()
}

/// The lines of the A-VM's serial log that start with `prefix`.
pub fn avm_serial_lines(record: &crate::NodeRecord, prefix: &str) -> Vec<String> {
    std::fs::read_to_string(&record.avm_serial)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until `count` lines of the A-VM's serial log start with
/// `prefix`; after `timeout` panics with the tails of the A-VM's serial
/// log and of the Mon-VM's console (why a new kernel was not measured).
pub fn wait_for_avm_lines(
    record: &crate::NodeRecord,
    prefix: &str,
    count: usize,
    timeout: Duration,
) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(&record.avm_serial).unwrap_or_default();
        if text.lines().filter(|l| l.starts_with(prefix)).count() >= count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the A-VM printed fewer than {count} {prefix:?} lines; its warnings and reboots:\n{}\nits serial log ends:\n{}\nthe Mon-VM's console ends:\n{}",
            text.lines()
                .filter(|l| l.contains("] warn: ") || l.starts_with("AVM-MONVM-REBOOT"))
                .collect::<Vec<_>>()
                .join("\n"),
            tail(&text, 200),
            tail(
                &record
                    .monvm_console_log
                    .as_ref()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .unwrap_or_default(),
                60
            )
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `command` on the Mon-VM's console; panics (naming it) if it fails.
pub fn console_sh(console: &mut crate::monvm::console::MonVmConsole, command: &str) -> String {
    console
        .run_ok(command)
        .unwrap_or_else(|err| panic!("`{command}` on the Mon-VM: {err}"))
}

/// Waits (at most 60 s) until the node's A-VM serial log contains
/// `needle`; panics with the log otherwise.
pub fn wait_for_avm_serial(record: &crate::NodeRecord, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let serial = std::fs::read_to_string(&record.avm_serial).unwrap_or_default();
        if serial.contains(needle) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the A-VM never printed {needle:?}:\n{serial}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
