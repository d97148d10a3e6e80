//! Reconcile errors, each with a fixed `error_type()` for metrics and logs.

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be serialized for apply.
    #[error("serializing {kind}: {source}")]
    Serialize {
        /// The object's kind.
        kind: &'static str,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// The pool has no namespace (it is a namespaced resource; this is a broken event).
    #[error("InferencePool without a namespace")]
    NoNamespace,
    /// The pool has no uid yet, so children cannot point at it.
    #[error("InferencePool without a uid")]
    NoUid,
}

impl Error {
    /// A fixed, low-cardinality label for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(_)) => "api_error",
            Self::Kube(_) => "client_error",
            Self::Serialize { .. } => "serialize_error",
            Self::NoNamespace => "no_namespace",
            Self::NoUid => "no_uid",
        }
    }
}
