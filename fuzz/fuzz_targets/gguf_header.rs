//! A GGUF header and the metadata the engine reads from it, from arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| inferpool_agent::engine::fuzzing::gguf_header(data));
