//! QEMU command lines and what a guest's exit status means.
//!
//! [`QemuCommand`] is a builder for one QEMU process; a node may run several
//! (the A-VM and the Mon-VM), each from its own builder. Option values
//! that carry paths are comma-escaped as QEMU's option parser requires.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::swtpm::process::option_path;

/// The QEMU binary for x86-64 guests.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// I/O port of the isa-debug-exit device the kernel writes its exit code to.
pub const DEBUG_EXIT_IOBASE: u16 = 0xf4;

/// Which accelerator runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcg => "tcg",
            Self::Kvm => "kvm",
        }
    }
}

/// Builder for one QEMU process.
#[derive(Debug, Clone)]
pub struct QemuCommand {
    binary: PathBuf,
    args: Vec<OsString>,
}

impl QemuCommand {
    /// A machine with no default devices, no display and no reboot (a
    /// triple fault then ends QEMU instead of looping).
    pub fn new(machine: &str, accel: Accel, memory_mib: u32) -> Self {
        let mut command = Self {
            binary: PathBuf::from(QEMU_BINARY),
            args: Vec::new(),
        };
        command
            .arg("-M")
            .arg(machine)
            .arg("-accel")
            .arg(accel.as_str())
            .arg("-m")
            .arg(format!("{memory_mib}M"))
            .args(["-nodefaults", "-vga", "none", "-display", "none"])
            .args(["-no-reboot", "-no-user-config"]);
        command
    }

    /// Lets the guest reboot (QEMU resets the machine instead of exiting):
    /// takes back the `-no-reboot` of [`QemuCommand::new`].
    pub fn allow_reboot(&mut self) -> &mut Self {
        self.args.retain(|a| a != "-no-reboot");
        self
    }

    /// Uses another QEMU binary (for tests of the launcher itself).
    pub fn binary(&mut self, binary: impl Into<PathBuf>) -> &mut Self {
        self.binary = binary.into();
        self
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Self {
        for arg in args {
            self.arg(arg);
        }
        self
    }

    /// The first serial port, written to `path` (truncated at start).
    pub fn serial_to_file(&mut self, path: &Path) -> &mut Self {
        self.arg("-chardev")
            .arg(option_path("file,id=serial0,path=", path))
            .args(["-serial", "chardev:serial0"])
    }

    /// The isa-debug-exit device: the guest's `out 0xf4, v` ends QEMU with
    /// status `(v << 1) | 1`.
    pub fn debug_exit(&mut self) -> &mut Self {
        self.arg("-device").arg(format!(
            "isa-debug-exit,iobase={DEBUG_EXIT_IOBASE:#x},iosize=0x04"
        ))
    }

    /// Boots `image` directly (PVH entry) with a kernel command line.
    pub fn kernel(&mut self, image: &Path, cmdline: &str) -> &mut Self {
        self.arg("-kernel").arg(image).arg("-append").arg(cmdline)
    }

    /// A TPM 2.0 on the CRB interface, backed by swtpm's control socket.
    pub fn tpm_crb(&mut self, swtpm_ctrl_socket: &Path) -> &mut Self {
        self.arg("-chardev")
            .arg(option_path("socket,id=chrtpm,path=", swtpm_ctrl_socket))
            .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
            .args(["-device", "tpm-crb,tpmdev=tpm0"])
    }

    /// User-mode networking with a virtio-net NIC; `host_port` on host
    /// loopback forwards to `guest_port` in the guest.
    pub fn user_net_forward(&mut self, host_port: u16, guest_port: u16) -> &mut Self {
        self.arg("-netdev")
            .arg(format!(
                "user,id=n0,hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}"
            ))
            // Modern-only virtio (what the A-VM's driver speaks). No option
            // ROM: the A-VM never network-boots, and SeaBIOS would spend
            // boot time loading (and measuring into PCR2) iPXE.
            .args([
                "-device",
                "virtio-net-pci,netdev=n0,disable-legacy=on,romfile=",
            ])
    }

    /// A RAM backend in a shared file (`share=on`): the machine's RAM with
    /// `-machine memory-backend=<id>`, or an ivshmem device's memory.
    /// `readonly` maps it read-only (guest writes are dropped).
    pub fn ram_backend_file(
        &mut self,
        id: &str,
        path: &Path,
        size_mib: u64,
        readonly: bool,
    ) -> &mut Self {
        let mut value = option_path(
            &format!("memory-backend-file,id={id},size={size_mib}M,mem-path="),
            path,
        );
        value.push(",share=on");
        if readonly {
            value.push(",readonly=on");
        }
        self.arg("-object").arg(value)
    }

    /// An `ivshmem-plain` PCI device (1af4:1110) whose BAR2 is the memory
    /// backend `memdev`.
    pub fn ivshmem_plain(&mut self, memdev: &str) -> &mut Self {
        self.arg("-device")
            .arg(format!("ivshmem-plain,memdev={memdev}"))
    }

    /// A raw disk image as an NVMe controller's namespace 1.
    pub fn nvme_disk(&mut self, id: &str, image: &Path, serial: &str) -> &mut Self {
        let mut drive = option_path("file=", image);
        drive.push(format!(",if=none,id={id},format=raw"));
        self.arg("-drive")
            .arg(drive)
            .arg("-device")
            .arg(format!("nvme,drive={id},serial={serial}"))
    }

    /// The first serial port on a Unix socket in server mode that does not
    /// wait for a client; everything the guest writes is also logged to
    /// `log` (truncated at start), connected or not.
    pub fn serial_to_socket(&mut self, id: &str, socket: &Path, log: &Path) -> &mut Self {
        let mut value = option_path(&format!("socket,id={id},path="), socket);
        value.push(",server=on,wait=off");
        value.push(option_path(",logfile=", log));
        value.push(",logappend=off");
        self.arg("-chardev")
            .arg(value)
            .arg("-serial")
            .arg(format!("chardev:{id}"))
    }

    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// A `Command` ready to spawn; stdio goes to `log` (QEMU's own messages).
    pub fn to_command(&self, log: std::fs::File) -> std::io::Result<Command> {
        let mut command = Command::new(&self.binary);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(command)
    }
}

/// What a QEMU exit status says about the A-VM (see the kernel's exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestExit {
    /// Status 33: the kernel finished as asked (`exit-after-report`).
    Success,
    /// Status 35: kernel panic or CPU exception.
    Panic,
    /// Status 37: no TPM found.
    NoTpm,
    /// Status 39: the TPM failed a command.
    TpmFailure,
    /// Status 0: QEMU shut down normally; with `-no-reboot` this is also
    /// what a triple fault looks like.
    PoweredOffOrTripleFault,
    /// Any other status (QEMU's own errors are 1).
    Other(i32),
    /// Killed by a signal.
    Signal(i32),
}

impl GuestExit {
    pub fn from_status(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        match (status.code(), status.signal()) {
            (Some(33), _) => Self::Success,
            (Some(35), _) => Self::Panic,
            (Some(37), _) => Self::NoTpm,
            (Some(39), _) => Self::TpmFailure,
            (Some(0), _) => Self::PoweredOffOrTripleFault,
            (Some(code), _) => Self::Other(code),
            (None, Some(signal)) => Self::Signal(signal),
            (None, None) => Self::Other(-1),
        }
    }

    /// A sentence for users.
    pub fn describe(self) -> String {
        match self {
            Self::Success => "the A-VM finished normally (status 33)".into(),
            Self::Panic => "the A-VM kernel panicked or hit a CPU exception (status 35)".into(),
            Self::NoTpm => "the A-VM found no TPM (status 37)".into(),
            Self::TpmFailure => "the A-VM's TPM failed a command (status 39)".into(),
            Self::PoweredOffOrTripleFault => {
                "QEMU exited with status 0: the guest powered off or triple-faulted".into()
            }
            Self::Other(1) => "QEMU failed (status 1); see its log".into(),
            Self::Other(code) => format!("QEMU exited with unexpected status {code}"),
            Self::Signal(signal) => format!("QEMU was killed by signal {signal}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    fn joined(command: &QemuCommand) -> String {
        command
            .get_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn builds_the_a_vm_command_line() {
        let mut command = QemuCommand::new("q35", Accel::Tcg, 128);
        command
            .serial_to_file(Path::new("/s/avm-serial.log"))
            .debug_exit()
            .kernel(Path::new("/s/avm.elf"), "exit-after-report")
            .tpm_crb(Path::new("/s/ctrl.sock"))
            .user_net_forward(4000, 7000);
        let line = joined(&command);
        for expected in [
            "-M q35 -accel tcg -m 128M -nodefaults -vga none -display none -no-reboot",
            "-chardev file,id=serial0,path=/s/avm-serial.log -serial chardev:serial0",
            "-device isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-kernel /s/avm.elf -append exit-after-report",
            "-chardev socket,id=chrtpm,path=/s/ctrl.sock -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0",
            "-netdev user,id=n0,hostfwd=tcp:127.0.0.1:4000-:7000 -device virtio-net-pci,netdev=n0,disable-legacy=on,romfile=",
        ] {
            assert!(line.contains(expected), "{expected} not in {line}");
        }
    }

    #[test]
    fn builds_the_mon_vm_command_line() {
        let mut command = QemuCommand::new("pc,memory-backend=mem", Accel::Tcg, 4096);
        command
            .ram_backend_file("mem", Path::new("/dev/shm/avm-monvm-1"), 4096, false)
            .nvme_disk("root", Path::new("/s/root.ext4"), "sn")
            .serial_to_socket("con", Path::new("/s/con.sock"), Path::new("/s/con.log"));
        let mut avm = QemuCommand::new("q35", Accel::Tcg, 128);
        avm.ram_backend_file("mem", Path::new("/dev/shm/avm-monvm-1"), 4096, true)
            .ivshmem_plain("mem");
        let line = joined(&command);
        for expected in [
            "-M pc,memory-backend=mem -accel tcg -m 4096M",
            "-object memory-backend-file,id=mem,size=4096M,mem-path=/dev/shm/avm-monvm-1,share=on -drive",
            "-drive file=/s/root.ext4,if=none,id=root,format=raw -device nvme,drive=root,serial=sn",
            "-chardev socket,id=con,path=/s/con.sock,server=on,wait=off,logfile=/s/con.log,logappend=off -serial chardev:con",
        ] {
            assert!(line.contains(expected), "{expected} not in {line}");
        }
        assert!(joined(&avm).contains(
            "-object memory-backend-file,id=mem,size=4096M,mem-path=/dev/shm/avm-monvm-1,share=on,readonly=on -device ivshmem-plain,memdev=mem"
        ));
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let mut command = QemuCommand::new("q35", Accel::Tcg, 64);
        command.serial_to_file(Path::new("/a,b/serial"));
        assert!(joined(&command).contains("path=/a,,b/serial"));
    }

    #[test]
    fn exit_statuses() {
        let status = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(GuestExit::from_status(status(33)), GuestExit::Success);
        assert_eq!(GuestExit::from_status(status(35)), GuestExit::Panic);
        assert_eq!(GuestExit::from_status(status(37)), GuestExit::NoTpm);
        assert_eq!(GuestExit::from_status(status(39)), GuestExit::TpmFailure);
        assert_eq!(
            GuestExit::from_status(status(0)),
            GuestExit::PoweredOffOrTripleFault
        );
        assert_eq!(GuestExit::from_status(status(1)), GuestExit::Other(1));
        assert_eq!(
            GuestExit::from_status(ExitStatus::from_raw(9)),
            GuestExit::Signal(9)
        );
    }
}
