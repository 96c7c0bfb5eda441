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

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use avm_attest::wire::{
    self, ErrorCode, FrameAssembler, FrameError, MAX_NONCE_LEN, MAX_REQUEST_LEN, PROTOCOL_VERSION,
    Request, Response,
};

use crate::backend::{AttestationBackend, BackendError};

/// Bit mask of the PCRs a challenge may select (PCRs 0-23 of a PC Client TPM).
pub const VALID_PCR_MASK: u32 = 0x00ff_ffff;

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
    requests_handled: u32,
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
            requests_handled: 0,
        }
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
                format!("frame of {len} bytes exceeds the request limit of {limit}"),
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
                format!("protocol version {version} is not supported (only {PROTOCOL_VERSION})"),
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
        }
    }

    /// Queues an error frame and ends the session.
    fn fail(&mut self, code: ErrorCode, detail: String) {
        self.queue(&error(code, detail));
        self.phase = Phase::Closing;
    }

    fn queue(&mut self, response: &Response) {
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
    }
}

fn check_challenge(nonce: &[u8], pcr_mask: u32) -> Result<(), String> {
    if nonce.len() > MAX_NONCE_LEN {
        return Err(format!(
            "nonce of {} bytes exceeds {MAX_NONCE_LEN}",
            nonce.len()
        ));
    }
    if pcr_mask == 0 {
        return Err(String::from("empty PCR selection"));
    }
    if pcr_mask & !VALID_PCR_MASK != 0 {
        return Err(format!("PCR selection {pcr_mask:#x} names PCRs above 23"));
    }
    Ok(())
}

fn error(code: ErrorCode, detail: String) -> Response {
    Response::Error { code, detail }
}

fn backend_error(e: BackendError) -> Response {
    error(e.code, e.detail)
}
