//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! No maintained crate builds against kube 5 yet (kube-leader-election needs kube 4,
//! kube-coordinate kube 2), so this is a small loop in the style of client-go's
//! `leaderelection`: a replica holds the Lease while it renews it; another replica
//! takes it over once it has seen the same record unchanged for a whole lease
//! duration (measured on its own monotonic clock, so clock skew between nodes does
//! not matter). Writes use the Lease's resourceVersion (optimistic concurrency),
//! so two replicas can never both win the same round. A leader that stops
//! cleanly releases the Lease so a standby takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::Mutex;

/// One replica's view of the Lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    observed: Mutex<Option<Observed>>,
}

struct Observed {
    record: (Option<String>, Option<String>),
    at: Instant,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaseLock {
    /// A lock on Lease `namespace/name` for replica `identity`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            observed: Mutex::new(None),
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn spec_now(&self, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(jiff::Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Acquires or renews the Lease. `Ok(true)` when this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec_now(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let next = if holder.as_deref() == Some(self.identity.as_str()) {
            // Ours: renew.
            self.spec_now(
                spec.lease_transitions.unwrap_or(0),
                spec.acquire_time.clone(),
            )
        } else {
            let record = (
                holder.clone(),
                spec.renew_time.as_ref().map(|t| t.0.to_string()),
            );
            let duration = spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(1) as u64))
                .unwrap_or(self.duration);
            let mut observed = self.observed.lock().await;
            let expired = match observed.as_ref() {
                _ if holder.is_none() => true,
                Some(o) if o.record == record => o.at.elapsed() >= duration,
                _ => {
                    *observed = Some(Observed {
                        record,
                        at: Instant::now(),
                    });
                    false
                }
            };
            if !expired {
                return Ok(false);
            }
            self.spec_now(spec.lease_transitions.unwrap_or(0) + 1, None)
        };
        lease.spec = Some(next);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if this replica holds it (on a clean shutdown).
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
