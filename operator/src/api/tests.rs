//! Defaults, validation rules and serialization of the InferencePool API, with plain values.

use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::*;

fn pool(spec: Value) -> InferencePool {
    let obj = json!({
        "apiVersion": "inferpool.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": spec,
    });
    serde_json::from_value(obj).expect("valid InferencePool")
}

fn cel_errors(p: &InferencePool) -> String {
    match p.validate_cel() {
        Ok(()) => String::new(),
        Err(e) => format!("{e:?}"),
    }
}

#[test]
fn a_pool_with_only_model_gets_every_default() {
    let p = pool(json!({"model": {"source": "bundled"}}));
    assert_eq!(p.spec, InferencePoolSpec::with_model(ModelSpec::default()));
    assert_eq!(p.spec.replicas, 1);
    assert_eq!(p.spec.batching.strategy, BatchingStrategy::Continuous);
    assert_eq!(p.spec.routing.strategy, RoutingStrategy::LeastLoad);
    assert_eq!(p.spec.cache.semantic.threshold, 0.95);
    assert!(p.spec.cache.enabled && !p.spec.cache.persistence.enabled);
    assert_eq!(cel_errors(&p), "");
}

#[test]
fn an_empty_model_means_the_bundled_one() {
    let p = pool(json!({"model": {}}));
    assert_eq!(p.spec.model.source, "bundled");
    assert_eq!(p.spec.model.format, ModelFormat::Auto);
}

#[test]
fn min_replicas_above_max_replicas_is_rejected_with_its_message() {
    let p = pool(json!({"model": {}, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}}));
    assert!(
        cel_errors(&p).contains("minReplicas must be less than or equal to"),
        "{}",
        cel_errors(&p)
    );
    let ok = pool(json!({"model": {}, "autoscaling": {"minReplicas": 0, "maxReplicas": 2}}));
    assert_eq!(cel_errors(&ok), "");
}

#[test]
fn semantic_threshold_must_be_in_zero_one() {
    for bad in [0.0, -0.5, 1.01] {
        let p =
            pool(json!({"model": {}, "cache": {"semantic": {"enabled": true, "threshold": bad}}}));
        assert!(
            cel_errors(&p).contains("threshold must be in (0, 1]"),
            "{bad}: {}",
            cel_errors(&p)
        );
    }
    for good in [0.01, 0.95, 1.0] {
        let p = pool(json!({"model": {}, "cache": {"semantic": {"threshold": good}}}));
        assert_eq!(cel_errors(&p), "", "{good}");
    }
}

#[test]
fn autoscaling_target_load_must_be_in_zero_one() {
    let p = pool(json!({"model": {}, "autoscaling": {"maxReplicas": 3, "targetLoad": 1.5}}));
    assert!(
        cel_errors(&p).contains("targetLoad must be in (0, 1]"),
        "{}",
        cel_errors(&p)
    );
}

#[test]
fn gpu_selectors_need_gpus() {
    let p = pool(json!({"model": {}, "resources": {"gpuProducts": ["NVIDIA-H100-80GB-HBM3"]}}));
    assert!(
        cel_errors(&p).contains("need resources.gpus > 0"),
        "{}",
        cel_errors(&p)
    );
    let p = pool(json!({"model": {}, "resources": {"minGpuMemory": "40Gi"}}));
    assert!(
        cel_errors(&p).contains("need resources.gpus > 0"),
        "{}",
        cel_errors(&p)
    );
    let ok = pool(
        json!({"model": {}, "resources": {"gpus": 2, "minGpuMemory": "40Gi",
        "gpuProducts": ["NVIDIA-A100-SXM4-80GB"]}}),
    );
    assert_eq!(cel_errors(&ok), "");
}

#[test]
fn a_full_spec_round_trips_through_json_and_yaml() {
    let mut spec = InferencePoolSpec::with_model(ModelSpec {
        source: "pvc://models/llama/model.gguf".into(),
        format: ModelFormat::Gguf,
        served_name: Some("llama".into()),
        chat_template: Some("{{ messages }}".into()),
    });
    spec.replicas = 3;
    spec.autoscaling = Some(AutoscalingSpec::between(0, 8));
    spec.resources.gpus = 2;
    spec.batching.strategy = BatchingStrategy::Adaptive;
    spec.batching.padding = PaddingStrategy::Bucket;
    spec.routing.strategy = RoutingStrategy::PrefixAffinity;
    spec.cache.semantic.enabled = true;
    spec.template.priority_class_name = Some("inference".into());
    let p = InferencePool::new("p", spec);

    let json: InferencePool = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(json, p);
    let yaml: InferencePool =
        serde_saphyr::from_str(&serde_saphyr::to_string(&p).unwrap()).unwrap();
    assert_eq!(yaml, p);
}

#[test]
fn enums_use_the_documented_spellings() {
    let spec = serde_json::to_value(InferencePoolSpec::with_model(ModelSpec::default())).unwrap();
    assert_eq!(spec["routing"]["strategy"], "least_load");
    assert_eq!(spec["batching"]["strategy"], "continuous");
    assert_eq!(spec["batching"]["padding"], "none");
    assert_eq!(spec["model"]["format"], "auto");
    let p = pool(json!({"model": {}, "routing": {"strategy": "session_affinity"}}));
    assert_eq!(p.spec.routing.strategy, RoutingStrategy::SessionAffinity);
}

fn crd() -> Value {
    serde_json::to_value(InferencePool::crd()).unwrap()
}

fn spec_schema() -> Value {
    crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

#[test]
fn crd_names_scale_and_columns() {
    let crd = crd();
    assert_eq!(crd["metadata"]["name"], "inferencepools.inferpool.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["ipool"]));
    assert_eq!(crd["spec"]["names"]["categories"], json!(["inferpool"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], VERSION);
    assert_eq!(
        version["subresources"]["scale"],
        json!({"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
               "labelSelectorPath": ".status.selector"})
    );
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Model", "Replicas", "Ready", "Strategy", "Age"]);
}

#[test]
fn schema_carries_defaults_ranges_enums_and_rules() {
    let spec = spec_schema();
    let props = &spec["properties"];
    assert_eq!(props["replicas"]["default"], 1);
    assert_eq!(props["replicas"]["minimum"].as_f64(), Some(0.0));
    assert_eq!(
        props["batching"]["properties"]["maxBatchSize"]["default"],
        16
    );
    assert_eq!(
        props["routing"]["properties"]["strategy"]["enum"],
        json!([
            "round_robin",
            "least_connections",
            "weighted",
            "least_load",
            "prefix_affinity",
            "session_affinity"
        ])
    );
    assert_eq!(
        props["batching"]["properties"]["strategy"]["enum"],
        json!(["static", "dynamic", "adaptive", "continuous"])
    );
    let semantic = &props["cache"]["properties"]["semantic"]["properties"]["threshold"];
    assert_eq!(semantic["default"], 0.95);
    assert!(semantic["x-kubernetes-validations"][0]["rule"].is_string());
    let rules = &props["autoscaling"]["x-kubernetes-validations"];
    assert_eq!(rules[0]["rule"], "self.minReplicas <= self.maxReplicas");
    assert_eq!(spec["required"], json!(["model"]));
}

/// Every field of our own types carries a description: it is what `kubectl explain` shows.
#[test]
fn every_field_is_documented() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (name, sub) in props {
            let here = format!("{path}.{name}");
            if sub
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                missing.push(here.clone());
            }
            walk(&here, sub, missing);
            if let Some(items) = sub.get("items") {
                walk(&format!("{here}[]"), items, missing);
            }
        }
    }
    let root = &crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut missing = Vec::new();
    walk("", &root["properties"]["spec"], &mut missing);
    walk("", &root["properties"]["status"], &mut missing);
    assert!(missing.is_empty(), "undocumented fields: {missing:?}");
}
