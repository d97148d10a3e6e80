//! A cheap check of a semantic candidate before its answer is served. Sentence embeddings
//! place a question and its reversal ("Celsius to Fahrenheit" and "Fahrenheit to
//! Celsius"), its negation, or the same question about another number or unit almost on
//! top of each other; those differ in a few words that a lexical comparison sees at once.
//! A candidate is served only when both turns carry the same numbers, the same negations,
//! the same units and names, and the words they share in the same order.

use std::collections::BTreeSet;

/// Whether a cached answer to `cached` may answer `asked` (already close in meaning).
pub fn compatible(asked: &str, cached: &str) -> bool {
    let (a, c) = (Terms::of(asked), Terms::of(cached));
    a.numbers == c.numbers
        && a.negations == c.negations
        && a.marked == c.marked
        && same_order(&a.words, &c.words)
}

/// What the check compares, per turn.
#[derive(Debug, Default, PartialEq)]
struct Terms {
    /// Numbers, spelled as digits, in order.
    numbers: Vec<String>,
    /// How many negating words.
    negations: usize,
    /// Units, and names (words capitalised inside a sentence).
    marked: BTreeSet<String>,
    /// Content words (lowercased, stop words left out), in order.
    words: Vec<String>,
}

impl Terms {
    fn of(text: &str) -> Self {
        let mut terms = Self::default();
        let mut sentence_start = true;
        for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '.')) {
            let word = raw.trim_matches(|c| c == '.' || c == '\'');
            let ends_sentence = raw.ends_with('.');
            if !word.is_empty() {
                terms.add(word, sentence_start);
                sentence_start = ends_sentence;
            }
        }
        terms
    }

    fn add(&mut self, word: &str, sentence_start: bool) {
        let lower = word.to_lowercase();
        if let Some(n) = number(&lower) {
            self.numbers.push(n);
            return;
        }
        if is_negation(&lower) {
            self.negations += 1;
            return;
        }
        let capitalised = word.chars().next().is_some_and(char::is_uppercase);
        if UNITS.contains(&lower.as_str()) || (capitalised && !sentence_start && lower != "i") {
            self.marked.insert(lower.clone());
        }
        if !STOP_WORDS.contains(&lower.as_str()) {
            self.words.push(lower);
        }
    }
}

/// The words both turns have appear in the same relative order (each word's first place).
fn same_order(a: &[String], b: &[String]) -> bool {
    let first = |words: &[String], other: &[String]| -> Vec<String> {
        let mut seen = BTreeSet::new();
        words
            .iter()
            .filter(|w| other.contains(w) && seen.insert(w.as_str()))
            .cloned()
            .collect()
    };
    first(a, b) == first(b, a)
}

fn number(word: &str) -> Option<String> {
    if word.chars().any(|c| c.is_ascii_digit()) {
        return Some(word.replace(',', ""));
    }
    let n = NUMBER_WORDS.iter().position(|w| *w == word)?;
    Some(n.to_string())
}

fn is_negation(word: &str) -> bool {
    NEGATIONS.contains(&word) || word.ends_with("n't")
}

const NUMBER_WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

const NEGATIONS: &[&str] = &[
    "not",
    "no",
    "never",
    "without",
    "except",
    "cannot",
    "none",
    "neither",
    "nor",
    "excluding",
    "lacking",
    "nothing",
    "nobody",
    "nowhere",
    "unless",
];

const UNITS: &[&str] = &[
    "mm",
    "cm",
    "m",
    "km",
    "meter",
    "meters",
    "metre",
    "metres",
    "kilometer",
    "kilometers",
    "kilometre",
    "kilometres",
    "centimeter",
    "centimeters",
    "millimeter",
    "millimeters",
    "inch",
    "inches",
    "foot",
    "feet",
    "yard",
    "yards",
    "mile",
    "miles",
    "mg",
    "g",
    "kg",
    "gram",
    "grams",
    "kilogram",
    "kilograms",
    "pound",
    "pounds",
    "lb",
    "lbs",
    "ounce",
    "ounces",
    "oz",
    "ton",
    "tons",
    "tonne",
    "tonnes",
    "ml",
    "l",
    "liter",
    "liters",
    "litre",
    "litres",
    "gallon",
    "gallons",
    "quart",
    "quarts",
    "pint",
    "pints",
    "cup",
    "cups",
    "tablespoon",
    "tablespoons",
    "tbsp",
    "teaspoon",
    "teaspoons",
    "tsp",
    "celsius",
    "fahrenheit",
    "kelvin",
    "second",
    "seconds",
    "minute",
    "minutes",
    "hour",
    "hours",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "decade",
    "decades",
    "byte",
    "bytes",
    "kb",
    "mb",
    "gb",
    "tb",
    "percent",
    "mph",
    "kph",
    "dollars",
    "dollar",
    "euros",
    "euro",
    "yen",
    "usd",
    "eur",
    "gbp",
    "calories",
    "kcal",
    "watts",
    "kwh",
    "volts",
    "amps",
    "acres",
    "hectares",
];

const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "do", "does", "did", "i",
    "me", "my", "you", "your", "we", "us", "our", "it", "its", "this", "that", "these", "those",
    "of", "in", "on", "at", "for", "with", "about", "as", "and", "or", "so", "if", "what",
    "what's", "which", "who", "whom", "how", "why", "when", "where", "can", "could", "would",
    "will", "should", "shall", "may", "might", "must", "please", "tell", "give", "explain", "show",
    "help", "want", "need", "know", "like", "some", "any", "there", "here", "to", "from", "into",
    "by", "up", "down", "out", "get", "make", "way", "best", "just", "really", "kindly", "quick",
    "quickly", "briefly", "short", "simple", "hey", "hi", "hello", "thanks", "thank", "i'm", "i'd",
    "it's", "let's", "much", "many", "very", "also", "then", "than",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paraphrases_pass() {
        for (a, b) in [
            ("How do I boil an egg?", "how do i boil an egg"),
            (
                "What is the capital of France?",
                "Tell me the capital of France, please.",
            ),
            ("Convert 5 km to miles", "Please convert 5 km into miles."),
        ] {
            assert!(compatible(a, b), "{a} / {b}");
        }
    }

    #[test]
    fn reversals_negations_numbers_units_and_names_are_refused() {
        for (a, b) in [
            (
                "Convert Celsius to Fahrenheit",
                "Convert Fahrenheit to Celsius",
            ),
            (
                "Which fruits are high in fiber?",
                "Which fruits are not high in fiber?",
            ),
            ("What is 12 plus 7?", "What is 12 plus 8?"),
            ("How far is 5 km?", "How far is 5 miles?"),
            (
                "Who painted the Mona Lisa, Leonardo or Michelangelo?",
                "Who painted the Mona Lisa?",
            ),
            ("List the top five movies", "List the top ten movies"),
            ("Why doesn't my code compile?", "Why does my code compile?"),
        ] {
            assert!(!compatible(a, b), "{a} / {b}");
        }
    }
}
