//! Prometheus metrics (prometheus-client). Labels carry reasons, operations and
//! outcomes only: never names of entries, values, or digests of values.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sealcred_shared::keyring::CallObserver;
use sealcred_shared::provider::ProviderErrorKind;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    reconcile_duration: Histogram,
    kms_calls: Family<Labels, Counter>,
    kms_duration: Family<Labels, Histogram>,
    objects: Family<Labels, Gauge>,
    leader: Gauge,
    workload_restarts: Family<Labels, Counter>,
    kms_calls_seen: AtomicU64,
    restarts_seen: AtomicU64,
    reconciles_seen: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `sealcred_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sealcred");
        let reconciles = Family::<Labels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let kms_calls = Family::<Labels, Counter>::default();
        let kms_duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let objects = Family::<Labels, Gauge>::default();
        let leader = Gauge::default();
        let workload_restarts = Family::<Labels, Counter>::default();
        registry.register(
            "workload_restarts",
            "Rolling restarts of workloads annotated sealcred.io/restart-on-change, by kind",
            workload_restarts.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciliations by result (written, unchanged, or the Ready=False reason)",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            reconcile_duration.clone(),
        );
        registry.register(
            "kms_calls",
            "Key-provider calls by operation and outcome",
            kms_calls.clone(),
        );
        registry.register(
            "kms_call_duration_seconds",
            "Latency of key-provider calls by operation",
            kms_duration.clone(),
        );
        registry.register(
            "objects",
            "SealedStorageCreds seen by this replica, by Ready state (ready, not_ready, unknown)",
            objects.clone(),
        );
        registry.register(
            "leader",
            "1 when this replica holds the leader lease (or leader election is off)",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            kms_calls,
            kms_duration,
            objects,
            leader,
            workload_restarts,
            kms_calls_seen: AtomicU64::new(0),
            restarts_seen: AtomicU64::new(0),
            reconciles_seen: AtomicU64::new(0),
        }
    }

    /// An observer for the keyring, counting every key-provider call.
    pub fn kms_observer(self: &Arc<Self>) -> CallObserver {
        let m = Arc::clone(self);
        Arc::new(
            move |op: &str, _key: &str, outcome: Result<(), &ProviderErrorKind>, took: Duration| {
                let outcome = match outcome {
                    Ok(()) => "ok",
                    Err(ProviderErrorKind::AccessDenied) => "access_denied",
                    Err(ProviderErrorKind::KeyDisabled) => "key_disabled",
                    Err(ProviderErrorKind::KeyPendingDeletion) => "key_pending_deletion",
                    Err(ProviderErrorKind::KeyInvalidState) => "key_invalid_state",
                    Err(ProviderErrorKind::Unavailable) => "unavailable",
                    Err(ProviderErrorKind::InvalidCiphertext) => "invalid_ciphertext",
                    Err(ProviderErrorKind::NotFound) => "not_found",
                    Err(ProviderErrorKind::KeyNotAllowed) => "key_not_allowed",
                    Err(ProviderErrorKind::Other) => "other",
                };
                m.kms_calls
                    .get_or_create(&labels(&[("operation", op), ("outcome", outcome)]))
                    .inc();
                m.kms_duration
                    .get_or_create(&labels(&[("operation", op)]))
                    .observe(took.as_secs_f64());
                m.kms_calls_seen.fetch_add(1, Ordering::Relaxed);
            },
        )
    }

    /// Starts timing a reconciliation; the duration is recorded when the guard drops.
    pub fn reconcile_timer(&self) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            start: Instant::now(),
        }
    }

    /// Counts one reconciliation with its result.
    pub fn reconciled(&self, result: &str) {
        self.reconciles
            .get_or_create(&labels(&[("result", result)]))
            .inc();
        self.reconciles_seen.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one rolling restart of a workload of `kind` (Deployment, ...).
    pub fn workload_restarted(&self, kind: &str) {
        self.workload_restarts
            .get_or_create(&labels(&[("kind", kind)]))
            .inc();
        self.restarts_seen.fetch_add(1, Ordering::Relaxed);
    }

    /// Total workload restarts since start (all kinds).
    pub fn workload_restarts_total(&self) -> u64 {
        self.restarts_seen.load(Ordering::Relaxed)
    }

    /// Sets the objects gauges.
    pub fn set_objects(&self, ready: i64, not_ready: i64, unknown: i64) {
        for (state, n) in [
            ("ready", ready),
            ("not_ready", not_ready),
            ("unknown", unknown),
        ] {
            self.objects
                .get_or_create(&labels(&[("state", state)]))
                .set(n);
        }
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Total key-provider calls made since start (all operations and outcomes).
    pub fn kms_calls_total(&self) -> u64 {
        self.kms_calls_seen.load(Ordering::Relaxed)
    }

    /// Total reconciliations since start (all results).
    pub fn reconciles_total(&self) -> u64 {
        self.reconciles_seen.load(Ordering::Relaxed)
    }

    /// Whether this replica is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Records a reconciliation's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_metrics() {
        let m = Arc::new(Metrics::new());
        (m.kms_observer())("Decrypt", "arn:x", Ok(()), Duration::from_millis(3));
        m.reconciled("written");
        m.set_objects(1, 0, 0);
        m.workload_restarted("Deployment");
        drop(m.reconcile_timer());
        let text = m.encode();
        for needle in [
            "sealcred_reconciles_total{result=\"written\"} 1",
            "sealcred_kms_calls_total{operation=\"Decrypt\",outcome=\"ok\"} 1",
            "sealcred_kms_call_duration_seconds_count{operation=\"Decrypt\"} 1",
            "sealcred_reconcile_duration_seconds_count 1",
            "sealcred_objects{state=\"ready\"} 1",
            "sealcred_workload_restarts_total{kind=\"Deployment\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
        assert!(!text.contains("arn:x"), "key ids are not labels");
        assert_eq!(m.kms_calls_total(), 1);
    }
}
