//! The Secret write, under the precondition that was checked.
//!
//! Ownership is checked on a GET before the KMS call; the write comes after it. So
//! that a Secret someone else creates or changes in between is never taken over,
//! each write carries what was checked ([`Checked`]):
//! - no Secret existed: **create** (POST), which fails if one exists by now;
//! - an owned or adoptable Secret at resourceVersion R: **server-side apply with
//!   `metadata.resourceVersion: R`**, which fails (409) if it changed since.
//!
//! Any other API error that retrying alone will not fix (403, 422, ...) is a
//! refusal ([`crate::refusal`]): Ready=False with its reason, the last Secret kept.
//!
//! On a failed precondition the Secret is read again and its ownership re-checked:
//! not ours any more → `SecretConflict`, left untouched; still ours → written again
//! (the plaintext is still in memory: no second KMS call), at most
//! [`MAX_ATTEMPTS`] times before the reconcile is retried with backoff.
//!
//! Our server-side apply is made the Secret's only manager, so that a key later
//! dropped from the object does not outlive the apply that no longer names it:
//! - created: the create (POST) is the only write, so a new Secret costs one
//!   request. The create leaves a `managedFields` entry of ours with operation
//!   `Update`, which an apply does not count as its own. Before the first apply to
//!   that Secret (the object changed, or its data drifted), one merge patch under
//!   the checked resourceVersion turns that entry into an `Apply` entry of the same
//!   fields ([`Checked::Owned`]'s `convert`, [`as_apply`]): the state an apply of the
//!   Secret as created would have left, so the apply then drops what it no longer names;
//! - adopted: the apply, then one merge patch under the apply's resourceVersion
//!   sets `managedFields` to the apply's own entry and removes the data keys the
//!   object does not hold ([`make_exclusive`]), which the adopted Secret's author
//!   would otherwise still co-own.
//!
//! A new object (no status yet, nothing written for it in this process) is first
//! tried without the ownership GET ([`create_presumed`]): its Secret almost always
//! does not exist yet, and the create fails if it does. Then nothing was written and
//! the caller goes the checked way (GET, then [`write`]).
//!
//! If the exclusivity patch meets a changed Secret (409), the Secret is re-checked
//! and, still ours, written again by the apply path.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Map, Value, json};

use crate::annotations::ADOPT_ANNOTATION;
use crate::context::OwnWrites;
use crate::materialize::Wiped;
use crate::refusal::refusal;
use crate::{Error, FIELD_MANAGER, Result};

/// Writes attempted before giving up (each after a failed precondition).
pub(crate) const MAX_ATTEMPTS: usize = 4;

/// Who controls an existing Secret.
pub(crate) enum Ownership {
    /// Its controller ownerReference is this object.
    Ours,
    /// No controller ownerReference; `adopt`: annotated `sealcred.io/adopt: "true"`.
    Unowned { adopt: bool },
    /// Controlled by another owner (kind and name).
    OtherController(String),
}

/// Who controls `secret`, seen from the object with `uid`.
pub(crate) fn ownership(secret: &Secret, uid: &str) -> Ownership {
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

/// What the ownership check found, and so what the write may assume.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Checked {
    /// No Secret of that name.
    Absent,
    /// Ours, at this resourceVersion. `convert`: it still carries our create's
    /// `managedFields` entry (operation `Update`) and no apply of ours; the
    /// `managedFields` with that entry turned into the apply's, to patch in first.
    Owned {
        rv: String,
        convert: Option<Vec<ManagedFieldsEntry>>,
    },
    /// Unowned and annotated for adoption, at this resourceVersion.
    Adoptable(String),
}

impl Checked {
    /// The check on a Secret just read: `SecretConflict` when it is not ours to write.
    pub(crate) fn of(secret: Option<&Secret>, uid: &str, name: &str) -> Result<Checked> {
        let Some(s) = secret else {
            return Ok(Checked::Absent);
        };
        let rv = s.metadata.resource_version.clone().unwrap_or_default();
        match ownership(s, uid) {
            Ownership::Ours => Ok(Checked::Owned {
                rv,
                convert: as_apply(s.metadata.managed_fields.as_deref().unwrap_or(&[])),
            }),
            Ownership::Unowned { adopt: true } => Ok(Checked::Adoptable(rv)),
            Ownership::Unowned { adopt: false } => Err(Error::SecretConflict(format!(
                "Secret {name} exists and is not owned by this SealedStorageCred; it was left untouched (annotate it {ADOPT_ANNOTATION}=\"true\" to let the controller take it over)"
            ))),
            Ownership::OtherController(owner) => Err(Error::SecretConflict(format!(
                "Secret {name} is controlled by {owner}; it was left untouched"
            ))),
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Writes `desired` (its name, namespace and data set) under the precondition
/// `checked`; see the module documentation. Every write's resourceVersion is
/// recorded in `own_writes`.
pub(crate) async fn write(
    api: &Api<Secret>,
    desired: &mut Wiped,
    mut checked: Checked,
    uid: &str,
    own_writes: &OwnWrites,
) -> Result<()> {
    let name = desired.0.metadata.name.clone().unwrap_or_default();
    let namespace = desired.0.metadata.namespace.clone().unwrap_or_default();
    let record = |s: &Wiped| {
        own_writes.record(&namespace, &name, s.0.metadata.resource_version.clone());
    };
    // Adopted in this write: make our apply the only manager (kept once set: a Secret
    // adopted by an apply whose patch then met a 409 is ours now, and the author's
    // entry still has to go).
    let mut exclusive = false;
    let mut last_conflict = None;
    for _ in 0..MAX_ATTEMPTS {
        desired.0.metadata.resource_version = None;
        let rv = match &checked {
            Checked::Absent => {
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                match api.create(&pp, &desired.0).await.map(Wiped) {
                    Ok(created) => {
                        record(&created);
                        desired.0.metadata.resource_version = None;
                        return Ok(());
                    }
                    Err(e) if is_conflict(&e) => {
                        last_conflict = Some(e);
                        checked = recheck(api, &name, uid).await?;
                        continue;
                    }
                    Err(e) => return Err(refusal(&name, e, desired.0.data.as_ref())),
                }
            }
            Checked::Owned { rv, convert: None } => Some(rv.clone()),
            Checked::Owned {
                rv,
                convert: Some(fields),
            } => match convert_create_entry(api, &name, rv, fields).await {
                Ok(patched) => {
                    record(&patched);
                    patched.0.metadata.resource_version.clone()
                }
                Err(e) if is_conflict(&e) => {
                    last_conflict = Some(e);
                    checked = recheck(api, &name, uid).await?;
                    continue;
                }
                Err(e) => return Err(refusal(&name, e, desired.0.data.as_ref())),
            },
            Checked::Adoptable(rv) => {
                exclusive = true;
                Some(rv.clone())
            }
        };
        desired.0.metadata.resource_version = rv;
        let applied = match api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&desired.0),
            )
            .await
            .map(Wiped)
        {
            Ok(a) => a,
            Err(e) if is_conflict(&e) => {
                last_conflict = Some(e);
                checked = recheck(api, &name, uid).await?;
                continue;
            }
            Err(e) => return Err(refusal(&name, e, desired.0.data.as_ref())),
        };
        record(&applied);
        if exclusive {
            match make_exclusive(api, &name, &applied, desired).await {
                Ok(Some(patched)) => record(&patched),
                Ok(None) => {}
                Err(e) if is_conflict(&e) => {
                    last_conflict = Some(e);
                    checked = recheck(api, &name, uid).await?;
                    continue;
                }
                Err(e) => return Err(refusal(&name, e, desired.0.data.as_ref())),
            }
        }
        desired.0.metadata.resource_version = None;
        return Ok(());
    }
    desired.0.metadata.resource_version = None;
    Err(Error::Kube(last_conflict.unwrap_or_else(|| {
        kube::Error::Service(format!("Secret {name} kept changing while it was written").into())
    })))
}

/// Reads the Secret again after a failed precondition and re-checks ownership.
async fn recheck(api: &Api<Secret>, name: &str, uid: &str) -> Result<Checked> {
    let now = api.get_opt(name).await.map_err(Error::Kube)?.map(Wiped);
    Checked::of(now.as_ref().map(|w| &w.0), uid, name)
}

/// Creates `desired` without an ownership check before it, for a Secret presumed
/// absent (see the module documentation). `Ok(false)`: a Secret of that name exists
/// (409), nothing was written; the caller reads it and goes the checked way.
pub(crate) async fn create_presumed(
    api: &Api<Secret>,
    desired: &mut Wiped,
    own_writes: &OwnWrites,
) -> Result<bool> {
    let name = desired.0.metadata.name.clone().unwrap_or_default();
    let namespace = desired.0.metadata.namespace.clone().unwrap_or_default();
    desired.0.metadata.resource_version = None;
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&pp, &desired.0).await.map(Wiped) {
        Ok(created) => {
            own_writes.record(
                &namespace,
                &name,
                created.0.metadata.resource_version.clone(),
            );
            Ok(true)
        }
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(refusal(&name, e, desired.0.data.as_ref())),
    }
}

/// One merge patch by our field manager (its precondition in `patch`'s resourceVersion).
async fn merge_patch(
    api: &Api<Secret>,
    name: &str,
    patch: &Value,
) -> std::result::Result<Wiped, kube::Error> {
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(name, &pp, &Patch::Merge(patch)).await.map(Wiped)
}

/// `managers` with our create's entry (manager [`FIELD_MANAGER`], operation
/// `Update`, no subresource) turned into an `Apply` entry of the same fields; `None`
/// if there is no such entry, or an apply entry of ours exists already.
fn as_apply(managers: &[ManagedFieldsEntry]) -> Option<Vec<ManagedFieldsEntry>> {
    let ours = |m: &ManagedFieldsEntry, operation: &str| {
        m.manager.as_deref() == Some(FIELD_MANAGER)
            && m.operation.as_deref() == Some(operation)
            && m.subresource.is_none()
    };
    if managers.iter().any(|m| ours(m, "Apply")) || !managers.iter().any(|m| ours(m, "Update")) {
        return None;
    }
    Some(
        managers
            .iter()
            .map(|m| {
                if ours(m, "Update") {
                    ManagedFieldsEntry {
                        operation: Some("Apply".into()),
                        time: None,
                        ..m.clone()
                    }
                } else {
                    m.clone()
                }
            })
            .collect(),
    )
}

/// Patches in `fields` (see [`as_apply`]) under resourceVersion `rv`.
async fn convert_create_entry(
    api: &Api<Secret>,
    name: &str,
    rv: &str,
    fields: &[ManagedFieldsEntry],
) -> std::result::Result<Wiped, kube::Error> {
    let patch = json!({
        "metadata": {
            "resourceVersion": rv,
            "managedFields": fields,
        },
    });
    merge_patch(api, name, &patch).await
}

/// Leaves our server-side apply the Secret's only manager, and removes data keys
/// `desired` does not hold, under `applied`'s resourceVersion. `None`: nothing to do.
async fn make_exclusive(
    api: &Api<Secret>,
    name: &str,
    applied: &Wiped,
    desired: &Wiped,
) -> std::result::Result<Option<Wiped>, kube::Error> {
    let managers = applied.0.metadata.managed_fields.as_deref().unwrap_or(&[]);
    let ours: Vec<&ManagedFieldsEntry> = managers
        .iter()
        .filter(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER)
                && m.operation.as_deref() == Some("Apply")
                && m.subresource.is_none()
        })
        .collect();
    let want = desired.0.data.as_ref();
    let extra: Map<String, Value> = applied
        .0
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| !want.is_some_and(|w| w.contains_key(*k)))
        .map(|k| (k.clone(), Value::Null))
        .collect();
    if ours.is_empty() || (ours.len() == managers.len() && extra.is_empty()) {
        return Ok(None);
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": applied.0.metadata.resource_version,
            "managedFields": ours,
        },
        "data": extra,
    });
    merge_patch(api, name, &patch).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;

    fn secret(owner: Option<(&str, bool)>, adopt: Option<&str>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                resource_version: Some("7".into()),
                owner_references: owner.map(|(uid, controller)| {
                    vec![OwnerReference {
                        uid: uid.into(),
                        controller: Some(controller),
                        kind: "SealedStorageCred".into(),
                        name: "other".into(),
                        api_version: "sealcred.io/v1alpha1".into(),
                        ..OwnerReference::default()
                    }]
                }),
                annotations: adopt.map(|v| [(ADOPT_ANNOTATION.to_string(), v.to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    #[test]
    fn our_create_entry_becomes_an_apply_entry_before_the_first_apply() {
        let entry =
            |manager: &str, operation: &str, subresource: Option<&str>| ManagedFieldsEntry {
                manager: Some(manager.into()),
                operation: Some(operation.into()),
                subresource: subresource.map(Into::into),
                api_version: Some("v1".into()),
                time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::UNIX_EPOCH,
                )),
                ..ManagedFieldsEntry::default()
            };
        let others = entry("someone-else", "Update", None);
        let status = entry(FIELD_MANAGER, "Update", Some("status"));
        let got = as_apply(&[
            others.clone(),
            status.clone(),
            entry(FIELD_MANAGER, "Update", None),
        ])
        .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], others, "other managers' entries stay");
        assert_eq!(got[1], status, "the status subresource's entry stays");
        assert_eq!(got[2].manager.as_deref(), Some(FIELD_MANAGER));
        assert_eq!(got[2].operation.as_deref(), Some("Apply"));
        assert_eq!(got[2].subresource, None);
        assert_eq!(got[2].time, None);
        // Nothing to convert: no create entry, or an apply of ours exists.
        assert!(as_apply(&[entry(FIELD_MANAGER, "Apply", None)]).is_none());
        assert!(
            as_apply(&[
                entry(FIELD_MANAGER, "Update", None),
                entry(FIELD_MANAGER, "Apply", None)
            ])
            .is_none()
        );
        assert!(as_apply(&[others.clone(), status]).is_none());
        assert!(as_apply(&[]).is_none());
        let mut ours = secret(Some(("u", true)), None);
        ours.metadata.managed_fields = Some(vec![entry(FIELD_MANAGER, "Update", None)]);
        assert!(matches!(
            Checked::of(Some(&ours), "u", "s").unwrap(),
            Checked::Owned { rv, convert: Some(f) } if rv == "7" && f.len() == 1
        ));
    }

    #[test]
    fn checked_carries_the_resource_version_or_refuses() {
        assert_eq!(Checked::of(None, "u", "s").unwrap(), Checked::Absent);
        let ours = secret(Some(("u", true)), None);
        assert_eq!(
            Checked::of(Some(&ours), "u", "s").unwrap(),
            Checked::Owned {
                rv: "7".into(),
                convert: None
            }
        );
        let adopt = secret(None, Some("true"));
        assert_eq!(
            Checked::of(Some(&adopt), "u", "s").unwrap(),
            Checked::Adoptable("7".into())
        );
        for foreign in [
            secret(None, None),
            secret(None, Some("yes")),
            secret(Some(("v", true)), Some("true")),
        ] {
            assert!(matches!(
                Checked::of(Some(&foreign), "u", "s"),
                Err(Error::SecretConflict(_))
            ));
        }
        // A non-controller reference to us is not ownership.
        let weak = secret(Some(("u", false)), None);
        assert!(Checked::of(Some(&weak), "u", "s").is_err());
    }
}
