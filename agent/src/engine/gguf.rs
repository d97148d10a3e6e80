//! Reading a GGUF file's header: metadata and tensor index (weights stay on disk until
//! loaded).

use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};

/// Errors reading a model file.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// The file could not be opened or read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not valid GGUF.
    #[error("{path} is not a GGUF file: {source}")]
    Format {
        /// The file.
        path: String,
        /// What candle reported.
        source: candle_core::Error,
    },
    /// A file or tensor the model needs is absent.
    #[error("{path}: missing {what}")]
    Missing {
        /// The file or tensor name.
        path: String,
        /// What is missing.
        what: &'static str,
    },
    /// A metadata key the engine needs is absent or of the wrong type.
    #[error("GGUF metadata {key}: {why}")]
    Metadata {
        /// The key.
        key: String,
        /// What is wrong.
        why: String,
    },
}

/// A GGUF header: metadata and tensor infos.
#[derive(Debug)]
pub struct GgufHeader {
    /// Metadata and tensor index as candle reads them.
    pub content: Content,
}

impl GgufHeader {
    /// Reads the header of the GGUF file at `path`.
    pub fn read(path: &Path) -> Result<Self, ModelFileError> {
        let shown = path.display().to_string();
        let mut file = std::fs::File::open(path).map_err(|source| ModelFileError::Io {
            path: shown.clone(),
            source,
        })?;
        let content = Content::read(&mut file).map_err(|source| ModelFileError::Format {
            path: shown,
            source,
        })?;
        Ok(Self { content })
    }

    fn value(&self, key: &str) -> Result<&Value, ModelFileError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| missing(key, "absent"))
    }

    /// A string value.
    pub fn string(&self, key: &str) -> Result<&str, ModelFileError> {
        self.value(key)?
            .to_string()
            .map(String::as_str)
            .map_err(|e| missing(key, &e.to_string()))
    }

    /// Each element of an array, converted by `convert`.
    fn array<'a, T>(
        &'a self,
        key: &str,
        convert: impl Fn(&'a Value) -> Result<T, String>,
    ) -> Result<Vec<T>, ModelFileError> {
        let values = self
            .value(key)?
            .to_vec()
            .map_err(|e| missing(key, &e.to_string()))?;
        values
            .iter()
            .map(|v| convert(v).map_err(|why| missing(key, &why)))
            .collect()
    }

    /// An array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>, ModelFileError> {
        self.array(key, |v| {
            v.to_string().map(String::as_str).map_err(|e| e.to_string())
        })
    }

    /// An array of integers (any integer width).
    pub fn integers(&self, key: &str) -> Result<Vec<i64>, ModelFileError> {
        self.array(key, |v| {
            integer(v).ok_or_else(|| "not an integer".to_owned())
        })
    }

    /// A float value.
    pub fn f32(&self, key: &str) -> Result<f32, ModelFileError> {
        self.value(key)?
            .to_f32()
            .map_err(|e| missing(key, &e.to_string()))
    }

    /// An unsigned integer value.
    pub fn u32(&self, key: &str) -> Result<u32, ModelFileError> {
        let v = integer(self.value(key)?).ok_or_else(|| missing(key, "not an integer"))?;
        u32::try_from(v).map_err(|_| missing(key, "out of range"))
    }
}

fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::U8(x) => Some(i64::from(*x)),
        Value::I8(x) => Some(i64::from(*x)),
        Value::U16(x) => Some(i64::from(*x)),
        Value::I16(x) => Some(i64::from(*x)),
        Value::U32(x) => Some(i64::from(*x)),
        Value::I32(x) => Some(i64::from(*x)),
        Value::U64(x) => i64::try_from(*x).ok(),
        Value::I64(x) => Some(*x),
        _ => None,
    }
}

fn missing(key: &str, why: &str) -> ModelFileError {
    ModelFileError::Metadata {
        key: key.to_owned(),
        why: why.to_owned(),
    }
}
