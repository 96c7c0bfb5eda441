//! The Mon-VM's root filesystem: a busybox-static userland in an ext4 image
//! built without mounting (`mke2fs -d`), so the Mon-VM's own IMA measures
//! every file it executes, maps or loads from it (files on an initramfs
//! never are). The kernel mounts it directly: the cloud kernels have NVMe
//! and ext4 built in (`CONFIG_BLK_DEV_NVME=y`, `CONFIG_EXT4_FS=y`; virtio-blk
//! is a module there), so there is no initramfs at all.
//!
//! Contents: `/bin/busybox` (a copy of the host's busybox-static) with a
//! relative symlink per applet, `/sbin/init` (a shell script: mounts, the
//! ready line, a shell on the console), `/usr/bin/avm-hello` (a test
//! script), a few small modules of the kernel's own package under
//! `/lib/modules/<release>/` (uncompressed, so busybox's `insmod` loads them
//! with `finit_module` and IMA measures them) with a `modules.dep`, and
//! minimal `/etc` files.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::kernel::MonVmKernel;
use super::{MonVmError, READY_LINE};

/// Size of the (sparse) root image: room for what tests write.
pub const ROOT_IMAGE_MIB: u64 = 64;
/// Filesystem label of the root image.
pub const ROOT_LABEL: &str = "avm-monvm";
/// The shell prompt on the Mon-VM's console.
pub const PROMPT: &str = "monvm# ";
/// Modules of the kernel package copied to the root (paths under
/// `lib/modules/<release>/`, without `.ko`): small, without dependencies,
/// harmless to load and unload.
pub const MODULES: [&str; 4] = [
    "kernel/drivers/net/dummy",
    "kernel/net/ipv4/tcp_bic",
    "kernel/net/ipv4/tcp_vegas",
    "kernel/lib/crc7",
];
/// The test script on the root.
pub const HELLO_PATH: &str = "/usr/bin/avm-hello";
/// What [`HELLO_PATH`] prints.
pub const HELLO_OUTPUT: &str = "hello from the Mon-VM";

/// The Mon-VM's `/sbin/init`.
pub fn init_script() -> String {
    format!(
        r#"#!/bin/sh
# The Mon-VM's init, written by avm-qemu: pseudo filesystems, the ready
# line the launcher waits for, then a root shell on the serial console.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t securityfs securityfs /sys/kernel/security
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname avm-monvm
# Kernel messages would interleave with command output on the console.
dmesg -n 1
read -r uptime idle < /proc/uptime
echo "{READY_LINE} release=$(uname -r) uptime=$uptime"
export PS1='{PROMPT}'
# A shell that exits (`exit` typed on the console) is started again.
while true; do
    setsid cttyhack sh
done
"#
    )
}

/// The contents of [`HELLO_PATH`].
pub fn hello_script() -> String {
    format!("#!/bin/sh\n# A test program on the Mon-VM's measured root.\necho \"{HELLO_OUTPUT}\"\n")
}

/// What was put on a root image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootImage {
    pub path: PathBuf,
    /// Guest paths of the modules copied in.
    pub modules: Vec<String>,
}

/// Finds a program in `$PATH`, then in the sbin folders (`mke2fs` is in
/// /sbin, outside a normal user's `$PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether the ELF file at `path` is statically linked (has no
/// `PT_INTERP` program header). `None` if it is not a readable ELF64.
pub fn is_static_elf(bytes: &[u8]) -> Option<bool> {
    if bytes.get(..4)? != b"\x7fELF" || *bytes.get(4)? != 2 || *bytes.get(5)? != 1 {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    if phentsize < 4 {
        return None;
    }
    for i in 0..phnum {
        let entry = phoff.checked_add(i.checked_mul(phentsize)?)?;
        const PT_INTERP: u32 = 3;
        if u32_at(entry)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// The host's busybox-static.
pub fn find_busybox() -> Result<PathBuf, MonVmError> {
    let busybox = find_program("busybox").ok_or(MonVmError::BusyboxMissing)?;
    let bytes =
        std::fs::read(&busybox).map_err(io_error(format!("reading {}", busybox.display())))?;
    match is_static_elf(&bytes) {
        Some(true) => Ok(busybox),
        _ => Err(MonVmError::BusyboxNotStatic(busybox)),
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> MonVmError {
    let context = context.into();
    move |source| MonVmError::Io { context, source }
}

/// Writes a new file (never through an existing path or symlink).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), MonVmError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_error(format!("creating {}", path.display())))?;
    file.write_all(contents)
        .map_err(io_error(format!("writing {}", path.display())))?;
    // The mode given to open is filtered by the umask.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_error(format!("setting the mode of {}", path.display())))
}

fn remove_dir_if_present(dir: &Path) -> Result<(), MonVmError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error(format!("removing {}", dir.display()))(err)),
    }
}

/// Runs `command`, failing with its stderr if it does not succeed.
fn run_tool(mut command: Command, what: &str) -> Result<Vec<u8>, MonVmError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(io_error(format!("running {what}")))?;
    if !output.status.success() {
        return Err(MonVmError::Tool {
            tool: what.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output.stdout)
}

/// A host file copied into the root image at `guest_path` (absolute) with
/// `mode`; a path the root already has is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    pub host_path: PathBuf,
    pub guest_path: String,
    pub mode: u32,
}

/// Builds the root image at `image` from a staging folder `staging`
/// (created, then removed). `busybox` is the host's busybox-static, also
/// used to decompress `.ko.xz` modules.
pub fn build_root_image(
    staging: &Path,
    image: &Path,
    busybox: &Path,
    kernel: &MonVmKernel,
    extra_files: &[ExtraFile],
) -> Result<RootImage, MonVmError> {
    let mke2fs = find_program("mke2fs").ok_or(MonVmError::Mke2fsMissing)?;
    remove_dir_if_present(staging)?;
    let result = stage(staging, busybox, kernel, extra_files).and_then(|modules| {
        match std::fs::remove_file(image) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_error(format!("removing {}", image.display()))(err)),
        }
        let mut command = Command::new(&mke2fs);
        command
            .args(["-q", "-t", "ext4", "-L", ROOT_LABEL, "-m", "0"])
            .args(["-E", "root_owner=0:0", "-d"])
            .arg(staging)
            .arg("-F")
            .arg(image)
            .arg(format!("{ROOT_IMAGE_MIB}M"));
        run_tool(command, "mke2fs")?;
        Ok(RootImage {
            path: image.to_path_buf(),
            modules,
        })
    });
    let removed = remove_dir_if_present(staging);
    let root = result?;
    removed?;
    Ok(root)
}

/// Fills the staging folder; returns the guest paths of the modules.
fn stage(
    root: &Path,
    busybox: &Path,
    kernel: &MonVmKernel,
    extra_files: &[ExtraFile],
) -> Result<Vec<String>, MonVmError> {
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "lib", "proc", "sys", "dev", "tmp", "run",
        "root", "mnt", "var",
    ] {
        let path = root.join(dir);
        std::fs::create_dir_all(&path).map_err(io_error(format!("creating {}", path.display())))?;
    }
    let busybox_bytes =
        std::fs::read(busybox).map_err(io_error(format!("reading {}", busybox.display())))?;
    write_new(&root.join("bin/busybox"), &busybox_bytes, 0o755)?;
    write_new(&root.join("sbin/init"), init_script().as_bytes(), 0o755)?;
    write_new(
        &root.join(HELLO_PATH.trim_start_matches('/')),
        hello_script().as_bytes(),
        0o755,
    )?;
    write_new(
        &root.join("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    )?;
    write_new(&root.join("etc/group"), b"root:x:0:\n", 0o644)?;
    write_new(&root.join("etc/hostname"), b"avm-monvm\n", 0o644)?;
    let modules = stage_modules(root, busybox, kernel)?;
    for extra in extra_files {
        let relative = Path::new(extra.guest_path.trim_start_matches('/'));
        let valid = extra.guest_path.starts_with('/')
            && relative.components().count() > 0
            && relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !valid {
            return Err(io_error(format!("extra file {:?}", extra.guest_path))(
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not an absolute plain path",
                ),
            ));
        }
        let dest = root.join(relative);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_error(format!("creating {}", parent.display())))?;
        }
        let bytes = std::fs::read(&extra.host_path)
            .map_err(io_error(format!("reading {}", extra.host_path.display())))?;
        write_new(&dest, &bytes, extra.mode)?;
    }

    // Applet links last, relative, and only where nothing is yet: nothing
    // above is ever written through one of them.
    let list = {
        let mut command = Command::new(busybox);
        command.arg("--list-full");
        run_tool(command, "busybox --list-full")?
    };
    for applet in String::from_utf8_lossy(&list).lines() {
        let applet = applet.trim();
        let valid = !applet.is_empty()
            && !applet.starts_with('/')
            && Path::new(applet)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !valid {
            continue;
        }
        let link = root.join(applet);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        let depth = Path::new(applet).components().count().saturating_sub(1);
        let target = format!("{}bin/busybox", "../".repeat(depth));
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_error(format!("creating {}", parent.display())))?;
        }
        std::os::unix::fs::symlink(&target, &link)
            .map_err(io_error(format!("linking {}", link.display())))?;
    }
    Ok(modules)
}

/// Copies [`MODULES`] that the package has (decompressing `.ko.xz`), plus a
/// `modules.dep` for busybox's `modprobe`.
fn stage_modules(
    root: &Path,
    busybox: &Path,
    kernel: &MonVmKernel,
) -> Result<Vec<String>, MonVmError> {
    let Some(source) = &kernel.modules_dir else {
        return Ok(Vec::new());
    };
    let guest_dir = format!("lib/modules/{}", kernel.release);
    let mut copied = Vec::new();
    let mut dep = String::new();
    for module in MODULES {
        let plain = source.join(format!("{module}.ko"));
        let xz = source.join(format!("{module}.ko.xz"));
        let bytes = if plain.is_file() {
            std::fs::read(&plain).map_err(io_error(format!("reading {}", plain.display())))?
        } else if xz.is_file() {
            let mut command = Command::new(busybox);
            command.args(["xz", "-dc"]).arg(&xz);
            run_tool(command, "busybox xz -dc")?
        } else {
            continue;
        };
        let target = root.join(&guest_dir).join(format!("{module}.ko"));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_error(format!("creating {}", parent.display())))?;
        }
        write_new(&target, &bytes, 0o644)?;
        dep.push_str(&format!("{module}.ko:\n"));
        copied.push(format!("/{guest_dir}/{module}.ko"));
    }
    if !copied.is_empty() {
        write_new(
            &root.join(&guest_dir).join("modules.dep"),
            dep.as_bytes(),
            0o644,
        )?;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_detection() {
        let mut elf = vec![0u8; 0x200];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        elf[0x40..0x44].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(is_static_elf(&elf), Some(true));
        elf[0x40 + 56..0x40 + 60].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(is_static_elf(&elf), Some(false));
        elf[0x38..0x3a].copy_from_slice(&100u16.to_le_bytes());
        assert_eq!(is_static_elf(&elf), Some(false));
        elf[0x40 + 56] = 0;
        assert_eq!(is_static_elf(&elf), None);
        assert_eq!(is_static_elf(b"#!/bin/sh"), None);
    }

    #[test]
    fn init_prints_the_ready_line_and_starts_a_shell() {
        let init = init_script();
        assert!(init.starts_with("#!/bin/sh\n"));
        assert!(init.contains(&format!("echo \"{READY_LINE} release=")));
        assert!(init.contains("mount -t securityfs securityfs /sys/kernel/security"));
        assert!(init.contains("setsid cttyhack sh"));
    }

    #[test]
    fn builds_an_image_without_touching_the_host() {
        let Ok(busybox) = find_busybox() else {
            panic!("busybox-static is not installed: run `make deps`");
        };
        let before = std::fs::read(&busybox).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("modules");
        let release = "6.1.0-test";
        std::fs::create_dir_all(modules.join("kernel/lib")).unwrap();
        std::fs::write(modules.join("kernel/lib/crc7.ko"), b"module").unwrap();
        let kernel = MonVmKernel {
            vmlinuz: dir.path().join("vmlinuz"),
            series: None,
            package: None,
            version: None,
            release: release.into(),
            banner: release.into(),
            modules_dir: Some(modules),
        };
        let staging = dir.path().join("staging");
        let image = dir.path().join("root.ext4");
        let root = build_root_image(&staging, &image, &busybox, &kernel, &[]).unwrap();
        assert_eq!(
            root.modules,
            [format!("/lib/modules/{release}/kernel/lib/crc7.ko")]
        );
        assert!(!staging.exists());
        let meta = std::fs::metadata(&image).unwrap();
        assert_eq!(meta.len(), ROOT_IMAGE_MIB << 20);
        // ext4 superblock magic at 1024 + 0x38.
        let bytes = std::fs::read(&image).unwrap();
        assert_eq!(bytes[1024 + 0x38..1024 + 0x3a], [0x53, 0xef]);
        assert_eq!(std::fs::read(&busybox).unwrap(), before);
    }

    #[test]
    fn extra_files_are_staged_and_odd_paths_refused() {
        let Ok(busybox) = find_busybox() else {
            panic!("busybox-static is not installed: run `make deps`");
        };
        let dir = tempfile::tempdir().unwrap();
        let kernel = MonVmKernel {
            vmlinuz: dir.path().join("vmlinuz"),
            series: None,
            package: None,
            version: None,
            release: "6.1.0-test".into(),
            banner: "6.1.0-test".into(),
            modules_dir: None,
        };
        let host = dir.path().join("thing.ko");
        std::fs::write(&host, b"module bytes").unwrap();
        let extra = |guest: &str| ExtraFile {
            host_path: host.clone(),
            guest_path: guest.into(),
            mode: 0o600,
        };
        let staging = dir.path().join("staging");
        stage(&staging, &busybox, &kernel, &[extra("/root/rk/thing.ko")]).unwrap();
        let staged = staging.join("root/rk/thing.ko");
        assert_eq!(std::fs::read(&staged).unwrap(), b"module bytes");
        assert_eq!(
            std::fs::metadata(&staged).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for bad in ["relative.ko", "/", "/root/../etc/x", "/bin/busybox"] {
            let staging = dir.path().join("bad");
            let _ = std::fs::remove_dir_all(&staging);
            assert!(
                stage(&staging, &busybox, &kernel, &[extra(bad)]).is_err(),
                "{bad} accepted"
            );
        }
    }
}
