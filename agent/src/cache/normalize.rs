//! The form of a turn that semantic matching embeds: lowercased, contractions spelled out,
//! and the politeness and filler that do not change what is asked ("please", "can you",
//! "tell me") left out, so that paraphrases which differ only in those land closer
//! together. Negations, numbers and every content word stay; the lexical check reads the
//! turns as written.

/// Phrases dropped wherever they stand as whole words (longest first).
const FILLER: &[&str] = &[
    "i would like to know",
    "i'd like to know",
    "i want to know",
    "could you please",
    "can you please",
    "would you please",
    "could you",
    "can you",
    "would you",
    "will you",
    "tell me",
    "please",
    "kindly",
    "quickly",
    "briefly",
    "hey",
];

/// Contractions spelled out (negations kept as negations).
const CONTRACTIONS: &[(&str, &str)] = &[
    ("what's", "what is"),
    ("who's", "who is"),
    ("where's", "where is"),
    ("how's", "how is"),
    ("it's", "it is"),
    ("that's", "that is"),
    ("there's", "there is"),
    ("i'm", "i am"),
    ("don't", "do not"),
    ("doesn't", "does not"),
    ("isn't", "is not"),
    ("aren't", "are not"),
    ("can't", "cannot"),
    ("won't", "will not"),
];

/// The form of `turn` that is embedded.
pub fn for_embedding(turn: &str) -> String {
    let lower = turn.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '.' || c == '-'))
        .map(|w| w.trim_matches('.'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if let Some(n) = filler_at(&words[i..]) {
            i += n;
            continue;
        }
        match CONTRACTIONS.iter().find(|(c, _)| *c == words[i]) {
            Some((_, spelled)) => out.extend(spelled.split(' ')),
            None => out.push(words[i]),
        }

        i += 1;
    }
    if out.is_empty() {
        // Filler only ("Please."): embedded as written, not as the empty turn every other
        // filler-only turn would share.
        return lower.trim().to_owned();
    }
    out.join(" ")
}

/// How many of `words` a filler phrase at their start covers.
fn filler_at(words: &[&str]) -> Option<usize> {
    FILLER.iter().find_map(|phrase| {
        let n = phrase.split(' ').count();
        let here = words.get(..n)?;
        phrase.split(' ').eq(here.iter().copied()).then_some(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_goes_and_meaning_stays() {
        assert_eq!(
            for_embedding("Can you please tell me what's the capital of France?"),
            "what is the capital of france"
        );
        assert_eq!(
            for_embedding("Why doesn't it compile?"),
            "why does not it compile"
        );
        assert_eq!(
            for_embedding("Convert 3.5 km to miles."),
            "convert 3.5 km to miles"
        );
        assert_eq!(for_embedding("Pleased to meet you"), "pleased to meet you");
        assert_eq!(for_embedding("Please."), "please.");
    }
}
