//! The command layer against a scripted transport: retries, partial PCR
//! reads and hostile answers.

use std::collections::VecDeque;
use std::vec::Vec;

use super::*;
use crate::response::tests::{frame, frame_with_session, sample_quote_response};
use crate::transport::TransportError;

/// Answers each command with the next scripted frame and records commands.
struct Scripted {
    responses: VecDeque<Vec<u8>>,
    commands: Vec<Vec<u8>>,
    /// Answer every command with this frame once the script is used up.
    repeat: Option<Vec<u8>>,
}

impl Scripted {
    fn new(responses: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Self {
            responses: responses.into_iter().collect(),
            commands: Vec::new(),
            repeat: None,
        }
    }
}

impl TpmTransport for Scripted {
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        self.commands.push(command.to_vec());
        let next = self
            .responses
            .pop_front()
            .or_else(|| self.repeat.clone())
            .ok_or(TransportError::Io)?;
        response[..next.len()].copy_from_slice(&next);
        Ok(next.len())
    }
}

fn random_response(bytes: &[u8]) -> Vec<u8> {
    let mut body = (bytes.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(bytes);
    frame(0, &body)
}

/// A PCR_Read response returning `pcrs` with value `[pcr; 32]` each.
fn pcr_read_response(pcrs: &[u8]) -> Vec<u8> {
    let bitmap = PcrSelection::new(pcrs).unwrap().to_bitmap();
    let mut body = std::vec![0, 0, 0, 1, 0, 0, 0, 1, 0x00, 0x0b, 3];
    body.extend_from_slice(&bitmap);
    body.extend_from_slice(&(pcrs.len() as u32).to_be_bytes());
    for &pcr in pcrs {
        body.extend_from_slice(&[0, 32]);
        body.extend_from_slice(&[pcr; 32]);
    }
    frame(0, &body)
}

#[test]
fn transient_warnings_resend_the_same_command() {
    let retry = frame(ResponseCode::RETRY.0, &[]);
    let testing = frame(ResponseCode::TESTING.0, &[]);
    let yielded = frame(ResponseCode::YIELDED.0, &[]);
    let mut tpm = Tpm::new(Scripted::new([
        retry,
        testing,
        yielded,
        random_response(&[7; 4]),
    ]));
    let mut out = [0u8; 4];
    tpm.get_random(&mut out).unwrap();
    assert_eq!(out, [7; 4]);
    let commands = &tpm.transport_mut().commands;
    assert_eq!(commands.len(), 4);
    assert!(commands.iter().all(|c| c == &commands[0]));
}

#[test]
fn retries_are_bounded() {
    let mut transport = Scripted::new([]);
    transport.repeat = Some(frame(ResponseCode::RETRY.0, &[]));
    let mut tpm = Tpm::new(transport);
    let mut out = [0u8; 4];
    assert_eq!(
        tpm.get_random(&mut out),
        Err(TpmError::RetriesExhausted(ResponseCode::RETRY))
    );
    assert_eq!(
        tpm.transport_mut().commands.len(),
        MAX_TRANSIENT_RETRIES as usize
    );
}

#[test]
fn startup_maps_initialize_to_already_started_and_passes_other_errors() {
    let mut tpm = Tpm::new(Scripted::new([
        frame(0, &[]),
        frame(ResponseCode::INITIALIZE.0, &[]),
        frame(0x101, &[]), // TPM_RC_FAILURE
    ]));
    assert_eq!(tpm.startup_clear(), Ok(StartupOutcome::Started));
    assert_eq!(tpm.startup_clear(), Ok(StartupOutcome::AlreadyStarted));
    assert_eq!(tpm.startup_clear(), Err(TpmError::Tpm(ResponseCode(0x101))));
}

#[test]
fn pcr_read_asks_again_for_the_pcrs_left_out() {
    let mut tpm = Tpm::new(Scripted::new([
        pcr_read_response(&[1, 2]),
        pcr_read_response(&[9]),
    ]));
    let values = tpm
        .pcr_read(PcrSelection::new(&[1, 2, 9]).unwrap())
        .unwrap();
    assert_eq!(values.values.as_slice(), &[[1; 32], [2; 32], [9; 32]]);
    let commands = &tpm.transport_mut().commands;
    assert_eq!(commands.len(), 2);
    // The second command selects only PCR 9: bitmap 00 02 00.
    assert_eq!(commands[1][commands[1].len() - 3..], [0x00, 0x02, 0x00]);
}

#[test]
fn pcr_read_rejects_no_progress_and_unrequested_pcrs() {
    let mut tpm = Tpm::new(Scripted::new([pcr_read_response(&[])]));
    assert!(matches!(
        tpm.pcr_read(PcrSelection::new(&[1]).unwrap()),
        Err(TpmError::MalformedResponse(
            MalformedResponse::Inconsistent(_)
        ))
    ));
    let mut tpm = Tpm::new(Scripted::new([pcr_read_response(&[1, 5])]));
    assert!(tpm.pcr_read(PcrSelection::new(&[1]).unwrap()).is_err());
}

#[test]
fn a_truncated_response_is_an_error() {
    let full = random_response(&[1, 2, 3, 4]);
    for len in 0..full.len() {
        let mut truncated = full[..len].to_vec();
        if len >= 6 {
            truncated[2..6].copy_from_slice(&(len as u32).to_be_bytes());
        }
        let mut tpm = Tpm::new(Scripted::new([truncated]));
        let mut out = [0u8; 4];
        assert!(tpm.get_random(&mut out).is_err(), "length {len}");
    }
}

#[test]
fn more_random_bytes_than_asked_is_an_error() {
    let mut tpm = Tpm::new(Scripted::new([random_response(&[1; 8])]));
    let mut out = [0u8; 4];
    assert!(tpm.get_random(&mut out).is_err());
}

#[test]
fn quote_sends_one_password_session_and_returns_the_tpm_bytes() {
    let mut tpm = Tpm::new(Scripted::new([sample_quote_response()]));
    let quote = tpm
        .quote(0x8000_0001, b"nonc", PcrSelection::new(&[0, 16]).unwrap())
        .unwrap();
    assert_eq!(
        quote.attest.as_slice(),
        crate::response::tests::sample_attest().as_slice()
    );
    let command = &tpm.transport_mut().commands[0];
    assert_eq!(command[..2], [0x80, 0x02], "TPM_ST_SESSIONS");
    assert_eq!(command[6..10], [0x00, 0x00, 0x01, 0x58], "TPM_CC_Quote");
    assert_eq!(command[10..14], [0x80, 0x00, 0x00, 0x01], "AK handle");
    assert_eq!(command[18..22], [0x40, 0x00, 0x00, 0x09], "TPM_RS_PW");
}

#[test]
fn a_failed_activation_flushes_its_policy_session() {
    let session = 0x0300_0000u32;
    let mut start_session = session.to_be_bytes().to_vec();
    start_session.extend_from_slice(&[0, 0]); // empty nonceTPM
    let policy_secret_ok = frame_with_session(&[], &[0, 0, 0x80, 0x21, 0x40, 0, 0, 7, 0, 0]);
    let mut tpm = Tpm::new(Scripted::new([
        random_response(&[3; 32]),
        frame(0, &start_session),
        policy_secret_ok,
        frame(0x2df, &[]), // TPM_RC_INTEGRITY, parameter 2
        frame(0, &[]),     // FlushContext
    ]));
    let credential = Credential {
        blob: heapless::Vec::new(),
        secret: heapless::Vec::new(),
    };
    assert!(matches!(
        tpm.activate_credential(0x8000_0001, 0x8000_0002, &credential),
        Err(TpmError::Tpm(_))
    ));
    let flush = tpm.transport_mut().commands.last().unwrap().clone();
    assert_eq!(
        flush[6..10],
        [0x00, 0x00, 0x01, 0x65],
        "TPM_CC_FlushContext"
    );
    assert_eq!(flush[10..14], session.to_be_bytes());
}
