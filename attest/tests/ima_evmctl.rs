//! The IMA lists `avm_attest::ima` writes are what standard IMA tooling
//! reads: `evmctl ima_measurement` (ima-evm-utils) replays them against
//! the PCR values our replay computes, and refuses a rewritten record.

use std::path::Path;
use std::process::Command;

use avm_attest::hex;
use avm_attest::ima::{self, IMA_PCR, ImaRecord};

/// evmctl's `--pcrs` file: "PCR-00: <hex>" ... "PCR-23: <hex>".
fn write_pcrs(path: &Path, pcrs: &[[u8; 32]; 24]) {
    let text: String = pcrs
        .iter()
        .enumerate()
        .map(|(i, pcr)| format!("PCR-{i:02}: {}\n", hex::encode(pcr)))
        .collect();
    std::fs::write(path, text).expect("write pcrs");
}

fn evmctl(dir: &Path, log: &str) -> (bool, String) {
    let out = Command::new("evmctl")
        .args(["ima_measurement", "--ignore-violations", "--pcrs"])
        .arg(format!("sha256,{}", dir.join("pcrs-sha256").display()))
        .arg(dir.join(log))
        .output()
        .expect("evmctl is installed (make deps: ima-evm-utils)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn evmctl_replays_our_lists_and_refuses_a_rewritten_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A boot_aggregate-like first record, then files in PCR 10, and one
    // record in another PCR (the A-VM logs into several).
    let mut list = ima::ng_record(IMA_PCR, &[0x11; 32], b"boot_aggregate");
    for i in 0..50u8 {
        let name = format!("/usr/lib/x86_64-linux-gnu/libexample{i}.so.1");
        list.extend(ima::ng_record(IMA_PCR, &[i; 32], name.as_bytes()));
    }
    list.extend(ima::ng_record(11, &[0xab; 32], b"avm:monvm-kernel-text"));
    let records = ima::parse_list(&list, 1000).expect("parses");
    let pcrs = ima::replay_sha256(&records, &[[0; 32]; 24]);
    std::fs::write(dir.path().join("good"), &list).expect("write");
    write_pcrs(&dir.path().join("pcrs-sha256"), &pcrs);
    let (ok, text) = evmctl(dir.path(), "good");
    assert!(ok, "evmctl refused our list: {text}");
    assert!(text.contains("Matched per TPM bank"), "{text}");

    // A record rewritten consistently (digest changed, template hash
    // recomputed): the list no longer replays to the quoted PCRs.
    let mut rewritten = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if i == 20 {
            let data = ima::ng_template_data("sha256", &[0xee; 32], b"/usr/bin/evil", None);
            ImaRecord {
                template_hash: ima::template_sha1(&data),
                template_data: &data,
                ..*r
            }
            .emit(&mut rewritten);
        } else {
            r.emit(&mut rewritten);
        }
    }
    std::fs::write(dir.path().join("rewritten"), &rewritten).expect("write");
    let (ok, text) = evmctl(dir.path(), "rewritten");
    assert!(!ok, "evmctl accepted a rewritten list: {text}");
}
