//! smoltcp's `phy::Device` over virtio-drivers' `VirtIONetRaw`, polled.
//!
//! A fixed set of heap buffers is shared with the device: every receive
//! buffer is posted to the receive queue; a transmit buffer is posted while
//! its frame is in flight. A buffer's `token` is `Some` exactly while the
//! device owns it, and the driver never touches it then. The device raises
//! no interrupts: [`crate::NetStack::poll`] finds completed buffers.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use virtio_drivers::Hal;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::Transport;

use crate::stack::EthernetDevice;

/// Descriptors per virtqueue (QEMU's virtio-net offers 256).
pub const QUEUE_SIZE: usize = 16;
/// Receive buffers, all posted to the device at once.
pub const RX_BUFFERS: usize = QUEUE_SIZE;
/// Transmit buffers (frames in flight at most).
pub const TX_BUFFERS: usize = 8;
/// Bytes per buffer: virtio-net header (12) + an Ethernet frame (1514),
/// rounded up; at least virtio-drivers' minimum receive buffer of 1526.
pub const BUFFER_LEN: usize = 2048;
/// Largest Ethernet frame (without FCS) the device sends or accepts.
pub const ETHERNET_MTU: usize = 1514;

/// Counters for the boot log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames the device returned that could not be used (bad length).
    pub rx_errors: u64,
    /// Frames dropped because no transmit buffer was free or posting failed.
    pub tx_dropped: u64,
}

#[derive(Debug)]
struct Buffer {
    data: Box<[u8]>,
    /// The device's token while the buffer is posted.
    token: Option<u16>,
    /// Bytes posted (transmit buffers: header + frame).
    len: usize,
}

impl Buffer {
    fn new() -> Self {
        Self {
            data: vec![0; BUFFER_LEN].into_boxed_slice(),
            token: None,
            len: 0,
        }
    }
}

/// The virtio-net device as a smoltcp device.
pub struct VirtioNetDevice<H: Hal, T: Transport> {
    // Declared first so it is dropped first: its Drop detaches the queues
    // from the device before the buffers below are freed.
    raw: VirtIONetRaw<H, T, QUEUE_SIZE>,
    rx: Vec<Buffer>,
    tx: Vec<Buffer>,
    /// Where frames go that cannot be sent (smoltcp's token API has no failure path).
    scratch: Box<[u8]>,
    stats: DeviceStats,
}

impl<H: Hal, T: Transport> VirtioNetDevice<H, T> {
    /// Starts the driver and posts all receive buffers.
    pub fn new(transport: T) -> Result<Self, virtio_drivers::Error> {
        let raw = VirtIONetRaw::new(transport)?;
        let mut device = Self {
            raw,
            rx: (0..RX_BUFFERS).map(|_| Buffer::new()).collect(),
            tx: (0..TX_BUFFERS).map(|_| Buffer::new()).collect(),
            scratch: vec![0; ETHERNET_MTU].into_boxed_slice(),
            stats: DeviceStats::default(),
        };
        device.post_receive_buffers()?;
        Ok(device)
    }

    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// Asks the device to interrupt on new frames (INTx, PCI interrupt
    /// line), so the idle loop can `hlt` instead of waking on the timer.
    pub fn enable_interrupts(&mut self) {
        self.raw.enable_interrupts();
    }

    /// Asks the device not to interrupt (the default after start: polled).
    pub fn disable_interrupts(&mut self) {
        self.raw.disable_interrupts();
    }

    /// Reads (and so clears) the ISR status, deasserting a level-triggered
    /// INTx. Returns true if the device had raised an interrupt.
    pub fn ack_interrupt(&mut self) -> bool {
        !self.raw.ack_interrupt().is_empty()
    }

    /// Gives every receive buffer the driver holds back to the device.
    fn post_receive_buffers(&mut self) -> Result<(), virtio_drivers::Error> {
        for buffer in self.rx.iter_mut().filter(|b| b.token.is_none()) {
            // SAFETY: the buffer is a heap allocation owned by this device and
            // outliving the queue (see the field order); from here until
            // `receive_complete` returns it, the driver does not touch it
            // (its token is Some).
            let token = unsafe { self.raw.receive_begin(&mut buffer.data)? };
            buffer.token = Some(token);
        }
        Ok(())
    }

    /// Takes back transmit buffers whose frames the device has sent.
    fn reclaim_transmit_buffers(&mut self) {
        for _ in 0..TX_BUFFERS {
            let Some(token) = self.raw.poll_transmit() else {
                return;
            };
            let Some(buffer) = self.tx.iter_mut().find(|b| b.token == Some(token)) else {
                // The device completed something we never posted: leave it.
                return;
            };
            let posted = buffer.data.get(..buffer.len).unwrap_or(&[]);
            // SAFETY: `posted` is exactly the slice given to `transmit_begin`
            // for this token.
            let _ = unsafe { self.raw.transmit_complete(token, posted) };
            buffer.token = None;
        }
    }

    /// The next received frame: the buffer's index and the frame's range.
    fn complete_receive(&mut self) -> Option<(usize, usize, usize)> {
        for _ in 0..RX_BUFFERS {
            let token = self.raw.poll_receive()?;
            let index = self.rx.iter().position(|b| b.token == Some(token))?;
            let buffer = &mut self.rx[index];
            // SAFETY: this buffer was posted with `receive_begin` for this token.
            let result = unsafe { self.raw.receive_complete(token, &mut buffer.data) };
            buffer.token = None;
            match result {
                Ok((header_len, frame_len))
                    if header_len
                        .checked_add(frame_len)
                        .is_some_and(|end| end <= buffer.data.len()) =>
                {
                    return Some((index, header_len, frame_len));
                }
                _ => {
                    // Reposted by the next receive/transmit call.
                    self.stats.rx_errors += 1;
                }
            }
        }
        None
    }
}

impl<H: Hal, T: Transport> Device for VirtioNetDevice<H, T> {
    type RxToken<'a>
        = VirtioRxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = VirtioTxToken<'a, H, T>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(VirtioRxToken<'_>, VirtioTxToken<'_, H, T>)> {
        // Buffers handed to smoltcp last time are free again.
        let _ = self.post_receive_buffers();
        self.reclaim_transmit_buffers();
        let (index, header_len, frame_len) = self.complete_receive()?;
        self.stats.rx_frames += 1;
        let free_tx = self.tx.iter().position(|b| b.token.is_none());
        let frame = self.rx[index]
            .data
            .get(header_len..header_len + frame_len)
            .unwrap_or(&[]);
        let tx = VirtioTxToken {
            raw: &mut self.raw,
            buffer: free_tx.and_then(|i| self.tx.get_mut(i)),
            scratch: &mut self.scratch,
            stats: &mut self.stats,
        };
        Some((VirtioRxToken { frame }, tx))
    }

    fn transmit(&mut self, _now: Instant) -> Option<VirtioTxToken<'_, H, T>> {
        self.reclaim_transmit_buffers();
        if !self.raw.can_send() {
            return None;
        }
        let index = self.tx.iter().position(|b| b.token.is_none())?;
        Some(VirtioTxToken {
            raw: &mut self.raw,
            buffer: self.tx.get_mut(index),
            scratch: &mut self.scratch,
            stats: &mut self.stats,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = ETHERNET_MTU;
        caps.max_burst_size = Some(TX_BUFFERS);
        caps
    }
}

impl<H: Hal, T: Transport> EthernetDevice for VirtioNetDevice<H, T> {
    fn mac_address(&self) -> [u8; 6] {
        self.raw.mac_address()
    }

    /// The receive queue's used ring has an entry (a read of guest memory,
    /// no device access).
    fn frames_waiting(&self) -> bool {
        self.raw.poll_receive().is_some()
    }
}

/// A received frame, borrowed from its receive buffer until consumed.
pub struct VirtioRxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for VirtioRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Permission to send one frame through a free transmit buffer (or, when
/// there is none, to have it dropped like a full NIC ring would).
pub struct VirtioTxToken<'a, H: Hal, T: Transport> {
    raw: &'a mut VirtIONetRaw<H, T, QUEUE_SIZE>,
    buffer: Option<&'a mut Buffer>,
    scratch: &'a mut [u8],
    stats: &'a mut DeviceStats,
}

impl<H: Hal, T: Transport> phy::TxToken for VirtioTxToken<'_, H, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let VirtioTxToken {
            raw,
            buffer,
            scratch,
            stats,
        } = self;
        let Some(buffer) = buffer.filter(|_| len <= ETHERNET_MTU) else {
            stats.tx_dropped += 1;
            return drop_frame(scratch, len, f);
        };
        let Ok(header_len) = raw.fill_buffer_header(&mut buffer.data) else {
            stats.tx_dropped += 1;
            return drop_frame(scratch, len, f);
        };
        // header (12) + MTU (1514) fits BUFFER_LEN.
        let end = header_len + len;
        let Some(frame) = buffer.data.get_mut(header_len..end) else {
            stats.tx_dropped += 1;
            return drop_frame(scratch, len, f);
        };
        let result = f(frame);
        let posted = &buffer.data[..end];
        // SAFETY: the buffer is owned by the device and outlives the queue;
        // it is not touched until `transmit_complete` returns it (token Some).
        match unsafe { raw.transmit_begin(posted) } {
            Ok(token) => {
                buffer.token = Some(token);
                buffer.len = end;
                stats.tx_frames += 1;
            }
            Err(_) => stats.tx_dropped += 1,
        }
        result
    }
}

/// Lets smoltcp build a frame that is then dropped.
fn drop_frame<R, F: FnOnce(&mut [u8]) -> R>(scratch: &mut [u8], len: usize, f: F) -> R {
    match scratch.get_mut(..len) {
        Some(frame) => f(frame),
        // Larger than the MTU we announced: smoltcp never asks for that.
        None => f(&mut vec![0; len]),
    }
}
