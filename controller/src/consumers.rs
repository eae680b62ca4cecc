//! The consumers of a Secret: the Deployments, StatefulSets and DaemonSets that name it
//! in `sealcred.io/restart-on-change`, and where their rollouts stand.
//!
//! One watch per kind (all namespaces, or the controller's `--namespace`) feeds
//! [`Workloads`], which keeps what the controller reads of each workload (never the pod
//! spec): its `restart-on-change` names, the pod template's `sealcred.io/restarted-for-*`
//! annotations, and the rollout counts of its status. It is indexed by
//! (namespace, Secret), so a reconcile looks up the consumers of its Secret in time
//! proportional to their number, however many workloads the cluster runs
//! ([`Workloads::consumers_of`]).
//!
//! A change of a workload that matters (its names, its template's digest, its rollout)
//! is sent as a reconcile request for the objects that write the Secrets it names
//! ([`Workloads::triggers`]): the object's `status.consumers` follows the rollout by
//! watch, not by polling.
//!
//! A name of the form `other-namespace/secret` is refused: a pod reads Secrets of its
//! own namespace only. Such a consumer is listed as `Refused` in that object's status
//! (if one writes the Secret) and reported by an Event on the workload; it is never
//! restarted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::Resource as ApiResource;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use sealcred_shared::crd::{ConsumerStatus, SealedStorageCred};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::warn;

use crate::restart::{RESTART_ON_CHANGE_ANNOTATION, RESTARTED_FOR_PREFIX, restarted_for_key};
use crate::support::AbortOnDrop;

/// How long the controller waits at start for the workload caches' first list.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The workload kinds that can consume a Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
}

impl Kind {
    /// The API kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
        }
    }
}

/// Where a workload's rollout stands, from its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Desired replicas (DaemonSet: nodes that should run the pod).
    pub desired: i32,
    /// Replicas on the current pod template.
    pub updated: i32,
    /// Ready replicas.
    pub ready: i32,
    /// Whether the workload's controller has finished rolling the current pod
    /// template: it observed the current generation, every desired replica is updated
    /// and available, and no replica of an older template remains (as
    /// `kubectl rollout status` decides).
    pub complete: bool,
}

/// What the controller keeps of one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// The entries of `sealcred.io/restart-on-change`, trimmed.
    pub names: Vec<String>,
    /// The pod template's `sealcred.io/restarted-for-*` annotations.
    pub restarted_for: BTreeMap<String, String>,
    /// Its rollout.
    pub rollout: Rollout,
}

/// A workload kind the controller watches.
pub trait Consumer:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + ApiResource
    + Clone
    + Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Its kind.
    const WORKLOAD_KIND: Kind;
    /// The pod template's annotations.
    fn template_annotations(&self) -> Option<&BTreeMap<String, String>>;
    /// Its rollout, from its spec and status.
    fn rollout(&self) -> Rollout;
}

fn observed(generation: Option<i64>, observed: Option<i64>) -> bool {
    observed.unwrap_or(0) >= generation.unwrap_or(0)
}

impl Consumer for Deployment {
    const WORKLOAD_KIND: Kind = Kind::Deployment;
    fn template_annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.spec.template.metadata.as_ref()?.annotations.as_ref()
    }
    fn rollout(&self) -> Rollout {
        let desired = self.spec.replicas.unwrap_or(1);
        let st = self.status.clone().unwrap_or_default();
        let (updated, total) = (st.updated_replicas.unwrap_or(0), st.replicas.unwrap_or(0));
        let available = st.available_replicas.unwrap_or(0);
        Rollout {
            desired,
            updated,
            ready: st.ready_replicas.unwrap_or(0),
            complete: observed(self.metadata.generation, st.observed_generation)
                && updated >= desired
                && total <= updated
                && available >= updated,
        }
    }
}

impl Consumer for StatefulSet {
    const WORKLOAD_KIND: Kind = Kind::StatefulSet;
    fn template_annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.spec.template.metadata.as_ref()?.annotations.as_ref()
    }
    fn rollout(&self) -> Rollout {
        let desired = self.spec.replicas.unwrap_or(1);
        let st = self.status.clone().unwrap_or_default();
        let (updated, ready) = (st.updated_replicas.unwrap_or(0), st.ready_replicas);
        let ready = ready.unwrap_or(0);
        let revisions = match (&st.current_revision, &st.update_revision) {
            (Some(c), Some(u)) => c == u,
            _ => false,
        };
        Rollout {
            desired,
            updated,
            ready,
            complete: observed(self.metadata.generation, st.observed_generation)
                && updated >= desired
                && ready >= desired
                && st.replicas <= desired
                && revisions,
        }
    }
}

impl Consumer for DaemonSet {
    const WORKLOAD_KIND: Kind = Kind::DaemonSet;
    fn template_annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.spec.template.metadata.as_ref()?.annotations.as_ref()
    }
    fn rollout(&self) -> Rollout {
        let st = self.status.clone().unwrap_or_default();
        let desired = st.desired_number_scheduled;
        let updated = st.updated_number_scheduled.unwrap_or(0);
        Rollout {
            desired,
            updated,
            ready: st.number_ready,
            complete: observed(self.metadata.generation, st.observed_generation)
                && updated >= desired
                && st.number_available.unwrap_or(0) >= desired,
        }
    }
}

impl Workload {
    /// What the controller keeps of `o`.
    pub fn of<K: Consumer>(o: &K) -> Self {
        let names = o
            .annotations()
            .get(RESTART_ON_CHANGE_ANNOTATION)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let restarted_for = o
            .template_annotations()
            .map(|a| {
                a.iter()
                    .filter(|(k, _)| k.starts_with(RESTARTED_FOR_PREFIX))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Workload {
            kind: K::WORKLOAD_KIND,
            namespace: o.namespace().unwrap_or_default(),
            name: o.name_any(),
            uid: o.uid().unwrap_or_default(),
            names,
            restarted_for,
            rollout: o.rollout(),
        }
    }

    /// The (namespace, Secret) pairs this workload names, and whether each is in
    /// another namespace (`namespace/secret`).
    pub fn secrets(&self) -> Vec<(SecretKey, bool)> {
        self.names
            .iter()
            .map(|n| match n.split_once('/') {
                Some((ns, s)) if ns != self.namespace => ((ns.to_string(), s.to_string()), true),
                Some((_, s)) => ((self.namespace.clone(), s.to_string()), false),
                None => ((self.namespace.clone(), n.clone()), false),
            })
            .collect()
    }

    /// Its state for the Secret whose restart digest is `digest` (see
    /// [`ConsumerStatus::state`]).
    pub fn state(&self, secret: &str, digest: Option<&str>, cross_namespace: bool) -> State {
        if cross_namespace {
            return State::Refused;
        }
        match (self.restarted_for.get(&restarted_for_key(secret)), digest) {
            (Some(v), Some(d)) if v == d => {
                if self.rollout.complete {
                    State::Updated
                } else {
                    State::Rolling
                }
            }
            (Some(_), Some(_)) => State::Stale,
            _ => State::Untracked,
        }
    }

    /// Its entry in the object's status.
    pub fn status(&self, secret: &str, digest: Option<&str>, cross: bool) -> ConsumerStatus {
        ConsumerStatus {
            kind: self.kind.as_str().into(),
            name: self.name.clone(),
            namespace: cross.then(|| self.namespace.clone()),
            state: self.state(secret, digest, cross).as_str().into(),
            replicas: self.rollout.desired,
            updated_replicas: self.rollout.updated,
            ready_replicas: self.rollout.ready,
        }
    }
}

/// A consumer's state (see [`ConsumerStatus::state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// On the current credential, rollout complete.
    Updated,
    /// On the current credential, rollout in progress.
    Rolling,
    /// The pod template names an older credential.
    Stale,
    /// Not rolled by sealcred since it named the Secret.
    Untracked,
    /// Names a Secret of another namespace.
    Refused,
}

impl State {
    /// As written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Updated => "Updated",
            State::Rolling => "Rolling",
            State::Stale => "Stale",
            State::Untracked => "Untracked",
            State::Refused => "Refused",
        }
    }
}

/// (namespace, Secret name).
pub type SecretKey = (String, String);
/// (kind, namespace, name) of a workload.
type WorkloadKey = (Kind, String, String);

#[derive(Default)]
struct Inner {
    workloads: HashMap<WorkloadKey, Workload>,
    /// (namespace, Secret) → the workloads naming it; `true` for a cross-namespace name.
    by_secret: HashMap<SecretKey, BTreeMap<WorkloadKey, bool>>,
    /// (namespace, Secret) → the objects (names) that write it, from the object watch.
    writers: HashMap<SecretKey, BTreeSet<String>>,
}

impl Inner {
    fn unlink(&mut self, key: &WorkloadKey, w: &Workload) {
        for (sk, _) in w.secrets() {
            if let Some(set) = self.by_secret.get_mut(&sk) {
                set.remove(key);
                if set.is_empty() {
                    self.by_secret.remove(&sk);
                }
            }
        }
    }

    fn link(&mut self, key: &WorkloadKey, w: &Workload) {
        for (sk, cross) in w.secrets() {
            self.by_secret
                .entry(sk)
                .or_default()
                .insert(key.clone(), cross);
        }
    }

    /// Inserts or replaces `w`; returns the Secrets whose consumers changed.
    fn upsert(&mut self, w: Workload) -> Vec<SecretKey> {
        let key = (w.kind, w.namespace.clone(), w.name.clone());
        let old = self.workloads.remove(&key);
        if old.as_ref() == Some(&w) {
            self.workloads.insert(key, w);
            return Vec::new();
        }
        let mut touched: Vec<SecretKey> = w.secrets().into_iter().map(|(k, _)| k).collect();
        if let Some(o) = &old {
            self.unlink(&key, o);
            touched.extend(o.secrets().into_iter().map(|(k, _)| k));
        }
        self.link(&key, &w);
        self.workloads.insert(key, w);
        touched.sort();
        touched.dedup();
        touched
    }

    fn remove(&mut self, key: &WorkloadKey) -> Vec<SecretKey> {
        match self.workloads.remove(key) {
            Some(o) => {
                self.unlink(key, &o);
                o.secrets().into_iter().map(|(k, _)| k).collect()
            }
            None => Vec::new(),
        }
    }
}

/// The workload caches, indexed by the Secrets they name.
pub struct Workloads {
    inner: RwLock<Inner>,
    synced: [AtomicBool; 3],
    triggers: Mutex<Option<mpsc::UnboundedSender<ObjectRef<SealedStorageCred>>>>,
    /// Objects (`namespace/name`) whose next reconcile must be a full one: the object
    /// or its Secret changed (see [`Workloads::take_consumers_only`]).
    full_requested: Mutex<HashSet<String>>,
    /// Workloads already reported for a cross-namespace or unknown Secret:
    /// (uid, Secret name as written).
    reported: Mutex<HashSet<(String, String)>>,
    /// Misnames found by the last [`Workloads::unreported_misnames`], not yet reported.
    misnames_seen: Mutex<HashSet<(String, String)>>,
    tasks: Mutex<Vec<AbortOnDrop>>,
}

fn kind_index(k: Kind) -> usize {
    match k {
        Kind::Deployment => 0,
        Kind::StatefulSet => 1,
        Kind::DaemonSet => 2,
    }
}

impl Workloads {
    /// An empty set of caches, not yet watching (tests fill it with
    /// [`Workloads::apply`]).
    pub fn new() -> Arc<Self> {
        Arc::new(Workloads {
            inner: RwLock::new(Inner::default()),
            synced: Default::default(),
            triggers: Mutex::new(None),
            full_requested: Mutex::new(HashSet::new()),
            reported: Mutex::new(HashSet::new()),
            misnames_seen: Mutex::new(HashSet::new()),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// Starts the three watches (all namespaces, or one).
    pub fn start(client: &Client, namespace: Option<&str>) -> Arc<Self> {
        let w = Self::new();
        let tasks = vec![
            watch::<Deployment>(&w, client, namespace),
            watch::<StatefulSet>(&w, client, namespace),
            watch::<DaemonSet>(&w, client, namespace),
        ];
        *w.tasks.lock().unwrap() = tasks;
        w
    }

    /// Marks every kind synced (tests).
    pub fn mark_synced(&self) {
        for s in &self.synced {
            s.store(true, Ordering::Release);
        }
    }

    fn is_synced(&self) -> bool {
        self.synced.iter().all(|s| s.load(Ordering::Acquire))
    }

    /// Waits (10 s at most) until the three caches have their first list; says so if not.
    pub async fn wait_synced(&self) {
        let deadline = tokio::time::Instant::now() + CACHE_SYNC_TIMEOUT;
        while !self.is_synced() {
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    "the workload caches have not synced after 10 s: check list/watch on deployments, statefulsets and daemonsets (or run with --workload-restarts=false); restart passes fail with CacheNotReady until they sync"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The reconcile requests that follow workload changes (taken once, by the
    /// controller's wiring).
    pub fn triggers(&self) -> impl futures::Stream<Item = ObjectRef<SealedStorageCred>> + use<> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.triggers.lock().unwrap() = Some(tx);
        tokio_stream_from(rx)
    }

    /// Records that object `name` of `namespace` writes Secret `secret` (from the
    /// object watch), so that changes of its consumers reach it; and that its next
    /// reconcile is not a consumers-only one (the object itself changed).
    pub fn note_writer(&self, namespace: &str, name: &str, secret: &str) {
        self.note_full(namespace, name);
        let mut inner = self.inner.write().unwrap();
        inner
            .writers
            .entry((namespace.into(), secret.into()))
            .or_default()
            .insert(name.into());
    }

    /// Keeps only the writers for which `live(namespace, name)` holds (deleted objects
    /// are forgotten).
    pub fn retain_writers(&self, live: impl Fn(&str, &str) -> bool) {
        self.full_requested
            .lock()
            .unwrap()
            .retain(|k| k.split_once('/').is_some_and(|(ns, name)| live(ns, name)));
        let mut inner = self.inner.write().unwrap();
        inner.writers.retain(|(ns, _), names| {
            names.retain(|n| live(ns, n));
            !names.is_empty()
        });
    }

    /// Marks the next reconcile of `namespace/name` as a full one (its Secret changed).
    pub fn note_full(&self, namespace: &str, name: &str) {
        self.full_requested
            .lock()
            .unwrap()
            .insert(format!("{namespace}/{name}"));
    }

    /// Whether the reconcile now starting for `namespace/name` may be a consumers-only
    /// one: neither the object nor its Secret changed since the last reconcile began
    /// (forgets such a change: this reconcile handles it). The other triggers are the
    /// workloads' and the requeues, which the reconcile tells apart by time.
    pub fn take_consumers_only(&self, namespace: &str, name: &str) -> bool {
        !self
            .full_requested
            .lock()
            .unwrap()
            .remove(&format!("{namespace}/{name}"))
    }

    /// Inserts or replaces a workload; sends reconcile requests to the objects that
    /// write the Secrets whose consumers changed.
    pub fn apply(&self, w: Workload) {
        let touched = self.inner.write().unwrap().upsert(w);
        self.notify(touched);
    }

    fn remove(&self, key: &WorkloadKey) {
        let touched = self.inner.write().unwrap().remove(key);
        self.notify(touched);
    }

    /// Replaces every workload of `kind` (a watch's re-list).
    fn replace_kind(&self, kind: Kind, all: Vec<Workload>) {
        let mut touched = Vec::new();
        {
            let mut inner = self.inner.write().unwrap();
            let fresh: HashSet<WorkloadKey> = all
                .iter()
                .map(|w| (w.kind, w.namespace.clone(), w.name.clone()))
                .collect();
            let gone: Vec<WorkloadKey> = inner
                .workloads
                .keys()
                .filter(|k| k.0 == kind && !fresh.contains(*k))
                .cloned()
                .collect();
            for k in gone {
                touched.extend(inner.remove(&k));
            }
            for w in all {
                touched.extend(inner.upsert(w));
            }
        }
        self.synced[kind_index(kind)].store(true, Ordering::Release);
        touched.sort();
        touched.dedup();
        self.notify(touched);
    }

    fn notify(&self, touched: Vec<SecretKey>) {
        if touched.is_empty() {
            return;
        }
        let refs: Vec<ObjectRef<SealedStorageCred>> = {
            let inner = self.inner.read().unwrap();
            touched
                .iter()
                .filter_map(|k| inner.writers.get(k).map(|names| (k, names)))
                .flat_map(|((ns, _), names)| {
                    names
                        .iter()
                        .map(move |n| ObjectRef::new(n).within(ns))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let Some(tx) = self.triggers.lock().unwrap().clone() else {
            return;
        };
        for r in refs {
            let _ = tx.send(r);
        }
    }

    /// Whether a workload of `namespace` names `secret` (true while the caches sync:
    /// one may).
    pub fn any_naming(&self, namespace: &str, secret: &str) -> bool {
        if !self.is_synced() {
            return true;
        }
        let inner = self.inner.read().unwrap();
        inner
            .by_secret
            .get(&(namespace.to_string(), secret.to_string()))
            .is_some_and(|set| set.values().any(|cross| !cross))
    }

    /// Whether any workload names `secret` of `namespace`, refused ones included.
    pub fn has_consumers(&self, namespace: &str, secret: &str) -> bool {
        let inner = self.inner.read().unwrap();
        inner
            .by_secret
            .contains_key(&(namespace.to_string(), secret.to_string()))
    }

    /// The workloads naming `secret` of `namespace`, each with whether it is in another
    /// namespace (refused), in a stable order. Costs O(their number): an index lookup.
    pub fn consumers_of(&self, namespace: &str, secret: &str) -> Vec<(Workload, bool)> {
        let inner = self.inner.read().unwrap();
        inner
            .by_secret
            .get(&(namespace.to_string(), secret.to_string()))
            .map(|set| {
                set.iter()
                    .filter_map(|(k, cross)| inner.workloads.get(k).map(|w| (w.clone(), *cross)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The workloads of `namespace` (not refused) naming `secret`, of one kind: for the
    /// restart pass. Fails while the caches have not synced.
    pub fn restart_candidates(
        &self,
        namespace: &str,
        secret: &str,
    ) -> Result<Vec<Workload>, String> {
        if !self.is_synced() {
            return Err("the workload caches have not synced (check the controller's list/watch permission on deployments, statefulsets and daemonsets)".into());
        }
        Ok(self
            .consumers_of(namespace, secret)
            .into_iter()
            .filter(|(_, cross)| !cross)
            .map(|(w, _)| w)
            .collect())
    }

    /// Misnamed Secrets not yet reported: workloads naming a Secret of another
    /// namespace, or one no object writes. A name is returned at the second call that
    /// finds it misnamed (so an object applied just after its workload is not
    /// reported), and then never again.
    pub fn unreported_misnames(&self) -> Vec<(Workload, String, Misname)> {
        if !self.is_synced() {
            return Vec::new();
        }
        let inner = self.inner.read().unwrap();
        let mut reported = self.reported.lock().unwrap();
        let mut seen = self.misnames_seen.lock().unwrap();
        let mut now_seen = HashSet::new();
        let mut out = Vec::new();
        for w in inner.workloads.values() {
            for (name, (key, cross)) in w.names.iter().zip(w.secrets()) {
                let why = if cross {
                    Misname::OtherNamespace
                } else if !inner.writers.contains_key(&key) {
                    Misname::Unknown
                } else {
                    continue;
                };
                let key = (w.uid.clone(), name.clone());
                if reported.contains(&key) {
                    continue;
                }
                if seen.contains(&key) {
                    reported.insert(key);
                    out.push((w.clone(), name.clone(), why));
                } else {
                    now_seen.insert(key);
                }
            }
        }
        *seen = now_seen;
        out
    }

    /// Number of workloads cached (tests, metrics).
    pub fn len(&self) -> usize {
        self.inner.read().unwrap().workloads.len()
    }

    /// Whether no workload is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a workload's `restart-on-change` name is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misname {
    /// `namespace/secret` of another namespace.
    OtherNamespace,
    /// No SealedStorageCred in the workload's namespace writes it.
    Unknown,
}

/// How often [`report_misnames`] looks for new misnamed Secrets.
const MISNAME_SWEEP: Duration = Duration::from_secs(15);

/// Every 15 s, reports each workload whose `restart-on-change` names a Secret of
/// another namespace, or one that no object in its namespace writes: one Warning
/// Event on the workload per (workload, name), and a log line. Such a name never
/// restarts the workload.
pub async fn report_misnames(workloads: Arc<Workloads>, ctx: Arc<crate::context::Context>) {
    loop {
        tokio::time::sleep(MISNAME_SWEEP).await;
        for (w, name, why) in workloads.unreported_misnames() {
            let (reason, note) = match why {
                Misname::OtherNamespace => (
                    "CrossNamespaceSecret",
                    format!(
                        "{RESTART_ON_CHANGE_ANNOTATION} names Secret {name} of another namespace: a pod reads Secrets of its own namespace only, so sealcred never restarts this workload for it"
                    ),
                ),
                Misname::Unknown => (
                    "UnknownSecret",
                    format!(
                        "{RESTART_ON_CHANGE_ANNOTATION} names Secret {name}, which no SealedStorageCred in namespace {} writes: nothing restarts this workload for it (check the name)",
                        w.namespace
                    ),
                ),
            };
            warn!(kind = w.kind.as_str(), namespace = %w.namespace, workload = %w.name, secret = %name, reason, "a workload names a Secret sealcred does not write for it");
            let reference = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("apps/v1".into()),
                kind: Some(w.kind.as_str().into()),
                name: Some(w.name.clone()),
                namespace: Some(w.namespace.clone()),
                uid: Some(w.uid.clone()),
                ..Default::default()
            };
            let ev = kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Warning,
                reason: reason.into(),
                note: Some(note),
                action: "Restart".into(),
                secondary: None,
            };
            ctx.recorder.send(ev, reference);
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn watch<K: Consumer>(w: &Arc<Workloads>, client: &Client, namespace: Option<&str>) -> AbortOnDrop {
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let w = Arc::downgrade(w);
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut relist: Vec<Workload> = Vec::new();
        while let Some(ev) = stream.next().await {
            let Some(w) = w.upgrade() else { return };
            match ev {
                Ok(watcher::Event::Apply(o)) => w.apply(Workload::of(&o)),
                Ok(watcher::Event::Delete(o)) => {
                    w.remove(&(
                        K::WORKLOAD_KIND,
                        o.namespace().unwrap_or_default(),
                        o.name_any(),
                    ));
                }
                Ok(watcher::Event::Init) => relist.clear(),
                Ok(watcher::Event::InitApply(o)) => relist.push(Workload::of(&o)),
                Ok(watcher::Event::InitDone) => {
                    w.replace_kind(K::WORKLOAD_KIND, std::mem::take(&mut relist));
                }
                Err(e) => {
                    warn!(kind = K::WORKLOAD_KIND.as_str(), error = %e, "watching workloads failed; retrying");
                }
            }
        }
    });
    AbortOnDrop(task)
}

/// The `ConsumersUpdated` condition and the `UPDATED/TOTAL` summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// `UPDATED/TOTAL`.
    pub summary: String,
    /// The condition's status.
    pub status: &'static str,
    /// Its reason.
    pub reason: &'static str,
    /// Its message.
    pub message: String,
}

/// The consumers' status of the Secret `secret` whose restart digest is `digest`: the
/// entries, and the summary (None when no workload names the Secret).
pub fn summarize(
    consumers: &[(Workload, bool)],
    secret: &str,
    digest: Option<&str>,
) -> (Vec<ConsumerStatus>, Option<Summary>) {
    if consumers.is_empty() {
        return (Vec::new(), None);
    }
    let entries: Vec<ConsumerStatus> = consumers
        .iter()
        .map(|(w, cross)| w.status(secret, digest, *cross))
        .collect();
    let states: Vec<State> = consumers
        .iter()
        .map(|(w, cross)| w.state(secret, digest, *cross))
        .collect();
    let counted = states.iter().filter(|s| **s != State::Refused).count();
    let updated = states.iter().filter(|s| **s == State::Updated).count();
    let refused = states.len() - counted;
    let summary = format!("{updated}/{counted}");
    let count = |s: State| states.iter().filter(|x| **x == s).count();
    let (status, reason) = if counted == 0 {
        ("False", "ConsumersRefused")
    } else if updated == counted {
        ("True", "RolloutComplete")
    } else if count(State::Stale) > 0 {
        ("False", "RestartPending")
    } else if count(State::Rolling) > 0 {
        ("False", "RolloutInProgress")
    } else {
        ("Unknown", "ConsumersUntracked")
    };
    let mut message = format!(
        "{updated} of {counted} workloads naming Secret {secret} run the current credential with their rollout complete"
    );
    for (s, what) in [
        (State::Rolling, "rolling"),
        (State::Stale, "waiting for a restart"),
        (
            State::Untracked,
            "not rolled by sealcred since they named the Secret (their pods may predate the current credential; `kubectl rollout restart` them)",
        ),
    ] {
        let n = count(s);
        if n > 0 {
            message.push_str(&format!("; {n} {what}"));
        }
    }
    if refused > 0 {
        message.push_str(&format!(
            "; {refused} in other namespaces refused (a pod reads Secrets of its own namespace only)"
        ));
    }
    (
        entries,
        Some(Summary {
            summary,
            status,
            reason,
            message,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(kind: Kind, ns: &str, name: &str, names: &str, digest: Option<&str>) -> Workload {
        Workload {
            kind,
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{ns}-{name}"),
            names: names.split(',').map(|s| s.trim().to_string()).collect(),
            restarted_for: digest
                .map(|d| BTreeMap::from([(restarted_for_key("creds"), d.to_string())]))
                .unwrap_or_default(),
            rollout: Rollout {
                desired: 3,
                updated: 3,
                ready: 3,
                complete: true,
            },
        }
    }

    #[test]
    fn rollout_is_complete_only_when_every_replica_is_new_and_available() {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "namespace": "n", "generation": 2},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3,
                       "readyReplicas": 4, "availableReplicas": 4},
        }))
        .unwrap();
        assert!(!d.rollout().complete, "an old replica remains");
        let mut d2 = d.clone();
        d2.status.as_mut().unwrap().replicas = Some(3);
        assert!(d2.rollout().complete);
        d2.metadata.generation = Some(3);
        assert!(!d2.rollout().complete, "generation not observed");
        let s: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": "n", "generation": 1},
            "spec": {"replicas": 2, "selector": {}, "serviceName": "s", "template": {}},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                       "readyReplicas": 2, "currentRevision": "a", "updateRevision": "b"},
        }))
        .unwrap();
        assert!(!s.rollout().complete, "revisions differ");
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "namespace": "n", "generation": 1},
            "spec": {"selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 3,
                       "currentNumberScheduled": 3, "numberMisscheduled": 0,
                       "numberReady": 3, "updatedNumberScheduled": 3, "numberAvailable": 3},
        }))
        .unwrap();
        assert_eq!(
            ds.rollout(),
            Rollout {
                desired: 3,
                updated: 3,
                ready: 3,
                complete: true
            }
        );
    }

    #[test]
    fn states_and_summary() {
        let cur = Some("d1");
        let up = workload(Kind::Deployment, "n", "a", "creds", Some("d1"));
        let mut rolling = workload(Kind::StatefulSet, "n", "b", "creds", Some("d1"));
        rolling.rollout.complete = false;
        let stale = workload(Kind::DaemonSet, "n", "c", "creds", Some("d0"));
        let untracked = workload(Kind::Deployment, "n", "d", "creds", None);
        assert_eq!(up.state("creds", cur, false), State::Updated);
        assert_eq!(rolling.state("creds", cur, false), State::Rolling);
        assert_eq!(stale.state("creds", cur, false), State::Stale);
        assert_eq!(untracked.state("creds", cur, false), State::Untracked);
        assert_eq!(up.state("creds", cur, true), State::Refused);

        let (_, c) = summarize(&[(up.clone(), false)], "creds", cur);
        assert_eq!(c.unwrap().summary, "1/1");
        let (entries, c) = summarize(
            &[
                (up.clone(), false),
                (rolling.clone(), false),
                (up.clone(), true),
            ],
            "creds",
            cur,
        );
        let Summary {
            summary,
            status,
            reason,
            message,
        } = c.unwrap();
        assert_eq!(
            (summary.as_str(), status, reason),
            ("1/2", "False", "RolloutInProgress")
        );
        assert!(
            message.contains("1 in other namespaces refused"),
            "{message}"
        );
        assert_eq!(entries[2].state, "Refused");
        let (_, c) = summarize(&[(stale, false), (rolling, false)], "creds", cur);
        assert_eq!(c.unwrap().reason, "RestartPending");
        let (_, c) = summarize(&[(untracked, false)], "creds", cur);
        assert_eq!(c.unwrap().status, "Unknown");
        assert_eq!(summarize(&[], "creds", cur).1, None);
    }

    #[test]
    fn index_follows_names_and_refuses_other_namespaces() {
        let w = Workloads::new();
        w.mark_synced();
        w.apply(workload(
            Kind::Deployment,
            "n",
            "a",
            "creds, other/creds",
            None,
        ));
        assert!(w.any_naming("n", "creds"));
        assert!(
            !w.any_naming("other", "creds"),
            "a cross-namespace name is not a consumer"
        );
        assert!(w.consumers_of("other", "creds")[0].1);
        assert_eq!(w.restart_candidates("other", "creds").unwrap().len(), 0);
        // The annotation changes: the index follows.
        w.apply(workload(Kind::Deployment, "n", "a", "db", None));
        assert!(!w.any_naming("n", "creds"));
        assert!(w.any_naming("n", "db"));
        w.remove(&(Kind::Deployment, "n".into(), "a".into()));
        assert!(w.is_empty());
        assert!(!w.any_naming("n", "db"));
    }

    #[test]
    fn lookups_cost_the_consumers_not_the_cluster() {
        // 20,000 workloads naming other Secrets: the lookup visits only the two that
        // name this one (the index), so its cost does not grow with the cluster.
        let w = Workloads::new();
        w.mark_synced();
        for i in 0..20_000 {
            w.apply(workload(
                Kind::Deployment,
                "n",
                &format!("w{i}"),
                &format!("s{i}"),
                None,
            ));
        }
        w.apply(workload(Kind::Deployment, "n", "x", "creds", None));
        w.apply(workload(Kind::StatefulSet, "n", "y", "creds", None));
        let inner = w.inner.read().unwrap();
        let set = &inner.by_secret[&("n".to_string(), "creds".to_string())];
        assert_eq!(set.len(), 2);
        drop(inner);
        assert_eq!(w.consumers_of("n", "creds").len(), 2);
    }

    #[test]
    fn workload_changes_trigger_the_writers_as_consumers_only() {
        let w = Workloads::new();
        w.mark_synced();
        let mut rx = {
            let (tx, rx) = mpsc::unbounded_channel();
            *w.triggers.lock().unwrap() = Some(tx);
            rx
        };
        w.note_writer("n", "obj", "creds");
        let a = workload(Kind::Deployment, "n", "a", "creds", Some("d1"));
        w.apply(a.clone());
        assert_eq!(rx.try_recv().unwrap(), ObjectRef::new("obj").within("n"));
        assert!(
            !w.take_consumers_only("n", "obj"),
            "the new object: a full one"
        );
        assert!(
            w.take_consumers_only("n", "obj"),
            "then the workload's: consumers only"
        );
        assert!(
            w.take_consumers_only("n", "obj"),
            "and a second one queued meanwhile too"
        );
        // The same workload again (an unrelated change): no trigger.
        w.apply(a.clone());
        assert!(rx.try_recv().is_err());
        // Its rollout progresses: a trigger; then the object itself changes: a full one.
        let mut b = a;
        b.rollout.ready = 2;
        w.apply(b);
        assert!(rx.try_recv().is_ok());
        w.note_full("n", "obj");
        assert!(
            !w.take_consumers_only("n", "obj"),
            "the Secret changed: a full one"
        );
    }

    #[test]
    fn misnames_are_reported_once() {
        let w = Workloads::new();
        w.mark_synced();
        w.note_writer("n", "obj", "creds");
        w.apply(workload(
            Kind::Deployment,
            "n",
            "a",
            "creds, nope, x/creds, late",
            None,
        ));
        assert!(w.unreported_misnames().is_empty(), "not at first sight");
        // Its object arrives between the two sweeps: not reported.
        w.note_writer("n", "late-obj", "late");
        let got: Vec<(String, Misname)> = w
            .unreported_misnames()
            .into_iter()
            .map(|(_, n, m)| (n, m))
            .collect();
        assert_eq!(
            got,
            [
                ("nope".to_string(), Misname::Unknown),
                ("x/creds".to_string(), Misname::OtherNamespace)
            ]
        );
        assert!(w.unreported_misnames().is_empty());
    }
}
