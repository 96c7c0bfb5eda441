//! The TPM command layer: each method marshals one or a few commands with
//! `tpm2-protocol`, sends them over any [`TpmTransport`] and parses the
//! response with [`crate::response`].

use tpm2_protocol::TpmWriter;
use tpm2_protocol::basic::{TpmBuffer, TpmHandle, TpmInt32, TpmUint16, TpmUint32};
use tpm2_protocol::data::{
    Tpm2bData, Tpm2bDigest, Tpm2bEncryptedSecret, Tpm2bIdObject, Tpm2bName, Tpm2bNonce,
    Tpm2bPublic, Tpm2bSensitiveCreate, TpmAlgId, TpmCap, TpmPt, TpmRh, TpmSe, TpmSt, TpmSu,
    TpmaSession, TpmlDigestValues, TpmlPcrSelection, TpmsAuthCommand, TpmsSensitiveCreate, TpmtHa,
    TpmtPublic, TpmtSigScheme, TpmtSymDefObject, TpmuHa,
};
use tpm2_protocol::frame::{
    TpmActivateCredentialCommand, TpmCreatePrimaryCommand, TpmFlushContextCommand,
    TpmFlushContextResponse, TpmFrame, TpmGetCapabilityCommand, TpmGetRandomCommand,
    TpmMakeCredentialCommand, TpmNvReadCommand, TpmNvReadPublicCommand, TpmPcrExtendCommand,
    TpmPcrExtendResponse, TpmPcrReadCommand, TpmPolicySecretCommand, TpmPolicySecretResponse,
    TpmQuoteCommand, TpmReadPublicCommand, TpmStartAuthSessionCommand, TpmStartupCommand,
    TpmStartupResponse, tpm_marshal_command,
};

use crate::error::{MalformedResponse, ResponseCode, Result, TpmError};
use crate::pcr::{PCR_COUNT, PcrDigest, PcrSelection, PcrValues};
use crate::response;
use crate::templates::{AkAlgorithm, EkAlgorithm, ak_template, ek_template};
use crate::transport::TpmTransport;
use crate::types::{Credential, LoadedKey, Name, PublicArea, Quote, StartupOutcome, TpmProperties};

/// Largest command or response frame exchanged (the PC Client TPM limit).
pub const MAX_FRAME_LEN: usize = 4096;

/// How often a command is resent while the TPM answers RETRY, YIELDED or
/// TESTING. swtpm answers RETRY to a first Quote; a real TPM finishing its
/// self test may answer TESTING for a while.
pub const MAX_TRANSIENT_RETRIES: u32 = 64;

/// The EK certificate may be up to this large (TPM NV indices of the EK
/// certificate range are at most a few KiB).
const MAX_NV_CHUNK: u16 = 1024;

/// `TPM_RH_*` handles used as command handles.
const RH_ENDORSEMENT: u32 = TpmRh::Endorsement.value();
const RH_NULL: u32 = TpmRh::Null.value();

fn marshal_err(e: tpm2_protocol::TpmError) -> TpmError {
    TpmError::Marshal(e)
}

/// The password authorization with an empty password (`TPM_RS_PW`), which
/// authorizes the hierarchies, the AK and the EK certificate NV index.
fn password_session() -> TpmsAuthCommand {
    TpmsAuthCommand {
        session_handle: TpmHandle::new(TpmRh::Pw.value()),
        nonce: Tpm2bNonce::default(),
        session_attributes: TpmaSession::CONTINUE_SESSION,
        hmac: Tpm2bDigest::default(),
    }
}

/// Use of a policy session whose policy needs no authValue: the TPM checks
/// no HMAC, so the authorization carries none. Without continueSession the
/// TPM flushes the session once the command succeeds.
fn policy_session(handle: u32) -> TpmsAuthCommand {
    TpmsAuthCommand {
        session_handle: TpmHandle::new(handle),
        nonce: Tpm2bNonce::default(),
        session_attributes: TpmaSession::empty(),
        hmac: Tpm2bDigest::default(),
    }
}

/// A TPM reached through `T`.
pub struct Tpm<T: TpmTransport> {
    transport: T,
    command: [u8; MAX_FRAME_LEN],
    response: [u8; MAX_FRAME_LEN],
}

impl<T: TpmTransport> Tpm<T> {
    /// A command layer over `transport`.
    pub fn new(transport: T) -> Self {
        Self {
            transport,
            command: [0; MAX_FRAME_LEN],
            response: [0; MAX_FRAME_LEN],
        }
    }

    /// The transport, e.g. to reach the swtpm process in tests.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Gives the transport back.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Marshals `command` with `sessions`, sends it, resends it while the
    /// TPM answers a transient warning, and returns the response frame
    /// (which may carry any response code; the parsers check it).
    fn execute<C: TpmFrame>(&mut self, command: &C, sessions: &[TpmsAuthCommand]) -> Result<&[u8]> {
        let tag = if sessions.is_empty() {
            TpmSt::NoSessions
        } else {
            TpmSt::Sessions
        };
        let command_len = {
            let mut writer = TpmWriter::new(&mut self.command);
            tpm_marshal_command(command, tag, sessions, &mut writer).map_err(marshal_err)?;
            writer.len()
        };
        let mut last = ResponseCode(0);
        for _ in 0..MAX_TRANSIENT_RETRIES {
            let len = self
                .transport
                .transact(&self.command[..command_len], &mut self.response)?;
            let rsp = self.response.get(..len).ok_or(MalformedResponse::Header)?;
            let code = ResponseCode(response::response_code(rsp)?);
            if !code.is_transient() {
                return self
                    .response
                    .get(..len)
                    .ok_or(MalformedResponse::Header.into());
            }
            last = code;
        }
        Err(TpmError::RetriesExhausted(last))
    }

    /// TPM2_Startup(CLEAR). Firmware (SeaBIOS) normally did it already.
    ///
    /// # Errors
    ///
    /// Any [`TpmError`] except `TPM_RC_INITIALIZE`, which means
    /// [`StartupOutcome::AlreadyStarted`].
    pub fn startup_clear(&mut self) -> Result<StartupOutcome> {
        let rsp = self.execute(
            &TpmStartupCommand {
                handles: [],
                startup_type: TpmSu::Clear,
            },
            &[],
        )?;
        match response::parse_empty::<TpmStartupResponse>(rsp) {
            Ok(()) => Ok(StartupOutcome::Started),
            Err(TpmError::Tpm(ResponseCode::INITIALIZE)) => Ok(StartupOutcome::AlreadyStarted),
            Err(e) => Err(e),
        }
    }

    /// One fixed TPM property (`TPM_PT_*`).
    ///
    /// # Errors
    ///
    /// Any [`TpmError`]; [`MalformedResponse::Inconsistent`] when the TPM
    /// does not report the property.
    pub fn tpm_property(&mut self, property: TpmPt) -> Result<u32> {
        let command = TpmGetCapabilityCommand {
            handles: [],
            cap: TpmCap::TpmProperties,
            property: TpmUint32::new(property.value()),
            property_count: TpmUint32::new(1),
        };
        let (_, list) = response::parse_tpm_properties(self.execute(&command, &[])?)?;
        list.iter()
            .find(|(p, _)| *p == property.value())
            .map(|(_, value)| *value)
            .ok_or(MalformedResponse::Inconsistent("requested property missing").into())
    }

    /// Manufacturer and firmware version.
    ///
    /// # Errors
    ///
    /// As [`Tpm::tpm_property`].
    pub fn properties(&mut self) -> Result<TpmProperties> {
        Ok(TpmProperties {
            manufacturer: self.tpm_property(TpmPt::Manufacturer)?.to_be_bytes(),
            firmware_version_1: self.tpm_property(TpmPt::FirmwareVersion1)?,
            firmware_version_2: self.tpm_property(TpmPt::FirmwareVersion2)?,
        })
    }

    /// Fills `out` with random bytes from the TPM.
    ///
    /// # Errors
    ///
    /// Any [`TpmError`]; [`MalformedResponse::Inconsistent`] when the TPM
    /// returns no bytes or more than asked.
    pub fn get_random(&mut self, out: &mut [u8]) -> Result<()> {
        let mut filled = 0;
        while filled < out.len() {
            let want = (out.len() - filled).min(32);
            let command = TpmGetRandomCommand {
                handles: [],
                bytes_requested: TpmUint16::new(want as u16),
            };
            let bytes = response::parse_get_random(self.execute(&command, &[])?)?;
            if bytes.is_empty() || bytes.len() > want {
                return Err(MalformedResponse::Inconsistent("random byte count").into());
            }
            out[filled..filled + bytes.len()].copy_from_slice(&bytes);
            filled += bytes.len();
        }
        Ok(())
    }

    /// Reads the SHA-256 values of `selection`, resending for the PCRs a
    /// TPM leaves out (it returns at most 8 per call).
    ///
    /// # Errors
    ///
    /// Any [`TpmError`]; [`MalformedResponse::Inconsistent`] when the TPM
    /// returns unrequested PCRs or makes no progress.
    pub fn pcr_read(&mut self, selection: PcrSelection) -> Result<PcrValues> {
        let mut slots: [Option<PcrDigest>; PCR_COUNT as usize] = [None; PCR_COUNT as usize];
        let mut remaining = selection;
        // Each round returns at least one PCR or fails, so 24 rounds suffice.
        for _ in 0..PCR_COUNT {
            if remaining.is_empty() {
                break;
            }
            let command = TpmPcrReadCommand {
                handles: [],
                pcr_selection_in: remaining.to_tpml()?,
            };
            let (got, values) = response::parse_pcr_read(self.execute(&command, &[])?)?;
            if got.is_empty() || !got.without(remaining).is_empty() {
                return Err(
                    MalformedResponse::Inconsistent("PCR_Read returned unrequested PCRs").into(),
                );
            }
            for (pcr, value) in got.iter().zip(values) {
                slots[usize::from(pcr)] = Some(value);
            }
            remaining = remaining.without(got);
        }
        let mut out = PcrValues {
            selection,
            values: heapless::Vec::new(),
        };
        for pcr in selection.iter() {
            let value = slots[usize::from(pcr)]
                .ok_or(MalformedResponse::Inconsistent("PCR_Read left PCRs out"))?;
            out.values
                .push(value)
                .map_err(|_| MalformedResponse::TooLarge("PCR values"))?;
        }
        Ok(out)
    }

    /// Extends SHA-256 PCR `pcr` with `digest`: new = SHA256(old || digest).
    ///
    /// # Errors
    ///
    /// [`TpmError::InvalidArgument`] for `pcr >= 24`, otherwise any [`TpmError`].
    pub fn pcr_extend(&mut self, pcr: u8, digest: &PcrDigest) -> Result<()> {
        if pcr >= PCR_COUNT {
            return Err(TpmError::InvalidArgument("PCR index must be below 24"));
        }
        let mut digests = TpmlDigestValues::new();
        digests
            .try_push(TpmtHa {
                hash_alg: TpmAlgId::Sha256,
                digest: TpmuHa::Digest(TpmBuffer::try_from(&digest[..]).map_err(marshal_err)?),
            })
            .map_err(marshal_err)?;
        let command = TpmPcrExtendCommand {
            handles: [TpmHandle::new(u32::from(pcr))],
            digests,
        };
        response::parse_empty::<TpmPcrExtendResponse>(
            self.execute(&command, &[password_session()])?,
        )
    }

    /// The public area and name of a loaded object.
    ///
    /// # Errors
    ///
    /// Any [`TpmError`].
    pub fn read_public(&mut self, handle: u32) -> Result<(PublicArea, Name)> {
        let command = TpmReadPublicCommand {
            handles: [TpmHandle::new(handle)],
        };
        response::parse_read_public(self.execute(&command, &[])?)
    }

    /// Creates a primary key from `template` under `hierarchy` (empty
    /// hierarchy password) and returns it loaded.
    ///
    /// # Errors
    ///
    /// Any [`TpmError`].
    pub fn create_primary(&mut self, hierarchy: u32, template: TpmtPublic) -> Result<LoadedKey> {
        let command = TpmCreatePrimaryCommand {
            handles: [TpmHandle::new(hierarchy)],
            in_sensitive: Tpm2bSensitiveCreate {
                inner: TpmsSensitiveCreate::default(),
            },
            in_public: Tpm2bPublic { inner: template },
            outside_info: Tpm2bData::default(),
            creation_pcr: TpmlPcrSelection::new(),
        };
        response::parse_create_primary(self.execute(&command, &[password_session()])?)
    }

    /// Creates the endorsement key from the TCG default template. The same
    /// TPM always yields the same key, the one its EK certificate certifies.
    ///
    /// # Errors
    ///
    /// Any [`TpmError`].
    pub fn create_ek(&mut self, alg: EkAlgorithm) -> Result<LoadedKey> {
        self.create_primary(RH_ENDORSEMENT, ek_template(alg)?)
    }

    /// Creates the attestation key: a restricted signing primary key in the
    /// endorsement hierarchy (deterministic, so it survives reboots without
    /// being stored).
    ///
    /// # Errors
    ///
    /// Any [`TpmError`].
    pub fn create_ak(&mut self, alg: AkAlgorithm) -> Result<LoadedKey> {
        self.create_primary(RH_ENDORSEMENT, ak_template(alg)?)
    }

    /// Quotes the SHA-256 PCRs in `selection` with `nonce` as qualifying
    /// data, signed by the AK at `ak` with its own scheme.
    ///
    /// # Errors
    ///
    /// [`TpmError::Marshal`] for a nonce over 66 bytes, otherwise any [`TpmError`].
    pub fn quote(&mut self, ak: u32, nonce: &[u8], selection: PcrSelection) -> Result<Quote> {
        let command = TpmQuoteCommand {
            handles: [TpmHandle::new(ak)],
            qualifying_data: Tpm2bData::try_from(nonce).map_err(marshal_err)?,
            in_scheme: TpmtSigScheme::default(),
            pcr_select: selection.to_tpml()?,
        };
        response::parse_quote(self.execute(&command, &[password_session()])?)
    }

    /// Wraps `credential` for the key named `object_name`, encrypted to the
    /// loaded EK at `ek` (TPM2_MakeCredential; normally the verifier does
    /// this in software).
    ///
    /// # Errors
    ///
    /// Any [`TpmError`].
    pub fn make_credential(
        &mut self,
        ek: u32,
        credential: &[u8],
        object_name: &[u8],
    ) -> Result<Credential> {
        let command = TpmMakeCredentialCommand {
            handles: [TpmHandle::new(ek)],
            credential: Tpm2bDigest::try_from(credential).map_err(marshal_err)?,
            object_name: Tpm2bName::try_from(object_name).map_err(marshal_err)?,
        };
        response::parse_make_credential(self.execute(&command, &[])?)
    }

    /// Recovers the secret of `credential`, which the TPM releases only if
    /// it was made for this EK and for the name of the key at `ak`.
    ///
    /// The EK's policy is PolicySecret(TPM_RH_ENDORSEMENT), satisfied in a
    /// fresh policy session; the AK is authorized by its empty password.
    ///
    /// # Errors
    ///
    /// Any [`TpmError`]; a credential for another key or EK fails with a
    /// TPM error.
    pub fn activate_credential(
        &mut self,
        ak: u32,
        ek: u32,
        credential: &Credential,
    ) -> Result<heapless::Vec<u8, 64>> {
        let session = self.start_policy_session()?;
        let result = self.activate_in_session(session, ak, ek, credential);
        if result.is_err() {
            // A failed command leaves the session loaded; sessions are a
            // scarce resource (three on many TPMs). The flush may itself fail
            // if the TPM already dropped it, which is fine.
            let _ = self.flush_context(session);
        }
        result
    }

    fn activate_in_session(
        &mut self,
        session: u32,
        ak: u32,
        ek: u32,
        credential: &Credential,
    ) -> Result<heapless::Vec<u8, 64>> {
        let policy = TpmPolicySecretCommand {
            handles: [TpmHandle::new(RH_ENDORSEMENT), TpmHandle::new(session)],
            nonce_tpm: Tpm2bNonce::default(),
            cp_hash_a: Tpm2bDigest::default(),
            policy_ref: Tpm2bNonce::default(),
            expiration: TpmInt32::new(0),
        };
        response::parse_empty::<TpmPolicySecretResponse>(
            self.execute(&policy, &[password_session()])?,
        )?;
        let command = TpmActivateCredentialCommand {
            handles: [TpmHandle::new(ak), TpmHandle::new(ek)],
            credential_blob: Tpm2bIdObject::try_from(&credential.blob[..]).map_err(marshal_err)?,
            secret: Tpm2bEncryptedSecret::try_from(&credential.secret[..]).map_err(marshal_err)?,
        };
        let sessions = [password_session(), policy_session(session)];
        response::parse_activate_credential(self.execute(&command, &sessions)?)
    }

    /// Starts an unbound, unsalted SHA-256 policy session.
    ///
    /// # Errors
    ///
    /// Any [`TpmError`].
    pub fn start_policy_session(&mut self) -> Result<u32> {
        // The TPM requires a caller nonce of at least 16 bytes.
        let mut nonce = [0u8; 32];
        self.get_random(&mut nonce)?;
        let command = TpmStartAuthSessionCommand {
            handles: [TpmHandle::new(RH_NULL), TpmHandle::new(RH_NULL)],
            nonce_caller: Tpm2bNonce::try_from(&nonce[..]).map_err(marshal_err)?,
            encrypted_salt: Tpm2bEncryptedSecret::default(),
            session_type: TpmSe::Policy,
            symmetric: TpmtSymDefObject {
                algorithm: TpmAlgId::Null,
                ..TpmtSymDefObject::default()
            },
            auth_hash: TpmAlgId::Sha256,
        };
        response::parse_start_auth_session(self.execute(&command, &[])?)
    }

    /// Unloads a transient object or session.
    ///
    /// # Errors
    ///
    /// Any [`TpmError`].
    pub fn flush_context(&mut self, handle: u32) -> Result<()> {
        let command = TpmFlushContextCommand {
            handles: [],
            flush_handle: TpmHandle::new(handle),
        };
        response::parse_empty::<TpmFlushContextResponse>(self.execute(&command, &[])?)
    }

    /// Reads the whole NV index `index` into `out` (authorized by the index's
    /// own empty password), returning its length.
    ///
    /// # Errors
    ///
    /// [`TpmError::BufferTooSmall`] when `out` cannot hold the data, a TPM
    /// error (e.g. `TPM_RC_HANDLE`) when the index is not defined.
    pub fn nv_read(&mut self, index: u32, out: &mut [u8]) -> Result<usize> {
        let command = TpmNvReadPublicCommand {
            handles: [TpmHandle::new(index)],
        };
        let (reported, size) = response::parse_nv_read_public(self.execute(&command, &[])?)?;
        if reported != index {
            return Err(MalformedResponse::Inconsistent("NV public of another index").into());
        }
        let size = usize::from(size);
        let available = out.len();
        let out = out.get_mut(..size).ok_or(TpmError::BufferTooSmall {
            needed: size,
            available,
        })?;
        let chunk_max = self
            .tpm_property(TpmPt::NvBufferMax)
            .map_or(MAX_NV_CHUNK, |max| {
                u16::try_from(max).unwrap_or(MAX_NV_CHUNK).min(MAX_NV_CHUNK)
            })
            .max(1);
        let mut offset = 0usize;
        // Each round reads at least one byte or fails: at most `size` rounds.
        while offset < size {
            let want = (size - offset).min(usize::from(chunk_max));
            let command = TpmNvReadCommand {
                handles: [TpmHandle::new(index), TpmHandle::new(index)],
                size: TpmUint16::new(want as u16),
                offset: TpmUint16::new(offset as u16),
            };
            let data = response::parse_nv_read(self.execute(&command, &[password_session()])?)?;
            if data.len() != want {
                return Err(
                    MalformedResponse::Inconsistent("NV_Read returned a different size").into(),
                );
            }
            out[offset..offset + want].copy_from_slice(&data);
            offset += want;
        }
        Ok(size)
    }

    /// Reads the EK certificate (DER) that the manufacturer stored for the
    /// template `alg`, returning its length.
    ///
    /// # Errors
    ///
    /// As [`Tpm::nv_read`].
    pub fn nv_read_ek_cert(&mut self, alg: EkAlgorithm, out: &mut [u8]) -> Result<usize> {
        self.nv_read(alg.certificate_nv_index(), out)
    }
}

#[cfg(test)]
mod tests;
