//! The copies of one `ClusterSealedStorageCred`'s Secret: the check of one
//! namespace (no KMS call), the write of one namespace from the opened object, and
//! the pruning of copies in namespaces that stopped matching.
//!
//! The write is the namespaced one ([`crate::write::write`]: create or apply under
//! the precondition that was checked, `sealcred.io/adopt`, exclusive apply), with the
//! same Secret shape ([`crate::materialize`]: template labels and annotations, the
//! spec digest, the managed-by label) plus the label [`OWNER_KIND_LABEL`], and a
//! controller ownerReference to the cluster object.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Preconditions};
use sealcred_shared::crd::{CLUSTER_KIND, SealedStorageCred};
use sealcred_shared::seal::Opened;
use tracing::info;

use super::ClusterContext;
use crate::annotations::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_KIND_LABEL};
use crate::materialize::{Wiped, data_digest, secret_annotations, secret_labels, up_to_date_with};
use crate::write::{Checked, write};
use crate::{Error, Result};

/// The label selector of every Secret a `ClusterSealedStorageCred` writes.
pub(crate) fn selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{OWNER_KIND_LABEL}={CLUSTER_KIND}")
}

/// The labels of the Secret: the namespaced ones and [`OWNER_KIND_LABEL`].
fn labels(view: &SealedStorageCred) -> BTreeMap<String, String> {
    let mut l = secret_labels(view);
    l.insert(OWNER_KIND_LABEL.into(), CLUSTER_KIND.into());
    l
}

/// The in-memory key of a namespace's copy (object uid and namespace).
fn memo(uid: &str, namespace: &str) -> String {
    format!("{uid}/{namespace}")
}

/// What one namespace needs.
pub(crate) enum Need {
    /// The Secret there is ours and up to date.
    Unchanged,
    /// A write, under this precondition.
    Write(Checked),
}

/// `SecretConflict` naming the cluster kind (the shared check names the namespaced one).
fn for_cluster(e: Error) -> Error {
    match e {
        Error::SecretConflict(m) => {
            let kind = "this ClusterSealedStorageCred";
            Error::SecretConflict(str::replace(&m, "this SealedStorageCred", kind))
        }
        e => e,
    }
}

/// Reads the Secret in `namespace` and decides, without a KMS call, whether it must
/// be written. A Secret that is not ours (and not annotated for adoption) is
/// `SecretConflict`: left untouched.
pub(crate) async fn check(
    cctx: &ClusterContext,
    view: &SealedStorageCred,
    namespace: &str,
    uid: &str,
    secret_name: &str,
    digest: &str,
) -> Result<Need> {
    let api: Api<Secret> = Api::namespaced(cctx.base.client.clone(), namespace);
    let existing = api
        .get_opt(secret_name)
        .await
        .map_err(Error::Kube)?
        .map(Wiped);
    let checked =
        Checked::of(existing.as_ref().map(|e| &e.0), uid, secret_name).map_err(for_cluster)?;
    if let (Some(existing), Checked::Owned(_)) = (&existing, &checked)
        && up_to_date_with(&existing.0, view, digest, &labels(view))
    {
        let data = existing.0.data.as_ref();
        let now = data_digest(data.into_iter().flatten().map(|(k, v)| (k, v.0.as_slice())));
        let mut digests = cctx.data_digests.lock().unwrap();
        match digests.get(&memo(uid, namespace)) {
            Some(known) if *known == now => return Ok(Need::Unchanged),
            // First sight since start: trust the spec digest (no KMS call).
            None => {
                digests.insert(memo(uid, namespace), now);
                return Ok(Need::Unchanged);
            }
            Some(_) => {
                info!(
                    namespace,
                    "the Secret's data was changed outside the controller; restoring"
                );
            }
        }
    }
    Ok(Need::Write(checked))
}

/// Writes the Secret in `namespace` from `opened` (already verified), under
/// `checked`. The plaintext copy lives in a [`Wiped`] Secret for the write only.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_one(
    cctx: &ClusterContext,
    view: &SealedStorageCred,
    namespace: &str,
    uid: &str,
    secret_name: &str,
    digest: &str,
    checked: Checked,
    opened: &Opened,
    owner: &OwnerReference,
) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(cctx.base.client.clone(), namespace);
    let data: BTreeMap<String, ByteString> = opened
        .entries
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
        .collect();
    let written = data_digest(opened.entries.iter().map(|(k, v)| (k, v.expose())));
    let mut desired = Wiped(Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels(view)),
            annotations: Some(secret_annotations(view, digest)),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some(opened.template.type_.clone()),
        data: Some(data),
        ..Secret::default()
    });
    let result = write(&api, &mut desired, checked, uid, &cctx.own_writes).await;
    drop(desired);
    result.map_err(for_cluster)?;
    cctx.data_digests
        .lock()
        .unwrap()
        .insert(memo(uid, namespace), written);
    Ok(())
}

/// Whether `meta`'s controller ownerReference is the object with `uid`.
pub(crate) fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .is_some_and(|r| r.uid == uid)
}

/// Deletes the Secrets the object with `uid` controls, except `secret_name` in the
/// namespaces of `keep`: copies in namespaces that stopped matching, and copies
/// under a name the template no longer gives. Only Secrets whose controller
/// ownerReference has `uid` are deleted, each under a precondition on its uid and
/// resourceVersion (one changed since the list is left for the next reconcile).
/// Returns `namespace/name` of each deleted Secret.
pub(crate) async fn prune(
    cctx: &ClusterContext,
    uid: &str,
    secret_name: &str,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>> {
    let all: Api<Secret> = Api::all(cctx.base.client.clone());
    let listed = all
        .list_metadata(&ListParams::default().labels(&selector()))
        .await
        .map_err(Error::Kube)?;
    let mut removed = Vec::new();
    for s in listed.items {
        let (Some(ns), Some(name)) = (s.metadata.namespace.as_deref(), s.metadata.name.as_deref())
        else {
            continue;
        };
        if !controlled_by(&s.metadata, uid) || (keep.contains(ns) && name == secret_name) {
            continue;
        }
        let api: Api<Secret> = Api::namespaced(cctx.base.client.clone(), ns);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: s.metadata.uid.clone(),
                resource_version: s.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => continue,
            Err(e) => return Err(Error::Kube(e)),
        }
        cctx.data_digests.lock().unwrap().remove(&memo(uid, ns));
        info!(
            namespace = ns,
            secret = name,
            "deleted the Secret: its namespace no longer matches"
        );
        removed.push(format!("{ns}/{name}"));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_controller_reference_with_the_uid_is_ownership() {
        let meta = |refs: serde_json::Value| -> ObjectMeta {
            serde_json::from_value(json!({ "ownerReferences": refs })).unwrap()
        };
        let r = |uid: &str, controller: bool| json!({"apiVersion": "sealcred.io/v1alpha1", "kind": CLUSTER_KIND, "name": "x", "uid": uid, "controller": controller});
        assert!(controlled_by(&meta(json!([r("u", true)])), "u"));
        assert!(!controlled_by(&meta(json!([r("v", true)])), "u"));
        assert!(!controlled_by(&meta(json!([r("u", false)])), "u"));
        assert!(!controlled_by(&ObjectMeta::default(), "u"));
    }
}
