//! Rolling restarts of the workloads that read a Secret the controller writes.
//!
//! A Deployment, StatefulSet or DaemonSet annotated
//! `sealcred.io/restart-on-change: "<secret>[,<secret>...]"` is rolled when the sealed
//! values of a named Secret change: the controller sets the pod-template annotation
//! `sealcred.io/restarted-for-<secret>` to the Secret's restart digest
//! ([`crate::digest`], a keyed digest of the values) with a JSON merge patch (field manager [`crate::FIELD_MANAGER`]), which the workload's own
//! controller turns into a rolling update.
//!
//! When to patch, per workload naming the Secret:
//! - the annotation already holds the current digest: nothing (restarts, resyncs and
//!   re-applies of the same object are no-ops, and the patch itself is idempotent);
//! - it holds another digest: patch (this also catches up after a controller that
//!   died between writing the Secret and rolling the workload);
//! - it is absent: patch only if this controller has just changed the Secret's data
//!   (a newly annotated workload is not rolled by a resync or a controller restart).
//!
//! The digest covers the entry names and values only, keyed: unchanged by a rotate, a
//! rewrap or a re-seal of the same values (new ciphertext), or by edits of the Secret's
//! labels or annotations.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::info;

use crate::consumers::{Consumer, Kind, Workloads};
use crate::events::Publisher;
use crate::metrics::Metrics;
use crate::support::hex;
use crate::{Error, FIELD_MANAGER, Result};

/// Annotation on a workload: the Secrets (comma-separated) whose change rolls it.
pub const RESTART_ON_CHANGE_ANNOTATION: &str = "sealcred.io/restart-on-change";
/// Prefix of the pod-template annotation the controller sets (see [`restarted_for_key`]).
pub const RESTARTED_FOR_PREFIX: &str = "sealcred.io/restarted-for-";

/// The longest name part of an annotation key.
const MAX_NAME_PART: usize = 63;

/// The pod-template annotation key for `secret`: `sealcred.io/restarted-for-<secret>`,
/// or, when that name part would exceed 63 characters, the name cut short and
/// followed by `-` and 10 hex digits of its SHA-256 (still unique per Secret).
pub fn restarted_for_key(secret: &str) -> String {
    let name_part = &RESTARTED_FOR_PREFIX["sealcred.io/".len()..];
    if name_part.len() + secret.len() <= MAX_NAME_PART {
        return format!("{RESTARTED_FOR_PREFIX}{secret}");
    }
    let hash = hex(&Sha256::digest(secret.as_bytes()));
    let keep = MAX_NAME_PART - name_part.len() - 1 - 10;
    // Secret names are ASCII (DNS subdomains): any byte index is a char boundary.
    format!("{RESTARTED_FOR_PREFIX}{}-{}", &secret[..keep], &hash[..10])
}

/// Whether the workload's `sealcred.io/restart-on-change` names `secret`.
pub fn names_secret(annotations: &BTreeMap<String, String>, secret: &str) -> bool {
    annotations
        .get(RESTART_ON_CHANGE_ANNOTATION)
        .is_some_and(|v| v.split(',').any(|s| s.trim() == secret))
}

/// What to do with one workload (see the module documentation). `first_record`: the
/// Secret carried no restart digest before this write (written by an older controller,
/// or while no workload named it), so a workload's other value is not an older digest
/// of ours and is left alone unless the values changed.
pub fn needs_restart(
    current: Option<&str>,
    digest: &str,
    content_changed: bool,
    first_record: bool,
) -> bool {
    match current {
        Some(v) if v == digest => false,
        _ if content_changed => true,
        Some(_) => !first_record,
        None => false,
    }
}

/// One workload that was rolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restarted {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
}

/// The Secret a restart pass is about.
#[derive(Clone, Copy)]
struct Target<'a> {
    namespace: &'a str,
    secret: &'a str,
    /// Its restart digest (the pod-template annotation's value).
    digest: &'a str,
    /// This reconcile has just changed the Secret's data.
    content_changed: bool,
    /// The digest was recorded on the Secret for the first time.
    first_record: bool,
}

/// What the restart pass needs from the controller.
pub struct Restarter<'a> {
    /// The API client.
    pub client: &'a Client,
    /// The workload caches.
    pub workloads: &'a Workloads,
    /// Events on the rolled workloads.
    pub recorder: &'a Publisher,
    /// `sealcred_workload_restarts_total`.
    pub metrics: &'a Metrics,
}

impl Restarter<'_> {
    /// Rolls every workload of `namespace` that names `secret` and needs it.
    /// `content_changed`: this reconcile has just changed the Secret's data;
    /// `first_record`: see [`needs_restart`].
    pub async fn restart_for(
        &self,
        namespace: &str,
        secret: &str,
        digest: &str,
        content_changed: bool,
        first_record: bool,
    ) -> Result<Vec<Restarted>> {
        let t = Target {
            namespace,
            secret,
            digest,
            content_changed,
            first_record,
        };
        let candidates = self
            .workloads
            .restart_candidates(namespace, secret)
            .map_err(Error::CacheNotReady)?;
        let names = |k: Kind| -> Vec<String> {
            candidates
                .iter()
                .filter(|w| w.kind == k)
                .map(|w| w.name.clone())
                .collect()
        };
        let mut done = Vec::new();
        self.pass::<Deployment>(names(Kind::Deployment), &t, &mut done)
            .await?;
        self.pass::<StatefulSet>(names(Kind::StatefulSet), &t, &mut done)
            .await?;
        self.pass::<DaemonSet>(names(Kind::DaemonSet), &t, &mut done)
            .await?;
        Ok(done)
    }

    /// Rolls the workloads of one kind (`names`, from the caches) that need it.
    async fn pass<K: Consumer + Serialize>(
        &self,
        names: Vec<String>,
        t: &Target<'_>,
        done: &mut Vec<Restarted>,
    ) -> Result<()> {
        let Target {
            namespace,
            secret,
            digest,
            content_changed,
            first_record,
        } = *t;
        let kind = K::WORKLOAD_KIND.as_str();
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let key = restarted_for_key(secret);
        for name in names {
            // The cache holds metadata only; the pod template is read fresh.
            let Some(workload) = api.get_opt(&name).await.map_err(Error::Kube)? else {
                continue;
            };
            let current = workload.template_annotations().and_then(|a| a.get(&key));
            if !needs_restart(
                current.map(String::as_str),
                digest,
                content_changed,
                first_record,
            ) {
                continue;
            }
            let patch = json!({
                "spec": { "template": { "metadata": { "annotations": { &key: digest } } } }
            });
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            api.patch(&name, &pp, &Patch::Merge(&patch))
                .await
                .map_err(Error::Kube)?;
            info!(kind, workload = %name, %secret, "rolled the workload: its Secret changed");
            self.metrics.workload_restarted(kind);
            let ev = Event {
                type_: EventType::Normal,
                reason: "SecretChanged".into(),
                note: Some(format!(
                    "Secret {secret} changed (restart digest {}…): rolling restart through the pod-template annotation {key}",
                    &digest[..12.min(digest.len())]
                )),
                action: "Restart".into(),
                secondary: None,
            };
            self.recorder.send(ev, workload.object_ref(&()));
            done.push(Restarted { kind, name });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_keys_are_valid_and_distinct() {
        assert_eq!(
            restarted_for_key("flyte-storage-creds"),
            "sealcred.io/restarted-for-flyte-storage-creds"
        );
        let long_a = format!("{}-a", "x".repeat(200));
        let long_b = format!("{}-b", "x".repeat(200));
        let (a, b) = (restarted_for_key(&long_a), restarted_for_key(&long_b));
        assert_ne!(a, b);
        for k in [&a, &b, &restarted_for_key(&"y".repeat(49))] {
            let name = k.strip_prefix("sealcred.io/").unwrap();
            assert!(name.len() <= MAX_NAME_PART, "{k}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            );
            assert!(name.ends_with(|c: char| c.is_ascii_alphanumeric()), "{k}");
        }
    }

    #[test]
    fn restart_on_change_lists_secrets() {
        let a = BTreeMap::from([(
            RESTART_ON_CHANGE_ANNOTATION.to_string(),
            "db, flyte-storage-creds".to_string(),
        )]);
        assert!(names_secret(&a, "db"));
        assert!(names_secret(&a, "flyte-storage-creds"));
        assert!(!names_secret(&a, "flyte"));
        assert!(!names_secret(&BTreeMap::new(), "db"));
    }

    #[test]
    fn restart_only_on_a_real_change() {
        for first in [false, true] {
            assert!(!needs_restart(Some("d1"), "d1", true, first));
            assert!(!needs_restart(Some("d1"), "d1", false, first));
            assert!(needs_restart(None, "d1", true, first));
            assert!(!needs_restart(None, "d1", false, first));
            assert!(needs_restart(Some("d0"), "d1", true, first));
        }
        // An older digest of ours: catch up. Another controller's value, first record: keep.
        assert!(needs_restart(Some("d0"), "d1", false, false));
        assert!(!needs_restart(Some("d0"), "d1", false, true));
    }
}
