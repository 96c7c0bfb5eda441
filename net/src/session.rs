//! One client connection's protocol state, without any I/O.
//!
//! A [`Session`] takes the bytes a client sent, reassembles request frames
//! with a bounded [`FrameAssembler`], answers them through the
//! [`AttestationBackend`] and keeps the encoded answer until the socket has
//! taken it all. It handles one request at a time: while an answer is
//! pending it takes no more input, so a client that pipelines requests and
//! never reads cannot make the A-VM buffer more than one response.
//!
//! The server ([`crate::server`]) moves bytes between the session and a TCP
//! socket and closes the socket once [`Session::is_finished`].

use alloc::string::String;
use alloc::vec::Vec;
use avm_attest::pcr::PcrMask;
use avm_attest::wire::{
    self, ErrorCode, FrameAssembler, FrameError, KeepAlive, MAX_KEEPALIVE_MS, MAX_NONCE_LEN,
    MAX_REQUEST_LEN, MIN_KEEPALIVE_MS, PROTOCOL_VERSION, PUSH_VERSION, PushedEvent, Request,
    Response, Subscription,
};

use crate::backend::{AttestationBackend, BackendError};

/// Bit mask of the PCRs a challenge may select (PCRs 0-23 of a PC Client TPM).
pub const VALID_PCR_MASK: PcrMask = PcrMask::PC_CLIENT;

/// Where the session is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for Hello.
    New,
    /// Hello answered; any request may come.
    Ready,
    /// An error ended the session: send what is pending, then close.
    Closing,
}

/// The protocol state of one connection.
#[derive(Debug)]
pub struct Session {
    phase: Phase,
    assembler: FrameAssembler,
    /// Encoded response frames not yet taken by the socket.
    output: Vec<u8>,
    /// How much of `output` the socket has taken.
    sent: usize,
    /// Where the answer at the front of `output` ends (push frames follow).
    answer_end: usize,
    requests_handled: u32,
    /// Set once the client subscribed to pushed events.
    subscription: Option<Subscribed>,
    /// The server's clock and whether a subscriber slot is free, set
    /// before each [`Session::receive`].
    push: PushContext,
}

/// A subscribed connection's push state.
#[derive(Debug, Clone, Copy)]
struct Subscribed {
    keepalive_ms: u32,
    /// When the last push frame (event or keep-alive) was queued.
    last_push_ms: u64,
}

/// What a session needs from its server to answer `Subscribe`.
#[derive(Debug, Clone, Copy, Default)]
struct PushContext {
    now_ms: u64,
    room: bool,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    pub fn new() -> Self {
        Self {
            phase: Phase::New,
            assembler: FrameAssembler::new(MAX_REQUEST_LEN),
            output: Vec::new(),
            sent: 0,
            answer_end: 0,
            requests_handled: 0,
            subscription: None,
            push: PushContext::default(),
        }
    }

    /// Tells the session the time and whether the server has room for one
    /// more subscriber; the server calls this before [`Self::receive`].
    pub fn set_push_context(&mut self, now_ms: u64, room_for_subscriber: bool) {
        self.push = PushContext {
            now_ms,
            room: room_for_subscriber,
        };
    }

    /// Whether the client subscribed to pushed events.
    pub fn is_subscribed(&self) -> bool {
        self.subscription.is_some() && self.phase != Phase::Closing
    }

    /// Queues `event` for a subscribed client. Returns false, queuing
    /// nothing, if the output would then exceed `max_backlog` bytes (the
    /// client does not read: the server drops it) or the session is not
    /// subscribed.
    pub fn push_event(&mut self, event: &PushedEvent, now_ms: u64, max_backlog: usize) -> bool {
        self.push_frame(&Response::Event(event.clone()), now_ms, max_backlog)
    }

    /// Whether a keep-alive is due: subscribed, nothing pushed for the
    /// keep-alive period and nothing waiting to be sent.
    pub fn keepalive_due(&self, now_ms: u64) -> bool {
        match self.subscription {
            Some(sub) if self.is_subscribed() && self.pending_output().is_empty() => {
                now_ms.saturating_sub(sub.last_push_ms) >= u64::from(sub.keepalive_ms)
            }
            _ => false,
        }
    }

    /// Queues a keep-alive (only when [`Self::keepalive_due`]).
    pub fn push_keepalive(&mut self, keepalive: KeepAlive, now_ms: u64) {
        if self.keepalive_due(now_ms) {
            self.push_frame(&Response::KeepAlive(keepalive), now_ms, usize::MAX);
        }
    }

    fn push_frame(&mut self, response: &Response, now_ms: u64, max_backlog: usize) -> bool {
        if !self.is_subscribed() {
            return false;
        }
        let Ok(frame) = wire::encode_frame(response) else {
            return false;
        };
        // Only push frames count: the rest of an answer is being read.
        // What the socket took is dropped, so a subscriber that never
        // quite catches up does not keep everything ever pushed.
        self.output.drain(..self.sent);
        self.answer_end = self.answer_end.saturating_sub(self.sent);
        self.sent = 0;
        let behind = self.output.len() - self.answer_end;
        if behind.saturating_add(frame.len()) > max_backlog {
            return false;
        }
        self.output.extend_from_slice(&frame);
        if let Some(sub) = self.subscription.as_mut() {
            sub.last_push_ms = now_ms;
        }
        true
    }

    /// Whether the session takes input now (no answer pending, not closing).
    pub fn wants_input(&self) -> bool {
        self.phase != Phase::Closing && self.pending_output().is_empty()
    }

    /// Feeds bytes received from the client; answers at most one complete
    /// request. Returns how many bytes of `data` were consumed; the caller
    /// offers the rest again later (0 means: not now).
    pub fn receive(&mut self, data: &[u8], backend: &mut impl AttestationBackend) -> usize {
        if !self.wants_input() {
            return 0;
        }
        // The assembler stops at the end of one frame, so at most one
        // request is taken per call.
        let used = self.assembler.push(data);
        match self.assembler.next_body() {
            Ok(None) => {}
            Ok(Some(body)) => self.handle_body(&body, backend),
            Err(FrameError::TooLarge { len, limit }) => self.fail(
                ErrorCode::TooLarge,
                detail(format_args!(
                    "frame of {len} bytes exceeds the request limit of {limit}"
                )),
            ),
            Err(_) => self.fail(ErrorCode::Malformed, String::from("malformed frame")),
        }
        used
    }

    /// Ends the session because the client was idle too long. Returns true
    /// if an `Error{Timeout}` frame was queued (send it, then close); false
    /// if part of an answer is still unsent, since an error frame cannot
    /// follow half a frame: then the connection must be aborted.
    pub fn time_out(&mut self) -> bool {
        if self.phase == Phase::Closing {
            // Already ending; the server's close path handles it.
            return true;
        }
        if !self.pending_output().is_empty() {
            self.phase = Phase::Closing;
            return false;
        }
        self.fail(
            ErrorCode::Timeout,
            String::from("no complete request in time"),
        );
        true
    }

    /// Bytes waiting to be sent to the client.
    pub fn pending_output(&self) -> &[u8] {
        self.output.get(self.sent..).unwrap_or(&[])
    }

    /// Records that the socket took `count` bytes of [`Self::pending_output`].
    pub fn consume_output(&mut self, count: usize) {
        self.sent = self.sent.saturating_add(count).min(self.output.len());
        if self.sent == self.output.len() {
            // Release the (possibly large) evidence frame once it is out.
            self.output = Vec::new();
            self.sent = 0;
            self.answer_end = 0;
        }
    }

    /// The session is over and everything was handed to the socket: close it.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Closing && self.pending_output().is_empty()
    }

    /// Whether an error ended the session (its error frame may still be pending).
    pub fn is_closing(&self) -> bool {
        self.phase == Phase::Closing
    }

    /// Complete requests answered so far (including refused ones).
    pub fn requests_handled(&self) -> u32 {
        self.requests_handled
    }

    /// Bytes of an incomplete request frame currently buffered.
    pub fn partial_request_len(&self) -> usize {
        self.assembler.pending()
    }

    fn handle_body(&mut self, body: &[u8], backend: &mut impl AttestationBackend) {
        self.requests_handled = self.requests_handled.saturating_add(1);
        let request = match wire::decode_body::<Request>(body) {
            Ok(request) => request,
            Err(_) => {
                return self.fail(
                    ErrorCode::Malformed,
                    String::from("request does not decode"),
                );
            }
        };
        let response = self.answer(request, backend);
        self.queue(&response);
    }

    fn answer(&mut self, request: Request, backend: &mut impl AttestationBackend) -> Response {
        match request {
            Request::Hello { version } if version != PROTOCOL_VERSION => error(
                ErrorCode::UnsupportedVersion,
                detail(format_args!(
                    "protocol version {version} is not supported (only {PROTOCOL_VERSION})"
                )),
            ),
            Request::Hello { .. } => match backend.hello() {
                Ok(info) => {
                    self.phase = Phase::Ready;
                    Response::Hello(info)
                }
                Err(e) => backend_error(e),
            },
            _ if self.phase == Phase::New => {
                error(ErrorCode::NoHello, String::from("send Hello first"))
            }
            Request::Challenge { nonce, pcr_mask } => {
                if let Err(detail) = check_challenge(&nonce, pcr_mask) {
                    return error(ErrorCode::BadRequest, detail);
                }
                match backend.quote(&nonce, pcr_mask) {
                    Ok(evidence) => Response::Evidence(evidence),
                    Err(e) => backend_error(e),
                }
            }
            Request::ActivateCredential {
                credential_blob,
                encrypted_secret,
            } => {
                if credential_blob.is_empty() || encrypted_secret.is_empty() {
                    return error(
                        ErrorCode::BadRequest,
                        String::from("empty credential blob or secret"),
                    );
                }
                match backend.activate_credential(&credential_blob, &encrypted_secret) {
                    Ok(secret) => Response::CredentialActivated { secret },
                    Err(e) => backend_error(e),
                }
            }
            Request::MeasurementLog { from } => {
                match backend.measurement_log(from, wire::MAX_LOG_CHUNK) {
                    Ok(chunk) => Response::MeasurementLog(chunk),
                    Err(e) => backend_error(e),
                }
            }
            Request::Subscribe {
                version,
                keepalive_ms,
            } => self.subscribe(version, keepalive_ms, backend),
        }
    }

    /// Subscribes the connection (again: only the period changes).
    fn subscribe(
        &mut self,
        version: u16,
        keepalive_ms: u32,
        backend: &mut impl AttestationBackend,
    ) -> Response {
        if version == 0 {
            return error(ErrorCode::BadRequest, String::from("push version 0"));
        }
        if self.subscription.is_none() && !self.push.room {
            return error(
                ErrorCode::Busy,
                String::from("every subscriber slot is taken"),
            );
        }
        let keepalive_ms = keepalive_ms.clamp(MIN_KEEPALIVE_MS, MAX_KEEPALIVE_MS);
        self.subscription = Some(Subscribed {
            keepalive_ms,
            last_push_ms: self.push.now_ms,
        });
        Response::Subscribed(Subscription {
            version: PUSH_VERSION,
            keepalive_ms,
            log_total: backend.log_total(),
            uptime_ms: self.push.now_ms,
        })
    }

    /// Queues an error frame and ends the session.
    fn fail(&mut self, code: ErrorCode, detail: String) {
        self.queue(&error(code, detail));
        self.phase = Phase::Closing;
    }

    fn queue(&mut self, response: &Response) {
        // Answers are queued only with nothing else pending.
        match wire::encode_frame(response) {
            Ok(frame) => self.output.extend_from_slice(&frame),
            Err(_) => {
                // Only evidence can outgrow a frame (a huge event log): say
                // so instead of sending nothing.
                let fallback = error(
                    ErrorCode::Tpm,
                    String::from("response exceeds the frame size limit"),
                );
                if let Ok(frame) = wire::encode_frame(&fallback) {
                    self.output.extend_from_slice(&frame);
                }
            }
        }
        self.answer_end = self.output.len();
    }
}

fn check_challenge(nonce: &[u8], pcr_mask: PcrMask) -> Result<(), String> {
    if nonce.len() > MAX_NONCE_LEN {
        return Err(detail(format_args!(
            "nonce of {} bytes exceeds {MAX_NONCE_LEN}",
            nonce.len()
        )));
    }
    if pcr_mask.is_empty() {
        return Err(String::from("empty PCR selection"));
    }
    if !pcr_mask.is_within(VALID_PCR_MASK) {
        return Err(detail(format_args!(
            "PCR selection {:#x} names PCRs above 23",
            pcr_mask.bits()
        )));
    }
    Ok(())
}

/// Formats an error detail without `alloc::format!`: liballoc's
/// precompiled `format` needs unwinding symbols the freestanding kernel
/// does not have. Longer text is cut at the buffer size.
fn detail(args: core::fmt::Arguments<'_>) -> String {
    let mut text: heapless::String<160> = heapless::String::new();
    let _ = core::fmt::write(&mut text, args);
    String::from(text.as_str())
}

fn error(code: ErrorCode, detail: String) -> Response {
    Response::Error { code, detail }
}

fn backend_error(e: BackendError) -> Response {
    error(e.code, e.detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::DeterministicBackend;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Feeds `chunks` to a fresh session, taking all output after each
    /// call, and returns the decoded responses and the session.
    fn run(chunks: &[&[u8]]) -> (Vec<Response>, Session) {
        let mut backend = DeterministicBackend::new(100);
        let mut session = Session::new();
        let mut out = Vec::new();
        for chunk in chunks {
            let mut rest = *chunk;
            // Each call takes at most one frame; bound the loop by the input.
            for _ in 0..=rest.len() {
                let used = session.receive(rest, &mut backend);
                rest = &rest[used..];
                out.extend_from_slice(session.pending_output());
                let n = session.pending_output().len();
                session.consume_output(n);
                if used == 0 {
                    break;
                }
            }
        }
        (decode_all(&out), session)
    }

    fn decode_all(mut out: &[u8]) -> Vec<Response> {
        let mut responses = Vec::new();
        while !out.is_empty() {
            let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
            responses.push(wire::decode_body(&out[4..4 + len]).expect("server frames decode"));
            out = &out[4 + len..];
        }
        responses
    }

    fn frame(request: &Request) -> Vec<u8> {
        wire::encode_frame(request).unwrap()
    }

    fn code(response: &Response) -> Option<ErrorCode> {
        match response {
            Response::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    #[test]
    fn one_request_per_call_and_no_input_while_answering() {
        let mut backend = DeterministicBackend::new(10);
        let mut session = Session::new();
        let mut bytes = frame(&Request::Hello { version: 1 });
        let first_len = bytes.len();
        bytes.extend(frame(&Request::Hello { version: 1 }));
        assert_eq!(session.receive(&bytes, &mut backend), first_len);
        assert!(!session.wants_input());
        assert_eq!(session.receive(&bytes[first_len..], &mut backend), 0);
        let pending = session.pending_output().len();
        // Partial sends keep the rest.
        session.consume_output(3);
        assert_eq!(session.pending_output().len(), pending - 3);
        session.consume_output(pending);
        assert!(session.wants_input());
        assert_eq!(session.requests_handled(), 1);
    }

    #[test]
    fn oversized_prefix_ends_the_session_after_its_header() {
        let (responses, session) = run(&[&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]]);
        assert_eq!(responses.len(), 1);
        assert_eq!(code(&responses[0]), Some(ErrorCode::TooLarge));
        assert!(session.is_finished());
        assert_eq!(session.partial_request_len(), 4);
    }

    #[test]
    fn timeout_with_partial_frame_sends_error() {
        let mut session = Session::new();
        let mut backend = DeterministicBackend::new(0);
        session.receive(&[0, 0, 0, 9, 1], &mut backend);
        assert!(session.time_out());
        let responses = decode_all(session.pending_output());
        assert_eq!(code(&responses[0]), Some(ErrorCode::Timeout));
        assert!(session.is_closing());
    }

    #[test]
    fn timeout_in_the_middle_of_an_answer_asks_for_abort() {
        let mut session = Session::new();
        let mut backend = DeterministicBackend::new(0);
        session.receive(&frame(&Request::Hello { version: 1 }), &mut backend);
        session.consume_output(1);
        assert!(!session.time_out());
        assert!(session.is_closing());
    }

    /// A session subscribed after Hello, its answers taken.
    fn subscribed_session(backend: &mut impl AttestationBackend) -> Session {
        let mut session = Session::new();
        session.set_push_context(0, true);
        for request in [
            Request::Hello { version: 1 },
            Request::Subscribe {
                version: PUSH_VERSION,
                keepalive_ms: 1000,
            },
        ] {
            session.receive(&frame(&request), backend);
            session.consume_output(session.pending_output().len());
        }
        assert!(session.is_subscribed());
        session
    }

    #[test]
    fn a_subscriber_that_never_catches_up_fully_does_not_grow_the_output() {
        // A subscriber that reads every pushed event but the last byte is
        // never more than a byte behind: what it read must be released,
        // not kept until it has read everything.
        let mut backend = DeterministicBackend::new(0);
        let mut session = subscribed_session(&mut backend);
        let backlog = 64 * 1024;
        for index in 0..20_000 {
            let event = PushedEvent {
                index,
                pcr: 12,
                name: String::from("monvm:event:1:violation:sys_call_table:slot 0"),
                uptime_ms: 0,
            };
            assert!(session.push_event(&event, 0, backlog));
            let pending = session.pending_output().len();
            session.consume_output(pending - 1);
        }
        assert!(
            session.output.len() <= backlog,
            "{} bytes kept for 1 unsent",
            session.output.len()
        );
    }

    #[test]
    fn a_large_answer_being_read_does_not_count_as_a_push_backlog() {
        // Push frames may come between the answers on a subscribed
        // connection (docs/protocol.md): a subscriber reading a whole
        // measurement-log chunk is not one that stopped reading.
        struct BigLog(DeterministicBackend);
        impl AttestationBackend for BigLog {
            fn hello(&mut self) -> Result<wire::HelloInfo, BackendError> {
                self.0.hello()
            }
            fn quote(
                &mut self,
                nonce: &[u8],
                mask: PcrMask,
            ) -> Result<wire::Evidence, BackendError> {
                self.0.quote(nonce, mask)
            }
            fn activate_credential(
                &mut self,
                blob: &[u8],
                secret: &[u8],
            ) -> Result<Vec<u8>, BackendError> {
                self.0.activate_credential(blob, secret)
            }
            fn measurement_log(
                &mut self,
                from: u32,
                max_bytes: usize,
            ) -> Result<wire::LogChunk, BackendError> {
                Ok(wire::LogChunk {
                    first: from,
                    total: from + 1,
                    records: alloc::vec![0x5a; max_bytes],
                })
            }
        }
        let mut backend = BigLog(DeterministicBackend::new(0));
        let mut session = subscribed_session(&mut backend);
        session.receive(&frame(&Request::MeasurementLog { from: 0 }), &mut backend);
        // The client has read a first part of the answer.
        session.consume_output(16 * 1024);
        let event = PushedEvent {
            index: 1,
            pcr: 12,
            name: String::from("monvm:event:1:clean:idt"),
            uptime_ms: 0,
        };
        assert!(session.push_event(&event, 0, 64 * 1024));
        // Pushes it does not read still count: it is dropped once they
        // pass the backlog.
        let pushed = (0..10_000)
            .take_while(|_| session.push_event(&event, 0, 64 * 1024))
            .count();
        assert!(pushed < 10_000);
        let answer_left = wire::MAX_LOG_CHUNK + 64 - 16 * 1024;
        assert!(session.pending_output().len() <= answer_left + 64 * 1024);
    }

    proptest! {
        #[test]
        fn arbitrary_input_gives_whole_frames_and_bounded_state(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..12)
        ) {
            let chunks: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            let (responses, session) = run(&chunks);
            prop_assert!(session.partial_request_len() <= wire::FRAME_HEADER_LEN + MAX_REQUEST_LEN);
            // A closing session has said why, in its last frame.
            if session.is_closing() {
                let last = responses.last().and_then(code);
                prop_assert!(matches!(last, Some(ErrorCode::Malformed | ErrorCode::TooLarge)));
            }
        }

        #[test]
        fn splitting_the_stream_does_not_change_the_answers(
            nonces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..70), 1..5),
            masks in proptest::collection::vec(any::<u32>(), 5),
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let mut stream = frame(&Request::Hello { version: 1 });
            for (nonce, mask) in nonces.iter().zip(&masks) {
                stream.extend(frame(&Request::Challenge { nonce: nonce.clone(), pcr_mask: PcrMask::from_bits(*mask) }));
            }
            let (whole, _) = run(&[&stream]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                pieces.push(&stream[start..cut]);
                start = cut;
            }
            let (split, _) = run(&pieces);
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(whole.len(), nonces.len() + 1);
            for ((response, nonce), mask) in whole[1..].iter().zip(&nonces).zip(&masks) {
                let mask = PcrMask::from_bits(*mask);
                let valid = nonce.len() <= MAX_NONCE_LEN && !mask.is_empty() && mask.is_within(VALID_PCR_MASK);
                if valid {
                    prop_assert_eq!(response, &Response::Evidence(DeterministicBackend::evidence(nonce, mask, 100)));
                } else {
                    prop_assert_eq!(code(response), Some(ErrorCode::BadRequest));
                }
            }
        }
    }
}
