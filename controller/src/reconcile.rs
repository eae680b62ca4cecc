//! The one `reconcile` and the one `error_policy`.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use sealcred_shared::crd::{SealedStorageCred, SealedStorageCredStatus};
use tracing::{debug, info, instrument, warn};

use crate::context::Context;
use crate::materialize::{Outcome, sync_secret};
use crate::restart::{Restarter, Workloads, content_digest};
use crate::status::{publish, ready_condition, write_status};
use crate::{Error, Result};

/// Requeue of a healthy object is `--resync`; of a conflict, this.
const CONFLICT_REQUEUE: Duration = Duration::from_secs(60);
/// Requeue after a non-transient failure (the object must change to be fixed).
const SLOW_REQUEUE: Duration = Duration::from_secs(300);

/// Rolls the workloads that name the Secret in `sealcred.io/restart-on-change` (see
/// [`crate::restart`]). A failure is returned (the reconcile is retried with backoff)
/// and the change stays pending in memory, so the retry still rolls workloads that
/// carry no digest yet.
async fn restart_workloads(
    obj: &SealedStorageCred,
    ctx: &Context,
    workloads: &Workloads,
    (namespace, uid, secret_name): (&str, &str, &str),
    content_changed: bool,
    sts_issued_at: Option<&str>,
) -> Result<()> {
    let pending = {
        let mut p = ctx.restarts_pending.lock().unwrap();
        if content_changed {
            p.insert(uid.to_string());
        }
        p.contains(uid)
    };
    let mut digest = content_digest(obj, namespace);
    if let Some(issued) = sts_issued_at {
        // STS credentials change at every refresh with the same spec.
        digest = crate::sts::restart_digest(&digest, issued);
    }
    if !pending
        && ctx
            .restarts_checked
            .lock()
            .unwrap()
            .get(uid)
            .is_some_and(|d| *d == digest)
    {
        // This content was already checked in this process and nothing is pending.
        return Ok(());
    }
    let restarter = Restarter {
        client: &ctx.client,
        workloads,
        recorder: &ctx.recorder,
        metrics: &ctx.metrics,
    };
    let restarted = match restarter
        .restart_for(namespace, secret_name, &digest, pending)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            publish(
                ctx,
                obj,
                EventType::Warning,
                "RestartFailed",
                format!("rolling the workloads that use Secret {secret_name} failed: {e}"),
            )
            .await;
            return Err(e);
        }
    };
    ctx.restarts_pending.lock().unwrap().remove(uid);
    ctx.restarts_checked
        .lock()
        .unwrap()
        .insert(uid.to_string(), digest);
    for r in restarted {
        publish(
            ctx,
            obj,
            EventType::Normal,
            "WorkloadRestarted",
            format!(
                "{} {} restarted: Secret {secret_name} changed",
                r.kind, r.name
            ),
        )
        .await;
    }
    Ok(())
}

/// Reconciles one `SealedStorageCred`: unseal, write the Secret, write the status.
#[instrument(skip(obj, ctx), fields(namespace = obj.namespace().unwrap_or_default(), name = obj.name_any()))]
pub async fn reconcile(obj: Arc<SealedStorageCred>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer();
    let namespace = obj
        .namespace()
        .ok_or_else(|| Error::InvalidObject("no namespace".into()))?;
    let uid = obj
        .uid()
        .ok_or_else(|| Error::InvalidObject("no uid".into()))?;
    let secret_name = obj
        .spec
        .template
        .name
        .clone()
        .unwrap_or_else(|| obj.name_any());
    let generation = obj.metadata.generation;
    let prev = obj.status.as_ref();
    let entries: Vec<String> = obj.spec.entries.keys().cloned().collect();

    let synced = match &obj.spec.sts {
        Some(_) => crate::sts::sync(&obj, &ctx, &namespace, &uid, &secret_name)
            .await
            .map(|s| (s.outcome, Some(s))),
        None => sync_secret(&obj, &ctx, &namespace, &uid, &secret_name)
            .await
            .map(|o| (o, None)),
    };
    match synced {
        Ok((outcome, sts)) => {
            ctx.failures.lock().unwrap().remove(&uid);
            let (message, entries) = match &sts {
                Some(s) => (
                    format!(
                        "Secret {secret_name} holds STS credentials that expire at {}",
                        s.credentials.expires_at
                    ),
                    crate::sts::entry_names(&obj),
                ),
                None => (
                    format!(
                        "Secret {secret_name} holds the {} unsealed entries",
                        entries.len()
                    ),
                    entries,
                ),
            };
            let status = SealedStorageCredStatus {
                observed_generation: generation,
                conditions: vec![ready_condition(
                    prev,
                    true,
                    "Unsealed",
                    message.clone(),
                    generation,
                )],
                secret_name: Some(secret_name.clone()),
                entries,
                credentials: sts.as_ref().map(|s| s.credentials.clone()),
            };
            write_status(&obj, &ctx, status).await?;
            let label = match outcome {
                Outcome::Written { .. } => {
                    info!(secret = %secret_name, "wrote the Secret");
                    publish(&ctx, &obj, EventType::Normal, "Unsealed", message).await;
                    "written"
                }
                Outcome::Unchanged => {
                    debug!(secret = %secret_name, "the Secret is up to date");
                    "unchanged"
                }
            };
            if let Some(w) = &ctx.workloads {
                let changed = matches!(
                    outcome,
                    Outcome::Written {
                        content_changed: true
                    }
                );
                let refreshed = sts.as_ref().map(|s| s.credentials.issued_at.as_str());
                restart_workloads(
                    &obj,
                    &ctx,
                    w,
                    (&namespace, &uid, &secret_name),
                    changed,
                    refreshed,
                )
                .await?;
            }
            ctx.metrics.reconciled(label);
            Ok(Action::requeue(
                sts.map_or(ctx.resync, |s| s.requeue.min(ctx.resync)),
            ))
        }
        Err(err) => {
            let reason = err.reason();
            let message = err.to_string();
            let status = SealedStorageCredStatus {
                observed_generation: generation,
                conditions: vec![ready_condition(
                    prev,
                    false,
                    reason,
                    message.clone(),
                    generation,
                )],
                secret_name: Some(secret_name),
                entries: prev.map(|s| s.entries.clone()).unwrap_or_default(),
                credentials: prev.and_then(|s| s.credentials.clone()),
            };
            if !matches!(err, Error::Kube(_)) {
                if let Err(e) = write_status(&obj, &ctx, status).await {
                    warn!(error = %e, "writing the status failed");
                }
                publish(&ctx, &obj, EventType::Warning, reason, message).await;
            }
            Err(err)
        }
    }
}

/// Exponential backoff with jitter: 1 s, 2 s, 4 s … up to `cap`, each drawn
/// uniformly from [d/2, d].
pub fn backoff_delay(attempt: u32, cap: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let d = Duration::from_secs(1u64 << exp).min(cap);
    let r = f64::from(getrandom::u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
    d.mul_f64(0.5 + 0.5 * r)
}

/// Decides when to retry a failed reconciliation.
pub fn error_policy(obj: Arc<SealedStorageCred>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconciled(err.reason());
    let uid = obj.uid().unwrap_or_default();
    let delay = if err.is_transient() {
        let mut failures = ctx.failures.lock().unwrap();
        let n = failures.entry(uid).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n, ctx.max_backoff)
    } else if matches!(err, Error::SecretConflict(_)) {
        CONFLICT_REQUEUE
    } else {
        SLOW_REQUEUE
    };
    warn!(
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any(),
        reason = err.reason(),
        error = %err,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed"
    );
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let cap = Duration::from_secs(300);
        for attempt in 1..30 {
            let d = backoff_delay(attempt, cap);
            let full = Duration::from_secs(1u64 << (attempt - 1).min(20)).min(cap);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }
}
