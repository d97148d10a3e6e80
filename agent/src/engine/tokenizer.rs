//! The tokenizer of a llama-family GGUF model, built from its metadata.
//!
//! candle's `TokenizerFromGguf` falls back to a GPT-2 set-up that adds a leading space and
//! does not round-trip on SmolLM2 (ENGINE-NOTES.md), so the BPE is assembled here: vocab
//! from `tokenizer.ggml.tokens`, merges from `tokenizer.ggml.merges`, pre-tokenised by
//! splitting single digits and then byte-level without an added prefix space; tokens of
//! type control (3) or user-defined (4) are special.

use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use super::gguf::{GgufHeader, ModelFileError};

const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// Errors building or using the tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The metadata it is built from is missing or malformed.
    #[error(transparent)]
    Metadata(#[from] ModelFileError),
    /// The tokenizers library refused the vocabulary or an input.
    #[error("tokenizer: {0}")]
    Library(String),
}

fn library(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Library(e.to_string())
}

/// A model's tokenizer and the ids the engine needs to know.
#[derive(Debug, Clone)]
pub struct ModelTokenizer {
    inner: Tokenizer,
    /// End-of-sequence token id.
    pub eos: u32,
    /// The chat template stored with the model, if any.
    pub chat_template: Option<String>,
}

impl ModelTokenizer {
    /// Builds the tokenizer from the GGUF metadata.
    pub fn from_gguf(header: &GgufHeader) -> Result<Self, TokenizerError> {
        let tokens = header.strings("tokenizer.ggml.tokens")?;
        let merges = header
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
            .collect();
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| ((*t).to_owned(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(library)?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ]))));
        inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
        let special = special_tokens(header, &tokens)?;
        inner.add_special_tokens(special).map_err(library)?;
        let eos = header.u32("tokenizer.ggml.eos_token_id")?;
        let chat_template = header
            .string("tokenizer.chat_template")
            .ok()
            .map(str::to_owned);
        Ok(Self {
            inner,
            eos,
            chat_template,
        })
    }

    /// Loads a Hugging Face `tokenizer.json`; `eos` and the chat template come from the
    /// checkpoint's other files.
    pub fn from_file(
        path: &std::path::Path,
        eos: u32,
        chat_template: Option<String>,
    ) -> Result<Self, TokenizerError> {
        let inner = Tokenizer::from_file(path).map_err(library)?;
        Ok(Self {
            inner,
            eos,
            chat_template,
        })
    }

    /// Writes this tokenizer as a Hugging Face `tokenizer.json`.
    pub fn save(&self, path: &std::path::Path) -> Result<(), TokenizerError> {
        self.inner.save(path, false).map_err(library)
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) are
    /// recognised as such.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(library)?
            .get_ids()
            .to_vec())
    }

    /// The text of `ids` (special tokens skipped when `skip_special` is set).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special).map_err(library)
    }

    /// The id of a token, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of tokens in the vocabulary (special ones included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

fn special_tokens(header: &GgufHeader, tokens: &[&str]) -> Result<Vec<AddedToken>, TokenizerError> {
    let types = header.integers("tokenizer.ggml.token_type")?;
    Ok(tokens
        .iter()
        .zip(types)
        .filter(|(_, kind)| *kind == CONTROL || *kind == USER_DEFINED)
        .map(|(token, _)| AddedToken::from((*token).to_owned(), true))
        .collect())
}
