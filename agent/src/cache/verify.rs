//! A cheap check of a semantic candidate before its answer is served. Sentence embeddings
//! place a question and its reversal ("Celsius to Fahrenheit" and "Fahrenheit to
//! Celsius"), its negation, or the same question about another number or unit almost on
//! top of each other; those differ in a few words that a lexical comparison sees at once.
//! A candidate is served only when both turns carry the same numbers in the same order,
//! the same negations (words, and prefixes such as in-correct), no word whose opposite the
//! other has, each other's units and names, the words on either side of a direction word
//! (to, from, than, ...) in the same order, and are not the same words reordered (roles
//! swapped). Other words may move freely, as rewordings move them.
//! `bench/cache` prints what this check costs in recall and saves in wrong answers.

use std::collections::BTreeSet;

/// Whether a cached answer to `cached` may answer `asked` (already close in meaning).
pub fn compatible(asked: &str, cached: &str) -> bool {
    let (a, c) = (Terms::of(asked), Terms::of(cached));
    a.numbers == c.numbers
        && a.negations == c.negations
        && a.marked.is_subset(&c.all)
        && c.marked.is_subset(&a.all)
        && !prefix_negated(&a.all, &c.all)
        && !opposed(&a.all, &c.all)
        && arguments_in_order(&a, &c)
        && !permuted(&a.words, &c.words)
}

/// The same content words, each as often, in another order that is not a phrase moved
/// from one end to the other: roles swapped ("does vitamin C help absorb iron" / "does
/// iron help absorb vitamin C"). A rewording changes words as well, or moves a phrase to
/// the front ("California's minimum wage" / "the minimum wage in California").
fn permuted(a: &[String], b: &[String]) -> bool {
    let mut sorted = (a.to_vec(), b.to_vec());
    sorted.0.sort_unstable();
    sorted.1.sort_unstable();
    let rotated = (1..a.len()).any(|k| a[k..].iter().chain(&a[..k]).eq(b.iter()));
    a != b && sorted.0 == sorted.1 && !rotated
}

/// What the check compares, per turn.
#[derive(Debug, Default, PartialEq)]
struct Terms {
    /// Numbers, spelled as digits, in order.
    numbers: Vec<String>,
    /// How many negating words.
    negations: usize,
    /// Units, and names (words capitalised inside a sentence), lowercased: the other turn
    /// must have each of them (in any case).
    marked: BTreeSet<String>,
    /// Every word, lowercased.
    all: BTreeSet<String>,
    /// Content words (lowercased, stop words left out), in order.
    words: Vec<String>,
    /// Words whose order carries meaning: the content words next to a direction word.
    arguments: BTreeSet<String>,
    /// A direction word came after the last content word.
    after_direction: bool,
    /// The last word was a number (a time word after one is a unit: "5 days").
    after_number: bool,
}

impl Terms {
    fn of(text: &str) -> Self {
        let mut terms = Self::default();
        let mut sentence_start = true;
        let mut rest = text;
        while !rest.is_empty() {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '.'))
                .unwrap_or(rest.len());
            let (raw, after) = rest.split_at(end);
            let word = raw.trim_matches(|c| c == '.' || c == '\'');
            let word = word.strip_suffix("'s").unwrap_or(word);
            if !word.is_empty() {
                terms.add(word, sentence_start);
                sentence_start = raw.ends_with('.');
            }
            // `?`, `!` and `:` end a sentence too: the next word may be capitalised.
            let separator = after.chars().next();
            if separator.is_some_and(|c| matches!(c, '?' | '!' | ':' | '\n')) {
                sentence_start = true;
            }
            rest = after
                .get(separator.map_or(0, char::len_utf8)..)
                .unwrap_or_default();
        }
        terms
    }

    fn add(&mut self, word: &str, sentence_start: bool) {
        let lower = word.to_lowercase();
        let after_number = std::mem::take(&mut self.after_number);
        if let Some(n) = number(&lower) {
            self.numbers.push(n);
            self.after_number = true;
            return;
        }
        if is_negation(&lower) {
            self.negations += 1;
            return;
        }
        self.all.insert(lower.clone());
        if DIRECTIONS.contains(&lower.as_str()) {
            self.arguments.extend(self.words.last().cloned());
            self.after_direction = true;
            return;
        }
        let capitalised = word.chars().next().is_some_and(char::is_uppercase);
        let stop = STOP_WORDS.contains(&lower.as_str());
        let unit = UNITS.contains(&lower.as_str())
            || (after_number && TIME_UNITS.contains(&lower.as_str()));
        if unit || (capitalised && !sentence_start && !stop) {
            self.marked.insert(lower.clone());
        }
        if !stop {
            if std::mem::take(&mut self.after_direction) {
                self.arguments.insert(lower.clone());
            }
            self.words.push(lower);
        }
    }
}

/// The arguments of either turn that both turns have appear in the same relative order
/// (each word's first place).
fn arguments_in_order(a: &Terms, b: &Terms) -> bool {
    let arguments: BTreeSet<&String> = a.arguments.union(&b.arguments).collect();
    let order = |words: &[String], other: &[String]| -> Vec<String> {
        let mut seen = BTreeSet::new();
        words
            .iter()
            .filter(|w| arguments.contains(w) && other.contains(w) && seen.insert(w.as_str()))
            .cloned()
            .collect()
    };
    order(&a.words, &b.words) == order(&b.words, &a.words)
}

/// One turn has a word that the other has with a negating prefix (correctly, incorrectly).
fn prefix_negated(a: &BTreeSet<String>, b: &BTreeSet<String>) -> bool {
    let negates = |x: &BTreeSet<String>, y: &BTreeSet<String>| {
        x.iter().any(|w| {
            NEGATING_PREFIXES
                .iter()
                .filter_map(|p| w.strip_prefix(p))
                .any(|stem| stem.len() > 2 && y.contains(stem))
        })
    };
    negates(a, b) || negates(b, a)
}

/// One turn has a word and the other its opposite (and not the word itself).
fn opposed(a: &BTreeSet<String>, b: &BTreeSet<String>) -> bool {
    let has = |set: &BTreeSet<String>, w: &str| set.contains(w);
    OPPOSITES.iter().any(|(x, y)| {
        (has(a, x) && has(b, y) && !has(b, x) && !has(a, y))
            || (has(a, y) && has(b, x) && !has(b, y) && !has(a, x))
    })
}

/// Words whose swap turns a question around.
const OPPOSITES: &[(&str, &str)] = &[
    ("before", "after"),
    ("largest", "smallest"),
    ("biggest", "smallest"),
    ("longest", "shortest"),
    ("highest", "lowest"),
    ("hottest", "coldest"),
    ("oldest", "youngest"),
    ("best", "worst"),
    ("most", "least"),
    ("more", "less"),
    ("first", "last"),
    ("minimum", "maximum"),
    ("min", "max"),
    ("increase", "decrease"),
    ("raise", "lower"),
    ("buy", "sell"),
    ("upload", "download"),
    ("import", "export"),
    ("encrypt", "decrypt"),
    ("encode", "decode"),
    ("compress", "decompress"),
    ("add", "remove"),
    ("enable", "disable"),
    ("open", "close"),
    ("start", "stop"),
    ("push", "pull"),
    ("send", "receive"),
    ("input", "output"),
    ("win", "lose"),
    ("above", "below"),
    ("over", "under"),
    ("early", "late"),
    ("earlier", "later"),
    ("faster", "slower"),
    ("cheaper", "pricier"),
    ("cheapest", "priciest"),
    ("hot", "cold"),
    ("true", "false"),
    ("in", "out"),
    ("on", "off"),
    ("up", "down"),
    ("left", "right"),
    ("north", "south"),
    ("east", "west"),
    ("positive", "negative"),
    ("gain", "lose"),
    ("lend", "borrow"),
    ("import", "export"),
    ("ascending", "descending"),
    ("inhale", "exhale"),
    ("arrive", "depart"),
    ("rise", "fall"),
];

const DIRECTIONS: &[&str] = &[
    "to", "from", "into", "onto", "than", "vs", "versus", "against", "toward", "towards", "per",
    "divided", "minus",
];

const NEGATING_PREFIXES: &[&str] = &["un", "in", "im", "il", "ir", "dis", "non", "non-"];

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
    "free",
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

/// Units of time: units only after a number ("what year" asks, "5 years" measures).
const TIME_UNITS: &[&str] = &[
    "second", "seconds", "minute", "minutes", "hour", "hours", "day", "days", "week", "weeks",
    "month", "months", "year", "years", "decade", "decades",
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
            (
                "What is the capital of Australia?",
                "what's the capital of australia",
            ),
            (
                "How do I create a virtual environment in Python?",
                "how do i make a python virtual environment",
            ),
            (
                "What's California's minimum wage?",
                "What is the minimum wage in California?",
            ),
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
            ("Use a semicolon correctly", "Use a semicolon incorrectly"),
            (
                "Who was president before Lincoln?",
                "Who was president after Lincoln?",
            ),
            ("Convert a list to a set", "Convert a set to a list"),
            (
                "Does vitamin C help absorb iron?",
                "Does iron help absorb vitamin C?",
            ),
            ("How do I zoom in on a Mac?", "How do I zoom out on a Mac?"),
            (
                "Did Brutus betray Julius Caesar?",
                "Did Julius Caesar betray Brutus?",
            ),
        ] {
            assert!(!compatible(a, b), "{a} / {b}");
        }
    }
}
