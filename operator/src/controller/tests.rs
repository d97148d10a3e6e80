//! The children of a pool, built from plain values.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Value, json};

use super::children::{config_map, pod_disruption_budget, service};
use super::config::{agent_config, render, resolve_source};
use super::deployment::{
    AgentImages, DefaultResources, DeploymentInputs, deployment, quantity_mib,
};
use super::names::selector_string;
use super::tls::AgentTls;
use crate::api::{InferencePool, InferencePoolSpec, ModelSpec};

fn images() -> AgentImages {
    AgentImages {
        cpu: "agent:cpu".into(),
        cuda: "agent:cuda".into(),
    }
}

pub(super) fn pool(spec: Value) -> InferencePool {
    let mut p: InferencePool = serde_json::from_value(json!({
        "apiVersion": "inferpool.dev/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": "chat", "namespace": "ns"}, "spec": spec,
    }))
    .unwrap();
    p.metadata.uid = Some("uid-1".into());
    p
}

fn build(p: &InferencePool) -> Value {
    build_with(p, None)
}

/// The Deployment of `p` as JSON, its agents' API ports under `tls`.
pub(super) fn build_with(p: &InferencePool, tls: Option<&AgentTls>) -> Value {
    let source = resolve_source(&p.spec.model.source).unwrap();
    let (_, checksum) = render(&agent_config(p, &source));
    let defaults = DefaultResources {
        cpu: Some(Quantity("1".into())),
        memory: None,
    };
    let inputs = DeploymentInputs {
        images: &images(),
        resources: &defaults,
        source: &source,
        config_checksum: &checksum,
        tls,
    };
    serde_json::to_value::<Deployment>(deployment(p, &inputs)).unwrap()
}

#[test]
fn a_cpu_pool_gets_a_hardened_cpu_deployment() {
    let d = build(&pool(json!({"model": {}, "replicas": 3})));
    assert_eq!(d["metadata"]["name"], "chat-agent");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["selector"]["matchLabels"]["inferpool.dev/pool"],
        "chat"
    );
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "agent:cpu");
    assert_eq!(
        c["args"],
        json!(["serve", "--config", "/etc/inferpool/agent.json"])
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(c["readinessProbe"]["grpc"]["port"], 50051);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(c["startupProbe"]["failureThreshold"].as_i64().unwrap() * 5 >= 600);
    assert_eq!(c["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
    assert_eq!(pod["terminationGracePeriodSeconds"], 330);
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "1"}),
        "the operator's default CPU"
    );
    assert!(pod.get("affinity").is_none());
    let annotations = &d["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["inferpool.dev/config-checksum"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
}

#[test]
fn a_gpu_pool_asks_for_gpus_on_the_right_nodes() {
    let p = pool(
        json!({"model": {"source": "pvc://weights/llama"}, "resources": {
        "gpus": 2, "minGpuMemory": "80Gi", "gpuProducts": ["NVIDIA-H100-80GB-HBM3"],
        "cpu": "8", "memory": "64Gi"},
        "template": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                     "priorityClassName": "inference"}}),
    );
    let d = build(&p);
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "agent:cuda");
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "2");
    assert_eq!(c["resources"]["requests"]["memory"], "64Gi");
    let terms = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    assert_eq!(
        terms[0]["matchExpressions"],
        json!([{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]},
               {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["81919"]}])
    );
    assert_eq!(pod["tolerations"][0]["key"], "nvidia.com/gpu");
    assert_eq!(pod["priorityClassName"], "inference");
    assert_eq!(
        pod["volumes"][2]["persistentVolumeClaim"],
        json!({"claimName": "weights", "readOnly": true})
    );
    assert_eq!(c["volumeMounts"][2]["mountPath"], "/models/pvc/weights");
}

#[test]
fn gpu_rules_join_every_user_node_selector_term() {
    let p = pool(
        json!({"model": {}, "resources": {"gpus": 1, "gpuProducts": ["A"]},
        "template": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}}}}),
    );
    let d = build(&p);
    let terms = &d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    for term in terms.as_array().unwrap() {
        assert_eq!(
            term["matchExpressions"].as_array().unwrap().len(),
            2,
            "{term}"
        );
    }
}

#[test]
fn a_config_change_changes_the_pod_template() {
    let a = build(&pool(json!({"model": {}})));
    let b = build(&pool(
        json!({"model": {}, "batching": {"maxBatchSize": 64}}),
    ));
    let checksum = |d: &Value| d["spec"]["template"]["metadata"]["annotations"].clone();
    assert_ne!(checksum(&a), checksum(&b));
}

#[test]
fn service_is_headless_with_named_ports() {
    let s = serde_json::to_value(service(&pool(json!({"model": {}})))).unwrap();
    assert_eq!(s["spec"]["clusterIP"], "None");
    assert_eq!(s["spec"]["ports"][0]["name"], "http");
    assert_eq!(s["spec"]["ports"][1]["name"], "grpc");
    assert_eq!(s["spec"]["ports"][1]["port"], 50051);
    assert_eq!(s["spec"]["selector"]["inferpool.dev/pool"], "chat");
}

#[test]
fn config_map_holds_the_rendered_config() {
    let p = pool(json!({"model": {"servedName": "smol"}}));
    let source = resolve_source(&p.spec.model.source).unwrap();
    let (text, _) = render(&agent_config(&p, &source));
    let cm = config_map(&p, &text);
    let data: Value = serde_json::from_str(&cm.data.unwrap()["agent.json"]).unwrap();
    assert_eq!(data["servedName"], "smol");
    assert_eq!(
        data["modelPath"],
        "/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    );
    assert_eq!(data["batching"]["strategy"], "continuous");
}

#[test]
fn a_pdb_exists_only_for_more_than_one_agent() {
    assert!(pod_disruption_budget(&pool(json!({"model": {}, "replicas": 1}))).is_none());
    let pdb = pod_disruption_budget(&pool(json!({"model": {}, "replicas": 2}))).unwrap();
    assert_eq!(serde_json::to_value(pdb.spec).unwrap()["maxUnavailable"], 1);
}

#[test]
fn selector_string_matches_the_selector_labels() {
    let p = InferencePool::new("x", InferencePoolSpec::with_model(ModelSpec::default()));
    assert_eq!(
        selector_string(&p),
        "app.kubernetes.io/name=inferpool-agent,inferpool.dev/pool=x"
    );
}

#[test]
fn memory_quantities_convert_to_mib() {
    assert_eq!(quantity_mib(&Quantity("80Gi".into())), Some(81920));
    assert_eq!(quantity_mib(&Quantity("40G".into())), Some(38147));
    assert_eq!(quantity_mib(&Quantity("512Mi".into())), Some(512));
    assert_eq!(quantity_mib(&Quantity("lots".into())), None);
}

#[test]
fn cache_persistence_adds_a_claim_template_per_agent() {
    let plain = build(&pool(json!({"model": {}})));
    let names = |d: &Value| -> Vec<String> {
        d["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&plain), ["config", "tmp"]);
    let d = build(&pool(
        json!({"model": {}, "cache": {"persistence": {"enabled": true, "volumeSize": "2Gi", "storageClassName": "fast"}}}),
    ));
    let pod = &d["spec"]["template"]["spec"];
    let claim = &pod["volumes"][2]["ephemeral"]["volumeClaimTemplate"]["spec"];
    assert_eq!(claim["resources"]["requests"]["storage"], "2Gi");
    assert_eq!(claim["storageClassName"], "fast");
    assert_eq!(claim["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(
        pod["containers"][0]["volumeMounts"][2]["mountPath"],
        "/var/cache/inferpool"
    );
}

#[test]
fn agents_admit_grpc_only_from_the_gateway_and_the_controller() {
    let np = serde_json::to_value(super::children::network_policy(
        &pool(json!({"model": {}})),
        "ops",
        false,
    ))
    .unwrap();
    let spec = &np["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"]["inferpool.dev/pool"],
        "chat"
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress"]));
    let grpc = &spec["ingress"][0];
    assert_eq!(grpc["ports"], json!([{"port": 50051, "protocol": "TCP"}]));
    assert_eq!(
        grpc["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ops"
    );
    assert_eq!(
        grpc["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "inferpool-gateway"
    );
    assert_eq!(
        grpc["from"][1]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "inferpool-operator",
        "the controller follows the agents' load over gRPC"
    );
    assert_eq!(
        grpc["from"][1]["namespaceSelector"],
        grpc["from"][0]["namespaceSelector"]
    );
    let http = &spec["ingress"][1];
    assert!(http.get("from").is_none());
    assert_eq!(http["ports"], json!([{"port": 8080, "protocol": "TCP"}]));
}
