//! The A-VM's attestation server: a pool of TCP sockets on one port.
//!
//! Each connected socket carries one [`Session`]. Per poll the server moves
//! bytes between sockets and sessions (bounded work per connection), writes
//! large answers out across as many polls as the send buffers need, and
//! enforces the limits that keep misbehaving clients from hurting others:
//!
//! - a connection without a complete request or output progress for
//!   [`ServerLimits::idle_timeout_ms`] gets `Error{Timeout}` and is closed;
//! - a closing connection that cannot deliver its last frame within
//!   [`ServerLimits::close_grace_ms`] is aborted;
//! - some sockets always listen ([`ServerLimits::min_listening`]): when
//!   too few are free, the connection least likely to be a live client (closing first, then ones
//!   that never completed a request, then the longest idle) is aborted and
//!   its socket listens again. So any number of stalled connections cannot
//!   lock a real client out.
//!
//! smoltcp has no listen backlog: each socket in `Listen` takes one SYN,
//! and a SYN that finds no listening socket gets a RST. So every socket
//! without a connection listens, and the default pool
//! ([`ServerLimits::default`]) is large enough that load is held rather
//! than refused: 64 verifiers attesting at once all get their answers.

use alloc::vec;
use alloc::vec::Vec;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};

use crate::backend::AttestationBackend;
use crate::session::Session;
use crate::stack::{EthernetDevice, NetStack, duration};
use avm_attest::wire::{KeepAlive, PushedEvent};

/// Most sockets a server may have in its pool.
pub const MAX_CONNECTIONS: usize = 256;

/// The server's tunables; [`ServerLimits::default`] suits the A-VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Sockets in the pool (2..=[`MAX_CONNECTIONS`]): concurrent clients
    /// plus the ones kept listening.
    pub connections: usize,
    /// Sockets kept listening at all times (1..connections), evicting idle
    /// connections if needed. Every socket without a connection listens;
    /// SYNs beyond the listening sockets within one poll are refused (RST).
    pub min_listening: usize,
    /// A connection is timed out after this long without a complete request
    /// or any output progress.
    pub idle_timeout_ms: u64,
    /// A closing connection whose last frame is not out by then is aborted.
    pub close_grace_ms: u64,
    /// smoltcp aborts a connection whose sent data stays unacknowledged this long.
    pub tcp_timeout_ms: u64,
    /// Receive buffer per socket (at least one full request frame).
    pub rx_buffer_len: usize,
    /// Send buffer per socket; larger answers are written out over several polls.
    pub tx_buffer_len: usize,
    /// Requests one connection may get answered per poll (fairness).
    pub requests_per_poll: usize,
    /// Requests all connections together may get answered per poll: each
    /// can cost a TPM command (a quote takes milliseconds), and the poll
    /// runs in the A-VM's one loop, between its checks of the Mon-VM. A
    /// flood of challenges on many connections thus delays a check by at
    /// most this many requests; the connections not served wait for the
    /// next polls, which start with the first of them.
    pub requests_per_round: usize,
    /// Connections that may be subscribed to pushed events at once; a
    /// further `Subscribe` is refused with `Error{Busy}`.
    pub max_subscribers: usize,
    /// Unsent bytes a subscriber may fall behind by; one that falls
    /// further (it stopped reading) is dropped with a reset, so a slow or
    /// dead subscriber never holds the A-VM up.
    pub max_push_backlog: usize,
}

/// The default pool holds 112 connections before it evicts any (16 of its
/// 128 sockets stay listening): 64 verifiers attesting at once, a new
/// connection each time, all get their answers, even when all 64 connect
/// again while their previous connections are still closing (smoltcp has
/// no listen backlog: a SYN needs a socket that already listens, or it
/// gets a RST). Buffers: 128 x (8 + 16) KiB = 3 MiB of the A-VM's heap
/// (capped at 32 MiB; see [`ServerLimits::buffer_memory`]).
impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            connections: 128,
            min_listening: 16,
            idle_timeout_ms: 5_000,
            close_grace_ms: 2_000,
            tcp_timeout_ms: 10_000,
            rx_buffer_len: 8 * 1024,
            // Evidence with the firmware's event log fits; larger answers
            // are written out over several polls.
            tx_buffer_len: 16 * 1024,
            requests_per_poll: 4,
            requests_per_round: 16,
            max_subscribers: 16,
            max_push_backlog: 64 * 1024,
        }
    }
}

impl ServerLimits {
    /// Heap bytes the pool's socket buffers take (allocated on the first
    /// poll and kept): `connections * (rx_buffer_len + tx_buffer_len)`.
    /// Each socket adds about half a KiB of smoltcp and server state, and
    /// each connection its session (a partial request, up to
    /// `MAX_REQUEST_LEN`, and the answer being sent).
    pub fn buffer_memory(&self) -> usize {
        self.connections
            .saturating_mul(self.rx_buffer_len.saturating_add(self.tx_buffer_len))
    }
}

/// Counters for the boot log and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections that reached a session.
    pub accepted: u64,
    /// Complete requests answered (including refused ones).
    pub requests: u64,
    /// Connections timed out for idleness.
    pub timeouts: u64,
    /// Connections aborted to keep a socket listening.
    pub evictions: u64,
    /// Closing connections aborted because their last frame did not go out.
    pub aborted_closing: u64,
    /// Event frames queued to subscribers.
    pub pushed: u64,
    /// Subscribers dropped because they fell too far behind.
    pub dropped_subscribers: u64,
}

/// One socket of the pool and the connection on it.
#[derive(Debug)]
struct Slot {
    handle: SocketHandle,
    session: Option<Session>,
    /// When the current connection was first seen (SYN received).
    since_ms: u64,
    /// Last complete request or output progress.
    last_activity_ms: u64,
    /// When closing started (error frame queued or FIN requested).
    closing_since_ms: Option<u64>,
    /// When the server aborted the connection, while its RST is not out
    /// yet: the socket listens again once the interface has sent it
    /// (listening at once would cancel it and leave the peer hanging).
    rst_pending_since_ms: Option<u64>,
}

impl Slot {
    fn clear(&mut self) {
        self.session = None;
        self.closing_since_ms = None;
        self.rst_pending_since_ms = None;
    }

    /// Whether the socket is listening, or will be as soon as the RST of
    /// the connection the server aborted on it is out.
    fn listening_soon(&self, socket: &tcp::Socket) -> bool {
        match socket.state() {
            State::Listen => true,
            State::Closed => self.rst_pending_since_ms.is_some(),
            _ => false,
        }
    }
}

/// How much the server would lose by evicting a connection; lower goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EvictionClass {
    Closing,
    NoRequestYet,
    Idle,
    /// A subscriber waiting for events: idle by nature, but a live client.
    Subscribed,
    Answering,
}

/// The attestation server; see the module documentation.
#[derive(Debug)]
pub struct AttestationServer {
    port: u16,
    limits: ServerLimits,
    /// The pool, on the heap (`limits.connections` of them once created).
    slots: Vec<Slot>,
    stats: ServerStats,
    /// The slot the next poll serves first: the first one the last poll
    /// left a request unread on (its round's budget was spent).
    next_slot: usize,
    /// The last poll left requests unread: the next one is due at once.
    deferred: bool,
}

impl AttestationServer {
    /// A server for `port`; its sockets are created on the first poll.
    /// `limits.connections` is clamped to 2..=[`MAX_CONNECTIONS`].
    pub fn new(port: u16, limits: ServerLimits) -> Self {
        let mut limits = limits;
        limits.connections = limits.connections.clamp(2, MAX_CONNECTIONS);
        limits.min_listening = limits.min_listening.clamp(1, limits.connections - 1);
        limits.requests_per_poll = limits.requests_per_poll.max(1);
        limits.requests_per_round = limits.requests_per_round.max(1);
        Self {
            port,
            limits,
            slots: Vec::with_capacity(limits.connections),
            stats: ServerStats::default(),
            next_slot: 0,
            deferred: false,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The limits in force (after clamping).
    pub fn limits(&self) -> ServerLimits {
        self.limits
    }

    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Connections currently holding a socket (not listening).
    pub fn active_connections(&self) -> usize {
        self.slots.iter().filter(|s| s.session.is_some()).count()
    }

    /// Serves every connection once (bounded work); call after
    /// [`NetStack::poll`] in the main loop. Returns true if anything happened.
    pub fn poll<D: EthernetDevice>(
        &mut self,
        stack: &mut NetStack<D>,
        backend: &mut impl AttestationBackend,
        now_ms: u64,
    ) -> bool {
        self.poll_sockets(stack.sockets_mut(), backend, now_ms)
    }

    /// [`Self::poll`] on a bare socket set (for hosts without a [`NetStack`]).
    pub fn poll_sockets(
        &mut self,
        sockets: &mut SocketSet<'static>,
        backend: &mut impl AttestationBackend,
        now_ms: u64,
    ) -> bool {
        self.create_sockets(sockets);
        let mut progress = false;
        let subscribers = self.subscribers();
        let mut context = PollContext {
            port: self.port,
            limits: &self.limits,
            stats: &mut self.stats,
            backend,
            now_ms,
            subscribers,
            requests_left: self.limits.requests_per_round,
            deferred: false,
        };
        let count = self.slots.len();
        let start = if self.next_slot < count {
            self.next_slot
        } else {
            0
        };
        let mut first_deferred = None;
        let (before, from_start) = self.slots.split_at_mut(start);
        let in_turn = (start..count).zip(from_start).chain((0..start).zip(before));
        for (index, slot) in in_turn {
            let socket = sockets.get_mut::<tcp::Socket>(slot.handle);
            progress |= context.serve(slot, socket);
            if context.deferred && first_deferred.is_none() {
                first_deferred = Some(index);
            }
        }
        self.deferred = first_deferred.is_some();
        self.next_slot = first_deferred.unwrap_or(0);
        progress |= self.keep_listening(sockets, now_ms);
        progress
    }

    /// Whether a round of [`Self::poll`] (between two polls of the stack)
    /// has work now: the stack needs a poll ([`NetStack::needs_poll`]: a
    /// frame, a timer, the quiet limit), or a session holds output its
    /// socket has not taken yet (a pushed event queued by
    /// [`Self::publish`], the rest of a long answer). An idle loop skips
    /// the round otherwise; keep-alives and timeouts wait at most
    /// [`crate::stack::MAX_QUIET_MS`].
    pub fn needs_poll<D: EthernetDevice>(&self, stack: &NetStack<D>, now_ms: u64) -> bool {
        stack.needs_poll(now_ms)
            || self.deferred
            || self.slots.iter().any(|slot| {
                slot.session
                    .as_ref()
                    .is_some_and(|session| !session.pending_output().is_empty())
            })
    }

    /// Connections subscribed to pushed events.
    pub fn subscribers(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.session.as_ref().is_some_and(Session::is_subscribed))
            .count()
    }

    /// Queues `event` to every subscribed connection (sent by the next
    /// poll; call [`NetStack::poll`] or [`Self::poll`] right after for the
    /// lowest latency). A subscriber that has fallen more than
    /// [`ServerLimits::max_push_backlog`] behind is aborted instead, so no
    /// subscriber can make the A-VM buffer without bound. Returns how many
    /// subscribers got it.
    pub fn publish<D: EthernetDevice>(
        &mut self,
        stack: &mut NetStack<D>,
        event: &PushedEvent,
        now_ms: u64,
    ) -> usize {
        self.publish_sockets(stack.sockets_mut(), event, now_ms)
    }

    /// [`Self::publish`] on a bare socket set.
    pub fn publish_sockets(
        &mut self,
        sockets: &mut SocketSet<'static>,
        event: &PushedEvent,
        now_ms: u64,
    ) -> usize {
        let mut delivered = 0;
        for slot in self.slots.iter_mut() {
            let Some(session) = slot.session.as_mut() else {
                continue;
            };
            if !session.is_subscribed() {
                continue;
            }
            let was_waiting = session.pending_output().is_empty();
            if session.push_event(event, now_ms, self.limits.max_push_backlog) {
                if was_waiting {
                    slot.last_activity_ms = now_ms;
                }
                delivered += 1;
                self.stats.pushed += 1;
            } else {
                let socket = sockets.get_mut::<tcp::Socket>(slot.handle);
                abort(socket, slot, now_ms);
                self.stats.dropped_subscribers += 1;
            }
        }
        delivered
    }

    fn create_sockets(&mut self, sockets: &mut SocketSet<'static>) {
        while self.slots.len() < self.limits.connections {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; self.limits.rx_buffer_len]),
                tcp::SocketBuffer::new(vec![0; self.limits.tx_buffer_len]),
            );
            // Answers are written whole; Nagle would only delay their tail.
            socket.set_nagle_enabled(false);
            socket.set_timeout(Some(duration(self.limits.tcp_timeout_ms)));
            let handle = sockets.add(socket);
            self.slots.push(Slot {
                handle,
                session: None,
                since_ms: 0,
                last_activity_ms: 0,
                closing_since_ms: None,
                rst_pending_since_ms: None,
            });
        }
    }

    /// Keeps [`ServerLimits::min_listening`] sockets listening (or about
    /// to, once the RST of a connection aborted on them is out): sockets
    /// smoltcp closed listen at once, then the least valuable connections
    /// are evicted. Several listeners let a burst of SYNs that arrive
    /// within one poll all be accepted.
    fn keep_listening(&mut self, sockets: &mut SocketSet<'static>, now_ms: u64) -> bool {
        let mut progress = false;
        for _ in 0..self.limits.min_listening {
            let mut listening = 0;
            let mut aborted = None;
            let mut victim: Option<(EvictionClass, u64, usize)> = None;
            for (index, slot) in self.slots.iter().enumerate() {
                let socket = sockets.get::<tcp::Socket>(slot.handle);
                match socket.state() {
                    _ if slot.listening_soon(socket) => listening += 1,
                    State::Closed => aborted = Some(index),
                    _ => {
                        let key = (eviction_class(slot, socket), slot.last_activity_ms, index);
                        if victim.is_none_or(|v| key < v) {
                            victim = Some(key);
                        }
                    }
                }
            }
            if listening >= self.limits.min_listening {
                break;
            }
            let Some(index) = aborted.or(victim.map(|(_, _, index)| index)) else {
                break;
            };
            let Some(slot) = self.slots.get_mut(index) else {
                break;
            };
            let socket = sockets.get_mut::<tcp::Socket>(slot.handle);
            if aborted.is_none() {
                // The peer is told (RST); the socket listens once it is out.
                abort(socket, slot, now_ms);
                self.stats.evictions += 1;
            } else {
                relisten(socket, self.port, slot, now_ms);
            }
            progress = true;
        }
        progress
    }
}

fn eviction_class(slot: &Slot, socket: &tcp::Socket) -> EvictionClass {
    let closing_state = matches!(
        socket.state(),
        State::FinWait1 | State::FinWait2 | State::Closing | State::TimeWait | State::LastAck
    );
    match &slot.session {
        _ if closing_state || slot.closing_since_ms.is_some() => EvictionClass::Closing,
        None => EvictionClass::NoRequestYet,
        Some(session) if session.is_closing() => EvictionClass::Closing,
        Some(session) if session.requests_handled() == 0 => EvictionClass::NoRequestYet,
        Some(session) if session.is_subscribed() && session.pending_output().is_empty() => {
            EvictionClass::Subscribed
        }
        Some(session) if session.pending_output().is_empty() => EvictionClass::Idle,
        Some(_) => EvictionClass::Answering,
    }
}

/// Aborts a connection. The socket listens again once the interface has
/// sent the RST (listening at once would cancel it).
fn abort(socket: &mut tcp::Socket, slot: &mut Slot, now_ms: u64) {
    socket.abort();
    slot.clear();
    slot.rst_pending_since_ms = Some(now_ms);
}

fn relisten(socket: &mut tcp::Socket, port: u16, slot: &mut Slot, now_ms: u64) {
    slot.clear();
    slot.since_ms = now_ms;
    slot.last_activity_ms = now_ms;
    // Fails only for port 0 (nothing to serve then) or an open socket,
    // which callers have just closed or aborted.
    let _ = socket.listen(port);
}

/// What serving one slot needs besides the slot and its socket: the
/// server's settings and counters, the TPM, and the time of this poll.
struct PollContext<'a, B> {
    port: u16,
    limits: &'a ServerLimits,
    stats: &'a mut ServerStats,
    backend: &'a mut B,
    now_ms: u64,
    /// Subscribed connections, counted as they subscribe.
    subscribers: usize,
    /// Requests this poll may still answer ([`ServerLimits::requests_per_round`]).
    requests_left: usize,
    /// A connection was left with input unread because none were left.
    deferred: bool,
}

/// What the idle check decided for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdleCheck {
    /// Active recently enough, or already closing.
    Active,
    /// Idle too long: `Error{Timeout}` is queued and the session closes.
    TimedOut,
    /// Idle too long in the middle of an answer: no error frame can
    /// follow, so the connection must be aborted.
    Abort,
}

impl<B: AttestationBackend> PollContext<'_, B> {
    /// Serves one socket of the pool, by the state of its connection.
    /// Returns true if anything happened.
    fn serve(&mut self, slot: &mut Slot, socket: &mut tcp::Socket) -> bool {
        match socket.state() {
            State::Closed => self.closed(slot, socket),
            State::Listen => self.listening(slot),
            State::TimeWait => self.time_wait(slot, socket),
            // Handshake in progress; a stalled handshake is evicted or
            // aborted by smoltcp's retransmission timeout.
            State::SynReceived | State::SynSent => false,
            State::Established
            | State::CloseWait
            | State::FinWait1
            | State::FinWait2
            | State::Closing
            | State::LastAck => self.connected(slot, socket),
        }
    }

    fn elapsed_since(&self, since_ms: u64) -> u64 {
        self.now_ms.saturating_sub(since_ms)
    }

    /// A closed socket listens again, unless the server aborted its
    /// connection and the RST is not out yet.
    fn closed(&mut self, slot: &mut Slot, socket: &mut tcp::Socket) -> bool {
        // Aborted by the server: wait for the interface to send the RST
        // (it forgets the peer then), within the close grace period in
        // case the device cannot send.
        if let Some(since) = slot.rst_pending_since_ms
            && socket.remote_endpoint().is_some()
            && self.elapsed_since(since) < self.limits.close_grace_ms
        {
            return false;
        }
        // Aborted by smoltcp (RST, retransmission timeout), or by the
        // server with its RST out.
        let had_connection = slot.session.is_some();
        relisten(socket, self.port, slot, self.now_ms);
        had_connection
    }

    fn listening(&self, slot: &mut Slot) -> bool {
        // Keep the clock of a listening socket current: it is when the
        // next connection starts.
        slot.since_ms = self.now_ms;
        slot.last_activity_ms = self.now_ms;
        false
    }

    fn time_wait(&self, slot: &mut Slot, socket: &mut tcp::Socket) -> bool {
        // Our FIN and all data were acknowledged: the connection is done,
        // and the socket is worth more listening than waiting.
        socket.abort();
        relisten(socket, self.port, slot, self.now_ms);
        true
    }

    /// An open connection: requests in, the idle timeout, answers out,
    /// then closing once the session or the client is done.
    fn connected(&mut self, slot: &mut Slot, socket: &mut tcp::Socket) -> bool {
        // The session is held here while its phases run, and put back
        // unless the connection is aborted.
        let (mut session, accepted) = match slot.session.take() {
            Some(session) => (session, false),
            None => (self.accept(slot), true),
        };
        let was_subscribed = session.is_subscribed();
        session.set_push_context(self.now_ms, self.subscribers < self.limits.max_subscribers);
        let received = self.receive(&mut session, slot, socket);
        if !was_subscribed && session.is_subscribed() {
            self.subscribers += 1;
        }
        if session.keepalive_due(self.now_ms) {
            let keepalive = KeepAlive {
                uptime_ms: self.now_ms,
                log_total: self.backend.log_total(),
                dropped: self.backend.events_dropped(),
            };
            session.push_keepalive(keepalive, self.now_ms);
            // Nothing was waiting: the idle clock starts with this frame.
            slot.last_activity_ms = self.now_ms;
        }
        let idle = self.check_idle(&mut session, slot);
        if idle == IdleCheck::Abort {
            abort(socket, slot, self.now_ms);
            return true;
        }
        let sent = self.send(&mut session, slot, socket);
        let closed = self.close_when_done(&session, slot, socket);
        if self.close_grace_expired(slot) {
            abort(socket, slot, self.now_ms);
            self.stats.aborted_closing += 1;
            return true;
        }
        slot.session = Some(session);
        accepted || received || idle == IdleCheck::TimedOut || sent || closed
    }

    /// The first poll of a connection: its session starts.
    fn accept(&mut self, slot: &mut Slot) -> Session {
        self.stats.accepted += 1;
        slot.last_activity_ms = self.now_ms;
        Session::new()
    }

    /// Takes at most `requests_per_poll` requests, each answered at once,
    /// and no more than the poll has left.
    fn receive(
        &mut self,
        session: &mut Session,
        slot: &mut Slot,
        socket: &mut tcp::Socket,
    ) -> bool {
        let allowed = self.limits.requests_per_poll.min(self.requests_left);
        if allowed == 0 {
            self.deferred |= session.wants_input() && socket.can_recv();
            return false;
        }
        let handled_before = session.requests_handled();
        for _ in 0..allowed.saturating_mul(2) {
            if !session.wants_input() || !socket.can_recv() {
                break;
            }
            let used = socket
                .recv(|data| {
                    let used = session.receive(data, self.backend);
                    (used, used)
                })
                .unwrap_or(0);
            if used == 0 || session.requests_handled() - handled_before >= allowed as u32 {
                break;
            }
        }
        let handled = session.requests_handled() - handled_before;
        self.requests_left = self
            .requests_left
            .saturating_sub(usize::try_from(handled).unwrap_or(usize::MAX));
        if handled == 0 {
            return false;
        }
        self.stats.requests += u64::from(handled);
        slot.last_activity_ms = self.now_ms;
        true
    }

    /// Idle timeout: no complete request and no output progress for too long.
    fn check_idle(&mut self, session: &mut Session, slot: &Slot) -> IdleCheck {
        // A subscriber waits for events without asking anything: it is
        // idle only while its pushed frames do not go out.
        let waiting_subscriber = session.is_subscribed() && session.pending_output().is_empty();
        if session.is_closing()
            || waiting_subscriber
            || self.elapsed_since(slot.last_activity_ms) < self.limits.idle_timeout_ms
        {
            return IdleCheck::Active;
        }
        self.stats.timeouts += 1;
        if session.time_out() {
            IdleCheck::TimedOut
        } else {
            IdleCheck::Abort
        }
    }

    /// Writes out as much of the pending answer as the send buffer takes
    /// (two rounds for its wrap).
    fn send(&self, session: &mut Session, slot: &mut Slot, socket: &mut tcp::Socket) -> bool {
        let mut progress = false;
        for _ in 0..2 {
            let pending = session.pending_output();
            if pending.is_empty() || !socket.can_send() {
                break;
            }
            match socket.send_slice(pending) {
                Ok(sent) if sent > 0 => {
                    session.consume_output(sent);
                    slot.last_activity_ms = self.now_ms;
                    progress = true;
                }
                _ => break,
            }
        }
        progress
    }

    /// Closes after an error frame, or when the client closed its side.
    fn close_when_done(
        &self,
        session: &Session,
        slot: &mut Slot,
        socket: &mut tcp::Socket,
    ) -> bool {
        let peer_closed = !socket.may_recv();
        if session.is_closing() && slot.closing_since_ms.is_none() {
            slot.closing_since_ms = Some(self.now_ms);
        }
        // A client that half-closed after pipelining requests still gets
        // its answers: close only once its input is used up and answered.
        let done = session.is_finished()
            || (peer_closed && session.pending_output().is_empty() && socket.recv_queue() == 0);
        if !(done && socket.may_send()) {
            return false;
        }
        // Graceful FIN after the last frame (smoltcp sends queued data first).
        socket.close();
        slot.closing_since_ms.get_or_insert(self.now_ms);
        true
    }

    /// A closing connection whose last frame is not out in time is aborted.
    fn close_grace_expired(&self, slot: &Slot) -> bool {
        slot.closing_since_ms
            .is_some_and(|since| self.elapsed_since(since) >= self.limits.close_grace_ms)
    }
}
