//! Evidence directories in tpm2-tools' file formats, so that other tools
//! can check what the verifier saw, and the verifier can check what other
//! tools produced:
//!
//! | file          | contents                                             |
//! |---------------|------------------------------------------------------|
//! | `quote.msg`   | TPMS_ATTEST (`tpm2_quote -m`)                        |
//! | `quote.sig`   | TPMT_SIGNATURE (`tpm2_quote -s`)                     |
//! | `quote.pcrs`  | PCR file, `serialized` format (`tpm2_quote -o`)      |
//! | `ak.pem`      | AK SubjectPublicKeyInfo PEM (`tpm2_createak -f pem`) |
//! | `ak.pub`      | AK TPM2B_PUBLIC (`-f tss`)                           |
//! | `nonce.hex`   | the qualifying data, hex                             |
//! | `eventlog.bin`| TCG event log, optional when reading                 |
//! | `measurements.bin` | the A-VM's measurement log (IMA binary records; replayable with `evmctl ima_measurement`), when it has one |
//! | `evidence.json` | the verifier's report (written only)               |
//!
//! `tpm2_checkquote -u ak.pem -m quote.msg -s quote.sig -f quote.pcrs -g
//! sha256 -q $(cat nonce.hex)` accepts an exported directory.
//!
//! The AK files of a directory are only a claim: `verify` trusts a key
//! because it is enrolled (looked up by the claimed key's name) or because
//! the caller names it (`--ak`), never because it sits in the directory.
//! Files are read as bounded regular files without following links, and
//! exports go to a new or empty directory ([`crate::files`]).

use std::path::{Path, PathBuf};

use avm_attest::tpm::Attest;
use avm_attest::wire::{Evidence, PcrValue};
use openssl::bn::BigNumContext;
use openssl::nid::Nid;
use openssl::pkey::PKey;

use crate::files::{self, ExportDir, FileError};
use crate::hex;
use crate::pcrs_file;
use crate::report::Report;
use crate::tpm_public::{PublicKey, TpmPublic};

pub const QUOTE_MSG: &str = "quote.msg";
pub const QUOTE_SIG: &str = "quote.sig";
pub const QUOTE_PCRS: &str = "quote.pcrs";
pub const AK_PEM: &str = "ak.pem";
pub const AK_PUB: &str = "ak.pub";
pub const NONCE_HEX: &str = "nonce.hex";
pub const EVENT_LOG: &str = "eventlog.bin";
pub const MEASUREMENT_LOG: &str = "measurements.bin";
pub const REPORT_JSON: &str = "evidence.json";

/// Largest file read from an evidence directory: nothing in it is bigger
/// than a wire frame.
pub const MAX_FILE_LEN: u64 = avm_attest::wire::MAX_FRAME_LEN as u64;

/// Why a directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceDirError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// The AK a directory (or a `--ak` file) names: a TPMT_PUBLIC, whose name
/// and attributes are known, or a bare PEM key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AkFile {
    Public(TpmPublic),
    Pem(PublicKey),
}

impl AkFile {
    pub fn key(&self) -> &PublicKey {
        match self {
            Self::Public(public) => &public.key,
            Self::Pem(key) => key,
        }
    }

    /// The TPM name, known only for a TPMT_PUBLIC.
    pub fn name(&self) -> Vec<u8> {
        match self {
            Self::Public(public) => public.name(),
            Self::Pem(_) => Vec::new(),
        }
    }

    /// Parses a key file: PEM SubjectPublicKeyInfo, TPM2B_PUBLIC
    /// (tpm2-tools `-f tss`) or a bare TPMT_PUBLIC.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.starts_with(b"-----BEGIN") {
            return public_key_from_pem(bytes).map(Self::Pem);
        }
        TpmPublic::parse_tpm2b(bytes)
            .or_else(|_| TpmPublic::parse(bytes))
            .map(Self::Public)
            .map_err(|e| format!("neither PEM nor a TPM public area: {e}"))
    }

    /// Reads and parses a key file (bounded, no links followed).
    pub fn read(path: &Path) -> Result<Self, EvidenceDirError> {
        let bytes = files::read_required(path, MAX_FILE_LEN)?;
        Self::parse(&bytes).map_err(|detail| EvidenceDirError::Invalid {
            path: path.to_path_buf(),
            detail,
        })
    }
}

/// Evidence read back from a directory.
#[derive(Debug, Clone)]
pub struct LoadedEvidence {
    pub attest: Vec<u8>,
    pub signature: Vec<u8>,
    pub pcrs: Vec<PcrValue>,
    /// `None` if the directory has no event log.
    pub event_log: Option<Vec<u8>>,
    /// `None` if the directory has no measurement log.
    pub measurement_log: Option<Vec<u8>>,
    /// The AK the directory claims signed the quote (`ak.pub`, else
    /// `ak.pem`), if any: to be matched against enrolled nodes.
    pub claimed_ak: Option<AkFile>,
    /// From `nonce.hex`, if present.
    pub nonce: Option<Vec<u8>>,
}

/// Writes evidence, the AK, the nonce and the report into `dir`, which
/// must be new or empty. The event log is the node's, written whatever the
/// verdict (it is evidence); no file is written through a link.
pub fn export(
    dir: &Path,
    evidence: &Evidence,
    measurement_log: Option<&[u8]>,
    ak: &TpmPublic,
    nonce: &[u8],
    report: &Report,
) -> Result<(), EvidenceDirError> {
    let out = ExportDir::create(dir)?;
    let invalid = |detail: String| EvidenceDirError::Invalid {
        path: dir.join(AK_PEM),
        detail,
    };
    let pem = ak
        .to_pkey()
        .and_then(|k| k.public_key_to_pem())
        .map_err(|e| invalid(e.to_string()))?;
    out.write(QUOTE_MSG, &evidence.attest)?;
    out.write(QUOTE_SIG, &evidence.signature)?;
    out.write(QUOTE_PCRS, &pcrs_file::emit_serialized(&evidence.pcrs))?;
    out.write(AK_PEM, &pem)?;
    let len = u16::try_from(ak.marshaled().len())
        .map_err(|_| invalid("AK public area too large".into()))?;
    let mut ak_pub = len.to_be_bytes().to_vec();
    ak_pub.extend_from_slice(ak.marshaled());
    out.write(AK_PUB, &ak_pub)?;
    out.write(NONCE_HEX, format!("{}\n", hex::encode(nonce)).as_bytes())?;
    if !evidence.event_log.is_empty() {
        out.write(EVENT_LOG, &evidence.event_log)?;
    }
    if let Some(log) = measurement_log.filter(|l| !l.is_empty()) {
        out.write(MEASUREMENT_LOG, log)?;
    }
    let json = serde_json::to_vec_pretty(report).map_err(|e| invalid(e.to_string()))?;
    out.write(REPORT_JSON, &json)?;
    Ok(())
}

fn read_optional(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, EvidenceDirError> {
    Ok(files::read_regular(&dir.join(name), MAX_FILE_LEN)?)
}

fn read_required(dir: &Path, name: &str) -> Result<Vec<u8>, EvidenceDirError> {
    Ok(files::read_required(&dir.join(name), MAX_FILE_LEN)?)
}

/// The AK from a PEM SubjectPublicKeyInfo (P-256 or RSA).
pub fn public_key_from_pem(pem: &[u8]) -> Result<PublicKey, String> {
    let key = PKey::public_key_from_pem(pem).map_err(|e| e.to_string())?;
    if let Ok(ec) = key.ec_key() {
        if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
            return Err("ECC key is not on P-256".into());
        }
        let mut ctx = BigNumContext::new().map_err(|e| e.to_string())?;
        let bytes = ec
            .public_key()
            .to_bytes(
                ec.group(),
                openssl::ec::PointConversionForm::UNCOMPRESSED,
                &mut ctx,
            )
            .map_err(|e| e.to_string())?;
        // 0x04 || x || y
        let (Some(x), Some(y)) = (bytes.get(1..33), bytes.get(33..65)) else {
            return Err("unexpected EC point encoding".into());
        };
        let mut out_x = [0u8; 32];
        let mut out_y = [0u8; 32];
        out_x.copy_from_slice(x);
        out_y.copy_from_slice(y);
        return Ok(PublicKey::EccP256 { x: out_x, y: out_y });
    }
    let rsa = key
        .rsa()
        .map_err(|_| "key is neither ECC nor RSA".to_string())?;
    let e = rsa.e().to_vec();
    if e.is_empty() || e.len() > 4 {
        return Err("RSA exponent does not fit 32 bits".into());
    }
    let exponent = e.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    Ok(PublicKey::Rsa {
        modulus: rsa.n().to_vec(),
        exponent,
    })
}

/// Reads an exported directory, or one made with tpm2-tools (`quote.msg`,
/// `quote.sig`, `quote.pcrs` in either PCR format, `ak.pub` or `ak.pem`).
pub fn load(dir: &Path) -> Result<LoadedEvidence, EvidenceDirError> {
    let invalid = |name: &str, detail: String| EvidenceDirError::Invalid {
        path: dir.join(name),
        detail,
    };
    let attest = read_required(dir, QUOTE_MSG)?;
    let signature = read_required(dir, QUOTE_SIG)?;
    // The quote's own selection tells a `values` PCR file's indices.
    let quoted_mask = Attest::parse(&attest)
        .ok()
        .and_then(|a| a.quote.and_then(|q| q.pcr_select.sha256_mask()));
    let pcrs = pcrs_file::parse_any(&read_required(dir, QUOTE_PCRS)?, quoted_mask)
        .map_err(|e| invalid(QUOTE_PCRS, e.to_string()))?;
    let claimed_ak = match read_optional(dir, AK_PUB)? {
        Some(bytes) => Some(AkFile::Public(
            TpmPublic::parse_tpm2b(&bytes).map_err(|e| invalid(AK_PUB, e.to_string()))?,
        )),
        None => match read_optional(dir, AK_PEM)? {
            Some(pem) => Some(AkFile::Pem(
                public_key_from_pem(&pem).map_err(|e| invalid(AK_PEM, e))?,
            )),
            None => None,
        },
    };
    let nonce = match read_optional(dir, NONCE_HEX)? {
        Some(text) => {
            let text = String::from_utf8_lossy(&text);
            Some(hex::decode(text.trim()).map_err(|e| invalid(NONCE_HEX, e.to_string()))?)
        }
        None => None,
    };
    Ok(LoadedEvidence {
        attest,
        signature,
        pcrs,
        event_log: read_optional(dir, EVENT_LOG)?,
        measurement_log: read_optional(dir, MEASUREMENT_LOG)?,
        claimed_ak,
        nonce,
    })
}
