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
//! After creating or adopting a Secret, the controller's server-side apply is made
//! its only manager, so that a key later dropped from the object does not outlive
//! the apply that no longer names it:
//! - created: the create already wrote everything the apply would, so no apply
//!   follows; one merge patch under the create's resourceVersion turns the
//!   create's own `managedFields` entry (an `Update` operation) into an `Apply`
//!   entry of the same fields ([`own_as_apply`]). Two writes for a new Secret;
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
//! If the conversion patch meets a changed Secret (409), the Secret is re-checked
//! and, still ours, written by the apply path, which makes the apply exclusive.

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Checked {
    /// No Secret of that name.
    Absent,
    /// Ours, at this resourceVersion.
    Owned(String),
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
            Ownership::Ours => Ok(Checked::Owned(rv)),
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
    checked: Checked,
    uid: &str,
    own_writes: &OwnWrites,
) -> Result<()> {
    write_as(api, desired, checked, uid, own_writes, false)
        .await
        .map(|_| ())
}

/// Creates `desired` without an ownership check before it, for a Secret presumed
/// absent (see the module documentation), as [`write`] does after a check found none.
/// `Ok(false)`: a Secret of that name exists (the create met a 409), nothing was
/// written; the caller reads it and goes the checked way.
pub(crate) async fn create_presumed(
    api: &Api<Secret>,
    desired: &mut Wiped,
    uid: &str,
    own_writes: &OwnWrites,
) -> Result<bool> {
    write_as(api, desired, Checked::Absent, uid, own_writes, true).await
}

/// [`write`]; `presumed`: `Checked::Absent` was presumed, not checked, so a create
/// that meets an existing Secret returns `Ok(false)` instead of re-checking it.
async fn write_as(
    api: &Api<Secret>,
    desired: &mut Wiped,
    mut checked: Checked,
    uid: &str,
    own_writes: &OwnWrites,
    presumed: bool,
) -> Result<bool> {
    let name = desired.0.metadata.name.clone().unwrap_or_default();
    let namespace = desired.0.metadata.namespace.clone().unwrap_or_default();
    let record = |s: &Wiped| {
        own_writes.record(&namespace, &name, s.0.metadata.resource_version.clone());
    };
    // Created or adopted in this write: make our apply the only manager.
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
                        exclusive = true;
                        match own_as_apply(api, &name, &created).await {
                            Ok(Some(patched)) => {
                                record(&patched);
                                desired.0.metadata.resource_version = None;
                                return Ok(true);
                            }
                            // No entry of ours to convert: apply as after an adoption.
                            Ok(None) => created.0.metadata.resource_version.clone(),
                            Err(e) if is_conflict(&e) => {
                                last_conflict = Some(e);
                                checked = recheck(api, &name, uid).await?;
                                continue;
                            }
                            Err(e) => return Err(refusal(&name, e, desired.0.data.as_ref())),
                        }
                    }
                    Err(e) if is_conflict(&e) && presumed && last_conflict.is_none() => {
                        desired.0.metadata.resource_version = None;
                        return Ok(false);
                    }
                    Err(e) if is_conflict(&e) => {
                        last_conflict = Some(e);
                        checked = recheck(api, &name, uid).await?;
                        continue;
                    }
                    Err(e) => return Err(refusal(&name, e, desired.0.data.as_ref())),
                }
            }
            Checked::Owned(rv) => Some(rv.clone()),
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
        return Ok(true);
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

/// Turns the `managedFields` entry our create made (operation `Update`) into an
/// `Apply` entry of the same fields, as the only entry, under `created`'s
/// resourceVersion: the state an apply of the same Secret would have left.
/// `None`: the create left no entry of ours (nothing to convert).
async fn own_as_apply(
    api: &Api<Secret>,
    name: &str,
    created: &Wiped,
) -> std::result::Result<Option<Wiped>, kube::Error> {
    let Some(entry) = as_apply(created.0.metadata.managed_fields.as_deref().unwrap_or(&[])) else {
        return Ok(None);
    };
    let patch = json!({
        "metadata": {
            "resourceVersion": created.0.metadata.resource_version,
            "managedFields": [entry],
        },
    });
    merge_patch(api, name, &patch).await.map(Some)
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

/// Our create's entry (manager [`FIELD_MANAGER`], operation `Update`, no
/// subresource) as an `Apply` entry; `None` if there is none.
fn as_apply(managers: &[ManagedFieldsEntry]) -> Option<ManagedFieldsEntry> {
    let ours = managers.iter().find(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER)
            && m.operation.as_deref() == Some("Update")
            && m.subresource.is_none()
    })?;
    Some(ManagedFieldsEntry {
        operation: Some("Apply".into()),
        time: None,
        ..ours.clone()
    })
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
    fn the_create_entry_becomes_the_only_apply_entry() {
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
        let got = as_apply(&[
            entry("someone-else", "Update", None),
            entry(FIELD_MANAGER, "Update", Some("status")),
            entry(FIELD_MANAGER, "Update", None),
        ])
        .unwrap();
        assert_eq!(got.manager.as_deref(), Some(FIELD_MANAGER));
        assert_eq!(got.operation.as_deref(), Some("Apply"));
        assert_eq!(got.subresource, None);
        assert_eq!(got.time, None);
        assert!(as_apply(&[entry(FIELD_MANAGER, "Apply", None)]).is_none());
        assert!(as_apply(&[]).is_none());
    }

    #[test]
    fn checked_carries_the_resource_version_or_refuses() {
        assert_eq!(Checked::of(None, "u", "s").unwrap(), Checked::Absent);
        let ours = secret(Some(("u", true)), None);
        assert_eq!(
            Checked::of(Some(&ours), "u", "s").unwrap(),
            Checked::Owned("7".into())
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
