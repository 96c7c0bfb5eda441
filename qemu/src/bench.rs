//! `avm-qemu bench`: A-VM image size and boot time.
//!
//! Boot time is wall-clock from spawning QEMU to seeing `AVM-REPORT-END` in
//! the serial log (polled every 2 ms), so it includes QEMU startup and the
//! firmware (SeaBIOS). Provisioning and measuring the TPM happen before
//! QEMU starts and are not included.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::node::{Node, NodeConfig, NodeError};
use crate::qemu::Accel;

/// Target for the stripped image size.
pub const IMAGE_SIZE_TARGET: u64 = 512 * 1024;
/// Target for QEMU start to boot report.
pub const BOOT_TIME_TARGET: Duration = Duration::from_millis(300);

/// Failures while benchmarking.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("`strip` failed on {0}")]
    Strip(PathBuf),
    #[error("run {run}: {source}")]
    Boot { run: usize, source: NodeError },
    #[error("no runs requested")]
    NoRuns,
}

/// Measured numbers.
#[derive(Debug, Clone)]
pub struct BenchResult {
    pub image: PathBuf,
    pub image_bytes: u64,
    pub stripped_bytes: u64,
    pub accel: Accel,
    /// QEMU spawn to boot report, per run.
    pub boot_times: Vec<Duration>,
    /// The kernel's own `boot.us` (entry to report), per run.
    pub kernel_boot_us: Vec<u64>,
}

/// The median (upper median for an even count); `None` if empty.
pub fn median<T: Ord + Copy>(values: &[T]) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

/// Size of `image` after `strip` (into a temporary file in `work_dir`).
pub fn stripped_size(image: &Path, work_dir: &Path) -> Result<u64, BenchError> {
    let out = work_dir.join("avm-stripped.elf");
    let status = std::process::Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(image)
        .status()
        .map_err(|source| BenchError::Io {
            context: "running strip".into(),
            source,
        })?;
    if !status.success() {
        return Err(BenchError::Strip(image.to_path_buf()));
    }
    let size = std::fs::metadata(&out)
        .map_err(|source| BenchError::Io {
            context: "reading the stripped image size".into(),
            source,
        })?
        .len();
    let _ = std::fs::remove_file(&out);
    Ok(size)
}

/// Boots the image `runs` times (each with a fresh node in `work_dir`).
pub fn run_bench(
    image: &Path,
    runs: usize,
    accel: Option<Accel>,
    work_dir: &Path,
) -> Result<BenchResult, BenchError> {
    if runs == 0 {
        return Err(BenchError::NoRuns);
    }
    let image_bytes = std::fs::metadata(image)
        .map_err(|source| BenchError::Io {
            context: format!("reading {}", image.display()),
            source,
        })?
        .len();
    let stripped_bytes = stripped_size(image, work_dir)?;
    let mut config = NodeConfig::new(work_dir.join("node"), image);
    config.exit_after_report = true;
    config.accel = accel;
    let mut boot_times = Vec::with_capacity(runs);
    let mut kernel_boot_us = Vec::with_capacity(runs);
    let mut used_accel = Accel::Tcg;
    for run in 1..=runs {
        let boot = |source| BenchError::Boot { run, source };
        let mut node = Node::launch(&config).map_err(boot)?;
        let report = node
            .wait_for_report(crate::node::DEFAULT_BOOT_TIMEOUT)
            .map_err(boot)?;
        kernel_boot_us.push(report.boot_us);
        if let Some(seen) = node.report_seen_at() {
            boot_times.push(seen.duration_since(node.qemu_started_at()));
        }
        used_accel = node.record().accel.unwrap_or(Accel::Tcg);
        // Pin the choice so later runs do not probe again.
        config.accel = Some(used_accel);
        node.shut_down();
    }
    Ok(BenchResult {
        image: image.to_path_buf(),
        image_bytes,
        stripped_bytes,
        accel: used_accel,
        boot_times,
        kernel_boot_us,
    })
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

impl BenchResult {
    pub fn median_boot_time(&self) -> Option<Duration> {
        median(&self.boot_times)
    }

    /// A markdown table of the results against their targets.
    pub fn to_markdown(&self) -> String {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        let mut out = String::new();
        out += &format!(
            "A-VM image `{}`, {} runs, accel {}\n\n",
            self.image.display(),
            self.boot_times.len(),
            self.accel.as_str()
        );
        out += "| metric | value | target | |\n|---|---|---|---|\n";
        out += &format!(
            "| image size (stripped) | {} bytes ({:.1} KiB) | <= {} KiB | {} |\n",
            self.stripped_bytes,
            self.stripped_bytes as f64 / 1024.0,
            IMAGE_SIZE_TARGET / 1024,
            verdict(self.stripped_bytes <= IMAGE_SIZE_TARGET)
        );
        if let Some(median) = self.median_boot_time() {
            let min = self.boot_times.iter().min().copied().unwrap_or_default();
            let max = self.boot_times.iter().max().copied().unwrap_or_default();
            out += &format!(
                "| boot: QEMU start to boot report (median) | {} (min {}, max {}) | <= {} | {} |\n",
                millis(median),
                millis(min),
                millis(max),
                millis(BOOT_TIME_TARGET),
                verdict(median <= BOOT_TIME_TARGET)
            );
        }
        if let Some(us) = median(&self.kernel_boot_us) {
            out += &format!(
                "| kernel entry to boot report (median, `boot.us`) | {} | | |\n",
                millis(Duration::from_micros(us))
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median::<u32>(&[]), None);
        assert_eq!(median(&[5, 1, 3]), Some(3));
        assert_eq!(median(&[4, 1, 3, 2]), Some(3));
    }

    #[test]
    fn markdown_flags_missed_targets() {
        let result = BenchResult {
            image: "build/avm.elf".into(),
            image_bytes: 100_000,
            stripped_bytes: 600 * 1024,
            accel: Accel::Tcg,
            boot_times: vec![Duration::from_millis(250); 3],
            kernel_boot_us: vec![20_000; 3],
        };
        let table = result.to_markdown();
        assert!(table.contains(
            "| image size (stripped) | 614400 bytes (600.0 KiB) | <= 512 KiB | MISSED |"
        ));
        assert!(table.contains("250.0 ms (min 250.0 ms, max 250.0 ms) | <= 300.0 ms | met |"));
    }
}
