//! Precision and recall of semantic matching on the labelled pairs: for each pair, `b` is
//! asked after `a` was cached. A hit on a pair labelled `same: false` is a wrong answer.

use std::collections::BTreeMap;
use std::path::Path;

use inferpool_agent::cache::normalize::for_embedding;
use inferpool_agent::cache::semantic::dot;
use inferpool_agent::cache::verify::compatible;
use inferpool_agent::engine::embed::Embedder;
use serde::Deserialize;

/// One labelled pair.
#[derive(Debug, Clone, Deserialize)]
pub struct Pair {
    /// Cached first.
    pub a: String,
    /// Asked next.
    pub b: String,
    /// Whether `a`'s answer answers `b`.
    pub same: bool,
    /// paraphrase, reversed, negation, number, entity, unit, topic.
    pub kind: String,
}

/// Reads `bench/data/semantic-pairs.jsonl`.
pub fn read(path: &Path) -> anyhow::Result<Vec<Pair>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// A pair's cosine similarity and whether the lexical check lets it through.
struct Scored<'a> {
    pair: &'a Pair,
    cosine: f32,
    checked: bool,
}

fn score<'a>(embedder: &Embedder, pairs: &'a [Pair]) -> anyhow::Result<Vec<Scored<'a>>> {
    let mut scored = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(32) {
        let texts: Vec<String> = chunk
            .iter()
            .flat_map(|p| [for_embedding(&p.a), for_embedding(&p.b)])
            .collect();
        let vectors = embedder.embed(&texts)?.vectors;
        for (pair, v) in chunk.iter().zip(vectors.chunks_exact(2)) {
            scored.push(Scored {
                pair,
                cosine: dot(&v[0], &v[1]),
                checked: compatible(&pair.b, &pair.a),
            });
        }
    }
    Ok(scored)
}

/// Hits, wrong hits (% of hits) and recall (% of true pairs hit) at `threshold`.
fn at(scored: &[Scored<'_>], threshold: f32, with_check: bool) -> (usize, f64, f64) {
    let hit = |s: &&Scored<'_>| s.cosine >= threshold && (!with_check || s.checked);
    let hits: Vec<&Scored<'_>> = scored.iter().filter(hit).collect();
    let wrong = hits.iter().filter(|s| !s.pair.same).count();
    let same = scored.iter().filter(|s| s.pair.same).count().max(1);
    let right = hits.len() - wrong;
    let pct = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
    (hits.len(), pct(wrong, hits.len()), pct(right, same))
}

/// Prints the table by threshold, and which negatives get through at `default`.
pub fn report(
    title: &str,
    embedder: &Embedder,
    pairs: &[Pair],
    default: f32,
) -> anyhow::Result<()> {
    let scored = score(embedder, pairs)?;
    let same = pairs.iter().filter(|p| p.same).count();
    println!(
        "\n## Semantic matching, {title}: {} labelled pairs ({same} paraphrases)\n",
        pairs.len()
    );
    println!(
        "| threshold | hits (cosine) | wrong % | recall % | hits (checked) | wrong % | recall % |"
    );
    println!("|---|---|---|---|---|---|---|");
    for t in [0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98] {
        let (h, w, r) = at(&scored, t, false);
        let (hc, wc, rc) = at(&scored, t, true);
        println!("| {t:.2} | {h} | {w:.1} | {r:.1} | {hc} | {wc:.1} | {rc:.1} |");
    }
    let mut through: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for s in scored.iter().filter(|s| !s.pair.same) {
        let e = through.entry(s.pair.kind.as_str()).or_default();
        e.0 += usize::from(s.cosine >= default);
        e.1 += usize::from(s.cosine >= default && s.checked);
    }
    if std::env::var_os("INFERPOOL_BENCH_EXPLAIN").is_some() {
        for s in scored
            .iter()
            .filter(|s| s.cosine >= default && s.checked != s.pair.same)
        {
            println!(
                "explain {} {:.3} {:?} / {:?}",
                s.pair.kind, s.cosine, s.pair.a, s.pair.b
            );
        }
    }
    println!("\nNegatives at or above {default} (cosine alone / after the check), by kind:");
    for (kind, (cosine, checked)) in through {
        println!("- {kind}: {cosine} / {checked}");
    }
    Ok(())
}
