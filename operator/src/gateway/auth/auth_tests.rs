use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};

use super::keys::{hash_key, to_hex};
use super::quota::Exceeded;
use super::{Auth, Denied};

fn write_keys(path: &std::path::Path, entries: &[(&str, &str, &str)]) {
    let keys: Vec<String> = entries
        .iter()
        .map(|(id, key, rest)| {
            let hash = to_hex(&hash_key(key));
            format!("{{\"id\": \"{id}\", \"sha256\": \"{hash}\"{rest}}}")
        })
        .collect();
    std::fs::write(path, format!("{{\"keys\": [{}]}}", keys.join(", "))).unwrap();
}

fn with_key(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {key}")).unwrap();
    headers.insert("authorization", value);
    headers
}

/// Identifies the key of `headers` and admits its request.
fn admit(auth: &Auth, headers: &HeaderMap, model: &str, now: Instant) -> Result<String, Denied> {
    let key = auth.identify(headers)?;
    auth.admit(&key, model, 1, now)?;
    Ok(key.id)
}

fn scratch() -> (tempfile_dir::Dir, std::path::PathBuf) {
    let dir = tempfile_dir::Dir::new();
    let path = dir.0.join("keys.json");
    (dir, path)
}

/// A folder removed when dropped (the operator crate has no tempfile dependency).
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let name = format!("inferpool-auth-{}-{n}", std::process::id());
            let path = std::env::temp_dir().join(name);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn no_key_unknown_key_wrong_model_and_over_quota_are_told_apart() {
    let (_dir, path) = scratch();
    let limited = ", \"models\": [\"m1\"], \"requestsPerMinute\": 2";
    write_keys(&path, &[("team-a", "sk-a", limited)]);
    let auth = Auth::load(path).unwrap();
    let now = Instant::now();
    assert_eq!(
        admit(&auth, &HeaderMap::new(), "m1", now),
        Err(Denied::Missing)
    );
    assert_eq!(
        admit(&auth, &with_key("sk-b"), "m1", now),
        Err(Denied::Unknown)
    );
    let model = admit(&auth, &with_key("sk-a"), "m2", now).unwrap_err();
    assert_eq!(
        model,
        Denied::Model {
            key: "team-a".into(),
            model: "m2".into()
        }
    );
    assert_eq!(
        admit(&auth, &with_key("sk-a"), "m1", now).unwrap(),
        "team-a"
    );
    assert_eq!(
        admit(&auth, &with_key("sk-a"), "m1", now).unwrap(),
        "team-a"
    );
    let Err(Denied::OverQuota { key, over }) = admit(&auth, &with_key("sk-a"), "m1", now) else {
        panic!("the third request in a minute of 2 was admitted");
    };
    assert_eq!(
        (key.as_str(), over.exceeded),
        ("team-a", Exceeded::Requests)
    );
    assert_eq!(over.retry_after, Duration::from_secs(30));
    let mut basic = HeaderMap::new();
    basic.insert("authorization", HeaderValue::from_static("Basic sk-a"));
    assert_eq!(admit(&auth, &basic, "m1", now), Err(Denied::Missing));
}

#[test]
fn a_rotated_key_file_takes_effect_on_reload_and_a_broken_one_keeps_the_old() {
    let (_dir, path) = scratch();
    write_keys(&path, &[("team-a", "sk-old", "")]);
    let auth = Auth::load(path.clone()).unwrap();
    let now = Instant::now();
    assert!(admit(&auth, &with_key("sk-old"), "m", now).is_ok());
    assert!(!auth.reload().unwrap(), "unchanged");
    write_keys(&path, &[("team-a", "sk-new", "")]);
    assert!(auth.reload().unwrap());
    assert_eq!(
        admit(&auth, &with_key("sk-old"), "m", now),
        Err(Denied::Unknown)
    );
    assert!(admit(&auth, &with_key("sk-new"), "m", now).is_ok());
    std::fs::write(&path, "{not json").unwrap();
    assert!(auth.reload().is_err());
    assert!(
        admit(&auth, &with_key("sk-new"), "m", now).is_ok(),
        "the old keys stay"
    );
}
