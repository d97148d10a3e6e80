//! The inference engine: model files, tokenizer, forward pass and sampling.

pub mod attention;
pub mod chat;
pub mod embed;
mod fuse;
pub mod fuzzing;
pub mod gguf;
pub mod kv;
pub mod load;
pub mod loaded;
pub mod model;
pub mod prefix;
pub mod prepare;
pub mod rows;
pub mod safetensors;
pub mod sampling;
pub mod tokenizer;
