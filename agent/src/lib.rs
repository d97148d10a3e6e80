//! inferpool agent: the process in every pool pod. Device discovery is here today; the
//! engine, scheduler, cache and servers land with the agent issue.

pub mod engine;
pub mod gpu;
