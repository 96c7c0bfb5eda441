//! Response parsing: well-formed frames parse to the exact bytes, malformed
//! or truncated frames give errors, and nothing panics on arbitrary input.

use std::vec::Vec;

use proptest::prelude::*;
use tpm2_protocol::frame::{TpmPcrExtendResponse, TpmStartupResponse};

use super::*;

/// A success response frame with sessions: header, handles, parameter size,
/// parameters, one empty password-session acknowledgement.
pub(crate) fn frame_with_session(handles: &[u32], params: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for handle in handles {
        body.extend_from_slice(&handle.to_be_bytes());
    }
    body.extend_from_slice(&(params.len() as u32).to_be_bytes());
    body.extend_from_slice(params);
    // TPMS_AUTH_RESPONSE: empty nonce, continueSession, empty hmac.
    body.extend_from_slice(&[0, 0, 1, 0, 0]);
    header(0x8002, 0, &body)
}

/// A frame without sessions.
pub(crate) fn frame(code: u32, body: &[u8]) -> Vec<u8> {
    header(0x8001, code, body)
}

fn header(tag: u16, code: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn tpm2b(data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

/// A quote `TPMS_ATTEST` over SHA-256 PCRs 0 and 16 with a 4-byte nonce.
pub(crate) fn sample_attest() -> Vec<u8> {
    let mut attest = Vec::new();
    attest.extend_from_slice(&0xff54_4347u32.to_be_bytes()); // TPM_GENERATED_VALUE
    attest.extend_from_slice(&0x8018u16.to_be_bytes()); // TPM_ST_ATTEST_QUOTE
    attest.extend_from_slice(&tpm2b(&[0x00, 0x0b, 7, 7])); // qualifiedSigner
    attest.extend_from_slice(&tpm2b(b"nonc")); // extraData
    attest.extend_from_slice(&[0; 17]); // clockInfo
    attest.extend_from_slice(&[0; 8]); // firmwareVersion
    attest.extend_from_slice(&[0, 0, 0, 1, 0x00, 0x0b, 3, 0x01, 0x00, 0x01]); // PCRs 0, 16
    attest.extend_from_slice(&tpm2b(&[0xaa; 32])); // pcrDigest
    attest
}

/// An ECDSA-SHA256 `TPMT_SIGNATURE`.
pub(crate) fn sample_signature() -> Vec<u8> {
    let mut signature = std::vec![0x00, 0x18, 0x00, 0x0b];
    signature.extend_from_slice(&tpm2b(&[0x11; 32]));
    signature.extend_from_slice(&tpm2b(&[0x22; 32]));
    signature
}

pub(crate) fn sample_quote_response() -> Vec<u8> {
    let mut params = tpm2b(&sample_attest());
    params.extend_from_slice(&sample_signature());
    frame_with_session(&[], &params)
}

/// Runs every response parser on `bytes`; none may panic.
pub(crate) fn parse_with_every_parser(bytes: &[u8]) {
    let _ = response_code(bytes);
    let _ = parse_empty::<TpmStartupResponse>(bytes);
    let _ = parse_empty::<TpmPcrExtendResponse>(bytes);
    let _ = parse_get_random(bytes);
    let _ = parse_tpm_properties(bytes);
    let _ = parse_pcr_read(bytes);
    let _ = parse_create_primary(bytes);
    let _ = parse_read_public(bytes);
    let _ = parse_quote(bytes);
    let _ = parse_start_auth_session(bytes);
    let _ = parse_activate_credential(bytes);
    let _ = parse_make_credential(bytes);
    let _ = parse_nv_read_public(bytes);
    let _ = parse_nv_read(bytes);
}

#[test]
fn a_quote_response_yields_the_exact_attest_and_signature_bytes() {
    let quote = parse_quote(&sample_quote_response()).unwrap();
    assert_eq!(quote.attest.as_slice(), sample_attest().as_slice());
    assert_eq!(quote.signature.as_slice(), sample_signature().as_slice());
}

#[test]
fn every_truncation_of_a_quote_response_is_an_error() {
    let full = sample_quote_response();
    for len in 0..full.len() {
        // Truncated with the size field left as is, and with it patched to
        // the new length (a consistently framed but short response).
        assert!(parse_quote(&full[..len]).is_err(), "length {len}");
        let mut patched = full[..len].to_vec();
        if len >= 10 {
            patched[2..6].copy_from_slice(&(len as u32).to_be_bytes());
            assert!(parse_quote(&patched).is_err(), "patched length {len}");
        }
    }
}

#[test]
fn trailing_bytes_after_the_signature_are_rejected() {
    let mut params = tpm2b(&sample_attest());
    params.extend_from_slice(&sample_signature());
    params.push(0);
    assert!(parse_quote(&frame_with_session(&[], &params)).is_err());
}

#[test]
fn a_bad_magic_in_the_attestation_is_rejected() {
    let mut attest = sample_attest();
    attest[0] = 0;
    let mut params = tpm2b(&attest);
    params.extend_from_slice(&sample_signature());
    assert!(matches!(
        parse_quote(&frame_with_session(&[], &params)),
        Err(TpmError::MalformedResponse(MalformedResponse::Body(_)))
    ));
}

#[test]
fn error_codes_are_reported_raw_even_when_unknown() {
    assert_eq!(
        parse_quote(&frame(0x922, &[])),
        Err(TpmError::Tpm(ResponseCode::RETRY))
    );
    // A vendor-specific code tpm2-protocol cannot decode.
    let vendor = 0x0000_0400 | 0x7f;
    assert_eq!(
        parse_quote(&frame(vendor, &[])),
        Err(TpmError::Tpm(ResponseCode(vendor)))
    );
    assert_eq!(ResponseCode(vendor).decode(), None);
}

#[test]
fn header_size_must_match_the_frame_length() {
    let mut rsp = sample_quote_response();
    rsp[5] ^= 1;
    assert_eq!(response_code(&rsp), Err(MalformedResponse::Header.into()));
    assert_eq!(
        response_code(&[0x80, 0x01, 0, 0]),
        Err(MalformedResponse::Header.into())
    );
    // A command tag is not a response tag.
    let mut rsp = frame(0, &[]);
    rsp[1] = 0xc1;
    rsp[0] = 0x00;
    assert_eq!(response_code(&rsp), Err(MalformedResponse::Header.into()));
}

#[test]
fn pcr_read_selection_and_values_must_agree() {
    let pcr_read = |bitmap: [u8; 3], values: u32| {
        let mut body = std::vec![0, 0, 0, 5]; // update counter
        body.extend_from_slice(&[0, 0, 0, 1, 0x00, 0x0b, 3]);
        body.extend_from_slice(&bitmap);
        body.extend_from_slice(&values.to_be_bytes());
        for i in 0..values {
            body.extend_from_slice(&tpm2b(&[i as u8; 32]));
        }
        frame(0, &body)
    };
    let (selection, values) = parse_pcr_read(&pcr_read([0x03, 0, 0], 2)).unwrap();
    assert_eq!(selection, PcrSelection::new(&[0, 1]).unwrap());
    assert_eq!(values.as_slice(), &[[0u8; 32], [1u8; 32]]);
    assert!(parse_pcr_read(&pcr_read([0x07, 0, 0], 2)).is_err());
    assert!(parse_pcr_read(&pcr_read([0x01, 0, 0], 2)).is_err());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse_with_every_parser(&bytes);
    }

    /// Well-framed success responses with arbitrary bodies reach the body
    /// parsers; they must fail cleanly, never panic.
    #[test]
    fn arbitrary_bodies_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        sessions in any::<bool>(),
    ) {
        let rsp = if sessions { frame_with_session(&[0x8000_0000], &body) } else { frame(0, &body) };
        parse_with_every_parser(&rsp);
    }

    /// Flipping any byte of a valid quote response never panics and never
    /// yields attestation bytes that differ from what the frame carries.
    #[test]
    fn corrupted_quote_responses_never_panic(index in 0usize..200, xor in 1u8..=255) {
        let mut rsp = sample_quote_response();
        let index = index % rsp.len();
        rsp[index] ^= xor;
        if let Ok(quote) = parse_quote(&rsp) {
            let start = 10 + 4 + 2;
            prop_assert_eq!(&rsp[start..start + quote.attest.len()], quote.attest.as_slice());
        }
    }
}
