//! The agent Deployment of a pool.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, EphemeralVolumeSource, Lifecycle, LifecycleHandler, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector,
    PersistentVolumeClaimSpec, PersistentVolumeClaimTemplate, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecurityContext, SleepAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::config::{CACHE_DIR, PVC_MOUNT_ROOT, ResolvedSource, persistent_cache};
use super::names::{
    CONFIG_DIR, CONFIG_FILE, GRPC_PORT, GRPC_PORT_NAME, HEALTH_PORT, HEALTH_PORT_NAME, HTTP_PORT,
    HTTP_PORT_NAME, agent_name, labels, selector_labels,
};
use super::probes::agent_probes;
use super::tls::AgentTls;
use crate::api::InferencePool;

/// Images the operator uses when a pool names none.
#[derive(Debug, Clone)]
pub struct AgentImages {
    /// The CPU agent image.
    pub cpu: String,
    /// The CUDA agent image, for pools with `resources.gpus > 0`.
    pub cuda: String,
}

/// CPU and memory for agents of pools that set none (`resources.cpu` / `resources.memory`).
#[derive(Debug, Clone, Default)]
pub struct DefaultResources {
    /// CPU request and limit.
    pub cpu: Option<Quantity>,
    /// Memory request and limit.
    pub memory: Option<Quantity>,
}

/// Annotation carrying the rendered config's sha256, so that a config change rolls the pods.
pub const CONFIG_CHECKSUM: &str = "inferpool.dev/config-checksum";
/// Seconds the pod stays in endpoints after termination starts, so that gateways stop
/// picking it before it stops admitting.
const PRE_STOP_SECONDS: i64 = 5;
/// Seconds beyond the request timeout that a terminating agent gets to drain.
const DRAIN_MARGIN_SECONDS: i64 = 30;
const AGENT_UID: i64 = 65532;

/// What the Deployment builder needs besides the pool.
#[derive(Debug)]
pub struct DeploymentInputs<'a> {
    /// Default images.
    pub images: &'a AgentImages,
    /// Default CPU and memory.
    pub resources: &'a DefaultResources,
    /// The resolved model source.
    pub source: &'a ResolvedSource,
    /// sha256 of the rendered agent config.
    pub config_checksum: &'a str,
    /// TLS of the agents' API ports; `None`: plain HTTP and h2c.
    pub tls: Option<&'a AgentTls>,
}

/// The agent Deployment for `pool`.
pub fn deployment(pool: &InferencePool, inputs: &DeploymentInputs<'_>) -> Deployment {
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(pool)),
            annotations: Some(BTreeMap::from([(
                CONFIG_CHECKSUM.to_owned(),
                inputs.config_checksum.to_owned(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec(pool, inputs)),
    };
    Deployment {
        metadata: ObjectMeta {
            name: Some(agent_name(pool)),
            labels: Some(labels(pool)),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(pool.spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(pool)),
                ..LabelSelector::default()
            },
            template,
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

fn pod_spec(pool: &InferencePool, inputs: &DeploymentInputs<'_>) -> PodSpec {
    let t = &pool.spec.template;
    let mut volumes = volumes(pool, inputs.source);
    volumes.extend(inputs.tls.map(AgentTls::volume));
    PodSpec {
        containers: vec![container(pool, inputs)],
        volumes: Some(volumes),
        affinity: affinity(pool),
        node_selector: (!t.node_selector.is_empty()).then(|| t.node_selector.clone()),
        tolerations: (!t.tolerations.is_empty()).then(|| t.tolerations.clone()),
        priority_class_name: t.priority_class_name.clone(),
        termination_grace_period_seconds: Some(
            i64::from(pool.spec.routing.request_timeout_seconds) + DRAIN_MARGIN_SECONDS,
        ),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(AGENT_UID),
            run_as_group: Some(AGENT_UID),
            fs_group: Some(AGENT_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    }
}

fn container(pool: &InferencePool, inputs: &DeploymentInputs<'_>) -> Container {
    let gpus = pool.spec.resources.gpus > 0;
    let default_image = if gpus {
        &inputs.images.cuda
    } else {
        &inputs.images.cpu
    };
    let probes = agent_probes(inputs.tls.is_some());
    Container {
        name: "agent".to_owned(),
        image: Some(
            pool.spec
                .template
                .image
                .clone()
                .unwrap_or_else(|| default_image.clone()),
        ),
        args: Some(args(inputs.tls)),
        ports: Some(ports(inputs.tls)),
        env: Some(env(pool)),
        resources: Some(resources(pool, inputs.resources)),
        volume_mounts: Some(volume_mounts(pool, inputs)),
        readiness_probe: Some(probes.readiness),
        startup_probe: Some(probes.startup),
        liveness_probe: Some(probes.liveness),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn args(tls: Option<&AgentTls>) -> Vec<String> {
    let mut args = vec![
        "serve".to_owned(),
        "--config".to_owned(),
        format!("{CONFIG_DIR}/{CONFIG_FILE}"),
    ];
    args.extend(tls.into_iter().flat_map(AgentTls::args));
    args
}

/// The API ports, and under TLS the plain health port that the probes use.
fn ports(tls: Option<&AgentTls>) -> Vec<ContainerPort> {
    let mut ports = vec![
        port(HTTP_PORT_NAME, HTTP_PORT),
        port(GRPC_PORT_NAME, GRPC_PORT),
    ];
    if tls.is_some() {
        ports.push(port(HEALTH_PORT_NAME, HEALTH_PORT));
    }
    ports
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: number,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn env(pool: &InferencePool) -> Vec<EnvVar> {
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let mut env = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
    ];
    env.extend(pool.spec.template.env.iter().cloned());
    env
}

fn resources(pool: &InferencePool, defaults: &DefaultResources) -> ResourceRequirements {
    let r = &pool.spec.resources;
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(cpu) = r.cpu.as_ref().or(defaults.cpu.as_ref()) {
        requests.insert("cpu".to_owned(), cpu.clone());
        limits.insert("cpu".to_owned(), cpu.clone());
    }
    if let Some(memory) = r.memory.as_ref().or(defaults.memory.as_ref()) {
        requests.insert("memory".to_owned(), memory.clone());
        limits.insert("memory".to_owned(), memory.clone());
    }
    if r.gpus > 0 {
        limits.insert("nvidia.com/gpu".to_owned(), Quantity(r.gpus.to_string()));
    }
    ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..ResourceRequirements::default()
    }
}

/// With `cache.persistence`, a PersistentVolumeClaim template per agent pod (a generic
/// ephemeral volume): the claim lives as long as the pod, so the cache survives agent
/// (container) restarts and is reclaimed with the pod.
fn cache_volume(pool: &InferencePool) -> Option<Volume> {
    let p = &pool.spec.cache.persistence;
    if !persistent_cache(pool) {
        return None;
    }
    let claim = PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
        storage_class_name: p.storage_class_name.clone(),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_owned(),
                p.volume_size.clone(),
            )])),
            ..VolumeResourceRequirements::default()
        }),
        ..PersistentVolumeClaimSpec::default()
    };
    let template = PersistentVolumeClaimTemplate {
        metadata: Some(ObjectMeta {
            labels: Some(labels(pool)),
            ..ObjectMeta::default()
        }),
        spec: claim,
    };
    Some(Volume {
        name: "cache".to_owned(),
        ephemeral: Some(EphemeralVolumeSource {
            volume_claim_template: Some(template),
        }),
        ..Volume::default()
    })
}

fn volumes(pool: &InferencePool, source: &ResolvedSource) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: agent_name(pool),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    volumes.extend(cache_volume(pool));
    if let ResolvedSource::Claim { claim, .. } = source {
        volumes.push(Volume {
            name: "model".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(true),
            }),
            ..Volume::default()
        });
    }
    volumes
}

fn volume_mounts(pool: &InferencePool, inputs: &DeploymentInputs<'_>) -> Vec<VolumeMount> {
    let mount = |name: &str, path: String, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path,
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let mut mounts = vec![
        mount("config", CONFIG_DIR.to_owned(), true),
        mount("tmp", "/tmp".to_owned(), false),
    ];
    if cache_volume(pool).is_some() {
        mounts.push(mount("cache", CACHE_DIR.to_owned(), false));
    }
    if let ResolvedSource::Claim { claim, .. } = inputs.source {
        mounts.push(mount("model", format!("{PVC_MOUNT_ROOT}/{claim}"), true));
    }
    mounts.extend(inputs.tls.map(AgentTls::mount));
    mounts
}

/// The template's affinity with the GPU product and memory rules added to every node
/// selector term (terms are ORed, so each must carry the GPU rules).
fn affinity(pool: &InferencePool) -> Option<Affinity> {
    let gpu_rules = gpu_node_rules(pool);
    let mut affinity = pool.spec.template.affinity.clone();
    if gpu_rules.is_empty() {
        return affinity;
    }
    let a = affinity.get_or_insert_with(Affinity::default);
    let node = a.node_affinity.get_or_insert_with(NodeAffinity::default);
    let required = node
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm::default()],
        });
    if required.node_selector_terms.is_empty() {
        required
            .node_selector_terms
            .push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_expressions
            .get_or_insert_with(Vec::new)
            .extend(gpu_rules.iter().cloned());
    }
    affinity
}

fn gpu_node_rules(pool: &InferencePool) -> Vec<NodeSelectorRequirement> {
    let r = &pool.spec.resources;
    let mut rules = Vec::new();
    if !r.gpu_products.is_empty() {
        rules.push(NodeSelectorRequirement {
            key: "nvidia.com/gpu.product".to_owned(),
            operator: "In".to_owned(),
            values: Some(r.gpu_products.clone()),
        });
    }
    if let Some(mib) = r.min_gpu_memory.as_ref().and_then(quantity_mib) {
        // The label is in MiB; `Gt` is strict, so compare against one less.
        rules.push(NodeSelectorRequirement {
            key: "nvidia.com/gpu.memory".to_owned(),
            operator: "Gt".to_owned(),
            values: Some(vec![(mib.saturating_sub(1)).to_string()]),
        });
    }
    rules
}

/// A memory quantity in MiB (binary and decimal suffixes); `None` when unparseable.
pub fn quantity_mib(q: &Quantity) -> Option<u64> {
    let s = q.0.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => return None,
    };
    let mib = (value * factor / (1024.0 * 1024.0)).ceil();
    (mib.is_finite() && mib >= 0.0).then_some(mib as u64)
}
