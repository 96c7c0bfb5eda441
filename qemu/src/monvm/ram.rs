//! The Mon-VM's RAM as a shared memory file.
//!
//! The launcher creates the file itself (a new, unique name under
//! `/dev/shm`, sparse until the guest touches it), the Mon-VM's QEMU maps it
//! as its RAM backend (`share=on`) and the A-VM's QEMU maps the same file
//! read-only as an `ivshmem-plain` BAR. QEMU `pc` splits RAM of 3.5 GiB or
//! more at 3 GiB: guest-physical `[0, 3G)` is file offset `[0, 3G)` and
//! `[4G, 4G + rest)` follows at file offset 3G ([`vmi::RamLayout::qemu_pc`];
//! its `Display` is the `monvm.ram=` syntax the A-VM parses). The file is
//! removed when its [`RamFile`] is dropped (tests, failures) unless kept for
//! a detached node, whose `down` removes it by name.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use vmi::RamLayout;

use super::MonVmError;

/// Where RAM files go by default (a tmpfs: RAM stays RAM).
pub const DEFAULT_RAM_DIR: &str = "/dev/shm";
/// Every RAM file's name starts with this; `down` removes only such files.
pub const RAM_FILE_PREFIX: &str = "avm-monvm-";
/// Smallest Mon-VM RAM that boots the Debian cloud kernels with room to spare.
pub const MIN_RAM_MIB: u64 = 128;
/// Largest Mon-VM RAM accepted (64 GiB; the A-VM maps it all as one BAR).
pub const MAX_RAM_MIB: u64 = 64 << 10;

/// Checks a RAM size: a power of two (QEMU refuses PCI BARs of other sizes,
/// and the A-VM sees the whole file as one BAR) within the bounds.
pub fn check_ram_mib(mib: u64) -> Result<(), MonVmError> {
    if !(MIN_RAM_MIB..=MAX_RAM_MIB).contains(&mib) || !mib.is_power_of_two() {
        return Err(MonVmError::BadRamSize(mib));
    }
    Ok(())
}

/// Parses a RAM size: MiB as a plain number, or with a suffix `M`/`MiB`,
/// `G`/`GiB` (`256`, `512M`, `4G`).
pub fn parse_ram_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    let (number, factor) = if let Some(n) = upper
        .strip_suffix("GIB")
        .or_else(|| upper.strip_suffix('G'))
    {
        (n, 1024)
    } else if let Some(n) = upper
        .strip_suffix("MIB")
        .or_else(|| upper.strip_suffix('M'))
    {
        (n, 1)
    } else {
        (upper.as_str(), 1)
    };
    number
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("{text:?} is not a size like 256, 512M or 4G"))
}

/// The guest-physical layout of a Mon-VM with `ram_mib` MiB on QEMU `pc`.
pub fn pc_layout(ram_mib: u64) -> Result<RamLayout, MonVmError> {
    let bytes = ram_mib
        .checked_mul(1 << 20)
        .ok_or(MonVmError::BadRamSize(ram_mib))?;
    RamLayout::qemu_pc(bytes).map_err(|_| MonVmError::BadRamSize(ram_mib))
}

/// A RAM file this process created; removed on drop unless [`kept`].
///
/// [`kept`]: RamFile::keep
#[derive(Debug)]
pub struct RamFile {
    path: PathBuf,
    size: u64,
    remove_on_drop: bool,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl RamFile {
    /// Creates a new, unique, sparse file of `size` bytes in `dir` (mode
    /// 0600). Never reuses or truncates an existing file.
    pub fn create(dir: &Path, size: u64) -> Result<Self, MonVmError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        for _ in 0..16 {
            let name = format!(
                "{RAM_FILE_PREFIX}{}-{:x}-{}",
                std::process::id(),
                nanos,
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let path = dir.join(name);
            let file = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => file,
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(MonVmError::Io {
                        context: format!("creating the Mon-VM RAM file {}", path.display()),
                        source,
                    });
                }
            };
            // From here on the file is ours: removed if anything fails.
            let ram = Self {
                path,
                size,
                remove_on_drop: true,
            };
            file.set_len(size).map_err(|source| MonVmError::Io {
                context: format!("sizing the Mon-VM RAM file {}", ram.path.display()),
                source,
            })?;
            return Ok(ram);
        }
        Err(MonVmError::Io {
            context: format!("creating a unique Mon-VM RAM file in {}", dir.display()),
            source: std::io::ErrorKind::AlreadyExists.into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Leaves the file in place when this handle is dropped (a detached
    /// node; `down` removes it).
    pub fn keep(mut self) -> PathBuf {
        self.remove_on_drop = false;
        self.path.clone()
    }
}

impl Drop for RamFile {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes a RAM file a node recorded, if its name says it is one of ours
/// (a corrupt or edited `node.json` must not make `down` delete anything
/// else). A file already gone is fine.
pub fn remove_recorded(path: &Path) -> Result<(), MonVmError> {
    let ours = path
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(RAM_FILE_PREFIX));
    if !ours {
        return Err(MonVmError::NotARamFile(path.to_path_buf()));
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(MonVmError::Io {
            context: format!("removing the Mon-VM RAM file {}", path.display()),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_ram_size("256"), Ok(256));
        assert_eq!(parse_ram_size("512M"), Ok(512));
        assert_eq!(parse_ram_size("4G"), Ok(4096));
        assert_eq!(parse_ram_size("2GiB"), Ok(2048));
        assert_eq!(parse_ram_size("1mib"), Ok(1));
        assert!(parse_ram_size("4T").is_err());
        assert!(parse_ram_size("-1").is_err());
        assert!(parse_ram_size("").is_err());
        assert!(parse_ram_size("99999999999999999999G").is_err());
        assert!(check_ram_mib(256).is_ok());
        assert!(check_ram_mib(4096).is_ok());
        assert!(check_ram_mib(3584).is_err());
        assert!(check_ram_mib(64).is_err());
        assert!(check_ram_mib(MAX_RAM_MIB * 2).is_err());
    }

    #[test]
    fn layouts_for_pc() {
        assert_eq!(pc_layout(256).unwrap().to_string(), "0x0-0x10000000@0x0");
        assert_eq!(
            pc_layout(4096).unwrap().to_string(),
            "0x0-0xc0000000@0x0,0x100000000-0x140000000@0xc0000000"
        );
        assert_eq!(pc_layout(2048).unwrap().to_string(), "0x0-0x80000000@0x0");
    }

    #[test]
    fn files_are_unique_sparse_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let a = RamFile::create(dir.path(), 1 << 30).unwrap();
        let b = RamFile::create(dir.path(), 1 << 20).unwrap();
        assert_ne!(a.path(), b.path());
        let meta = std::fs::metadata(a.path()).unwrap();
        assert_eq!(meta.len(), 1 << 30);
        use std::os::unix::fs::MetadataExt as _;
        assert!(meta.blocks() * 512 < 1 << 20, "not sparse");
        let a_path = a.path().to_path_buf();
        drop(a);
        assert!(!a_path.exists());
        let kept = b.keep();
        assert!(kept.exists());
        remove_recorded(&kept).unwrap();
        assert!(!kept.exists());
        remove_recorded(&kept).unwrap();
        let other = dir.path().join("precious");
        std::fs::write(&other, b"x").unwrap();
        assert!(matches!(
            remove_recorded(&other),
            Err(MonVmError::NotARamFile(_))
        ));
        assert!(other.exists());
    }
}
