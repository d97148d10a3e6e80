//! A response cache snapshot file, and a well-framed one around arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| inferpool_agent::cache::fuzzing::cache_snapshot(data));
