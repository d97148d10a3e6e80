//! Reading a GGUF file's header: metadata and tensor index (weights stay on disk until
//! loaded).

use std::io::{Read, Seek, SeekFrom};
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
        let file = std::fs::File::open(path).map_err(|source| ModelFileError::Io {
            path: shown.clone(),
            source,
        })?;
        // Buffered: the header is thousands of small reads.
        Self::from_reader(&mut std::io::BufReader::new(file), &shown)
    }

    /// Reads a GGUF header held in memory (`shown` names it in errors).
    pub fn parse(bytes: &[u8], shown: &str) -> Result<Self, ModelFileError> {
        Self::from_reader(&mut std::io::Cursor::new(bytes), shown)
    }

    /// Reads a header from the start of `reader`. candle bounds every count and length by
    /// the bytes left; `precheck` first refuses what candle would panic on or hold too
    /// much of, and the tensor shapes are checked before anyone multiplies them.
    pub fn from_reader<R: Read + Seek>(
        reader: &mut R,
        shown: &str,
    ) -> Result<Self, ModelFileError> {
        let format = |source| ModelFileError::Format {
            path: shown.to_owned(),
            source,
        };
        let io = |source| ModelFileError::Io {
            path: shown.to_owned(),
            source,
        };
        let start = reader.stream_position().map_err(io)?;
        precheck(reader).map_err(format)?;
        reader.seek(SeekFrom::Start(start)).map_err(io)?;
        let content = Content::read(reader).map_err(format)?;
        check_shapes(&content).map_err(format)?;
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

/// Most metadata values (each array element counts) a header may hold. candle keeps each
/// as a 32-byte `Value`, so a file of one-byte array elements would otherwise take 32
/// times its own size in memory; real vocabularies hold a few hundred thousand.
const MAX_METADATA_VALUES: u64 = 1 << 22;
/// Deepest nesting of arrays (candle's own bound).
const MAX_DEPTH: usize = 64;
/// candle divides by this value: 0 would panic.
const ALIGNMENT_KEY: &[u8] = b"general.alignment";

/// Walks the metadata without keeping it, refusing a zero alignment and more values than
/// `MAX_METADATA_VALUES`. Anything else odd is left to candle, which reports it.
fn precheck<R: Read + Seek>(reader: &mut R) -> candle_core::Result<()> {
    let mut walk = Walk {
        reader,
        wide: true,
        values: 0,
    };
    let magic = walk.u32()?.to_le_bytes();
    let version = walk.u32()?;
    if !(&magic == b"GGUF" || &magic == b"FUGG") || !(1..=3).contains(&version) {
        return Ok(());
    }
    walk.wide = version != 1;
    let _tensors = walk.length()?;
    for _ in 0..walk.length()? {
        let is_alignment = walk.key_is(ALIGNMENT_KEY)?;
        let kind = walk.u32()?;
        walk.value(kind, 0, is_alignment)?;
    }
    Ok(())
}

/// A cursor over GGUF metadata: `wide` lengths are u64 (v2, v3), else u32.
struct Walk<'r, R> {
    reader: &'r mut R,
    wide: bool,
    values: u64,
}

impl<R: Read + Seek> Walk<'_, R> {
    fn bytes<const N: usize>(&mut self) -> candle_core::Result<[u8; N]> {
        let mut buf = [0; N];
        self.reader.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self) -> candle_core::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn length(&mut self) -> candle_core::Result<u64> {
        match self.wide {
            true => Ok(u64::from_le_bytes(self.bytes()?)),
            false => Ok(u64::from(self.u32()?)),
        }
    }

    fn skip(&mut self, len: u64) -> candle_core::Result<()> {
        let len = i64::try_from(len).map_err(|_| msg(format!("gguf: length {len} too large")))?;
        self.reader.seek(SeekFrom::Current(len))?;
        Ok(())
    }

    /// Reads a string, telling whether it is `name` (only a string that short is read).
    fn key_is(&mut self, name: &[u8]) -> candle_core::Result<bool> {
        let len = self.length()?;
        if len != name.len() as u64 {
            self.skip(len)?;
            return Ok(false);
        }
        let mut buf = vec![0; name.len()];
        self.reader.read_exact(&mut buf)?;
        Ok(buf == name)
    }

    fn count(&mut self, n: u64) -> candle_core::Result<()> {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_METADATA_VALUES {
            return Err(msg(format!(
                "gguf: more than {MAX_METADATA_VALUES} metadata values"
            )));
        }
        Ok(())
    }

    /// Skips a value of GGUF type `kind`; an integer `alignment` must not be 0.
    fn value(&mut self, kind: u32, depth: usize, alignment: bool) -> candle_core::Result<()> {
        self.count(1)?;
        if let Some(size) = fixed_size(kind) {
            // Types 0..=5 are the integers candle takes the alignment from.
            if alignment && kind <= 5 && self.integer_is_zero(size)? {
                return Err(msg("gguf: general.alignment is 0".to_owned()));
            }
            return match alignment && kind <= 5 {
                true => Ok(()),
                false => self.skip(size),
            };
        }
        match kind {
            8 => {
                let len = self.length()?;
                self.skip(len)
            }
            9 if depth >= MAX_DEPTH => Err(msg(format!("gguf: arrays nested over {MAX_DEPTH}"))),
            9 => self.array(depth),
            // candle names the unknown type.
            _ => Ok(()),
        }
    }

    fn integer_is_zero(&mut self, size: u64) -> candle_core::Result<bool> {
        let mut buf = [0u8; 8];
        let used = buf.get_mut(..size as usize).unwrap_or(&mut []);
        self.reader.read_exact(used)?;
        Ok(buf == [0; 8])
    }

    fn array(&mut self, depth: usize) -> candle_core::Result<()> {
        let kind = self.u32()?;
        let n = self.length()?;
        if let Some(size) = fixed_size(kind) {
            self.count(n)?;
            return self.skip(n.saturating_mul(size));
        }
        for _ in 0..n {
            self.value(kind, depth + 1, false)?;
        }
        Ok(())
    }
}

/// Bytes of a fixed-size GGUF value type.
fn fixed_size(kind: u32) -> Option<u64> {
    match kind {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Every tensor's element count fits in `usize` (candle multiplies without checking).
fn check_shapes(content: &Content) -> candle_core::Result<()> {
    for (name, info) in &content.tensor_infos {
        let dims = info.shape.dims();
        if dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .is_none()
        {
            return Err(msg(format!(
                "gguf: tensor {name}: shape {dims:?} is too large"
            )));
        }
    }
    Ok(())
}

fn msg(text: String) -> candle_core::Error {
    candle_core::Error::Msg(text)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Vec<u8> {
        [&(s.len() as u64).to_le_bytes()[..], s.as_bytes()].concat()
    }

    /// A v3 header declaring `tensors` and `kvs`, followed by `body`.
    fn gguf(tensors: u64, kvs: u64, body: &[u8]) -> Vec<u8> {
        let counts = [tensors.to_le_bytes(), kvs.to_le_bytes()].concat();
        [&b"GGUF"[..], &3u32.to_le_bytes(), &counts, body].concat()
    }

    fn refusal(bytes: &[u8]) -> String {
        GgufHeader::parse(bytes, "t").unwrap_err().to_string()
    }

    #[test]
    fn a_zero_alignment_is_refused_not_divided_by() {
        // candle 0.11 divides the header size by it: 0 panicked (seen in its source; the
        // gguf_header target has not run here yet).
        for (kind, value) in [(4u32, &0u32.to_le_bytes()[..]), (0, &[0])] {
            let body = [&string("general.alignment")[..], &kind.to_le_bytes(), value].concat();
            assert!(refusal(&gguf(0, 1, &body)).contains("alignment is 0"));
        }
        let body = [
            &string("general.alignment")[..],
            &4u32.to_le_bytes(),
            &64u32.to_le_bytes(),
        ];
        let header = GgufHeader::parse(&gguf(0, 1, &body.concat()), "t").unwrap();
        assert_eq!(header.content.tensor_data_offset, 64);
    }

    #[test]
    fn overflowing_shapes_and_too_many_values_are_refused() {
        let dims: Vec<u8> = (0..3).flat_map(|_| (1u64 << 40).to_le_bytes()).collect();
        let tensor = [&string("t")[..], &3u32.to_le_bytes(), &dims[..], &[0u8; 12]].concat();
        assert!(refusal(&gguf(1, 0, &tensor)).contains("too large"));
        let n = MAX_METADATA_VALUES + 1;
        let array = [
            &string("k")[..],
            &9u32.to_le_bytes(),
            &0u32.to_le_bytes(),
            &n.to_le_bytes(),
        ];
        assert!(refusal(&gguf(0, 1, &array.concat())).contains("metadata values"));
    }
}
