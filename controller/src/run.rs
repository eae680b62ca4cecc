//! [`run`]: the watches, the caches, the leader loop and the `Controller` wiring.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_shared::keyring::{Allowlist, Keyring};
use sealcred_shared::provider::local::LocalKey;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::annotations::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, RECONCILE_REQUESTED_ANNOTATION};
use crate::consumers::{Workloads, report_misnames};
use crate::context::{Context, OwnWrites};
use crate::events::Publisher;
use crate::leader::LeaseLock;
use crate::metrics::Metrics;
use crate::options::Options;
use crate::reconcile::{error_policy, reconcile};
use crate::support::{AbortOnDrop, strip_for_cache};
use crate::{Error, FIELD_MANAGER, Result};

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
    let allow =
        Allowlist::checked(allow).map_err(|e| Error::Config(format!("--kms-allow: {e}")))?;
    let mut keyring =
        Keyring::new(allow, opts.local_key.clone()).with_observer(metrics.kms_observer());
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
        ctx.full_syncs
            .lock()
            .unwrap()
            .retain(|k, _| live.contains(k));
        if let Some(w) = &ctx.workloads {
            let names: HashSet<(String, String)> = store
                .state()
                .iter()
                .map(|o| (o.namespace().unwrap_or_default(), o.name_any()))
                .collect();
            w.retain_writers(|ns, name| names.contains(&(ns.to_string(), name.to_string())));
        }
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
    if opts.namespace.is_none() {
        crate::cluster::watch::check_crd(&client).await?;
    }
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
        full_syncs: Mutex::new(HashMap::new()),
        digest_keys: crate::digest::DigestKeys::new(client.clone()),
        workloads: opts
            .workload_restarts
            .then(|| Workloads::start(&client, opts.namespace.as_deref())),
        own_writes: Arc::new(OwnWrites::default()),
        secret_types: opts
            .secret_types
            .iter()
            .map(|t| t.trim().to_string())
            .collect(),
        resync: Duration::from_secs(opts.resync_secs.max(1)),
        max_backoff: Duration::from_secs(opts.max_backoff_secs.max(1)),
        sts: crate::sts::StsConfig::from_options(&opts)?,
    });
    let mut wc = watcher::Config::default();
    if let Some(sel) = &opts.selector {
        wc = wc.labels(sel);
    }
    // The objects: cached without managedFields; only a spec change (a new
    // generation, or a new object) triggers a reconcile, so our own status write
    // does not re-trigger it (the cache still sees the new status).
    let (reader, writer) = reflector::store();
    let writers = ctx.workloads.clone();
    let object_stream = watcher(objects, wc)
        .modify(|o| strip_for_cache(&mut o.metadata))
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger_hash, Default::default())
        .inspect_ok(move |o| {
            // Consumers' changes reach the object that writes their Secret; and the
            // reconcile this triggers is a full one.
            if let Some(w) = &writers {
                let secret = o.spec.template.name.clone().unwrap_or_else(|| o.name_any());
                w.note_writer(&o.namespace().unwrap_or_default(), &o.name_any(), &secret);
            }
        });
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
    let full = ctx.workloads.clone();
    let secret_stream = secret_stream.inspect_ok(move |s| {
        // A change of the Secret itself: its owner's next reconcile is a full one.
        if let (Some(w), Some(owner)) = (
            &full,
            s.owner_references()
                .iter()
                .find(|r| r.controller == Some(true) && r.kind == sealcred_shared::crd::KIND),
        ) {
            w.note_full(&s.namespace().unwrap_or_default(), &owner.name);
        }
    });
    let mut controller = Controller::for_stream(object_stream, reader)
        .owns_stream(secret_stream)
        .with_config(ControllerConfig::default().concurrency(opts.concurrency));
    let mut _misnames = None;
    if let Some(w) = &ctx.workloads {
        controller = controller.reconcile_on(w.triggers());
        _misnames = Some(AbortOnDrop(tokio::spawn(report_misnames(
            Arc::clone(w),
            Arc::clone(&ctx),
        ))));
    }
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
    if ctx
        .secret_types
        .iter()
        .any(|t| t == "kubernetes.io/service-account-token")
    {
        warn!(
            "--secret-types allows kubernetes.io/service-account-token: anyone who can create a SealedStorageCred can have the API server mint a token for any ServiceAccount of its namespace"
        );
    }
    // ClusterSealedStorageCred: only when every namespace is watched (it writes to
    // any namespace; a namespace-restricted controller has neither the RBAC nor the
    // remit). Its own `Controller`, beside the namespaced one, stopping with it.
    let cluster = match &opts.namespace {
        None => {
            let (stop, lost) = (shutdown.clone(), lost_rx.clone());
            let trigger = async move {
                tokio::select! {
                    _ = stopped(stop) => {}
                    _ = stopped(lost) => {}
                }
            };
            Some(crate::cluster::watch::run(
                client.clone(),
                Arc::clone(&ctx),
                opts.selector.clone(),
                opts.concurrency,
                trigger,
            ))
        }
        Some(namespace) => {
            info!(
                %namespace,
                "ClusterSealedStorageCred objects are not reconciled: this controller watches one namespace (--namespace)"
            );
            None
        }
    };
    info!(namespace = ?opts.namespace, selector = ?opts.selector, concurrency = opts.concurrency, secret_types = ?ctx.secret_types, "controller started");
    let publisher = Arc::clone(&ctx);
    let namespaced = controller
        .graceful_shutdown_on(trigger)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "controller stream");
            }
        });
    match cluster {
        Some(cluster) => {
            futures::join!(namespaced, cluster);
        }
        None => namespaced.await,
    }
    // The Events the last reconciles queued (see `crate::events`).
    publisher.recorder.flush().await;
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
    use sealcred_shared::crd::SealedStorageCredStatus;
    use serde_json::json;

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
}
