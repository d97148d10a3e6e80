//! The `InferencePool` API (`inferpool.dev/v1alpha1`): types, defaults and validation rules.
//!
//! Every doc comment here becomes `kubectl explain` output, so they are written for users.
//! Rules that the API server can check at admission live in the schema (ranges, enums,
//! patterns, CEL); `InferencePool::validate_cel` runs the same CEL rules without a cluster.

mod autoscaling;
mod batching;
mod cache;
mod model;
mod pool;
mod resources;
mod routing;
mod status;
mod template;

pub use autoscaling::AutoscalingSpec;
pub use batching::{BatchingSpec, BatchingStrategy, KvCacheDtype, PaddingStrategy, QueueLimits};
pub use cache::{CacheSpec, PersistenceSpec, SemanticCacheSpec};
pub use model::{BUNDLED_SOURCE, ModelFormat, ModelSource, ModelSpec};
pub use pool::{InferencePool, InferencePoolSpec};
pub use resources::ResourcesSpec;
pub use routing::{CircuitBreakerSpec, RetrySpec, RoutingSpec, RoutingStrategy};
pub use status::{ConditionType, InferencePoolStatus};
pub use template::AgentTemplate;

/// The API group of every inferpool resource.
pub const GROUP: &str = "inferpool.dev";
/// The served and stored API version.
pub const VERSION: &str = "v1alpha1";

#[cfg(test)]
mod tests;
