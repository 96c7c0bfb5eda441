//! TCP client for the A-VM's attestation protocol (`avm_attest::wire`):
//! one request frame, one response frame.
//!
//! Every exchange has one overall deadline: connecting, each write and
//! each read get only the time left, so a node that drips one byte a
//! second cannot stretch a command beyond it. A node that refuses or
//! resets a connection before answering (its socket pool is full; through
//! QEMU's user network that shows as a reset after connect) is tried
//! again with backoff inside the deadline: every request is idempotent
//! (Hello, a quote over a nonce, activating the same credential).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use avm_attest::wire::{
    self, ErrorCode, Evidence, FRAME_HEADER_LEN, FrameError, HelloInfo, MAX_FRAME_LEN,
    PROTOCOL_VERSION, PcrMask, Request, Response,
};

use crate::sanitize::escape_control;

/// Default overall deadline of one command's exchange with a node.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// First wait before trying a refused connection again; doubled up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Time the first connection attempt gets before a new SYN is sent;
/// doubled per attempt up to [`MAX_CONNECT_ATTEMPT`]. A listener whose
/// accept queue is full drops SYNs silently (QEMU's user network listens
/// with a backlog of 1), and the kernel's own SYN retransmission waits
/// 1, 2, 4, 8... seconds: a fresh attempt gets through much sooner.
const FIRST_CONNECT_ATTEMPT: Duration = Duration::from_millis(250);
const MAX_CONNECT_ATTEMPT: Duration = Duration::from_secs(4);

/// Most bytes of measurement log records a verifier takes from a node.
pub const MAX_LOG_BYTES: usize = 64 << 20;

/// Records of a node's measurement log fetched from some index on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedLog {
    /// The index asked for (of the first record in `records`).
    pub from: u32,
    /// Whole records, IMA binary form.
    pub records: Vec<u8>,
    /// How many records `records` holds.
    pub count: u32,
    /// The node's record count when it cut the last chunk (0 if it sent
    /// none): fewer than `from` means its log shrank.
    pub total: u32,
}

/// Why talking to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve {addr}: {detail}")]
    Resolve { addr: String, detail: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection to the node failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the node did not answer within the deadline ({0:?} for the whole exchange)")]
    Deadline(Duration),
    #[error("bad frame from the node: {0}")]
    Frame(FrameError),
    #[error("the node refused the request ({code:?}): {}", escape_control(detail))]
    Remote { code: ErrorCode, detail: String },
    #[error("the node answered with an unexpected message ({0})")]
    Unexpected(&'static str),
    #[error("the node speaks protocol version {0}, this verifier {PROTOCOL_VERSION}")]
    Version(u16),
}

/// A failed read or write, and whether the node had sent anything yet.
struct Failure {
    error: ClientError,
    /// True if nothing of the response had arrived: the request may be
    /// sent again on a new connection.
    retryable: bool,
}

/// Whether an I/O error means the node refused or dropped the connection
/// (rather than answering badly).
fn is_refusal(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

/// One connection to a node (re-opened transparently when the node
/// refuses it before answering).
#[derive(Debug)]
pub struct NodeClient {
    stream: TcpStream,
    addr: String,
    addrs: Vec<SocketAddr>,
    deadline: Instant,
    timeout: Duration,
    /// The node's Hello on this client, re-sent after a reconnection.
    hello: Option<HelloInfo>,
    /// Connections opened again after a refusal (for benchmarks).
    pub retries: u32,
}

impl NodeClient {
    /// Connects to `addr` (`host:port`); `timeout` is the deadline of
    /// everything this client does from now on.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Self, ClientError> {
        let deadline = Instant::now() + timeout;
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| ClientError::Resolve {
                addr: addr.into(),
                detail: e.to_string(),
            })?
            .collect();
        let mut retries = 0;
        let stream = open(addr, &addrs, deadline, timeout, &mut retries)?;
        Ok(Self {
            stream,
            addr: addr.into(),
            addrs,
            deadline,
            timeout,
            hello: None,
            retries,
        })
    }

    /// Starts a new exchange on this connection with a fresh deadline of
    /// the same length (for clients that keep a connection for many
    /// exchanges).
    pub fn renew_deadline(&mut self) {
        self.deadline = Instant::now() + self.timeout;
    }

    /// Time left before the deadline.
    fn remaining(&self) -> Result<Duration, ClientError> {
        remaining(self.deadline, self.timeout)
    }

    /// Sends one request and reads one response; an error frame becomes
    /// [`ClientError::Remote`].
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let frame = wire::encode_frame(request).map_err(ClientError::Frame)?;
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.exchange(&frame) {
                Ok(Response::Error { code, detail }) => {
                    return Err(ClientError::Remote { code, detail });
                }
                Ok(response) => return Ok(response),
                Err(Failure {
                    retryable: true, ..
                }) if self.remaining().is_ok() => {
                    sleep_within(backoff, self.deadline);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    self.reconnect()?;
                }
                Err(failure) => return Err(failure.error),
            }
        }
    }

    /// Opens a new connection and, if the session had one, repeats Hello
    /// (the node must still be the same).
    fn reconnect(&mut self) -> Result<(), ClientError> {
        self.retries += 1;
        self.stream = open(
            &self.addr,
            &self.addrs,
            self.deadline,
            self.timeout,
            &mut self.retries,
        )?;
        if let Some(previous) = self.hello.take() {
            let again = self.hello()?;
            if again != previous {
                return Err(ClientError::Unexpected(
                    "the node announced another identity on a new connection",
                ));
            }
        }
        Ok(())
    }

    /// One frame out, one frame in, within the deadline.
    fn exchange(&mut self, frame: &[u8]) -> Result<Response, Failure> {
        let fail = |error: ClientError, retryable| Failure { error, retryable };
        if let Err(e) = self.write_all(frame) {
            let retryable = matches!(&e, ClientError::Io(io) if is_refusal(io));
            return Err(fail(e, retryable));
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        match self.read_exact(&mut header) {
            Ok(()) => {}
            Err((0, e)) => {
                let retryable = matches!(&e, ClientError::Io(io) if is_refusal(io));
                return Err(fail(e, retryable));
            }
            Err((_, e)) => return Err(fail(e, false)),
        }
        let len = wire::body_len(header, MAX_FRAME_LEN)
            .map_err(|e| fail(ClientError::Frame(e), false))?;
        let mut body = vec![0u8; len];
        self.read_exact(&mut body)
            .map_err(|(_, e)| fail(e, false))?;
        wire::decode_body::<Response>(&body).map_err(|e| fail(ClientError::Frame(e), false))
    }

    fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), ClientError> {
        while !bytes.is_empty() {
            self.stream.set_write_timeout(Some(self.remaining()?))?;
            match self.stream.write(bytes) {
                Ok(0) => return Err(std::io::Error::from(ErrorKind::WriteZero).into()),
                Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(ClientError::Deadline(self.timeout)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Fills `buf`; on failure, how many bytes had arrived.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), (usize, ClientError)> {
        let mut got = 0;
        while got < buf.len() {
            let left = self.remaining().map_err(|e| (got, e))?;
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| (got, e.into()))?;
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err((got, std::io::Error::from(ErrorKind::UnexpectedEof).into()));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err((got, ClientError::Deadline(self.timeout))),
                Err(e) => return Err((got, e.into())),
            }
        }
        Ok(())
    }

    /// Opens the session and returns the node's identity.
    pub fn hello(&mut self) -> Result<HelloInfo, ClientError> {
        match self.request(&Request::Hello {
            version: PROTOCOL_VERSION,
        })? {
            Response::Hello(info) if info.version == PROTOCOL_VERSION => {
                self.hello = Some(info.clone());
                Ok(info)
            }
            Response::Hello(info) => Err(ClientError::Version(info.version)),
            _ => Err(ClientError::Unexpected("expected Hello")),
        }
    }

    /// Subscribes this connection to the node's pushed events (after
    /// [`Self::hello`]); from now on read it with [`Self::next_push`] only.
    pub fn subscribe(&mut self, keepalive_ms: u32) -> Result<wire::Subscription, ClientError> {
        match self.request(&Request::Subscribe {
            version: wire::PUSH_VERSION,
            keepalive_ms,
        })? {
            Response::Subscribed(sub) => {
                Response::Subscribed(sub)
                    .check_bounds()
                    .map_err(ClientError::Frame)?;
                Ok(sub)
            }
            _ => Err(ClientError::Unexpected("expected Subscribed")),
        }
    }

    /// Waits at most `wait` for the next pushed frame (an event or a
    /// keep-alive) of a subscribed connection; `None` if none came.
    /// Frames over [`wire::MAX_PUSH_FRAME_LEN`], out of bounds, or anything
    /// but a push frame end the subscription with an error.
    pub fn next_push(&mut self, wait: Duration) -> Result<Option<Response>, ClientError> {
        self.deadline = Instant::now() + wait;
        let mut header = [0u8; FRAME_HEADER_LEN];
        match self.read_exact(&mut header) {
            Ok(()) => {}
            Err((0, ClientError::Deadline(_))) => return Ok(None),
            Err((_, e)) => return Err(e),
        }
        let len = wire::body_len(header, wire::MAX_PUSH_FRAME_LEN).map_err(ClientError::Frame)?;
        let mut body = vec![0u8; len];
        // A frame that started arrives whole within the exchange deadline.
        self.deadline = Instant::now() + self.timeout;
        self.read_exact(&mut body).map_err(|(_, e)| e)?;
        match wire::decode_response(&body).map_err(ClientError::Frame)? {
            response if response.is_push() => Ok(Some(response)),
            Response::Error { code, detail } => Err(ClientError::Remote { code, detail }),
            _ => Err(ClientError::Unexpected("expected an event or a keep-alive")),
        }
    }

    /// Asks for a quote over `pcr_mask` with `nonce`.
    pub fn challenge(&mut self, nonce: &[u8], pcr_mask: PcrMask) -> Result<Evidence, ClientError> {
        match self.request(&Request::Challenge {
            nonce: nonce.to_vec(),
            pcr_mask,
        })? {
            Response::Evidence(evidence) => Ok(evidence),
            _ => Err(ClientError::Unexpected("expected Evidence")),
        }
    }

    /// The node's whole measurement log (IMA binary records), fetched in
    /// chunks; bounded in records and bytes.
    pub fn measurement_log(&mut self) -> Result<Vec<u8>, ClientError> {
        self.measurement_log_from(0, MAX_LOG_BYTES)
            .map(|log| log.records)
    }

    /// The node's measurement log from record `from` on, in chunks, at
    /// most `max_bytes` of records. A node that sends chunks out of order,
    /// malformed records, or more than it announced is refused.
    pub fn measurement_log_from(
        &mut self,
        from: u32,
        max_bytes: usize,
    ) -> Result<FetchedLog, ClientError> {
        let mut fetched = FetchedLog {
            from,
            records: Vec::new(),
            count: 0,
            total: 0,
        };
        let mut next = from;
        loop {
            let chunk = match self.request(&Request::MeasurementLog { from: next })? {
                Response::MeasurementLog(chunk) => chunk,
                _ => return Err(ClientError::Unexpected("expected MeasurementLog")),
            };
            if chunk.first != next {
                return Err(ClientError::Unexpected(
                    "measurement log chunk out of order",
                ));
            }
            fetched.total = chunk.total;
            let records = avm_attest::ima::parse_list(
                &chunk.records,
                avm_attest::verify::MAX_MEASUREMENT_RECORDS,
            )
            .map_err(|_| ClientError::Unexpected("malformed measurement log chunk"))?
            .len();
            if records == 0 || next >= chunk.total {
                return Ok(fetched);
            }
            if fetched.records.len() + chunk.records.len() > max_bytes {
                return Err(ClientError::Unexpected("measurement log over 64 MiB"));
            }
            fetched.records.extend_from_slice(&chunk.records);
            let records = u32::try_from(records).unwrap_or(u32::MAX);
            fetched.count = fetched.count.saturating_add(records);
            next = next
                .checked_add(records)
                .ok_or(ClientError::Unexpected("measurement log too long"))?;
            if next >= chunk.total {
                return Ok(fetched);
            }
        }
    }

    /// Has the node's TPM activate a credential; returns the secret.
    pub fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        match self.request(&Request::ActivateCredential {
            credential_blob: credential_blob.to_vec(),
            encrypted_secret: encrypted_secret.to_vec(),
        })? {
            Response::CredentialActivated { secret } => Ok(secret),
            _ => Err(ClientError::Unexpected("expected CredentialActivated")),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn remaining(deadline: Instant, timeout: Duration) -> Result<Duration, ClientError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
        .ok_or(ClientError::Deadline(timeout))
}

/// Sleeps `backoff` (with some jitter, so parallel verifiers spread out)
/// but never past the deadline.
fn sleep_within(backoff: Duration, deadline: Instant) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = backoff.mul_f64(f64::from(nanos % 1000) / 2000.0);
    let wait = backoff + jitter;
    let left = deadline.saturating_duration_since(Instant::now());
    std::thread::sleep(wait.min(left));
}

/// Connects to one of `addrs`, trying again with backoff while the node
/// refuses, until the deadline.
fn open(
    addr: &str,
    addrs: &[SocketAddr],
    deadline: Instant,
    timeout: Duration,
    retries: &mut u32,
) -> Result<TcpStream, ClientError> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = FIRST_CONNECT_ATTEMPT;
    loop {
        let mut last = std::io::Error::new(ErrorKind::NotFound, "no address");
        for sa in addrs {
            let left = remaining(deadline, timeout)?;
            match TcpStream::connect_timeout(sa, left.min(attempt)) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        attempt = (attempt * 2).min(MAX_CONNECT_ATTEMPT);
        let refused = matches!(
            last.kind(),
            ErrorKind::ConnectionRefused | ErrorKind::TimedOut | ErrorKind::WouldBlock
        );
        if !refused || remaining(deadline, timeout).is_err() {
            return Err(ClientError::Connect {
                addr: addr.into(),
                source: last,
            });
        }
        *retries += 1;
        sleep_within(backoff, deadline);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-connection peer that reads one request frame and answers with
    /// `reply` (raw bytes), to test the client's side of framing.
    fn peer(reply: Vec<u8>) -> (String, std::thread::JoinHandle<Option<Request>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().ok()?;
            let mut header = [0u8; 4];
            s.read_exact(&mut header).ok()?;
            let len = wire::body_len(header, wire::MAX_REQUEST_LEN).ok()?;
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).ok()?;
            s.write_all(&reply).ok()?;
            wire::decode_body(&body).ok()
        });
        (addr, handle)
    }

    #[test]
    fn error_frame_becomes_remote_error() {
        let reply = wire::encode_frame(&Response::Error {
            code: ErrorCode::BadRequest,
            detail: "nonce too long".into(),
        })
        .unwrap();
        let (addr, handle) = peer(reply);
        let mut client = NodeClient::connect(&addr, DEFAULT_TIMEOUT).unwrap();
        let err = client.challenge(&[1; 16], PcrMask::FIRMWARE).unwrap_err();
        assert!(matches!(
            err,
            ClientError::Remote {
                code: ErrorCode::BadRequest,
                ..
            }
        ));
        assert_eq!(
            handle.join().unwrap(),
            Some(Request::Challenge {
                nonce: vec![1; 16],
                pcr_mask: PcrMask::FIRMWARE
            })
        );
    }

    #[test]
    fn oversized_length_prefix_is_refused_without_reading() {
        let (addr, _handle) = peer(vec![0xff, 0xff, 0xff, 0xff]);
        let mut client = NodeClient::connect(&addr, DEFAULT_TIMEOUT).unwrap();
        let err = client.hello().unwrap_err();
        assert!(
            matches!(err, ClientError::Frame(FrameError::TooLarge { .. })),
            "{err}"
        );
    }

    #[test]
    fn truncated_response_is_an_io_error() {
        let mut reply = wire::encode_frame(&Response::CredentialActivated {
            secret: vec![1; 32],
        })
        .unwrap();
        reply.truncate(reply.len() - 3);
        let (addr, _handle) = peer(reply);
        let mut client = NodeClient::connect(&addr, DEFAULT_TIMEOUT).unwrap();
        assert!(matches!(
            client.activate_credential(&[1], &[2]).unwrap_err(),
            ClientError::Io(_)
        ));
    }

    #[test]
    fn wrong_message_kind_is_unexpected() {
        let reply = wire::encode_frame(&Response::CredentialActivated { secret: vec![] }).unwrap();
        let (addr, _handle) = peer(reply);
        let mut client = NodeClient::connect(&addr, DEFAULT_TIMEOUT).unwrap();
        assert!(matches!(
            client.hello().unwrap_err(),
            ClientError::Unexpected(_)
        ));
    }

    #[test]
    fn stalled_node_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut client = NodeClient::connect(&addr, Duration::from_millis(200)).unwrap();
        // Accepted by the kernel backlog, never answered.
        assert!(matches!(
            client.hello().unwrap_err(),
            ClientError::Deadline(_)
        ));
        drop(listener);
    }

    #[test]
    fn unreachable_node_is_a_connect_error_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let started = Instant::now();
        let err = NodeClient::connect(&addr, Duration::from_millis(300)).unwrap_err();
        assert!(
            matches!(err, ClientError::Connect { .. } | ClientError::Deadline(_)),
            "{err}"
        );
        // Refusals were retried, but not beyond the deadline.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    /// A node that announces a large frame and drips one byte at a time
    /// cannot keep the client beyond its overall deadline.
    #[test]
    fn a_dripping_node_is_cut_off_at_the_overall_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let dripper = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = [0u8; 64];
            let _ = s.read(&mut request);
            let _ = s.write_all(&60_000u32.to_be_bytes());
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(50));
                if s.write_all(&[0]).is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut client = NodeClient::connect(&addr, Duration::from_millis(600)).unwrap();
        let err = client.hello().unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, ClientError::Deadline(_)), "{err}");
        // Each byte arrived well within a per-read timeout; only the
        // overall deadline ends this.
        assert!(took < Duration::from_millis(1800), "{took:?}");
        dripper.join().unwrap();
    }

    /// A node whose pool is full resets connections before answering:
    /// the client tries again on a new connection (repeating Hello) until
    /// it is served.
    #[test]
    fn refused_connections_are_retried_with_backoff() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let node = std::thread::spawn(move || {
            let hello = HelloInfo {
                version: PROTOCOL_VERSION,
                ek: wire::KeyInfo {
                    algorithm: wire::KeyAlgorithm::EccP256,
                    public: vec![1],
                    name: vec![2],
                },
                ek_certificate: vec![],
                ak: wire::KeyInfo {
                    algorithm: wire::KeyAlgorithm::EccP256,
                    public: vec![3],
                    name: vec![4],
                },
            };
            let serve = |s: &mut TcpStream| -> Option<()> {
                loop {
                    let mut header = [0u8; 4];
                    s.read_exact(&mut header).ok()?;
                    let len = wire::body_len(header, wire::MAX_REQUEST_LEN).ok()?;
                    let mut body = vec![0u8; len];
                    s.read_exact(&mut body).ok()?;
                    let response = match wire::decode_body::<Request>(&body).ok()? {
                        Request::Hello { .. } => Response::Hello(hello.clone()),
                        _ => Response::CredentialActivated { secret: vec![7] },
                    };
                    s.write_all(&wire::encode_frame(&response).ok()?).ok()?;
                }
            };
            // The first connection gets Hello answered, then is dropped
            // (a reset before the next answer); the next two are dropped
            // at once; the fourth is served.
            let (mut first, _) = listener.accept().unwrap();
            let mut header = [0u8; 4];
            first.read_exact(&mut header).unwrap();
            let len = wire::body_len(header, wire::MAX_REQUEST_LEN).unwrap();
            let mut body = vec![0u8; len];
            first.read_exact(&mut body).unwrap();
            first
                .write_all(&wire::encode_frame(&Response::Hello(hello.clone())).unwrap())
                .unwrap();
            let mut request = [0u8; 16];
            let _ = first.read(&mut request);
            drop(first);
            for _ in 0..2 {
                drop(listener.accept().unwrap());
            }
            let (mut served, _) = listener.accept().unwrap();
            serve(&mut served);
        });
        let mut client = NodeClient::connect(&addr, Duration::from_secs(10)).unwrap();
        client.hello().unwrap();
        assert_eq!(client.activate_credential(&[1], &[2]).unwrap(), vec![7]);
        assert_eq!(client.retries, 3);
        drop(client);
        node.join().unwrap();
    }

    #[test]
    fn remote_error_text_is_escaped() {
        let reply = wire::encode_frame(&Response::Error {
            code: ErrorCode::BadRequest,
            detail: "\x1b[2J\x1b[1;1Hnode: enrolled\n  verdict: TRUSTED".into(),
        })
        .unwrap();
        let (addr, _handle) = peer(reply);
        let mut client = NodeClient::connect(&addr, DEFAULT_TIMEOUT).unwrap();
        let text = client.hello().unwrap_err().to_string();
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.contains("\\u{1b}[2J"), "{text}");
    }
}
