//! What a cached answer is filed under, read from the checked request before any template
//! or tokenizer work, so that a hit costs neither. The key is the request's *scope*
//! (kind, every setting that shapes the answer, and the conversation before the last turn,
//! all spelled exactly) and its *turn* (the last user message, or the prompt). An exact hit
//! needs both equal; a semantic hit needs the scope equal and the turn close in meaning.

use inferpool_protocol::openai::{ValidChatRequest, ValidCompletionRequest, ValidSampling};
use serde::Serialize;

/// A reproducible request's cache key. Requests sampled without a seed have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptKey {
    scope: String,
    turn: String,
    /// Whether a semantic match may answer it: chats whose last message is the user's.
    semantic: bool,
}

/// The settings that change an answer (streaming and usage reporting do not).
#[derive(Serialize)]
struct Settings<'a> {
    temperature: f32,
    top_p: f32,
    top_k: Option<u32>,
    seed: Option<u64>,
    max_tokens: Option<u32>,
    stop: &'a [String],
    presence_penalty: f32,
    frequency_penalty: f32,
}

impl<'a> Settings<'a> {
    fn of(s: &'a ValidSampling) -> Option<Self> {
        // Sampled without a seed, two runs answer differently: nothing to reuse.
        if s.temperature > 0.0 && s.seed.is_none() {
            return None;
        }
        Some(Self {
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            seed: s.seed,
            max_tokens: s.max_tokens,
            stop: &s.stop,
            presence_penalty: s.presence_penalty,
            frequency_penalty: s.frequency_penalty,
        })
    }
}

/// Unit separator between scope and turn in the exact key: JSON never contains it raw.
const SEPARATOR: char = '\u{1f}';

impl PromptKey {
    /// The key of a chat request.
    pub fn chat(req: &ValidChatRequest) -> Option<Self> {
        let settings = Settings::of(&req.sampling)?;
        let (last, earlier) = req.messages.split_last()?;
        let earlier: Vec<(&str, &str)> = earlier
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        let scope = serde_json::to_string(&("chat", settings, earlier, &last.role)).ok()?;
        Some(Self {
            scope,
            turn: last.content.clone(),
            semantic: last.role == "user",
        })
    }

    /// The key of a text completion request (exact matches only: a prompt's wording is
    /// the whole request).
    pub fn completion(req: &ValidCompletionRequest) -> Option<Self> {
        let settings = Settings::of(&req.sampling)?;
        let scope = serde_json::to_string(&("completion", settings, req.echo)).ok()?;
        Some(Self {
            scope,
            turn: req.prompt.clone(),
            semantic: false,
        })
    }

    /// A key from its stored parts (a snapshot's entries).
    pub fn from_parts(scope: String, turn: String, semantic: bool) -> Self {
        Self {
            scope,
            turn,
            semantic,
        }
    }

    /// The exact key: scope and turn.
    pub fn exact(&self) -> String {
        let mut key = String::with_capacity(self.scope.len() + self.turn.len() + 1);
        key.push_str(&self.scope);
        key.push(SEPARATOR);
        key.push_str(&self.turn);
        key
    }

    /// Everything but the last turn.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The last turn.
    pub fn turn(&self) -> &str {
        &self.turn
    }

    /// Whether a semantic match may answer this request.
    pub fn semantic(&self) -> bool {
        self.semantic
    }
}

/// An exact key's scope and turn.
pub fn split_exact(key: &str) -> Option<(&str, &str)> {
    key.split_once(SEPARATOR)
}

#[cfg(test)]
mod tests {
    use inferpool_protocol::openai::Message;

    use super::*;

    fn sampling(temperature: f32, seed: Option<u64>) -> ValidSampling {
        ValidSampling {
            temperature,
            top_p: 1.0,
            top_k: None,
            seed,
            max_tokens: Some(16),
            stop: vec![],
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            stream: false,
            include_usage: false,
        }
    }

    fn chat(messages: &[(&str, &str)], sampling: ValidSampling) -> ValidChatRequest {
        ValidChatRequest {
            model: "m".into(),
            messages: messages
                .iter()
                .map(|(role, content)| Message {
                    role: (*role).into(),
                    content: (*content).into(),
                })
                .collect(),
            sampling,
            user: None,
        }
    }

    #[test]
    fn only_reproducible_requests_have_keys() {
        let q = [("user", "hi")];
        assert!(PromptKey::chat(&chat(&q, sampling(0.0, None))).is_some());
        assert!(PromptKey::chat(&chat(&q, sampling(0.7, Some(3)))).is_some());
        assert!(PromptKey::chat(&chat(&q, sampling(0.7, None))).is_none());
    }

    #[test]
    fn streaming_does_not_change_the_key_but_every_setting_and_earlier_turn_does() {
        let q = [("system", "be brief"), ("user", "hi")];
        let base = PromptKey::chat(&chat(&q, sampling(0.0, None))).unwrap();
        let mut streamed = sampling(0.0, None);
        streamed.stream = true;
        streamed.include_usage = true;
        assert_eq!(PromptKey::chat(&chat(&q, streamed)), Some(base.clone()));
        let mut longer = sampling(0.0, None);
        longer.max_tokens = Some(17);
        let mut stopped = sampling(0.0, None);
        stopped.stop = vec!["\n".into()];
        let other_system = chat(
            &[("system", "be long"), ("user", "hi")],
            sampling(0.0, None),
        );
        let others = [
            PromptKey::chat(&chat(&q, longer)),
            PromptKey::chat(&chat(&q, stopped)),
            PromptKey::chat(&other_system),
        ];
        for other in others {
            let other = other.unwrap();
            assert_ne!(other.scope(), base.scope());
            assert_eq!(other.turn(), base.turn());
        }
    }

    #[test]
    fn a_chat_and_a_completion_with_the_same_text_differ() {
        let c = ValidCompletionRequest {
            model: "m".into(),
            prompt: "hi".into(),
            echo: false,
            sampling: sampling(0.0, None),
            user: None,
        };
        let completion = PromptKey::completion(&c).unwrap();
        let chat = PromptKey::chat(&chat(&[("user", "hi")], sampling(0.0, None))).unwrap();
        assert_ne!(completion.exact(), chat.exact());
        assert!(chat.semantic() && !completion.semantic());
    }

    #[test]
    fn only_a_last_user_turn_may_match_semantically() {
        let q = [("user", "hi"), ("assistant", "hello")];
        assert!(
            !PromptKey::chat(&chat(&q, sampling(0.0, None)))
                .unwrap()
                .semantic()
        );
    }
}
