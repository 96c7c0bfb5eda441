//! Arbitrary bytes as TPM responses: to every response parser directly, and
//! as the answer of a transport to every command of the command layer (which
//! adds retries, multi-command loops and session cleanup). Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tpm_crb::response::*;
use tpm_crb::tpm2_protocol::frame::{
    TpmFlushContextResponse, TpmPcrExtendResponse, TpmPolicySecretResponse, TpmStartupResponse,
};
use tpm_crb::{
    AkAlgorithm, Credential, EkAlgorithm, PcrSelection, Tpm, TpmTransport, TransportError,
};

/// A TPM that answers every command with the fuzz input.
struct Echo<'a>(&'a [u8]);

impl TpmTransport for Echo<'_> {
    fn transact(&mut self, _: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        let out = response
            .get_mut(..self.0.len())
            .ok_or(TransportError::ResponseTooLarge { size: self.0.len(), max: 0 })?;
        out.copy_from_slice(self.0);
        Ok(self.0.len())
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = response_code(data);
    let _ = parse_empty::<TpmStartupResponse>(data);
    let _ = parse_empty::<TpmPcrExtendResponse>(data);
    let _ = parse_empty::<TpmFlushContextResponse>(data);
    let _ = parse_empty::<TpmPolicySecretResponse>(data);
    let _ = parse_get_random(data);
    let _ = parse_tpm_properties(data);
    let _ = parse_pcr_read(data);
    let _ = parse_create_primary(data);
    let _ = parse_read_public(data);
    let _ = parse_quote(data);
    let _ = parse_start_auth_session(data);
    let _ = parse_activate_credential(data);
    let _ = parse_make_credential(data);
    let _ = parse_nv_read_public(data);
    let _ = parse_nv_read(data);

    let mut tpm = Tpm::new(Echo(data));
    let all = PcrSelection::new(&[0, 1, 2, 3, 7, 8, 16, 23]).unwrap_or_default();
    let _ = tpm.startup_clear();
    let _ = tpm.properties();
    let _ = tpm.get_random(&mut [0u8; 48]);
    let _ = tpm.pcr_read(all);
    let _ = tpm.pcr_extend(16, &[0; 32]);
    let _ = tpm.read_public(0x8101_0001);
    let _ = tpm.create_ek(EkAlgorithm::Rsa2048);
    let _ = tpm.create_ak(AkAlgorithm::EccP256);
    let _ = tpm.quote(0x8000_0000, b"nonce", all);
    let _ = tpm.make_credential(0x8000_0000, &[1; 32], &[0; 34]);
    let credential = Credential { blob: Default::default(), secret: Default::default() };
    let _ = tpm.activate_credential(0x8000_0000, 0x8000_0001, &credential);
    let _ = tpm.nv_read_ek_cert(EkAlgorithm::EccP256, &mut [0u8; 2048]);
    let _ = tpm.flush_context(0x8000_0000);
});
