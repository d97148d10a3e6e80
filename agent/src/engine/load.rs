//! Loading a model for serving: weights, tokenizer and chat template, from a GGUF file (or,
//! see `safetensors`, a Hugging Face checkpoint directory).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use super::chat::{ChatTemplate, TemplateError};
use super::gguf::{GgufHeader, ModelFileError};
use super::model::{Llama, ModelError, WeightFormat};
use super::tokenizer::{ModelTokenizer, TokenizerError};

/// How the model is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// From the path: a `.gguf` file or a directory of safetensors.
    #[default]
    Auto,
    /// One GGUF file.
    Gguf,
    /// A directory with `config.json`, `*.safetensors` and `tokenizer.json`.
    Safetensors,
}

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

/// Loads the model at `path` onto `device`.
pub fn load(
    path: &Path,
    format: ModelFormat,
    template_override: Option<&str>,
    device: &Device,
) -> Result<LoadedModel, LoadError> {
    match resolve_format(path, format)? {
        ModelFormat::Safetensors => super::safetensors::load(path, template_override, device),
        _ => load_gguf(path, template_override, device),
    }
}

fn resolve_format(path: &Path, format: ModelFormat) -> Result<ModelFormat, LoadError> {
    if format != ModelFormat::Auto {
        return Ok(format);
    }
    if path.is_dir() && path.join("config.json").is_file() {
        Ok(ModelFormat::Safetensors)
    } else if path.extension().is_some_and(|e| e == "gguf") {
        Ok(ModelFormat::Gguf)
    } else {
        Err(LoadError::UnknownFormat(path.to_owned()))
    }
}

fn load_gguf(
    path: &Path,
    template_override: Option<&str>,
    device: &Device,
) -> Result<LoadedModel, LoadError> {
    let header = GgufHeader::read(path)?;
    let tokenizer = ModelTokenizer::from_gguf(&header)?;
    let model = Arc::new(Llama::load(path, WeightFormat::Q8, device)?);
    let template = template_for(&tokenizer, template_override)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        template,
    })
}

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
