//! Authentication and quotas at the gateway, off unless `--api-keys` names a key file (the
//! chart mounts it from a Secret). A request then needs `Authorization: Bearer <key>` for a
//! key in the file (401 otherwise), for a model the key may use (403), within the key's
//! requests and tokens per minute (429 with `Retry-After`). The file is read again every
//! `RELOAD` so that a key rotated in the Secret takes effect without a restart; a file that
//! does not parse leaves the keys as they were. Keys are never logged; metrics and logs
//! name a key by its id.

pub mod keys;
pub mod quota;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use keys::{Key, KeyFileError, KeyTable};
use quota::{OverQuota, Quota};

/// How often the key file is read again.
pub const RELOAD: Duration = Duration::from_secs(2);

/// The gateway's authentication flag.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthFlags {
    /// A JSON file of API keys (`{"keys": [{"id", "sha256", "models", "requestsPerMinute",
    /// "tokensPerMinute"}]}`): every request then needs one. Unset: no authentication.
    #[arg(long, env = "INFERPOOL_GATEWAY_API_KEYS")]
    pub api_keys: Option<PathBuf>,
}

impl AuthFlags {
    /// The keys of `--api-keys`, read again every `RELOAD` by a task of their own; `None`
    /// without the flag.
    pub fn load(&self) -> Result<Option<Arc<Auth>>, LoadError> {
        let Some(path) = &self.api_keys else {
            return Ok(None);
        };
        let auth = Arc::new(Auth::load(path.clone())?);
        tracing::info!(keys = auth.table().len(), "API keys required");
        tokio::spawn(auth.clone().watch());
        Ok(Some(auth))
    }
}

/// Why the key file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not readable.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid.
    #[error(transparent)]
    Invalid(#[from] KeyFileError),
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    #[error("an API key is required: send Authorization: Bearer <key>")]
    Missing,
    /// A key that is not in the file.
    #[error("the API key is not valid")]
    Unknown,
    /// The key may not use the model.
    #[error("this API key may not use model {model}")]
    Model {
        /// The key's id.
        key: String,
        /// The model asked for.
        model: String,
    },
    /// A per-minute limit is used up.
    #[error("this API key's {} per minute are used up; retry after {} s",
        .over.exceeded.as_str(), .over.retry_after.as_secs())]
    OverQuota {
        /// The key's id.
        key: String,
        /// Which limit, and when to retry.
        over: OverQuota,
    },
}

/// The key file's keys and every key's buckets.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    table: RwLock<Arc<KeyTable>>,
    quotas: Mutex<HashMap<String, Quota>>,
}

impl Auth {
    /// Reads the key file at `path`; a gateway does not start with a broken one.
    pub fn load(path: PathBuf) -> Result<Self, LoadError> {
        let table = read(&path)?;
        Ok(Self {
            path,
            table: RwLock::new(Arc::new(table)),
            quotas: Mutex::default(),
        })
    }

    /// Reads the file again: whether the keys changed. Keys that are gone lose their
    /// buckets.
    pub fn reload(&self) -> Result<bool, LoadError> {
        let table = read(&self.path)?;
        if *self.table() == table {
            return Ok(false);
        }
        self.lock_quotas()
            .retain(|id, _| table.find_id(id).is_some());
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
        Ok(true)
    }

    /// Reloads every `RELOAD`, for as long as the task runs.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD);
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(keys = self.table().len(), "API keys reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "API keys not reloaded; keeping the old"),
            }
        }
    }

    /// The key `headers` present (`Authorization: Bearer`), or why there is none.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Key, Denied> {
        let presented = bearer(headers).ok_or(Denied::Missing)?;
        self.table().find(presented).cloned().ok_or(Denied::Unknown)
    }

    /// Admits a request of `key` for `model` estimated at `tokens`, charging its quota,
    /// or says why not.
    pub fn admit(&self, key: &Key, model: &str, tokens: u32, now: Instant) -> Result<(), Denied> {
        let id = key.id.clone();
        if !key.allows(model) {
            let model = model.to_owned();
            return Err(Denied::Model { key: id, model });
        }
        let mut quotas = self.lock_quotas();
        let quota = quotas
            .entry(id.clone())
            .or_insert_with(|| Quota::new(key.limits, now));
        if quota.limits() != key.limits {
            // The limits changed in the file: fresh buckets at the new limits.
            *quota = Quota::new(key.limits, now);
        }
        quota
            .admit(tokens, now)
            .map_err(|over| Denied::OverQuota { key: id, over })
    }

    fn table(&self) -> Arc<KeyTable> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lock_quotas(&self) -> std::sync::MutexGuard<'_, HashMap<String, Quota>> {
        self.quotas.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn read(path: &std::path::Path) -> Result<KeyTable, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(KeyTable::parse(&text)?)
}

/// The key of `Authorization: Bearer <key>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
