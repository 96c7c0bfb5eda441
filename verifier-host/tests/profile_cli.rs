//! `avm-verifier profile --kernel VMLINUZ -o FILE [--json]` on the stock
//! Debian Mon-VM kernels that `make deps` fetches (.cache/monvm/<series>/;
//! a missing one fails the test and says to run `make deps`), and on broken
//! images.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vmi::profile::{KernelProfile, digest};

fn monvm_dir(series: &str) -> PathBuf {
    let cache = match std::env::var_os("MONVM_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/monvm"),
    };
    let dir = cache.join(series);
    assert!(
        dir.join("vmlinuz").exists(),
        "the Mon-VM kernel {series} is missing ({}): run `make deps` \
         (scripts/fetch-monvm-kernels.sh)",
        dir.join("vmlinuz").display()
    );
    dir
}

fn profile(kernel: &Path, output: &Path, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_avm-verifier"));
    cmd.arg("profile")
        .arg("--kernel")
        .arg(kernel)
        .arg("-o")
        .arg(output);
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

fn check_series(series: &str, syscalls: usize) {
    let dir = monvm_dir(series);
    let release = std::fs::read_to_string(dir.join("release")).unwrap();
    let release = release.trim();
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("kernel.profile");
    // An existing file is replaced.
    std::fs::write(&out_path, b"old").unwrap();

    let out = profile(&dir.join("vmlinuz"), &out_path, false);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{stdout}");
    let bytes = std::fs::read(&out_path).unwrap();
    let p = KernelProfile::decode(&bytes).unwrap();
    assert_eq!(p.kernel.release, release);
    assert!(stdout.starts_with(&format!("kernel    {release} (#1 SMP")));
    assert!(stdout.contains(&format!("{syscalls} system calls")));
    assert!(stdout.contains(&format!(
        "{} bytes, format {}",
        bytes.len(),
        vmi::profile::FORMAT_VERSION
    )));
    let sha = avm_verifier::hex::Hex(&digest(&bytes)).to_string();
    assert!(
        stdout.contains(&format!("digest    sha256:{sha}\n")),
        "{stdout}"
    );
    // No temporary file is left next to it.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);

    let out = profile(&dir.join("vmlinuz"), &out_path, true);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["kernel"]["release"], release);
    assert_eq!(json["profile"]["sha256"], sha.as_str());
    assert_eq!(json["profile"]["bytes"], bytes.len());
    assert_eq!(json["syscalls"]["count"], syscalls);
    assert_eq!(json["syscalls"]["slots"][0]["name"], "__x64_sys_read");
    assert_eq!(json["symbols"]["_text"], "0xffffffff81000000");
    assert_eq!(
        json["symbols"]["init_task"],
        format!("{:#x}", p.symbols.init_task).as_str()
    );
    assert_eq!(json["offsets"]["task"]["comm"], p.offsets.task.comm);
    // The same kernel gives the same bytes.
    assert_eq!(std::fs::read(&out_path).unwrap(), bytes);
}

#[test]
fn profile_of_debian_6_1_cloud() {
    check_series("6.1", 451);
}

#[test]
fn profile_of_debian_6_12_cloud() {
    check_series("6.12", 463);
}

#[test]
fn broken_kernels_are_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("kernel.profile");
    let vmlinuz = std::fs::read(monvm_dir("6.1").join("vmlinuz")).unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("garbage", vec![0x5a; 4096], "not a bzImage"),
        ("empty", Vec::new(), "not a bzImage"),
        (
            "truncated",
            vmlinuz[..vmlinuz.len() / 2].to_vec(),
            "truncated image",
        ),
        (
            "corrupt",
            {
                let mut v = vmlinuz.clone();
                let mid = v.len() / 2;
                v[mid..mid + 4096].fill(0xa5);
                v
            },
            "decompress",
        ),
    ];
    for (name, bytes, reason) in cases {
        let input = tmp.path().join(name);
        std::fs::write(&input, &bytes).unwrap();
        let out = profile(&input, &out_path, false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.starts_with("avm-verifier: ") && stderr.contains(reason),
            "{name}: {stderr}"
        );
        assert!(!out_path.exists(), "{name}: a profile was written");
    }
    // A missing kernel, a directory, an output in a missing directory.
    let out = profile(&tmp.path().join("missing"), &out_path, false);
    assert_eq!(out.status.code(), Some(2));
    let out = profile(tmp.path(), &out_path, false);
    assert_eq!(out.status.code(), Some(2));
    let kernel = monvm_dir("6.1").join("vmlinuz");
    let out = profile(&kernel, &tmp.path().join("no/such/dir/p"), false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/dir/p"));
}
