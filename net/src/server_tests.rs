//! The attestation server over real smoltcp TCP: two interfaces connected
//! back to back through an in-memory Ethernet link, a client stack speaking
//! the protocol, virtual time in milliseconds.

use std::net::Ipv4Addr;
use std::vec;
use std::vec::Vec;

use avm_attest::pcr::PcrMask;
use avm_attest::wire::{
    self, ErrorCode, FrameAssembler, MAX_FRAME_LEN, MAX_NONCE_LEN, PROTOCOL_VERSION, Request,
    Response,
};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};

use crate::config::{Addressing, NetConfig, StaticIpv4};
use crate::server::{AttestationServer, ServerLimits};
use crate::stack::NetStack;
use crate::testing::{DeterministicBackend, LinkEnd, link_pair};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const PORT: u16 = 4700;
/// Generous bound on simulated milliseconds for any single exchange.
const MAX_STEPS: usize = 20_000;

fn static_config(address: Ipv4Addr, seed: u64) -> NetConfig {
    NetConfig {
        addressing: Addressing::Static(StaticIpv4 {
            address,
            prefix_len: 24,
            gateway: None,
        }),
        random_seed: seed,
    }
}

/// The A-VM side and a verifier side on one simulated link.
struct Testbed {
    server_stack: NetStack<LinkEnd>,
    client_stack: NetStack<LinkEnd>,
    server: AttestationServer,
    backend: DeterministicBackend,
    now: u64,
    next_client_port: u16,
}

/// One verifier connection.
struct Client {
    handle: SocketHandle,
    assembler: FrameAssembler,
    /// Responses fully received so far.
    responses: Vec<Response>,
}

impl Testbed {
    fn new(limits: ServerLimits, event_log_len: usize) -> Self {
        let (a, b) = link_pair([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        Self {
            server_stack: NetStack::new(a, static_config(SERVER_IP, 1), 0).unwrap(),
            client_stack: NetStack::new(b, static_config(CLIENT_IP, 2), 0).unwrap(),
            server: AttestationServer::new(PORT, limits),
            backend: DeterministicBackend::new(event_log_len),
            now: 0,
            next_client_port: 40_000,
        }
    }

    /// One millisecond of both machines' main loops.
    /// One millisecond: the client polls; the server side runs its round
    /// only when it says it has work, as the A-VM's idle loop does.
    fn step(&mut self) {
        self.client_stack.poll(self.now);
        if self.server.needs_poll(&self.server_stack, self.now) {
            self.server_stack.poll(self.now);
            self.server
                .poll(&mut self.server_stack, &mut self.backend, self.now);
            self.server_stack.poll(self.now);
        }
        self.now += 1;
    }

    fn steps(&mut self, count: usize) {
        for _ in 0..count {
            self.step();
        }
    }

    fn socket(&mut self, client: &Client) -> &mut tcp::Socket<'static> {
        self.client_stack
            .sockets_mut()
            .get_mut::<tcp::Socket>(client.handle)
    }

    /// Opens a connection (not waiting for the handshake).
    fn open(&mut self) -> Client {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
            tcp::SocketBuffer::new(vec![0; 16 * 1024]),
        );
        let port = self.next_client_port;
        self.next_client_port += 1;
        let (iface, sockets) = self.client_stack.parts_mut();
        socket
            .connect(iface.context(), (SERVER_IP, PORT), port)
            .unwrap();
        let handle = sockets.add(socket);
        Client {
            handle,
            assembler: FrameAssembler::new(MAX_FRAME_LEN),
            responses: Vec::new(),
        }
    }

    /// Opens a connection and waits until it is established.
    fn connect(&mut self) -> Client {
        let client = self.open();
        for _ in 0..MAX_STEPS {
            if self.socket(&client).state() == State::Established {
                return client;
            }
            self.step();
        }
        panic!("connection not established");
    }

    /// Queues bytes on the client's socket, stepping while its buffer is full.
    fn send(&mut self, client: &Client, mut data: &[u8]) {
        for _ in 0..MAX_STEPS {
            if data.is_empty() {
                return;
            }
            let sent = self.socket(client).send_slice(data).unwrap_or(0);
            data = &data[sent..];
            self.step();
        }
        panic!("could not send");
    }

    fn send_request(&mut self, client: &Client, request: &Request) {
        let frame = wire::encode_frame(request).unwrap();
        self.send(client, &frame);
    }

    /// Moves received bytes into the client's frame assembler.
    fn drain(&mut self, client: &mut Client) {
        let socket = self
            .client_stack
            .sockets_mut()
            .get_mut::<tcp::Socket>(client.handle);
        while socket.can_recv() {
            let used = socket
                .recv(|data| {
                    let used = client.assembler.push(data);
                    (used, used)
                })
                .unwrap();
            if let Some(body) = client.assembler.next_body().unwrap() {
                client
                    .responses
                    .push(wire::decode_body::<Response>(&body).expect("server frame decodes"));
            } else if used == 0 {
                break;
            }
        }
    }

    /// Steps until the client has a response, and returns it.
    fn response(&mut self, client: &mut Client) -> Response {
        for _ in 0..MAX_STEPS {
            self.drain(client);
            if !client.responses.is_empty() {
                return client.responses.remove(0);
            }
            self.step();
        }
        panic!("no response");
    }

    fn exchange(&mut self, client: &mut Client, request: &Request) -> Response {
        self.send_request(client, request);
        self.response(client)
    }

    /// Whether the server has ended the connection (FIN or RST seen).
    fn closed_by_server(&mut self, client: &Client) -> bool {
        let socket = self.socket(client);
        !socket.may_recv() || matches!(socket.state(), State::Closed | State::TimeWait)
    }

    /// Steps until the server has ended the connection.
    fn wait_closed(&mut self, client: &mut Client) {
        for _ in 0..MAX_STEPS {
            self.drain(client);
            if self.closed_by_server(client) {
                return;
            }
            self.step();
        }
        panic!("server did not close the connection");
    }

    /// Hello then a challenge; checks both answers.
    fn attest(&mut self, client: &mut Client, nonce: &[u8]) {
        let hello = self.exchange(client, &hello());
        assert_eq!(hello, Response::Hello(DeterministicBackend::hello_info()));
        let evidence = self.exchange(client, &challenge(nonce, 0xff));
        assert_eq!(
            evidence,
            Response::Evidence(DeterministicBackend::evidence(
                nonce,
                PcrMask::FIRMWARE,
                self.backend.event_log_len
            ))
        );
    }
}

fn hello() -> Request {
    Request::Hello {
        version: PROTOCOL_VERSION,
    }
}

fn challenge(nonce: &[u8], pcr_mask: u32) -> Request {
    Request::Challenge {
        nonce: nonce.to_vec(),
        pcr_mask: PcrMask::from_bits(pcr_mask),
    }
}

fn error_code(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

fn testbed() -> Testbed {
    Testbed::new(ServerLimits::default(), 512)
}

#[test]
fn hello_challenge_and_activation() {
    let mut net = testbed();
    let mut client = net.connect();
    net.attest(&mut client, &[0x11; 32]);
    let activated = net.exchange(
        &mut client,
        &Request::ActivateCredential {
            credential_blob: vec![0xcb, 1, 2],
            encrypted_secret: vec![0x5a ^ 7, 0x5a ^ 8],
        },
    );
    assert_eq!(
        activated,
        Response::CredentialActivated { secret: vec![7, 8] }
    );
    // The same connection keeps serving challenges.
    net.attest(&mut client, &[0x22; 20]);
    assert_eq!(net.backend.quote_calls, 2);
    assert_eq!(net.server.stats().requests, 5);
}

#[test]
fn concurrent_clients_get_their_own_answers() {
    let mut net = testbed();
    let mut clients: Vec<Client> = (0..5).map(|_| net.connect()).collect();
    for client in &clients {
        net.send_request(client, &hello());
    }
    for client in &mut clients {
        assert!(matches!(net.response(client), Response::Hello(_)));
    }
    for (i, client) in clients.iter().enumerate() {
        net.send_request(client, &challenge(&[i as u8; 16], 1 << i));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let expected =
            DeterministicBackend::evidence(&[i as u8; 16], PcrMask::from_bits(1 << i), 512);
        assert_eq!(net.response(client), Response::Evidence(expected));
    }
    assert_eq!(net.server.active_connections(), 5);
}

#[test]
fn request_before_hello_is_refused_but_connection_stays() {
    let mut net = testbed();
    let mut client = net.connect();
    let refused = net.exchange(&mut client, &challenge(&[1; 8], 0xff));
    assert_eq!(error_code(&refused), Some(ErrorCode::NoHello));
    assert_eq!(net.backend.quote_calls, 0);
    net.attest(&mut client, &[1; 8]);
}

#[test]
fn invalid_challenges_are_bad_requests() {
    let mut net = testbed();
    let mut client = net.connect();
    net.exchange(&mut client, &hello());
    let too_long = vec![0; MAX_NONCE_LEN + 1];
    for request in [
        challenge(&too_long, 0xff),
        challenge(&[1], 0),
        challenge(&[1], 1 << 24),
        Request::ActivateCredential {
            credential_blob: vec![],
            encrypted_secret: vec![1],
        },
    ] {
        let answer = net.exchange(&mut client, &request);
        assert_eq!(
            error_code(&answer),
            Some(ErrorCode::BadRequest),
            "{request:?}"
        );
    }
    assert_eq!(net.backend.quote_calls, 0);
    // A maximal nonce and all 24 PCRs are fine.
    let answer = net.exchange(&mut client, &challenge(&[9; MAX_NONCE_LEN], 0x00ff_ffff));
    assert!(matches!(answer, Response::Evidence(e) if e.pcrs.len() == 24));
}

#[test]
fn other_protocol_versions_are_refused() {
    let mut net = testbed();
    let mut client = net.connect();
    let answer = net.exchange(
        &mut client,
        &Request::Hello {
            version: PROTOCOL_VERSION + 1,
        },
    );
    assert_eq!(error_code(&answer), Some(ErrorCode::UnsupportedVersion));
    // Not a session yet.
    let answer = net.exchange(&mut client, &challenge(&[1], 1));
    assert_eq!(error_code(&answer), Some(ErrorCode::NoHello));
}

#[test]
fn tpm_failures_are_reported_without_closing() {
    let mut net = testbed();
    let mut client = net.connect();
    net.exchange(&mut client, &hello());
    net.backend.fail_with = Some("TPM_RC_RETRY".into());
    let answer = net.exchange(&mut client, &challenge(&[1; 8], 0xff));
    assert_eq!(
        answer,
        Response::Error {
            code: ErrorCode::Tpm,
            detail: "TPM_RC_RETRY".into()
        }
    );
    net.backend.fail_with = None;
    net.attest(&mut client, &[2; 8]);
}

/// Sends `garbage`, expects one error frame with `code`, then the close;
/// a second client connected all along must be unaffected.
fn misbehaving_client_is_closed(garbage: &[u8], code: ErrorCode) {
    let mut net = testbed();
    let mut good = net.connect();
    net.exchange(&mut good, &hello());
    let mut bad = net.connect();
    net.send(&bad, garbage);
    let answer = net.response(&mut bad);
    assert_eq!(error_code(&answer), Some(code), "{answer:?}");
    net.wait_closed(&mut bad);
    assert!(bad.responses.is_empty(), "nothing after the error frame");
    // The other connection did not notice.
    net.attest(&mut good, &[3; 32]);
    // And new clients are served.
    let mut fresh = net.connect();
    net.attest(&mut fresh, &[4; 32]);
}

#[test]
fn four_gib_length_prefix_closes_only_that_connection() {
    misbehaving_client_is_closed(&[0xff, 0xff, 0xff, 0xff, 0, 1, 2, 3], ErrorCode::TooLarge);
}

#[test]
fn malformed_body_closes_only_that_connection() {
    // A complete frame whose body is not a Request (variant 0x7f).
    misbehaving_client_is_closed(&[0, 0, 0, 3, 0x7f, 0, 0], ErrorCode::Malformed);
}

#[test]
fn random_bytes_close_only_that_connection() {
    // Deterministic pseudo-random bytes; the first four make a length
    // prefix above the 4 KiB request limit.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut garbage: Vec<u8> = (0..3000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    garbage[0] = 0x3c;
    misbehaving_client_is_closed(&garbage, ErrorCode::TooLarge);
}

#[test]
fn random_bytes_within_the_size_limit_are_malformed() {
    let mut garbage = vec![0, 0, 0x0f, 0xa0];
    garbage.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80));
    misbehaving_client_is_closed(&garbage, ErrorCode::Malformed);
}

#[test]
fn truncated_frame_times_out() {
    let limits = ServerLimits::default();
    let mut net = testbed();
    let mut client = net.connect();
    net.exchange(&mut client, &hello());
    let frame = wire::encode_frame(&challenge(&[5; 32], 0xff)).unwrap();
    net.send(&client, &frame[..frame.len() - 3]);
    let sent_at = net.now;
    // Nothing happens before the idle timeout...
    net.steps(limits.idle_timeout_ms as usize / 2);
    net.drain(&mut client);
    assert!(client.responses.is_empty());
    assert!(!net.closed_by_server(&client));
    // ...then the connection gets Error{Timeout} and is closed.
    let answer = net.response(&mut client);
    assert_eq!(error_code(&answer), Some(ErrorCode::Timeout));
    assert!(net.now - sent_at >= limits.idle_timeout_ms / 2);
    net.wait_closed(&mut client);
    assert_eq!(net.backend.quote_calls, 0);
    assert_eq!(net.server.stats().timeouts, 1);
}

#[test]
fn silent_client_times_out() {
    let mut net = testbed();
    let mut client = net.connect();
    let answer = net.response(&mut client);
    assert_eq!(error_code(&answer), Some(ErrorCode::Timeout));
    assert!(net.now >= ServerLimits::default().idle_timeout_ms);
    net.wait_closed(&mut client);
    // Its socket listens again.
    let mut next = net.connect();
    net.attest(&mut next, &[6; 32]);
}

#[test]
fn two_hundred_stalled_connections_do_not_lock_out_a_verifier() {
    let mut net = testbed();
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let client = net.open();
        // Let the handshake finish (or be refused) before the next one.
        net.steps(3);
        stalled.push(client);
    }
    net.steps(10);
    let limits = ServerLimits::default();
    let held = limits.connections - limits.min_listening;
    let connected = stalled
        .iter()
        .filter(|c| net.socket(c).state() == State::Established)
        .count();
    // The pool is full of stallers, and no more: every other one was told
    // by a RST that the server dropped it (evicted, or refused).
    assert_eq!(connected, held);
    let reset = stalled
        .iter()
        .filter(|c| net.socket(c).state() == State::Closed)
        .count();
    assert_eq!(reset, 200 - held);
    // Each of those was accepted, then evicted (none refused).
    assert!(
        net.server.stats().evictions >= (200 - held) as u64,
        "{:?}",
        net.server.stats()
    );
    // Well inside the idle timeout, a real verifier is still served.
    assert!(net.now < ServerLimits::default().idle_timeout_ms);
    let mut verifier = net.connect();
    net.attest(&mut verifier, &[7; 32]);
}

#[test]
fn stalled_connections_opened_at_once_do_not_lock_out_a_verifier() {
    let mut net = testbed();
    // All SYNs in one burst: most find no listening socket and are refused.
    let stalled: Vec<Client> = (0..200).map(|_| net.open()).collect();
    net.steps(50);
    assert!(stalled.len() == 200);
    let mut verifier = net.connect();
    net.attest(&mut verifier, &[8; 32]);
}

#[test]
fn large_evidence_is_written_across_many_polls() {
    let limits = ServerLimits::default();
    let event_log_len = 200 * 1024;
    let mut net = Testbed::new(limits, event_log_len);
    let mut client = net.connect();
    net.exchange(&mut client, &hello());
    // Another client meanwhile is not held up by the big answer.
    let mut other = net.connect();
    net.send_request(&client, &challenge(&[9; 32], 0xff));
    let other_hello = net.exchange(&mut other, &hello());
    assert!(matches!(other_hello, Response::Hello(_)));
    let evidence = net.response(&mut client);
    let expected = DeterministicBackend::evidence(&[9; 32], PcrMask::FIRMWARE, event_log_len);
    let frame_len = wire::encode_frame(&Response::Evidence(expected.clone()))
        .unwrap()
        .len();
    assert!(
        frame_len > 6 * limits.tx_buffer_len,
        "must span many send buffers"
    );
    assert_eq!(evidence, Response::Evidence(expected));
}

#[test]
fn slow_reader_of_a_large_answer_is_eventually_dropped() {
    let limits = ServerLimits::default();
    let mut net = Testbed::new(limits, 200 * 1024);
    let client = net.connect();
    net.send_request(&client, &hello());
    net.steps(20);
    // Ask for 200 KiB and never read: both windows fill up and stay full.
    net.send_request(&client, &challenge(&[1; 32], 0xff));
    net.steps(limits.idle_timeout_ms as usize + 100);
    assert!(net.closed_by_server(&client));
    assert_eq!(net.server.stats().timeouts, 1);
    // Meanwhile and afterwards, others are served.
    let mut next = net.connect();
    net.attest(&mut next, &[2; 32]);
}

#[test]
fn pipelined_requests_then_half_close_are_all_answered() {
    let mut net = testbed();
    let mut client = net.connect();
    let mut bytes = wire::encode_frame(&hello()).unwrap();
    bytes.extend(wire::encode_frame(&challenge(&[1; 4], 1)).unwrap());
    bytes.extend(wire::encode_frame(&challenge(&[2; 4], 2)).unwrap());
    net.send(&client, &bytes);
    net.socket(&client).close();
    let answers: Vec<Response> = (0..3).map(|_| net.response(&mut client)).collect();
    assert!(matches!(answers[0], Response::Hello(_)));
    assert_eq!(
        answers[1],
        Response::Evidence(DeterministicBackend::evidence(
            &[1; 4],
            PcrMask::from_bits(1),
            512
        ))
    );
    assert_eq!(
        answers[2],
        Response::Evidence(DeterministicBackend::evidence(
            &[2; 4],
            PcrMask::from_bits(2),
            512
        ))
    );
    net.wait_closed(&mut client);
}

#[test]
fn client_close_frees_the_socket_for_the_next() {
    let limits = ServerLimits {
        connections: 2,
        ..ServerLimits::default()
    };
    let mut net = Testbed::new(limits, 64);
    for round in 0..6u8 {
        let mut client = net.connect();
        net.attest(&mut client, &[round; 8]);
        net.socket(&client).close();
        net.steps(50);
    }
    // Every connection closed normally: nothing had to be evicted.
    assert_eq!(net.server.stats().evictions, 0);
    assert_eq!(net.server.stats().accepted, 6);
}

/// Verifiers attesting one node at once that the default pool must serve
/// without refusing any connection or evicting one that waits for an
/// answer (issue 6).
const SIMULTANEOUS_VERIFIERS: usize = 64;

#[test]
fn default_pool_fits_the_a_vm_heap() {
    // The A-VM's heap is capped at 32 MiB (less with little RAM); the
    // pool's buffers take at most an eighth of it, and each socket holds
    // a whole request frame.
    let limits = ServerLimits::default();
    assert!(limits.buffer_memory() <= 4 << 20, "{limits:?}");
    assert!(limits.rx_buffer_len >= wire::FRAME_HEADER_LEN + wire::MAX_REQUEST_LEN);
    assert!(limits.connections - limits.min_listening >= SIMULTANEOUS_VERIFIERS);
    assert!(limits.connections <= crate::server::MAX_CONNECTIONS);
}

#[test]
fn sixty_four_verifiers_connecting_at_once_are_all_served() {
    let mut net = testbed();
    // Every SYN in one burst, before the server polls: each needs a socket
    // that is already listening (smoltcp has no backlog; a SYN that finds
    // no listening socket gets a RST).
    let mut clients: Vec<Client> = (0..SIMULTANEOUS_VERIFIERS).map(|_| net.open()).collect();
    net.steps(20);
    let established = clients
        .iter()
        .filter(|c| net.socket(c).state() == State::Established)
        .count();
    assert_eq!(
        established,
        SIMULTANEOUS_VERIFIERS,
        "{:?}",
        net.server.stats()
    );
    // All of them hold their connection while the others are answered.
    for client in &clients {
        net.send_request(client, &hello());
    }
    for client in &mut clients {
        assert!(matches!(net.response(client), Response::Hello(_)));
    }
    for (i, client) in clients.iter().enumerate() {
        net.send_request(client, &challenge(&(i as u32).to_be_bytes(), 0xff));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let expected =
            DeterministicBackend::evidence(&(i as u32).to_be_bytes(), PcrMask::FIRMWARE, 512);
        assert_eq!(net.response(client), Response::Evidence(expected));
    }
    let stats = net.server.stats();
    assert_eq!(stats.accepted, SIMULTANEOUS_VERIFIERS as u64);
    assert_eq!(stats.evictions, 0);
    assert_eq!(net.server.active_connections(), SIMULTANEOUS_VERIFIERS);
}

/// One verifier of [`verifiers_attest_over_and_over`].
struct Verifier {
    id: u8,
    /// The connection of the current attestation.
    client: Client,
    hello_sent: bool,
    /// The Hello of this connection was answered.
    hello_answered: bool,
    challenge_sent: bool,
    /// Attestations that got their evidence.
    attested: usize,
}

/// `verifiers` verifiers that each attest `rounds` times, a new connection
/// per attestation (what `avm-verifier attest` does), all at the same
/// time: they connect one per millisecond, and in each round none sends
/// its Challenge before every one has its Hello answer, so all of them hold
/// a connection at once. After its evidence a verifier closes the
/// connection and opens the next at once, while the others' close.
/// Panics if the server ends a connection before its evidence was out.
/// Returns the most connections the server held at once.
fn verifiers_attest_over_and_over(net: &mut Testbed, verifiers: usize, rounds: usize) -> usize {
    let mut all: Vec<Verifier> = Vec::new();
    let mut most_active = 0;
    for _ in 0..MAX_STEPS {
        if all.len() < verifiers {
            let client = net.open();
            all.push(Verifier {
                id: all.len() as u8,
                client,
                hello_sent: false,
                hello_answered: false,
                challenge_sent: false,
                attested: 0,
            });
        }
        // The round everyone has reached with a Hello answered.
        let barrier = if all.len() < verifiers {
            0
        } else {
            all.iter()
                .map(|v| v.attested + usize::from(v.hello_answered))
                .min()
                .unwrap_or(0)
        };
        for verifier in all.iter_mut().filter(|v| v.attested < rounds) {
            let nonce = [verifier.id, verifier.attested as u8, 0x5e, 0x1f];
            let socket = net
                .client_stack
                .sockets_mut()
                .get_mut::<tcp::Socket>(verifier.client.handle);
            assert!(
                !matches!(
                    socket.state(),
                    State::Closed | State::TimeWait | State::CloseWait
                ),
                "attestation {} of verifier {} ended by the server in {:?} ({:?})",
                verifier.attested,
                verifier.id,
                socket.state(),
                net.server.stats()
            );
            if !verifier.hello_sent && socket.may_send() {
                let frame = wire::encode_frame(&hello()).unwrap();
                assert_eq!(socket.send_slice(&frame), Ok(frame.len()));
                verifier.hello_sent = true;
            }
            if verifier.hello_answered && !verifier.challenge_sent && barrier > verifier.attested {
                let frame = wire::encode_frame(&challenge(&nonce, 0xff)).unwrap();
                assert_eq!(
                    net.socket(&verifier.client).send_slice(&frame),
                    Ok(frame.len())
                );
                verifier.challenge_sent = true;
            }
            net.drain(&mut verifier.client);
            let Some(response) = verifier.client.responses.pop() else {
                continue;
            };
            if !verifier.hello_answered {
                assert!(matches!(response, Response::Hello(_)), "{response:?}");
                verifier.hello_answered = true;
                continue;
            }
            let expected = DeterministicBackend::evidence(&nonce, PcrMask::FIRMWARE, 512);
            assert_eq!(response, Response::Evidence(expected));
            verifier.attested += 1;
            // Done with this connection (its socket finishes the close on
            // its own); the next attestation connects anew.
            net.socket(&verifier.client).close();
            if verifier.attested < rounds {
                verifier.client = net.open();
                verifier.hello_sent = false;
                verifier.hello_answered = false;
                verifier.challenge_sent = false;
            }
        }
        if all.len() == verifiers && all.iter().all(|v| v.attested == rounds) {
            return most_active;
        }
        net.step();
        most_active = most_active.max(net.server.active_connections());
    }
    panic!(
        "verifiers not done after {MAX_STEPS} ms: {:?}",
        net.server.stats()
    );
}

#[test]
fn sixty_four_verifiers_attesting_over_and_over_all_get_their_evidence() {
    let mut net = testbed();
    let rounds = 5;
    let most_active = verifiers_attest_over_and_over(&mut net, SIMULTANEOUS_VERIFIERS, rounds);
    assert!(most_active >= SIMULTANEOUS_VERIFIERS, "{most_active}");
    let stats = net.server.stats();
    let attestations = (SIMULTANEOUS_VERIFIERS * rounds) as u64;
    assert_eq!(stats.accepted, attestations);
    assert_eq!(stats.requests, attestations * 2);
    // When all 64 reconnect at once while their previous connections are
    // closing, the server makes room by evicting closing connections (their
    // answers are out); any other would have failed the run above.
    println!("{stats:?}");
}

fn subscribe(keepalive_ms: u32) -> Request {
    Request::Subscribe {
        version: wire::PUSH_VERSION,
        keepalive_ms,
    }
}

fn pushed(index: u32) -> wire::PushedEvent {
    wire::PushedEvent {
        index,
        pcr: 12,
        name: std::format!("monvm:event:{index}:violation:sys_call_table:slot 0"),
        uptime_ms: 0,
    }
}

impl Testbed {
    /// Publishes `event` and sends it at once (as the A-VM's main loop does).
    fn publish(&mut self, event: &wire::PushedEvent) -> usize {
        let delivered = self.server.publish(&mut self.server_stack, event, self.now);
        self.server_stack.poll(self.now);
        delivered
    }
}

#[test]
fn subscribers_get_events_pushed_within_milliseconds_and_keepalives() {
    let mut net = testbed();
    let mut sub = net.connect();
    // Subscribing before Hello is refused like any request.
    assert_eq!(
        error_code(&net.exchange(&mut sub, &subscribe(1000))),
        Some(ErrorCode::NoHello)
    );
    net.exchange(&mut sub, &hello());
    let Response::Subscribed(subscription) = net.exchange(&mut sub, &subscribe(5)) else {
        panic!("not subscribed");
    };
    // Clamped to the shortest period allowed.
    assert_eq!(subscription.keepalive_ms, wire::MIN_KEEPALIVE_MS);
    assert_eq!(subscription.version, wire::PUSH_VERSION);
    let mut plain = net.connect();
    net.exchange(&mut plain, &hello());

    // Quiet first (no stack timer pending, no delayed ACK to ride on),
    // then an event: over the simulated link it is there within a few
    // polls, although the server side only polls when it has work.
    net.steps(100);
    assert_eq!(net.publish(&pushed(7)), 1);
    let start = net.now;
    let event = net.response(&mut sub);
    assert_eq!(event, Response::Event(pushed(7)));
    assert!(net.now - start < 5, "{} ms", net.now - start);

    // Keep-alives every period while nothing happens, and the connection
    // is never timed out for idleness.
    net.steps(net.server.limits().idle_timeout_ms as usize + 500);
    net.drain(&mut sub);
    let keepalives = sub
        .responses
        .iter()
        .filter(|r| matches!(r, Response::KeepAlive(_)))
        .count();
    assert!(keepalives >= 40, "{keepalives} keep-alives");
    assert!(!net.closed_by_server(&sub));
    // The unsubscribed connection got nothing pushed and timed out.
    net.drain(&mut plain);
    assert!(plain.responses.iter().all(|r| !r.is_push()));
    assert!(net.closed_by_server(&plain));
    // A subscriber still gets answers to its requests, in order.
    sub.responses.clear();
    net.send_request(&sub, &challenge(&[3; 32], 0xff));
    loop {
        match net.response(&mut sub) {
            Response::KeepAlive(_) => continue,
            Response::Evidence(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_subscriber_that_stops_reading_is_dropped_and_others_keep_their_events() {
    let limits = ServerLimits {
        max_push_backlog: 4096,
        ..ServerLimits::default()
    };
    let mut net = Testbed::new(limits, 512);
    let mut stalled = net.connect();
    net.exchange(&mut stalled, &hello());
    net.exchange(&mut stalled, &subscribe(1000));
    let mut live = net.connect();
    net.exchange(&mut live, &hello());
    net.exchange(&mut live, &subscribe(1000));
    // The stalled client never reads again: its receive window (64 KiB)
    // and then the server's send buffer fill, then the backlog.
    let mut index = 0;
    for _ in 0..2_000 {
        index += 1;
        net.publish(&pushed(index));
        net.step();
        net.drain(&mut live);
        if net.server.stats().dropped_subscribers > 0 {
            break;
        }
    }
    assert_eq!(net.server.stats().dropped_subscribers, 1);
    assert_eq!(net.server.subscribers(), 1);
    net.steps(50);
    net.drain(&mut live);
    let events: Vec<u32> = live
        .responses
        .iter()
        .filter_map(|r| match r {
            Response::Event(e) => Some(e.index),
            _ => None,
        })
        .collect();
    // The live subscriber got every event, in order.
    assert_eq!(events, (1..=index).collect::<Vec<_>>());
    assert!(net.closed_by_server(&stalled));
}

#[test]
fn subscriber_slots_are_bounded() {
    let limits = ServerLimits {
        max_subscribers: 2,
        ..ServerLimits::default()
    };
    let mut net = Testbed::new(limits, 512);
    let mut clients: Vec<Client> = (0..3).map(|_| net.connect()).collect();
    let mut answers = Vec::new();
    for client in clients.iter_mut() {
        net.exchange(client, &hello());
        answers.push(net.exchange(client, &subscribe(1000)));
    }
    assert!(matches!(answers[0], Response::Subscribed(_)));
    assert!(matches!(answers[1], Response::Subscribed(_)));
    assert_eq!(error_code(&answers[2]), Some(ErrorCode::Busy));
    // Subscribing again on a subscribed connection is not a new slot.
    assert!(matches!(
        net.exchange(&mut clients[0], &subscribe(2000)),
        Response::Subscribed(_)
    ));
    assert_eq!(net.server.subscribers(), 2);
    // Once one leaves, the slot is free again.
    net.socket(&clients[1]).abort();
    net.steps(50);
    assert_eq!(net.server.subscribers(), 1);
    let third = &mut clients[2];
    loop {
        match net.exchange(third, &subscribe(1000)) {
            Response::Subscribed(_) => break,
            Response::KeepAlive(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A flood of challenges on many connections at once: one poll of the
/// server answers at most `requests_per_round` of them (each may be a TPM
/// quote, in the A-VM's one loop between its checks), and the next poll
/// starts with the first connection it could not serve, so a verifier
/// behind the flooders is answered within one turn of the pool.
#[test]
fn a_flood_of_challenges_is_answered_a_round_at_a_time_in_turn() {
    const FLOODERS: usize = 39;
    const PIPELINED: usize = 8;
    let mut net = testbed();
    let limits = net.server.limits();
    let per_round = limits.requests_per_round;
    let mut clients: Vec<Client> = (0..=FLOODERS).map(|_| net.connect()).collect();
    for client in &clients {
        net.send_request(client, &hello());
    }
    for client in &mut clients {
        assert!(matches!(net.response(client), Response::Hello(_)));
    }
    // Every challenge is on its way before the server polls again: the
    // flooders' PIPELINED each, then the verifier's one, on the connection
    // opened last.
    for (i, client) in clients.iter().enumerate() {
        let count = if i < FLOODERS { PIPELINED } else { 1 };
        for k in 0..count {
            let frame = wire::encode_frame(&challenge(&[i as u8, k as u8], 0xff)).unwrap();
            assert_eq!(net.socket(client).send_slice(&frame), Ok(frame.len()));
        }
    }
    let total = (FLOODERS * PIPELINED + 1) as u64;
    let start = net.server.stats().requests;
    let (mut polls, mut most, mut verifier_answered) = (0usize, 0u64, None);
    for _ in 0..MAX_STEPS {
        net.client_stack.poll(net.now);
        if net.server.needs_poll(&net.server_stack, net.now) {
            net.server_stack.poll(net.now);
            let before = net.server.stats().requests;
            net.server
                .poll(&mut net.server_stack, &mut net.backend, net.now);
            let handled = net.server.stats().requests - before;
            if handled > 0 {
                polls += 1;
            }
            most = most.max(handled);
            net.server_stack.poll(net.now);
        }
        net.now += 1;
        let verifier = clients.last_mut().expect("a verifier");
        net.drain(verifier);
        if verifier_answered.is_none() && !verifier.responses.is_empty() {
            verifier_answered = Some(polls);
        }
        if net.server.stats().requests - start == total {
            break;
        }
    }
    assert_eq!(net.server.stats().requests - start, total, "all answered");
    assert_eq!(most, per_round as u64, "no poll answered more than a round");
    // One turn of the pool: each poll serves at least
    // per_round / requests_per_poll connections.
    let turn = (FLOODERS + 1).div_ceil(per_round / limits.requests_per_poll);
    let verifier_answered = verifier_answered.expect("the verifier was answered");
    assert!(
        verifier_answered <= turn + 1,
        "the verifier waited {verifier_answered} polls (a turn is {turn})"
    );
    let verifier = clients.last_mut().expect("a verifier");
    assert_eq!(
        verifier.responses.remove(0),
        Response::Evidence(DeterministicBackend::evidence(
            &[FLOODERS as u8, 0],
            PcrMask::FIRMWARE,
            512
        ))
    );
}
