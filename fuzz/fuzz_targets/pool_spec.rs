//! `inferpool-operator validate` on arbitrary YAML/JSON (see inferpool_operator::fuzzing).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| inferpool_operator::fuzzing::pool_spec(data));
