//! Replays the kept fuzz corpus (fuzz/corpus/openai_request) through the fuzz target's
//! own check, so that every input the fuzzer found interesting stays checked on stable.

use std::path::PathBuf;

#[test]
fn openai_request_corpus_replays() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/openai_request");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus too small: {}", files.len());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        eprintln!("{}", file.display());
        inferpool_protocol::fuzzing::openai_request(&data);
    }
}
