//! `avm-verifier monitor ADDR...`: keeps attesting nodes and acts when one
//! turns untrusted.
//!
//! Per node, two threads feed the main loop over a channel:
//! - a **subscriber** holds a connection subscribed to the node's pushed
//!   events (`Request::Subscribe`, docs/protocol.md), reconnecting with
//!   backoff; every event (and every new subscription) asks for a
//!   re-attestation at once. A node whose A-VM predates the push protocol
//!   is attested on the interval, and subscribing is still retried.
//! - an **attester** runs the same attestation as `attest`
//!   ([`commands::attest_report`]: verdict in the history, incremental log
//!   fetch) whenever the main loop asks: at start, on every event, and
//!   every `--interval`.
//!
//! The main loop owns each node's [`NodeState`] (pure, unit-tested): the
//! verdict, when it was last quoted, the events, the detection latency
//! (from an event's arrival to the verdict of the attestation it caused),
//! and whether the revocation action ran. Trust rests on verdicts only: a
//! node whose last verdict is older than `--interval` plus `--timeout`
//! (failed attestations and keep-alives do not count: neither proves
//! anything, and keep-alives are not authenticated) turns untrusted
//! (`node-unresponsive`: fail closed). So does one without a verdict
//! whose quote proves the first event it pushed within `--timeout` of it:
//! a node that announces a violation and then stalls its quotes is not
//! left trusted for the rest of the interval. Events are not
//! authenticated, but that only makes a node untrusted sooner, never
//! trusted. With `--once`, a failed attestation makes the node untrusted
//! at once. A stored verdict is history, never trust: a resumed node
//! is trusted only after a verdict of this process. When a node turns
//! untrusted, the revocation action (a command and/or a webhook) runs once;
//! it runs again only after the node was trusted in between. Everything is
//! kept in the state database (`monitor_nodes`, `monitor_events`,
//! `revocations`), so a restarted monitor resumes with its history and
//! never repeats a revocation it started.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use avm_attest::wire::{ErrorCode, KeepAlive, PushedEvent, Response};
use serde_json::json;

use crate::client::{ClientError, NodeClient};
use crate::commands::{self, AttestOptions, CommandError, Context, EXIT_OK, EXIT_UNTRUSTED};
use crate::report::{Report, VerdictKind};
use crate::sanitize::escape_control;
use crate::store::{MonitorEvent, MonitorNode, Store, now};

/// Reason code of a node that stopped answering within the timeout.
pub const NODE_UNRESPONSIVE: &str = "node-unresponsive";

/// Events kept per node within [`EVENT_WINDOW`]; beyond that a node that
/// floods events (a compromised one may) gets them counted, not stored:
/// each still asks for an attestation, which is what decides.
pub const MAX_EVENTS_PER_WINDOW: u32 = 200;
pub const EVENT_WINDOW: Duration = Duration::from_secs(10);

/// Longest a revocation command may run before it is killed.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// How long the main loop waits for a message before its periodic work.
const TICK: Duration = Duration::from_millis(100);
/// How long the subscriber waits for a push frame before checking `stop`.
const PUSH_WAIT: Duration = Duration::from_millis(500);
/// Backoff of the subscriber between connection attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest backoff after `Error{Malformed}` to Subscribe (an A-VM without
/// push, or anyone on the path pretending so).
const MAX_UNSUPPORTED_BACKOFF: Duration = Duration::from_secs(30);
/// First retry after a failed attestation (doubling up to `--interval`).
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// How long a finished monitor waits for revocation actions still running.
const EXIT_GRACE: Duration = Duration::from_secs(15);

/// Options of `monitor`.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    pub addrs: Vec<String>,
    /// Re-attestation period without events.
    pub interval: Duration,
    /// The exchange deadline (`--timeout`): how late a due attestation
    /// may be (no verdict for `interval` plus this long is untrusted,
    /// [`Self::quote_deadline`]), and how long a pushed event may wait
    /// for its verdict.
    pub liveness_timeout: Duration,
    pub keepalive_ms: u32,
    /// One JSON object per line per state change.
    pub json: bool,
    /// Shell command run once when a node turns untrusted.
    pub on_untrusted: Option<String>,
    /// URL POSTed a JSON description once when a node turns untrusted.
    pub webhook: Option<String>,
    /// Attest each node once (no subscription), act, exit.
    pub once: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
    pub policy: Option<PathBuf>,
}

impl MonitorOptions {
    /// The longest a node may go without a verdict. The next attestation
    /// is due `interval` after the last one started and then has the
    /// exchange deadline (`--timeout`) to finish; counting only from the
    /// timeout would turn a healthy node untrusted between two quotes
    /// whenever the interval is longer.
    pub fn quote_deadline(&self) -> Duration {
        self.interval.saturating_add(self.liveness_timeout)
    }
}

/// When a failed attestation is tried again (the `failures`-th in a row):
/// sooner than the interval, so that one failure alone does not run the
/// node into [`MonitorOptions::quote_deadline`].
pub fn retry_delay(failures: u32, interval: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(interval)
}

/// When the subscriber tries to subscribe again after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resubscribe {
    backoff: Duration,
    /// The node subscribed before (in this process): it speaks push.
    subscribed: bool,
}

impl Default for Resubscribe {
    fn default() -> Self {
        Self {
            backoff: FIRST_BACKOFF,
            subscribed: false,
        }
    }
}

impl Resubscribe {
    pub fn subscribed(&mut self) {
        self.backoff = FIRST_BACKOFF;
        self.subscribed = true;
    }

    /// A failed attempt (`malformed`: the node answered `Error{Malformed}`):
    /// what to show and how long to wait.
    ///
    /// An A-VM without push answers Subscribe with `Error{Malformed}`, but
    /// so can anyone on the path (frames are not authenticated), and
    /// nothing else tells the two apart. Giving up would let one forged
    /// answer cut detection down to the interval, so this never gives up:
    /// it only waits longer (at most [`MAX_UNSUPPORTED_BACKOFF`]) to spare
    /// an old A-VM. A node that subscribed before is not an old A-VM.
    pub fn failed(&mut self, malformed: bool, why: String) -> (Push, Duration) {
        let (push, max) = if malformed && !self.subscribed {
            (Push::Unsupported, MAX_UNSUPPORTED_BACKOFF)
        } else {
            (Push::Lost(why), MAX_BACKOFF)
        };
        let wait = self.backoff.min(max);
        self.backoff = (self.backoff * 2).min(max);
        (push, wait)
    }
}

/// A node's verdict as the monitor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not attested yet (and nothing stored).
    Unknown,
    Trusted,
    Untrusted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Trusted => "trusted",
            Status::Untrusted => "untrusted",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "trusted" => Status::Trusted,
            "untrusted" => Status::Untrusted,
            _ => Status::Unknown,
        }
    }
}

/// The subscription of a node, for the status table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    Connecting,
    Subscribed,
    /// The node answered Subscribe with `Error{Malformed}` (an A-VM
    /// without push, or a forged answer): interval, retried with backoff.
    Unsupported,
    Lost(String),
    /// `--once`: no subscription.
    Off,
}

impl Push {
    fn describe(&self) -> String {
        match self {
            Push::Connecting => "connecting".into(),
            Push::Subscribed => "subscribed".into(),
            Push::Unsupported => "unsupported".into(),
            Push::Lost(why) => format!("lost: {why}"),
            Push::Off => "off".into(),
        }
    }
}

/// What a change of a node's state calls for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict or its reasons changed; the previous verdict.
    pub changed_from: Option<Status>,
    /// The node just turned untrusted and its revocation has not run.
    pub revoke: bool,
}

/// One monitored node: the pure status logic.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub addr: String,
    pub status: Status,
    pub reasons: Vec<String>,
    /// Unix seconds when `status` began.
    pub since: i64,
    /// The revocation ran (or started) for the current untrusted period.
    pub revoked: bool,
    /// When the last attestation of this process finished with a
    /// verdict. A trusted verdict comes only from a verified quote of a
    /// fresh nonce and an untrusted one makes the node untrusted, so while
    /// the node is trusted this is when its trust was last proven.
    pub last_quote: Option<Instant>,
    /// When this process started watching the node: the deadline counts
    /// from here until the first verdict.
    pub watched_since: Instant,
    /// Events in the history (across restarts).
    pub events: u64,
    /// The name of the last event pushed.
    pub last_event: Option<String>,
    /// Detection latency of the last event: arrival to verdict.
    pub last_latency: Option<Duration>,
    /// Events whose verdict is still to come: (history id, arrival).
    pub pending_events: Vec<(i64, Instant)>,
    pub push: Push,
    pub last_error: Option<String>,
    /// Start of the current event window and the events kept in it.
    pub window: (Instant, u32),
    /// Events counted but not kept (over [`MAX_EVENTS_PER_WINDOW`]).
    pub suppressed: u64,
    /// Records of the measurement log the last verdict's quote proved
    /// (an event with a lower log index is covered by that verdict).
    pub proven_records: Option<usize>,
    /// The first event pushed that no verdict's quote has proven yet: (its
    /// record index in the log, arrival). Later ones do not move it, so a
    /// stream of events cannot put its verdict off.
    pub unanswered_event: Option<(u32, Instant)>,
    /// Which deadline made the node `node-unresponsive` (for the
    /// operator; until the next verdict).
    pub unresponsive_detail: Option<String>,
}

impl NodeState {
    /// A node as the history left it (`stored`), watched from `now` on.
    /// A stored untrusted verdict is kept (with whether it was revoked: a
    /// restart never revokes twice); a stored trusted one is not: trust
    /// needs a verdict of this process.
    pub fn resume(addr: &str, stored: Option<&MonitorNode>, events: u64, now: Instant) -> Self {
        let (status, reasons, since, revoked) = match stored {
            Some(node) if Status::parse(&node.verdict) == Status::Untrusted => {
                let status = Status::Untrusted;
                (
                    status,
                    node.reasons.clone(),
                    node.since,
                    node.revoked_at.is_some(),
                )
            }
            _ => (Status::Unknown, Vec::new(), 0, false),
        };
        Self {
            addr: addr.into(),
            status,
            reasons,
            since,
            revoked,
            last_quote: None,
            watched_since: now,
            events,
            last_event: None,
            last_latency: None,
            pending_events: Vec::new(),
            push: Push::Connecting,
            last_error: None,
            window: (now, 0),
            suppressed: 0,
            proven_records: None,
            unanswered_event: None,
            unresponsive_detail: None,
        }
    }

    /// Whether an event arriving now is kept in the history (at most
    /// [`MAX_EVENTS_PER_WINDOW`] per [`EVENT_WINDOW`]); one that is not is
    /// counted in `suppressed`.
    pub fn admit_event(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window.0) >= EVENT_WINDOW {
            self.window = (now, 0);
        }
        if self.window.1 >= MAX_EVENTS_PER_WINDOW {
            self.suppressed += 1;
            return false;
        }
        self.window.1 += 1;
        true
    }

    fn set(&mut self, status: Status, reasons: Vec<String>, unix: i64) -> Outcome {
        let from = self.status;
        let changed = status != from || reasons != self.reasons;
        if status != from {
            self.since = unix;
        }
        if status == Status::Trusted {
            self.revoked = false;
        }
        let revoke = status == Status::Untrusted && !self.revoked;
        if revoke {
            self.revoked = true;
        }
        self.status = status;
        self.reasons = reasons;
        Outcome {
            changed_from: changed.then_some(from),
            revoke,
        }
    }

    /// The verdict of a finished attestation (the only thing that keeps a
    /// node within its deadline). Returns the detection latency if events
    /// were waiting for it.
    pub fn verdict(
        &mut self,
        trusted: bool,
        reasons: Vec<String>,
        now: Instant,
        unix: i64,
    ) -> (Outcome, Option<Duration>) {
        self.last_quote = Some(now);
        self.last_error = None;
        // Only a quote that proves the event's record answers it: one
        // already under way when the event came may not cover it.
        if self
            .unanswered_event
            .is_some_and(|(record, _)| self.proves(record))
        {
            self.unanswered_event = None;
        }
        self.unresponsive_detail = None;
        let latency = self
            .pending_events
            .iter()
            .map(|(_, at)| now.saturating_duration_since(*at))
            .max();
        if latency.is_some() {
            self.last_latency = latency;
        }
        let status = if trusted {
            Status::Trusted
        } else {
            Status::Untrusted
        };
        (self.set(status, reasons, unix), latency)
    }

    /// Trusted on a verdict of this process.
    pub fn trusted(&self) -> bool {
        self.status == Status::Trusted && self.last_quote.is_some()
    }

    /// An event arrived (`id` in the history).
    pub fn event(&mut self, id: i64, name: &str, now: Instant) {
        self.events += 1;
        self.last_event = Some(name.into());
        self.pending_events.push((id, now));
    }

    /// An event frame arrived at `at` (kept in the history or not): the
    /// node now owes, within the exchange deadline, a verdict whose quote
    /// proves the event's record. Only the first unanswered event counts;
    /// one the last verdict already proved needs nothing more.
    pub fn await_verdict(&mut self, record: u32, at: Instant) {
        if self.proves(record) {
            return;
        }
        self.unanswered_event.get_or_insert((record, at));
    }

    /// Whether the last verdict's quote proved log record `record`.
    fn proves(&self, record: u32) -> bool {
        self.proven_records
            .is_some_and(|proven| usize::try_from(record).is_ok_and(|r| r < proven))
    }

    /// Fails closed: no verdict for `deadline`
    /// ([`MonitorOptions::quote_deadline`]) since the last one, or since
    /// watching began, makes the node untrusted; so does no verdict proving
    /// it for `event_deadline` (`--timeout`) since the first unanswered
    /// event ([`Self::await_verdict`]). Keep-alives, events and failed attestations never keep a node
    /// trusted: none of them proves anything. An event, though not
    /// authenticated either, may only bring the deadline closer.
    pub fn check_liveness(
        &mut self,
        now: Instant,
        deadline: Duration,
        event_deadline: Duration,
        unix: i64,
    ) -> Outcome {
        // How long past `limit` since `from` it is (None: not past it).
        let overdue = |from: Instant, limit: Duration| {
            now.saturating_duration_since(from)
                .checked_sub(limit)
                .filter(|late| !late.is_zero())
        };
        let since = self.last_quote.unwrap_or(self.watched_since);
        let quote_late = overdue(since, deadline);
        let event_late = self
            .unanswered_event
            .and_then(|(record, at)| Some((record, overdue(at, event_deadline)?)));
        // The deadline that ran out first explains it.
        let detail = match (quote_late, event_late) {
            (None, None) => return Outcome::default(),
            (quote, Some((record, late))) if quote.is_none_or(|q| late >= q) => format!(
                "no attestation finished within {} of the event pushed for record {record}",
                seconds(event_deadline)
            ),
            _ => format!("no attestation finished for {}", seconds(deadline)),
        };
        self.unresponsive(detail, unix)
    }

    /// Untrusted for want of a verdict (`detail` says which), keeping the
    /// reasons it already had (once: until the next verdict).
    pub fn unresponsive(&mut self, detail: String, unix: i64) -> Outcome {
        if self.reasons.iter().any(|r| r == NODE_UNRESPONSIVE) {
            return Outcome::default();
        }
        self.unresponsive_detail = Some(detail);
        let mut reasons = match self.status {
            Status::Untrusted => self.reasons.clone(),
            _ => Vec::new(),
        };
        reasons.push(NODE_UNRESPONSIVE.into());
        self.set(Status::Untrusted, reasons, unix)
    }
}

/// What the threads tell the main loop.
enum Message {
    Attested {
        node: usize,
        result: Result<Box<Report>, String>,
    },
    Event {
        node: usize,
        event: PushedEvent,
        at: Instant,
    },
    KeepAlive {
        node: usize,
        keepalive: KeepAlive,
    },
    Push {
        node: usize,
        push: Push,
    },
    RevocationDone {
        id: i64,
        action: &'static str,
        addr: String,
        outcome: String,
    },
}

/// A webhook target: plain HTTP (a local relay, for example).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Webhook {
    /// Parses `http://HOST[:PORT][/PATH]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("webhook {url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!("webhook {url:?}: bad path"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("webhook {url:?}: bad port"))?,
            ),
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty()
            || host
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ' || b == b'@')
        {
            return Err(format!("webhook {url:?}: bad host"));
        }
        Ok(Self {
            host: host.into(),
            port,
            path: path.into(),
        })
    }

    /// POSTs `body` (JSON) and returns the HTTP status code.
    pub fn post(&self, body: &str, timeout: Duration) -> Result<u16, String> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("resolve: {e}"))?
            .next()
            .ok_or("resolve: no address")?;
        let mut stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: avm-verifier\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.path,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        // Only the status line matters; read a bounded head of the answer.
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while head.len() < 4096 && !head.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("receive: {e}")),
            }
        }
        parse_status_line(&head).ok_or_else(|| "no HTTP status line in the answer".into())
    }
}

/// The status code of an HTTP/1.x status line.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    (code.len() == 3).then_some(())?;
    code.parse().ok()
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn err(e: impl std::fmt::Display) -> CommandError {
    CommandError(e.to_string())
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// A deadline for the operator: `40 s`, `0.06 s`.
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

/// The codes of a report's reasons.
fn codes(report: &Report) -> Vec<String> {
    report.reasons.iter().map(|r| r.code.clone()).collect()
}

/// The attester: one attestation per request from the main loop.
fn spawn_attester(
    node: usize,
    addr: String,
    ctx: Context,
    policy: Option<PathBuf>,
    tx: Sender<Message>,
) -> Sender<()> {
    let (requests, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let opts = AttestOptions {
            policy,
            ..AttestOptions::default()
        };
        while rx.recv().is_ok() {
            let result = commands::attest_report(&ctx, &addr, &opts)
                .map(Box::new)
                .map_err(|e| e.0);
            if tx.send(Message::Attested { node, result }).is_err() {
                return;
            }
        }
    });
    requests
}

/// The subscriber: holds a subscribed connection, reconnecting with backoff.
fn spawn_subscriber(
    node: usize,
    addr: String,
    timeout: Duration,
    keepalive_ms: u32,
    tx: Sender<Message>,
    stop: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        let mut resubscribe = Resubscribe::default();
        let mut last: Option<Push> = None;
        let mut report = |push: Push| {
            if last.as_ref() != Some(&push) {
                last = Some(push.clone());
                tx.send(Message::Push { node, push }).is_ok()
            } else {
                true
            }
        };
        while !stop.load(Ordering::Relaxed) {
            let subscribed = NodeClient::connect(&addr, timeout).and_then(|mut client| {
                client.hello()?;
                client.subscribe(keepalive_ms)?;
                Ok(client)
            });
            let mut client = match subscribed {
                Ok(client) => client,
                Err(e) => {
                    let malformed = matches!(
                        e,
                        ClientError::Remote {
                            code: ErrorCode::Malformed,
                            ..
                        }
                    );
                    let (push, wait) = resubscribe.failed(malformed, e.to_string());
                    if !report(push) {
                        return;
                    }
                    sleep_unless(&stop, wait);
                    continue;
                }
            };
            resubscribe.subscribed();
            if !report(Push::Subscribed) {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                let message = match client.next_push(PUSH_WAIT) {
                    Ok(None) => continue,
                    Ok(Some(Response::Event(event))) => Message::Event {
                        node,
                        event,
                        at: Instant::now(),
                    },
                    Ok(Some(Response::KeepAlive(keepalive))) => {
                        Message::KeepAlive { node, keepalive }
                    }
                    Ok(Some(_)) => continue,
                    Err(e) => {
                        if !report(Push::Lost(e.to_string())) {
                            return;
                        }
                        break;
                    }
                };
                if tx.send(message).is_err() {
                    return;
                }
            }
        }
    });
}

/// Sleeps `wait`, or less if `stop` is set meanwhile.
fn sleep_unless(stop: &AtomicBool, wait: Duration) {
    let end = Instant::now() + wait;
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(PUSH_WAIT));
    }
}

/// Runs the revocation action(s) for a node in the background.
fn spawn_revocation(
    store: &mut Store,
    state: &NodeState,
    opts: &MonitorOptions,
    webhook: Option<&Webhook>,
    tx: &Sender<Message>,
) -> Result<usize, CommandError> {
    let mut started = 0;
    let description = json!({
        "addr": state.addr,
        "verdict": state.status.as_str(),
        "reasons": state.reasons,
        "since": state.since,
        "events": state.events,
        "last_event": state.last_event,
        "detail": state.unresponsive_detail,
    })
    .to_string();
    if let Some(command) = &opts.on_untrusted {
        let id = store
            .start_revocation(&state.addr, &state.reasons, "command")
            .map_err(err)?;
        started += 1;
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .env("AVM_NODE_ADDR", &state.addr)
            .env("AVM_NODE_VERDICT", state.status.as_str())
            .env("AVM_NODE_REASONS", state.reasons.join(" "))
            .env("AVM_NODE_SINCE", state.since.to_string())
            .env("AVM_NODE_EVENTS", state.events.to_string())
            .env(
                "AVM_NODE_EVENT",
                escape_control(state.last_event.as_deref().unwrap_or("")).as_ref(),
            )
            .env("AVM_NODE_JSON", &description)
            .stdin(std::process::Stdio::null())
            // Its own process group: a Ctrl-C at the monitor's terminal
            // does not cut a revocation short.
            .process_group(0);
        let tx = tx.clone();
        let addr = state.addr.clone();
        std::thread::spawn(move || {
            let outcome = run_command(cmd);
            let _ = tx.send(Message::RevocationDone {
                id,
                action: "command",
                addr,
                outcome,
            });
        });
    }
    if let Some(webhook) = webhook {
        let id = store
            .start_revocation(&state.addr, &state.reasons, "webhook")
            .map_err(err)?;
        started += 1;
        let webhook = webhook.clone();
        let tx = tx.clone();
        let addr = state.addr.clone();
        std::thread::spawn(move || {
            let outcome = match webhook.post(&description, Duration::from_secs(10)) {
                Ok(code) => format!("http {code}"),
                Err(e) => format!("error: {e}"),
            };
            let _ = tx.send(Message::RevocationDone {
                id,
                action: "webhook",
                addr,
                outcome,
            });
        });
    }
    Ok(started)
}

fn run_command(mut cmd: std::process::Command) -> String {
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return format!("error: {e}"),
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return match status.code() {
                    Some(code) => format!("exit {code}"),
                    None => "killed by a signal".into(),
                };
            }
            Ok(None) if start.elapsed() < COMMAND_LIMIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return format!("error: still running after {COMMAND_LIMIT:?}, killed");
            }
            Err(e) => return format!("error: {e}"),
        }
    }
}

/// One monitored node in the main loop.
struct Watched {
    state: NodeState,
    attester: Sender<()>,
    in_flight: bool,
    /// An event arrived while an attestation ran: attest again after it.
    again: bool,
    next_attest: Instant,
    attested_once: bool,
    /// Attestations that failed in a row.
    failures: u32,
    /// The node's `KeepAlive.dropped` last seen.
    dropped: u32,
}

/// Where the monitor writes.
struct Output {
    json: bool,
    table: bool,
    last_draw: Option<Instant>,
}

impl Output {
    fn line(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else if !self.table {
            println!("{}", escape_control(&human()));
        }
        let _ = std::io::stdout().flush();
    }

    fn draw(&mut self, nodes: &[Watched], now: Instant, force: bool) {
        if !self.table
            || (!force
                && self
                    .last_draw
                    .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)))
        {
            return;
        }
        self.last_draw = Some(now);
        let mut out = String::from("\x1b[H\x1b[2J");
        out.push_str(&format!(
            "{:<22} {:<10} {:>11} {:>7} {:>10}  {:<12} {:<8}\n",
            "NODE", "VERDICT", "LAST QUOTE", "EVENTS", "LATENCY", "PUSH", "REVOKED"
        ));
        for node in nodes {
            let s = &node.state;
            let quote = s.last_quote.map_or("-".into(), |t| {
                format!("{:.1} s", now.saturating_duration_since(t).as_secs_f64())
            });
            let latency = s
                .last_latency
                .map_or("-".into(), |l| format!("{:.1} ms", ms(l)));
            out.push_str(&format!(
                "{:<22} {:<10} {:>11} {:>7} {:>10}  {:<12} {:<8}\n",
                escape_control(&s.addr),
                s.status.as_str(),
                quote,
                if s.suppressed > 0 {
                    format!("{}+{}", s.events, s.suppressed)
                } else {
                    s.events.to_string()
                },
                latency,
                escape_control(&s.push.describe())
                    .chars()
                    .take(12)
                    .collect::<String>(),
                if s.revoked { "yes" } else { "no" }
            ));
            if !s.reasons.is_empty() {
                out.push_str(&format!("    reasons: {}\n", s.reasons.join(", ")));
            }
            if let Some(detail) = &s.unresponsive_detail {
                out.push_str(&format!("    unresponsive: {detail}\n"));
            }
            if let Some(e) = &s.last_error {
                out.push_str(&format!("    last error: {}\n", escape_control(e)));
            }
        }
        out.push_str("\nCtrl-C to stop; the history is kept in the state database.\n");
        print!("{out}");
        let _ = std::io::stdout().flush();
    }
}

/// `monitor ADDR...`; exit code 0 if every node is trusted at the end.
pub fn monitor(ctx: &Context, opts: &MonitorOptions) -> Result<u8, CommandError> {
    if opts.addrs.is_empty() {
        return Err(CommandError("monitor: name at least one node".into()));
    }
    let webhook = opts
        .webhook
        .as_deref()
        .map(Webhook::parse)
        .transpose()
        .map_err(err)?;
    let start = Instant::now();
    let end = opts.duration.map(|d| start + d);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Message>();
    let mut session = Session {
        store: Store::open(&ctx.state_dir).map_err(err)?,
        opts,
        webhook,
        tx,
        output: Output {
            json: opts.json,
            table: !opts.json && !opts.once && std::io::stdout().is_terminal(),
            last_draw: None,
        },
        running_revocations: 0,
    };
    let mut nodes = Vec::new();
    let mut seen = HashMap::new();
    for addr in &opts.addrs {
        if seen.insert(addr.clone(), ()).is_some() {
            continue;
        }
        let stored = session.store.monitor_node(addr).map_err(err)?;
        let events = session.store.monitor_events(addr).map_err(err)?;
        let revocations = session.store.revocations(addr).map_err(err)?;
        let mut state = NodeState::resume(addr, stored.as_ref(), events.len() as u64, start);
        // What the history says (not what counts: see `NodeState::resume`).
        let stored_verdict = stored
            .as_ref()
            .map_or(Status::Unknown, |n| Status::parse(&n.verdict));
        state.last_event = events.last().map(|e| e.name.clone());
        if opts.once {
            state.push = Push::Off;
        }
        session.output.line(
            json!({
                "type": "resumed",
                "addr": addr,
                "at_ms": unix_ms(),
                "verdict": stored_verdict.as_str(),
                "reasons": state.reasons,
                "events": state.events,
                "revocations": revocations.len(),
                "revoked": state.revoked,
            }),
            || {
                format!(
                    "{addr}: {} in the history, {} events, {} revocations",
                    stored_verdict.as_str(),
                    state.events,
                    revocations.len()
                )
            },
        );
        let index = nodes.len();
        let attester = spawn_attester(
            index,
            addr.clone(),
            ctx.clone(),
            opts.policy.clone(),
            session.tx.clone(),
        );
        if !opts.once {
            spawn_subscriber(
                index,
                addr.clone(),
                ctx.timeout,
                opts.keepalive_ms,
                session.tx.clone(),
                stop.clone(),
            );
        }
        nodes.push(Watched {
            state,
            attester,
            in_flight: false,
            again: false,
            next_attest: start,
            attested_once: false,
            failures: 0,
            dropped: 0,
        });
    }
    loop {
        let now = Instant::now();
        for node in nodes.iter_mut() {
            let due = node.again || (now >= node.next_attest && !(opts.once && node.attested_once));
            if !node.in_flight && due && node.attester.send(()).is_ok() {
                node.in_flight = true;
                node.again = false;
                node.next_attest = now + opts.interval;
            }
        }
        match rx.recv_timeout(TICK) {
            Ok(message) => session.handle(message, &mut nodes)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if !opts.once {
            session.check_liveness(&mut nodes, now)?;
        }
        session.output.draw(&nodes, now, false);
        if opts.once && nodes.iter().all(|n| n.attested_once && !n.in_flight) {
            break;
        }
        if end.is_some_and(|end| now >= end) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    // Let revocations that already started record their outcome.
    let grace = Instant::now() + EXIT_GRACE;
    while session.running_revocations > 0 && Instant::now() < grace {
        match rx.recv_timeout(TICK) {
            Ok(message @ Message::RevocationDone { .. }) => session.handle(message, &mut nodes)?,
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    session.output.draw(&nodes, Instant::now(), true);
    let all_trusted = nodes.iter().all(|n| n.state.trusted());
    Ok(if all_trusted { EXIT_OK } else { EXIT_UNTRUSTED })
}

fn now_unix() -> i64 {
    now()
}

/// What the main loop shares with every change it handles: the state
/// database, the options, where revocations report back, the output and
/// how many revocations still run.
struct Session<'a> {
    store: Store,
    opts: &'a MonitorOptions,
    webhook: Option<Webhook>,
    tx: Sender<Message>,
    output: Output,
    running_revocations: usize,
}

impl Session<'_> {
    /// Turns every node without a verdict for the deadline (or since an
    /// unanswered event for the exchange deadline) untrusted.
    fn check_liveness(&mut self, nodes: &mut [Watched], now: Instant) -> Result<(), CommandError> {
        let deadline = self.opts.quote_deadline();
        let event_deadline = self.opts.liveness_timeout;
        for index in 0..nodes.len() {
            let state = &mut nodes[index].state;
            let outcome = state.check_liveness(now, deadline, event_deadline, now_unix());
            self.apply(index, outcome, None, nodes)?;
        }
        Ok(())
    }

    fn handle(&mut self, message: Message, nodes: &mut [Watched]) -> Result<(), CommandError> {
        let now = Instant::now();
        match message {
            Message::Attested {
                node: index,
                result,
            } => {
                let Some(node) = nodes.get_mut(index) else {
                    return Ok(());
                };
                node.in_flight = false;
                node.attested_once = true;
                match result {
                    Ok(report) => {
                        node.failures = 0;
                        node.state.proven_records =
                            report.measurement_log.as_ref().map(|l| l.proven_records);
                        let trusted = report.verdict == VerdictKind::Trusted;
                        let (outcome, latency) =
                            node.state.verdict(trusted, codes(&report), now, now_unix());
                        let ids: Vec<i64> = node
                            .state
                            .pending_events
                            .drain(..)
                            .map(|(id, _)| id)
                            .collect();
                        if let Some(latency) = latency {
                            self.store
                                .set_event_latency(&ids, ms(latency))
                                .map_err(err)?;
                        }
                        self.apply(index, outcome, latency, nodes)?;
                    }
                    Err(e) => {
                        // Proves nothing: the node's status stays as it
                        // was and its deadline keeps running.
                        let addr = node.state.addr.clone();
                        node.state.last_error = Some(e.clone());
                        node.failures = node.failures.saturating_add(1);
                        let retry = now + retry_delay(node.failures, self.opts.interval);
                        node.next_attest = node.next_attest.min(retry);
                        self.output.line(
                        json!({"type": "attest-failed", "addr": addr, "at_ms": unix_ms(), "error": e}),
                        || format!("{addr}: attestation failed: {e}"),
                    );
                        if self.opts.once {
                            // No second chance and no stored verdict to
                            // fall back on: untrusted.
                            let outcome = node
                                .state
                                .unresponsive("its attestation failed".into(), now_unix());
                            self.apply(index, outcome, None, nodes)?;
                        }
                    }
                }
            }
            Message::Event {
                node: index,
                event,
                at,
            } => {
                let Some(node) = nodes.get_mut(index) else {
                    return Ok(());
                };
                node.again = true;
                // Even an event not kept in the history owes a verdict.
                node.state.await_verdict(event.index, at);
                if !node.state.admit_event(at) {
                    return Ok(());
                }
                // Shown before it is kept: the line is the news (its
                // reader may act on it at once), keeping it is a
                // synchronous SQLite commit, about a millisecond here.
                let at_ms = unix_ms();
                let addr = &node.state.addr;
                self.output.line(
                    json!({
                        "type": "event",
                        "addr": addr,
                        "at_ms": at_ms,
                        "index": event.index,
                        "pcr": event.pcr,
                        "name": event.name,
                        "events": node.state.events + 1,
                        "held_us": u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX),
                    }),
                    || format!("{addr}: event {} (record {})", event.name, event.index),
                );
                let id = self
                    .store
                    .record_monitor_event(&MonitorEvent {
                        addr: node.state.addr.clone(),
                        at_ms,
                        record_index: event.index,
                        pcr: event.pcr,
                        name: event.name.clone(),
                        latency_ms: None,
                    })
                    .map_err(err)?;
                node.state.event(id, &event.name, at);
                node.again = true;
            }
            Message::KeepAlive {
                node: index,
                keepalive,
            } => {
                // Not a sign of life: anyone on the path can send one.
                if let Some(node) = nodes.get_mut(index) {
                    // Grown: events the node could not push, look at its
                    // log. Gone back: the A-VM restarted (the count is
                    // since boot), attest it and count from there.
                    if keepalive.dropped != node.dropped {
                        // Grown: the dropped events are in the log before
                        // `log_total`, which a verdict must now prove as
                        // soon as one pushed would have to.
                        if keepalive.dropped > node.dropped {
                            let last = keepalive.log_total.saturating_sub(1);
                            node.state.await_verdict(last, now);
                        }
                        node.dropped = keepalive.dropped;
                        node.again = true;
                    }
                }
            }
            Message::Push { node: index, push } => {
                if let Some(node) = nodes.get_mut(index) {
                    if push == Push::Subscribed {
                        // Events from before this subscription are only
                        // in the log (docs/protocol.md: subscribe, then
                        // attest).
                        node.again = true;
                    }
                    let addr = &node.state.addr;
                    let text = push.describe();
                    self.output.line(
                        json!({"type": "push", "addr": addr, "at_ms": unix_ms(), "state": text}),
                        || format!("{addr}: push {text}"),
                    );
                    node.state.push = push;
                }
            }
            Message::RevocationDone {
                id,
                action,
                addr,
                outcome,
            } => {
                self.running_revocations = self.running_revocations.saturating_sub(1);
                self.store.finish_revocation(id, &outcome).map_err(err)?;
                self.output.line(
                json!({"type": "revocation", "addr": addr, "at_ms": unix_ms(), "action": action, "outcome": outcome}),
                || format!("{addr}: revocation {action}: {outcome}"),
            );
            }
        }
        Ok(())
    }

    /// Records and reports a state change, and starts the revocation.
    fn apply(
        &mut self,
        index: usize,
        outcome: Outcome,
        latency: Option<Duration>,
        nodes: &mut [Watched],
    ) -> Result<(), CommandError> {
        let Some(node) = nodes.get_mut(index) else {
            return Ok(());
        };
        let state = &node.state;
        if outcome.changed_from.is_none() && !outcome.revoke {
            return Ok(());
        }
        // Recorded before the revocation runs: a restart never repeats it.
        self.store
            .set_monitor_node(&MonitorNode {
                addr: state.addr.clone(),
                verdict: state.status.as_str().into(),
                reasons: state.reasons.clone(),
                since: state.since,
                revoked_at: state.revoked.then(now_unix),
            })
            .map_err(err)?;
        if let Some(from) = outcome.changed_from {
            let addr = &state.addr;
            self.output.line(
                json!({
                    "type": "verdict",
                    "addr": addr,
                    "at_ms": unix_ms(),
                    "verdict": state.status.as_str(),
                    "previous": from.as_str(),
                    "reasons": state.reasons,
                    "events": state.events,
                    "proven_records": state.proven_records,
                    "latency_ms": latency.map(ms),
                    "detail": state.unresponsive_detail,
                }),
                || {
                    let latency = latency.map_or(String::new(), |l| {
                        format!(", {:.1} ms after the event", ms(l))
                    });
                    let reasons = if state.reasons.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", state.reasons.join(", "))
                    };
                    let detail = state
                        .unresponsive_detail
                        .as_ref()
                        .map_or(String::new(), |d| format!(": {d}"));
                    format!(
                        "{addr}: {} -> {}{reasons}{detail}{latency}",
                        from.as_str(),
                        state.status.as_str(),
                    )
                },
            );
        }
        if outcome.revoke {
            self.running_revocations += spawn_revocation(
                &mut self.store,
                state,
                self.opts,
                self.webhook.as_ref(),
                &self.tx,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn turning_untrusted_revokes_once_until_trusted_again() {
        let start = t0();
        let mut node = NodeState::resume("a:1", None, 0, start);
        let (o, _) = node.verdict(true, vec![], start, 1);
        assert_eq!(o.changed_from, Some(Status::Unknown));
        assert!(!o.revoke);
        let (o, _) = node.verdict(true, vec![], start, 2);
        assert_eq!(o, Outcome::default());
        let bad = vec!["monvm-syscall-table-modified".to_string()];
        let (o, _) = node.verdict(false, bad.clone(), start, 3);
        assert_eq!(o.changed_from, Some(Status::Trusted));
        assert!(o.revoke);
        assert_eq!(node.since, 3);
        // Still untrusted, more reasons: a change, no second revocation.
        let mut more = bad.clone();
        more.push("monvm-idt-modified".into());
        let (o, _) = node.verdict(false, more, start, 4);
        assert_eq!(o.changed_from, Some(Status::Untrusted));
        assert!(!o.revoke);
        assert_eq!(node.since, 3);
        // Trusted again (re-enrolled, say), then untrusted: revoked again.
        node.verdict(true, vec![], start, 5);
        let (o, _) = node.verdict(false, bad, start, 6);
        assert!(o.revoke);
    }

    #[test]
    fn an_untrusted_first_verdict_revokes() {
        let start = t0();
        let mut node = NodeState::resume("a:1", None, 0, start);
        let (o, _) = node.verdict(false, vec!["unknown-node".into()], start, 1);
        assert!(o.revoke);
    }

    #[test]
    fn a_resumed_node_does_not_revoke_again() {
        let start = t0();
        let stored = MonitorNode {
            addr: "a:1".into(),
            verdict: "untrusted".into(),
            reasons: vec!["monvm-syscall-table-modified".into()],
            since: 10,
            revoked_at: Some(11),
        };
        let mut node = NodeState::resume("a:1", Some(&stored), 4, start);
        assert_eq!(
            (node.status, node.events, node.revoked),
            (Status::Untrusted, 4, true)
        );
        let (o, _) = node.verdict(false, stored.reasons.clone(), start, 20);
        assert_eq!(o, Outcome::default());
        // Stored untrusted but the revocation never started: it runs now.
        let unrevoked = MonitorNode {
            revoked_at: None,
            ..stored
        };
        let mut node = NodeState::resume("a:1", Some(&unrevoked), 4, start);
        let (o, _) = node.verdict(false, unrevoked.reasons.clone(), start, 20);
        assert!(o.revoke);
        assert_eq!(o.changed_from, None);
    }

    #[test]
    fn silence_beyond_the_timeout_is_untrusted_once() {
        let start = t0();
        let timeout = Duration::from_secs(5);
        let mut node = NodeState::resume("a:1", None, 0, start);
        node.verdict(true, vec![], start, 1);
        node.verdict(true, vec![], start + Duration::from_secs(3), 1);
        assert_eq!(
            node.check_liveness(start + Duration::from_secs(8), timeout, timeout, 2),
            Outcome::default()
        );
        let o = node.check_liveness(start + Duration::from_secs(9), timeout, timeout, 3);
        assert_eq!(o.changed_from, Some(Status::Trusted));
        assert!(o.revoke);
        assert_eq!(node.reasons, [NODE_UNRESPONSIVE]);
        // Still silent: nothing more happens.
        let o = node.check_liveness(start + Duration::from_secs(20), timeout, timeout, 4);
        assert_eq!(o, Outcome::default());
        // An untrusted node going silent keeps its reasons, not revoked twice.
        let mut node = NodeState::resume("b:1", None, 0, start);
        node.verdict(false, vec!["monvm-idt-modified".into()], start, 1);
        let o = node.check_liveness(start + Duration::from_secs(6), timeout, timeout, 2);
        assert!(!o.revoke);
        assert_eq!(node.reasons, ["monvm-idt-modified", NODE_UNRESPONSIVE]);
    }

    #[test]
    fn a_node_that_never_answers_is_untrusted_after_the_timeout() {
        let start = t0();
        let mut node = NodeState::resume("a:1", None, 0, start);
        let o = node.check_liveness(
            start + Duration::from_secs(31),
            Duration::from_secs(30),
            Duration::from_secs(30),
            1,
        );
        assert_eq!(o.changed_from, Some(Status::Unknown));
        assert!(o.revoke);
    }

    #[test]
    fn latency_runs_from_the_oldest_event_to_the_verdict() {
        let start = t0();
        let mut node = NodeState::resume("a:1", None, 0, start);
        node.verdict(true, vec![], start, 1);
        node.event(1, "monvm:event:1:violation:idt:gate 3", start);
        node.event(
            2,
            "monvm:event:2:clean:idt",
            start + Duration::from_millis(5),
        );
        assert_eq!(node.events, 2);
        let (_, latency) = node.verdict(
            false,
            vec!["monvm-idt-modified".into()],
            start + Duration::from_millis(40),
            2,
        );
        assert_eq!(latency, Some(Duration::from_millis(40)));
        assert_eq!(node.last_latency, Some(Duration::from_millis(40)));
    }

    #[test]
    fn an_event_flood_is_counted_not_kept() {
        let start = t0();
        let mut node = NodeState::resume("a:1", None, 0, start);
        let kept = (0..MAX_EVENTS_PER_WINDOW + 50)
            .filter(|_| node.admit_event(start))
            .count();
        assert_eq!(kept as u32, MAX_EVENTS_PER_WINDOW);
        assert_eq!(node.suppressed, 50);
        // The next window keeps events again.
        assert!(node.admit_event(start + EVENT_WINDOW));
    }

    fn options(addr: &str) -> MonitorOptions {
        MonitorOptions {
            addrs: vec![addr.into()],
            interval: Duration::from_secs(10),
            liveness_timeout: Duration::from_secs(30),
            keepalive_ms: 1000,
            json: false,
            on_untrusted: None,
            webhook: None,
            once: false,
            duration: None,
            policy: None,
        }
    }

    /// A main loop's session on the state in `dir` (no output).
    fn session<'a>(
        dir: &std::path::Path,
        opts: &'a MonitorOptions,
    ) -> (Session<'a>, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel();
        let session = Session {
            store: Store::open(dir).expect("state"),
            opts,
            webhook: None,
            tx,
            output: Output {
                json: false,
                table: false,
                last_draw: None,
            },
            running_revocations: 0,
        };
        (session, rx)
    }

    fn watched(state: NodeState) -> (Watched, mpsc::Receiver<()>) {
        let (attester, requests) = mpsc::channel();
        let node = Watched {
            state,
            attester,
            in_flight: false,
            again: false,
            next_attest: Instant::now(),
            attested_once: false,
            failures: 0,
            dropped: 0,
        };
        (node, requests)
    }

    fn keepalive(dropped: u32) -> Message {
        keepalive_of_log(dropped, 1)
    }

    /// A keep-alive of node 0 whose log holds `log_total` records.
    fn keepalive_of_log(dropped: u32, log_total: u32) -> Message {
        Message::KeepAlive {
            node: 0,
            keepalive: KeepAlive {
                uptime_ms: 1,
                log_total,
                dropped,
            },
        }
    }

    /// Node 0's violation event for log record 7, arrived at `at`.
    fn idt_violation(at: Instant) -> Message {
        Message::Event {
            node: 0,
            event: PushedEvent {
                index: 7,
                pcr: 12,
                name: "monvm:event:1:violation:idt:gate 3".into(),
                uptime_ms: 1,
            },
            at,
        }
    }

    /// A node attested (trusted) at `t0()`, with the default options'
    /// quote deadline and `--timeout`.
    fn attested_node() -> (NodeState, Instant, Duration, Duration) {
        let opts = options("a:1");
        let start = t0();
        let mut node = NodeState::resume("a:1", None, 0, start);
        node.verdict(true, vec![], start, 1);
        (node, start, opts.quote_deadline(), opts.liveness_timeout)
    }

    /// The review's attack: the subscription stays up (keep-alives, even
    /// an event), every challenge fails (reset, `Busy`, a malformed log
    /// chunk). The node turns untrusted once its last verdict is older
    /// than the deadline, and the revocation is recorded.
    #[test]
    fn keep_alives_do_not_keep_a_node_whose_attestations_fail_trusted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = MonitorOptions {
            interval: Duration::from_millis(60),
            liveness_timeout: Duration::from_millis(60),
            ..options("a:1")
        };
        let (mut session, _rx) = session(dir.path(), &opts);
        let start = Instant::now();
        let mut state = NodeState::resume("a:1", None, 0, start);
        state.verdict(true, vec![], start, 1);
        let (node, _requests) = watched(state);
        let mut nodes = vec![node];
        let violation = idt_violation(start);
        session.handle(violation, &mut nodes).expect("handled");
        while start.elapsed() < 3 * opts.quote_deadline() {
            let failed = Message::Attested {
                node: 0,
                result: Err("the node refused the request (Busy)".into()),
            };
            session.handle(failed, &mut nodes).expect("handled");
            session.handle(keepalive(0), &mut nodes).expect("handled");
            session
                .check_liveness(&mut nodes, Instant::now())
                .expect("checked");
            std::thread::sleep(Duration::from_millis(10));
        }
        let state = &nodes[0].state;
        assert_eq!(
            (state.status, state.revoked),
            (Status::Untrusted, true),
            "{state:?}"
        );
        assert_eq!(state.reasons, [NODE_UNRESPONSIVE]);
        let stored = session.store.monitor_node("a:1").expect("read");
        assert!(
            stored.is_some_and(|n| n.verdict == "untrusted" && n.revoked_at.is_some()),
            "recorded"
        );
    }

    #[test]
    fn the_deadline_counts_from_the_last_verdict_plus_the_interval() {
        // An interval longer than the timeout: no gap between two quotes.
        let opts = MonitorOptions {
            interval: Duration::from_secs(60),
            liveness_timeout: Duration::from_secs(30),
            ..options("a:1")
        };
        let deadline = opts.quote_deadline();
        assert_eq!(deadline, Duration::from_secs(90));
        let start = t0();
        let mut node = NodeState::resume("a:1", None, 0, start);
        node.verdict(true, vec![], start + Duration::from_secs(2), 1);
        let at = |secs| start + Duration::from_secs(secs);
        assert_eq!(
            node.check_liveness(at(92), deadline, opts.liveness_timeout, 2),
            Outcome::default()
        );
        assert!(node.trusted());
        let o = node.check_liveness(at(93), deadline, opts.liveness_timeout, 3);
        assert!(o.revoke);
        assert!(!node.trusted());
        // A failed attestation is tried again well before the deadline.
        assert_eq!(retry_delay(1, opts.interval), Duration::from_secs(1));
        assert_eq!(retry_delay(3, opts.interval), Duration::from_secs(4));
        assert_eq!(retry_delay(u32::MAX, opts.interval), opts.interval);
        assert_eq!(
            retry_delay(1, Duration::from_millis(200)),
            Duration::from_millis(200)
        );
    }

    /// A node that pushes an event and then lets every attestation fail
    /// is untrusted `--timeout` after the event, not `--interval` plus
    /// `--timeout` after its last quote.
    #[test]
    fn an_unanswered_event_is_untrusted_after_the_timeout() {
        let (mut node, start, deadline, timeout) = attested_node();
        let at = |secs| start + Duration::from_secs(secs);
        node.await_verdict(7, at(5));
        assert_eq!(
            node.check_liveness(at(35), deadline, timeout, 2),
            Outcome::default()
        );
        assert!(node.trusted());
        let o = node.check_liveness(at(35) + Duration::from_millis(1), deadline, timeout, 3);
        assert_eq!(o.changed_from, Some(Status::Trusted));
        assert!(o.revoke);
        assert_eq!(node.reasons, [NODE_UNRESPONSIVE]);
        let detail = node.unresponsive_detail.clone().unwrap_or_default();
        assert!(
            detail.contains("within 30 s of the event pushed for record 7"),
            "{detail}"
        );
        // The quote deadline passing too changes nothing: revoked once.
        let o = node.check_liveness(at(41), deadline, timeout, 4);
        assert_eq!(o, Outcome::default());
    }

    #[test]
    fn a_verdict_after_an_event_clears_the_tighter_deadline() {
        let (mut node, start, deadline, timeout) = attested_node();
        let at = |millis| start + Duration::from_millis(millis);
        node.await_verdict(7, at(5_000));
        // A verdict whose quote does not reach record 7 (it was under way
        // when the event came) does not answer it.
        node.proven_records = Some(7);
        node.verdict(true, vec![], at(5_500), 2);
        assert!(node.unanswered_event.is_some());
        node.proven_records = Some(9);
        node.verdict(true, vec![], at(6_000), 2);
        assert_eq!(node.unanswered_event, None);
        // Handled after a verdict that proved it: answered.
        node.await_verdict(8, at(5_800));
        assert_eq!(node.unanswered_event, None);
        for now in [35_001, 46_000] {
            assert_eq!(
                node.check_liveness(at(now), deadline, timeout, 3),
                Outcome::default(),
                "{now} ms"
            );
        }
        assert!(node.trusted());
        // The normal deadline still holds, counted from that verdict.
        let o = node.check_liveness(at(46_001), deadline, timeout, 4);
        assert!(o.revoke);
        assert_eq!(
            node.unresponsive_detail.as_deref(),
            Some("no attestation finished for 40 s")
        );
        // A verdict clears the detail with the deadline.
        node.verdict(true, vec![], at(47_000), 5);
        assert_eq!(node.unresponsive_detail, None);
    }

    #[test]
    fn later_events_do_not_put_off_the_first_ones_deadline() {
        let (mut node, start, deadline, timeout) = attested_node();
        let at = |millis| start + Duration::from_millis(millis);
        for (record, arrival) in [(7, 5_000), (8, 20_000), (9, 34_000)] {
            node.await_verdict(record, at(arrival));
        }
        assert_eq!(
            node.check_liveness(at(35_000), deadline, timeout, 2),
            Outcome::default()
        );
        let o = node.check_liveness(at(35_001), deadline, timeout, 3);
        assert!(o.revoke);
        let detail = node.unresponsive_detail.clone().unwrap_or_default();
        assert!(detail.ends_with("record 7"), "{detail}");
    }

    /// The main loop arms the tighter deadline on an event frame (even
    /// one over the history's window) and acts on it: failed attestations
    /// and keep-alives meanwhile do not help, and the revocation runs once.
    #[test]
    fn a_node_that_stalls_after_an_event_is_untrusted_within_the_timeout() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = MonitorOptions {
            interval: Duration::from_secs(10),
            liveness_timeout: Duration::from_millis(100),
            on_untrusted: Some("true".into()),
            ..options("a:1")
        };
        let (mut session, _rx) = session(dir.path(), &opts);
        let start = Instant::now();
        let mut state = NodeState::resume("a:1", None, 0, start);
        state.verdict(true, vec![], start, 1);
        // The history's window is full: this event is counted, not kept.
        state.window = (start, MAX_EVENTS_PER_WINDOW);
        let (node, _requests) = watched(state);
        let mut nodes = vec![node];
        let violation = idt_violation(Instant::now());
        session.handle(violation, &mut nodes).expect("handled");
        assert_eq!(nodes[0].state.suppressed, 1);
        let mut untrusted_after = None;
        // Until a while after it turned untrusted (a second revocation
        // would show), or long past the tighter deadline.
        let done = |after: Option<Duration>| {
            after.map_or(start.elapsed() > Duration::from_secs(5), |after| {
                start.elapsed() > after + Duration::from_millis(300)
            })
        };
        while !done(untrusted_after) {
            let failed = Message::Attested {
                node: 0,
                result: Err("connection reset".into()),
            };
            session.handle(failed, &mut nodes).expect("handled");
            session.handle(keepalive(0), &mut nodes).expect("handled");
            session
                .check_liveness(&mut nodes, Instant::now())
                .expect("checked");
            if untrusted_after.is_none() && !nodes[0].state.trusted() {
                untrusted_after = Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let after = untrusted_after.expect("turned untrusted");
        // Well before --interval plus --timeout (10.1 s).
        assert!(
            after >= opts.liveness_timeout && after < Duration::from_secs(5),
            "{after:?}"
        );
        let state = &nodes[0].state;
        assert_eq!(state.reasons, [NODE_UNRESPONSIVE]);
        let detail = state.unresponsive_detail.clone().unwrap_or_default();
        assert!(detail.contains("record 7"), "{detail}");
        assert_eq!(session.store.revocations("a:1").expect("read").len(), 1);
    }

    #[test]
    fn a_resumed_trusted_verdict_is_not_trusted_until_attested() {
        let start = t0();
        let stored = MonitorNode {
            addr: "a:1".into(),
            verdict: "trusted".into(),
            reasons: vec![],
            since: 10,
            revoked_at: None,
        };
        let mut node = NodeState::resume("a:1", Some(&stored), 0, start);
        assert_eq!((node.status, node.trusted()), (Status::Unknown, false));
        // Trusted on a verdict of its own.
        let (o, _) = node.verdict(true, vec![], start, 20);
        assert_eq!(o.changed_from, Some(Status::Unknown));
        assert!(node.trusted());
        // Never attested by this process: untrusted after the deadline,
        // and the revocation runs.
        let mut node = NodeState::resume("a:1", Some(&stored), 0, start);
        let o = node.check_liveness(
            start + Duration::from_secs(41),
            Duration::from_secs(40),
            Duration::from_secs(30),
            21,
        );
        assert_eq!(o.changed_from, Some(Status::Unknown));
        assert!(o.revoke);
    }

    #[test]
    fn once_a_failed_attestation_is_untrusted_whatever_the_history_says() {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = "127.0.0.1:9";
        Store::open(dir.path())
            .expect("state")
            .set_monitor_node(&MonitorNode {
                addr: addr.into(),
                verdict: "trusted".into(),
                reasons: vec![],
                since: 1,
                revoked_at: None,
            })
            .expect("stored");
        let ctx = Context {
            state_dir: dir.path().to_path_buf(),
            timeout: Duration::from_secs(1),
            policies: Arc::default(),
        };
        // A policy file that is not there: every attestation fails.
        let opts = MonitorOptions {
            once: true,
            on_untrusted: Some("true".into()),
            policy: Some(dir.path().join("missing.toml")),
            ..options(addr)
        };
        assert_eq!(monitor(&ctx, &opts).expect("ran"), EXIT_UNTRUSTED);
        let store = Store::open(dir.path()).expect("state");
        let node = store.monitor_node(addr).expect("read").expect("kept");
        assert_eq!(
            (node.verdict.as_str(), node.reasons.as_slice()),
            ("untrusted", &[NODE_UNRESPONSIVE.to_string()][..])
        );
        assert_eq!(store.revocations(addr).expect("read").len(), 1);
    }

    #[test]
    fn a_dropped_counter_that_goes_back_is_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = options("a:1");
        let (mut session, _rx) = session(dir.path(), &opts);
        let (node, _requests) = watched(NodeState::resume("a:1", None, 0, t0()));
        let mut nodes = vec![node];
        let mut again = |dropped| {
            session
                .handle(keepalive(dropped), &mut nodes)
                .expect("handled");
            std::mem::take(&mut nodes[0].again)
        };
        assert!(!again(0));
        assert!(again(3));
        assert!(!again(3));
        // The A-VM restarted: its counter starts again from 0.
        assert!(again(1));
        assert!(again(2));
        assert!(!again(2));
    }

    /// Events the node says it could not push owe a verdict as an event
    /// pushed would: one proving the log up to the keep-alive's length.
    #[test]
    fn dropped_events_owe_a_verdict_within_the_timeout() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = options("a:1");
        let (mut session, _rx) = session(dir.path(), &opts);
        let mut state = NodeState::resume("a:1", None, 0, t0());
        state.proven_records = Some(1);
        let (node, _requests) = watched(state);
        let mut nodes = vec![node];
        let dropped = keepalive_of_log;
        // Nothing dropped, or nothing past what is proven: nothing owed.
        session.handle(dropped(0, 9), &mut nodes).expect("handled");
        session.handle(dropped(1, 1), &mut nodes).expect("handled");
        assert_eq!(nodes[0].state.unanswered_event, None);
        session.handle(dropped(2, 9), &mut nodes).expect("handled");
        assert_eq!(nodes[0].state.unanswered_event.map(|(r, _)| r), Some(8));
        // Only a verdict proving record 8 answers it.
        nodes[0].state.proven_records = Some(9);
        nodes[0].state.verdict(true, vec![], Instant::now(), 2);
        assert_eq!(nodes[0].state.unanswered_event, None);
    }

    /// A node (or anyone on the path) that answers `Error{Malformed}`.
    fn refusing_node() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 64];
                let _ = conn.read(&mut buf);
                let refusal = Response::Error {
                    code: ErrorCode::Malformed,
                    detail: "malformed request".into(),
                };
                if let Ok(frame) = avm_attest::wire::encode_frame(&refusal) {
                    let _ = conn.write_all(&frame);
                }
            }
        });
        (addr, connections)
    }

    #[test]
    fn one_malformed_answer_does_not_end_the_subscription_for_good() {
        let (addr, connections) = refusing_node();
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        spawn_subscriber(0, addr, Duration::from_secs(1), 1000, tx, stop.clone());
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Message::Push { push, .. }) => assert_eq!(push, Push::Unsupported),
            _ => panic!("no push state"),
        }
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        let tried = connections.load(Ordering::SeqCst);
        assert!(tried >= 3, "subscribed {tried} times");
    }

    #[test]
    fn resubscribing_backs_off_within_bounds() {
        let mut again = Resubscribe::default();
        let waits: Vec<Duration> = (0..12)
            .map(|_| again.failed(true, String::new()).1)
            .collect();
        assert_eq!(waits[0], FIRST_BACKOFF);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(waits[11], MAX_UNSUPPORTED_BACKOFF);
        assert_eq!(again.failed(true, String::new()).0, Push::Unsupported);
        // Subscribed once: push is spoken, a Malformed answer is a loss.
        again.subscribed();
        let (push, wait) = again.failed(true, "refused".into());
        assert_eq!((push, wait), (Push::Lost("refused".into()), FIRST_BACKOFF));
        let waits: Vec<Duration> = (0..12)
            .map(|_| again.failed(true, String::new()).1)
            .collect();
        assert!(waits.iter().all(|w| *w <= MAX_BACKOFF));
    }

    #[test]
    fn a_new_subscription_asks_for_an_attestation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = options("a:1");
        let (mut session, _rx) = session(dir.path(), &opts);
        let (node, _requests) = watched(NodeState::resume("a:1", None, 0, t0()));
        let mut nodes = vec![node];
        let push = |push| Message::Push { node: 0, push };
        session
            .handle(push(Push::Lost("reset".into())), &mut nodes)
            .expect("handled");
        assert!(!nodes[0].again);
        session
            .handle(push(Push::Subscribed), &mut nodes)
            .expect("handled");
        assert!(nodes[0].again);
    }

    #[test]
    fn webhook_urls() {
        assert_eq!(
            Webhook::parse("http://127.0.0.1:8080/revoke?x=1"),
            Ok(Webhook {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/revoke?x=1".into()
            })
        );
        assert_eq!(
            Webhook::parse("http://localhost").map(|w| (w.port, w.path)),
            Ok((80, "/".into()))
        );
        assert_eq!(
            Webhook::parse("http://[::1]:9/").map(|w| (w.host, w.port)),
            Ok(("::1".into(), 9))
        );
        for bad in [
            "https://a/",
            "ftp://a",
            "http://:80/",
            "http://a:x/",
            "http://a/b c",
            "http://u@a/",
        ] {
            assert!(Webhook::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 500\r\n"), Some(500));
        assert_eq!(parse_status_line(b"SSH-2.0\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 x\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn webhook_posts_json_over_plain_http() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains("}") {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let hook = Webhook::parse(&format!("http://127.0.0.1:{port}/hook")).unwrap();
        assert_eq!(hook.post("{\"a\":1}", Duration::from_secs(5)), Ok(200));
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("Content-Length: 7\r\n"));
        assert!(request.ends_with("\r\n\r\n{\"a\":1}"));
    }
}
