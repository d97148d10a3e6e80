//! The agent pod and NetworkPolicy with and without TLS on the agents' API ports.

use serde_json::{Value, json};

use super::children::network_policy;
use super::tests::{build_with, pool};
use super::tls::{AgentTls, MutualWithoutSecret};

fn tls(mutual: bool) -> AgentTls {
    AgentTls {
        secret: "agent-tls".into(),
        mutual,
    }
}

fn pod_of(tls: Option<&AgentTls>) -> Value {
    let p = pool(json!({"model": {"source": "pvc://weights/llama"}}));
    build_with(&p, tls)["spec"]["template"]["spec"].clone()
}

fn names(list: &Value) -> Vec<&str> {
    let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
    items.iter().filter_map(|v| v["name"].as_str()).collect()
}

#[test]
fn plain_agents_are_probed_over_grpc_and_have_no_tls_parts() {
    let pod = pod_of(None);
    let c = &pod["containers"][0];
    assert_eq!(
        c["args"],
        json!(["serve", "--config", "/etc/inferpool/agent.json"])
    );
    assert_eq!(names(&c["ports"]), ["http", "grpc"]);
    assert_eq!(names(&pod["volumes"]), ["config", "tmp", "model"]);
    assert_eq!(names(&c["volumeMounts"]), ["config", "tmp", "model"]);
    for probe in ["readinessProbe", "startupProbe"] {
        assert_eq!(c[probe]["grpc"], json!({"port": 50051}), "{probe}");
        assert!(c[probe].get("httpGet").is_none(), "{probe}");
    }
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http"})
    );
}

#[test]
fn tls_agents_mount_the_secret_and_are_probed_on_the_health_port() {
    let pod = pod_of(Some(&tls(false)));
    let c = &pod["containers"][0];
    assert_eq!(
        c["args"],
        json!([
            "serve",
            "--config",
            "/etc/inferpool/agent.json",
            "--tls-dir",
            "/etc/inferpool/tls",
            "--health-port",
            "8082"
        ])
    );
    assert_eq!(names(&c["ports"]), ["http", "grpc", "health"]);
    assert_eq!(c["ports"][2]["containerPort"], 8082);
    assert_eq!(
        names(&pod["volumes"]),
        ["config", "tmp", "model", "agent-tls"]
    );
    assert_eq!(
        pod["volumes"][3]["secret"],
        json!({"secretName": "agent-tls", "defaultMode": 0o440})
    );
    assert_eq!(
        pod["securityContext"]["fsGroup"], 65532,
        "makes 0440 readable"
    );
    assert_eq!(
        c["volumeMounts"][3],
        json!({"name": "agent-tls", "mountPath": "/etc/inferpool/tls", "readOnly": true})
    );
    let http_get = |probe: &str| c[probe]["httpGet"].clone();
    assert_eq!(
        http_get("readinessProbe"),
        json!({"path": "/readyz", "port": "health"})
    );
    assert_eq!(
        http_get("startupProbe"),
        json!({"path": "/readyz", "port": "health"})
    );
    assert_eq!(
        http_get("livenessProbe"),
        json!({"path": "/healthz", "port": "health"})
    );
    for probe in ["readinessProbe", "startupProbe", "livenessProbe"] {
        assert!(c[probe].get("grpc").is_none(), "{probe}");
    }
}

#[test]
fn tls_keeps_the_probes_timing() {
    let plain = pod_of(None);
    let tls = pod_of(Some(&tls(true)));
    for probe in ["readinessProbe", "startupProbe", "livenessProbe"] {
        for field in ["periodSeconds", "failureThreshold"] {
            let of = |pod: &Value| pod["containers"][0][probe][field].clone();
            assert_eq!(of(&plain), of(&tls), "{probe}.{field}");
        }
    }
}

#[test]
fn mutual_tls_agents_require_client_certificates() {
    let pod = pod_of(Some(&tls(true)));
    let args = &pod["containers"][0]["args"];
    assert_eq!(
        args.as_array().and_then(|a| a.last()),
        Some(&json!("--tls-mutual"))
    );
    let one_way = pod_of(Some(&tls(false)));
    let args = one_way["containers"][0]["args"].to_string();
    assert!(!args.contains("--tls-mutual"), "{args}");
}

#[test]
fn tls_flags_need_a_secret_name() {
    assert_eq!(AgentTls::from_flags(None, false), Ok(None));
    assert_eq!(AgentTls::from_flags(Some(""), false), Ok(None));
    assert_eq!(
        AgentTls::from_flags(Some(""), true),
        Err(MutualWithoutSecret)
    );
    assert_eq!(
        AgentTls::from_flags(Some("agent-tls"), true),
        Ok(Some(tls(true)))
    );
}

#[test]
fn tls_agents_admit_their_health_port_like_http() {
    let p = pool(json!({"model": {}}));
    let plain = serde_json::to_value(network_policy(&p, "ops", false)).unwrap();
    let tls = serde_json::to_value(network_policy(&p, "ops", true)).unwrap();
    let open = &tls["spec"]["ingress"][1];
    assert!(open.get("from").is_none());
    assert_eq!(
        open["ports"],
        json!([{"port": 8080, "protocol": "TCP"}, {"port": 8082, "protocol": "TCP"}])
    );
    assert_eq!(
        tls["spec"]["ingress"][0], plain["spec"]["ingress"][0],
        "gRPC is admitted from the same pods"
    );
}
