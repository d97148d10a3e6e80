//! Leader election with a coordination.k8s.io Lease: only the holder runs the controller,
//! and a holder that may have lost its lease without noticing acts on nothing. A process
//! frozen (SIGSTOP, a paused VM, a starved runtime) past its renewal grace wakes up
//! believing it leads while the standby already does; its `Fence` turns invalid the
//! moment such a stall begins to count (reconciles and scale writes check it first), and
//! leading is withdrawn until the Lease shows a renewal by this replica since the stall.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;

/// How often the heartbeat that detects stalls ticks.
const HEARTBEAT: Duration = Duration::from_millis(250);

/// Where and how long the lease is held.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// This replica's identity (pod name, else host and pid).
    pub identity: String,
    /// How long the lease stays valid without renewal.
    pub duration: Duration,
}

/// Whether this replica may act as the leader right now: valid while the heartbeat is
/// recent (no stall longer than the renewal grace is in progress). A controller outside
/// any election (`Fence::none`) is always valid.
#[derive(Debug, Clone, Default)]
pub struct Fence {
    heartbeat: Option<Arc<Heartbeat>>,
}

#[derive(Debug)]
struct Heartbeat {
    last: Mutex<Instant>,
    grace: Duration,
    /// Since a stall, until the Lease shows a renewal by this replica.
    stalled: AtomicBool,
}

impl Fence {
    /// A fence that never closes.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether acting as the leader is safe now.
    pub fn valid(&self) -> bool {
        self.heartbeat
            .as_ref()
            // The heartbeat first: the guard marks a stall before it renews the heartbeat,
            // so a fresh heartbeat read here implies the mark is visible below.
            .is_none_or(|h| lock(&h.last).elapsed() < h.grace && !h.stalled.load(Ordering::Acquire))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A replica in the election.
#[derive(Debug)]
pub struct Election {
    /// Whether this replica leads.
    pub leading: watch::Receiver<bool>,
    /// Whether it may act on it now.
    pub fence: Fence,
    /// Ends once `leading` is dropped and the lease is released.
    pub released: tokio::task::JoinHandle<()>,
}

/// How long the release of the lease may take at exit.
pub const RELEASE: Duration = Duration::from_secs(3);

/// Starts competing for the lease. Dropping `leading` releases the lease (await
/// `released`), so that a standby takes over at once.
pub async fn elect(client: kube::Client, s: &LeaseSettings) -> anyhow::Result<Election> {
    let duration = s.duration.as_secs().max(2);
    // Renew half-way through the lease (grace = half): a holder whose renewal is delayed by
    // load keeps its lease instead of flapping to the standby and back.
    let grace = (duration / 2).max(1);
    let params = LeaseParams::new(s.identity.clone(), duration, grace);
    let manager = LeaseManagerBuilder::new(client.clone(), s.name.clone())
        .with_namespace(s.namespace.clone())
        .with_parameters(params)
        .with_field_manager(crate::controller::names::MANAGER)
        .build()
        .await?;
    let (managed, manager_task) = manager.watch().await;
    let heartbeat = Arc::new(Heartbeat {
        last: Mutex::new(Instant::now()),
        grace: Duration::from_secs(grace),
        stalled: AtomicBool::new(false),
    });
    let (leading, follower) = watch::channel(*managed.borrow());
    let guard = Guard {
        managed,
        leading,
        heartbeat: heartbeat.clone(),
        lease: Api::namespaced(client, &s.namespace),
        name: s.name.clone(),
        identity: s.identity.clone(),
    };
    let released = tokio::spawn(async move {
        guard.run().await;
        // The guard dropped the manager's receiver: the manager releases the lease.
        let _ = manager_task.await;
    });
    Ok(Election {
        leading: follower,
        fence: Fence {
            heartbeat: Some(heartbeat),
        },
        released,
    })
}

/// Follows the lease manager's view, withdrawn after a stall until a renewal shows.
struct Guard {
    managed: watch::Receiver<bool>,
    leading: watch::Sender<bool>,
    heartbeat: Arc<Heartbeat>,
    lease: Api<Lease>,
    name: String,
    identity: String,
}

impl Guard {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stalled: Option<Timestamp> = None;
        loop {
            tokio::select! {
                changed = self.managed.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
                () = self.leading.closed() => return,
            }
            let gap = lock(&self.heartbeat.last).elapsed();
            if gap > self.heartbeat.grace && stalled.is_none() {
                // Marked before the heartbeat is renewed: the fence never reopens between.
                self.heartbeat.stalled.store(true, Ordering::Release);
                tracing::warn!(
                    ?gap,
                    "stalled past the lease's grace: not leading until it is renewed"
                );
                stalled = Some(Timestamp::now());
            }
            *lock(&self.heartbeat.last) = Instant::now();
            // Withdrawn before the Lease is read, so that standing down never waits on it.
            self.publish(stalled.is_none());
            let managed = *self.managed.borrow();
            if let Some(since) = stalled
                && managed
                && self.renewed_since(since).await
            {
                stalled = None;
                self.heartbeat.stalled.store(false, Ordering::Release);
                self.publish(true);
            }
            // A slow read of the Lease is no stall of this process.
            *lock(&self.heartbeat.last) = Instant::now();
        }
    }

    /// Says this replica leads when the manager says so and `unfenced`.
    fn publish(&self, unfenced: bool) {
        let leads = *self.managed.borrow() && unfenced;
        self.leading
            .send_if_modified(|l| std::mem::replace(l, leads) != leads);
    }

    /// Whether the Lease shows this replica renewing it after `since`.
    async fn renewed_since(&self, since: Timestamp) -> bool {
        let read = tokio::time::timeout(self.heartbeat.grace / 2, self.lease.get(&self.name));
        let Ok(Ok(lease)) = read.await else {
            return false;
        };
        let Some(spec) = lease.spec else {
            return false;
        };
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        ours && spec.renew_time.is_some_and(|t| t.0 > since)
    }
}

/// A client for `config` whose writes (any method but GET: watches and reads pass) are
/// refused while `fence` is closed, so that a reconcile or scale round that was under way
/// when the process froze fails at its next write instead of carrying it out.
pub fn fenced_client(config: kube::Config, fence: Fence) -> kube::Result<kube::Client> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&FenceLayer(fence)).build())
}

/// Refused by a closed fence.
#[derive(Debug, thiserror::Error)]
#[error("not acting as the leader: stalled past the lease's grace")]
pub struct Fenced;

struct FenceLayer(Fence);

impl<S> tower::Layer<S> for FenceLayer {
    type Service = FencedService<S>;

    fn layer(&self, inner: S) -> FencedService<S> {
        FencedService {
            inner,
            fence: self.0.clone(),
        }
    }
}

/// The client's service behind the fence.
struct FencedService<S> {
    inner: S,
    fence: Fence,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<http::Request<B>> for FencedService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.method() != http::Method::GET && !self.fence.valid() {
            return Box::pin(std::future::ready(Err(Box::new(Fenced) as BoxError)));
        }
        let call = self.inner.call(request);
        Box::pin(async move { call.await.map_err(Into::into) })
    }
}

/// Resolves once `leading` says this replica leads.
pub async fn until_leading(leading: &mut watch::Receiver<bool>) -> bool {
    leading.wait_for(|l| *l).await.is_ok()
}

/// Resolves once this replica stopped leading (or the lease task ended).
pub async fn until_not_leading(mut leading: watch::Receiver<bool>) {
    let _ = leading.wait_for(|l| !*l).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(age: Duration, stalled: bool) -> Fence {
        let heartbeat = Heartbeat {
            last: Mutex::new(Instant::now() - age),
            grace: Duration::from_secs(2),
            stalled: AtomicBool::new(stalled),
        };
        Fence {
            heartbeat: Some(Arc::new(heartbeat)),
        }
    }

    #[test]
    fn a_fence_is_valid_only_with_a_recent_heartbeat_and_no_stall() {
        assert!(Fence::none().valid());
        assert!(fence(Duration::ZERO, false).valid());
        // Woken from a freeze before the heartbeat ran again.
        assert!(!fence(Duration::from_secs(3), false).valid());
        // The heartbeat ran, but no renewal has shown since the stall.
        assert!(!fence(Duration::ZERO, true).valid());
    }
}
