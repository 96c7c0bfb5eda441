//! Member offsets for a task's executable path: `mm_struct.exe_file` ->
//! `file.f_path` (a `struct path`: `mnt`, `dentry`) -> the dentry's name
//! (`d_name`, a `struct qstr`: `name`, `len`) and its parents (`d_parent`),
//! crossing mounts through `struct mount` (`mnt_parent`, `mnt_mountpoint`,
//! and the `vfsmount` embedded at `mnt`, whose `mnt_root` ends a mount's
//! part of the path). The walk itself is still to be written; the profile
//! already carries the offsets it takes (from BTF).

use serde::{Deserialize, Serialize};

/// Offsets of the members an executable-path walk reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
