//! The chart's Grafana dashboard, read as the metric names its queries use, so that a test
//! can hold them against what the real gateway and agents expose.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::parts::repo_root;

/// Every metric name the dashboard's queries (panels and template variables) select.
pub fn metric_names() -> anyhow::Result<BTreeSet<String>> {
    let path = repo_root().join("charts/inferpool/files/dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    anyhow::ensure!(!queries.is_empty(), "the dashboard has no queries");
    Ok(queries.iter().flat_map(|q| selected(q)).collect())
}

/// The strings under `expr` keys, and template variables' `query` strings.
fn collect_queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query", Value::String(q)) => out.push(q.clone()),
                    _ => collect_queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

/// The metric names in a PromQL query: each name before a `{` selector, and the metric of
/// `label_values(metric, label)`.
fn selected(query: &str) -> Vec<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    for (at, _) in query.match_indices('{') {
        let before = &query[..at];
        let start = before.rfind(|c: char| !is_name(c)).map_or(0, |i| i + 1);
        names.push(before[start..].to_owned());
    }
    if let Some(rest) = query.strip_prefix("label_values(") {
        names.extend(rest.split(',').next().map(|m| m.trim().to_owned()));
    }
    names.retain(|n| !n.is_empty());
    names
}

/// The series names in a Prometheus or OpenMetrics exposition.
pub fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The agent's NVML gauges, which no agent without a GPU exposes: the dashboard may query
/// them when the agent registers them under these names.
pub fn agent_gpu_gauges() -> BTreeSet<String> {
    let names = inferpool_agent::serving::device_metrics::GPU_GAUGES.iter();
    names.map(|n| format!("inferpool_agent_{n}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_from_selectors_and_label_values() {
        let q =
            "sum by (pool) (rate(a_total{pool=~\"$pool\"}[5m])) / clamp_min(vllm:b{x=\"1\"}, 1)";
        assert_eq!(selected(q), ["a_total", "vllm:b"]);
        assert_eq!(selected("label_values(c_total, pool)"), ["c_total"]);
        let text = "# HELP a x\na_total{pool=\"p\"} 1\nb 2\n# EOF\n";
        assert_eq!(
            exposed(text),
            BTreeSet::from(["a_total".into(), "b".into()])
        );
    }
}
