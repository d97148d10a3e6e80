//! Helpers for inferpool's end-to-end tests: where the repository and caches are, the
//! parts a test needs (models, control plane), and a real Kubernetes control plane on
//! loopback with a namespace per test.

pub mod agent;
pub mod certs;
pub mod cluster;
pub mod controller;
pub mod curl;
pub mod dashboard;
pub mod faults;
pub mod http;
pub mod local;
pub mod netns;
pub mod openai;
pub mod operator;
pub mod parts;
pub mod pools;
pub mod streams;
pub mod wait;
