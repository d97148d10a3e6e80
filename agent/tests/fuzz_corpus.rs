//! Replays the kept fuzz corpora (fuzz/corpus/gguf_header, chat_template, cache_snapshot)
//! through the fuzz targets' own checks, so that every input the fuzzer found
//! interesting stays checked on stable.

use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "{target} corpus too small: {}",
        files.len()
    );
    for file in files {
        eprintln!("{}", file.display());
        check(&std::fs::read(&file).expect("a corpus file"));
    }
}

#[test]
fn gguf_header_corpus_replays() {
    replay("gguf_header", inferpool_agent::engine::fuzzing::gguf_header);
}

#[test]
fn chat_template_corpus_replays() {
    replay(
        "chat_template",
        inferpool_agent::engine::chat::fuzz_template,
    );
}

#[test]
fn cache_snapshot_corpus_replays() {
    replay(
        "cache_snapshot",
        inferpool_agent::cache::fuzzing::cache_snapshot,
    );
}
