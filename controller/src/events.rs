//! Events (`events.k8s.io/v1`) about SealedStorageCreds and the workloads the
//! controller rolls.
//!
//! Same behaviour as client-go's and kube-rs's recorders: the first occurrence creates
//! an Event; a repeat of the same event (same type, reason, action, note and object)
//! within [`SERIES_WINDOW`] patches that Event's `series` (count, last time) instead of
//! creating another. The difference is the cache behind it: kube-rs's `Recorder` keeps a
//! whole Event object per key, unbounded, in a hash map; at 2,000 objects that map was
//! 8.8 MB, 36 % of the controller's heap (valgrind massif, BENCHMARKS.md). Here a key is
//! a 64-bit hash and the entry holds only the Event's name, namespace, count and time,
//! and the cache is capped at [`MAX_CACHED`] entries.
//!
//! Publishing is off the reconcile's path, as client-go's broadcaster does it: a
//! reconcile queues the Event ([`Publisher::send`], never waits) and a background
//! task publishes up to [`CONCURRENCY`] at a time. An Event that finds the queue
//! ([`QUEUE`]) full is dropped and counted in the log; Events are best-effort in
//! Kubernetes, the object's status is the record. [`Publisher::flush`] publishes
//! what is queued before the controller exits.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use serde_json::json;

/// A repeat within this window becomes part of the first Event's series.
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// At most this many series are remembered; older ones are forgotten first.
pub const MAX_CACHED: usize = 4096;
/// Events waiting to be published; one more is dropped.
pub const QUEUE: usize = 1024;
/// Events published at the same time by the background task.
pub const CONCURRENCY: usize = 4;
/// How long [`Publisher::flush`] waits for the queue to drain.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

struct Seen {
    name: String,
    namespace: String,
    count: i32,
    last: Instant,
}

/// Publishes Events as one reporting controller instance.
pub struct Publisher {
    queue: Mutex<Option<mpsc::Sender<(Event, ObjectReference)>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    dropped: AtomicU64,
}

/// What publishing needs: the client, who reports, and the series cache.
struct Inner {
    client: Client,
    controller: String,
    instance: String,
    seen: Mutex<HashMap<u64, Seen>>,
}

fn key(ev: &Event, regarding: &ObjectReference) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    matches!(ev.type_, EventType::Warning).hash(&mut h);
    ev.reason.hash(&mut h);
    ev.action.hash(&mut h);
    ev.note.hash(&mut h);
    regarding.uid.hash(&mut h);
    regarding.kind.hash(&mut h);
    regarding.namespace.hash(&mut h);
    regarding.name.hash(&mut h);
    h.finish()
}

impl Publisher {
    /// A publisher reporting as `controller` (instance `instance`), with its background
    /// task (on the current tokio runtime).
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        let inner = Arc::new(Inner {
            client,
            controller: controller.into(),
            instance: instance.into(),
            seen: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = mpsc::channel::<(Event, ObjectReference)>(QUEUE);
        let worker = tokio::spawn(async move {
            futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            })
            .for_each_concurrent(CONCURRENCY, |(ev, regarding)| {
                let inner = Arc::clone(&inner);
                async move {
                    if let Err(e) = inner.publish(&ev, &regarding).await {
                        warn!(error = %e, reason = %ev.reason, "publishing an event failed");
                    }
                }
            })
            .await;
        });
        Publisher {
            queue: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues `ev` about the object `regarding` for publishing; never waits. Dropped
    /// (and counted) when the queue is full or the publisher was flushed.
    pub fn send(&self, ev: Event, regarding: ObjectReference) {
        let queued = match self.queue.lock().unwrap().as_ref() {
            Some(tx) => tx.try_send((ev, regarding)).is_ok(),
            None => false,
        };
        if !queued {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_multiple_of(1000) {
                warn!(dropped = n, "the event queue is full: events dropped");
            }
        }
    }

    /// Publishes what is queued (waiting at most a few seconds) and stops the
    /// background task; later [`send`](Self::send)s are dropped.
    pub async fn flush(&self) {
        drop(self.queue.lock().unwrap().take());
        let worker = self.worker.lock().unwrap().take();
        if let Some(w) = worker
            && tokio::time::timeout(FLUSH_WAIT, w).await.is_err()
        {
            warn!("events still queued at exit were not published");
        }
    }
}

impl Inner {
    /// Publishes `ev` about the object `regarding` (create, or patch the series).
    async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> kube::Result<()> {
        let k = key(ev, regarding);
        let now = jiff::Timestamp::now();
        let repeat = {
            let mut seen = self.seen.lock().unwrap();
            match seen.get_mut(&k) {
                Some(s) if s.last.elapsed() < SERIES_WINDOW => {
                    s.count += 1;
                    s.last = Instant::now();
                    Some((s.name.clone(), s.namespace.clone(), s.count))
                }
                _ => None,
            }
        };
        if let Some((name, namespace, count)) = repeat {
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(now),
            };
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "series": series })),
            )
            .await?;
            return Ok(());
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            reason: Some(ev.reason.clone()),
            action: Some(ev.action.clone()),
            note: ev.note.clone(),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..K8sEvent::default()
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        let mut seen = self.seen.lock().unwrap();
        if seen.len() >= MAX_CACHED {
            seen.retain(|_, s| s.last.elapsed() < SERIES_WINDOW);
            if seen.len() >= MAX_CACHED {
                // Still full of live series: forget the oldest half.
                let mut ages: Vec<Instant> = seen.values().map(|s| s.last).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                seen.retain(|_, s| s.last > cut);
            }
        }
        seen.insert(
            k,
            Seen {
                name,
                namespace,
                count: 1,
                last: Instant::now(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_objects_reasons_and_notes() {
        let ev = |reason: &str, note: &str| Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Unseal".into(),
            secondary: None,
        };
        let obj = |uid: &str| ObjectReference {
            uid: Some(uid.into()),
            name: Some("a".into()),
            ..ObjectReference::default()
        };
        let base = key(&ev("Unsealed", "n"), &obj("1"));
        assert_eq!(base, key(&ev("Unsealed", "n"), &obj("1")));
        assert_ne!(base, key(&ev("Unsealed", "n"), &obj("2")));
        assert_ne!(base, key(&ev("DecryptFailed", "n"), &obj("1")));
        assert_ne!(base, key(&ev("Unsealed", "m"), &obj("1")));
    }
}
