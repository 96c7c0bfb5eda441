//! The kernel profile the A-VM needs to introspect the Mon-VM's kernel
//! (`vmi::profile`, built from the stock vmlinuz alone, as `avm-verifier
//! profile` builds it), handed to the A-VM as PVH boot module 0 (QEMU
//! `-initrd`). The A-VM measures it into PCR 8 before using it.
//!
//! Building takes a fraction of a second in release builds; profiles are
//! cached next to the kernel, keyed by the vmlinuz's SHA-256 and written
//! atomically, so parallel launches never see half a file.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{MonVmError, MonVmKernel, io_error};
use crate::hex;

/// Largest vmlinuz read (Debian's are about 8-14 MB).
const MAX_VMLINUZ_BYTES: u64 = 256 << 20;

/// A profile ready to hand to the A-VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileFile {
    pub path: PathBuf,
    /// SHA-256 of the file: what the A-VM extends into PCR 8.
    pub sha256: [u8; 32],
}

/// The profile of `kernel`: from the cache in `cache_dir` if present, else
/// built and stored there.
pub fn profile_for(kernel: &MonVmKernel, cache_dir: &Path) -> Result<ProfileFile, MonVmError> {
    let vmlinuz = read_bounded(&kernel.vmlinuz)?;
    let vmlinuz_sha = hex::encode(&Sha256::digest(&vmlinuz));
    // The format version in the name: a profile cached by an older build is
    // rebuilt, not reused.
    let version = vmi::profile::FORMAT_VERSION;
    let path = cache_dir.join(format!(
        "kernel-profile-v{version}-{}.bin",
        &vmlinuz_sha[..16]
    ));
    if let Ok(bytes) = std::fs::read(&path)
        && vmi::profile::KernelProfile::decode(&bytes).is_ok()
    {
        return Ok(ProfileFile {
            sha256: vmi::profile::digest(&bytes),
            path,
        });
    }
    let built = vmi::profile::build::from_vmlinuz(&vmlinuz).map_err(|e| MonVmError::Profile {
        vmlinuz: kernel.vmlinuz.clone(),
        detail: e.to_string(),
    })?;
    std::fs::create_dir_all(cache_dir).map_err(io_error("creating the profile cache"))?;
    let tmp = cache_dir.join(format!(
        ".kernel-profile-{}.{}.tmp",
        &vmlinuz_sha[..16],
        std::process::id()
    ));
    std::fs::write(&tmp, &built.encoded).map_err(io_error("writing the kernel profile"))?;
    std::fs::rename(&tmp, &path).map_err(io_error("storing the kernel profile"))?;
    Ok(ProfileFile {
        path,
        sha256: built.digest,
    })
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, MonVmError> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(io_error(format!("reading {}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_VMLINUZ_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(format!("reading {}", path.display())))?;
    if bytes.len() as u64 > MAX_VMLINUZ_BYTES {
        return Err(MonVmError::NotBzImage {
            path: path.to_path_buf(),
            reason: "larger than 256 MiB",
        });
    }
    Ok(bytes)
}
