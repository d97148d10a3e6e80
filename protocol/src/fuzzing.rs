//! Checks run by the fuzz targets in `fuzz/` and, on every file of `fuzz/corpus/`, by the
//! stable test suite (`tests/fuzz_corpus.rs`). Each check panics when a property fails.
//!
//! `openai_request` is differential: the field-by-field reader in `openai::wire` against
//! serde's derived reader of the same fields. Where the two legitimately differ the input
//! is normalised first, never the answer:
//! - A field given twice: derived structs refuse it (`duplicate field`), the wire reader
//!   reads every occurrence and keeps the last. The reference keeps only the last
//!   occurrence and requires each earlier one to be a valid value of its field.
//! - Bytes that are not UTF-8 inside a skipped value: serde_json skips unknown fields
//!   without checking their UTF-8, so the wire reader may accept such an input; the
//!   reference reads text. When the wire reader accepts, the bad bytes can only have been
//!   skipped, so the reference must give the same request for the lossy UTF-8 text.
//!
//! The reference reads floats as `f64` and narrows them itself, refusing what is beyond
//! `f32`'s range as the wire reader does (see `wire::F32`).

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::openai::{
    ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Message, Prompt, Stop,
    StreamOptions, ValidChatRequest, ValidCompletionRequest, ValidEmbeddingRequest, ValidSampling,
};

/// Reads `data` as a chat, a completion and an embedding request and checks each.
pub fn openai_request(data: &[u8]) {
    differential::<ChatCompletionRequest, RefChat>(data);
    differential::<CompletionRequest, RefCompletion>(data);
    if let Ok(request) = serde_json::from_slice::<EmbeddingRequest>(data) {
        check_embedding(ValidEmbeddingRequest::try_from(request));
    }
}

/// A request type with its derived reference reader.
trait Checked: DeserializeOwned + PartialEq + fmt::Debug + serde::Serialize {
    fn validate(self);
}

impl Checked for ChatCompletionRequest {
    fn validate(self) {
        if let Ok(valid) = ValidChatRequest::try_from(self) {
            assert!(!valid.model.is_empty() && !valid.messages.is_empty());
            let roles = ["system", "user", "assistant"];
            assert!(
                valid
                    .messages
                    .iter()
                    .all(|m| roles.contains(&m.role.as_str()))
            );
            check_sampling(&valid.sampling);
        }
    }
}

impl Checked for CompletionRequest {
    fn validate(self) {
        if let Ok(valid) = ValidCompletionRequest::try_from(self) {
            assert!(!valid.model.is_empty() && !valid.prompt.is_empty());
            check_sampling(&valid.sampling);
        }
    }
}

fn check_sampling(s: &ValidSampling) {
    assert!((0.0..=2.0).contains(&s.temperature), "{s:?}");
    assert!(s.top_p > 0.0 && s.top_p <= 1.0, "{s:?}");
    assert!((-2.0..=2.0).contains(&s.presence_penalty), "{s:?}");
    assert!((-2.0..=2.0).contains(&s.frequency_penalty), "{s:?}");
    assert!(s.max_tokens != Some(0) && s.top_k != Some(0), "{s:?}");
    assert!(
        s.stop.len() <= 4 && s.stop.iter().all(|x| !x.is_empty()),
        "{s:?}"
    );
}

fn check_embedding(valid: Result<ValidEmbeddingRequest, crate::openai::InvalidRequest>) {
    if let Ok(valid) = valid {
        let count = valid.inputs.len();
        assert!((1..=crate::openai::MAX_EMBEDDING_INPUTS).contains(&count));
        assert!(valid.inputs.iter().all(|i| !i.is_empty()));
    }
}

/// The wire reader and the reference agree on `data`; what they accept validates without
/// panicking and reads back from its own JSON unchanged.
fn differential<T: Checked, R: Reference<T>>(data: &[u8]) {
    let wire = serde_json::from_slice::<T>(data).ok();
    let reference = match std::str::from_utf8(data) {
        Ok(text) => reference::<T, R>(text),
        // See the module comment: only an accepted input says where the bad bytes were.
        Err(_) if wire.is_none() => return,
        Err(_) => reference::<T, R>(&String::from_utf8_lossy(data)),
    };
    assert_eq!(wire, reference, "wire reader and reference disagree");
    if let Some(request) = wire {
        let json = serde_json::to_vec(&request).expect("a request serialises");
        let again = serde_json::from_slice::<T>(&json).expect("a request reads back");
        assert_eq!(again, request, "read back differently");
        request.validate();
    }
}

/// What the reference reader gives for `text`: `None` when it refuses.
fn reference<T, R: Reference<T>>(text: &str) -> Option<T> {
    let Entries(entries) = serde_json::from_str::<Entries<'_>>(text).ok()?;
    let mut last = HashMap::new();
    for (i, (key, _)) in entries.iter().enumerate() {
        last.insert(key.as_str(), i);
    }
    let mut kept = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if last.get(entry.0.as_str()) == Some(&i) {
            kept.push(entry);
        } else {
            // An earlier occurrence: the wire reader read it, so it must be valid.
            serde_json::from_str::<R>(&object(&[entry]))
                .ok()?
                .sampling()?;
        }
    }
    serde_json::from_str::<R>(&object(&kept)).ok()?.finish()
}

/// `entries` written back as one JSON object.
fn object(entries: &[&(String, &RawValue)]) -> String {
    let fields: Vec<String> = entries
        .iter()
        .map(|(key, value)| format!("{}:{}", serde_json::Value::from(key.as_str()), value.get()))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// A top-level object's fields in order, repeats included, values unread.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// A derived reader of a request's fields, every field optional so that one field alone
/// can be checked; `finish` then asks for the required ones.
trait Reference<T>: DeserializeOwned {
    fn finish(self) -> Option<T>;
    fn sampling(&self) -> Option<crate::openai::SamplingFields>;
}

/// A float read wide and narrowed: `None` (refused) when it is beyond `f32`'s range.
fn narrow(wide: Option<f64>) -> Option<Option<f32>> {
    match wide {
        None => Some(None),
        Some(v) if (v as f32).is_infinite() => None,
        Some(v) => Some(Some(v as f32)),
    }
}

/// `Some` of a value that must not be `null` (the wire reader reads `model` as `String`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Declares a reference struct: its own fields, then the sampling fields, each spelled
/// out (serde's `flatten` would buffer and read values differently).
macro_rules! reference_struct {
    ($name:ident { $($own:tt)* }) => {
        #[derive(Deserialize)]
        struct $name {
            $($own)*
            temperature: Option<f64>,
            top_p: Option<f64>,
            top_k: Option<u32>,
            seed: Option<u64>,
            max_tokens: Option<u32>,
            max_completion_tokens: Option<u32>,
            stop: Option<Stop>,
            presence_penalty: Option<f64>,
            frequency_penalty: Option<f64>,
            n: Option<u32>,
            #[serde(default)]
            stream: bool,
            stream_options: Option<StreamOptions>,
            user: Option<String>,
        }

        impl $name {
            /// The sampling fields, `None` where a float is out of range.
            fn fields(&self) -> Option<crate::openai::SamplingFields> {
                Some(crate::openai::SamplingFields {
                    temperature: narrow(self.temperature)?,
                    top_p: narrow(self.top_p)?,
                    top_k: self.top_k,
                    seed: self.seed,
                    max_tokens: self.max_tokens,
                    max_completion_tokens: self.max_completion_tokens,
                    stop: self.stop.clone(),
                    presence_penalty: narrow(self.presence_penalty)?,
                    frequency_penalty: narrow(self.frequency_penalty)?,
                    n: self.n,
                    stream: self.stream,
                    stream_options: self.stream_options,
                    user: self.user.clone(),
                })
            }
        }
    };
}

reference_struct!(RefChat {
    #[serde(default, deserialize_with = "present")]
    model: Option<String>,
    #[serde(default, deserialize_with = "present")]
    messages: Option<Vec<Message>>,
});

reference_struct!(RefCompletion {
    #[serde(default, deserialize_with = "present")]
    model: Option<String>,
    #[serde(default, deserialize_with = "present")]
    prompt: Option<Prompt>,
    #[serde(default)]
    echo: bool,
    logprobs: Option<u32>,
});

impl Reference<ChatCompletionRequest> for RefChat {
    fn sampling(&self) -> Option<crate::openai::SamplingFields> {
        self.fields()
    }

    fn finish(self) -> Option<ChatCompletionRequest> {
        let sampling = self.fields()?;
        Some(ChatCompletionRequest {
            model: self.model?,
            messages: self.messages?,
            sampling,
        })
    }
}

impl Reference<CompletionRequest> for RefCompletion {
    fn sampling(&self) -> Option<crate::openai::SamplingFields> {
        self.fields()
    }

    fn finish(self) -> Option<CompletionRequest> {
        let sampling = self.fields()?;
        Some(CompletionRequest {
            model: self.model?,
            prompt: self.prompt?,
            echo: self.echo,
            logprobs: self.logprobs,
            sampling,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_and_skipped_bad_bytes_are_normalised_not_reported() {
        for text in [
            &br#"{"model":"a","model":"b","messages":[{"role":"user","content":"x"}]}"#[..],
            br#"{"model":"m","messages":[],"stream":null,"stream":true}"#,
            b"{\"model\":\"m\",\"prompt\":\"p\",\"x\":\"\xff\",\"echo\":true}",
            br#"{"model":"m","messages":[],"x":"\ud800"}"#,
            b"[\"m\",[]]",
            b"{",
        ] {
            openai_request(text);
        }
    }

    #[test]
    fn the_reference_keeps_the_last_of_a_repeat() {
        let text = r#"{"model":"a","prompt":"p","model":"b"}"#;
        let got = reference::<CompletionRequest, RefCompletion>(text).map(|r| r.model);
        assert_eq!(got.as_deref(), Some("b"));
        let bad_first = r#"{"model":null,"prompt":"p","model":"b"}"#;
        assert!(reference::<CompletionRequest, RefCompletion>(bad_first).is_none());
    }
}
