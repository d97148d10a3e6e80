//! Replays the kept fuzz corpus (fuzz/corpus/pool_spec) through the fuzz target's
//! own check, so that every input the fuzzer found interesting stays checked on stable.

use std::path::PathBuf;

#[test]
fn pool_spec_corpus_replays() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/pool_spec");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "corpus too small: {}", files.len());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        eprintln!("{}", file.display());
        inferpool_operator::fuzzing::pool_spec(&data);
    }
}
