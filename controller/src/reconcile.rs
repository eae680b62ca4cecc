//! The one `reconcile` and the one `error_policy`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use sealcred_shared::crd::{Scope, SealedStorageCred, SealedStorageCredStatus};
use tracing::{debug, info, instrument, warn};

use crate::consumers::summarize;
use crate::context::{Context, FullSync};
use crate::materialize::{Outcome, Restart, sync_secret};
use crate::restart::Restarter;
use crate::status::{Health, conditions, consumers_condition, publish, write_status};
use crate::{Error, Result};

/// Requeue of a healthy object is `--resync`; of a conflict, this.
const CONFLICT_REQUEUE: Duration = Duration::from_secs(60);
/// Requeue after a non-transient failure (the object must change to be fixed).
const SLOW_REQUEUE: Duration = Duration::from_secs(300);

/// Rolls the workloads that name the Secret in `sealcred.io/restart-on-change` (see
/// [`crate::restart`]) to the Secret's restart digest ([`crate::digest`]). A failure
/// is returned (the reconcile is retried with backoff) and the change stays pending in
/// memory, so the retry still rolls workloads that carry no digest yet. Without a
/// digest (no workload named the Secret when it was written, or a Secret written by an
/// older controller) there is nothing to roll to until the next write.
async fn restart_workloads(
    obj: &SealedStorageCred,
    ctx: &Context,
    namespace: &str,
    uid: &str,
    secret_name: &str,
    content_changed: bool,
    restart: Restart,
) -> Result<()> {
    let Some(workloads) = &ctx.workloads else {
        return Ok(());
    };
    let (digest, first_record) = match restart {
        Restart::NotAsked => return Ok(()),
        Restart::Digest {
            digest,
            first_record,
        } => (digest, first_record),
        Restart::KeyFailed(e) => {
            if content_changed {
                // Roll at the retry that gets the key (it finds the values unchanged).
                ctx.restarts_pending.lock().unwrap().insert(uid.to_string());
            }
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
    let pending = {
        let mut p = ctx.restarts_pending.lock().unwrap();
        if content_changed {
            p.insert(uid.to_string());
        }
        p.contains(uid)
    };
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
        .restart_for(namespace, secret_name, &digest, pending, first_record)
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

/// `base` with the consumers of the Secret (`status.consumers`, the `UPDATED/TOTAL`
/// summary and the `ConsumersUpdated` condition), from the workload caches.
fn with_consumers(
    base: &SealedStorageCredStatus,
    prev: Option<&SealedStorageCredStatus>,
    ctx: &Context,
    namespace: &str,
    secret_name: &str,
    digest: Option<&str>,
) -> SealedStorageCredStatus {
    let mut status = base.clone();
    let Some(workloads) = &ctx.workloads else {
        return status;
    };
    let consumers = workloads.consumers_of(namespace, secret_name);
    let (entries, condition) = summarize(&consumers, secret_name, digest);
    status.consumers = entries;
    if let Some(c) = condition {
        status.consumers_updated = Some(c.summary);
        status.conditions.push(consumers_condition(
            prev,
            c.status,
            c.reason,
            &c.message,
            base.observed_generation,
        ));
    }
    status
}

/// A reconcile with nothing to do but follow the Secret's consumers (asked for by a
/// workload change: a rollout moved, annotations changed) only refreshes
/// `status.consumers`: no KMS call, no Secret read. That is when neither the object
/// nor its Secret changed since the last reconcile began, a full reconcile of the
/// same generation succeeded in this process and is not yet due again (`--resync`, an
/// STS refresh), and no restart is pending; otherwise (None) the full reconcile runs.
async fn consumers_only(
    obj: &SealedStorageCred,
    ctx: &Context,
    namespace: &str,
    uid: &str,
    secret_name: &str,
) -> Result<Option<Action>> {
    let Some(workloads) = &ctx.workloads else {
        return Ok(None);
    };
    if !workloads.take_consumers_only(namespace, &obj.name_any()) {
        return Ok(None);
    }
    let Some(full) = ctx.full_syncs.lock().unwrap().get(uid).cloned() else {
        return Ok(None);
    };
    let now = Instant::now();
    if full.generation != obj.metadata.generation
        || full.secret_name != secret_name
        || now >= full.next
        || ctx.restarts_pending.lock().unwrap().contains(uid)
    {
        return Ok(None);
    }
    let status = with_consumers(
        &full.status,
        obj.status.as_ref(),
        ctx,
        namespace,
        secret_name,
        full.digest.as_deref(),
    );
    write_status(obj, ctx, status).await?;
    ctx.metrics.reconciled("consumers");
    Ok(Some(Action::requeue(full.next - now)))
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

    if let Some(action) = consumers_only(&obj, &ctx, &namespace, &uid, &secret_name).await? {
        return Ok(action);
    }

    // Scope cluster opens only in a ClusterSealedStorageCred: refused before any
    // Secret read or KMS call (the format refuses it too: `Binding::new`).
    let synced = match &obj.spec.sts {
        _ if obj.spec.scope == Scope::Cluster => Err(crate::cluster::namespaced_refusal()),
        Some(_) => crate::sts::sync(&obj, &ctx, &namespace, &uid, &secret_name)
            .await
            .map(|s| (s.outcome, Some((s.credentials, s.requeue)))),
        None => sync_secret(&obj, &ctx, &namespace, &uid, &secret_name)
            .await
            .map(|o| (o, None)),
    };
    match synced {
        Ok((outcome, sts)) => {
            ctx.failures.lock().unwrap().remove(&uid);
            let (message, entries) = match &sts {
                Some((credentials, _)) => (
                    format!(
                        "Secret {secret_name} holds STS credentials that expire at {}",
                        credentials.expires_at
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
            let base = SealedStorageCredStatus {
                observed_generation: generation,
                conditions: conditions(prev, Health::Ready, "Unsealed", &message, generation),
                secret_name: Some(secret_name.clone()),
                entries,
                credentials: sts.as_ref().map(|(c, _)| c.clone()),
                ..Default::default()
            };
            let digest = match &outcome {
                Outcome::Written { restart, .. } | Outcome::Unchanged { restart } => {
                    match restart {
                        Restart::Digest { digest, .. } => Some(digest.clone()),
                        _ => None,
                    }
                }
            };
            write_status(
                &obj,
                &ctx,
                with_consumers(
                    &base,
                    prev,
                    &ctx,
                    &namespace,
                    &secret_name,
                    digest.as_deref(),
                ),
            )
            .await?;
            let requeue = sts
                .as_ref()
                .map_or(ctx.resync, |(_, requeue)| (*requeue).min(ctx.resync));
            // Kept only while a workload names the Secret (a consumers-only reconcile has
            // nothing to follow otherwise): memory per object stays as it was without
            // consumers. A workload that names it later gets one full reconcile first.
            if ctx
                .workloads
                .as_ref()
                .is_some_and(|w| w.has_consumers(&namespace, &secret_name))
            {
                ctx.full_syncs.lock().unwrap().insert(
                    uid.clone(),
                    FullSync {
                        generation,
                        status: base,
                        digest,
                        secret_name: secret_name.clone(),
                        next: Instant::now() + requeue,
                    },
                );
            } else {
                ctx.full_syncs.lock().unwrap().remove(&uid);
            }
            let (label, changed, restart) = match outcome {
                Outcome::Written {
                    content_changed,
                    restart,
                } => {
                    info!(secret = %secret_name, "wrote the Secret");
                    publish(&ctx, &obj, EventType::Normal, "Unsealed", message).await;
                    ("written", content_changed, restart)
                }
                Outcome::Unchanged { restart } => {
                    debug!(secret = %secret_name, "the Secret is up to date");
                    ("unchanged", false, restart)
                }
            };
            restart_workloads(&obj, &ctx, &namespace, &uid, &secret_name, changed, restart).await?;
            ctx.metrics.reconciled(label);
            Ok(Action::requeue(requeue))
        }
        Err(err) => {
            let reason = err.reason();
            let message = err.to_string();
            let mut status = SealedStorageCredStatus {
                observed_generation: generation,
                conditions: conditions(
                    prev,
                    if err.is_transient() {
                        Health::Transient
                    } else {
                        Health::Permanent
                    },
                    reason,
                    &message,
                    generation,
                ),
                secret_name: Some(secret_name),
                entries: prev.map(|s| s.entries.clone()).unwrap_or_default(),
                credentials: prev.and_then(|s| s.credentials.clone()),
                consumers: prev.map(|s| s.consumers.clone()).unwrap_or_default(),
                consumers_updated: prev.and_then(|s| s.consumers_updated.clone()),
            };
            if let Some(c) =
                prev.and_then(|p| p.conditions.iter().find(|c| c.type_ == "ConsumersUpdated"))
            {
                status.conditions.push(c.clone());
            }
            ctx.full_syncs.lock().unwrap().remove(&uid);
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
    let delay = if err.backs_off() {
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
