//! Member offsets for a task's executable path: `mm_struct.exe_file` ->
//! `file.f_path` (a `struct path`: `mnt`, `dentry`) -> the dentry's name
//! (`d_name`, a `struct qstr`: `name`, `len`) and its parents (`d_parent`),
//! crossing mounts through `struct mount` (`mnt_parent`, `mnt_mountpoint`,
//! and the `vfsmount` embedded at `mnt`, whose `mnt_root` ends a mount's
//! part of the path). The offsets come from the profile (BTF).
//!
//! The walk is [`d_path`]: what the kernel's `d_path` gives for a path
//! seen from the root of the mount tree (for a process not in a chroot,
//! what `readlink /proc/PID/exe` says; a deleted file keeps its last name,
//! without d_path's ` (deleted)`). Everything it reads is an allegation of
//! the guest: every pointer goes through the page walker, names are
//! bounded and checked, the walk is bounded and cycle-safe, and what does
//! not hold is a [`PathError`].

use core::fmt;

use serde::Serialize;

use crate::addr::GuestVirtAddr;
use crate::paging::{VirtualMemory, WalkError};

use super::structs::{StructError, container_of, field, read_pointer, read_u32};
use super::tasks::Task;

/// Offsets of the members an executable-path walk reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PathOffsets {
    /// `mm_struct.exe_file` (pointer to `struct file`).
    pub mm_exe_file: u64,
    /// `file.f_path` (embedded `struct path`).
    pub file_f_path: u64,
    /// `path.mnt` (pointer to `struct vfsmount`).
    pub path_mnt: u64,
    /// `path.dentry` (pointer to `struct dentry`).
    pub path_dentry: u64,
    /// `dentry.d_name` (embedded `struct qstr`).
    pub dentry_d_name: u64,
    /// `dentry.d_parent` (pointer; a root points at itself).
    pub dentry_d_parent: u64,
    /// `qstr.name` (pointer to the name bytes).
    pub qstr_name: u64,
    /// `qstr.len` (u32, in the `hash_len` union).
    pub qstr_len: u64,
    /// `mount.mnt` (the embedded `struct vfsmount`: `container_of` from a
    /// `vfsmount` pointer to its `mount`).
    pub mount_mnt: u64,
    /// `mount.mnt_parent` (pointer to the parent `struct mount`).
    pub mount_mnt_parent: u64,
    /// `mount.mnt_mountpoint` (pointer to the dentry mounted on).
    pub mount_mnt_mountpoint: u64,
    /// `vfsmount.mnt_root` (pointer to the mount's root dentry).
    pub vfsmount_mnt_root: u64,
}

crate::words::deserialize_members!(PathOffsets {
    words [
        mm_exe_file, file_f_path, path_mnt, path_dentry, dentry_d_name, dentry_d_parent,
        qstr_name, qstr_len, mount_mnt, mount_mnt_parent, mount_mnt_mountpoint,
        vfsmount_mnt_root
    ],
});

/// Longest path the walk builds (`PATH_MAX`, its NUL included).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest name of one component (`NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;
/// Most components a path may have (an executable's path is far shorter;
/// a deeper one is refused, not cut).
pub const MAX_COMPONENTS: usize = 64;
/// Most mounts the walk crosses.
pub const MAX_MOUNTS: usize = 16;

/// Why a path could not be built. Every case is an allegation of the
/// guest's memory that does not hold, never a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// A member could not be read (unmapped, outside RAM, non-canonical).
    Read(StructError),
    /// `mm_struct.exe_file` is NULL: the address space has no executable.
    NoExeFile,
    /// A dentry name of a length beyond [`MAX_NAME_LEN`], or empty, `.`,
    /// `..`, or holding `/` or NUL (no kernel makes those).
    BadName { dentry: GuestVirtAddr, len: u32 },
    /// More than [`MAX_COMPONENTS`] components.
    TooDeep,
    /// More than [`MAX_MOUNTS`] mount crossings.
    TooManyMounts,
    /// The path would exceed [`MAX_PATH_LEN`] bytes.
    TooLong,
    /// The walk came back to a dentry of a mount it had passed.
    Loop { dentry: GuestVirtAddr },
    /// A dentry that is its own parent but not its mount's root (a pseudo
    /// file, or one not connected to the mount: the kernel's d_path would
    /// not give a path in the tree either).
    Disconnected { dentry: GuestVirtAddr },
}

impl From<StructError> for PathError {
    fn from(e: StructError) -> Self {
        PathError::Read(e)
    }
}

impl From<WalkError> for PathError {
    fn from(e: WalkError) -> Self {
        PathError::Read(StructError::Walk(e))
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Read(e) => write!(f, "{e}"),
            PathError::NoExeFile => f.write_str("no executable file"),
            PathError::BadName { dentry, len } => {
                write!(f, "dentry {dentry} has a bad name ({len} bytes)")
            }
            PathError::TooDeep => write!(f, "more than {MAX_COMPONENTS} path components"),
            PathError::TooManyMounts => write!(f, "more than {MAX_MOUNTS} mounts crossed"),
            PathError::TooLong => write!(f, "path longer than {MAX_PATH_LEN} bytes"),
            PathError::Loop { dentry } => write!(f, "dentry loop at {dentry}"),
            PathError::Disconnected { dentry } => {
                write!(f, "dentry {dentry} is not connected to its mount")
            }
        }
    }
}

/// An absolute path of at most [`MAX_PATH_LEN`] bytes, built from its end
/// (as the kernel's `d_path` prepends components).
#[derive(Clone, PartialEq, Eq)]
pub struct KernelPath {
    buf: [u8; MAX_PATH_LEN],
    /// The path is `buf[start..]`.
    start: usize,
}

impl KernelPath {
    fn empty() -> Self {
        KernelPath {
            buf: [0; MAX_PATH_LEN],
            start: MAX_PATH_LEN,
        }
    }

    /// Prepends `/name`.
    fn prepend(&mut self, name: &[u8]) -> Result<(), PathError> {
        let start = self
            .start
            .checked_sub(name.len() + 1)
            .ok_or(PathError::TooLong)?;
        let slot = self
            .buf
            .get_mut(start..start + name.len() + 1)
            .ok_or(PathError::TooLong)?;
        slot[0] = b'/';
        slot[1..].copy_from_slice(name);
        self.start = start;
        Ok(())
    }

    /// The path's bytes (a file name may hold any byte but `/` and NUL).
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or(&[])
    }

    /// The path as text if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes()).ok()
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Never true for a built path (the root is `/`).
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

impl fmt::Debug for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.as_bytes().escape_ascii())
    }
}

fn required<V: VirtualMemory + ?Sized>(
    mem: &V,
    base: GuestVirtAddr,
    offset: u64,
    what: &'static str,
) -> Result<GuestVirtAddr, PathError> {
    read_pointer(mem, base, offset)?.ok_or(PathError::Read(StructError::Null { what }))
}

/// Reads a dentry's name into `buf`; returns its length.
fn dentry_name<V: VirtualMemory + ?Sized>(
    mem: &V,
    dentry: GuestVirtAddr,
    o: &PathOffsets,
    buf: &mut [u8; MAX_NAME_LEN],
) -> Result<usize, PathError> {
    let qstr = field(dentry, o.dentry_d_name)?;
    let len = read_u32(mem, qstr, o.qstr_len)?;
    let bad = PathError::BadName { dentry, len };
    let n = usize::try_from(len)
        .ok()
        .filter(|&n| n > 0 && n <= MAX_NAME_LEN)
        .ok_or(bad)?;
    let at = required(mem, qstr, o.qstr_name, "qstr.name")?;
    let name = buf.get_mut(..n).ok_or(bad)?;
    mem.read_virt(at, name)?;
    if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
        return Err(bad);
    }
    Ok(n)
}

/// The absolute path of `dentry` on the mount `vfsmount` (a `struct path`),
/// as the kernel's `d_path` builds it from the root of the mount tree: the
/// dentry's names up to its mount's root (`vfsmount.mnt_root`), then on
/// from the mount point in the parent mount, until a mount is its own
/// parent. Bounded ([`MAX_COMPONENTS`], [`MAX_MOUNTS`], [`MAX_PATH_LEN`])
/// and cycle-safe; every pointer is read through `mem`.
pub fn d_path<V: VirtualMemory + ?Sized>(
    mem: &V,
    vfsmount: GuestVirtAddr,
    dentry: GuestVirtAddr,
    o: &PathOffsets,
) -> Result<KernelPath, PathError> {
    let mut path = KernelPath::empty();
    let mut name = [0u8; MAX_NAME_LEN];
    // (dentry, mount) pairs passed: a bind mount may show one dentry twice
    // on a real path, never the same pair.
    let mut seen = [(0u64, 0u64); MAX_COMPONENTS + MAX_MOUNTS + 1];
    let mut steps = 0usize;
    let (mut components, mut mounts) = (0usize, 0usize);
    let mut mount = container_of(vfsmount, o.mount_mnt)?;
    let mut root = required(mem, vfsmount, o.vfsmount_mnt_root, "vfsmount.mnt_root")?;
    let mut dentry = dentry;
    loop {
        let pair = (dentry.value(), mount.value());
        let passed = seen.get(..steps).unwrap_or(&[]);
        if passed.contains(&pair) {
            return Err(PathError::Loop { dentry });
        }
        if let Some(slot) = seen.get_mut(steps) {
            *slot = pair;
            steps += 1;
        }
        if dentry == root {
            let parent = required(mem, mount, o.mount_mnt_parent, "mount.mnt_parent")?;
            if parent == mount {
                break;
            }
            mounts += 1;
            if mounts > MAX_MOUNTS {
                return Err(PathError::TooManyMounts);
            }
            dentry = required(mem, mount, o.mount_mnt_mountpoint, "mount.mnt_mountpoint")?;
            mount = parent;
            let vfsmount = field(mount, o.mount_mnt)?;
            root = required(mem, vfsmount, o.vfsmount_mnt_root, "vfsmount.mnt_root")?;
            continue;
        }
        let parent = required(mem, dentry, o.dentry_d_parent, "dentry.d_parent")?;
        if parent == dentry {
            return Err(PathError::Disconnected { dentry });
        }
        components += 1;
        if components > MAX_COMPONENTS {
            return Err(PathError::TooDeep);
        }
        let n = dentry_name(mem, dentry, o, &mut name)?;
        path.prepend(name.get(..n).unwrap_or(&[]))?;
        dentry = parent;
    }
    if path.is_empty() {
        path.prepend(&[])?;
    }
    Ok(path)
}

/// The path of an open file (`file.f_path`).
pub fn file_path<V: VirtualMemory + ?Sized>(
    mem: &V,
    file: GuestVirtAddr,
    o: &PathOffsets,
) -> Result<KernelPath, PathError> {
    let f_path = field(file, o.file_f_path)?;
    let mnt = required(mem, f_path, o.path_mnt, "path.mnt")?;
    let dentry = required(mem, f_path, o.path_dentry, "path.dentry")?;
    d_path(mem, mnt, dentry, o)
}

/// The executable of an address space (`mm_struct.exe_file`), what
/// `/proc/PID/exe` names.
pub fn exe_path<V: VirtualMemory + ?Sized>(
    mem: &V,
    mm: GuestVirtAddr,
    o: &PathOffsets,
) -> Result<KernelPath, PathError> {
    let file = read_pointer(mem, mm, o.mm_exe_file)?.ok_or(PathError::NoExeFile)?;
    file_path(mem, file, o)
}

/// A task's executable; `None` for a kernel thread (no `mm`).
pub fn task_exe<V: VirtualMemory + ?Sized>(
    mem: &V,
    task: &Task,
    o: &PathOffsets,
) -> Option<Result<KernelPath, PathError>> {
    task.mm.map(|mm| exe_path(mem, mm, o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::PageTableBuilder;
    use crate::memory::SliceMemory;
    use crate::paging::{AddressSpace, PagingMode};

    const DIRECT: u64 = 0xffff_8880_0000_0000;
    const RAM: u64 = 0x4_0000;
    const O: PathOffsets = crate::craft::SAMPLE_PATH_OFFSETS;
    const MM: u64 = 0x1000;
    const FILE: u64 = 0x2000;

    fn va(phys: u64) -> GuestVirtAddr {
        GuestVirtAddr::new(DIRECT + phys).expect("canonical")
    }

    /// A crafted mount tree in 256 KiB of RAM mapped at the direct map:
    /// dentries from 0x4000 (0x100 each), names from 0x10000, mounts from
    /// 0x3000 (0x100 each).
    struct Fs {
        b: PageTableBuilder,
        dentries: u64,
        names: u64,
        mounts: u64,
    }

    impl Fs {
        fn new() -> Self {
            let mut b = PageTableBuilder::new(RAM, PagingMode::FourLevel);
            b.map_range(DIRECT, 0, RAM);
            Fs {
                b,
                dentries: 0x4000,
                names: 0x1_0000,
                mounts: 0x3000,
            }
        }

        /// A dentry named `name` under `parent` (itself if `None`).
        fn dentry(&mut self, parent: Option<u64>, name: &[u8]) -> u64 {
            let d = self.dentries;
            self.dentries += 0x100;
            let at = self.names;
            self.names += name.len() as u64 + 1;
            self.b.write(at, name);
            self.b
                .write_u64(d + O.dentry_d_parent, DIRECT + parent.unwrap_or(d));
            let q = d + O.dentry_d_name;
            self.b
                .write(q + O.qstr_len, &(name.len() as u32).to_le_bytes());
            self.b.write_u64(q + O.qstr_name, DIRECT + at);
            d
        }

        /// A mount of the tree at `root` on `mountpoint` of `parent` (its
        /// own parent if `None`); returns the `struct mount`.
        fn mount(&mut self, root: u64, parent: Option<(u64, u64)>) -> u64 {
            let m = self.mounts;
            self.mounts += 0x100;
            let (parent, mountpoint) = parent.unwrap_or((m, root));
            self.b.write_u64(m + O.mount_mnt_parent, DIRECT + parent);
            self.b
                .write_u64(m + O.mount_mnt_mountpoint, DIRECT + mountpoint);
            self.b
                .write_u64(m + O.mount_mnt + O.vfsmount_mnt_root, DIRECT + root);
            m
        }

        /// Makes the mm's executable `dentry` on `mount`.
        fn exe(&mut self, mount: u64, dentry: u64) {
            self.b.write_u64(MM + O.mm_exe_file, DIRECT + FILE);
            let p = FILE + O.file_f_path;
            self.b
                .write_u64(p + O.path_mnt, DIRECT + mount + O.mount_mnt);
            self.b.write_u64(p + O.path_dentry, DIRECT + dentry);
        }

        fn walk(&self) -> Result<KernelPath, PathError> {
            let image = self.b.finish();
            let mem = SliceMemory::flat(&image);
            let space = AddressSpace::new(&mem, self.b.root(), PagingMode::FourLevel);
            exe_path(&space, va(MM), &O)
        }
    }

    /// rootfs ("/") with the ext4 root mounted on it, `/bin/busybox` on
    /// ext4, a tmpfs on `/tmp`: returns (fs, ext4 mount, ext4 root, busybox).
    fn tree() -> (Fs, u64, u64, u64) {
        let mut fs = Fs::new();
        let rootfs_root = fs.dentry(None, b"/");
        let rootfs = fs.mount(rootfs_root, None);
        let ext4_root = fs.dentry(None, b"/");
        let ext4 = fs.mount(ext4_root, Some((rootfs, rootfs_root)));
        let bin = fs.dentry(Some(ext4_root), b"bin");
        let busybox = fs.dentry(Some(bin), b"busybox");
        fs.exe(ext4, busybox);
        (fs, ext4, ext4_root, busybox)
    }

    /// Where the set-uid check reads in the crafted memory (clear of the
    /// path offsets), and an inode at 0x9000.
    const R: crate::linux::crossview::CrossViewReference = crate::craft::SETUID_REFERENCE;
    const INODE: u64 = 0x9000;

    /// A user task (pid 7) with address space `mm`, if any.
    fn task(mm: Option<u64>) -> Task {
        Task {
            address: va(0x8000),
            pid: 7,
            tgid: 7,
            comm: crate::linux::structs::heapless_str::FixedStr::new([0; 16]),
            parent: None,
            parent_pid: None,
            creds: None,
            real_cred: None,
            mm: mm.map(va),
            flags: 0,
        }
    }

    /// A set-uid program is let off only with its path allowed, its file
    /// set-uid root, and its address space marked by a credential change;
    /// whatever cannot be read keeps the finding.
    #[test]
    fn a_set_uid_exec_is_let_off_only_by_path_file_and_dumpable_mode() {
        use crate::linux::crossview::setuid_exec;
        let allowed = |path: &[u8]| path == b"/bin/busybox";
        let none = |_: &[u8]| false;
        let (mut fs, ..) = tree();
        let inode = |fs: &mut Fs, mode: u16, uid: u32| {
            fs.b.write(INODE + R.inode_i_mode, &mode.to_le_bytes());
            fs.b.write(INODE + R.inode_i_uid, &uid.to_le_bytes());
        };
        fs.b.write_u64(FILE + R.file_f_inode, DIRECT + INODE);
        inode(&mut fs, 0o104755, 0);
        let decide = |fs: &Fs, t: &Task, allowed: &dyn Fn(&[u8]) -> bool| {
            let image = fs.b.finish();
            let mem = SliceMemory::flat(&image);
            let space = AddressSpace::new(&mem, fs.b.root(), PagingMode::FourLevel);
            setuid_exec(&space, t, &O, &R, allowed)
        };
        // Dumpable modes: 0 (SUID_DUMP_DISABLE, the default `suid_dumpable`
        // after a set-uid exec), 2 (SUID_DUMP_ROOT); higher flag bits
        // do not matter.
        for flags in [0u64, 2, 0x8000_0000_0000_0000, 0x10_0002] {
            fs.b.write_u64(MM + R.mm_flags, flags);
            assert!(decide(&fs, &task(Some(MM)), &allowed), "{flags:#x}");
            assert!(!decide(&fs, &task(Some(MM)), &none), "{flags:#x}");
        }
        // SUID_DUMP_USER: no set-uid exec, no credential change: a rootkit.
        for flags in [1u64, 0x10_0001, u64::MAX - 2] {
            fs.b.write_u64(MM + R.mm_flags, flags);
            assert!(!decide(&fs, &task(Some(MM)), &allowed), "{flags:#x}");
        }
        fs.b.write_u64(MM + R.mm_flags, 0);
        // The file: not set-uid (set-gid only, or plain), or set-uid to
        // another user.
        for (mode, uid) in [(0o102755, 0), (0o100755, 0), (0o104755, 1000)] {
            inode(&mut fs, mode, uid);
            assert!(!decide(&fs, &task(Some(MM)), &allowed), "{mode:o} {uid}");
        }
        inode(&mut fs, 0o104755, 0);
        assert!(decide(&fs, &task(Some(MM)), &allowed));
        // No inode; an inode outside RAM.
        fs.b.write_u64(FILE + R.file_f_inode, 0);
        assert!(!decide(&fs, &task(Some(MM)), &allowed));
        fs.b.write_u64(FILE + R.file_f_inode, DIRECT + RAM + 0x1000);
        assert!(!decide(&fs, &task(Some(MM)), &allowed));
        fs.b.write_u64(FILE + R.file_f_inode, DIRECT + INODE);
        // No address space; an mm outside RAM; no executable.
        assert!(!decide(&fs, &task(None), &allowed));
        assert!(!decide(&fs, &task(Some(RAM + 0x1000)), &allowed));
        fs.b.write_u64(MM + O.mm_exe_file, 0);
        assert!(!decide(&fs, &task(Some(MM)), &allowed));
    }

    /// The exec's credentials are read through the executable's file;
    /// whatever cannot be read gives none.
    #[test]
    fn exec_ids_are_those_the_executable_was_opened_with() {
        use crate::linux::crossview::exec_ids;
        const CRED: u64 = 0xa000;
        let cred = crate::craft::WALK_CRED_OFFSETS;
        let (mut fs, ..) = tree();
        fs.b.write_u64(FILE + R.file_f_cred, DIRECT + CRED);
        fs.b.write(CRED + cred.uid, &65534u32.to_le_bytes());
        fs.b.write(CRED + cred.euid, &1000u32.to_le_bytes());
        let read = |fs: &Fs, t: &Task| {
            let image = fs.b.finish();
            let mem = SliceMemory::flat(&image);
            let space = AddressSpace::new(&mem, fs.b.root(), PagingMode::FourLevel);
            exec_ids(&space, t, &O, &R, &cred)
        };
        assert_eq!(read(&fs, &task(Some(MM))), Some((65534, 1000)));
        // No address space; an mm outside RAM.
        assert_eq!(read(&fs, &task(None)), None);
        assert_eq!(read(&fs, &task(Some(RAM + 0x1000))), None);
        // A cred outside RAM; none.
        fs.b.write_u64(FILE + R.file_f_cred, DIRECT + RAM + 0x1000);
        assert_eq!(read(&fs, &task(Some(MM))), None);
        fs.b.write_u64(FILE + R.file_f_cred, 0);
        assert_eq!(read(&fs, &task(Some(MM))), None);
        // No executable.
        fs.b.write_u64(FILE + R.file_f_cred, DIRECT + CRED);
        fs.b.write_u64(MM + O.mm_exe_file, 0);
        assert_eq!(read(&fs, &task(Some(MM))), None);
    }

    #[test]
    fn a_path_on_the_root_mount() {
        let (fs, ..) = tree();
        let path = fs.walk().expect("path");
        assert_eq!(path.as_str(), Some("/bin/busybox"));
        assert_eq!(path.len(), 12);
    }

    #[test]
    fn mounts_are_crossed() {
        let (mut fs, ext4, ext4_root, _) = tree();
        // /dev (devtmpfs) on ext4, /dev/shm (tmpfs) on it, /dev/shm/a/evade.
        let dev = fs.dentry(Some(ext4_root), b"dev");
        let devtmpfs_root = fs.dentry(None, b"/");
        let devtmpfs = fs.mount(devtmpfs_root, Some((ext4, dev)));
        let shm = fs.dentry(Some(devtmpfs_root), b"shm");
        let tmpfs_root = fs.dentry(None, b"/");
        let tmpfs = fs.mount(tmpfs_root, Some((devtmpfs, shm)));
        let a = fs.dentry(Some(tmpfs_root), b"a b");
        let evade = fs.dentry(Some(a), b"evade");
        fs.exe(tmpfs, evade);
        assert_eq!(
            fs.walk().expect("path").as_str(),
            Some("/dev/shm/a b/evade")
        );
        // A bind mount of /dev/shm/a onto /dev/shm/a/x: one dentry twice on
        // a real path ("a b" in the bind mount's root and on its mount point).
        let x = fs.dentry(Some(a), b"x");
        let bind = fs.mount(a, Some((tmpfs, x)));
        fs.exe(bind, evade);
        assert_eq!(
            fs.walk().expect("path").as_str(),
            Some("/dev/shm/a b/x/evade")
        );
        // The root of a mount is its mount point's path.
        fs.exe(tmpfs, tmpfs_root);
        assert_eq!(fs.walk().expect("path").as_str(), Some("/dev/shm"));
        let rootfs = 0x3000;
        fs.exe(rootfs, 0x4000);
        assert_eq!(fs.walk().expect("path").as_str(), Some("/"));
    }

    #[test]
    fn loops_end_in_errors() {
        // bin's parent is busybox: a two-dentry loop under the mount root.
        let (mut fs, _, _, busybox) = tree();
        let bin = busybox - 0x100;
        fs.b.write_u64(bin + O.dentry_d_parent, DIRECT + busybox);
        assert!(matches!(fs.walk(), Err(PathError::Loop { .. })));
        // Two mounts on each other's dentries.
        let mut fs = Fs::new();
        let (r1, r2) = (fs.dentry(None, b"/"), fs.dentry(None, b"/"));
        let (d1, d2) = (fs.dentry(Some(r1), b"a"), fs.dentry(Some(r2), b"b"));
        let m1 = 0x3000;
        let m2 = 0x3100;
        fs.mount(r1, Some((m2, d2)));
        fs.mount(r2, Some((m1, d1)));
        fs.exe(m1, d1);
        assert!(matches!(fs.walk(), Err(PathError::Loop { .. })));
        // A chain of mounts deeper than the bound, without a loop.
        let mut fs = Fs::new();
        let top_root = fs.dentry(None, b"/");
        let mut parent = (fs.mount(top_root, None), top_root);
        for _ in 0..=MAX_MOUNTS {
            let mp = fs.dentry(Some(parent.1), b"m");
            let root = fs.dentry(None, b"/");
            parent = (fs.mount(root, Some((parent.0, mp))), root);
        }
        fs.exe(parent.0, parent.1);
        assert_eq!(fs.walk(), Err(PathError::TooManyMounts));
        // A chain of dentries deeper than the bound.
        let (mut fs, ext4, ext4_root, _) = tree();
        let mut d = ext4_root;
        for _ in 0..=MAX_COMPONENTS {
            d = fs.dentry(Some(d), b"d");
        }
        fs.exe(ext4, d);
        assert_eq!(fs.walk(), Err(PathError::TooDeep));
        // A dentry that is its own parent below no mount root.
        let (mut fs, _, _, busybox) = tree();
        let bin = busybox - 0x100;
        fs.b.write_u64(bin + O.dentry_d_parent, DIRECT + bin);
        assert_eq!(fs.walk(), Err(PathError::Disconnected { dentry: va(bin) }));
    }

    #[test]
    fn absurd_names_and_lengths_are_errors() {
        let (mut fs, _, _, busybox) = tree();
        let len_at = busybox + O.dentry_d_name + O.qstr_len;
        for len in [0u32, 256, u32::MAX] {
            fs.b.write(len_at, &len.to_le_bytes());
            assert_eq!(
                fs.walk(),
                Err(PathError::BadName {
                    dentry: va(busybox),
                    len
                })
            );
        }
        // A name of NAME_MAX bytes is fine.
        let (mut fs, ext4, ext4_root, _) = tree();
        let long = [b'x'; MAX_NAME_LEN];
        let d = fs.dentry(Some(ext4_root), &long);
        fs.exe(ext4, d);
        assert_eq!(fs.walk().expect("path").len(), MAX_NAME_LEN + 1);
        // Names no kernel makes: a slash, a NUL, a dot-dot.
        for name in [&b"bin/busybox"[..], b"a\0b", b"..", b"."] {
            let (mut fs, ext4, ext4_root, _) = tree();
            let d = fs.dentry(Some(ext4_root), name);
            fs.exe(ext4, d);
            assert!(
                matches!(fs.walk(), Err(PathError::BadName { .. })),
                "{name:?}"
            );
        }
        // 20 components of 250 bytes: past PATH_MAX.
        let (mut fs, ext4, ext4_root, _) = tree();
        let mut d = ext4_root;
        for _ in 0..20 {
            d = fs.dentry(Some(d), &[b'y'; 250]);
        }
        fs.exe(ext4, d);
        assert_eq!(fs.walk(), Err(PathError::TooLong));
    }

    #[test]
    fn pointers_outside_ram_and_nulls_are_errors() {
        let outside = DIRECT + 0x100_0000;
        let cases: [(u64, u64); 6] = [
            (MM + O.mm_exe_file, outside),
            (FILE + O.file_f_path + O.path_mnt, outside),
            (FILE + O.file_f_path + O.path_dentry, 0xdead_0000_0000_0000),
            (0x4000 + 0x100 * 3 + O.dentry_d_name + O.qstr_name, outside),
            (0x4000 + 0x100 * 3 + O.dentry_d_parent, outside),
            (0x3100 + O.mount_mnt_parent, outside),
        ];
        for (at, value) in cases {
            let (mut fs, ..) = tree();
            fs.b.write_u64(at, value);
            assert!(matches!(fs.walk(), Err(PathError::Read(_))), "{at:#x}");
        }
        // A name that runs off the end of RAM.
        let (mut fs, _, _, busybox) = tree();
        fs.b.write_u64(busybox + O.dentry_d_name + O.qstr_name, DIRECT + RAM - 3);
        assert!(matches!(fs.walk(), Err(PathError::Read(_))));
        // NULLs.
        let (mut fs, ..) = tree();
        fs.b.write_u64(MM + O.mm_exe_file, 0);
        assert_eq!(fs.walk(), Err(PathError::NoExeFile));
        let (mut fs, ..) = tree();
        fs.b.write_u64(0x3100 + O.mount_mnt + O.vfsmount_mnt_root, 0);
        assert!(matches!(
            fs.walk(),
            Err(PathError::Read(StructError::Null { .. }))
        ));
        // A vfsmount pointer below any struct mount (container_of wraps).
        let (mut fs, ..) = tree();
        fs.b.write_u64(FILE + O.file_f_path + O.path_mnt, 0x10);
        assert!(fs.walk().is_err());
    }
}
