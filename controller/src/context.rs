//! What `reconcile` needs ([`Context`]), and the memory it keeps between reconciles.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::api::ObjectMeta;
use sealcred_shared::keyring::Keyring;

use crate::consumers::Workloads;
use crate::digest::DigestKeys;
use crate::events::Publisher;
use crate::metrics::Metrics;

/// What `reconcile` needs.
pub struct Context {
    pub(crate) client: Client,
    pub(crate) keyring: Keyring,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) recorder: Publisher,
    /// object uid → SHA-256 of the Secret data as written or first seen. In memory only.
    pub(crate) data_digests: Mutex<HashMap<String, [u8; 32]>>,
    /// object uid → consecutive transient failures (for the backoff).
    pub(crate) failures: Mutex<HashMap<String, u32>>,
    /// uids whose Secret data changed and whose workloads are not all rolled yet.
    pub(crate) restarts_pending: Mutex<HashSet<String>>,
    /// object uid → restart digest whose restart pass completed in this process.
    pub(crate) restarts_checked: Mutex<HashMap<String, String>>,
    /// The restart-digest keys, per namespace.
    pub(crate) digest_keys: DigestKeys,
    /// The workload caches (None with `--workload-restarts=false`).
    pub(crate) workloads: Option<Arc<Workloads>>,
    /// object uid → the last full reconcile that succeeded (see [`FullSync`]).
    pub(crate) full_syncs: Mutex<HashMap<String, FullSync>>,
    /// Our own Secret writes, to drop their echo on the Secret watch.
    pub(crate) own_writes: Arc<OwnWrites>,
    /// `--secret-types`: the Secret types the controller may write.
    pub(crate) secret_types: Vec<String>,
    pub(crate) resync: Duration,
    pub(crate) max_backoff: Duration,
    /// `--sts-role-allow`, `--sts-endpoint`, `--sts-min-refresh`.
    pub(crate) sts: crate::sts::StsConfig,
}

/// What a consumers-only reconcile (one asked for by a workload change alone) needs
/// from the last full one of the same generation: the status it wrote (without the
/// consumers), the Secret's restart digest, and when the full one asked to run again.
#[derive(Clone)]
pub(crate) struct FullSync {
    pub(crate) generation: Option<i64>,
    pub(crate) status: sealcred_shared::crd::SealedStorageCredStatus,
    pub(crate) digest: Option<String>,
    pub(crate) secret_name: String,
    pub(crate) next: std::time::Instant,
}

/// The resourceVersions of the Secrets this process has just written, keyed by
/// `namespace/name` (a few per Secret: creating or adopting one takes up to three
/// writes). The Secret watch drops an event that only echoes one of them (same
/// resourceVersion), so our own write does not trigger a second reconcile of its
/// owner; any other change (an edit, a deletion) has another resourceVersion and
/// still triggers one. An entry lives from the write until its echo arrives.
#[derive(Default)]
pub(crate) struct OwnWrites(Mutex<HashMap<String, Vec<String>>>);

/// resourceVersions remembered per Secret (the oldest is forgotten first).
const OWN_WRITES_PER_SECRET: usize = 4;

impl OwnWrites {
    pub(crate) fn record(&self, namespace: &str, name: &str, resource_version: Option<String>) {
        if let Some(rv) = resource_version {
            let mut writes = self.0.lock().unwrap();
            let rvs = writes.entry(format!("{namespace}/{name}")).or_default();
            if rvs.len() == OWN_WRITES_PER_SECRET {
                rvs.remove(0);
            }
            rvs.push(rv);
        }
    }

    /// Whether `meta` is the echo of our own write (and forgets the write if so).
    pub(crate) fn is_echo(&self, meta: &ObjectMeta) -> bool {
        let key = format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        );
        let mut writes = self.0.lock().unwrap();
        let Some(rvs) = writes.get_mut(&key) else {
            return false;
        };
        let Some(i) = rvs
            .iter()
            .position(|rv| meta.resource_version.as_ref() == Some(rv))
        else {
            return false;
        };
        rvs.remove(i);
        if rvs.is_empty() {
            writes.remove(&key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Several writes in one reconcile (an adoption: apply, then the managedFields
        // patch; here three): each echo dropped once.
        for rv in ["10", "11", "12"] {
            w.record("n", "s", Some(rv.into()));
        }
        assert!(w.is_echo(&meta("11")));
        assert!(w.is_echo(&meta("10")));
        assert!(!w.is_echo(&meta("13")));
        assert!(w.is_echo(&meta("12")));
        assert!(w.0.lock().unwrap().is_empty());
    }
}
