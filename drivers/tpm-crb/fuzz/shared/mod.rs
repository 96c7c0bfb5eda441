//! Shared by the fuzz targets and the seed generator (`seedgen/`), so that a
//! seed's first byte means the same to both: which response parser
//! (`response` target) or which command-layer call (`commands` target) the
//! rest of the input is fed to, and how a recorded TPM conversation is
//! replayed.

use tpm_crb::response::{
    parse_activate_credential, parse_create_primary, parse_empty, parse_get_random,
    parse_make_credential, parse_nv_read, parse_nv_read_public, parse_pcr_read, parse_quote,
    parse_read_public, parse_start_auth_session, parse_tpm_properties,
};
use tpm_crb::tpm2_protocol::frame::{
    TpmFlushContextResponse, TpmPcrExtendResponse, TpmPolicySecretResponse, TpmStartupResponse,
};
use tpm_crb::{
    AkAlgorithm, Credential, EkAlgorithm, PcrSelection, TPM_HEADER_LEN, Tpm, TpmTransport,
    TransportError,
};

/// A response parser and the TPM command code (`TPM_CC`) it parses the
/// response of.
pub struct Parser {
    pub name: &'static str,
    pub command_code: u32,
    pub parse: fn(&[u8]),
}

/// Every parser of `tpm_crb::response`, in selector order. Append only:
/// the committed seeds name parsers by their index.
pub const PARSERS: &[Parser] = &[
    Parser {
        name: "startup",
        command_code: 0x144,
        parse: |r| {
            let _ = parse_empty::<TpmStartupResponse>(r);
        },
    },
    Parser {
        name: "pcr_extend",
        command_code: 0x182,
        parse: |r| {
            let _ = parse_empty::<TpmPcrExtendResponse>(r);
        },
    },
    Parser {
        name: "flush_context",
        command_code: 0x165,
        parse: |r| {
            let _ = parse_empty::<TpmFlushContextResponse>(r);
        },
    },
    Parser {
        name: "policy_secret",
        command_code: 0x151,
        parse: |r| {
            let _ = parse_empty::<TpmPolicySecretResponse>(r);
        },
    },
    Parser {
        name: "get_random",
        command_code: 0x17B,
        parse: |r| {
            let _ = parse_get_random(r);
        },
    },
    Parser {
        name: "get_capability",
        command_code: 0x17A,
        parse: |r| {
            let _ = parse_tpm_properties(r);
        },
    },
    Parser {
        name: "pcr_read",
        command_code: 0x17E,
        parse: |r| {
            let _ = parse_pcr_read(r);
        },
    },
    Parser {
        name: "create_primary",
        command_code: 0x131,
        parse: |r| {
            let _ = parse_create_primary(r);
        },
    },
    Parser {
        name: "read_public",
        command_code: 0x173,
        parse: |r| {
            let _ = parse_read_public(r);
        },
    },
    Parser {
        name: "quote",
        command_code: 0x158,
        parse: |r| {
            let _ = parse_quote(r);
        },
    },
    Parser {
        name: "start_auth_session",
        command_code: 0x176,
        parse: |r| {
            let _ = parse_start_auth_session(r);
        },
    },
    Parser {
        name: "activate_credential",
        command_code: 0x147,
        parse: |r| {
            let _ = parse_activate_credential(r);
        },
    },
    Parser {
        name: "make_credential",
        command_code: 0x168,
        parse: |r| {
            let _ = parse_make_credential(r);
        },
    },
    Parser {
        name: "nv_read_public",
        command_code: 0x169,
        parse: |r| {
            let _ = parse_nv_read_public(r);
        },
    },
    Parser {
        name: "nv_read",
        command_code: 0x14E,
        parse: |r| {
            let _ = parse_nv_read(r);
        },
    },
];

/// Selector bit of the `response` target: feed the frame as it is, without
/// making its header's size field match its length.
pub const RAW: u8 = 0x80;

/// The parser a `response` input's first byte selects.
#[must_use]
pub fn parser(selector: u8) -> &'static Parser {
    &PARSERS[usize::from(selector & !RAW) % PARSERS.len()]
}

/// The selector byte of the parser for command code `cc`, if any.
#[must_use]
pub fn parser_selector(cc: u32) -> Option<u8> {
    PARSERS
        .iter()
        .position(|p| p.command_code == cc)
        .and_then(|i| u8::try_from(i).ok())
}

/// Writes `frame.len()` into the header's size field, as every transport
/// guarantees (`TpmTransport::transact`): without this almost every mutated
/// input dies at the first check of `response_code`.
pub fn fix_size(frame: &mut [u8]) {
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    if let Some(size) = frame.get_mut(2..6) {
        size.copy_from_slice(&len.to_be_bytes());
    }
}

/// Length of the next response frame in a recorded conversation: its size
/// field when that is a plausible length, otherwise everything left.
#[must_use]
pub fn next_frame_len(rest: &[u8]) -> usize {
    let Some(size) = rest.get(2..6) else {
        return rest.len();
    };
    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
    if (TPM_HEADER_LEN..=rest.len()).contains(&size) {
        size
    } else {
        rest.len()
    }
}

/// A TPM that answers each command with the next frame of a recorded (or
/// fuzzed) conversation, and fails like a dead device once it is used up.
pub struct Replay<'a> {
    pub rest: &'a [u8],
}

impl TpmTransport for Replay<'_> {
    fn transact(&mut self, _: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        if self.rest.is_empty() {
            return Err(TransportError::Io);
        }
        let len = next_frame_len(self.rest);
        let (frame, rest) = self.rest.split_at(len);
        self.rest = rest;
        let max = response.len();
        let out = response
            .get_mut(..len)
            .ok_or(TransportError::ResponseTooLarge { size: len, max })?;
        out.copy_from_slice(frame);
        fix_size(out);
        Ok(len)
    }
}

/// What the command-layer calls are made with. The fuzz target uses
/// [`Context::default`]; the seed generator the real handles and blobs of
/// its swtpm, so the recorded conversations are the TPM's real answers.
#[derive(Debug, Clone)]
pub struct Context {
    pub ak: u32,
    pub ek: u32,
    pub ak_name: Vec<u8>,
    pub credential: Credential,
}

impl Default for Context {
    fn default() -> Self {
        Self {
            ak: 0x8000_0000,
            ek: 0x8000_0001,
            ak_name: [&[0x00, 0x0b][..], &[0x5a; 32]].concat(),
            credential: Credential {
                blob: Default::default(),
                secret: Default::default(),
            },
        }
    }
}

/// The EK that `swtpm_setup` made persistent.
pub const PERSISTENT_EK: u32 = 0x8101_0001;
/// The nonce quoted.
pub const NONCE: &[u8] = b"fuzz seed nonce, 32 bytes long!!";
/// The credential secret wrapped and recovered.
pub const SECRET: [u8; 32] = [0x42; 32];

/// Command-layer calls, in selector order. Append only.
pub const CALLS: &[&str] = &[
    "startup_clear",
    "properties",
    "get_random_48",
    "pcr_read_all_24",
    "pcr_read_0_7",
    "pcr_extend_16",
    "read_public_persistent_ek",
    "create_ek_rsa",
    "create_ek_ecc",
    "create_ak_ecc",
    "create_ak_rsa",
    "quote_0_7",
    "make_credential",
    "activate_credential",
    "nv_read_ek_cert_rsa",
    "nv_read_ek_cert_ecc",
    "flush_context",
    "start_policy_session",
];

/// Makes call `selector % CALLS.len()`; returns whether it succeeded.
pub fn call<T: TpmTransport>(tpm: &mut Tpm<T>, selector: u8, ctx: &Context) -> bool {
    let all = PcrSelection::new(&(0..24).collect::<Vec<u8>>()).unwrap_or_default();
    let low = PcrSelection::new(&[0, 1, 2, 3, 4, 5, 6, 7]).unwrap_or_default();
    match usize::from(selector) % CALLS.len() {
        0 => tpm.startup_clear().is_ok(),
        1 => tpm.properties().is_ok(),
        2 => tpm.get_random(&mut [0u8; 48]).is_ok(),
        3 => tpm.pcr_read(all).is_ok(),
        4 => tpm.pcr_read(low).is_ok(),
        5 => tpm.pcr_extend(16, &[0x16; 32]).is_ok(),
        6 => tpm.read_public(PERSISTENT_EK).is_ok(),
        7 => tpm.create_ek(EkAlgorithm::Rsa2048).is_ok(),
        8 => tpm.create_ek(EkAlgorithm::EccP256).is_ok(),
        9 => tpm.create_ak(AkAlgorithm::EccP256).is_ok(),
        10 => tpm.create_ak(AkAlgorithm::Rsa2048).is_ok(),
        11 => tpm.quote(ctx.ak, NONCE, low).is_ok(),
        12 => tpm.make_credential(ctx.ek, &SECRET, &ctx.ak_name).is_ok(),
        13 => tpm
            .activate_credential(ctx.ak, ctx.ek, &ctx.credential)
            .is_ok(),
        14 => tpm
            .nv_read_ek_cert(EkAlgorithm::Rsa2048, &mut [0u8; 2048])
            .is_ok(),
        15 => tpm
            .nv_read_ek_cert(EkAlgorithm::EccP256, &mut [0u8; 2048])
            .is_ok(),
        16 => tpm.flush_context(ctx.ak).is_ok(),
        _ => tpm.start_policy_session().is_ok(),
    }
}
