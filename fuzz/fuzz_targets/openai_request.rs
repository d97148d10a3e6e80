//! The field-by-field OpenAI request reader against serde's derived one, and validation
//! (see inferpool_protocol::fuzzing).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| inferpool_protocol::fuzzing::openai_request(data));
