//! The prompts: short story requests, long prompts made of one paragraph repeated, and
//! shared-prefix requests (one long system prompt, a distinct short user turn each). The
//! long texts are sized in tokens by asking the agent to count them (usage.prompt_tokens),
//! since the benchmark has no tokenizer of its own.

use serde_json::{Value, json};

use crate::load::{Target, one_request};

/// About this many tokens in a long prompt, template included.
const LONG_PROMPT_TOKENS: usize = 1100;
/// About this many tokens of system prompt in a shared-prefix request.
const SYSTEM_PROMPT_TOKENS: usize = 600;
/// Tokens generated per shared-prefix request.
pub const SHARED_MAX_TOKENS: u32 = 16;
/// Most tokens a shared-prefix request (prompt and answer) may take: a llama.cpp slot
/// holds 1024 (`-c 16384` over 16 slots), and its chat template may count a few more.
const SHARED_BUDGET: usize = 900;

const NAMES: [&str; 8] = ["Ada", "Bo", "Cy", "Di", "Ed", "Fay", "Gus", "Hal"];
const ITEMS: [&str; 8] = [
    "hammer",
    "chisel",
    "hand saw",
    "spirit level",
    "vice",
    "wrench",
    "plane",
    "drill",
];

/// The repeated unit of the long prompts.
const PARAGRAPH: &str = "The lighthouse on the northern cape was built in 1873 from granite \
    quarried on the island itself. Its lamp burned whale oil at first, then kerosene, and \
    finally electricity after the cable reached the cape in 1952. The keepers lived in the \
    cottage at its foot with their families, rowed to the mainland once a fortnight for \
    supplies, and kept a logbook in which every passing ship, every storm and every failure \
    of the lamp was written down in a careful hand.\n";

/// The repeated unit of the shared system prompt: a few distinct sentences.
const SYSTEM_SENTENCES: &str = "You are the support assistant of Harbor Tools, a company \
    that sells hand tools and workshop equipment. Answer in plain English, in at most three \
    sentences, and never invent a product, a price or a policy. Orders ship within two \
    working days from the warehouse in Rotterdam, and returns are accepted for thirty days. \
    When a customer reports a broken tool, ask for the order number and a photo before \
    offering a replacement. If a question is outside tools, orders or returns, say politely \
    that you can only help with those.\n";

/// A short request whose answer can run long (the 1-, 4- and 16-stream loads).
pub fn short_story(id: usize) -> Value {
    let name = NAMES[id % NAMES.len()];
    json!([{"role": "user", "content": format!(
        "Request {id}: write a long, detailed story about a lighthouse keeper named {name}.")}])
}

/// A long prompt: `repeats` paragraphs after a distinct first line, so that no two
/// requests share a KV block (the agent's prefix cache would otherwise keep one copy of
/// what llama.cpp's slots hold sixteen of, and the memory figures would not compare).
pub fn long_prompt(id: usize, repeats: usize) -> Value {
    let name = NAMES[id % NAMES.len()];
    json!([{"role": "user", "content": format!(
        "Document {id}, filed by {name}:\n{}Summarize the document above in one sentence.",
        PARAGRAPH.repeat(repeats))}])
}

/// The same system prompt for every id, then a user turn of the id's own.
pub fn shared_prefix(id: usize, repeats: usize) -> Value {
    let name = NAMES[id % NAMES.len()];
    let item = ITEMS[(id / NAMES.len()) % ITEMS.len()];
    json!([
        {"role": "system", "content": SYSTEM_SENTENCES.repeat(repeats)},
        {"role": "user", "content": format!(
            "Customer {id} ({name}) asks: how long does the delivery of a {item} take?")},
    ])
}

/// The sizes the long texts came to.
#[derive(Debug, Clone, Copy)]
pub struct Prompts {
    /// Paragraphs in a long prompt.
    pub long_repeats: usize,
    /// Tokens of one long prompt, template included.
    pub long_tokens: usize,
    /// Repeats of the sentences in the system prompt.
    pub system_repeats: usize,
    /// Tokens of the system prompt's text alone (estimated: the whole less the rest).
    pub system_tokens: usize,
    /// Tokens of one whole shared-prefix prompt.
    pub shared_tokens: usize,
}

/// Sizes the long texts on `target` (the agent, which serves the same GGUF's tokenizer
/// and chat template as llama.cpp).
pub fn calibrate(target: &Target) -> anyhow::Result<Prompts> {
    let long = fit(target, |r| long_prompt(0, r))?;
    let long_repeats = long.repeats_for(LONG_PROMPT_TOKENS.saturating_sub(long.fixed));
    let system = fit(target, |r| shared_prefix(0, r))?;
    let system_repeats = system.repeats_for(SYSTEM_PROMPT_TOKENS);
    let shared_tokens = prompt_tokens(target, &shared_prefix(0, system_repeats))?;
    if shared_tokens + SHARED_MAX_TOKENS as usize > SHARED_BUDGET {
        anyhow::bail!(
            "a shared-prefix request takes {shared_tokens} prompt tokens, over the budget"
        );
    }
    Ok(Prompts {
        long_repeats,
        long_tokens: prompt_tokens(target, &long_prompt(0, long_repeats))?,
        system_repeats,
        system_tokens: shared_tokens.saturating_sub(system.fixed),
        shared_tokens,
    })
}

/// Tokens of a prompt built of repeats of one text and a fixed rest.
struct Fit {
    per_repeat: usize,
    fixed: usize,
}

impl Fit {
    /// Repeats that come nearest `tokens` tokens of repeated text (one at least).
    fn repeats_for(&self, tokens: usize) -> usize {
        ((tokens + self.per_repeat / 2) / self.per_repeat).max(1)
    }
}

/// Counts the prompts of one and of two repeats; the difference is one repeat's share.
fn fit(target: &Target, build: impl Fn(usize) -> Value) -> anyhow::Result<Fit> {
    let one = prompt_tokens(target, &build(1))?;
    let two = prompt_tokens(target, &build(2))?;
    let per_repeat = two.saturating_sub(one).max(1);
    Ok(Fit {
        per_repeat,
        fixed: one.saturating_sub(per_repeat),
    })
}

/// The server's own count of `messages`' prompt tokens.
fn prompt_tokens(target: &Target, messages: &Value) -> anyhow::Result<usize> {
    let sample = one_request(target, messages, 1)?;
    if sample.prompt_tokens == 0 {
        anyhow::bail!("the server reported no usage.prompt_tokens");
    }
    Ok(sample.prompt_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_come_nearest_the_goal() {
        let fit = Fit {
            per_repeat: 110,
            fixed: 30,
        };
        assert_eq!(fit.repeats_for(600), 5);
        assert_eq!(fit.repeats_for(1100 - 30), 10);
        assert_eq!(fit.repeats_for(0), 1);
    }

    #[test]
    fn shared_prefix_requests_differ_only_in_the_user_turn() {
        let (a, b) = (shared_prefix(0, 3), shared_prefix(9, 3));
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1], b[1]);
        assert_ne!(long_prompt(0, 2), long_prompt(1, 2));
    }
}
