//! The CRB state machine against a simulated register file that can stall,
//! fail and time out.

extern crate std;

use std::boxed::Box;
use std::cell::{Cell, RefCell};
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

/// QEMU's layout: both buffers at 0x80 in the locality page, 0xF80 bytes.
const BASE: u64 = 0xFED4_0000;
const BUF_OFFSET: usize = 0x80;
const BUF_SIZE: u32 = 0xF80;
/// QEMU's INTF_ID low word: type CRB, version 1, CapCRB, selector CRB.
const QEMU_INTF_ID: u32 = 0x0002_4631;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    RequestLocality,
    Relinquish,
    CmdReady,
    GoIdle,
    Start,
    Cancel(u32),
}

/// Produces the TPM's response frame to a command frame.
type Responder = Box<dyn Fn(&[u8]) -> Vec<u8>>;

#[derive(Default, Clone)]
struct Faults {
    locality_never_granted: bool,
    ready_never_clears: bool,
    /// Reads of CTRL_START that still see 1 before the command completes.
    start_stall_polls: u32,
    start_never_clears: bool,
    fatal_on_start: bool,
    /// Replaces the response header's size field.
    response_size_field: Option<u32>,
}

/// A register file that behaves like QEMU's tpm-crb device, with a closure
/// producing the TPM's response and switchable faults.
struct SimCrb {
    mem: RefCell<Vec<u8>>,
    faults: Faults,
    start_stall_left: Cell<u32>,
    command_pending: Cell<bool>,
    responder: Responder,
    events: RefCell<Vec<Event>>,
    last_command: RefCell<Vec<u8>>,
}

impl SimCrb {
    fn new(responder: impl Fn(&[u8]) -> Vec<u8> + 'static, faults: Faults) -> Self {
        let sim = Self {
            mem: RefCell::new(std::vec![0u8; LOCALITY_REGION_LEN]),
            start_stall_left: Cell::new(0),
            command_pending: Cell::new(false),
            faults,
            responder: Box::new(responder),
            events: RefCell::new(Vec::new()),
            last_command: RefCell::new(Vec::new()),
        };
        let addr = BASE + BUF_OFFSET as u64;
        sim.poke(reg::INTF_ID, QEMU_INTF_ID);
        sim.poke(reg::CTRL_STS, reg::CTRL_STS_IDLE);
        sim.poke(reg::CTRL_CMD_LADDR, addr as u32);
        sim.poke(reg::CTRL_CMD_HADDR, (addr >> 32) as u32);
        sim.poke(reg::CTRL_CMD_SIZE, BUF_SIZE);
        sim.poke(reg::CTRL_RSP_ADDR, addr as u32);
        sim.poke(reg::CTRL_RSP_ADDR + 4, (addr >> 32) as u32);
        sim.poke(reg::CTRL_RSP_SIZE, BUF_SIZE);
        sim
    }

    fn poke(&self, offset: usize, value: u32) {
        self.mem.borrow_mut()[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn peek(&self, offset: usize) -> u32 {
        let mem = self.mem.borrow();
        u32::from_le_bytes([
            mem[offset],
            mem[offset + 1],
            mem[offset + 2],
            mem[offset + 3],
        ])
    }

    fn log(&self, event: Event) {
        self.events.borrow_mut().push(event);
    }

    /// Runs the command in the buffer, as the TPM does when START is set.
    fn complete_command(&self) {
        self.command_pending.set(false);
        let command = {
            let mem = self.mem.borrow();
            let size = u32::from_be_bytes([mem[0x82], mem[0x83], mem[0x84], mem[0x85]]) as usize;
            mem[BUF_OFFSET..BUF_OFFSET + size.min(BUF_SIZE as usize)].to_vec()
        };
        let mut response = (self.responder)(&command);
        if let Some(size) = self.faults.response_size_field {
            response[2..6].copy_from_slice(&size.to_be_bytes());
        }
        self.mem.borrow_mut()[BUF_OFFSET..BUF_OFFSET + response.len()].copy_from_slice(&response);
        *self.last_command.borrow_mut() = command;
        if self.faults.fatal_on_start {
            self.poke(
                reg::CTRL_STS,
                self.peek(reg::CTRL_STS) | reg::CTRL_STS_ERROR,
            );
        }
        self.poke(reg::CTRL_START, 0);
    }
}

impl Mmio for SimCrb {
    fn read32(&self, offset: usize) -> u32 {
        if offset == reg::CTRL_START
            && self.command_pending.get()
            && !self.faults.start_never_clears
        {
            let left = self.start_stall_left.get();
            if left == 0 {
                self.complete_command();
            } else {
                self.start_stall_left.set(left - 1);
            }
        }
        self.peek(offset)
    }

    fn write32(&mut self, offset: usize, value: u32) {
        match offset {
            reg::LOC_CTRL if value & reg::LOC_CTRL_REQUEST != 0 => {
                self.log(Event::RequestLocality);
                if !self.faults.locality_never_granted {
                    self.poke(reg::LOC_STS, reg::LOC_STS_GRANTED);
                    self.poke(
                        reg::LOC_STATE,
                        reg::LOC_STATE_REG_VALID | reg::LOC_STATE_ASSIGNED,
                    );
                }
            }
            reg::LOC_CTRL if value & reg::LOC_CTRL_RELINQUISH != 0 => {
                self.log(Event::Relinquish);
                self.poke(reg::LOC_STS, 0);
                self.poke(reg::LOC_STATE, reg::LOC_STATE_REG_VALID);
            }
            reg::CTRL_REQ if value & reg::CTRL_REQ_CMD_READY != 0 => {
                self.log(Event::CmdReady);
                if self.faults.ready_never_clears {
                    self.poke(reg::CTRL_REQ, reg::CTRL_REQ_CMD_READY);
                } else {
                    let sts = self.peek(reg::CTRL_STS) & !reg::CTRL_STS_IDLE;
                    self.poke(reg::CTRL_STS, sts);
                }
            }
            reg::CTRL_REQ if value & reg::CTRL_REQ_GO_IDLE != 0 => {
                self.log(Event::GoIdle);
                self.poke(reg::CTRL_STS, self.peek(reg::CTRL_STS) | reg::CTRL_STS_IDLE);
            }
            reg::CTRL_START if value & 1 != 0 => {
                self.log(Event::Start);
                self.poke(reg::CTRL_START, 1);
                self.command_pending.set(true);
                self.start_stall_left.set(self.faults.start_stall_polls);
            }
            reg::CTRL_CANCEL => {
                self.log(Event::Cancel(value));
                self.poke(reg::CTRL_CANCEL, value);
            }
            _ => self.poke(offset, value),
        }
    }

    fn read8(&self, offset: usize) -> u8 {
        self.mem.borrow().get(offset).copied().unwrap_or(u8::MAX)
    }

    fn write8(&mut self, offset: usize, value: u8) {
        if let Some(byte) = self.mem.borrow_mut().get_mut(offset) {
            *byte = value;
        }
    }

    fn region_len(&self) -> usize {
        LOCALITY_REGION_LEN
    }
}

/// A clock that advances 1 ms on every read, so every stall ends; it
/// counts the driver's [`Clock::relax`] calls and whether a wait that
/// relaxed was closed with [`Clock::wait_over`].
#[derive(Default)]
struct SimClock {
    now: Cell<u64>,
    relaxes: Cell<u32>,
    in_wait: Cell<bool>,
}

impl Clock for SimClock {
    fn now_us(&self) -> u64 {
        let now = self.now.get();
        self.now.set(now + 1_000);
        now
    }

    fn relax(&self) {
        self.relaxes.set(self.relaxes.get() + 1);
        self.in_wait.set(true);
    }

    fn wait_over(&self) {
        self.in_wait.set(false);
    }
}

/// A TPM that answers every command with TPM_RC_SUCCESS and a 4-byte body
/// echoing the command code, so tests can see which command ran.
fn echo_cc(command: &[u8]) -> Vec<u8> {
    let mut rsp = std::vec![0x80, 0x01, 0, 0, 0, 14, 0, 0, 0, 0];
    rsp.extend_from_slice(&command[6..10]);
    rsp
}

const GET_RANDOM_8: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 8];

fn probe(faults: Faults) -> Result<Crb<SimCrb, SimClock>, CrbError> {
    Crb::probe(SimCrb::new(echo_cc, faults), SimClock::default())
}

fn events(crb: Crb<SimCrb, SimClock>) -> Vec<Event> {
    let (sim, _) = crb.into_inner();
    sim.events.into_inner()
}

#[test]
fn normal_exchange_runs_the_full_handshake() {
    let mut crb = probe(Faults::default()).unwrap();
    assert_eq!(crb.command_buffer_len(), BUF_SIZE as usize);
    let mut rsp = [0u8; 64];
    let n = crb.transact(&GET_RANDOM_8, &mut rsp).unwrap();
    assert_eq!(
        &rsp[..n],
        &[0x80, 0x01, 0, 0, 0, 14, 0, 0, 0, 0, 0, 0, 0x01, 0x7B]
    );
    let (sim, _) = crb.into_inner();
    assert_eq!(*sim.last_command.borrow(), GET_RANDOM_8);
    assert_eq!(
        sim.events.into_inner(),
        [
            Event::RequestLocality,
            Event::Relinquish,
            Event::RequestLocality,
            Event::CmdReady,
            Event::Start,
            Event::GoIdle,
            Event::Relinquish,
        ]
    );
}

#[test]
fn a_stalling_command_completes_before_the_deadline() {
    let mut crb = probe(Faults {
        start_stall_polls: 50,
        ..Faults::default()
    })
    .unwrap();
    let mut rsp = [0u8; 64];
    assert_eq!(crb.transact(&GET_RANDOM_8, &mut rsp), Ok(14));
    // Every poll after the first let time pass, and the wait was closed.
    let (_, clock) = crb.into_inner();
    assert!(clock.relaxes.get() >= 50, "{}", clock.relaxes.get());
    assert!(!clock.in_wait.get());
}

#[test]
fn a_tpm_that_is_ready_at_once_is_not_waited_for() {
    let mut crb = probe(Faults::default()).unwrap();
    let mut rsp = [0u8; 64];
    assert_eq!(crb.transact(&GET_RANDOM_8, &mut rsp), Ok(14));
    let (_, clock) = crb.into_inner();
    assert_eq!(clock.relaxes.get(), 0);
}

#[test]
fn a_wait_that_times_out_is_closed_too() {
    let mut crb = probe(Faults {
        start_never_clears: true,
        ..Faults::default()
    })
    .unwrap();
    let mut rsp = [0u8; 64];
    assert!(crb.transact(&GET_RANDOM_8, &mut rsp).is_err());
    let (_, clock) = crb.into_inner();
    assert!(clock.relaxes.get() > 0 && !clock.in_wait.get());
}

#[test]
fn interface_id_zero_or_all_ones_means_not_present() {
    for id in [0, u32::MAX] {
        let sim = SimCrb::new(echo_cc, Faults::default());
        sim.poke(reg::INTF_ID, id);
        let err = Crb::probe(sim, SimClock::default()).err();
        assert_eq!(err, Some(CrbError::NotPresent));
    }
}

#[test]
fn a_fifo_interface_is_rejected() {
    let sim = SimCrb::new(echo_cc, Faults::default());
    sim.poke(reg::INTF_ID, 0x0000_6000);
    let err = Crb::probe(sim, SimClock::default()).err();
    assert_eq!(
        err,
        Some(CrbError::NotCrb {
            interface_id: 0x6000
        })
    );
}

#[test]
fn buffers_outside_the_region_are_rejected() {
    let sim = SimCrb::new(echo_cc, Faults::default());
    sim.poke(reg::CTRL_RSP_SIZE, 0x1000);
    assert!(matches!(
        Crb::probe(sim, SimClock::default()),
        Err(CrbError::BadBufferLayout {
            rsp_size: 0x1000,
            ..
        })
    ));
    let sim = SimCrb::new(echo_cc, Faults::default());
    sim.poke(reg::CTRL_CMD_LADDR, BASE as u32 + 0x10);
    assert!(matches!(
        Crb::probe(sim, SimClock::default()),
        Err(CrbError::BadBufferLayout {
            cmd_offset: 0x10,
            ..
        })
    ));
}

#[test]
fn locality_never_granted_times_out() {
    let err = probe(Faults {
        locality_never_granted: true,
        ..Faults::default()
    })
    .err();
    assert_eq!(err, Some(CrbError::LocalityTimeout));
}

#[test]
fn cmd_ready_never_acknowledged_times_out_and_releases_locality() {
    let mut crb = probe(Faults {
        ready_never_clears: true,
        ..Faults::default()
    })
    .unwrap();
    let mut rsp = [0u8; 64];
    assert_eq!(
        crb.transact(&GET_RANDOM_8, &mut rsp),
        Err(TransportError::Crb(CrbError::ReadyTimeout))
    );
    let events = events(crb);
    assert!(!events.contains(&Event::Start));
    assert_eq!(events.last(), Some(&Event::Relinquish));
}

#[test]
fn a_command_that_never_completes_is_cancelled() {
    let mut crb = probe(Faults {
        start_never_clears: true,
        ..Faults::default()
    })
    .unwrap();
    let mut rsp = [0u8; 64];
    assert_eq!(
        crb.transact(&GET_RANDOM_8, &mut rsp),
        Err(TransportError::Crb(CrbError::CommandTimeout))
    );
    let events = events(crb);
    let cancel_set = events.iter().position(|e| *e == Event::Cancel(1)).unwrap();
    let cancel_cleared = events.iter().position(|e| *e == Event::Cancel(0)).unwrap();
    assert!(events.iter().position(|e| *e == Event::Start).unwrap() < cancel_set);
    assert!(cancel_set < cancel_cleared);
    assert_eq!(events.last(), Some(&Event::Relinquish));
}

#[test]
fn the_fatal_error_bit_is_reported() {
    let mut crb = probe(Faults {
        fatal_on_start: true,
        ..Faults::default()
    })
    .unwrap();
    let mut rsp = [0u8; 64];
    assert_eq!(
        crb.transact(&GET_RANDOM_8, &mut rsp),
        Err(TransportError::Crb(CrbError::FatalError))
    );
    // The TPM stays in its error state: the next command fails up front.
    assert_eq!(
        crb.transact(&GET_RANDOM_8, &mut rsp),
        Err(TransportError::Crb(CrbError::FatalError))
    );
}

#[test]
fn a_response_size_beyond_the_buffer_is_rejected() {
    let mut crb = probe(Faults {
        response_size_field: Some(0x10_0000),
        ..Faults::default()
    })
    .unwrap();
    let mut rsp = [0u8; 64];
    assert_eq!(
        crb.transact(&GET_RANDOM_8, &mut rsp),
        Err(TransportError::ResponseTooLarge {
            size: 0x10_0000,
            max: 64
        })
    );
}

#[test]
fn a_response_larger_than_the_callers_buffer_is_rejected() {
    let mut crb = probe(Faults::default()).unwrap();
    let mut rsp = [0u8; 12];
    assert_eq!(
        crb.transact(&GET_RANDOM_8, &mut rsp),
        Err(TransportError::ResponseTooLarge { size: 14, max: 12 })
    );
}

#[test]
fn a_response_shorter_than_a_header_is_rejected() {
    let mut crb = probe(Faults {
        response_size_field: Some(6),
        ..Faults::default()
    })
    .unwrap();
    let mut rsp = [0u8; 64];
    assert_eq!(
        crb.transact(&GET_RANDOM_8, &mut rsp),
        Err(TransportError::ResponseTooShort { size: 6 })
    );
}

#[test]
fn a_command_larger_than_the_buffer_is_refused_before_touching_the_tpm() {
    let mut crb = probe(Faults::default()).unwrap();
    let command = std::vec![0u8; BUF_SIZE as usize + 1];
    let mut rsp = [0u8; 64];
    assert_eq!(
        crb.transact(&command, &mut rsp),
        Err(TransportError::CommandTooLarge {
            len: command.len(),
            max: BUF_SIZE as usize
        })
    );
    assert!(!events(crb).contains(&Event::Start));
}

proptest! {
    /// Whatever the device leaves in its response buffer, transact returns
    /// either an error or a length within both buffers whose header size
    /// field matches.
    #[test]
    fn arbitrary_response_buffers_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..64),
        size_field in any::<u32>(),
        caller_len in 0usize..128,
    ) {
        let respond = move |_: &[u8]| {
            let mut rsp = std::vec![0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
            rsp.extend_from_slice(&body);
            rsp
        };
        let faults = Faults { response_size_field: Some(size_field), ..Faults::default() };
        let mut crb = Crb::probe(SimCrb::new(respond, faults), SimClock::default()).unwrap();
        let mut rsp = std::vec![0u8; caller_len];
        if let Ok(n) = crb.transact(&GET_RANDOM_8, &mut rsp) {
            prop_assert!(n <= caller_len && n >= TPM_HEADER_LEN);
            prop_assert_eq!(n as u32, size_field);
        }
    }
}
