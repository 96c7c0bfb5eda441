//! Choosing the accelerator: KVM only when it is proven to be real.
//!
//! On some hosts /dev/kvm exists but is an instruction emulator (about 3 us
//! per instruction, no SSE), far slower than TCG and unable to run the
//! kernel. So KVM is chosen only if a tiny probe guest, a 64 KiB BIOS that
//! counts down a 10-million iteration loop and exits through
//! isa-debug-exit, finishes within [`PROBE_TIMEOUT`]: real KVM takes a few
//! milliseconds plus QEMU's startup, the emulator about a minute. The answer
//! is cached per host boot in the temp directory so only the first launch
//! pays for the probe.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::ChildGuard;
use crate::qemu::{Accel, QEMU_BINARY};

/// How long the probe guest may take under real KVM, QEMU startup included.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Size of the probe's BIOS image (QEMU wants a multiple of 64 KiB).
const PROBE_BIOS_SIZE: usize = 64 * 1024;
/// Exit status of QEMU when the probe completes: (0x10 << 1) | 1.
const PROBE_SUCCESS_STATUS: i32 = 33;

/// Real-mode code placed at the reset vector (the last 16 bytes of the
/// BIOS): `mov ecx, 10_000_000; l: dec ecx; jnz l; mov al, 0x10;
/// out 0xf4, al; hlt`.
const PROBE_RESET_VECTOR: [u8; 15] = [
    0x66, 0xb9, 0x80, 0x96, 0x98, 0x00, // mov ecx, 10_000_000
    0x66, 0x49, // dec ecx
    0x75, 0xfc, // jnz -4
    0xb0, 0x10, // mov al, 0x10
    0xe6, 0xf4, // out 0xf4, al
    0xf4, // hlt
];

/// The probe BIOS image.
pub fn probe_bios() -> Vec<u8> {
    let mut bios = vec![0u8; PROBE_BIOS_SIZE];
    let start = PROBE_BIOS_SIZE - 16;
    bios[start..start + PROBE_RESET_VECTOR.len()].copy_from_slice(&PROBE_RESET_VECTOR);
    bios
}

/// Runs the probe guest under `accel` in `work_dir`; true if it finished
/// with the expected status within the timeout.
pub fn probe_runs(accel: Accel, work_dir: &Path) -> bool {
    let bios_path = work_dir.join("accel-probe.bios");
    if std::fs::write(&bios_path, probe_bios()).is_err() {
        return false;
    }
    let mut command = Command::new(QEMU_BINARY);
    command
        .args(["-M", "pc", "-accel", accel.as_str(), "-m", "16M"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-bios")
        .arg(&bios_path)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let finished = ChildGuard::spawn(command, "kvm-probe")
        .and_then(|mut guard| guard.wait_timeout(PROBE_TIMEOUT));
    let _ = std::fs::remove_file(&bios_path);
    matches!(finished, Ok(Some(status)) if status.code() == Some(PROBE_SUCCESS_STATUS))
}

fn cache_file() -> Option<PathBuf> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let boot_id = boot_id.trim();
    boot_id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'-')
        .then(|| std::env::temp_dir().join(format!("avm-qemu-accel-{boot_id}")))
}

/// The accelerator to use: KVM if /dev/kvm opens and the probe proves it
/// fast, else TCG.
pub fn choose_accel(work_dir: &Path) -> Accel {
    let kvm_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !kvm_opens {
        return Accel::Tcg;
    }
    let cache = cache_file();
    if let Some(cached) = cache.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        match cached.trim() {
            "kvm" => return Accel::Kvm,
            "tcg" => return Accel::Tcg,
            _ => {}
        }
    }
    let accel = if probe_runs(Accel::Kvm, work_dir) {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    if let Some(cache) = cache {
        let _ = std::fs::write(cache, accel.as_str());
    }
    accel
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_bios_has_code_at_the_reset_vector() {
        let bios = probe_bios();
        assert_eq!(bios.len() % (64 * 1024), 0);
        assert_eq!(&bios[bios.len() - 16..bios.len() - 1], &PROBE_RESET_VECTOR);
    }

    /// The probe guest itself works (under TCG, which is always there): a
    /// probe that never finished would make KVM undetectable.
    #[test]
    fn probe_guest_finishes_under_tcg() {
        let dir = tempfile::tempdir().unwrap();
        assert!(probe_runs(Accel::Tcg, dir.path()));
    }
}
