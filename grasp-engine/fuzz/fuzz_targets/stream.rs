//! Stream splitter fuzz target: the input is fed in chunks whose sizes come
//! from the first byte; splitting must never panic and every frame must be a
//! single well-formed item within the limit.
#![no_main]

use bytes::BytesMut;
use grasp_engine::wire::{Limits, StreamDecoder, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let limits = Limits { max_message_size: 512, ..Limits::default() };
    let mut dec = StreamDecoder::new(limits);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= 512);
                    Value::from_cbor(frame).expect("a frame is one well-formed item");
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
