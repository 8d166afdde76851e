//! Decoder fuzz target: arbitrary bytes must give a message or a typed error,
//! never a panic, and whatever decodes must re-encode to something that
//! decodes to the same message.
#![no_main]

use bytes::Bytes;
use grasp_engine::wire::{Limits, Message, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let b = Bytes::copy_from_slice(data);
    let _ = Value::from_cbor(b.clone());
    if let Ok(m) = Message::decode(&b) {
        let big = Limits { max_message_size: usize::MAX, ..Limits::default() };
        let again = Message::decode_with(&m.encode(), &big).expect("re-encoded message decodes");
        assert_eq!(again, m);
    }
});
