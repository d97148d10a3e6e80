//! Loading a model for serving: weights, tokenizer and chat template, from a GGUF file (or,
//! see `safetensors`, a Hugging Face checkpoint directory).

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;

use super::gguf::GgufHeader;
use super::loaded::template_for;
pub use super::loaded::{LoadError, LoadedModel};
use super::model::{Llama, WeightFormat};
use super::tokenizer::ModelTokenizer;

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
