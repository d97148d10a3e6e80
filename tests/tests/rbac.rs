//! The operator runs with exactly the RBAC it declares (`inferpool-operator rbac`): a real
//! operator process impersonates its ServiceAccount bound to those roles and nothing else,
//! and still reconciles pools fully (children, status, PDB removal, events, lease). The
//! gateway's ServiceAccount may read pools and EndpointSlices, patch pools (its held-requests
//! annotation, the scale-from-zero signal) and nothing else.

use std::time::Duration;

use inferpool_e2e::cluster::cluster;
use inferpool_e2e::controller::install_crd;
use inferpool_e2e::operator::OperatorProcess;
use inferpool_e2e::pools::{condition, until_ready};
use inferpool_e2e::wait::wait_until;
use inferpool_operator::api::InferencePool;
use inferpool_operator::rbac::{GATEWAY_NAME, NAME, rbac_yaml};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;

#[tokio::test]
async fn the_operator_needs_nothing_beyond_its_declared_rbac() -> anyhow::Result<()> {
    install_crd()?;
    let c = cluster()?;
    let op_ns = c.namespace("operator")?;
    let ns = c.namespace("rbac")?;
    let user = format!("system:serviceaccount:{}:{NAME}", op_ns.name());
    c.kubectl(&["create", "serviceaccount", NAME, "-n", op_ns.name()])?;
    c.kubectl_stdin(&["apply", "-f", "-"], &rbac_yaml(op_ns.name())?)?;
    let binding = format!("{NAME}-{}", op_ns.name());
    let subject = format!("{}:{NAME}", op_ns.name());
    c.kubectl(&[
        "create",
        "clusterrolebinding",
        &binding,
        "--clusterrole",
        NAME,
        "--serviceaccount",
        &subject,
    ])?;
    c.kubectl(&[
        "create",
        "rolebinding",
        NAME,
        "-n",
        op_ns.name(),
        "--role",
        NAME,
        "--serviceaccount",
        &subject,
    ])?;
    assert_eq!(
        c.kubectl(&["auth", "can-i", "list", "secrets", "--as", &user])
            .unwrap_or_default()
            .trim(),
        ""
    );
    the_gateway_may_read_pools_and_slices_and_patch_pools_only(c, op_ns.name())?;

    // A kubeconfig that acts as the ServiceAccount.
    let file = format!("inferpool-rbac-{}.kubeconfig", std::process::id());
    let path = c.impersonating(&user, &file)?;
    // The kubeconfig really is restricted: reading Secrets is refused.
    let denied = c
        .tool("kubectl")
        .env("KUBECONFIG", &path)
        .args(["get", "secrets", "-A"])
        .output()?;
    assert!(
        !denied.status.success() && String::from_utf8_lossy(&denied.stderr).contains("forbidden")
    );
    let op = OperatorProcess::spawn(&path, "op-rbac", op_ns.name())?;

    let client = c.client().await?;
    let pools: Api<InferencePool> = Api::namespaced(client.clone(), ns.name());
    let apply = |yaml: &str| c.kubectl_stdin(&["apply", "-n", ns.name(), "-f", "-"], yaml);
    apply(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata: {name: a}\nspec: {model: {}, replicas: 2}\n",
    )?;
    let limit = Duration::from_secs(90);
    until_ready(&pools, "a", limit).await?;
    c.kubectl(&["scale", "-n", ns.name(), "ipool/a", "--replicas=1"])?;
    until_ready(&pools, "a", limit).await?;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns.name());
    assert!(
        pdbs.get_opt("a-agent").await?.is_none(),
        "the PDB of a single agent was not removed"
    );
    apply(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata: {name: b}\nspec: {model: {source: \"pvc://w/../x\"}}\n",
    )?;
    wait_until(limit, || async {
        let p = pools.get("b").await.ok()?;
        (condition(&p, "Degraded")?.1 == "ModelSourceInvalid").then_some(())
    })
    .await?;
    let events = c.kubectl(&[
        "get",
        "events",
        "-n",
        ns.name(),
        "--field-selector",
        "reason=ModelSourceInvalid",
        "-o",
        "name",
    ])?;
    assert!(!events.trim().is_empty(), "the event could not be written");
    assert!(
        !op.refused_as(&user),
        "the operator was refused something:\n{}",
        op.log_text()
    );
    c.kubectl(&["delete", "clusterrolebinding", &binding])?;
    std::fs::remove_file(path)?;
    Ok(())
}

/// `kubectl auth can-i` as the gateway's ServiceAccount, bound to its declared ClusterRole.
fn the_gateway_may_read_pools_and_slices_and_patch_pools_only(
    c: &'static inferpool_e2e::cluster::Cluster,
    ns: &str,
) -> anyhow::Result<()> {
    c.kubectl(&["create", "serviceaccount", GATEWAY_NAME, "-n", ns])?;
    let binding = format!("{GATEWAY_NAME}-{ns}");
    let subject = format!("{ns}:{GATEWAY_NAME}");
    let args = ["--clusterrole", GATEWAY_NAME, "--serviceaccount", &subject];
    c.kubectl(&[&["create", "clusterrolebinding", &binding][..], &args[..]].concat())?;
    let user = format!("system:serviceaccount:{ns}:{GATEWAY_NAME}");
    // can-i prints yes or no (and exits 1 on no). `kind/status` would ask about an object
    // named "status"; a subresource goes in `--subresource`.
    let can = |verb: &str, resource: &str| -> anyhow::Result<bool> {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let out = c
            .tool("kubectl")
            .args(["auth", "can-i", verb, resource, "-A", "--as", &user])
            .args(["--subresource", subresource])
            .output()?;
        // Exactly yes or no: a command kubectl refused must not read as "no".
        match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" => Ok(true),
            "no" => Ok(false),
            other => anyhow::bail!(
                "can-i {verb} {resource}: {other:?} {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    };
    for resource in [
        "endpointslices.discovery.k8s.io",
        "inferencepools.inferpool.dev",
    ] {
        for verb in ["get", "list", "watch"] {
            assert!(
                can(verb, resource)?,
                "the gateway may not {verb} {resource}"
            );
        }
        assert!(
            !can("create", resource)?,
            "the gateway may create {resource}"
        );
    }
    assert!(
        can("patch", "inferencepools.inferpool.dev")?,
        "the gateway may not patch inferencepools (its held-requests annotation)"
    );
    for (verb, resource) in [
        ("create", "deployments.apps"),
        ("patch", "inferencepools.inferpool.dev/scale"),
        ("list", "pods"),
        ("list", "secrets"),
        ("patch", "inferencepools.inferpool.dev/status"),
        ("create", "leases.coordination.k8s.io"),
    ] {
        assert!(!can(verb, resource)?, "the gateway may {verb} {resource}");
    }
    c.kubectl(&["delete", "clusterrolebinding", &binding])?;
    Ok(())
}
