//! Parsing TPM responses: untrusted bytes in, typed values or errors out.
//!
//! Every function here takes a complete response frame and never panics; the
//! fuzz target `fuzz/fuzz_targets/response.rs` feeds arbitrary bytes to each.
//! Values whose exact bytes matter (public areas, attestations, signatures)
//! are taken zero-copy from the frame after `tpm2-protocol` validated their
//! structure; the rest is unmarshaled into `tpm2-protocol`'s owned types.

use tpm2_protocol::TpmField;
use tpm2_protocol::basic::TpmUint32;
use tpm2_protocol::data::{
    Tpm2bAttest, Tpm2bCreationData, Tpm2bDigest, Tpm2bName, Tpm2bPublic, TpmAlgId, TpmCap, TpmSt,
    TpmtSignature, TpmtTkCreation, TpmuCapabilities,
};
use tpm2_protocol::frame::{
    TpmActivateCredentialResponse, TpmCreatePrimaryResponse, TpmGetCapabilityResponse,
    TpmGetRandomResponse, TpmHeader, TpmMakeCredentialResponse, TpmNvReadPublicResponse,
    TpmNvReadResponse, TpmPcrReadResponse, TpmQuoteResponse, TpmReadPublicResponse, TpmResponse,
    TpmStartAuthSessionResponse, TpmUnmarshalBody,
};

use crate::error::{MalformedResponse, ResponseCode, Result, TpmError, body_error};
use crate::pcr::{PcrDigest, PcrSelection};
use crate::transport::TPM_HEADER_LEN;
use crate::types::{Credential, LoadedKey, Name, PublicArea, Quote, bounded};

const TAG_NO_SESSIONS: u16 = 0x8001;
const TAG_SESSIONS: u16 = 0x8002;

fn inconsistent(what: &'static str) -> TpmError {
    TpmError::MalformedResponse(MalformedResponse::Inconsistent(what))
}

/// Checks the response header and returns its response code (`TPM_RC`);
/// 0 is success. The code is read raw so that codes unknown to
/// `tpm2-protocol` are still reported.
///
/// # Errors
///
/// [`MalformedResponse::Header`] when the frame is shorter than a header,
/// its size field differs from its length, or its tag is not a response tag.
pub fn response_code(rsp: &[u8]) -> Result<u32> {
    let header: &[u8; TPM_HEADER_LEN] = rsp
        .get(..TPM_HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(MalformedResponse::Header)?;
    let tag = u16::from_be_bytes([header[0], header[1]]);
    let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
    let code = u32::from_be_bytes([header[6], header[7], header[8], header[9]]);
    if (tag != TAG_NO_SESSIONS && tag != TAG_SESSIONS) || usize::try_from(size) != Ok(rsp.len()) {
        return Err(MalformedResponse::Header.into());
    }
    Ok(code)
}

/// Checks that `rsp` is a success response and splits its body into the
/// handle area and the parameter area (without the sessions).
///
/// # Errors
///
/// [`TpmError::Tpm`] for an error response, [`TpmError::MalformedResponse`]
/// for a malformed one.
pub fn success_areas<R: TpmHeader>(rsp: &[u8]) -> Result<(&[u8], &[u8])> {
    let code = response_code(rsp)?;
    if code != 0 {
        return Err(TpmError::Tpm(ResponseCode(code)));
    }
    let frame = TpmResponse::cast(rsp).map_err(body_error)?;
    frame.validate(R::CC).map_err(body_error)?;
    let handles_len = R::HANDLES.checked_mul(4).ok_or(MalformedResponse::Header)?;
    let (handles, rest) = frame
        .body()
        .split_at_checked(handles_len)
        .ok_or(inconsistent("response shorter than its handle area"))?;
    if frame.tag().map_err(body_error)? != TpmSt::Sessions {
        return Ok((handles, rest));
    }
    let (size, rest) = TpmUint32::cast_prefix(rest).map_err(body_error)?;
    let size = usize::try_from(size.value()).map_err(|_| inconsistent("parameter size"))?;
    let (parameters, auth_area) = rest
        .split_at_checked(size)
        .ok_or(inconsistent("parameter size beyond the frame"))?;
    // TPM_ST_SESSIONS answers a command with sessions with one
    // acknowledgement per session (tpm2-protocol validated their shape).
    if auth_area.is_empty() {
        return Err(inconsistent("session response area missing"));
    }
    Ok((handles, parameters))
}

/// Unmarshals a success response into `tpm2-protocol`'s owned body type.
///
/// # Errors
///
/// As [`success_areas`], plus any body `R` does not accept.
pub fn owned<R: TpmUnmarshalBody>(rsp: &[u8]) -> Result<R> {
    let (handles, parameters) = success_areas::<R>(rsp)?;
    R::unmarshal_body(handles, parameters).map_err(body_error)
}

/// Reads one field of type `T` off the front of `cursor`.
fn take<'a, T: TpmField<'a>>(cursor: &mut &'a [u8]) -> Result<T::View> {
    let (view, rest) = T::cast_prefix_field(cursor).map_err(body_error)?;
    *cursor = rest;
    Ok(view)
}

/// The contents of a `TPM2B` whose prefix `tpm2-protocol` validated.
fn tpm2b_contents(wire: &[u8]) -> &[u8] {
    wire.get(2..).unwrap_or_default()
}

fn ensure_consumed(cursor: &[u8]) -> Result<()> {
    if cursor.is_empty() {
        Ok(())
    } else {
        Err(inconsistent("trailing bytes in parameters"))
    }
}

fn single_handle(handles: &[u8]) -> Result<u32> {
    let (handle, _) = TpmUint32::cast_prefix(handles).map_err(body_error)?;
    Ok(handle.value())
}

/// Checks the TPM's reported name against the name computed from the
/// public area, so a response cannot pair a key with someone else's name.
fn checked_name(public: &PublicArea, reported: &[u8]) -> Result<Name> {
    let reported = bounded(reported, "name")?;
    if let Ok(computed) = public.name()
        && computed != reported
    {
        return Err(inconsistent("name does not match the public area"));
    }
    Ok(reported)
}

/// Parses a response that carries no parameters the caller needs, only
/// checking it is a well-formed success for command `R`.
///
/// # Errors
///
/// As [`owned`].
pub fn parse_empty<R: TpmUnmarshalBody>(rsp: &[u8]) -> Result<()> {
    owned::<R>(rsp).map(|_| ())
}

/// TPM2_GetRandom: the random bytes.
///
/// # Errors
///
/// As [`owned`].
pub fn parse_get_random(rsp: &[u8]) -> Result<heapless::Vec<u8, 64>> {
    let body: TpmGetRandomResponse = owned(rsp)?;
    bounded(&body.random_bytes, "random bytes")
}

/// TPM2_GetCapability(TPM_PROPERTIES): `(moreData, [(property, value)])`.
///
/// # Errors
///
/// As [`owned`], and when the TPM answered another capability.
pub fn parse_tpm_properties(rsp: &[u8]) -> Result<(bool, heapless::Vec<(u32, u32), 64>)> {
    let body: TpmGetCapabilityResponse = owned(rsp)?;
    let TpmuCapabilities::TpmProperties(list) = &body.capability_data.data else {
        return Err(inconsistent("capability other than TPM properties"));
    };
    if body.capability_data.capability != TpmCap::TpmProperties {
        return Err(inconsistent("capability other than TPM properties"));
    }
    let mut out = heapless::Vec::new();
    for property in list.iter() {
        out.push((property.property as u32, property.value.value()))
            .map_err(|_| MalformedResponse::TooLarge("property list"))?;
    }
    Ok((bool::from(body.more_data), out))
}

/// TPM2_PCR_Read: the SHA-256 PCRs the TPM returned (possibly fewer than
/// asked) and their values in ascending order.
///
/// # Errors
///
/// As [`owned`], and when the selection and the values disagree or a bank
/// other than SHA-256 is returned with PCRs selected.
pub fn parse_pcr_read(rsp: &[u8]) -> Result<(PcrSelection, heapless::Vec<PcrDigest, 8>)> {
    let body: TpmPcrReadResponse = owned(rsp)?;
    let mut selection = PcrSelection::EMPTY;
    for entry in body.pcr_selection_out.iter() {
        let bits = PcrSelection::from_bitmap(&entry.pcr_select);
        if bits.is_empty() {
            continue;
        }
        if entry.hash != TpmAlgId::Sha256 || !selection.is_empty() {
            return Err(inconsistent("PCR values from an unrequested bank"));
        }
        selection = bits;
    }
    if selection.len() != body.pcr_values.len() {
        return Err(inconsistent("PCR selection and value count differ"));
    }
    let mut values = heapless::Vec::new();
    for value in body.pcr_values.iter() {
        let digest: PcrDigest = value
            .as_ref()
            .try_into()
            .map_err(|_| inconsistent("PCR value is not 32 bytes"))?;
        values
            .push(digest)
            .map_err(|_| MalformedResponse::TooLarge("PCR values"))?;
    }
    Ok((selection, values))
}

/// TPM2_CreatePrimary: the new object's handle, public area and name.
///
/// # Errors
///
/// As [`success_areas`], plus any malformed parameter.
pub fn parse_create_primary(rsp: &[u8]) -> Result<LoadedKey> {
    let (handles, mut params) = success_areas::<TpmCreatePrimaryResponse>(rsp)?;
    let handle = single_handle(handles)?;
    let public = take::<Tpm2bPublic>(&mut params)?;
    let public = PublicArea::from_bytes(tpm2b_contents(public.as_bytes()))?;
    take::<Tpm2bCreationData>(&mut params)?;
    take::<Tpm2bDigest>(&mut params)?;
    take::<TpmtTkCreation>(&mut params)?;
    let name = take::<Tpm2bName>(&mut params)?;
    ensure_consumed(params)?;
    let name = checked_name(&public, name.data())?;
    Ok(LoadedKey {
        handle,
        public,
        name,
    })
}

/// TPM2_ReadPublic: the object's public area and name.
///
/// # Errors
///
/// As [`success_areas`], plus any malformed parameter.
pub fn parse_read_public(rsp: &[u8]) -> Result<(PublicArea, Name)> {
    let (_, mut params) = success_areas::<TpmReadPublicResponse>(rsp)?;
    let public = take::<Tpm2bPublic>(&mut params)?;
    let public = PublicArea::from_bytes(tpm2b_contents(public.as_bytes()))?;
    let name = take::<Tpm2bName>(&mut params)?;
    take::<Tpm2bName>(&mut params)?;
    ensure_consumed(params)?;
    let name = checked_name(&public, name.data())?;
    Ok((public, name))
}

/// TPM2_Quote: the `TPMS_ATTEST` and `TPMT_SIGNATURE` bytes.
///
/// # Errors
///
/// As [`success_areas`], plus a malformed attestation or signature.
pub fn parse_quote(rsp: &[u8]) -> Result<Quote> {
    let (_, mut params) = success_areas::<TpmQuoteResponse>(rsp)?;
    let attest = take::<Tpm2bAttest>(&mut params)?;
    let attest = bounded(tpm2b_contents(attest.as_bytes()), "TPMS_ATTEST")?;
    let signature_bytes = params;
    take::<TpmtSignature>(&mut params)?;
    ensure_consumed(params)?;
    let signature = bounded(signature_bytes, "TPMT_SIGNATURE")?;
    Ok(Quote { attest, signature })
}

/// TPM2_StartAuthSession: the session handle.
///
/// # Errors
///
/// As [`owned`].
pub fn parse_start_auth_session(rsp: &[u8]) -> Result<u32> {
    let body: TpmStartAuthSessionResponse = owned(rsp)?;
    Ok(body.handles[0].value())
}

/// TPM2_ActivateCredential: the recovered secret.
///
/// # Errors
///
/// As [`owned`].
pub fn parse_activate_credential(rsp: &[u8]) -> Result<heapless::Vec<u8, 64>> {
    let body: TpmActivateCredentialResponse = owned(rsp)?;
    bounded(&body.cert_info, "credential")
}

/// TPM2_MakeCredential: the credential blob and encrypted seed.
///
/// # Errors
///
/// As [`owned`].
pub fn parse_make_credential(rsp: &[u8]) -> Result<Credential> {
    let body: TpmMakeCredentialResponse = owned(rsp)?;
    Ok(Credential {
        blob: bounded(&body.credential_blob, "credential blob")?,
        secret: bounded(&body.secret, "encrypted secret")?,
    })
}

/// TPM2_NV_ReadPublic: `(nvIndex, dataSize)`.
///
/// # Errors
///
/// As [`owned`].
pub fn parse_nv_read_public(rsp: &[u8]) -> Result<(u32, u16)> {
    let body: TpmNvReadPublicResponse = owned(rsp)?;
    let public = &body.nv_public.inner;
    Ok((public.nv_index.value(), public.data_size.value()))
}

/// TPM2_NV_Read: the data read.
///
/// # Errors
///
/// As [`owned`].
pub fn parse_nv_read(rsp: &[u8]) -> Result<heapless::Vec<u8, 1024>> {
    let body: TpmNvReadResponse = owned(rsp)?;
    bounded(&body.data, "NV data")
}

#[cfg(test)]
pub(crate) mod tests;
