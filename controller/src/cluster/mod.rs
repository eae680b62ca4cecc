//! `ClusterSealedStorageCred`: one sealed Secret, materialized in every namespace
//! named in `spec.namespaces` or selected by `spec.namespaceSelector`
//! (docs/operations.md, "One Secret in many namespaces").
//!
//! One reconcile, in this order:
//! 1. refusals about the object itself, before any namespace is looked at and before
//!    any KMS call ([`refusal`]): a scope other than `cluster`, `spec.sts`, a
//!    malformed selector or namespace name, a Secret type not on `--secret-types`;
//! 2. the targets, from the namespace cache ([`targets`]);
//! 3. each target's Secret read and checked, no KMS call ([`secrets::check`]): a
//!    Secret that is not ours is left untouched and reported for that namespace;
//! 4. if any target needs a write, the object is opened **once** (the sealed fields
//!    alone decide the KMS calls: the binding is scope `cluster`, the object's name
//!    and kind, never a namespace), and only after every tag verified is the Secret
//!    written to those namespaces ([`secrets::write_one`]);
//! 5. copies this object controls outside the targets are deleted ([`secrets::prune`]);
//! 6. the status: `Ready` (kstatus conditions, [`crate::status::conditions`]),
//!    `namespacesReady: READY/MATCHED`, and at most 50 namespaces, failing first.
//!
//! The Secrets' controller ownerReference names the cluster object, so the garbage
//! collector deletes every copy when it is deleted. Workload restarts
//! (`sealcred.io/restart-on-change`) and consumer status are not done for these
//! Secrets. Runs only when the controller watches every namespace (`run.rs`).

mod secrets;
pub mod targets;
pub mod watch;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use sealcred_shared::crd::{
    ClusterSealedStorageCred, ClusterSealedStorageCredStatus, MAX_NAMESPACES_LISTED,
    MAX_NAMESPACES_NAMED, Scope, SealedStorageCredStatus, TargetNamespaceStatus,
};
use sealcred_shared::format::check_object_name;
use sealcred_shared::seal;
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::audit::Unseal;
use crate::context::{Context, OwnWrites};
use crate::materialize::{check_type, spec_digest};
use crate::reconcile::backoff_delay;
use crate::status::{Health, conditions};
use crate::{Error, FIELD_MANAGER, Result};

use secrets::selector as secret_selector;

/// Requeue after a failure the object or a Secret must change to fix.
const SLOW_REQUEUE: Duration = Duration::from_secs(300);
/// Requeue after a conflict with an unowned Secret.
const CONFLICT_REQUEUE: Duration = Duration::from_secs(60);
/// Longest per-namespace message in the status.
const MAX_MESSAGE: usize = 300;

/// What the cluster reconcile needs beside the namespaced [`Context`].
pub struct ClusterContext {
    pub(crate) base: Arc<Context>,
    /// Every namespace's metadata (a metadata-only watch).
    pub(crate) namespaces: Store<PartialObjectMeta<Namespace>>,
    /// `uid/namespace` → SHA-256 of the copy's data as written or first seen.
    pub(crate) data_digests: Mutex<HashMap<String, [u8; 32]>>,
    /// object uid → consecutive failures that back off.
    pub(crate) failures: Mutex<HashMap<String, u32>>,
    /// Our own writes of these Secrets (their echo on the Secret watch is dropped).
    pub(crate) own_writes: Arc<OwnWrites>,
}

impl ClusterContext {
    /// A context over `base` and the namespace cache.
    pub fn new(base: Arc<Context>, namespaces: Store<PartialObjectMeta<Namespace>>) -> Self {
        ClusterContext {
            base,
            namespaces,
            data_digests: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            own_writes: Arc::new(OwnWrites::default()),
        }
    }

    /// Drops the memory of objects whose uid is not in `live`.
    pub(crate) fn forget_except(&self, live: &BTreeSet<String>) {
        self.data_digests
            .lock()
            .unwrap()
            .retain(|k, _| k.split('/').next().is_some_and(|u| live.contains(u)));
        self.failures
            .lock()
            .unwrap()
            .retain(|k, _| live.contains(k));
    }
}

/// The refusal of scope `cluster` by the namespaced reconcile, before any KMS call.
pub(crate) fn namespaced_refusal() -> Error {
    Error::InvalidObject(
        "scope cluster is sealed for a ClusterSealedStorageCred and does not open in a SealedStorageCred (nothing was decrypted); seal it for this object with another scope".into(),
    )
}

/// What is wrong with the object itself, found without KMS or namespaces.
pub(crate) fn refusal(obj: &ClusterSealedStorageCred) -> Option<String> {
    let spec = &obj.spec;
    if spec.sealed.scope != Scope::Cluster {
        return Some(format!(
            "scope {} does not open in a ClusterSealedStorageCred, only scope cluster (seal it with `sealcred seal --scope cluster`); nothing was decrypted",
            spec.sealed.scope
        ));
    }
    if spec.sealed.sts.is_some() {
        return Some(
            "spec.sts is not supported in a ClusterSealedStorageCred (use a SealedStorageCred per namespace); nothing was decrypted".into(),
        );
    }
    if spec.namespaces.len() > MAX_NAMESPACES_NAMED {
        return Some(format!(
            "spec.namespaces names {} namespaces, at most {MAX_NAMESPACES_NAMED} (use namespaceSelector)",
            spec.namespaces.len()
        ));
    }
    for (i, n) in spec.namespaces.iter().enumerate() {
        if let Err(e) = check_object_name("namespace", n) {
            return Some(format!("spec.namespaces[{i}]: {e}"));
        }
    }
    if let Some(sel) = &spec.namespace_selector
        && let Err(e) = sel.check()
    {
        return Some(format!("spec.{e}"));
    }
    None
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

async fn publish(
    ctx: &Context,
    obj: &ClusterSealedStorageCred,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(cut(note, 1000)),
        action: "Unseal".into(),
        secondary: None,
    };
    ctx.recorder.send(ev, obj.object_ref(&()));
}

async fn write_status(
    obj: &ClusterSealedStorageCred,
    ctx: &Context,
    status: &ClusterSealedStorageCredStatus,
) -> Result<()> {
    if obj.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<ClusterSealedStorageCred> = Api::all(ctx.client.clone());
    let patch = json!({
        "apiVersion": ClusterSealedStorageCred::api_version(&()),
        "kind": ClusterSealedStorageCred::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

/// The previous conditions, as [`conditions`] reads them.
fn prev_conditions(obj: &ClusterSealedStorageCred) -> Option<SealedStorageCredStatus> {
    obj.status.as_ref().map(|s| SealedStorageCredStatus {
        conditions: s.conditions.clone(),
        ..SealedStorageCredStatus::default()
    })
}

/// One namespace's failure.
struct Failure {
    namespace: String,
    reason: &'static str,
    message: String,
    transient: bool,
    backs_off: bool,
}

impl Failure {
    fn of(namespace: &str, e: &Error) -> Failure {
        Failure {
            namespace: namespace.to_string(),
            reason: e.reason(),
            message: e.to_string(),
            transient: e.is_transient(),
            backs_off: e.backs_off(),
        }
    }
}

/// Reconciles one `ClusterSealedStorageCred` (see the module documentation).
#[instrument(skip(obj, cctx), fields(name = obj.name_any()))]
pub async fn reconcile(
    obj: Arc<ClusterSealedStorageCred>,
    cctx: Arc<ClusterContext>,
) -> Result<Action> {
    let ctx = &cctx.base;
    let _timer = ctx.metrics.reconcile_timer();
    let uid = obj
        .uid()
        .ok_or_else(|| Error::InvalidObject("no uid".into()))?;
    let view = obj.sealed_view();
    let secret_name = view
        .spec
        .template
        .name
        .clone()
        .unwrap_or_else(|| obj.name_any());
    let generation = obj.metadata.generation;
    let prev = prev_conditions(&obj);
    let base = ClusterSealedStorageCredStatus {
        observed_generation: generation,
        secret_name: Some(secret_name.clone()),
        entries: view.spec.entries.keys().cloned().collect(),
        ..ClusterSealedStorageCredStatus::default()
    };

    // 1. The object itself: no namespace looked at, no KMS call.
    let refused = match refusal(&obj) {
        Some(message) => Some(Error::InvalidObject(message)),
        None => check_type(&view, ctx).err(),
    };
    if let Some(err) = refused {
        let status = ClusterSealedStorageCredStatus {
            conditions: conditions(
                prev.as_ref(),
                Health::Permanent,
                err.reason(),
                &err.to_string(),
                generation,
            ),
            namespaces_ready: obj.status.as_ref().and_then(|s| s.namespaces_ready.clone()),
            namespaces: obj
                .status
                .as_ref()
                .map(|s| s.namespaces.clone())
                .unwrap_or_default(),
            ..base
        };
        if obj.status.as_ref() != Some(&status) {
            publish(ctx, &obj, EventType::Warning, err.reason(), err.to_string()).await;
        }
        write_status(&obj, ctx, &status).await?;
        ctx.metrics.reconciled(err.reason());
        return Ok(Action::requeue(SLOW_REQUEUE));
    }

    // 2. The targets, once the namespace cache has synced (an empty cache would
    // prune every copy).
    if tokio::time::timeout(Duration::from_secs(30), cctx.namespaces.wait_until_ready())
        .await
        .map_or(true, |r| r.is_err())
    {
        return Err(Error::CacheNotReady(
            "the namespace cache has not synced yet".into(),
        ));
    }
    let all = cctx.namespaces.state();
    let targets = targets::targets(&obj.spec, all.iter().map(|n| &n.metadata));
    let owner = obj
        .controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidObject("no uid".into()))?;

    // 3. Each target, checked without KMS.
    let mut failures: Vec<Failure> = Vec::new();
    let mut ready: Vec<String> = Vec::new();
    let mut pending = Vec::new();
    for ns in &targets.present {
        let digest = spec_digest(&view, ns);
        match secrets::check(&cctx, &view, ns, &uid, &secret_name, &digest).await {
            Ok(secrets::Need::Unchanged) => ready.push(ns.clone()),
            Ok(secrets::Need::Write(checked)) => pending.push((ns.clone(), digest, checked)),
            Err(e) => failures.push(Failure::of(ns, &e)),
        }
    }
    for ns in &targets.missing {
        failures.push(Failure {
            namespace: ns.clone(),
            reason: "NamespaceNotFound",
            message: format!(
                "namespace {ns} does not exist; the Secret is written when it is created"
            ),
            transient: true,
            backs_off: false,
        });
    }

    // 4. One unseal for every namespace that needs a write.
    let mut written = Vec::new();
    if !pending.is_empty() {
        let mut audit = Unseal::new(&view, "", &uid);
        let opened = seal::open_observed(&view, &ctx.keyring, &mut |c| audit.record(c)).await;
        audit.finish(match &opened {
            Ok(_) => "ok",
            Err(e) => e.reason(),
        });
        match opened {
            Ok(opened) => {
                for (ns, digest, checked) in pending {
                    match secrets::write_one(
                        &cctx,
                        &view,
                        &ns,
                        &uid,
                        &secret_name,
                        &digest,
                        checked,
                        &opened,
                        &owner,
                    )
                    .await
                    {
                        Ok(()) => {
                            ready.push(ns.clone());
                            written.push(ns);
                        }
                        Err(e) => failures.push(Failure::of(&ns, &e)),
                    }
                }
                drop(opened);
            }
            Err(e) => {
                let e = Error::Unseal(e);
                for (ns, _, _) in pending {
                    failures.push(Failure::of(&ns, &e));
                }
            }
        }
    }

    // 5. Copies outside the targets.
    let removed = secrets::prune(&cctx, &uid, &secret_name, &targets.present).await?;

    // 6. The status.
    let matched = ready.len() + failures.len();
    failures.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    ready.sort();
    let mut listed: Vec<TargetNamespaceStatus> = failures
        .iter()
        .map(|f| TargetNamespaceStatus {
            name: f.namespace.clone(),
            ready: false,
            reason: f.reason.into(),
            message: cut(f.message.clone(), MAX_MESSAGE),
        })
        .chain(ready.iter().map(|n| TargetNamespaceStatus {
            name: n.clone(),
            ready: true,
            reason: "Unsealed".into(),
            message: String::new(),
        }))
        .collect();
    listed.truncate(MAX_NAMESPACES_LISTED);
    let entries = base.entries.len();
    let (health, reason, message) = match failures.first() {
        None => (
            Health::Ready,
            "Unsealed",
            format!(
                "Secret {secret_name} holds the {entries} unsealed entries in {} of {matched} namespaces",
                ready.len()
            ),
        ),
        Some(first) => {
            // The first failing namespace's reason; transient only if all are.
            let transient = failures.iter().all(|f| f.transient);
            (
                if transient {
                    Health::Transient
                } else {
                    Health::Permanent
                },
                first.reason,
                format!(
                    "Secret {secret_name} is written in {} of {matched} namespaces; {} failing, first {}: {}",
                    ready.len(),
                    failures.len(),
                    first.namespace,
                    first.message
                ),
            )
        }
    };
    let status = ClusterSealedStorageCredStatus {
        conditions: conditions(prev.as_ref(), health, reason, &message, generation),
        namespaces_ready: Some(format!("{}/{matched}", ready.len())),
        namespaces: listed,
        ..base
    };
    let changed = obj.status.as_ref() != Some(&status);
    write_status(&obj, ctx, &status).await?;

    if !written.is_empty() || !removed.is_empty() {
        let names = |v: &[String]| {
            let mut s = v.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 10 {
                s += &format!(" and {} more", v.len() - 10);
            }
            s
        };
        let mut note = format!("Secret {secret_name}");
        if !written.is_empty() {
            note += &format!(
                " written in {} namespaces ({})",
                written.len(),
                names(&written)
            );
        }
        if !removed.is_empty() {
            if !written.is_empty() {
                note += ";";
            }
            note += &format!(" removed: {}", names(&removed));
        }
        info!(
            written = written.len(),
            removed = removed.len(),
            "wrote the Secrets"
        );
        publish(ctx, &obj, EventType::Normal, "Unsealed", note).await;
    }
    if !failures.is_empty() && changed {
        publish(ctx, &obj, EventType::Warning, reason, message).await;
    }

    if failures.is_empty() {
        cctx.failures.lock().unwrap().remove(&uid);
        ctx.metrics.reconciled(if written.is_empty() {
            "unchanged"
        } else {
            "written"
        });
        return Ok(Action::requeue(ctx.resync));
    }
    ctx.metrics.reconciled(reason);
    let delay = if failures.iter().any(|f| f.backs_off) {
        let mut f = cctx.failures.lock().unwrap();
        let n = f.entry(uid).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n, ctx.max_backoff)
    } else if failures.iter().all(|f| f.reason == "NamespaceNotFound") {
        // The namespace watch triggers the write when it is created.
        ctx.resync
    } else if failures.iter().any(|f| f.reason == "SecretConflict") {
        CONFLICT_REQUEUE
    } else {
        SLOW_REQUEUE
    };
    Ok(Action::requeue(delay))
}

/// Retries a reconcile that failed as a whole (the Secret list of the pruning, the
/// status write): with backoff.
pub fn error_policy(
    obj: Arc<ClusterSealedStorageCred>,
    err: &Error,
    cctx: Arc<ClusterContext>,
) -> Action {
    cctx.base.metrics.reconciled(err.reason());
    let uid = obj.uid().unwrap_or_default();
    let delay = {
        let mut f = cctx.failures.lock().unwrap();
        let n = f.entry(uid).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n, cctx.base.max_backoff)
    };
    warn!(
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
    use serde_json::json;

    fn obj(spec: serde_json::Value) -> ClusterSealedStorageCred {
        let mut s = json!({
            "formatVersion": 1, "suite": "x", "scope": "cluster",
            "template": {"type": "Opaque"}, "dataKeys": [], "entries": {},
        });
        for (k, v) in spec.as_object().unwrap() {
            s[k] = v.clone();
        }
        serde_json::from_value(json!({
            "apiVersion": "sealcred.io/v1alpha1", "kind": "ClusterSealedStorageCred",
            "metadata": {"name": "a"}, "spec": s,
        }))
        .unwrap()
    }

    #[test]
    fn refusals_before_any_namespace_or_key() {
        assert_eq!(refusal(&obj(json!({"namespaces": ["a"]}))), None);
        for (spec, needle) in [
            (json!({"scope": "strict"}), "scope strict"),
            (json!({"scope": "cluster-wide"}), "scope cluster-wide"),
            (json!({"sts": {}}), "spec.sts"),
            (json!({"namespaces": ["Bad_Name"]}), "spec.namespaces[0]"),
            (
                json!({"namespaceSelector": {}}),
                "namespaceSelector is empty",
            ),
            (
                json!({"namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}}),
                "matchExpressions[0]",
            ),
        ] {
            let got = refusal(&obj(spec.clone())).unwrap_or_default();
            assert!(got.contains(needle), "{spec}: {got}");
        }
    }
}
