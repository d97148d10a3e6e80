//! API keys as the gateway reads them from its Secret (a JSON file): each key's id, the
//! SHA-256 of the key (never the key itself), the models it may use and its per-minute
//! limits. A presented key is hashed and compared with every entry in constant time, so
//! neither the keys nor how much of one matched leak through timing.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a key file was refused (the gateway keeps the keys it had).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFileError {
    /// Not the expected JSON.
    #[error("the API key file is not valid: {0}")]
    Invalid(String),
    /// An entry's `sha256` is not 64 hex digits.
    #[error("key {0}: sha256 must be 64 hex digits")]
    BadHash(String),
    /// Two entries share an id (their usage would be counted together).
    #[error("key id {0} appears twice")]
    DuplicateId(String),
    /// Two entries share a key (one's models and limits would be ignored).
    #[error("key {0} has the same sha256 as an earlier key")]
    DuplicateKey(String),
}

/// One entry of the file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    id: String,
    sha256: String,
    #[serde(default)]
    models: Vec<String>,
    requests_per_minute: Option<u32>,
    tokens_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    keys: Vec<Entry>,
}

/// Per-minute limits of one key; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub requests: Option<u32>,
    /// Tokens (prompt estimate plus `max_tokens`) per minute.
    pub tokens: Option<u32>,
}

/// A key the gateway accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Its id: in metrics and logs in place of the key.
    pub id: String,
    hash: [u8; 32],
    /// The models it may use; empty: every model.
    pub models: Vec<String>,
    /// Its limits.
    pub limits: Limits,
}

impl Key {
    /// Whether the key may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }
}

/// Every key of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyTable {
    keys: Vec<Key>,
}

impl KeyTable {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let file: File =
            serde_json::from_str(text).map_err(|e| KeyFileError::Invalid(e.to_string()))?;
        let mut keys: Vec<Key> = Vec::with_capacity(file.keys.len());
        for entry in file.keys {
            if keys.iter().any(|k| k.id == entry.id) {
                return Err(KeyFileError::DuplicateId(entry.id));
            }
            let hash = decode_hash(&entry.sha256).ok_or(KeyFileError::BadHash(entry.id.clone()))?;
            if keys.iter().any(|k| k.hash == hash) {
                return Err(KeyFileError::DuplicateKey(entry.id));
            }
            keys.push(Key {
                id: entry.id,
                hash,
                models: entry.models,
                limits: Limits {
                    requests: entry.requests_per_minute,
                    tokens: entry.tokens_per_minute,
                },
            });
        }
        Ok(Self { keys })
    }

    /// The key whose hash is `presented`'s: every entry is compared, matched or not.
    pub fn find(&self, presented: &str) -> Option<&Key> {
        let hash = hash_key(presented);
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.hash.ct_eq(&hash)) {
                found = Some(key);
            }
        }
        found
    }

    /// The key with id `id`.
    pub fn find_id(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The SHA-256 of `key` (what the file stores: `printf %s "$KEY" | sha256sum`).
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn decode_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// `hash` as lower-case hex (for tests and the docs' examples).
pub fn to_hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &str) -> String {
        format!("{{\"keys\": [{entries}]}}")
    }

    fn entry(id: &str, key: &str, rest: &str) -> String {
        let hash = to_hex(&hash_key(key));
        format!("{{\"id\": \"{id}\", \"sha256\": \"{hash}\"{rest}}}")
    }

    #[test]
    fn a_key_is_found_by_its_hash_with_its_models_and_limits() {
        let text = file(&format!(
            "{}, {}",
            entry(
                "a",
                "sk-alpha",
                ", \"models\": [\"m1\"], \"requestsPerMinute\": 60"
            ),
            entry("b", "sk-beta", ", \"tokensPerMinute\": 1000"),
        ));
        let table = KeyTable::parse(&text).unwrap();
        let a = table.find("sk-alpha").unwrap();
        assert_eq!(a.id, "a");
        assert!(a.allows("m1") && !a.allows("m2"));
        assert_eq!(
            a.limits,
            Limits {
                requests: Some(60),
                tokens: None
            }
        );
        let b = table.find("sk-beta").unwrap();
        assert!(b.allows("anything"), "no models listed: every model");
        assert_eq!(b.limits.tokens, Some(1000));
        assert_eq!(table.find("sk-alph"), None);
        assert_eq!(table.find(""), None);
    }

    #[test]
    fn a_broken_file_is_refused_with_why() {
        assert!(matches!(
            KeyTable::parse("keys: []"),
            Err(KeyFileError::Invalid(_))
        ));
        let short = file("{\"id\": \"a\", \"sha256\": \"abcd\"}");
        assert_eq!(
            KeyTable::parse(&short),
            Err(KeyFileError::BadHash("a".into()))
        );
        let same = file(&format!("{}, {}", entry("a", "x", ""), entry("b", "x", "")));
        assert_eq!(
            KeyTable::parse(&same),
            Err(KeyFileError::DuplicateKey("b".into()))
        );
        let twice = file(&format!("{}, {}", entry("a", "x", ""), entry("a", "y", "")));
        assert_eq!(
            KeyTable::parse(&twice),
            Err(KeyFileError::DuplicateId("a".into()))
        );
        let unknown = file(&entry("a", "x", ", \"rpm\": 5"));
        assert!(matches!(
            KeyTable::parse(&unknown),
            Err(KeyFileError::Invalid(_))
        ));
    }

    #[test]
    fn hashes_are_sha256_as_sha256sum_prints_them() {
        assert_eq!(
            to_hex(&hash_key("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
