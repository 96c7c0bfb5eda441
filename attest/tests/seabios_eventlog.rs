//! The event log of a real measured launch: SeaBIOS under QEMU with
//! swtpm, after the host measured the image as H-CRTM (see
//! `tests/data/regenerate-seabios-log.sh`). The PCR values were read from
//! the TPM afterwards, so replay is checked against the real thing.

use avm_attest::eventlog::{
    EventLog, EventLogError, alg, event_type, hcrtm_pcr0_start, initial_pcrs,
};

const LOG: &[u8] = include_bytes!("data/seabios-eventlog.bin");
const PCRS: &str = include_str!("data/seabios-pcrs.txt");
const IMAGE_SHA256: &str = include_str!("data/seabios-image.sha256");

fn hex32(s: &str) -> [u8; 32] {
    let s = s.trim();
    assert_eq!(s.len(), 64);
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex digest");
    }
    out
}

fn tpm_pcrs() -> Vec<[u8; 32]> {
    PCRS.lines()
        .map(|line| {
            hex32(
                line.split_whitespace()
                    .nth(1)
                    .expect("'index digest' lines"),
            )
        })
        .collect()
}

#[test]
fn seabios_log_parses_with_its_padding() {
    let log = EventLog::parse(LOG).unwrap();
    assert_eq!(LOG.len(), 65536, "the whole LAML area");
    assert!(log.used_len() < 4096);
    assert!(LOG[log.used_len()..].iter().all(|&b| b == 0));
    assert!(log.len() >= 9, "at least the eight separators and more");
    assert_eq!(log.header.digest_size(alg::SHA256), Some(32));
    assert_eq!(log.emit(), LOG[..log.used_len()]);
    let separators = log
        .events
        .iter()
        .filter(|e| e.event_type == event_type::EV_SEPARATOR)
        .count();
    assert_eq!(separators, 8);
}

#[test]
fn replay_from_hcrtm_start_matches_the_tpm() {
    let log = EventLog::parse(LOG).unwrap();
    let start = hcrtm_pcr0_start(&hex32(IMAGE_SHA256));
    let replayed = log.replay_sha256(&initial_pcrs(start)).unwrap();
    let tpm = tpm_pcrs();
    assert_eq!(tpm.len(), 8);
    for (pcr, value) in tpm.iter().enumerate() {
        assert_eq!(&replayed[pcr], value, "PCR {pcr}");
    }
}

#[test]
fn replay_from_zero_or_another_image_misses_pcr0_only() {
    let log = EventLog::parse(LOG).unwrap();
    let tpm = tpm_pcrs();
    let mut other = hex32(IMAGE_SHA256);
    other[0] ^= 1;
    for start in [[0; 32], hcrtm_pcr0_start(&other)] {
        let replayed = log.replay_sha256(&initial_pcrs(start)).unwrap();
        assert_ne!(replayed[0], tpm[0]);
        assert_eq!(replayed[1..8], tpm[1..8]);
    }
}

#[test]
fn truncated_real_log_is_rejected() {
    let log = EventLog::parse(LOG).unwrap();
    let cut = &LOG[..log.used_len() - 3];
    assert!(matches!(
        EventLog::parse(cut),
        Err(EventLogError::Truncated { .. })
    ));
}
