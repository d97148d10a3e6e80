//! Checks run by the fuzz targets in `fuzz/` and, on every file of `fuzz/corpus/`, by the
//! stable test suite (`tests/fuzz_corpus.rs`). Each check panics when a property fails.

use crate::manifest::parse_pools;

/// `inferpool-operator validate` on arbitrary text: it answers without panicking, and a
/// pool it accepts, written back as JSON (one YAML document), is accepted again unchanged.
pub fn pool_spec(data: &[u8]) {
    // `validate` reads files as UTF-8 and refuses anything else before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pools) = parse_pools(text) else {
        return;
    };
    for pool in pools {
        let json = serde_json::to_string(&pool).expect("a pool serialises");
        let again = parse_pools(&json).expect("a valid pool stays valid written back");
        assert_eq!(again.len(), 1);
        assert_eq!(
            serde_json::to_value(&again[0]).ok(),
            serde_json::to_value(&pool).ok(),
            "read back differently"
        );
    }
}
