//! Wire frames: a byte stream through the bounded FrameAssembler, each body
//! decoded as a Request (A-VM side) and as a Response (verifier side).
#![no_main]

use avm_attest::wire::{
    FRAME_HEADER_LEN, FrameAssembler, MAX_EVENT_NAME_LEN, MAX_FRAME_LEN, MAX_PUSH_FRAME_LEN,
    MAX_REQUEST_LEN, Request, Response, decode_body, decode_response, encode_frame,
};
use libfuzzer_sys::fuzz_target;

fn drive(data: &[u8], limit: usize) {
    let mut assembler = FrameAssembler::new(limit);
    let mut rest = data;
    // Each round consumes bytes or ends: bounded by the input length.
    for _ in 0..=data.len() {
        let used = assembler.push(rest);
        rest = &rest[used..];
        assert!(assembler.pending() <= FRAME_HEADER_LEN + limit);
        match assembler.next_body() {
            Ok(Some(body)) => {
                if let Ok(request) = decode_body::<Request>(&body) {
                    // What decodes re-encodes into a frame that decodes the same.
                    let frame = encode_frame(&request).expect("re-encode");
                    let again = decode_body::<Request>(&frame[FRAME_HEADER_LEN..]);
                    assert_eq!(again, Ok(request));
                }
                let _ = decode_body::<Response>(&body);
                // The subscriber's parser: what passes is within the push
                // bounds and re-encodes to the same message.
                if let Ok(response) = decode_response(&body) {
                    if let Response::Event(event) = &response {
                        assert!(event.name.len() <= MAX_EVENT_NAME_LEN && event.pcr < 24);
                    }
                    let frame = encode_frame(&response).expect("re-encode");
                    assert_eq!(decode_response(&frame[FRAME_HEADER_LEN..]), Ok(response));
                }
            }
            Ok(None) if used == 0 => break,
            Ok(None) => {}
            Err(_) => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    drive(data, MAX_REQUEST_LEN);
    drive(data, MAX_FRAME_LEN);
    drive(data, MAX_PUSH_FRAME_LEN);
});
