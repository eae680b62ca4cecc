//! The reconciler: one `reconcile`, one `error_policy`, and [`run`].
//!
//! For each `SealedStorageCred` the controller materialises one Secret, written with
//! server-side apply (field manager [`crate::FIELD_MANAGER`]) and a controller
//! ownerReference. What it will not do:
//! - take over a Secret it does not own (unless the Secret opts in with the
//!   annotation `sealcred.io/adopt: "true"`): Ready=False, reason SecretConflict;
//! - delete or empty a Secret when unsealing fails: the last good Secret stays;
//! - call KMS when nothing changed: the Secret carries `sealcred.io/spec-digest`
//!   (SHA-256 of the sealed spec and the object's namespace/name — ciphertext only),
//!   and an owned Secret whose digest, keys, type, labels and annotations match is
//!   left alone.
//!
//! Drift of the Secret's *values* is detected with an in-memory map (object uid →
//! SHA-256 of the data as last written or first seen). A digest of plaintext never
//! leaves the process (no annotation, log or metric). Trade-off: after a restart the
//! map is empty, so a Secret whose values were edited while no controller ran is
//! trusted as it is (zero KMS calls on restart) until the object changes or the
//! Secret is edited again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, ObjectMeta, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use sealcred_shared::crd::{Condition, SealedStorageCred, SealedStorageCredStatus};
use sealcred_shared::keyring::{Allowlist, Keyring};
use sealcred_shared::provider::local::LocalKey;
use sealcred_shared::seal;
use sealcred_shared::secret::SecretBytes;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{debug, info, instrument, warn};
use zeroize::Zeroize;

use crate::events::Publisher;
use crate::leader::LeaseLock;
use crate::metrics::Metrics;
use crate::options::Options;
use crate::restart::{Restarter, Workloads, content_digest};
use crate::{AbortOnDrop, Error, FIELD_MANAGER, Result, hex};

/// Annotation on the Secret: digest of the sealed spec it was written from.
pub const SPEC_DIGEST_ANNOTATION: &str = "sealcred.io/spec-digest";
/// Annotation on a SealedStorageCred: changing its value forces a reconcile (like
/// Flux's `reconcile.fluxcd.io/requestedAt`); other metadata edits do not trigger one.
pub const RECONCILE_REQUESTED_ANNOTATION: &str = "sealcred.io/reconcile-requested-at";
/// Annotation on a pre-existing Secret that lets the controller take it over.
pub const ADOPT_ANNOTATION: &str = "sealcred.io/adopt";
/// Label on every Secret the controller writes (the Secret watch selects on it).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "sealcred-controller";

/// Requeue of a healthy object is `--resync`; of a conflict, this.
const CONFLICT_REQUEUE: Duration = Duration::from_secs(60);
/// Requeue after a non-transient failure (the object must change to be fixed).
const SLOW_REQUEUE: Duration = Duration::from_secs(300);

/// What the HTTP server and the tests see of a running controller.
pub struct State {
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    store: Mutex<Option<Store<SealedStorageCred>>>,
}

impl State {
    /// A new state around `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(State {
            metrics,
            ready: AtomicBool::new(false),
            store: Mutex::new(None),
        })
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether the controller has started (CRD found).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The metrics exposition, with the objects gauges refreshed from the cache.
    pub fn render_metrics(&self) -> String {
        if let Some(store) = self.store.lock().unwrap().as_ref() {
            let (mut ready, mut not_ready, mut unknown) = (0, 0, 0);
            for o in store.state() {
                match o
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                    .map(|c| c.status.as_str())
                {
                    Some("True") => ready += 1,
                    Some("False") => not_ready += 1,
                    _ => unknown += 1,
                }
            }
            self.metrics.set_objects(ready, not_ready, unknown);
        }
        self.metrics.encode()
    }
}

/// What `reconcile` needs.
pub struct Context {
    client: Client,
    keyring: Keyring,
    metrics: Arc<Metrics>,
    recorder: Publisher,
    /// object uid → SHA-256 of the Secret data as written or first seen. In memory only.
    data_digests: Mutex<HashMap<String, [u8; 32]>>,
    /// object uid → consecutive transient failures (for the backoff).
    failures: Mutex<HashMap<String, u32>>,
    /// uids whose Secret data changed and whose workloads are not all rolled yet.
    restarts_pending: Mutex<HashSet<String>>,
    /// object uid → content digest whose restart pass completed in this process.
    restarts_checked: Mutex<HashMap<String, String>>,
    /// The workload caches (None with `--workload-restarts=false`).
    workloads: Option<Workloads>,
    /// Our own Secret writes, to drop their echo on the Secret watch.
    own_writes: Arc<OwnWrites>,
    resync: Duration,
    max_backoff: Duration,
}

/// The resourceVersions of the Secrets this process has just written, keyed by
/// `namespace/name`. The Secret watch drops an event that only echoes one of them
/// (same resourceVersion), so our own write does not trigger a second reconcile of
/// its owner; any other change (an edit, a deletion) has another resourceVersion and
/// still triggers one. An entry lives from the write until its echo arrives.
#[derive(Default)]
struct OwnWrites(Mutex<HashMap<String, String>>);

impl OwnWrites {
    fn record(&self, namespace: &str, name: &str, resource_version: Option<String>) {
        if let Some(rv) = resource_version {
            self.0
                .lock()
                .unwrap()
                .insert(format!("{namespace}/{name}"), rv);
        }
    }

    /// Whether `meta` is the echo of our own write (and forgets the write if so).
    fn is_echo(&self, meta: &ObjectMeta) -> bool {
        let key = format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        );
        let mut writes = self.0.lock().unwrap();
        if writes
            .get(&key)
            .is_some_and(|rv| meta.resource_version.as_ref() == Some(rv))
        {
            writes.remove(&key);
            return true;
        }
        false
    }
}

/// Drops what the controller never reads from the cached objects (managedFields and
/// kubectl's last-applied copy), which would otherwise double their size in memory.
pub(crate) fn strip_for_cache(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// What makes a watch event of an object worth a reconcile: a new generation (a spec
/// change) or a new value of [`RECONCILE_REQUESTED_ANNOTATION`]. Status writes (ours
/// included) and label edits do not; new objects always do (the predicate's cache is
/// keyed by uid).
fn trigger_hash(o: &SealedStorageCred) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    predicates::generation(o).hash(&mut h);
    o.annotations()
        .get(RECONCILE_REQUESTED_ANNOTATION)
        .hash(&mut h);
    Some(h.finish())
}

/// A Secret whose data is wiped when dropped.
struct Wiped(Secret);

impl Drop for Wiped {
    fn drop(&mut self) {
        if let Some(data) = self.0.data.as_mut() {
            for v in data.values_mut() {
                v.0.zeroize();
            }
        }
        if let Some(data) = self.0.string_data.as_mut() {
            for v in data.values_mut() {
                v.zeroize();
            }
        }
    }
}

/// SHA-256 (hex) of the sealed spec and the object's namespace/name: changes
/// whenever anything the Secret is made from changes. Computed from ciphertext
/// and metadata only, never from plaintext.
pub fn spec_digest(obj: &SealedStorageCred, namespace: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"sealcred.io/spec-digest/v1\n");
    h.update(namespace.as_bytes());
    h.update(b"\n");
    h.update(obj.name_any().as_bytes());
    h.update(b"\n");
    // Struct fields serialize in declaration order and maps are BTreeMaps: canonical.
    h.update(serde_json::to_vec(&obj.spec).unwrap_or_default());
    hex(&h.finalize())
}

fn data_digest<'a>(entries: impl Iterator<Item = (&'a String, &'a [u8])>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sealcred.io/data-digest/v1\n");
    for (name, value) in entries {
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_be_bytes());
        h.update(value);
    }
    h.finalize().into()
}

enum Ownership {
    Ours,
    Unowned { adopt: bool },
    OtherController(String),
}

fn ownership(secret: &Secret, uid: &str) -> Ownership {
    let refs = secret.metadata.owner_references.as_deref().unwrap_or(&[]);
    if let Some(c) = refs.iter().find(|r| r.controller == Some(true)) {
        return if c.uid == uid {
            Ownership::Ours
        } else {
            Ownership::OtherController(format!("{} {}", c.kind, c.name))
        };
    }
    let adopt = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ADOPT_ANNOTATION))
        .is_some_and(|v| v == "true");
    Ownership::Unowned { adopt }
}

fn secret_labels(obj: &SealedStorageCred) -> BTreeMap<String, String> {
    let mut labels = obj.spec.template.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    labels
}

fn secret_annotations(obj: &SealedStorageCred, digest: &str) -> BTreeMap<String, String> {
    let mut a = obj.spec.template.annotations.clone();
    a.insert(SPEC_DIGEST_ANNOTATION.into(), digest.into());
    a
}

fn is_subset(want: &BTreeMap<String, String>, have: Option<&BTreeMap<String, String>>) -> bool {
    want.iter()
        .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
}

/// Whether an owned Secret already matches the object (without decrypting).
fn up_to_date(secret: &Secret, obj: &SealedStorageCred, digest: &str) -> bool {
    let keys_match = secret
        .data
        .as_ref()
        .map(|d| d.keys().eq(obj.spec.entries.keys()))
        .unwrap_or(obj.spec.entries.is_empty());
    keys_match
        && secret.type_.as_deref().unwrap_or("Opaque") == obj.spec.template.type_
        && is_subset(&secret_labels(obj), secret.metadata.labels.as_ref())
        && is_subset(
            &secret_annotations(obj, digest),
            secret.metadata.annotations.as_ref(),
        )
}

/// What a successful reconciliation did.
#[derive(Clone, Copy)]
enum Outcome {
    /// The Secret was written; `content_changed`: its data differs from before (or it
    /// is new). Decided in-process from the data digests, which never leave it.
    Written {
        content_changed: bool,
    },
    Unchanged,
}

/// Brings the Secret in line with the object. Plaintext lives in `Opened` and in
/// the `Wiped` Secret only for the duration of the write.
async fn sync_secret(
    obj: &SealedStorageCred,
    ctx: &Context,
    namespace: &str,
    uid: &str,
    secret_name: &str,
) -> Result<Outcome> {
    let digest = spec_digest(obj, namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let existing = secrets
        .get_opt(secret_name)
        .await
        .map_err(Error::Kube)?
        .map(Wiped);
    if let Some(existing) = &existing {
        match ownership(&existing.0, uid) {
            Ownership::Ours | Ownership::Unowned { adopt: true } => {}
            Ownership::Unowned { adopt: false } => {
                return Err(Error::SecretConflict(format!(
                    "Secret {secret_name} exists and is not owned by this SealedStorageCred; it was left untouched (annotate it {ADOPT_ANNOTATION}=\"true\" to let the controller take it over)"
                )));
            }
            Ownership::OtherController(owner) => {
                return Err(Error::SecretConflict(format!(
                    "Secret {secret_name} is controlled by {owner}; it was left untouched"
                )));
            }
        }
        if matches!(ownership(&existing.0, uid), Ownership::Ours)
            && up_to_date(&existing.0, obj, &digest)
        {
            let data = existing.0.data.as_ref();
            let now = data_digest(data.into_iter().flatten().map(|(k, v)| (k, v.0.as_slice())));
            let mut digests = ctx.data_digests.lock().unwrap();
            match digests.get(uid) {
                Some(known) if *known == now => return Ok(Outcome::Unchanged),
                // First sight since start: trust the spec digest (no KMS call).
                None => {
                    digests.insert(uid.to_string(), now);
                    return Ok(Outcome::Unchanged);
                }
                Some(_) => info!("the Secret's data was changed outside the controller; restoring"),
            }
        }
    }
    let before = existing.as_ref().map(|e| {
        let data = e.0.data.as_ref();
        data_digest(data.into_iter().flatten().map(|(k, v)| (k, v.0.as_slice())))
    });
    drop(existing);

    let opened = seal::open(obj, &ctx.keyring).await.map_err(Error::Unseal)?;
    let written_digest = data_digest(
        opened
            .entries
            .iter()
            .map(|(k, v): (&String, &SecretBytes)| (k, v.expose())),
    );
    let owner = obj
        .controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidObject("no uid".into()))?;
    // The one place plaintext becomes a k8s-openapi ByteString: exact-size copies,
    // wiped (with the whole Secret) when `desired` drops right after the write.
    let data: BTreeMap<String, ByteString> = opened
        .entries
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
        .collect();
    let desired = Wiped(Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(secret_labels(obj)),
            annotations: Some(secret_annotations(obj, &digest)),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some(opened.template.type_.clone()),
        data: Some(data),
        ..Secret::default()
    });
    drop(opened);
    let result = secrets
        .patch(
            secret_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired.0),
        )
        .await;
    drop(desired);
    let written = result.map_err(Error::Kube).map(Wiped)?;
    ctx.own_writes.record(
        namespace,
        secret_name,
        written.0.metadata.resource_version.clone(),
    );
    drop(written);
    ctx.data_digests
        .lock()
        .unwrap()
        .insert(uid.to_string(), written_digest);
    Ok(Outcome::Written {
        content_changed: before != Some(written_digest),
    })
}

fn ready_condition(
    prev: Option<&SealedStorageCredStatus>,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = prev
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| {
            jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map(|t| t.to_string())
                .unwrap_or_default()
        });
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

/// Writes the status with server-side apply on the status subresource, unless
/// it is already what it should be (so status writes do not loop).
async fn write_status(
    obj: &SealedStorageCred,
    ctx: &Context,
    status: SealedStorageCredStatus,
) -> Result<()> {
    if obj.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<SealedStorageCred> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": SealedStorageCred::api_version(&()),
        "kind": SealedStorageCred::kind(&()),
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

async fn publish(
    ctx: &Context,
    obj: &SealedStorageCred,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let mut note = note;
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Unseal".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        warn!(error = %e, "publishing an event failed");
    }
}

/// Rolls the workloads that name the Secret in `sealcred.io/restart-on-change` (see
/// [`crate::restart`]). A failure is returned (the reconcile is retried with backoff)
/// and the change stays pending in memory, so the retry still rolls workloads that
/// carry no digest yet.
async fn restart_workloads(
    obj: &SealedStorageCred,
    ctx: &Context,
    workloads: &Workloads,
    namespace: &str,
    uid: &str,
    secret_name: &str,
    content_changed: bool,
) -> Result<()> {
    let pending = {
        let mut p = ctx.restarts_pending.lock().unwrap();
        if content_changed {
            p.insert(uid.to_string());
        }
        p.contains(uid)
    };
    let digest = content_digest(obj, namespace);
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

    match sync_secret(&obj, &ctx, &namespace, &uid, &secret_name).await {
        Ok(outcome) => {
            ctx.failures.lock().unwrap().remove(&uid);
            let message = format!(
                "Secret {secret_name} holds the {} unsealed entries",
                entries.len()
            );
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
                restart_workloads(&obj, &ctx, w, &namespace, &uid, &secret_name, changed).await?;
            }
            ctx.metrics.reconciled(label);
            Ok(Action::requeue(ctx.resync))
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

fn build_keyring(
    opts: &Options,
    sdk: Option<SdkConfig>,
    metrics: &Arc<Metrics>,
) -> Result<Keyring> {
    let mut allow = opts.kms_allow.clone();
    if let Some(path) = &opts.local_key {
        let key = LocalKey::load(path)
            .map_err(|e| Error::Config(format!("--local-key {}: {e}", path.display())))?;
        allow.push(key.key_id().to_string());
    }
    if allow.is_empty() {
        warn!("no --kms-allow and no --local-key: every object will fail with InvalidSpec");
    }
    let mut keyring = Keyring::new(Allowlist::only(allow), opts.local_key.clone())
        .with_observer(metrics.kms_observer());
    if let Some(sdk) = sdk {
        keyring = keyring.with_sdk_config(sdk);
    }
    let endpoints = opts.kms_endpoints()?;
    if !endpoints.is_empty() {
        info!(?endpoints, "KMS endpoints per region");
        keyring = keyring.with_region_endpoints(endpoints);
    }
    Ok(keyring)
}

/// Every 5 minutes, drops the per-object memory of objects no longer in the cache.
async fn forget_deleted(store: Store<SealedStorageCred>, ctx: Arc<Context>) {
    loop {
        tokio::time::sleep(Duration::from_secs(300)).await;
        let live: HashSet<String> = store.state().iter().filter_map(|o| o.uid()).collect();
        ctx.data_digests
            .lock()
            .unwrap()
            .retain(|k, _| live.contains(k));
        ctx.failures.lock().unwrap().retain(|k, _| live.contains(k));
        ctx.restarts_checked
            .lock()
            .unwrap()
            .retain(|k, _| live.contains(k));
    }
}

async fn renew_loop(
    lock: Arc<LeaseLock>,
    every: Duration,
    deadline: Duration,
    lost: watch::Sender<bool>,
) {
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match lock.try_acquire_or_renew().await {
            Ok(true) => last_ok = Instant::now(),
            Ok(false) => {
                warn!("another replica holds the leader lease");
                let _ = lost.send(true);
                return;
            }
            Err(e) => {
                warn!(error = %e, "renewing the leader lease failed");
                if last_ok.elapsed() >= deadline {
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        // Sender gone: never stop because of this receiver.
        std::future::pending::<()>().await;
    }
}

/// Runs the controller until `shutdown` turns true (or the lease is lost).
///
/// `sdk` overrides the AWS configuration otherwise loaded from the standard
/// environment (the tests point it at their KMS). `state` is shared with the
/// HTTP server.
pub async fn run(
    opts: Options,
    client: Client,
    sdk: Option<SdkConfig>,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    opts.validate()?;
    let objects: Api<SealedStorageCred> = match &opts.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    objects
        .list(&ListParams::default().limit(1))
        .await
        .map_err(Error::CrdMissing)?;
    let keyring = build_keyring(&opts, sdk, &state.metrics)?;
    state.ready.store(true, Ordering::Relaxed);

    let identity = opts.identity();
    let (lost_tx, lost_rx) = watch::channel(false);
    let mut lock = None;
    let mut _renewer = None;
    if opts.leader_elect {
        let l = Arc::new(LeaseLock::new(
            client.clone(),
            &opts.lease_namespace,
            &opts.lease_name,
            &identity,
            opts.lease_duration(),
        ));
        info!(lease = %opts.lease_name, namespace = %opts.lease_namespace, %identity, "waiting for the leader lease");
        loop {
            match l.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "acquiring the leader lease failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(opts.lease_renew()) => {}
                _ = stopped(shutdown.clone()) => return Ok(()),
            }
        }
        info!(%identity, "acquired the leader lease");
        let deadline = opts.lease_duration().saturating_sub(opts.lease_renew());
        _renewer = Some(AbortOnDrop(tokio::spawn(renew_loop(
            Arc::clone(&l),
            opts.lease_renew(),
            deadline,
            lost_tx,
        ))));
        lock = Some(l);
    }
    state.metrics.set_leader(true);

    let ctx = Arc::new(Context {
        client: client.clone(),
        keyring,
        metrics: Arc::clone(&state.metrics),
        recorder: Publisher::new(client.clone(), FIELD_MANAGER, &identity),
        data_digests: Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
        restarts_pending: Mutex::new(HashSet::new()),
        restarts_checked: Mutex::new(HashMap::new()),
        workloads: opts
            .workload_restarts
            .then(|| Workloads::start(&client, opts.namespace.as_deref())),
        own_writes: Arc::new(OwnWrites::default()),
        resync: Duration::from_secs(opts.resync_secs.max(1)),
        max_backoff: Duration::from_secs(opts.max_backoff_secs.max(1)),
    });
    let mut wc = watcher::Config::default();
    if let Some(sel) = &opts.selector {
        wc = wc.labels(sel);
    }
    // The objects: cached without managedFields; only a spec change (a new
    // generation, or a new object) triggers a reconcile, so our own status write
    // does not re-trigger it (the cache still sees the new status).
    let (reader, writer) = reflector::store();
    let object_stream = watcher(objects, wc)
        .modify(|o| strip_for_cache(&mut o.metadata))
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger_hash, Default::default());
    // Only the Secrets' metadata is watched (`PartialObjectMeta`: metadata-only list and
    // watch requests; a data edit still changes the resourceVersion), so no Secret
    // values flow through the watch. No cache: an event only triggers the owner, unless
    // it is the echo of our own write.
    let secrets: Api<PartialObjectMeta<Secret>> = match &opts.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let own_writes = Arc::clone(&ctx.own_writes);
    let secret_stream = watcher(
        secrets,
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")),
    )
    .touched_objects()
    .try_filter(move |s| std::future::ready(!own_writes.is_echo(&s.metadata)));
    let controller = Controller::for_stream(object_stream, reader)
        .owns_stream(secret_stream)
        .with_config(ControllerConfig::default().concurrency(opts.concurrency));
    if let Some(w) = &ctx.workloads {
        w.wait_synced().await;
    }
    let _janitor = AbortOnDrop(tokio::spawn(forget_deleted(
        controller.store(),
        Arc::clone(&ctx),
    )));
    *state.store.lock().unwrap() = Some(controller.store());
    let (stop, lost) = (shutdown.clone(), lost_rx.clone());
    let trigger = async move {
        tokio::select! {
            _ = stopped(stop) => {}
            _ = stopped(lost) => {}
        }
    };
    info!(namespace = ?opts.namespace, selector = ?opts.selector, concurrency = opts.concurrency, "controller started");
    controller
        .graceful_shutdown_on(trigger)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "controller stream");
            }
        })
        .await;
    state.metrics.set_leader(false);
    *state.store.lock().unwrap() = None;
    drop(_renewer);
    if *lost_rx.borrow() {
        return Err(Error::LostLeadership(opts.lease_name.clone()));
    }
    if let Some(l) = lock {
        if let Err(e) = l.release().await {
            warn!(error = %e, "releasing the leader lease failed");
        } else {
            info!("released the leader lease");
        }
    }
    info!("controller stopped");
    Ok(())
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

    #[test]
    fn only_spec_changes_and_reconcile_requests_trigger() {
        let mut o: SealedStorageCred = serde_json::from_value(json!({
            "apiVersion": "sealcred.io/v1alpha1",
            "kind": "SealedStorageCred",
            "metadata": {"name": "a", "namespace": "n", "generation": 1},
            "spec": {"formatVersion": 1, "suite": "x", "scope": "strict",
                     "template": {"type": "Opaque"}, "dataKeys": [], "entries": {}},
        }))
        .unwrap();
        let first = trigger_hash(&o);
        o.status = Some(SealedStorageCredStatus::default());
        o.labels_mut().insert("poke".into(), "1".into());
        assert_eq!(trigger_hash(&o), first, "status and labels do not trigger");
        o.metadata.generation = Some(2);
        let second = trigger_hash(&o);
        assert_ne!(second, first, "a new generation triggers");
        o.annotations_mut()
            .insert(RECONCILE_REQUESTED_ANNOTATION.into(), "now".into());
        assert_ne!(trigger_hash(&o), second, "a reconcile request triggers");
    }

    #[test]
    fn only_the_echo_of_our_own_write_is_dropped() {
        let meta = |rv: &str| ObjectMeta {
            namespace: Some("n".into()),
            name: Some("s".into()),
            resource_version: Some(rv.into()),
            ..ObjectMeta::default()
        };
        let w = OwnWrites::default();
        assert!(!w.is_echo(&meta("5")), "nothing written yet");
        w.record("n", "s", Some("7".into()));
        assert!(!w.is_echo(&meta("6")), "an older event still triggers");
        assert!(
            !w.is_echo(&meta("8")),
            "someone else's later write triggers"
        );
        assert!(w.is_echo(&meta("7")), "our write's echo is dropped");
        assert!(
            !w.is_echo(&meta("7")),
            "once: a relist of the same version triggers"
        );
        assert!(w.0.lock().unwrap().is_empty());
    }

    #[test]
    fn data_digest_separates_names_and_values() {
        let a = [("ab".to_string(), b"c".to_vec())];
        let b = [("a".to_string(), b"bc".to_vec())];
        assert_ne!(
            data_digest(a.iter().map(|(k, v)| (k, v.as_slice()))),
            data_digest(b.iter().map(|(k, v)| (k, v.as_slice())))
        );
    }
}
