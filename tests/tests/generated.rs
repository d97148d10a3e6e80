//! Files generated from the code stay in step with it, and the examples stay valid.

use inferpool_e2e::parts::repo_root;
use inferpool_operator::crd::{CRD_PATH, REGENERATE, crd_yaml};
use inferpool_operator::manifest::parse_pools;

#[test]
fn committed_crd_matches_the_generated_one() -> anyhow::Result<()> {
    let committed = std::fs::read_to_string(repo_root().join(CRD_PATH))?;
    assert!(
        committed == crd_yaml()?,
        "{CRD_PATH} is stale: run `{REGENERATE}`"
    );
    Ok(())
}

#[test]
fn the_chart_carries_the_generated_crd_and_rbac_rules() -> anyhow::Result<()> {
    let chart = repo_root().join("charts/inferpool");
    let read = |p: &str| std::fs::read_to_string(chart.join(p));
    assert!(
        read("crds/inferencepools.inferpool.dev.yaml")? == crd_yaml()?,
        "chart CRD is stale: run `{REGENERATE}`"
    );
    use inferpool_operator::rbac::{Rules, rules_yaml};
    for (file, rules) in [
        ("files/clusterrole-rules.yaml", Rules::Controller),
        ("files/lease-role-rules.yaml", Rules::Lease),
        ("files/gateway-clusterrole-rules.yaml", Rules::Gateway),
    ] {
        assert!(
            read(file)? == rules_yaml(rules)?,
            "chart {file} is stale: run `{REGENERATE}`"
        );
    }
    Ok(())
}

#[test]
fn every_example_is_a_valid_pool() -> anyhow::Result<()> {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo_root().join("examples"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let pools = parse_pools(&std::fs::read_to_string(&path)?)?;
            assert_eq!(pools.len(), 1, "{}", path.display());
            seen += 1;
        }
    }
    assert!(
        seen >= 4,
        "expected the minimal, cpu, gpu and local examples"
    );
    Ok(())
}

#[test]
fn readme_lists_every_top_level_field() -> anyhow::Result<()> {
    let readme = std::fs::read_to_string(repo_root().join("README.md"))?;
    let crd: serde_json::Value = serde_json::to_value(
        <inferpool_operator::api::InferencePool as kube::CustomResourceExt>::crd(),
    )?;
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut fields = Vec::new();
    for (name, sub) in spec["properties"].as_object().into_iter().flatten() {
        fields.push(name.clone());
        for child in sub["properties"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
        {
            fields.push(format!("{name}.{child}"));
        }
    }
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| {
            let leaf = f.rsplit('.').next().unwrap_or(f);
            !readme.contains(&format!("`{f}`")) && !readme.contains(&format!("`{leaf}`"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "README's configuration reference misses {missing:?}"
    );
    Ok(())
}

#[test]
fn an_invalid_manifest_names_the_broken_rule() {
    let bad = "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata: {name: x}\n\
               spec: {model: {}, cache: {semantic: {threshold: 1.5}}}\n";
    let err = parse_pools(bad).unwrap_err().to_string();
    assert!(err.contains("threshold must be in (0, 1]"), "{err}");
    let wrong = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
    assert!(
        parse_pools(wrong)
            .unwrap_err()
            .to_string()
            .contains("ConfigMap")
    );
}
