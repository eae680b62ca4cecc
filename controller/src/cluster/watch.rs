//! The `ClusterSealedStorageCred` controller's watches: the objects, every
//! namespace's metadata (a namespace created, relabelled or deleted triggers the
//! objects it concerns, [`super::targets::concerns`]), and the metadata of the
//! Secrets these objects write (a change triggers the Secret's controller).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};
use sealcred_shared::crd::{CLUSTER_KIND, ClusterSealedStorageCred};
use tracing::{debug, info};

use super::{ClusterContext, error_policy, reconcile, secret_selector, targets};
use crate::annotations::RECONCILE_REQUESTED_ANNOTATION;
use crate::context::Context;
use crate::support::{AbortOnDrop, strip_for_cache};
use crate::{Error, Result};

/// A new generation or a new [`RECONCILE_REQUESTED_ANNOTATION`] value triggers a
/// reconcile; status writes do not.
fn trigger_hash(o: &ClusterSealedStorageCred) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    predicates::generation(o).hash(&mut h);
    o.annotations()
        .get(RECONCILE_REQUESTED_ANNOTATION)
        .hash(&mut h);
    Some(h.finish())
}

/// A namespace event is worth a look when its labels or its terminating state changed
/// (or it is new, or deleted).
fn namespace_hash(n: &PartialObjectMeta<Namespace>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    n.metadata.labels.hash(&mut h);
    n.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// Every 5 minutes, drops the memory of objects no longer in the cache.
async fn forget_deleted(store: Store<ClusterSealedStorageCred>, cctx: Arc<ClusterContext>) {
    loop {
        tokio::time::sleep(Duration::from_secs(300)).await;
        let live: BTreeSet<String> = store.state().iter().filter_map(|o| o.uid()).collect();
        cctx.forget_except(&live);
    }
}

/// Checks the ClusterSealedStorageCred CRD is installed and readable (one list).
pub async fn check_crd(client: &Client) -> Result<()> {
    let objects: Api<ClusterSealedStorageCred> = Api::all(client.clone());
    objects
        .list(&ListParams::default().limit(1))
        .await
        .map_err(Error::CrdMissing)?;
    Ok(())
}

/// Runs the controller until `stop` (`selector`: `--selector`, which shards these
/// objects as it shards the namespaced ones).
pub async fn run(
    client: Client,
    ctx: Arc<Context>,
    selector: Option<String>,
    concurrency: u16,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let objects: Api<ClusterSealedStorageCred> = Api::all(client.clone());
    let mut wc = watcher::Config::default();
    if let Some(sel) = &selector {
        wc = wc.labels(sel);
    }

    let (ns_reader, ns_writer) = reflector::store();
    let cctx = Arc::new(ClusterContext::new(ctx, ns_reader));
    let (reader, writer) = reflector::store();
    let object_stream = watcher(objects, wc)
        .modify(|o| strip_for_cache(&mut o.metadata))
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger_hash, Default::default());

    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let namespace_stream = watcher(namespaces, watcher::Config::default())
        .modify(|n| strip_for_cache(&mut n.metadata))
        .reflect(ns_writer)
        .touched_objects()
        .predicate_filter(namespace_hash, Default::default());
    let by_namespace = reader.clone();
    let namespace_mapper = move |n: PartialObjectMeta<Namespace>| {
        let name = n.name_any();
        by_namespace
            .state()
            .iter()
            .filter(|o| targets::concerns(&o.spec, &name))
            .map(|o| ObjectRef::from_obj(o.as_ref()))
            .collect::<Vec<_>>()
    };

    let secrets: Api<PartialObjectMeta<Secret>> = Api::all(client.clone());
    let own_writes = Arc::clone(&cctx.own_writes);
    let secret_stream = watcher(
        secrets,
        watcher::Config::default().labels(&secret_selector()),
    )
    .touched_objects()
    .try_filter(move |s| std::future::ready(!own_writes.is_echo(&s.metadata)));
    let secret_mapper = |s: PartialObjectMeta<Secret>| {
        s.metadata
            .owner_references
            .into_iter()
            .flatten()
            .filter(|r| r.controller == Some(true) && r.kind == CLUSTER_KIND)
            .map(|r| ObjectRef::<ClusterSealedStorageCred>::new(&r.name))
            .collect::<Vec<_>>()
    };

    let controller = Controller::for_stream(object_stream, reader)
        .watches_stream(namespace_stream, namespace_mapper)
        .watches_stream(secret_stream, secret_mapper)
        .with_config(ControllerConfig::default().concurrency(concurrency));
    let _janitor = AbortOnDrop(tokio::spawn(forget_deleted(
        controller.store(),
        Arc::clone(&cctx),
    )));
    info!("ClusterSealedStorageCred controller started");
    controller
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, cctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "cluster controller stream");
            }
        })
        .await;
}
