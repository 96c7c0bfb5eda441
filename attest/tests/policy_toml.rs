//! The policy's TOML form (what avm-verifier stores) and learning from a
//! real SeaBIOS log.

mod common;

use avm_attest::eventlog::{EventLog, event_type};
use avm_attest::hex::encode as to_hex;
use avm_attest::policy::{FirmwareEventRef, POLICY_VERSION, ReferenceValues};

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    avm_attest::hex::decode_array(text).ok()
}
use common::*;
use proptest::prelude::*;

#[test]
fn learned_policy_round_trips_through_toml() {
    let policy = good_policy();
    let text = toml::to_string(&policy).expect("serialize");
    assert!(text.contains(&format!("\"{}\"", to_hex(&image_sha256()))));
    assert!(text.contains("[[firmware_events]]"));
    let back: ReferenceValues = toml::from_str(&text).expect("parse");
    assert_eq!(back, policy);
}

#[test]
fn learn_takes_every_extended_firmware_event_once() {
    let log = EventLog::parse(&data("seabios-eventlog.bin")).expect("log");
    let mut policy = ReferenceValues::default();
    let added = policy.learn_from(&log);
    let extended: Vec<_> = log.events.iter().filter(|e| e.is_extended()).collect();
    assert!(added > 0 && added <= extended.len());
    for e in &extended {
        let digest = e.sha256().expect("sha256");
        assert!(policy.firmware_events.iter().any(|r| r.matches(
            e.pcr_index,
            e.event_type,
            &digest
        )));
    }
    // Learning again adds nothing; the eight separators are identical per
    // PCR but differ by PCR, so all eight are kept.
    assert_eq!(policy.learn_from(&log), 0);
    let separators = policy
        .firmware_events
        .iter()
        .filter(|r| r.event_type == event_type::EV_SEPARATOR)
        .count();
    assert_eq!(separators, 8);
    // Text events get a description.
    assert!(
        policy
            .firmware_events
            .iter()
            .any(|r| r.description.as_deref() == Some("Start Option ROM Scan"))
    );
}

#[test]
fn hand_written_toml_is_accepted() {
    let text = r#"
        avm_image_sha256 = ["8B6A76F6599E15640CF4153037B798FB5C26F3C4336F395EEE4014936616667E"]

        [[firmware_events]]
        pcr = 4
        event_type = 5
        sha256 = "0000000000000000000000000000000000000000000000000000000000000001"
        description = "Calling INT 19h"
    "#;
    let policy: ReferenceValues = toml::from_str(text).expect("parse");
    assert_eq!(policy.version, POLICY_VERSION);
    assert_eq!(policy.avm_image_sha256, [image_sha256()]);
    let mut one = [0; 32];
    one[31] = 1;
    assert_eq!(
        policy.firmware_events,
        [FirmwareEventRef {
            pcr: 4,
            event_type: 5,
            sha256: one,
            description: Some("Calling INT 19h".into())
        }]
    );
    // An empty file is a valid (empty) policy.
    assert_eq!(
        toml::from_str::<ReferenceValues>("").expect("empty"),
        ReferenceValues::default()
    );
}

#[test]
fn violation_memory_is_sticky_unless_set_and_survives_toml() {
    use avm_attest::policy::ViolationMemory;
    let default = ReferenceValues::default();
    assert_eq!(default.monvm_violations, ViolationMemory::Sticky);
    // The default is not written out, so older verifiers read the file.
    assert!(
        !toml::to_string(&default)
            .expect("toml")
            .contains("monvm_violations")
    );
    let current: ReferenceValues = toml::from_str("monvm_violations = \"current\"").expect("parse");
    assert_eq!(current.monvm_violations, ViolationMemory::Current);
    let again: ReferenceValues =
        toml::from_str(&toml::to_string(&current).expect("toml")).expect("parse");
    assert_eq!(again, current);
    for bad in ["\"forgiving\"", "\"Current\"", "1", "\"\""] {
        let text = format!("monvm_violations = {bad}");
        assert!(toml::from_str::<ReferenceValues>(&text).is_err(), "{bad}");
    }
}

#[test]
fn bad_digests_are_rejected() {
    for bad in [
        "\"abc\"",
        "\"zz6a76f6599e15640cf4153037b798fb5c26f3c4336f395eee4014936616667e\"",
        "1",
        "\"8b6a76f6599e15640cf4153037b798fb5c26f3c4336f395eee4014936616667e00\"",
    ] {
        let text = format!("avm_image_sha256 = [{bad}]");
        assert!(toml::from_str::<ReferenceValues>(&text).is_err(), "{bad}");
    }
}

proptest! {
    #[test]
    fn hex_round_trips(bytes in proptest::array::uniform32(any::<u8>())) {
        prop_assert_eq!(parse_hex32(&to_hex(&bytes)), Some(bytes));
        prop_assert_eq!(parse_hex32(&to_hex(&bytes).to_uppercase()), Some(bytes));
    }

    #[test]
    fn hex_parser_never_panics(s in ".{0,80}") {
        if let Some(bytes) = parse_hex32(&s) {
            prop_assert_eq!(to_hex(&bytes), s.to_lowercase());
        }
    }
}

/// Prints the learned policy (`cargo test --test policy_toml -- --ignored
/// --nocapture print_learned_policy`), the source of docs/policy.md's example.
#[test]
#[ignore]
fn print_learned_policy() {
    println!("{}", toml::to_string(&good_policy()).expect("serialize"));
}
