//! Writes an A-VM measurement log with Mon-VM records to stdout (the seed
//! of the `monvm` fuzz target; scripts/fuzz-seeds.sh).

use std::io::Write;

use avm_attest::ima::ng_record;
use sha2::{Digest, Sha256};

fn main() {
    let named = |name: &str| -> [u8; 32] { Sha256::digest(name.as_bytes()).into() };
    let records: [(u32, [u8; 32], &str); 13] = [
        (8, [0x70; 32], "avm-config:kernel-profile"),
        (10, [0; 32], "boot_aggregate"),
        (10, [0x11; 32], "/sbin/init"),
        (10, [0xbb; 32], "/bin/busybox"),
        (
            11,
            named("monvm:kernel:6.1.0-57-cloud-amd64"),
            "monvm:kernel:6.1.0-57-cloud-amd64",
        ),
        (11, [0xd0; 32], "monvm:module:dummy"),
        (11, [0; 32], "monvm:module:hidden"),
        (11, [0x11; 32], "monvm:process:1:init:/sbin/init"),
        (11, named("monvm:process:42:sh"), "monvm:process:42:sh"),
        (11, [0x55; 32], "monvm:process:9:x:/tmp/:/evil"),
        (11, [0x9a; 32], "monvm:boot_patches"),
        (
            12,
            named("e1"),
            "monvm:event:1:violation:sys_call_table:slot 39",
        ),
        (12, named("e2"), "monvm:event:2:clean:sys_call_table"),
    ];
    let mut out = Vec::new();
    for (pcr, digest, name) in records {
        out.extend(ng_record(pcr, &digest, name.as_bytes()));
    }
    std::io::stdout().write_all(&out).expect("stdout");
}
