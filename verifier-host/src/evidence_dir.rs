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
//! | `ak.pub`      | AK TPM2B_PUBLIC (`-f tss`), optional when reading    |
//! | `nonce.hex`   | the qualifying data, hex                             |
//! | `eventlog.bin`| TCG event log, optional when reading                 |
//! | `evidence.json` | the verifier's report (written only)               |
//!
//! `tpm2_checkquote -u ak.pem -m quote.msg -s quote.sig -f quote.pcrs -g
//! sha256 -q $(cat nonce.hex)` accepts an exported directory.

use std::path::{Path, PathBuf};

use avm_attest::tpm::Attest;
use avm_attest::wire::{Evidence, PcrValue};
use openssl::bn::BigNumContext;
use openssl::nid::Nid;
use openssl::pkey::PKey;

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
pub const REPORT_JSON: &str = "evidence.json";

/// Largest file read from an evidence directory: nothing in it is bigger
/// than a wire frame.
const MAX_FILE_LEN: u64 = avm_attest::wire::MAX_FRAME_LEN as u64;

/// Why a directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// Evidence read back from a directory.
#[derive(Debug, Clone)]
pub struct LoadedEvidence {
    pub attest: Vec<u8>,
    pub signature: Vec<u8>,
    pub pcrs: Vec<PcrValue>,
    /// `None` if the directory has no event log.
    pub event_log: Option<Vec<u8>>,
    pub ak: PublicKey,
    /// The AK's TPM name, known only if `ak.pub` is present.
    pub ak_name: Vec<u8>,
    /// From `nonce.hex`, if present.
    pub nonce: Option<Vec<u8>>,
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), EvidenceDirError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|source| EvidenceDirError::Io { path, source })
}

/// Writes evidence, the AK, the nonce and the report into `dir` (created
/// if needed).
pub fn export(
    dir: &Path,
    evidence: &Evidence,
    ak: &TpmPublic,
    nonce: &[u8],
    report: &Report,
) -> Result<(), EvidenceDirError> {
    std::fs::create_dir_all(dir).map_err(|source| EvidenceDirError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let invalid = |detail: String| EvidenceDirError::Invalid {
        path: dir.join(AK_PEM),
        detail,
    };
    let pem = ak
        .to_pkey()
        .and_then(|k| k.public_key_to_pem())
        .map_err(|e| invalid(e.to_string()))?;
    write(dir, QUOTE_MSG, &evidence.attest)?;
    write(dir, QUOTE_SIG, &evidence.signature)?;
    write(dir, QUOTE_PCRS, &pcrs_file::emit_serialized(&evidence.pcrs))?;
    write(dir, AK_PEM, &pem)?;
    let mut ak_pub = (ak.marshaled().len() as u16).to_be_bytes().to_vec();
    ak_pub.extend_from_slice(ak.marshaled());
    write(dir, AK_PUB, &ak_pub)?;
    write(
        dir,
        NONCE_HEX,
        format!("{}\n", hex::encode(nonce)).as_bytes(),
    )?;
    if !evidence.event_log.is_empty() {
        write(dir, EVENT_LOG, &evidence.event_log)?;
    }
    let json = serde_json::to_vec_pretty(report).map_err(|e| invalid(e.to_string()))?;
    write(dir, REPORT_JSON, &json)
}

/// Reads a file of at most [`MAX_FILE_LEN`] bytes; `Ok(None)` if absent.
fn read_optional(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, EvidenceDirError> {
    use std::io::Read;
    let path = dir.join(name);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(EvidenceDirError::Io { path, source }),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| EvidenceDirError::Io {
            path: path.clone(),
            source,
        })?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(EvidenceDirError::Invalid {
            path,
            detail: format!("larger than {MAX_FILE_LEN} bytes"),
        });
    }
    Ok(Some(bytes))
}

fn read_required(dir: &Path, name: &str) -> Result<Vec<u8>, EvidenceDirError> {
    read_optional(dir, name)?.ok_or_else(|| EvidenceDirError::Io {
        path: dir.join(name),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "missing"),
    })
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
/// `quote.sig`, `quote.pcrs` in either PCR format, `ak.pem` or `ak.pub`).
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
    let (ak, ak_name) = match read_optional(dir, AK_PUB)? {
        Some(bytes) => {
            let public =
                TpmPublic::parse_tpm2b(&bytes).map_err(|e| invalid(AK_PUB, e.to_string()))?;
            (public.key.clone(), public.name())
        }
        None => {
            let pem = read_required(dir, AK_PEM)?;
            (
                public_key_from_pem(&pem).map_err(|e| invalid(AK_PEM, e))?,
                Vec::new(),
            )
        }
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
        ak,
        ak_name,
        nonce,
    })
}
