//! The ASA protocol's frame decoder and request parser: arbitrary bytes
//! give a frame, a request or a typed error, never a panic; what parses
//! re-encodes to what parses again (`grasp_asa_api::request::exercise`,
//! also run over mutated golden frames by the crate's tests).
//!
//! `cargo fuzz run request tools/asa-api/fuzz/seeds` from tools/asa-api.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    grasp_asa_api::request::exercise(data);
});
