//! TCP client for the A-VM's attestation protocol (`avm_attest::wire`):
//! one request frame, one response frame, with connect and read timeouts so
//! a stalled node cannot hang the verifier.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use avm_attest::wire::{
    self, ErrorCode, Evidence, FRAME_HEADER_LEN, FrameError, HelloInfo, MAX_FRAME_LEN,
    PROTOCOL_VERSION, Request, Response,
};

/// Default time allowed for connecting and for each response.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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
    #[error("bad frame from the node: {0}")]
    Frame(FrameError),
    #[error("the node refused the request ({code:?}): {detail}")]
    Remote { code: ErrorCode, detail: String },
    #[error("the node answered with an unexpected message ({0})")]
    Unexpected(&'static str),
    #[error("the node speaks protocol version {0}, this verifier {PROTOCOL_VERSION}")]
    Version(u16),
}

/// One connection to a node.
#[derive(Debug)]
pub struct NodeClient {
    stream: TcpStream,
}

impl NodeClient {
    /// Connects to `addr` (`host:port`), trying each resolved address.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Self, ClientError> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| ClientError::Resolve {
                addr: addr.into(),
                detail: e.to_string(),
            })?
            .collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for sa in addrs {
            match TcpStream::connect_timeout(&sa, timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    stream.set_nodelay(true)?;
                    return Ok(Self { stream });
                }
                Err(e) => last = e,
            }
        }
        Err(ClientError::Connect {
            addr: addr.into(),
            source: last,
        })
    }

    /// Sends one request and reads one response; an error frame becomes
    /// [`ClientError::Remote`].
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let frame = wire::encode_frame(request).map_err(ClientError::Frame)?;
        self.stream.write_all(&frame)?;
        let mut header = [0u8; FRAME_HEADER_LEN];
        self.stream.read_exact(&mut header)?;
        let len = wire::body_len(header, MAX_FRAME_LEN).map_err(ClientError::Frame)?;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        match wire::decode_body::<Response>(&body).map_err(ClientError::Frame)? {
            Response::Error { code, detail } => Err(ClientError::Remote { code, detail }),
            response => Ok(response),
        }
    }

    /// Opens the session and returns the node's identity.
    pub fn hello(&mut self) -> Result<HelloInfo, ClientError> {
        match self.request(&Request::Hello {
            version: PROTOCOL_VERSION,
        })? {
            Response::Hello(info) if info.version == PROTOCOL_VERSION => Ok(info),
            Response::Hello(info) => Err(ClientError::Version(info.version)),
            _ => Err(ClientError::Unexpected("expected Hello")),
        }
    }

    /// Asks for a quote over `pcr_mask` with `nonce`.
    pub fn challenge(&mut self, nonce: &[u8], pcr_mask: u32) -> Result<Evidence, ClientError> {
        match self.request(&Request::Challenge {
            nonce: nonce.to_vec(),
            pcr_mask,
        })? {
            Response::Evidence(evidence) => Ok(evidence),
            _ => Err(ClientError::Unexpected("expected Evidence")),
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
        let err = client.challenge(&[1; 16], 0xff).unwrap_err();
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
                pcr_mask: 0xff
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
        assert!(matches!(client.hello().unwrap_err(), ClientError::Io(_)));
        drop(listener);
    }

    #[test]
    fn unreachable_node_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        assert!(matches!(
            NodeClient::connect(&addr, DEFAULT_TIMEOUT).unwrap_err(),
            ClientError::Connect { .. }
        ));
    }
}
