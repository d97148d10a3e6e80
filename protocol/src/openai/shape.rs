//! The JSON of chat and text completion answers, whole or as streamed chunks, shared by
//! the agent and the gateway so that both answer in exactly the same shape.

use super::{
    ChatChoice, ChatCompletion, ChatCompletionChunk, ChunkChoice, Completion, Delta, Message,
    TextChoice, Usage,
};

/// Chat or plain-text completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

/// The fixed parts of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseShape {
    /// Chat or completion.
    pub kind: Kind,
    /// Request id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// Served model name.
    pub model: String,
}

impl ResponseShape {
    /// The whole (non-streamed) answer, as JSON text (written straight from the structs:
    /// no `serde_json::Value` tree on the way).
    pub fn whole(&self, text: String, finish: &str, usage: Usage) -> String {
        let finish = Some(finish.to_owned());
        let json = match self.kind {
            Kind::Chat => serde_json::to_string(&ChatCompletion {
                id: self.id.clone(),
                object: "chat.completion".to_owned(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    message: Message {
                        role: "assistant".to_owned(),
                        content: text,
                    },
                    finish_reason: finish,
                }],
                usage,
            }),
            Kind::Completion => serde_json::to_string(&self.completion(text, finish, Some(usage))),
        };
        json.unwrap_or_default()
    }

    fn completion(&self, text: String, finish: Option<String>, usage: Option<Usage>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![TextChoice {
                index: 0,
                text,
                logprobs: None,
                finish_reason: finish,
            }],
            usage,
        }
    }

    /// One streamed chunk: new text (`role` on a chat stream's first chunk), or the end
    /// (`finish`) with an empty delta.
    pub fn chunk(&self, text: Option<String>, role: bool, finish: Option<&str>) -> String {
        let finish = finish.map(str::to_owned);
        let value = match self.kind {
            Kind::Chat => serde_json::to_string(&ChatCompletionChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".to_owned(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChunkChoice {
                    index: 0,
                    delta: Delta {
                        role: role.then(|| "assistant".to_owned()),
                        content: text,
                    },
                    finish_reason: finish,
                }],
                usage: None,
            }),
            Kind::Completion => {
                serde_json::to_string(&self.completion(text.unwrap_or_default(), finish, None))
            }
        };
        value.unwrap_or_default()
    }

    /// The final usage chunk: no choices, just the counts.
    pub fn usage_chunk(&self, usage: Usage) -> String {
        let value = match self.kind {
            Kind::Chat => serde_json::to_string(&ChatCompletionChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".to_owned(),
                created: self.created,
                model: self.model.clone(),
                choices: Vec::new(),
                usage: Some(usage),
            }),
            Kind::Completion => {
                let mut c = self.completion(String::new(), None, Some(usage));
                c.choices.clear();
                serde_json::to_string(&c)
            }
        };
        value.unwrap_or_default()
    }
}
