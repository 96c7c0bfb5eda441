//! The TPM 2.0 Command Response Buffer (CRB) interface, locality 0.
//!
//! Register layout and timeouts follow the TCG PC Client Platform TPM Profile
//! (PTP) specification. One exchange is: request locality, cmdReady, write the
//! command, start, wait for start to clear, read the response, goIdle,
//! relinquish locality. Every wait has a deadline on the caller's [`Clock`]
//! plus an iteration backstop, so a stuck or hostile device cannot hang us.

use core::fmt;

use crate::clock::Clock;
use crate::mmio::Mmio;
use crate::transport::{TPM_HEADER_LEN, TpmTransport, TransportError, header_size};

/// Register offsets inside the 4 KiB locality-0 region.
pub mod reg {
    /// `TPM_LOC_STATE_0`.
    pub const LOC_STATE: usize = 0x00;
    /// `TPM_LOC_CTRL_0`.
    pub const LOC_CTRL: usize = 0x08;
    /// `TPM_LOC_STS_0`.
    pub const LOC_STS: usize = 0x0C;
    /// `TPM_CRB_INTF_ID_0` (low 32 bits).
    pub const INTF_ID: usize = 0x30;
    /// `TPM_CRB_CTRL_REQ_0`.
    pub const CTRL_REQ: usize = 0x40;
    /// `TPM_CRB_CTRL_STS_0`.
    pub const CTRL_STS: usize = 0x44;
    /// `TPM_CRB_CTRL_CANCEL_0`.
    pub const CTRL_CANCEL: usize = 0x48;
    /// `TPM_CRB_CTRL_START_0`.
    pub const CTRL_START: usize = 0x4C;
    /// `TPM_CRB_CTRL_CMD_SIZE_0`.
    pub const CTRL_CMD_SIZE: usize = 0x58;
    /// `TPM_CRB_CTRL_CMD_LADDR_0`.
    pub const CTRL_CMD_LADDR: usize = 0x5C;
    /// `TPM_CRB_CTRL_CMD_HADDR_0`.
    pub const CTRL_CMD_HADDR: usize = 0x60;
    /// `TPM_CRB_CTRL_RSP_SIZE_0`.
    pub const CTRL_RSP_SIZE: usize = 0x64;
    /// `TPM_CRB_CTRL_RSP_ADDR_0` (low 32 bits).
    pub const CTRL_RSP_ADDR: usize = 0x68;
    /// `TPM_CRB_DATA_BUFFER_0`: first byte after the registers.
    pub const DATA_BUFFER: usize = 0x80;

    /// `LOC_STATE.tpmRegValidSts`.
    pub const LOC_STATE_REG_VALID: u32 = 1 << 7;
    /// `LOC_STATE.locAssigned`.
    pub const LOC_STATE_ASSIGNED: u32 = 1 << 1;
    /// `LOC_CTRL.requestAccess`.
    pub const LOC_CTRL_REQUEST: u32 = 1 << 0;
    /// `LOC_CTRL.relinquish`.
    pub const LOC_CTRL_RELINQUISH: u32 = 1 << 1;
    /// `LOC_STS.Granted`.
    pub const LOC_STS_GRANTED: u32 = 1 << 0;
    /// `CTRL_REQ.cmdReady`.
    pub const CTRL_REQ_CMD_READY: u32 = 1 << 0;
    /// `CTRL_REQ.goIdle`.
    pub const CTRL_REQ_GO_IDLE: u32 = 1 << 1;
    /// `CTRL_STS.tpmSts`: the TPM is in a fatal error state.
    pub const CTRL_STS_ERROR: u32 = 1 << 0;
    /// `CTRL_STS.tpmIdle`.
    pub const CTRL_STS_IDLE: u32 = 1 << 1;
    /// `INTF_ID.InterfaceType` mask and the CRB value.
    pub const INTF_TYPE_MASK: u32 = 0xF;
    /// Interface type 1 = CRB.
    pub const INTF_TYPE_CRB: u32 = 1;
}

/// Size of the locality region the buffers must live in.
pub const LOCALITY_REGION_LEN: usize = 0x1000;

/// Deadlines of the CRB handshakes, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrbTimeouts {
    /// Locality request (PTP TIMEOUT_A).
    pub locality_us: u64,
    /// cmdReady / goIdle / cancel acknowledgement (PTP TIMEOUT_C).
    pub ready_us: u64,
    /// Command execution. Long: key generation (CreatePrimary RSA) may take
    /// seconds on real TPMs and longer under emulation.
    pub command_us: u64,
}

impl Default for CrbTimeouts {
    fn default() -> Self {
        Self {
            locality_us: 750_000,
            ready_us: 200_000,
            command_us: 120_000_000,
        }
    }
}

/// Upper bound on register polls per wait, in case the clock never advances.
const MAX_POLLS: u64 = 100_000_000;

/// What went wrong on the CRB interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrbError {
    /// The interface-id register reads 0 or all-ones: no TPM at this address.
    NotPresent,
    /// An interface is present but is not CRB (e.g. FIFO/TIS); the raw id.
    NotCrb { interface_id: u32 },
    /// The command/response buffer registers point outside the region.
    BadBufferLayout {
        cmd_offset: u64,
        cmd_size: u32,
        rsp_offset: u64,
        rsp_size: u32,
    },
    /// Locality 0 was not granted in time.
    LocalityTimeout,
    /// cmdReady was not acknowledged in time.
    ReadyTimeout,
    /// The command did not complete in time; it was cancelled.
    CommandTimeout,
    /// The TPM set the fatal error bit (`CTRL_STS.tpmSts`).
    FatalError,
}

impl fmt::Display for CrbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPresent => write!(f, "no TPM CRB interface present"),
            Self::NotCrb { interface_id } => {
                write!(f, "TPM interface {interface_id:#x} is not CRB")
            }
            Self::BadBufferLayout {
                cmd_offset,
                cmd_size,
                rsp_offset,
                rsp_size,
            } => write!(
                f,
                "CRB buffers outside the locality region (cmd {cmd_offset:#x}+{cmd_size:#x}, \
                 rsp {rsp_offset:#x}+{rsp_size:#x})"
            ),
            Self::LocalityTimeout => write!(f, "TPM locality 0 not granted in time"),
            Self::ReadyTimeout => write!(f, "TPM did not become ready in time"),
            Self::CommandTimeout => write!(f, "TPM command timed out and was cancelled"),
            Self::FatalError => write!(f, "TPM reports a fatal error"),
        }
    }
}

/// A command/response buffer as an offset range inside the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Buffer {
    offset: usize,
    size: usize,
}

/// A probed CRB interface; implements [`TpmTransport`].
pub struct Crb<M: Mmio, C: Clock> {
    mmio: M,
    clock: C,
    timeouts: CrbTimeouts,
    cmd: Buffer,
    rsp: Buffer,
}

impl<M: Mmio, C: Clock> Crb<M, C> {
    /// Checks that a CRB interface is present and reads its buffer layout.
    ///
    /// # Errors
    ///
    /// [`CrbError::NotPresent`] when the interface-id register reads 0 or
    /// all-ones, [`CrbError::NotCrb`] for another interface type,
    /// [`CrbError::LocalityTimeout`] when locality 0 is not granted, and
    /// [`CrbError::BadBufferLayout`] when the buffers are not inside the region.
    pub fn probe(mmio: M, clock: C) -> Result<Self, CrbError> {
        Self::probe_with_timeouts(mmio, clock, CrbTimeouts::default())
    }

    /// [`Crb::probe`] with explicit deadlines.
    ///
    /// # Errors
    ///
    /// As [`Crb::probe`].
    pub fn probe_with_timeouts(mmio: M, clock: C, timeouts: CrbTimeouts) -> Result<Self, CrbError> {
        let interface_id = mmio.read32(reg::INTF_ID);
        if interface_id == 0 || interface_id == u32::MAX {
            return Err(CrbError::NotPresent);
        }
        if interface_id & reg::INTF_TYPE_MASK != reg::INTF_TYPE_CRB {
            return Err(CrbError::NotCrb { interface_id });
        }
        let mut crb = Self {
            mmio,
            clock,
            timeouts,
            cmd: Buffer { offset: 0, size: 0 },
            rsp: Buffer { offset: 0, size: 0 },
        };
        // The buffer registers are only meaningful while we hold the locality.
        crb.request_locality()?;
        let layout = crb.read_buffer_layout();
        crb.relinquish_locality();
        let (cmd, rsp) = layout?;
        crb.cmd = cmd;
        crb.rsp = rsp;
        Ok(crb)
    }

    /// Size of the command buffer in bytes.
    #[must_use]
    pub fn command_buffer_len(&self) -> usize {
        self.cmd.size
    }

    /// Gives the register region back (e.g. to unmap it).
    pub fn into_inner(self) -> (M, C) {
        (self.mmio, self.clock)
    }

    /// Reads the command/response buffer registers and checks the buffers
    /// lie in the data area of the locality region.
    ///
    /// The registers hold physical addresses; the buffers live in the same
    /// 4 KiB locality page (QEMU: 0xFED40080, 0xF80 bytes), so the offset is
    /// the address within that page.
    fn read_buffer_layout(&self) -> Result<(Buffer, Buffer), CrbError> {
        let cmd_addr = u64::from(self.mmio.read32(reg::CTRL_CMD_HADDR)) << 32
            | u64::from(self.mmio.read32(reg::CTRL_CMD_LADDR));
        let cmd_size = self.mmio.read32(reg::CTRL_CMD_SIZE);
        let rsp_addr = u64::from(self.mmio.read32(reg::CTRL_RSP_ADDR + 4)) << 32
            | u64::from(self.mmio.read32(reg::CTRL_RSP_ADDR));
        let rsp_size = self.mmio.read32(reg::CTRL_RSP_SIZE);
        let page_mask = LOCALITY_REGION_LEN as u64 - 1;
        let same_page = cmd_addr & !page_mask == rsp_addr & !page_mask;
        let cmd = self.buffer(cmd_addr & page_mask, cmd_size);
        let rsp = self.buffer(rsp_addr & page_mask, rsp_size);
        match (cmd, rsp) {
            (Some(cmd), Some(rsp)) if same_page => Ok((cmd, rsp)),
            _ => Err(CrbError::BadBufferLayout {
                cmd_offset: cmd_addr & page_mask,
                cmd_size,
                rsp_offset: rsp_addr & page_mask,
                rsp_size,
            }),
        }
    }

    /// A buffer at `offset` of `size` bytes, if it is large enough for a
    /// header and lies between the registers and the end of the region.
    fn buffer(&self, offset: u64, size: u32) -> Option<Buffer> {
        let offset = usize::try_from(offset).ok()?;
        let size = usize::try_from(size).ok()?;
        let end = offset.checked_add(size)?;
        let region_end = self.mmio.region_len().min(LOCALITY_REGION_LEN);
        (offset >= reg::DATA_BUFFER && size >= TPM_HEADER_LEN && end <= region_end)
            .then_some(Buffer { offset, size })
    }

    /// Polls until `done` holds or `timeout_us` passes; true when done.
    fn wait_until(&self, timeout_us: u64, mut done: impl FnMut(&M) -> bool) -> bool {
        if done(&self.mmio) {
            return true;
        }
        let deadline = self.clock.now_us().saturating_add(timeout_us);
        let mut polls: u64 = 1;
        let finished = loop {
            self.clock.relax();
            if done(&self.mmio) {
                break true;
            }
            polls += 1;
            if self.clock.now_us() >= deadline || polls >= MAX_POLLS {
                // One last look: the condition may have become true while
                // the clock was read.
                break done(&self.mmio);
            }
        };
        self.clock.wait_over();
        finished
    }

    fn request_locality(&mut self) -> Result<(), CrbError> {
        self.mmio.write32(reg::LOC_CTRL, reg::LOC_CTRL_REQUEST);
        let granted = self.wait_until(self.timeouts.locality_us, |m| {
            let state = m.read32(reg::LOC_STATE);
            m.read32(reg::LOC_STS) & reg::LOC_STS_GRANTED != 0
                && state & reg::LOC_STATE_REG_VALID != 0
                && state & reg::LOC_STATE_ASSIGNED != 0
        });
        if granted {
            Ok(())
        } else {
            Err(CrbError::LocalityTimeout)
        }
    }

    fn relinquish_locality(&mut self) {
        self.mmio.write32(reg::LOC_CTRL, reg::LOC_CTRL_RELINQUISH);
    }

    fn check_fatal(&self) -> Result<(), CrbError> {
        if self.mmio.read32(reg::CTRL_STS) & reg::CTRL_STS_ERROR != 0 {
            Err(CrbError::FatalError)
        } else {
            Ok(())
        }
    }

    /// Moves the TPM to the Ready state (cmdReady handshake).
    fn command_ready(&mut self) -> Result<(), CrbError> {
        self.mmio.write32(reg::CTRL_REQ, reg::CTRL_REQ_CMD_READY);
        let ready = self.wait_until(self.timeouts.ready_us, |m| {
            m.read32(reg::CTRL_REQ) & reg::CTRL_REQ_CMD_READY == 0
                && m.read32(reg::CTRL_STS) & reg::CTRL_STS_IDLE == 0
        });
        if ready {
            Ok(())
        } else {
            self.check_fatal()?;
            Err(CrbError::ReadyTimeout)
        }
    }

    /// Asks the TPM to go idle; failures are ignored (see `exchange`).
    fn go_idle(&mut self) {
        self.mmio.write32(reg::CTRL_REQ, reg::CTRL_REQ_GO_IDLE);
        let _idle = self.wait_until(self.timeouts.ready_us, |m| {
            m.read32(reg::CTRL_REQ) & reg::CTRL_REQ_GO_IDLE == 0
        });
    }

    /// Starts the command in the command buffer and waits for completion,
    /// cancelling it on timeout.
    fn run_command(&mut self) -> Result<(), CrbError> {
        self.mmio.write32(reg::CTRL_START, 1);
        let done = self.wait_until(self.timeouts.command_us, |m| {
            m.read32(reg::CTRL_START) & 1 == 0
        });
        if done {
            return self.check_fatal();
        }
        self.mmio.write32(reg::CTRL_CANCEL, 1);
        let _cancelled = self.wait_until(self.timeouts.ready_us, |m| {
            m.read32(reg::CTRL_START) & 1 == 0
        });
        self.mmio.write32(reg::CTRL_CANCEL, 0);
        Err(CrbError::CommandTimeout)
    }

    /// Copies the response out of the response buffer after checking its
    /// size field against the interface buffer and the caller's buffer.
    fn read_response(&self, response: &mut [u8]) -> Result<usize, TransportError> {
        let mut header = [0u8; TPM_HEADER_LEN];
        self.mmio.read_bytes(self.rsp.offset, &mut header);
        let size = header_size(&header);
        if size < TPM_HEADER_LEN {
            return Err(TransportError::ResponseTooShort { size });
        }
        let max = self.rsp.size.min(response.len());
        if size > max {
            return Err(TransportError::ResponseTooLarge { size, max });
        }
        let (head, rest) = response.split_at_mut(TPM_HEADER_LEN);
        head.copy_from_slice(&header);
        let body_len = size - TPM_HEADER_LEN;
        let body = rest
            .get_mut(..body_len)
            .ok_or(TransportError::ResponseTooLarge { size, max })?;
        self.mmio.read_bytes(self.rsp.offset + TPM_HEADER_LEN, body);
        Ok(size)
    }

    /// The part of an exchange that runs while we hold the locality.
    fn exchange(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        self.check_fatal()?;
        self.command_ready()?;
        self.mmio.write_bytes(self.cmd.offset, command);
        self.run_command()?;
        let result = self.read_response(response);
        // goIdle failures are not reported: the command has executed (a PCR
        // may have been extended) and reporting failure would invite a
        // duplicate retry. A TPM stuck here fails the next cmdReady instead.
        self.go_idle();
        result
    }
}

impl<M: Mmio, C: Clock> TpmTransport for Crb<M, C> {
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        if command.len() > self.cmd.size {
            return Err(TransportError::CommandTooLarge {
                len: command.len(),
                max: self.cmd.size,
            });
        }
        if response.len() < TPM_HEADER_LEN {
            return Err(TransportError::ResponseTooLarge {
                size: TPM_HEADER_LEN,
                max: response.len(),
            });
        }
        self.request_locality()?;
        let result = self.exchange(command, response);
        self.relinquish_locality();
        result
    }
}

#[cfg(test)]
mod tests;
