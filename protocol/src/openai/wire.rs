//! Reading the completion requests from JSON field by field. The sampling fields are shared
//! by both requests and kept in one struct; serde's `flatten` would do that, but it
//! buffers every field of the request into an intermediate tree first, which made parsing
//! the gateway's and the agents' costliest step per request after the network. Unknown
//! fields are ignored, as with `flatten`; a field given twice keeps its last value.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::completions::{CompletionRequest, Prompt};
use super::{ChatCompletionRequest, Message, SamplingFields};

/// A field name, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// A 32-bit float field. A JSON number beyond `f32`'s range is refused: read as infinity
/// it would slip past nothing (validation refuses it) but would be written back as
/// `null`, so a request forwarded as read would change meaning (found by fuzzing).
struct F32(Option<f32>);

impl<'de> de::Deserialize<'de> for F32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Some(wide) = Option::<f64>::deserialize(deserializer)? else {
            return Ok(Self(None));
        };
        let narrow = wide as f32;
        if narrow.is_infinite() {
            return Err(de::Error::custom(format!(
                "{wide} is out of range for a 32-bit float"
            )));
        }
        Ok(Self(Some(narrow)))
    }
}

impl SamplingFields {
    /// Reads the value of field `key` when it is a sampling field; `false` when not.
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "temperature" => self.temperature = map.next_value::<F32>()?.0,
            "top_p" => self.top_p = map.next_value::<F32>()?.0,
            "top_k" => self.top_k = map.next_value()?,
            "seed" => self.seed = map.next_value()?,
            "max_tokens" => self.max_tokens = map.next_value()?,
            "max_completion_tokens" => self.max_completion_tokens = map.next_value()?,
            "stop" => self.stop = map.next_value()?,
            "presence_penalty" => self.presence_penalty = map.next_value::<F32>()?.0,
            "frequency_penalty" => self.frequency_penalty = map.next_value::<F32>()?.0,
            "n" => self.n = map.next_value()?,
            "stream" => self.stream = map.next_value()?,
            "stream_options" => self.stream_options = map.next_value()?,
            "user" => self.user = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Reads a request's fields: `own` takes those of the request itself (`false` when the
/// field is not one), the sampling fields go to `sampling`, others are skipped.
fn read_fields<'de, A: MapAccess<'de>>(
    mut map: A,
    sampling: &mut SamplingFields,
    mut own: impl FnMut(&str, &mut A) -> Result<bool, A::Error>,
) -> Result<(), A::Error> {
    while let Some(Key(key)) = map.next_key()? {
        if !own(&key, &mut map)? && !sampling.read(&key, &mut map)? {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(())
}

fn missing<E: de::Error>(field: &'static str) -> E {
    E::missing_field(field)
}

impl<'de> de::Deserialize<'de> for ChatCompletionRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ChatVisitor)
    }
}

struct ChatVisitor;

impl<'de> Visitor<'de> for ChatVisitor {
    type Value = ChatCompletionRequest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chat completion request")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let (mut model, mut messages) = (None, None::<Vec<Message>>);
        let mut sampling = SamplingFields::default();
        read_fields(map, &mut sampling, |key, map| {
            match key {
                "model" => model = Some(map.next_value()?),
                "messages" => messages = Some(map.next_value()?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(ChatCompletionRequest {
            model: model.ok_or_else(|| missing("model"))?,
            messages: messages.ok_or_else(|| missing("messages"))?,
            sampling,
        })
    }
}

impl<'de> de::Deserialize<'de> for CompletionRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(CompletionVisitor)
    }
}

struct CompletionVisitor;

impl<'de> Visitor<'de> for CompletionVisitor {
    type Value = CompletionRequest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a completion request")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let (mut model, mut prompt) = (None, None::<Prompt>);
        let (mut echo, mut logprobs) = (false, None);
        let mut sampling = SamplingFields::default();
        read_fields(map, &mut sampling, |key, map| {
            match key {
                "model" => model = Some(map.next_value()?),
                "prompt" => prompt = Some(map.next_value()?),
                "echo" => echo = map.next_value()?,
                "logprobs" => logprobs = map.next_value()?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(CompletionRequest {
            model: model.ok_or_else(|| missing("model"))?,
            prompt: prompt.ok_or_else(|| missing("prompt"))?,
            echo,
            logprobs,
            sampling,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::openai::{Stop, StreamOptions};

    #[test]
    fn requests_read_back_as_written_and_unknown_fields_are_skipped() {
        let chat = ChatCompletionRequest {
            model: "m".into(),
            messages: vec![Message {
                role: "user".into(),
                content: "hi".into(),
            }],
            sampling: SamplingFields {
                temperature: Some(0.5),
                top_k: Some(4),
                seed: Some(7),
                max_tokens: Some(3),
                stop: Some(Stop::Many(vec!["a".into()])),
                stream: true,
                stream_options: Some(StreamOptions {
                    include_usage: true,
                }),
                user: Some("u".into()),
                ..SamplingFields::default()
            },
        };
        let mut value = serde_json::to_value(&chat).unwrap();
        value["tools"] = json!([{"type": "function"}]);
        value["logit_bias"] = json!({"1": 2});
        assert_eq!(
            serde_json::from_value::<ChatCompletionRequest>(value).unwrap(),
            chat
        );
        let text = r#"{"model":"m","prompt":["p"],"echo":true,"top_p":null,"suffix":"x"}"#;
        let completion: CompletionRequest = serde_json::from_str(text).unwrap();
        assert_eq!(completion.prompt, Prompt::Many(vec!["p".into()]));
        assert!(completion.echo && completion.sampling.top_p.is_none());
        assert!(!completion.sampling.stream);
    }

    #[test]
    fn escaped_names_count_and_bad_values_are_errors() {
        let escaped = r#"{"mod\u0065l":"m","messages":[],"stream":true,"stream":false}"#;
        let chat: ChatCompletionRequest = serde_json::from_str(escaped).unwrap();
        assert_eq!(chat.model, "m");
        assert!(!chat.sampling.stream, "the last of a repeated field counts");
        let cases = [
            (r#"{"messages":[]}"#, "missing field `model`"),
            (r#"{"model":"m"}"#, "missing field `messages`"),
            (
                r#"{"model":"m","messages":[],"max_tokens":"3"}"#,
                "invalid type",
            ),
            (
                r#"{"model":"m","messages":[],"stream":null}"#,
                "invalid type",
            ),
            (r#"["m"]"#, "invalid type"),
            (
                r#"{"model":"m","messages":[],"temperature":1e39}"#,
                "out of range for a 32-bit float",
            ),
        ];
        for (text, error) in cases {
            let e = serde_json::from_str::<ChatCompletionRequest>(text).unwrap_err();
            assert!(e.to_string().contains(error), "{text}: {e}");
        }
        let e = serde_json::from_str::<CompletionRequest>(r#"{"model":"m"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `prompt`"), "{e}");
    }
}
