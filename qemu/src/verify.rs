//! Checking a boot report against the measured launch, as a verifier would:
//! PCR0 must be the H-CRTM value of the image extended with the firmware's
//! PCR0 events, and replaying the reported event log must reproduce every
//! reported PCR 0-7.

use avm_attest::eventlog::{EventLog, EventLogError, ReplayError, initial_pcrs};

use crate::measure::{Sha256Digest, hcrtm_pcr0_start, predict_pcr0};
use crate::report::{BootReport, REPORTED_PCRS};

/// The outcome of checking a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasuredBootCheck {
    /// PCR0 predicted from the image digest and the log's PCR0 events.
    pub expected_pcr0: Sha256Digest,
    /// SHA-256 digests of the log's extended PCR0 events, in order.
    pub pcr0_event_digests: Vec<Sha256Digest>,
    /// PCRs 0-7 from replaying the log (PCR0 from the H-CRTM start value).
    pub replayed: [Sha256Digest; REPORTED_PCRS],
    /// Indices of reported PCRs that differ from the replay.
    pub mismatched_pcrs: Vec<usize>,
}

impl MeasuredBootCheck {
    pub fn pcr0_matches(&self, report: &BootReport) -> bool {
        report.pcrs_sha256[0] == self.expected_pcr0
    }

    pub fn all_match(&self, report: &BootReport) -> bool {
        self.pcr0_matches(report) && self.mismatched_pcrs.is_empty()
    }
}

/// Why a report could not be checked at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("the reported event log does not parse: {0:?}")]
    EventLog(EventLogError),
    #[error("the reported event log cannot be replayed: {0:?}")]
    Replay(ReplayError),
    #[error("an extended PCR0 event has no SHA-256 digest")]
    MissingSha256,
}

/// Checks `report` against the SHA-256 of the image that was measured.
pub fn check_measured_boot(
    report: &BootReport,
    image_digest: &Sha256Digest,
) -> Result<MeasuredBootCheck, CheckError> {
    let log = EventLog::parse(&report.eventlog).map_err(CheckError::EventLog)?;
    let pcr0_event_digests = log
        .events_for_pcr(0)
        .map(|(_, event)| event)
        .filter(|event| event.is_extended())
        .map(|event| event.sha256().ok_or(CheckError::MissingSha256))
        .collect::<Result<Vec<_>, _>>()?;
    let expected_pcr0 = predict_pcr0(image_digest, &pcr0_event_digests);
    let all = log
        .replay_sha256(&initial_pcrs(hcrtm_pcr0_start(image_digest)))
        .map_err(CheckError::Replay)?;
    let mut replayed = [[0u8; 32]; REPORTED_PCRS];
    replayed.copy_from_slice(&all[..REPORTED_PCRS]);
    let mismatched_pcrs = (0..REPORTED_PCRS)
        .filter(|&i| replayed[i] != report.pcrs_sha256[i])
        .collect();
    Ok(MeasuredBootCheck {
        expected_pcr0,
        pcr0_event_digests,
        replayed,
        mismatched_pcrs,
    })
}
