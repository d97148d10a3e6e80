//! The gateway's core: plain data and decisions, no I/O. A pool's view of its agents
//! (`view`), each agent's circuit breaker, the pickers, the retry budget and the retry
//! policy of one request, and the route table's contract with discovery. Everything here
//! is tested with plain values; the layers above (upstream, dispatch, api, http) do the
//! talking.

pub mod breaker;
pub mod pick;
pub mod policy;
pub mod retry;
pub mod routes;
pub mod view;
