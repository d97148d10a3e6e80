//! Every way a request can be refused or fail, each with a fixed type from the protocol's
//! table (`error_type()`, used in the JSON body, the gRPC ErrorInfo and metric labels) and
//! the HTTP status that type is answered with.

use inferpool_protocol::errors::ErrorType;
use inferpool_protocol::openai::{ErrorBody, InvalidRequest};

use super::blocking::BlockingError;
use crate::engine::embed::EmbedError;
use crate::engine::prepare::PrepareError;
use crate::scheduler::batcher::SubmitError;
use crate::scheduler::embed_batcher::EmbedSubmitError;
use crate::scheduler::queue::QueueFull;

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The request is malformed or out of range.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The body is not JSON of the expected shape.
    #[error("invalid JSON body: {0}")]
    Json(String),
    /// The body exceeds the limit.
    #[error("the request body exceeds {0} bytes")]
    BodyTooLarge(usize),
    /// No model of that name here.
    #[error("the model {0:?} does not exist")]
    ModelNotFound(String),
    /// The request does not fit the model.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The priority's queue is full.
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    /// The request could never fit the engine's KV cache.
    #[error("{0}")]
    TooLargeForCache(String),
    /// The agent is shutting down.
    #[error("the agent is draining and takes no new requests")]
    Draining,
    /// The model is still loading.
    #[error("the model is still loading")]
    NotReady,
    /// Every device is failed or recovering (retryable: another agent may have one).
    #[error("no healthy device is left to run the model")]
    NoHealthyDevice,
    /// The engine failed.
    #[error("engine error: {0}")]
    Engine(String),
    /// The embedding model failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The request's deadline passed while it was queued.
    #[error("the request's deadline passed while it waited in the queue")]
    DeadlineExceeded,
}

impl From<EmbedSubmitError> for ServeError {
    fn from(e: EmbedSubmitError) -> Self {
        match e {
            EmbedSubmitError::Model(e) => Self::Embed(e),
            EmbedSubmitError::Stopped => Self::Engine(e.to_string()),
        }
    }
}

impl From<BlockingError> for ServeError {
    fn from(e: BlockingError) -> Self {
        Self::Engine(e.to_string())
    }
}

impl From<SubmitError> for ServeError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::QueueFull(q) => Self::QueueFull(q),
            e @ SubmitError::TooLarge { .. } => Self::TooLargeForCache(e.to_string()),
            SubmitError::Stopped => Self::Engine("the engine has stopped".into()),
            SubmitError::NoHealthyDevice => Self::NoHealthyDevice,
        }
    }
}

impl ServeError {
    /// The stable type, which fixes the HTTP status (and through it the gRPC code).
    pub fn kind(&self) -> ErrorType {
        match self {
            Self::Invalid(_) | Self::Json(_) => ErrorType::InvalidRequest,
            Self::BodyTooLarge(_) => ErrorType::RequestTooLarge,
            Self::ModelNotFound(_) => ErrorType::ModelNotFound,
            Self::Prepare(p) => p.kind(),
            Self::TooLargeForCache(_) => ErrorType::ContextLengthExceeded,
            Self::QueueFull(_) => ErrorType::QueueFull,
            Self::Draining => ErrorType::Draining,
            Self::NotReady | Self::NoHealthyDevice => ErrorType::NotReady,
            Self::Engine(_) | Self::Embed(_) => ErrorType::ServerError,
            Self::DeadlineExceeded => ErrorType::DeadlineExceeded,
        }
    }

    /// The stable `type`.
    pub fn error_type(&self) -> &'static str {
        self.kind().name()
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.kind().status()
    }

    /// OpenAI's JSON error body.
    pub fn body(&self) -> ErrorBody {
        let param = match self {
            Self::Invalid(i) => i.param,
            Self::ModelNotFound(_) => Some("model"),
            _ => None,
        };
        ErrorBody::new(self.error_type(), &self.to_string(), param)
    }
}
