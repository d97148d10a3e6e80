//! What a generation is, as the engine, the scheduler and serving all see it: the request,
//! the events streamed back, why it finished and its priority. Near the bottom of the
//! crate (it names only the sampling settings), so that every layer can use these types
//! without importing another layer.

use inferpool_protocol::agent as pb;
use inferpool_protocol::priority::priority_name;

use crate::engine::sampling::SamplingParams;

/// Request priority (`x-inferpool-priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Served before everything else.
    Critical,
    /// Before normal traffic.
    High,
    /// The default.
    Normal,
    /// Background work.
    Low,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 4] = [Self::Critical, Self::High, Self::Normal, Self::Low];

    /// Position in `ALL` (0 is the most urgent).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The header spelling.
    pub fn as_str(self) -> &'static str {
        priority_name(self.into())
    }
}

/// The wire's priority (header or `Generate`) as the queue's: unspecified is normal.
impl From<pb::Priority> for Priority {
    fn from(p: pb::Priority) -> Self {
        match p {
            pb::Priority::Critical => Self::Critical,
            pb::Priority::High => Self::High,
            pb::Priority::Unspecified | pb::Priority::Normal => Self::Normal,
            pb::Priority::Low => Self::Low,
        }
    }
}

impl From<Priority> for pb::Priority {
    fn from(p: Priority) -> Self {
        match p {
            Priority::Critical => Self::Critical,
            Priority::High => Self::High,
            Priority::Normal => Self::Normal,
            Priority::Low => Self::Low,
        }
    }
}

/// A request the engine can run: tokens, limits and sampling, already validated.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// Prompt token ids (chat template applied).
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Tokens that end generation (end-of-turn, end-of-text).
    pub stop_tokens: Vec<u32>,
    /// How tokens are drawn.
    pub sampling: SamplingParams,
    /// Queue priority.
    pub priority: Priority,
    /// When the client stops waiting: still queued then, the request leaves the queue
    /// with `GenerationEvent::Expired` instead of running for nobody.
    pub deadline: Option<std::time::Instant>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FinishReason {
    /// A stop token was generated.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

/// What the engine streams back for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// One generated token.
    Token(u32),
    /// The end, with token counts.
    Finished {
        /// Why.
        reason: FinishReason,
        /// Prompt tokens processed.
        prompt_tokens: usize,
        /// Tokens generated.
        completion_tokens: usize,
    },
    /// The engine failed on this request's step.
    Failed(String),
    /// Its deadline passed while it waited in the queue.
    Expired,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_cross_the_wire_unchanged_and_unspecified_is_normal() {
        for p in Priority::ALL {
            assert_eq!(Priority::from(pb::Priority::from(p)), p);
        }
        assert_eq!(Priority::from(pb::Priority::Unspecified), Priority::Normal);
        let names = Priority::ALL.map(Priority::as_str);
        assert_eq!(names, ["critical", "high", "normal", "low"]);
    }
}
