//! `check_measurement_log`: what a quote proves of the A-VM's own
//! measurement log (PCRs 8-15, IMA binary records).

use avm_attest::ima::{self, ImaRecord};
use avm_attest::verify::{Reason, check_measurement_log};
use avm_attest::wire::PcrValue;

fn log(records: &[(u32, u8, &str)]) -> Vec<u8> {
    records
        .iter()
        .flat_map(|(pcr, byte, name)| ima::ng_record(*pcr, &[*byte; 32], name.as_bytes()))
        .collect()
}

/// The quoted PCRs 0-15 after replaying `bytes` from zero.
fn quoted(bytes: &[u8]) -> Vec<PcrValue> {
    let records = ima::parse_list(bytes, 1000).expect("parses");
    let pcrs = ima::replay_sha256(&records, &[[0; 32]; 24]);
    (0u8..16)
        .map(|index| PcrValue {
            index,
            digest: pcrs[usize::from(index)],
        })
        .collect()
}

const GOOD: [(u32, u8, &str); 4] = [
    (8, 1, "avm-config:kernel-profile"),
    (10, 2, "boot_aggregate"),
    (10, 3, "/sbin/init"),
    (10, 4, "/bin/busybox"),
];

#[test]
fn a_log_the_quote_covers_is_proven_with_its_config_digest() {
    let bytes = log(&GOOD);
    let check = check_measurement_log(Some(&bytes), &quoted(&bytes)).expect("proven");
    assert_eq!((check.proven, check.after_quote), (4, 0));
    assert_eq!(check.per_pcr[0], 1);
    assert_eq!(check.per_pcr[2], 3);
    assert_eq!(check.config_digest, Some([1; 32]));
}

#[test]
fn records_appended_after_the_quote_are_counted_not_proven() {
    let at_quote = log(&GOOD);
    let mut later = at_quote.clone();
    later.extend(log(&[(10, 5, "/usr/bin/avm-hello"), (11, 6, "avm:text")]));
    let check = check_measurement_log(Some(&later), &quoted(&at_quote)).expect("prefix proven");
    assert_eq!((check.proven, check.after_quote), (4, 2));
}

#[test]
fn removed_changed_or_reordered_records_fail_the_replay() {
    let bytes = log(&GOOD);
    let quote = quoted(&bytes);
    let mut removed = GOOD.to_vec();
    removed.remove(2);
    let mut changed = GOOD.to_vec();
    changed[3].1 = 9;
    let mut reordered = GOOD.to_vec();
    reordered.swap(2, 3);
    for altered in [removed, changed, reordered] {
        assert_eq!(
            check_measurement_log(Some(&log(&altered)), &quote),
            Err(Reason::MeasurementLogReplayMismatch { pcr: 10 })
        );
    }
    // The config record itself.
    let mut other_config = GOOD.to_vec();
    other_config[0].1 = 7;
    assert_eq!(
        check_measurement_log(Some(&log(&other_config)), &quote),
        Err(Reason::MeasurementLogReplayMismatch { pcr: 8 })
    );
}

#[test]
fn malformed_inconsistent_and_missing_logs() {
    let bytes = log(&GOOD);
    let quote = quoted(&bytes);
    assert_eq!(
        check_measurement_log(Some(&bytes[..bytes.len() - 1]), &quote),
        Err(Reason::MeasurementLogMalformed)
    );
    // A record in a firmware PCR is not the A-VM's to make.
    let firmware = log(&[(3, 1, "x")]);
    assert_eq!(
        check_measurement_log(Some(&firmware), &quote),
        Err(Reason::MeasurementLogMalformed)
    );
    // A record whose template hash does not match its data.
    let records = ima::parse_list(&bytes, 10).expect("parses");
    let mut rewritten = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut hash = r.template_hash;
        if i == 1 {
            hash[0] ^= 1;
        }
        ImaRecord {
            template_hash: hash,
            ..*r
        }
        .emit(&mut rewritten);
    }
    assert_eq!(
        check_measurement_log(Some(&rewritten), &quote),
        Err(Reason::MeasurementLogInconsistent { index: 1 })
    );
    // No log: fine while nothing was measured, refused otherwise.
    let zero = quoted(&[]);
    assert!(check_measurement_log(None, &zero).is_ok());
    assert_eq!(
        check_measurement_log(None, &quote),
        Err(Reason::MeasurementLogMissing)
    );
    // An empty log against measured PCRs proves nothing.
    assert_eq!(
        check_measurement_log(Some(&[]), &quote),
        Err(Reason::MeasurementLogReplayMismatch { pcr: 8 })
    );
}

#[test]
fn a_full_log_is_untrusted_until_the_a_vm_starts_afresh() {
    let mut records = GOOD.to_vec();
    records.push((12, 9, "avm:log-full"));
    let bytes = log(&records);
    assert_eq!(
        check_measurement_log(Some(&bytes), &quoted(&bytes)),
        Err(Reason::MeasurementLogFull { index: 4 })
    );
    // Only a proven record counts: appended after the quote, it is not
    // (yet) a reason, and the next quote proves it.
    let before = log(&GOOD);
    assert!(check_measurement_log(Some(&bytes), &quoted(&before)).is_ok());
    // The name must be exactly the marker.
    let mut similar = GOOD.to_vec();
    similar.push((12, 9, "avm:log-full-not"));
    let bytes = log(&similar);
    assert!(check_measurement_log(Some(&bytes), &quoted(&bytes)).is_ok());
}
