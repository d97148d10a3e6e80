//! What a loaded model is, whichever file format it came from: the weights, tokenizer and
//! chat template, and why loading can fail. A leaf of the loaders (`load` for GGUF and
//! dispatch, `safetensors`), so that they share it without importing each other.

use std::path::PathBuf;
use std::sync::Arc;

use super::chat::{ChatTemplate, TemplateError};
use super::gguf::ModelFileError;
use super::model::{Llama, ModelError};
use super::tokenizer::{ModelTokenizer, TokenizerError};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Weights or metadata.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The model file.
    #[error(transparent)]
    File(#[from] ModelFileError),
    /// The tokenizer.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The chat template does not compile.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The path is neither a GGUF file nor a safetensors directory.
    #[error("{0}: not a GGUF file or a safetensors directory")]
    UnknownFormat(PathBuf),
}

/// Everything needed to serve a model.
#[derive(Debug)]
pub struct LoadedModel {
    /// The weights.
    pub model: Arc<Llama>,
    /// Its tokenizer.
    pub tokenizer: ModelTokenizer,
    /// The chat template (the pool's override, else the model's own, else ChatML).
    pub template: ChatTemplate,
}

/// ChatML, for models that ship no template.
const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The template to use: the override, else the model's, else ChatML.
pub(crate) fn template_for(
    tokenizer: &ModelTokenizer,
    template_override: Option<&str>,
) -> Result<ChatTemplate, TemplateError> {
    let source = template_override
        .or(tokenizer.chat_template.as_deref())
        .unwrap_or(CHATML);
    let eos = tokenizer
        .decode(&[tokenizer.eos], false)
        .unwrap_or_default();
    ChatTemplate::new(source, "", &eos)
}
