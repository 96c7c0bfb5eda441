//! A minimal attestation client for the tests: std `TcpStream` and the
//! shared wire protocol (`avm_attest::wire`), nothing of the verifier.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use avm_attest::pcr::PcrMask;
use avm_attest::wire::{
    self, Evidence, FRAME_HEADER_LEN, HelloInfo, MAX_FRAME_LEN, PROTOCOL_VERSION, Request, Response,
};

/// Generous: a quote under TCG on a loaded 2-core host takes well under a
/// second; the server's own idle timeout is 5 s.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection to an A-VM's attestation server.
pub struct Client {
    stream: TcpStream,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Client {
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Self { stream })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Closes the sending half (the server sees end of stream).
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Write)
    }

    /// The next response, or `None` if the server closed the connection
    /// at a frame boundary.
    pub fn read_response(&mut self) -> io::Result<Option<Response>> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        let mut got = 0;
        while got < header.len() {
            match self.stream.read(&mut header[got..])? {
                0 if got == 0 => return Ok(None),
                0 => return Err(invalid("connection closed inside a frame header".into())),
                n => got += n,
            }
        }
        let len = wire::body_len(header, MAX_FRAME_LEN).map_err(|e| invalid(e.to_string()))?;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        wire::decode_body(&body)
            .map(Some)
            .map_err(|e| invalid(e.to_string()))
    }

    pub fn request(&mut self, request: &Request) -> io::Result<Response> {
        let frame = wire::encode_frame(request).map_err(|e| invalid(e.to_string()))?;
        self.send_raw(&frame)?;
        self.read_response()?.ok_or_else(|| {
            invalid(format!(
                "connection closed instead of answering {request:?}"
            ))
        })
    }

    pub fn hello(&mut self) -> io::Result<HelloInfo> {
        match self.request(&Request::Hello {
            version: PROTOCOL_VERSION,
        })? {
            Response::Hello(info) => Ok(info),
            other => Err(invalid(format!("Hello answered with {other:?}"))),
        }
    }

    pub fn challenge(&mut self, nonce: &[u8], pcr_mask: PcrMask) -> io::Result<Evidence> {
        match self.request(&Request::Challenge {
            nonce: nonce.to_vec(),
            pcr_mask,
        })? {
            Response::Evidence(evidence) => Ok(evidence),
            other => Err(invalid(format!("Challenge answered with {other:?}"))),
        }
    }
}

/// A fresh connection doing Hello then Challenge, retried a few times on
/// transport errors (a connection reset while the server evicts stalled
/// clients is allowed; a wrong answer is not retried).
pub fn hello_and_challenge(
    addr: SocketAddr,
    nonce: &[u8],
    pcr_mask: PcrMask,
) -> io::Result<(HelloInfo, Evidence)> {
    const ATTEMPTS: usize = 5;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let round = Client::connect(addr).and_then(|mut client| {
            let hello = client.hello()?;
            let evidence = client.challenge(nonce, pcr_mask)?;
            Ok((hello, evidence))
        });
        match round {
            Ok(result) => return Ok(result),
            Err(err) if err.kind() == io::ErrorKind::InvalidData => return Err(err),
            Err(err) => {
                eprintln!("attestation round failed ({err}); retrying");
                last = Some(err);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no attempt made")))
}
