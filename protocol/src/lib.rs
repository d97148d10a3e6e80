//! Wire contracts shared by the gateway and the agent: the gRPC `Agent` service and the
//! OpenAI-compatible JSON types with their validation, and how both listen (`listen`).

#[doc(hidden)]
pub mod fuzzing;
pub mod listen;
pub mod openai;

/// Generated from `proto/agent.proto`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod agent {
    tonic::include_proto!("inferpool.agent.v1");
}
