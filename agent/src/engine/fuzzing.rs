//! What the fuzz targets (fuzz/) and their corpus replays (tests/fuzz_corpus.rs) run on
//! the engine's parsers: each must read or refuse hostile input, never panic.

use super::gguf::GgufHeader;
use super::tokenizer::ModelTokenizer;

/// The fuzz target `gguf_header` (fuzz/) and its corpus replay (tests/fuzz_corpus.rs):
/// a hostile header is read or refused, never a panic, and so is what the engine reads
/// from its metadata (every accessor on every key, the tokenizer).
#[doc(hidden)]
pub fn gguf_header(data: &[u8]) {
    let Ok(header) = GgufHeader::parse(data, "fuzz input") else {
        return;
    };
    for key in header.content.metadata.keys() {
        let _ = header.string(key);
        let _ = header.strings(key);
        let _ = header.integers(key);
        let _ = header.f32(key);
        let _ = header.u32(key);
    }
    let _ = ModelTokenizer::from_gguf(&header);
}
