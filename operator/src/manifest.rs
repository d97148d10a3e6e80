//! Reading InferencePool manifests outside the cluster (`validate`, and local mode),
//! checked with the same CEL rules the API server enforces.

use crate::api::InferencePool;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not YAML.
    #[error("not YAML: {0}")]
    Yaml(#[from] serde_saphyr::Error),
    /// A document is not shaped like an InferencePool (unknown enum value, wrong type...).
    #[error("document {index}: {source}")]
    Shape {
        /// Position of the document in the file, from 0.
        index: usize,
        /// What did not fit.
        source: serde_json::Error,
    },
    /// A document is some other kind of object.
    #[error("document {index} is a {kind}, expected InferencePool")]
    WrongKind {
        /// Position of the document in the file, from 0.
        index: usize,
        /// The kind it declares.
        kind: String,
    },
    /// The pool breaks one of the schema's CEL rules.
    #[error("InferencePool {name}: {message}")]
    Invalid {
        /// `metadata.name` of the pool.
        name: String,
        /// The rules it breaks.
        message: String,
    },
}

/// Parses every YAML document in `text` as an InferencePool and checks its CEL rules.
pub fn parse_pools(text: &str) -> Result<Vec<InferencePool>, ManifestError> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text)?;
    docs.into_iter()
        .filter(|doc| !doc.is_null())
        .enumerate()
        .map(|(index, doc)| parse_pool(index, doc))
        .collect()
}

fn parse_pool(index: usize, doc: serde_json::Value) -> Result<InferencePool, ManifestError> {
    let kind = doc
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("object without kind");
    if kind != "InferencePool" {
        return Err(ManifestError::WrongKind {
            index,
            kind: kind.to_owned(),
        });
    }
    let pool: InferencePool =
        serde_json::from_value(doc).map_err(|source| ManifestError::Shape { index, source })?;
    pool.validate_cel().map_err(|e| invalid(&name(&pool), &e))?;
    Ok(pool)
}

fn name(pool: &InferencePool) -> String {
    pool.metadata.name.clone().unwrap_or_default()
}

fn invalid(name: &str, err: &dyn std::fmt::Display) -> ManifestError {
    ManifestError::Invalid {
        name: name.to_owned(),
        message: err.to_string(),
    }
}
