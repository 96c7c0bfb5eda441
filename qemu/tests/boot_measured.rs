//! Acceptance: boot the A-VM under QEMU + swtpm and check its measured
//! launch from the host. PCR0 as read by the A-VM must equal the H-CRTM
//! value of the image file followed by the firmware's PCR0 events, and
//! replaying the event log the A-VM read must reproduce PCRs 0-7.

mod common;

use std::time::Duration;

use avm_attest::eventlog::{EventLog, extend_sha256, initial_pcrs};
use avm_qemu::Node;
use avm_qemu::measure::{hcrtm_pcr0_start, predict_pcr0, seabios_separator_digest, sha256_file};
use avm_qemu::qemu::GuestExit;
use avm_qemu::report::TpmStartup;

#[test]
fn measured_boot_pcrs_match_image_and_event_log() {
    let image = avm_qemu::testing::avm_image();
    let dir = tempfile::tempdir().unwrap();
    let mut config = avm_qemu::testing::tcg_config_with(dir.path(), &image);
    config.exit_after_report = true;
    let mut node = Node::launch(&config).unwrap();
    let report = node
        .wait_for_report(Duration::from_secs(120))
        .unwrap_or_else(|err| panic!("{err}"))
        .clone();

    // SeaBIOS starts the TPM before the kernel does.
    assert_eq!(report.tpm_startup, TpmStartup::AlreadyStarted);
    assert!(!report.tpm_vendor.is_empty());

    // PCR0 from the image file itself (not the launcher's copy) and the
    // firmware's PCR0 events in the log the A-VM read.
    let image_digest = sha256_file(&image).unwrap();
    let log = EventLog::parse(&report.eventlog).unwrap();
    assert_eq!(log.events.len(), report.eventlog_entries as usize);
    let pcr0_events: Vec<[u8; 32]> = log
        .events_for_pcr(0)
        .map(|(_, e)| e)
        .filter(|e| e.is_extended())
        .map(|e| e.sha256().unwrap())
        .collect();
    assert!(!pcr0_events.is_empty(), "firmware logged no PCR0 event");
    assert_eq!(
        report.pcrs_sha256[0],
        predict_pcr0(&image_digest, &pcr0_events),
        "PCR0 does not match H-CRTM(image) + firmware events"
    );
    // SeaBIOS's only PCR0 event is its separator (FACTS.md), which gives
    // the closed form SHA256(H-CRTM start || SHA256(ff ff ff ff)).
    if pcr0_events == [seabios_separator_digest()] {
        assert_eq!(
            report.pcrs_sha256[0],
            extend_sha256(
                &hcrtm_pcr0_start(&image_digest),
                &seabios_separator_digest()
            )
        );
    }

    // Replay all of the log: PCR0 from the H-CRTM start, the rest from zero.
    let replayed = log
        .replay_sha256(&initial_pcrs(hcrtm_pcr0_start(&image_digest)))
        .unwrap();
    for (pcr, reported) in report.pcrs_sha256.iter().enumerate() {
        assert_eq!(
            &replayed[pcr], reported,
            "replayed PCR{pcr} differs from the reported one"
        );
    }

    // A different image would not have matched.
    let other = avm_qemu::measure::sha256(b"another image");
    assert_ne!(report.pcrs_sha256[0], predict_pcr0(&other, &pcr0_events));

    // The launcher's own check agrees.
    let check = avm_qemu::verify::check_measured_boot(&report, &image_digest).unwrap();
    assert!(check.all_match(&report));

    // The EK the A-VM uses is the one whose certificate was provisioned.
    let provisioned_ek = node.record().ek_name_ecc_p256.clone().unwrap();
    assert_eq!(avm_qemu::hex::encode(&report.ek_name), provisioned_ek);

    // `exit-after-report`: the kernel ends QEMU with its success status.
    assert_eq!(
        node.wait_for_exit(Duration::from_secs(30)).unwrap(),
        GuestExit::Success
    );
}
