//! Wire contracts shared by the gateway and the agent: the gRPC `Agent` service and the
//! OpenAI-compatible JSON types with their validation, and how both listen (`listen`), read
//! the priority header (`priority`), size bodies (`limits`), type their errors and carry
//! them across gRPC (`errors`), stream events (`sse`), and set up TLS (`tls`).

pub mod cache;
pub mod errors;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod listen;
pub mod openai;
pub mod priority;
pub mod sse;
pub mod tls;

/// Generated from `proto/agent.proto`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod agent {
    tonic::include_proto!("inferpool.agent.v1");
}
