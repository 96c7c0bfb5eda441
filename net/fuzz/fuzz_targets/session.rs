//! Arbitrary client bytes through one connection's frame handling.
//!
//! The first input byte picks the chunk size the bytes arrive in (TCP may
//! split a stream anywhere). Checks: no panic, the partial-request buffer
//! stays within the request limit, every byte the session sends is a whole
//! frame that decodes as a `Response`, and a closing session takes no input.
//! A subscribed session gets an event and a keep-alive pushed after each
//! chunk (within a 4 KiB backlog): they interleave only as whole frames.
#![no_main]

use avm_attest::wire::{
    self, FRAME_HEADER_LEN, KeepAlive, MAX_FRAME_LEN, MAX_REQUEST_LEN, PushedEvent, Response,
};
use avm_net::Session;
use avm_net::testing::DeterministicBackend;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, mut rest)) = data.split_first() else {
        return;
    };
    let chunk_len = usize::from(split).max(1);
    let mut backend = DeterministicBackend::new(64);
    let mut session = Session::new();
    let mut output = Vec::new();
    // Every iteration consumes input or stops: bounded by the input length.
    for round in 0..=data.len() {
        let chunk = &rest[..rest.len().min(chunk_len)];
        let closing_before = session.is_closing();
        let now_ms = round as u64 * 100;
        session.set_push_context(now_ms, true);
        let used = session.receive(chunk, &mut backend);
        if session.is_subscribed() {
            let event = PushedEvent {
                index: round as u32,
                pcr: 12,
                name: "monvm:event:1:clean:idt".into(),
                uptime_ms: now_ms,
            };
            session.push_event(&event, now_ms, 4096);
            let keepalive = KeepAlive {
                uptime_ms: now_ms,
                log_total: 0,
                dropped: 0,
            };
            session.push_keepalive(keepalive, now_ms + 60_000);
            assert!(session.pending_output().len() <= 4096 + 64);
        }
        assert!(used <= chunk.len());
        if closing_before {
            assert_eq!(used, 0, "a closing session took input");
        }
        assert!(session.partial_request_len() <= FRAME_HEADER_LEN + MAX_REQUEST_LEN);
        output.extend_from_slice(session.pending_output());
        let pending = session.pending_output().len();
        session.consume_output(pending);
        rest = &rest[used..];
        if used == 0 {
            break;
        }
    }
    let mut assembler = wire::FrameAssembler::new(MAX_FRAME_LEN);
    let mut out = &output[..];
    while !out.is_empty() {
        let used = assembler.push(out);
        out = &out[used..];
        let body = assembler
            .next_body()
            .expect("server frames are within the limit")
            .expect("server output is whole frames");
        wire::decode_body::<Response>(&body).expect("server frames decode");
    }
    assert_eq!(assembler.pending(), 0);
});
