//! Host-side test support: an in-memory Ethernet link and a deterministic
//! attestation backend (a test double for the TPM; the real TPM path is
//! covered by the QEMU integration tests).
//!
//! Built for this crate's unit tests and, with the `testing` feature, for
//! the fuzz targets and other crates' tests. Never part of the A-VM image.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use avm_attest::pcr::PcrMask;
use avm_attest::wire::{
    ErrorCode, Evidence, HelloInfo, KeyAlgorithm, KeyInfo, PROTOCOL_VERSION, PcrValue,
};
use core::cell::RefCell;
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::backend::{AttestationBackend, BackendError};
use crate::stack::EthernetDevice;

/// Frames a link direction holds before it drops new ones (like a NIC ring).
pub const LINK_QUEUE_FRAMES: usize = 4096;
/// Ethernet MTU of the link (frame without FCS).
pub const LINK_MTU: usize = 1514;

type FrameQueue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// One end of an in-memory Ethernet cable.
#[derive(Debug)]
pub struct LinkEnd {
    mac: [u8; 6],
    incoming: FrameQueue,
    outgoing: FrameQueue,
}

/// Two devices connected back to back: what one sends, the other receives.
pub fn link_pair(mac_a: [u8; 6], mac_b: [u8; 6]) -> (LinkEnd, LinkEnd) {
    let a_to_b: FrameQueue = Rc::default();
    let b_to_a: FrameQueue = Rc::default();
    (
        LinkEnd {
            mac: mac_a,
            incoming: b_to_a.clone(),
            outgoing: a_to_b.clone(),
        },
        LinkEnd {
            mac: mac_b,
            incoming: a_to_b,
            outgoing: b_to_a,
        },
    )
}

impl LinkEnd {
    /// Frames waiting to be received by this end.
    pub fn queued_incoming(&self) -> usize {
        self.incoming.borrow().len()
    }
}

/// A received frame.
#[derive(Debug)]
pub struct LinkRxToken(Vec<u8>);

/// Permission to send one frame.
#[derive(Debug)]
pub struct LinkTxToken(FrameQueue);

impl phy::RxToken for LinkRxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for LinkTxToken {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        let mut queue = self.0.borrow_mut();
        if queue.len() < LINK_QUEUE_FRAMES {
            queue.push_back(frame);
        }
        result
    }
}

impl Device for LinkEnd {
    type RxToken<'a> = LinkRxToken;
    type TxToken<'a> = LinkTxToken;

    fn receive(&mut self, _now: Instant) -> Option<(LinkRxToken, LinkTxToken)> {
        let frame = self.incoming.borrow_mut().pop_front()?;
        Some((LinkRxToken(frame), LinkTxToken(self.outgoing.clone())))
    }

    fn transmit(&mut self, _now: Instant) -> Option<LinkTxToken> {
        Some(LinkTxToken(self.outgoing.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = LINK_MTU;
        caps
    }
}

impl EthernetDevice for LinkEnd {
    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn frames_waiting(&self) -> bool {
        !self.incoming.borrow().is_empty()
    }
}

/// A backend that answers from fixed data, so tests can predict every byte.
///
/// `Evidence::attest` is `b"QUOTE"`, the mask (big-endian) and the nonce;
/// PCR n has the digest `[n; 32]`; the event log is `event_log_len` bytes
/// of a counting pattern.
#[derive(Debug, Clone)]
pub struct DeterministicBackend {
    pub event_log_len: usize,
    /// When set, every TPM command fails with this detail.
    pub fail_with: Option<String>,
    pub hello_calls: u32,
    pub quote_calls: u32,
    pub activate_calls: u32,
}

impl DeterministicBackend {
    pub fn new(event_log_len: usize) -> Self {
        Self {
            event_log_len,
            fail_with: None,
            hello_calls: 0,
            quote_calls: 0,
            activate_calls: 0,
        }
    }

    /// The Hello answer this backend gives.
    pub fn hello_info() -> HelloInfo {
        HelloInfo {
            version: PROTOCOL_VERSION,
            ek: KeyInfo {
                algorithm: KeyAlgorithm::Rsa2048,
                public: vec![0xe1; 280],
                name: [&[0x00, 0x0b][..], &[0xe2; 32]].concat(),
            },
            ek_certificate: vec![0x30; 900],
            ak: KeyInfo {
                algorithm: KeyAlgorithm::EccP256,
                public: vec![0xa1; 88],
                name: [&[0x00, 0x0b][..], &[0xa2; 32]].concat(),
            },
        }
    }

    /// The evidence this backend gives for `nonce` and `pcr_mask`.
    pub fn evidence(nonce: &[u8], pcr_mask: PcrMask, event_log_len: usize) -> Evidence {
        let mut attest = b"QUOTE".to_vec();
        attest.extend_from_slice(&pcr_mask.bits().to_be_bytes());
        attest.extend_from_slice(nonce);
        let pcrs = pcr_mask
            .indices()
            .map(|index| PcrValue {
                index,
                digest: [index; 32],
            })
            .collect();
        Evidence {
            attest,
            signature: vec![0x51; 72],
            pcrs,
            event_log: (0..event_log_len).map(|i| (i % 251) as u8).collect(),
        }
    }

    fn check(&self) -> Result<(), BackendError> {
        match &self.fail_with {
            Some(detail) => Err(BackendError::tpm(detail.clone())),
            None => Ok(()),
        }
    }
}

impl AttestationBackend for DeterministicBackend {
    fn hello(&mut self) -> Result<HelloInfo, BackendError> {
        self.hello_calls += 1;
        self.check()?;
        Ok(Self::hello_info())
    }

    fn quote(&mut self, nonce: &[u8], pcr_mask: PcrMask) -> Result<Evidence, BackendError> {
        self.quote_calls += 1;
        self.check()?;
        Ok(Self::evidence(nonce, pcr_mask, self.event_log_len))
    }

    fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        self.activate_calls += 1;
        self.check()?;
        if credential_blob.first() != Some(&0xcb) {
            return Err(BackendError {
                code: ErrorCode::BadRequest,
                detail: String::from("credential blob does not match the EK"),
            });
        }
        // "Decrypts" by XOR so tests can check the secret came from the inputs.
        Ok(encrypted_secret.iter().map(|b| b ^ 0x5a).collect())
    }
}
