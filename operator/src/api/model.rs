use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The model that every agent of the pool serves.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Where the agent loads the model from. `bundled` is the model shipped in the agent
    /// image (SmolLM2-135M-Instruct, GGUF Q4_1). An absolute path (`/models/llama.gguf`, or
    /// a directory of safetensors) is read inside the pod. `pvc://<claim>/<path>` mounts the
    /// PersistentVolumeClaim `<claim>` read-only and reads `<path>` inside it.
    #[serde(default = "default_source")]
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^(bundled|/.+|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+)$")
    )]
    pub source: ModelSource,

    /// Weight format. `auto` infers it from the source: a file ending in `.gguf` is GGUF, a
    /// directory is a safetensors checkpoint (`config.json`, `*.safetensors`,
    /// `tokenizer.json`).
    #[serde(default)]
    pub format: ModelFormat,

    /// The name clients send as `model` in OpenAI requests. Defaults to the pool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub served_name: Option<String>,

    /// A chat template (Jinja, as in Hugging Face `tokenizer_config.json`) that replaces the
    /// one stored with the model. Leave unset to use the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub chat_template: Option<String>,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            source: default_source(),
            format: ModelFormat::default(),
            served_name: None,
            chat_template: None,
        }
    }
}

/// Where the weights come from, as written in `spec.model.source`.
pub type ModelSource = String;

/// The keyword for the model shipped in the agent image.
pub const BUNDLED_SOURCE: &str = "bundled";

fn default_source() -> ModelSource {
    BUNDLED_SOURCE.to_owned()
}

/// Weight format of the model.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// Inferred from the source.
    #[default]
    Auto,
    /// A single GGUF file (quantized or not), llama architecture.
    Gguf,
    /// A Hugging Face safetensors checkpoint directory, llama architecture.
    Safetensors,
}
