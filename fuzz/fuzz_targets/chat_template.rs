//! Arbitrary text as a chat template: compiled and rendered within bounds.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| inferpool_agent::engine::chat::fuzz_template(data));
