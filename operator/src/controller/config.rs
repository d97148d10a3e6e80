//! The agent configuration the controller renders into the pool's ConfigMap.

use serde::Serialize;

use super::names::{GRPC_PORT, HTTP_PORT, served_name};
use crate::api::BUNDLED_SOURCE;
use crate::api::{BatchingSpec, CacheSpec, InferencePool, ModelFormat};

/// Where the agent image keeps the bundled default model.
pub const BUNDLED_MODEL_PATH: &str =
    "/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Where a `pvc://claim/...` model source's claim is mounted.
pub const PVC_MOUNT_ROOT: &str = "/models/pvc";

/// Where the agent keeps its persistent cache (the cache volume's mount).
pub const CACHE_DIR: &str = "/var/cache/inferpool";

/// Whether the pool's agents keep their cache on a volume.
pub fn persistent_cache(pool: &InferencePool) -> bool {
    pool.spec.cache.enabled && pool.spec.cache.persistence.enabled
}

/// Everything an agent needs to know about its pool, as `agent.json`.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig<'a> {
    /// The name clients send as `model`.
    pub served_name: String,
    /// Model file or directory inside the pod.
    pub model_path: String,
    /// Weight format.
    pub model_format: ModelFormat,
    /// Chat template override.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<&'a str>,
    /// GPUs the agent should use (0: CPU).
    pub gpus: i32,
    /// Batching settings.
    pub batching: &'a BatchingSpec,
    /// Cache settings.
    pub cache: &'a CacheSpec,
    /// Where the agent keeps its cache snapshot (the cache volume), when persistence is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
    /// HTTP port.
    pub http_port: i32,
    /// gRPC port.
    pub grpc_port: i32,
}

/// A model source as the pod sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedSource {
    /// A path inside the image or an already mounted volume.
    Path(String),
    /// A PersistentVolumeClaim to mount, and the path of the model inside the pod.
    Claim {
        /// The claim's name.
        claim: String,
        /// Path of the model once the claim is mounted.
        path: String,
    },
}

impl ResolvedSource {
    /// The model's path inside the pod.
    pub fn path(&self) -> &str {
        match self {
            Self::Path(path) | Self::Claim { path, .. } => path,
        }
    }
}

/// Why a model source cannot be realised (the schema's pattern catches most cases; this
/// guards what a pattern cannot, such as `..` escaping a claim).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("model source {given:?}: {why}")]
pub struct InvalidSource {
    /// The source as written.
    pub given: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Maps `spec.model.source` to what the pod mounts and reads.
pub fn resolve_source(source: &str) -> Result<ResolvedSource, InvalidSource> {
    let invalid = |why| InvalidSource {
        given: source.to_owned(),
        why,
    };
    if source == BUNDLED_SOURCE {
        return Ok(ResolvedSource::Path(BUNDLED_MODEL_PATH.to_owned()));
    }
    if source.split('/').any(|part| part == "..") {
        return Err(invalid("must not contain `..`"));
    }
    if let Some(rest) = source.strip_prefix("pvc://") {
        let (claim, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid("needs pvc://<claim>/<path>"))?;
        if claim.is_empty() || path.is_empty() {
            return Err(invalid("needs pvc://<claim>/<path>"));
        }
        let path = format!("{PVC_MOUNT_ROOT}/{claim}/{path}");
        return Ok(ResolvedSource::Claim {
            claim: claim.to_owned(),
            path,
        });
    }
    if source.starts_with('/') {
        return Ok(ResolvedSource::Path(source.to_owned()));
    }
    Err(invalid(
        "must be `bundled`, an absolute path or pvc://<claim>/<path>",
    ))
}

/// Renders the agent configuration of `pool`, whose model source resolved to `source`.
pub fn agent_config<'a>(pool: &'a InferencePool, source: &ResolvedSource) -> AgentConfig<'a> {
    AgentConfig {
        served_name: served_name(pool),
        model_path: source.path().to_owned(),
        model_format: pool.spec.model.format,
        chat_template: pool.spec.model.chat_template.as_deref(),
        gpus: pool.spec.resources.gpus,
        batching: &pool.spec.batching,
        cache: &pool.spec.cache,
        cache_dir: persistent_cache(pool).then(|| CACHE_DIR.to_owned()),
        http_port: HTTP_PORT,
        grpc_port: GRPC_PORT,
    }
}

/// The JSON text of the configuration, and its sha256 (hex) for the rollout annotation.
pub fn render(config: &AgentConfig<'_>) -> (String, String) {
    use sha2::Digest as _;
    let text = serde_json::to_string_pretty(config).unwrap_or_default();
    let digest = sha2::Sha256::digest(text.as_bytes());
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    (text, hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_resolve_to_paths_in_the_pod() {
        assert_eq!(
            resolve_source("bundled").unwrap().path(),
            BUNDLED_MODEL_PATH
        );
        assert_eq!(
            resolve_source("/models/x.gguf").unwrap(),
            ResolvedSource::Path("/models/x.gguf".into())
        );
        assert_eq!(
            resolve_source("pvc://weights/llama/model.gguf").unwrap(),
            ResolvedSource::Claim {
                claim: "weights".into(),
                path: "/models/pvc/weights/llama/model.gguf".into()
            }
        );
    }

    #[test]
    fn bad_sources_are_refused_with_a_reason() {
        assert!(
            resolve_source("pvc://weights/../etc/passwd")
                .unwrap_err()
                .why
                .contains("..")
        );
        assert!(resolve_source("pvc://weights").is_err());
        assert!(resolve_source("relative/path").is_err());
    }

    #[test]
    fn the_checksum_follows_the_content() {
        let mut pool = InferencePool::new(
            "p",
            crate::api::InferencePoolSpec::with_model(Default::default()),
        );
        let source = resolve_source("bundled").unwrap();
        let (_, a) = render(&agent_config(&pool, &source));
        let (_, same) = render(&agent_config(&pool, &source));
        pool.spec.batching.max_batch_size = 32;
        let (text, b) = render(&agent_config(&pool, &source));
        assert_eq!(a, same);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(text.contains("\"maxBatchSize\": 32"));
    }
}
