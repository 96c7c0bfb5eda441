//! The attestation wire protocol between a verifier and an A-VM.
//!
//! A connection carries frames: a 4-byte big-endian body length, then the
//! body, one [`Request`] (verifier to A-VM) or [`Response`] (A-VM to verifier)
//! encoded with postcard. The length is checked against a hard limit before
//! any body byte is buffered, so a peer cannot make the other side allocate
//! more than [`MAX_FRAME_LEN`] (or the smaller [`MAX_REQUEST_LEN`] on the
//! A-VM). See `docs/protocol.md` for the full description.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

pub use crate::pcr::PcrMask;

/// Version of the message set below; sent in both Hello messages.
pub const PROTOCOL_VERSION: u16 = 1;

/// TCP port the A-VM's attestation server listens on inside the guest. The
/// launcher forwards a host loopback port of its choice to it.
pub const ATTEST_PORT: u16 = 7140;

/// Size of the length prefix in front of every frame body.
pub const FRAME_HEADER_LEN: usize = 4;

/// Largest frame body either side accepts (evidence with an event log).
pub const MAX_FRAME_LEN: usize = 256 * 1024;

/// Largest request body the A-VM accepts: requests carry only nonces and
/// credential blobs, so anything larger is an attack or a bug.
pub const MAX_REQUEST_LEN: usize = 4096;

/// Longest nonce a verifier may send (the TPM's `extraData` is a TPM2B_DATA
/// of at most 64 bytes for SHA-256 signing keys).
pub const MAX_NONCE_LEN: usize = 64;

/// Messages from the verifier to the A-VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Opens a session; the A-VM answers with [`Response::Hello`].
    Hello { version: u16 },
    /// Asks for a quote over `pcr_mask` (bit n = PCR n, SHA-256 bank)
    /// carrying `nonce` as qualifying data; answered by
    /// [`Response::Evidence`].
    Challenge { nonce: Vec<u8>, pcr_mask: PcrMask },
    /// TPM2_ActivateCredential with the A-VM's AK and EK; answered by
    /// [`Response::CredentialActivated`].
    ActivateCredential {
        /// TPM2B_ID_OBJECT contents (integrity HMAC + encrypted credential).
        credential_blob: Vec<u8>,
        /// TPM2B_ENCRYPTED_SECRET contents (seed encrypted to the EK).
        encrypted_secret: Vec<u8>,
    },
    /// The A-VM's measurement log (IMA binary records, `attest::ima`) from
    /// record `from` on; answered by [`Response::MeasurementLog`] with as
    /// many whole records as fit [`MAX_LOG_CHUNK`].
    MeasurementLog { from: u32 },
    /// Subscribes this connection to the A-VM's monitoring events (push
    /// protocol [`PUSH_VERSION`]); answered by [`Response::Subscribed`],
    /// after which [`Response::Event`] and [`Response::KeepAlive`] frames
    /// arrive unasked, between the answers to any further requests.
    /// `keepalive_ms` is clamped to [`MIN_KEEPALIVE_MS`]..=[`MAX_KEEPALIVE_MS`].
    /// An A-VM older than this variant refuses it as `Malformed` and closes.
    Subscribe { version: u16, keepalive_ms: u32 },
}

/// Version of the push messages ([`Request::Subscribe`],
/// [`Response::Subscribed`], [`Response::Event`], [`Response::KeepAlive`]).
/// `Hello` keeps [`PROTOCOL_VERSION`] so that older verifiers keep working.
pub const PUSH_VERSION: u16 = 1;

/// Shortest and longest keep-alive period a subscriber may ask for.
pub const MIN_KEEPALIVE_MS: u32 = 100;
pub const MAX_KEEPALIVE_MS: u32 = 60_000;
/// The keep-alive period `avm-verifier monitor` asks for.
pub const DEFAULT_KEEPALIVE_MS: u32 = 1_000;

/// Longest event name pushed (the record's name field; a longer one is cut
/// by the A-VM at a character boundary: the log record stays authoritative).
pub const MAX_EVENT_NAME_LEN: usize = 1024;

/// Largest body of a push frame (an [`Response::Event`] with the longest
/// name fits with room to spare): a subscriber refuses anything larger
/// outside of answers to its own requests.
pub const MAX_PUSH_FRAME_LEN: usize = 2048;

/// Answer to [`Request::Subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The push version the A-VM speaks ([`PUSH_VERSION`]).
    pub version: u16,
    /// The keep-alive period granted (after clamping).
    pub keepalive_ms: u32,
    /// Records in the measurement log when the subscription started:
    /// every event recorded from this index on is pushed.
    pub log_total: u32,
    /// Milliseconds since the A-VM booted.
    pub uptime_ms: u64,
}

/// A monitoring event, pushed as it is recorded. It is a hint, not
/// evidence: the record at `index` of the measurement log, proven by the
/// next quote, is what counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedEvent {
    /// Index of the event's record in the measurement log.
    pub index: u32,
    /// The PCR the record was extended into (12 for monitoring events).
    pub pcr: u8,
    /// The record's name (`monvm:event:N:...`), at most [`MAX_EVENT_NAME_LEN`] bytes.
    pub name: String,
    /// When the A-VM recorded it, in milliseconds since its boot.
    pub uptime_ms: u64,
}

/// A keep-alive: the A-VM is alive and the subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepAlive {
    /// Milliseconds since the A-VM booted.
    pub uptime_ms: u64,
    /// Records in the measurement log now.
    pub log_total: u32,
    /// Events the A-VM could not push since it booted (its queue was full):
    /// a subscriber that sees this grow re-attests.
    pub dropped: u32,
}

/// Most record bytes in one [`LogChunk`] (whole records; a single record
/// larger than this is sent alone).
pub const MAX_LOG_CHUNK: usize = 128 * 1024;

/// A piece of the A-VM's measurement log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// Index of the first record in `records`.
    pub first: u32,
    /// Records in the whole log when this chunk was cut.
    pub total: u32,
    /// Whole records, in IMA binary form.
    pub records: Vec<u8>,
}

/// Algorithm of a TPM key, as announced in [`KeyInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    EccP256,
    Rsa2048,
}

/// A TPM key as the A-VM announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub algorithm: KeyAlgorithm,
    /// Marshaled TPMT_PUBLIC (the contents of TPM2B_PUBLIC).
    pub public: Vec<u8>,
    /// TPM name: nameAlg (big-endian u16) || hash of `public`.
    pub name: Vec<u8>,
}

/// The A-VM's identity, answered to [`Request::Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloInfo {
    pub version: u16,
    pub ek: KeyInfo,
    /// DER EK certificate read from TPM NV (empty if none was provisioned).
    pub ek_certificate: Vec<u8>,
    pub ak: KeyInfo,
}

/// One PCR value of the SHA-256 bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrValue {
    pub index: u8,
    pub digest: [u8; 32],
}

/// Signed evidence for one challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Marshaled TPMS_ATTEST (tpm2-tools' `quote.msg`).
    pub attest: Vec<u8>,
    /// Marshaled TPMT_SIGNATURE (tpm2-tools' `quote.sig`).
    pub signature: Vec<u8>,
    /// The quoted PCR values, in ascending index order.
    pub pcrs: Vec<PcrValue>,
    /// The TCG PC Client event log the firmware left (crypto-agile format).
    pub event_log: Vec<u8>,
}

/// Why the A-VM refused a request. The connection is closed after an error
/// caused by a malformed frame; other errors leave it open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The frame body did not decode as a [`Request`].
    Malformed,
    /// The length prefix exceeded the receiver's limit.
    TooLarge,
    /// The peer speaks another protocol version.
    UnsupportedVersion,
    /// A request other than Hello arrived before Hello.
    NoHello,
    /// A request field is out of range (nonce too long, empty PCR mask...).
    BadRequest,
    /// The TPM failed the command.
    Tpm,
    /// The connection was idle for too long.
    Timeout,
    /// The A-VM has no room for this (every subscriber slot is taken).
    Busy,
}

/// Messages from the A-VM to the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Hello(HelloInfo),
    Evidence(Evidence),
    CredentialActivated {
        secret: Vec<u8>,
    },
    Error {
        code: ErrorCode,
        detail: String,
    },
    MeasurementLog(LogChunk),
    /// The subscription stands ([`Request::Subscribe`]).
    Subscribed(Subscription),
    /// A monitoring event, pushed unasked to subscribers.
    Event(PushedEvent),
    /// Pushed unasked to subscribers every keep-alive period.
    KeepAlive(KeepAlive),
}

impl Response {
    /// Whether this is a push frame (sent unasked to a subscriber), not
    /// the answer to a request.
    pub fn is_push(&self) -> bool {
        matches!(self, Response::Event(_) | Response::KeepAlive(_))
    }

    /// Checks the bounds postcard cannot express: an event's name length
    /// and PCR, a subscription's version and keep-alive period.
    pub fn check_bounds(&self) -> Result<(), FrameError> {
        match self {
            Response::Event(event) if event.name.len() > MAX_EVENT_NAME_LEN || event.pcr > 23 => {
                Err(FrameError::Malformed)
            }
            Response::Subscribed(sub)
                if sub.version == 0
                    || !(MIN_KEEPALIVE_MS..=MAX_KEEPALIVE_MS).contains(&sub.keepalive_ms) =>
            {
                Err(FrameError::Malformed)
            }
            _ => Ok(()),
        }
    }
}

/// Decodes a response body and checks its bounds ([`Response::check_bounds`]):
/// what a subscriber reads off its connection.
pub fn decode_response(body: &[u8]) -> Result<Response, FrameError> {
    let response: Response = decode_body(body)?;
    response.check_bounds()?;
    Ok(response)
}

/// The longest prefix of `name` of at most [`MAX_EVENT_NAME_LEN`] bytes
/// that ends at a character boundary (what the A-VM pushes).
pub fn cut_event_name(name: &str) -> &str {
    let mut end = name.len().min(MAX_EVENT_NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than the limit.
    TooLarge { len: usize, limit: usize },
    /// The body did not decode as the expected message type.
    Malformed,
    /// Encoding produced a body over [`MAX_FRAME_LEN`].
    EncodeTooLarge,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::TooLarge { len, limit } => {
                write!(f, "frame of {len} bytes exceeds the limit of {limit}")
            }
            FrameError::Malformed => f.write_str("malformed frame body"),
            FrameError::EncodeTooLarge => f.write_str("message too large to encode"),
        }
    }
}

/// Encodes `message` as one frame (length prefix + postcard body).
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    let frame = postcard::to_extend(message, frame).map_err(|_| FrameError::EncodeTooLarge)?;
    let body_len = frame.len() - FRAME_HEADER_LEN;
    if body_len > MAX_FRAME_LEN {
        return Err(FrameError::EncodeTooLarge);
    }
    let mut frame = frame;
    // The check above bounds body_len well below u32::MAX.
    frame[..FRAME_HEADER_LEN].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(frame)
}

/// Decodes one frame body (without its length prefix).
pub fn decode_body<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, FrameError> {
    postcard::from_bytes(body).map_err(|_| FrameError::Malformed)
}

/// Reads the body length from a frame header and checks it against `limit`.
pub fn body_len(header: [u8; FRAME_HEADER_LEN], limit: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(len)
}

/// Incremental frame reassembly for a byte stream (one per connection).
///
/// Bytes are pushed as they arrive; complete bodies are taken out with
/// [`FrameAssembler::next_body`]. Memory use never exceeds the header plus
/// `limit` bytes: an oversized length prefix is reported before its body
/// is buffered.
#[derive(Debug)]
pub struct FrameAssembler {
    limit: usize,
    buffer: Vec<u8>,
}

impl FrameAssembler {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            buffer: Vec::new(),
        }
    }

    /// How many more bytes the assembler wants before it can make progress;
    /// callers read at most this much so the buffer stays bounded.
    pub fn wanted(&self) -> usize {
        if self.buffer.len() < FRAME_HEADER_LEN {
            return FRAME_HEADER_LEN - self.buffer.len();
        }
        let mut header = [0; FRAME_HEADER_LEN];
        header.copy_from_slice(&self.buffer[..FRAME_HEADER_LEN]);
        match body_len(header, self.limit) {
            Ok(len) => (FRAME_HEADER_LEN + len).saturating_sub(self.buffer.len()),
            Err(_) => 0,
        }
    }

    /// Appends received bytes; never more than [`Self::wanted`] are taken.
    /// Returns how many bytes of `data` were consumed.
    pub fn push(&mut self, data: &[u8]) -> usize {
        // Two rounds: the header first, then (once its length is known and
        // accepted) the body.
        let mut used = 0;
        for _ in 0..2 {
            let take = self.wanted().min(data.len() - used);
            self.buffer.extend_from_slice(&data[used..used + take]);
            used += take;
        }
        used
    }

    /// Returns the next complete body, `Ok(None)` if more bytes are needed,
    /// or an error if the announced length exceeds the limit.
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buffer.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let mut header = [0; FRAME_HEADER_LEN];
        header.copy_from_slice(&self.buffer[..FRAME_HEADER_LEN]);
        let len = body_len(header, self.limit)?;
        if self.buffer.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let body = self.buffer.split_off(FRAME_HEADER_LEN);
        self.buffer.clear();
        Ok(Some(body))
    }

    /// Bytes of an incomplete frame currently buffered.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn sample_evidence() -> Response {
        Response::Evidence(Evidence {
            attest: vec![0xff, 0x54, 0x43, 0x47],
            signature: vec![0, 0x18, 0, 0x0b],
            pcrs: vec![PcrValue {
                index: 0,
                digest: [7; 32],
            }],
            event_log: vec![1, 2, 3],
        })
    }

    #[test]
    fn frame_round_trip() {
        let frame = encode_frame(&sample_evidence()).unwrap();
        let mut assembler = FrameAssembler::new(MAX_FRAME_LEN);
        assert_eq!(assembler.push(&frame), frame.len());
        let body = assembler.next_body().unwrap().unwrap();
        assert_eq!(decode_body::<Response>(&body).unwrap(), sample_evidence());
        assert_eq!(assembler.pending(), 0);
    }

    #[test]
    fn oversized_prefix_is_rejected_before_buffering() {
        let mut assembler = FrameAssembler::new(MAX_REQUEST_LEN);
        assert_eq!(assembler.push(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]), 4);
        assert_eq!(assembler.wanted(), 0);
        assert_eq!(
            assembler.next_body(),
            Err(FrameError::TooLarge {
                len: 0xffff_ffff,
                limit: MAX_REQUEST_LEN
            })
        );
    }

    #[test]
    fn truncated_frame_waits_for_more() {
        let frame = encode_frame(&Request::Hello { version: 1 }).unwrap();
        let mut assembler = FrameAssembler::new(MAX_REQUEST_LEN);
        assembler.push(&frame[..frame.len() - 1]);
        assert_eq!(assembler.next_body(), Ok(None));
        assert_eq!(assembler.wanted(), 1);
    }

    #[test]
    fn malformed_body_is_an_error() {
        assert_eq!(decode_body::<Request>(&[0x7f]), Err(FrameError::Malformed));
    }

    fn event(index: u32, name: &str) -> Response {
        Response::Event(PushedEvent {
            index,
            pcr: 12,
            name: name.into(),
            uptime_ms: 5,
        })
    }

    #[test]
    fn push_frames_round_trip_and_fit_the_push_limit() {
        let longest = "x".repeat(MAX_EVENT_NAME_LEN);
        for response in [
            event(u32::MAX, &longest),
            Response::KeepAlive(KeepAlive {
                uptime_ms: u64::MAX,
                log_total: u32::MAX,
                dropped: u32::MAX,
            }),
            Response::Subscribed(Subscription {
                version: PUSH_VERSION,
                keepalive_ms: MAX_KEEPALIVE_MS,
                log_total: u32::MAX,
                uptime_ms: u64::MAX,
            }),
        ] {
            let frame = encode_frame(&response).unwrap();
            assert!(frame.len() - FRAME_HEADER_LEN <= MAX_PUSH_FRAME_LEN);
            let mut assembler = FrameAssembler::new(MAX_PUSH_FRAME_LEN);
            assembler.push(&frame);
            let body = assembler.next_body().unwrap().unwrap();
            assert_eq!(decode_response(&body), Ok(response));
        }
    }

    #[test]
    fn out_of_bounds_push_frames_are_refused() {
        let long = "x".repeat(MAX_EVENT_NAME_LEN + 1);
        let frame = encode_frame(&event(1, &long)).unwrap();
        assert_eq!(
            decode_response(&frame[FRAME_HEADER_LEN..]),
            Err(FrameError::Malformed)
        );
        let mut bad_pcr = event(1, "monvm:event:1:clean:idt");
        if let Response::Event(e) = &mut bad_pcr {
            e.pcr = 24;
        }
        let frame = encode_frame(&bad_pcr).unwrap();
        assert!(decode_response(&frame[FRAME_HEADER_LEN..]).is_err());
        let frame = encode_frame(&Response::Subscribed(Subscription {
            version: PUSH_VERSION,
            keepalive_ms: 0,
            log_total: 0,
            uptime_ms: 0,
        }))
        .unwrap();
        assert!(decode_response(&frame[FRAME_HEADER_LEN..]).is_err());
    }

    #[test]
    fn new_variants_keep_the_old_indices() {
        // Old peers decode what they knew: variants are only appended.
        let hello = encode_frame(&Request::Hello { version: 1 }).unwrap();
        assert_eq!(hello[FRAME_HEADER_LEN], 0);
        let log = encode_frame(&Request::MeasurementLog { from: 0 }).unwrap();
        assert_eq!(log[FRAME_HEADER_LEN], 3);
        let sub = encode_frame(&Request::Subscribe {
            version: PUSH_VERSION,
            keepalive_ms: 1000,
        })
        .unwrap();
        assert_eq!(sub[FRAME_HEADER_LEN], 4);
        let event = encode_frame(&event(0, "")).unwrap();
        assert_eq!(event[FRAME_HEADER_LEN], 6);
    }

    #[test]
    fn event_names_are_cut_at_a_character_boundary() {
        let name = "é".repeat(MAX_EVENT_NAME_LEN);
        let cut = cut_event_name(&name);
        assert!(cut.len() <= MAX_EVENT_NAME_LEN && cut.len() >= MAX_EVENT_NAME_LEN - 1);
        assert_eq!(
            cut_event_name("monvm:event:1:clean:idt"),
            "monvm:event:1:clean:idt"
        );
    }

    proptest! {
        #[test]
        fn pushed_events_round_trip(index in any::<u32>(), pcr in 0u8..24, name in ".{0,300}", uptime_ms in any::<u64>()) {
            let name = String::from(cut_event_name(&name));
            let response = Response::Event(PushedEvent { index, pcr, name, uptime_ms });
            let frame = encode_frame(&response).unwrap();
            prop_assert!(frame.len() - FRAME_HEADER_LEN <= MAX_PUSH_FRAME_LEN);
            prop_assert_eq!(decode_response(&frame[FRAME_HEADER_LEN..]), Ok(response));
        }

        #[test]
        fn arbitrary_push_bodies_never_panic_and_what_passes_is_bounded(body in proptest::collection::vec(any::<u8>(), 0..1500)) {
            if let Ok(response) = decode_response(&body) {
                if let Response::Event(event) = &response {
                    prop_assert!(event.name.len() <= MAX_EVENT_NAME_LEN && event.pcr < 24);
                }
                let frame = encode_frame(&response).unwrap();
                prop_assert_eq!(decode_response(&frame[FRAME_HEADER_LEN..]), Ok(response));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut assembler = FrameAssembler::new(MAX_REQUEST_LEN);
            let mut rest = &data[..];
            for _ in 0..data.len() + 1 {
                let used = assembler.push(rest);
                rest = &rest[used..];
                match assembler.next_body() {
                    Ok(Some(body)) => { let _ = decode_body::<Request>(&body); }
                    Ok(None) if used == 0 => break,
                    Ok(None) => {}
                    Err(_) => break,
                }
                prop_assert!(assembler.pending() <= FRAME_HEADER_LEN + MAX_REQUEST_LEN);
            }
        }

        #[test]
        fn split_delivery_reassembles(nonce in proptest::collection::vec(any::<u8>(), 0..64), split in 0usize..80) {
            let request = Request::Challenge { nonce, pcr_mask: PcrMask::FIRMWARE };
            let frame = encode_frame(&request).unwrap();
            let split = split.min(frame.len());
            let mut assembler = FrameAssembler::new(MAX_REQUEST_LEN);
            let first = assembler.push(&frame[..split]);
            prop_assert_eq!(first, split);
            assembler.push(&frame[split..]);
            let body = assembler.next_body().unwrap().unwrap();
            prop_assert_eq!(decode_body::<Request>(&body).unwrap(), request);
        }
    }
}
