//! The pool's spec as the controller renders it into `agent.json` is what the agent runs:
//! every batching and cache field set away from its default arrives, so that no field of
//! the CRD is accepted and then dropped between the operator and the agent.

use std::time::Duration;

use inferpool_agent::cache::pressure::Watermarks;
use inferpool_agent::config::AgentConfig;
use inferpool_agent::engine::kv::KvCacheDtype;
use inferpool_agent::engine::rows::Padding;
use inferpool_agent::scheduler::strategy::Strategy;
use inferpool_e2e::parts::ScratchDir;
use inferpool_operator::controller::config::{agent_config, render, resolve_source};
use inferpool_operator::manifest::parse_pools;

const POOL: &str = "apiVersion: inferpool.dev/v1alpha1
kind: InferencePool
metadata: {name: contract}
spec:
  model: {source: bundled, servedName: contract-model}
  batching:
    strategy: adaptive
    maxBatchSize: 7
    maxBatchTokens: 333
    maxWaitMilliseconds: 44
    padding: bucket
    queueLimits: {critical: 1, high: 2, normal: 3, low: 4}
    agingSeconds: 9
    prefixCaching: false
    kvCacheDtype: f32
    targetTimeToFirstTokenMilliseconds: 555
    targetTimePerTokenMilliseconds: 66
  cache:
    enabled: true
    capacity: 3Mi
    ttlSeconds: 77
    semantic: {enabled: true, threshold: 0.9}
    memoryPressure: {highWatermark: 0.7, lowWatermark: 0.6, checkSeconds: 3}
    persistence: {enabled: true, snapshotSeconds: 44}
";

#[test]
fn every_field_the_controller_writes_reaches_the_agent() -> anyhow::Result<()> {
    let pools = parse_pools(POOL)?;
    let pool = pools.first().ok_or_else(|| anyhow::anyhow!("no pool"))?;
    let source = resolve_source("bundled")?;
    let (text, _) = render(&agent_config(pool, &source));
    let dir = ScratchDir::new("config-contract")?;
    let path = dir.path().join("agent.json");
    std::fs::write(&path, &text)?;
    let config = AgentConfig::read(&path)?;
    assert_eq!(config.served_name, "contract-model", "{text}");
    let b = config.batcher(100);
    assert_eq!(b.strategy, Strategy::Adaptive, "{text}");
    assert_eq!((b.max_batch_size, b.max_batch_tokens), (7, 333));
    assert_eq!(b.max_wait, Duration::from_millis(44));
    assert_eq!(b.padding, Padding::Bucket);
    assert_eq!(b.queue_limits, [1, 2, 3, 4]);
    assert_eq!(b.aging, Duration::from_secs(9));
    assert!(!b.prefix_caching);
    assert_eq!(b.kv_dtype, KvCacheDtype::F32);
    assert_eq!(b.slo.ttft, Some(Duration::from_millis(555)));
    assert_eq!(b.slo.time_per_token, Some(Duration::from_millis(66)));
    assert_eq!(b.kv_blocks, 100);
    let c = &config.cache;
    assert!(c.enabled);
    assert_eq!((c.capacity.as_str(), c.ttl_seconds), ("3Mi", 77));
    let settings = c.settings()?.ok_or_else(|| anyhow::anyhow!("cache off"))?;
    assert_eq!(settings.semantic.map(|s| s.threshold), Some(0.9));
    assert_eq!(
        settings.watermarks,
        Watermarks {
            high: 0.7,
            low: 0.6
        }
    );
    assert_eq!(c.pressure_check(), Duration::from_secs(3));
    let plan = c.snapshot_plan(config.cache_dir.as_deref())?;
    let plan = plan.ok_or_else(|| anyhow::anyhow!("no snapshots: {text}"))?;
    assert_eq!(plan.every, Duration::from_secs(44));
    assert!(plan.path.starts_with("/var/cache/inferpool"), "{plan:?}");
    Ok(())
}
