//! verify_evidence on real quotes made by swtpm + tpm2-tools (see
//! tests/data/regenerate-quotes.sh), with one negative test per reason.

mod common;

use avm_attest::eventlog::{EventLog, event_type};
use avm_attest::pcr::PcrMask;
use avm_attest::policy::{FirmwareEventRef, ReferenceValues};
use avm_attest::tpm::{self, Attest, Public, Signature, pcr_digest};
use avm_attest::verify::{
    EvidenceInput, MissingReference, Reason, Verdict, verify_evidence, verify_quote,
};
use avm_attest::wire::Evidence;
use common::*;

const KINDS: [&str; 2] = ["ecc", "rsa"];

fn ak_public(kind: &str) -> Vec<u8> {
    data(&format!("ak-{kind}.pub"))
}

fn run(
    evidence: &Evidence,
    nonce: &[u8],
    ak_tpm2b: &[u8],
    policy: Option<&ReferenceValues>,
) -> Verdict {
    let ak = Public::parse_tpm2b(ak_tpm2b).expect("AK public");
    let key = ak.verifying_key().expect("supported AK");
    verify_evidence(
        &EvidenceInput::new(evidence, nonce, key),
        policy,
        &verifier(),
    )
}

fn good(kind: &str) -> Verdict {
    run(
        &evidence(kind),
        &nonce(),
        &ak_public(kind),
        Some(&good_policy()),
    )
}

fn codes(verdict: &Verdict) -> Vec<&'static str> {
    verdict.reasons.iter().map(Reason::code).collect()
}

#[test]
fn genuine_quotes_are_trusted() {
    for kind in KINDS {
        let verdict = good(kind);
        assert_eq!(verdict.reasons, vec![], "{kind}");
        assert!(verdict.trusted);
        assert_eq!(verdict.avm_image, Some(image_sha256()));
        let quote = verdict.quote.expect("summary");
        assert!(quote.signature_valid);
        assert_eq!(quote.pcr_mask, Some(PcrMask::FIRMWARE));
    }
}

#[test]
fn fixtures_parse_as_tpm_structures() {
    for kind in KINDS {
        let ak_bytes = ak_public(kind);
        let ak = Public::parse_tpm2b(&ak_bytes).expect("AK");
        assert_eq!(
            ak.name().expect("name").as_slice(),
            data(&format!("ak-{kind}.name"))
        );
        assert!(ak.has_attributes(tpm::object_attr::RESTRICTED | tpm::object_attr::SIGN_ENCRYPT));
        assert!(ak.has_attributes(tpm::object_attr::FIXED_TPM));
        let ek_bytes = data(&format!("ek-{kind}.pub"));
        let ek = Public::parse_tpm2b(&ek_bytes).expect("EK");
        assert!(ek.has_attributes(tpm::object_attr::RESTRICTED | tpm::object_attr::DECRYPT));
        assert!(ek.verifying_key().is_some());

        let msg = data(&format!("quote-{kind}.msg"));
        let attest = Attest::parse(&msg).expect("TPMS_ATTEST");
        assert!(attest.is_quote());
        assert_eq!(attest.extra_data, nonce());
        assert_eq!(attest.emit(), msg);
        let quote = attest.quote.expect("quote info");
        assert_eq!(quote.pcr_select.sha256_mask(), Some(PcrMask::FIRMWARE));
        let values = pcrs("pcrs.txt");
        assert_eq!(
            quote.pcr_digest,
            pcr_digest(values.iter().map(|p| &p.digest))
        );
        // The quote names the AK that signed it.
        assert_eq!(attest.qualified_signer.len(), 34);

        let sig_bytes = data(&format!("quote-{kind}.sig"));
        let sig = Signature::parse(&sig_bytes).expect("TPMT_SIGNATURE");
        assert_eq!(sig.emit(), sig_bytes);
        assert_eq!(sig.hash(), tpm::alg::SHA256);
        match (kind, sig) {
            ("ecc", Signature::Ecdsa { .. }) | ("rsa", Signature::RsaSsa { .. }) => {}
            other => panic!("unexpected signature {other:?}"),
        }
    }
}

#[test]
fn flipped_attest_byte_breaks_the_signature() {
    for kind in KINDS {
        let msg_len = evidence(kind).attest.len();
        // Every byte, from the magic to the PCR digest.
        for at in 0..msg_len {
            let mut ev = evidence(kind);
            ev.attest[at] ^= 0x01;
            let verdict = good_with(kind, ev);
            assert!(!verdict.trusted, "{kind} byte {at}");
            assert!(
                verdict.reasons.contains(&Reason::SignatureInvalid)
                    || matches!(verdict.reasons[..], [Reason::QuoteMalformed(_)]),
                "{kind} byte {at}: {:?}",
                verdict.reasons
            );
        }
    }
}

fn good_with(kind: &str, ev: Evidence) -> Verdict {
    run(&ev, &nonce(), &ak_public(kind), Some(&good_policy()))
}

#[test]
fn flipped_signature_byte_is_invalid() {
    for kind in KINDS {
        let sig_len = evidence(kind).signature.len();
        // Skip the algorithm/hash/size headers: those are other reasons.
        for at in [6, sig_len / 2, sig_len - 1] {
            let mut ev = evidence(kind);
            ev.signature[at] ^= 0x80;
            let verdict = good_with(kind, ev);
            assert_eq!(codes(&verdict), ["signature-invalid"], "{kind} byte {at}");
            assert!(!verdict.quote.expect("summary").signature_valid);
        }
    }
}

#[test]
fn malformed_or_mismatched_signatures() {
    for kind in KINDS {
        let mut ev = evidence(kind);
        ev.signature.truncate(ev.signature.len() - 1);
        assert_eq!(codes(&good_with(kind, ev)), ["signature-malformed"]);

        // The hash field says SHA-1.
        let mut ev = evidence(kind);
        ev.signature[3] = 0x04;
        assert_eq!(
            codes(&good_with(kind, ev)),
            ["signature-algorithm-mismatch"]
        );
    }
    // An ECDSA quote checked against the RSA AK, and vice versa.
    let verdict = run(
        &evidence("ecc"),
        &nonce(),
        &ak_public("rsa"),
        Some(&good_policy()),
    );
    assert_eq!(codes(&verdict), ["signature-algorithm-mismatch"]);
    let verdict = run(
        &evidence("rsa"),
        &nonce(),
        &ak_public("ecc"),
        Some(&good_policy()),
    );
    assert_eq!(codes(&verdict), ["signature-algorithm-mismatch"]);
}

#[test]
fn a_key_that_did_not_sign_is_rejected() {
    // The EK is a P-256 (resp. RSA-2048) key of the same TPM, but not the AK.
    for kind in KINDS {
        let verdict = run(
            &evidence(kind),
            &nonce(),
            &data(&format!("ek-{kind}.pub")),
            Some(&good_policy()),
        );
        assert_eq!(codes(&verdict), ["signature-invalid"], "{kind}");
    }
}

#[test]
fn other_nonce_is_rejected() {
    for kind in KINDS {
        let mut nonce = nonce();
        nonce[0] ^= 1;
        let verdict = run(
            &evidence(kind),
            &nonce,
            &ak_public(kind),
            Some(&good_policy()),
        );
        assert_eq!(codes(&verdict), ["nonce-mismatch"]);
        let verdict = run(&evidence(kind), &[], &ak_public(kind), Some(&good_policy()));
        assert_eq!(codes(&verdict), ["nonce-mismatch"]);
    }
}

#[test]
fn reported_pcrs_must_match_the_quote() {
    for kind in KINDS {
        // A changed value: the digest no longer matches.
        let mut ev = evidence(kind);
        ev.pcrs[4].digest[31] ^= 1;
        assert_eq!(codes(&good_with(kind, ev)), ["pcr-digest-mismatch"]);

        // Two values swapped: same set, wrong order in the digest.
        let mut ev = evidence(kind);
        let (a, b) = (ev.pcrs[1].digest, ev.pcrs[2].digest);
        ev.pcrs[1].digest = b;
        ev.pcrs[2].digest = a;
        assert_eq!(codes(&good_with(kind, ev)), ["pcr-digest-mismatch"]);

        // A value missing, or an extra/duplicate index: selection differs.
        let mut ev = evidence(kind);
        ev.pcrs.pop();
        assert_eq!(codes(&good_with(kind, ev)), ["pcr-selection-mismatch"]);
        let mut ev = evidence(kind);
        let extra = ev.pcrs[0].clone();
        ev.pcrs.push(extra);
        assert_eq!(codes(&good_with(kind, ev)), ["pcr-selection-mismatch"]);
        let mut ev = evidence(kind);
        ev.pcrs[7].index = 9;
        assert_eq!(codes(&good_with(kind, ev)), ["pcr-selection-mismatch"]);

        // Reported in another order is fine: the digest follows the selection.
        let mut ev = evidence(kind);
        ev.pcrs.reverse();
        assert!(good_with(kind, ev).trusted);
    }
}

#[test]
fn required_pcrs_must_be_quoted() {
    let ev = evidence("ecc");
    let ak_bytes = ak_public("ecc");
    let ak = Public::parse_tpm2b(&ak_bytes).expect("AK");
    let nonce = nonce();
    let mut input = EvidenceInput::new(&ev, &nonce, ak.verifying_key().expect("key"));
    input.required_pcrs = PcrMask::from_bits(0x1ff);
    let verdict = verify_evidence(&input, Some(&good_policy()), &verifier());
    assert_eq!(verdict.reasons, [Reason::PcrNotQuoted { pcr: 8 }]);
}

/// Evidence whose log was altered by `change` (then re-emitted).
fn with_log(kind: &str, change: impl FnOnce(&mut EventLog)) -> Evidence {
    let mut ev = evidence(kind);
    let mut log = EventLog::parse(&ev.event_log).expect("fixture log");
    change(&mut log);
    ev.event_log = log.emit();
    ev
}

fn first_index(log: &EventLog, pcr: u32) -> usize {
    log.events_for_pcr(pcr).next().expect("event").0
}

#[test]
fn altered_event_log_is_rejected() {
    for kind in KINDS {
        // Untouched but without the zero padding: still trusted.
        assert!(good_with(kind, with_log(kind, |_| {})).trusted);

        // Removed: the first PCR 4 event.
        let ev = with_log(kind, |log| {
            let i = first_index(log, 4);
            log.events.remove(i);
        });
        assert_eq!(
            good_with(kind, ev).reasons,
            [Reason::EventLogReplayMismatch { pcr: 4 }]
        );

        // Changed: the SHA-256 digest of the first PCR 2 event.
        let ev = with_log(kind, |log| {
            let i = first_index(log, 2);
            let d = log.events[i]
                .digests
                .iter_mut()
                .find(|d| d.algorithm == 0x000B)
                .expect("sha256");
            d.digest[0] ^= 1;
        });
        assert_eq!(
            good_with(kind, ev).reasons,
            [Reason::EventLogReplayMismatch { pcr: 2 }]
        );

        // Reordered: the two PCR 2 events swapped.
        let ev = with_log(kind, |log| {
            let idx: Vec<usize> = log.events_for_pcr(2).map(|(i, _)| i).collect();
            assert!(idx.len() >= 2);
            log.events.swap(idx[0], idx[1]);
        });
        assert_eq!(
            good_with(kind, ev).reasons,
            [Reason::EventLogReplayMismatch { pcr: 2 }]
        );

        // A PCR 0 event removed: PCR 0 is explained by no image any more.
        let ev = with_log(kind, |log| {
            let i = first_index(log, 0);
            log.events.remove(i);
        });
        let verdict = good_with(kind, ev);
        assert_eq!(verdict.reasons, [Reason::AvmImageUnknown]);
        assert_eq!(verdict.avm_image, None);

        // Moved to another PCR: two replay mismatches.
        let ev = with_log(kind, |log| {
            let i = first_index(log, 5);
            log.events[i].pcr_index = 6;
        });
        assert_eq!(
            good_with(kind, ev).reasons,
            [
                Reason::EventLogReplayMismatch { pcr: 5 },
                Reason::EventLogReplayMismatch { pcr: 6 }
            ]
        );
    }
}

#[test]
fn missing_or_malformed_log() {
    let mut ev = evidence("ecc");
    ev.event_log.clear();
    assert_eq!(codes(&good_with("ecc", ev)), ["event-log-missing"]);
    let mut ev = evidence("ecc");
    ev.event_log.truncate(100);
    assert_eq!(codes(&good_with("ecc", ev)), ["event-log-malformed"]);
}

#[test]
fn unknown_image_is_rejected() {
    let mut policy = good_policy();
    policy.avm_image_sha256[0][5] ^= 1;
    let verdict = run(&evidence("ecc"), &nonce(), &ak_public("ecc"), Some(&policy));
    assert_eq!(verdict.reasons, [Reason::AvmImageUnknown]);

    // Any of several allowed images may match.
    let mut policy = good_policy();
    policy.avm_image_sha256.insert(0, [0x42; 32]);
    let verdict = run(&evidence("ecc"), &nonce(), &ak_public("ecc"), Some(&policy));
    assert!(verdict.trusted);
    assert_eq!(verdict.avm_image, Some(image_sha256()));
}

#[test]
fn unknown_firmware_event_is_rejected() {
    let log = EventLog::parse(&data("seabios-eventlog.bin")).expect("log");
    let (index, event) = log
        .events
        .iter()
        .enumerate()
        .find(|(_, e)| e.pcr_index == 1 && e.is_extended())
        .expect("a PCR 1 event");
    let digest = event.sha256().expect("sha256");
    let mut policy = good_policy();
    policy
        .firmware_events
        .retain(|r| !r.matches(1, event.event_type, &digest));
    let verdict = run(&evidence("ecc"), &nonce(), &ak_public("ecc"), Some(&policy));
    assert!(!verdict.trusted);
    assert!(
        verdict
            .reasons
            .contains(&Reason::FirmwareEventUnknown { pcr: 1, index })
    );
    assert!(
        verdict
            .reasons
            .iter()
            .all(|r| r.code() == "firmware-event-unknown")
    );
}

#[test]
fn missing_reference_values_are_reported_but_everything_else_is_checked() {
    let verdict = run(&evidence("ecc"), &nonce(), &ak_public("ecc"), None);
    assert_eq!(
        verdict.reasons,
        [Reason::ReferenceValuesMissing(MissingReference::All)]
    );
    assert!(!verdict.trusted);

    // The other checks still run without a policy.
    let mut wrong = nonce();
    wrong[3] ^= 1;
    let ev = with_log("ecc", |log| {
        let i = first_index(log, 3);
        log.events.remove(i);
    });
    let verdict = run(&ev, &wrong, &ak_public("ecc"), None);
    assert_eq!(
        verdict.reasons,
        [
            Reason::NonceMismatch,
            Reason::EventLogReplayMismatch { pcr: 3 },
            Reason::ReferenceValuesMissing(MissingReference::All)
        ]
    );

    // Image only (`policy init`), firmware not learned yet.
    let policy = ReferenceValues::for_image(image_sha256());
    let verdict = run(&evidence("ecc"), &nonce(), &ak_public("ecc"), Some(&policy));
    assert_eq!(
        verdict.reasons,
        [Reason::ReferenceValuesMissing(
            MissingReference::FirmwareEvents
        )]
    );
    assert_eq!(verdict.avm_image, Some(image_sha256()));

    // Firmware learned, no image.
    let mut policy = good_policy();
    policy.avm_image_sha256.clear();
    let verdict = run(&evidence("ecc"), &nonce(), &ak_public("ecc"), Some(&policy));
    assert_eq!(
        verdict.reasons,
        [Reason::ReferenceValuesMissing(MissingReference::AvmImage)]
    );
}

#[test]
fn non_quotes_and_broken_quotes() {
    // Magic changed: not a quote, and the signature no longer matches.
    let mut ev = evidence("ecc");
    ev.attest[0] = 0;
    assert_eq!(
        codes(&good_with("ecc", ev)),
        ["signature-invalid", "not-a-quote"]
    );
    // Type changed to certify (0x8017): the quote body is not parsed.
    let mut ev = evidence("ecc");
    ev.attest[5] = 0x17;
    assert_eq!(
        codes(&good_with("ecc", ev)),
        ["signature-invalid", "not-a-quote"]
    );
    // Truncated or extended: malformed, nothing else is checked.
    let mut ev = evidence("ecc");
    ev.attest.pop();
    assert_eq!(codes(&good_with("ecc", ev)), ["quote-malformed"]);
    let mut ev = evidence("ecc");
    ev.attest.push(0);
    assert_eq!(codes(&good_with("ecc", ev)), ["quote-malformed"]);
}

#[test]
fn reason_codes_are_distinct_and_kebab_case() {
    let all = [
        Reason::QuoteMalformed(tpm::TpmParseError::Truncated),
        Reason::SignatureMalformed(tpm::TpmParseError::Truncated),
        Reason::SignatureAlgorithmMismatch,
        Reason::SignatureInvalid,
        Reason::NotAQuote {
            magic: 0,
            attest_type: 0,
        },
        Reason::NonceMismatch,
        Reason::PcrSelectionMismatch,
        Reason::PcrNotQuoted { pcr: 0 },
        Reason::PcrDigestMismatch,
        Reason::EventLogMissing,
        Reason::EventLogMalformed,
        Reason::EventLogReplayMismatch { pcr: 1 },
        Reason::AvmImageUnknown,
        Reason::FirmwareEventUnknown { pcr: 0, index: 0 },
        Reason::FirmwareSequenceUnknown { pcr: 0 },
        Reason::ReferenceValuesMissing(MissingReference::All),
        Reason::MeasurementLogMissing,
        Reason::MeasurementLogMalformed,
        Reason::MeasurementLogInconsistent { index: 0 },
        Reason::MeasurementLogReplayMismatch { pcr: 8 },
        Reason::MonVmProfileUnknown,
        Reason::MonVmProfileMissing,
    ];
    let all: Vec<Reason> = all
        .into_iter()
        .chain(avm_attest::monvm::MonVmKind::ALL.map(|kind| {
            Reason::MonVm(avm_attest::monvm::MonVmFinding {
                kind,
                index: 0,
                detail: String::new(),
            })
        }))
        .collect();
    let mut codes: Vec<_> = all.iter().map(Reason::code).collect();
    for code in &codes {
        assert!(
            code.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "{code}"
        );
    }
    for reason in &all {
        assert!(!reason.to_string().is_empty());
    }
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), all.len());
    // Documented in docs/protocol.md.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .expect("docs/protocol.md");
    for code in codes {
        assert!(doc.contains(&format!("`{code}`")), "{code} not documented");
    }
}

#[test]
fn verify_quote_checks_only_the_quote() {
    for kind in KINDS {
        // A tpm2_quote directory: quote, signature, PCRs, no event log.
        let mut ev = evidence(kind);
        ev.event_log.clear();
        let ak_bytes = ak_public(kind);
        let ak = Public::parse_tpm2b(&ak_bytes).expect("AK");
        let key = ak.verifying_key().expect("key");
        let nonce = nonce();
        let verdict = verify_quote(&EvidenceInput::new(&ev, &nonce, key), &verifier());
        assert_eq!(verdict.reasons, [], "{kind}");
        assert!(verdict.trusted);
        assert_eq!(verdict.avm_image, None);

        let mut wrong = nonce.clone();
        wrong[0] ^= 1;
        let verdict = verify_quote(&EvidenceInput::new(&ev, &wrong, key), &verifier());
        assert_eq!(codes(&verdict), ["nonce-mismatch"]);
        let mut bad = ev.clone();
        bad.pcrs[0].digest[0] ^= 1;
        let verdict = verify_quote(&EvidenceInput::new(&bad, &nonce, key), &verifier());
        assert_eq!(codes(&verdict), ["pcr-digest-mismatch"]);
        let mut bad = ev.clone();
        bad.attest[20] ^= 1;
        let verdict = verify_quote(&EvidenceInput::new(&bad, &nonce, key), &verifier());
        assert!(verdict.reasons.contains(&Reason::SignatureInvalid));
        bad.attest.truncate(10);
        let verdict = verify_quote(&EvidenceInput::new(&bad, &nonce, key), &verifier());
        assert_eq!(codes(&verdict), ["quote-malformed"]);
        assert_eq!(verdict.quote, None);
    }
}

/// The node's genuine log (it replays to the quoted PCRs) against a policy
/// whose learned boot differs in one PCR by `change`: the node's records are
/// all known, but not in the learned order and number.
fn against_changed_sequence(change: impl FnOnce(&mut Vec<FirmwareEventRef>)) -> Verdict {
    let mut policy = good_policy();
    change(&mut policy.firmware_sequences[0].events);
    run(&evidence("ecc"), &nonce(), &ak_public("ecc"), Some(&policy))
}

fn index_of(events: &[FirmwareEventRef], pcr: u32, event_type: u32) -> usize {
    events
        .iter()
        .position(|e| e.pcr == pcr && e.event_type == event_type)
        .expect("the record is in the learned boot")
}

#[test]
fn firmware_sequence_with_a_separator_the_learned_boot_lacks_is_rejected() {
    // As if the node's PCR 3 had a separator its reference boot never had;
    // equally, a node missing a separator the reference has.
    let verdict = against_changed_sequence(|events| {
        let at = index_of(events, 3, event_type::EV_SEPARATOR);
        events.remove(at);
    });
    assert_eq!(
        verdict.reasons,
        [Reason::FirmwareSequenceUnknown { pcr: 3 }]
    );
    assert_eq!(verdict.reasons[0].code(), "firmware-sequence-unknown");
    assert_eq!(verdict.reasons[0].pcr(), Some(3));
}

#[test]
fn firmware_sequence_with_a_record_repeated_is_rejected() {
    // Every record on its own is known; one is there twice in the
    // reference, once on the node (or the other way round).
    let verdict = against_changed_sequence(|events| {
        let at = index_of(events, 4, event_type::EV_ACTION);
        let record = events[at].clone();
        events.insert(at, record);
    });
    assert_eq!(
        verdict.reasons,
        [Reason::FirmwareSequenceUnknown { pcr: 4 }]
    );
}

#[test]
fn firmware_sequence_in_another_order_is_rejected() {
    let log = EventLog::parse(&data("seabios-eventlog.bin")).expect("log");
    let pcr = (0..8)
        .find(|&pcr| {
            let digests: Vec<_> = log
                .events_for_pcr(pcr)
                .filter(|(_, e)| e.is_extended())
                .filter_map(|(_, e)| e.sha256())
                .collect();
            digests.windows(2).any(|w| w[0] != w[1])
        })
        .expect("a PCR with two different records");
    let verdict = against_changed_sequence(|events| {
        let first = events.iter().position(|e| e.pcr == pcr).expect("first");
        let second = events
            .iter()
            .rposition(|e| e.pcr == pcr && e.sha256 != events[first].sha256)
            .expect("second");
        events.swap(first, second);
    });
    assert_eq!(
        verdict.reasons,
        [Reason::FirmwareSequenceUnknown { pcr: pcr as u8 }]
    );
}

#[test]
fn any_learned_boot_may_match_but_boots_are_never_mixed() {
    let mut policy = good_policy();
    let real = policy.firmware_sequences[0].clone();
    // Another learned boot that differs in PCR 3 and PCR 4 ...
    let mut other = real.clone();
    other.events.retain(|e| e.pcr != 3 && e.pcr != 4);
    policy.firmware_sequences.insert(0, other.clone());
    let verdict = run(&evidence("ecc"), &nonce(), &ak_public("ecc"), Some(&policy));
    assert!(verdict.trusted, "{:?}", verdict.reasons);
    // ... and a third whose PCR 3 is right but PCR 4 wrong, while the
    // second has PCR 4 right but PCR 3 wrong: no single boot matches.
    let mut pcr3_right = other.clone();
    pcr3_right.events.extend(real.for_pcr(3).cloned());
    let mut pcr4_right = other;
    pcr4_right.events.extend(real.for_pcr(4).cloned());
    policy.firmware_sequences = vec![pcr3_right, pcr4_right];
    let verdict = run(&evidence("ecc"), &nonce(), &ak_public("ecc"), Some(&policy));
    assert!(!verdict.trusted);
    assert!(
        verdict
            .reasons
            .iter()
            .all(|r| r.code() == "firmware-sequence-unknown"),
        "{:?}",
        verdict.reasons
    );
}

#[test]
fn a_policy_without_learned_sequences_is_incomplete() {
    let mut policy = good_policy();
    policy.firmware_sequences.clear();
    let verdict = run(&evidence("ecc"), &nonce(), &ak_public("ecc"), Some(&policy));
    assert_eq!(
        verdict.reasons,
        [Reason::ReferenceValuesMissing(
            MissingReference::FirmwareSequences
        )]
    );
}
