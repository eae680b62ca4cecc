//! The Secret an object becomes: ownership, the write, and the digests that spare KMS calls.
//!
//! For each `SealedStorageCred` the controller materialises one Secret, written with
//! server-side apply (field manager [`crate::FIELD_MANAGER`]) and a controller
//! ownerReference, under the precondition that was checked ([`crate::write`]). What
//! it will not do:
//! - write a Secret type not on `--secret-types`: Ready=False, SecretTypeNotAllowed,
//!   before any KMS call;
//! - take over a Secret it does not own (unless the Secret opts in with the
//!   annotation `sealcred.io/adopt: "true"`), even one created while KMS is being
//!   called: Ready=False, reason SecretConflict (a new object's Secret is presumed
//!   absent: one KMS call, then a create that fails if it exists; see
//!   [`sync_secret`]);
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

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta};
use kube::{Resource, ResourceExt};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_shared::format::ParsedSpec;
use sealcred_shared::seal;
use sealcred_shared::secret::SecretBytes;
use sha2::{Digest, Sha256};
use tracing::{debug, info};
use zeroize::Zeroize;

use crate::annotations::{
    MANAGED_BY_LABEL, MANAGED_BY_VALUE, RESTART_DIGEST_ANNOTATION, SPEC_DIGEST_ANNOTATION,
};
use crate::audit::Unseal;
use crate::context::Context;
use crate::digest::restart_digest;
use crate::support::hex;
use crate::write::{Checked, create_presumed, write};
use crate::{Error, Result};

/// A Secret whose data is wiped when dropped.
pub(crate) struct Wiped(pub(crate) Secret);

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

pub(crate) fn data_digest<'a>(entries: impl Iterator<Item = (&'a String, &'a [u8])>) -> [u8; 32] {
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

pub(crate) fn secret_labels(obj: &SealedStorageCred) -> BTreeMap<String, String> {
    let mut labels = obj.spec.template.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    labels
}

pub(crate) fn secret_annotations(
    obj: &SealedStorageCred,
    digest: &str,
) -> BTreeMap<String, String> {
    let mut a = obj.spec.template.annotations.clone();
    a.insert(SPEC_DIGEST_ANNOTATION.into(), digest.into());
    a
}

pub(crate) fn is_subset(
    want: &BTreeMap<String, String>,
    have: Option<&BTreeMap<String, String>>,
) -> bool {
    want.iter()
        .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
}

/// Whether an owned Secret already matches the object (without decrypting).
fn up_to_date(secret: &Secret, obj: &SealedStorageCred, digest: &str) -> bool {
    up_to_date_with(secret, obj, digest, &secret_labels(obj))
}

/// [`up_to_date`] with the labels the Secret must carry given.
pub(crate) fn up_to_date_with(
    secret: &Secret,
    obj: &SealedStorageCred,
    digest: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let keys_match = secret
        .data
        .as_ref()
        .map(|d| d.keys().eq(obj.spec.entries.keys()))
        .unwrap_or(obj.spec.entries.is_empty());
    keys_match
        && secret.type_.as_deref().unwrap_or("Opaque") == obj.spec.template.type_
        && is_subset(labels, secret.metadata.labels.as_ref())
        && is_subset(
            &secret_annotations(obj, digest),
            secret.metadata.annotations.as_ref(),
        )
}

/// Refuses, before any KMS or API call, a template type not on `--secret-types`.
/// A malformed object still reports its structural error (InvalidSpec) first; the
/// structural checks run here only for a refused type (an allowed one is checked
/// by `seal::open`, when and if KMS is needed).
pub(crate) fn check_type(obj: &SealedStorageCred, ctx: &Context) -> Result<()> {
    let t = &obj.spec.template.type_;
    if ctx.secret_types.iter().any(|a| a == t) {
        return Ok(());
    }
    ParsedSpec::parse(&obj.spec).map_err(|e| Error::Unseal(e.into()))?;
    Err(Error::SecretTypeNotAllowed(t.clone()))
}

/// What a successful reconciliation did.
pub(crate) enum Outcome {
    /// The Secret was written; `content_changed`: its data differs from before (or it
    /// is new). Decided in-process from the data digests, which never leave it.
    Written {
        content_changed: bool,
        restart: Restart,
    },
    Unchanged {
        restart: Restart,
    },
}

/// The restart digest a write recorded on the Secret (or the one an unchanged Secret
/// carries), for the restart pass.
pub(crate) enum Restart {
    /// No workload names the Secret (or restarts are off): no digest was computed.
    NotAsked,
    /// The digest (`crate::digest`); `first_record`: the Secret carried none before
    /// this write (see `crate::restart::needs_restart`).
    Digest { digest: String, first_record: bool },
    /// The namespace's digest key could not be had: the restart pass fails with this.
    KeyFailed(Error),
}

/// The restart digest an existing Secret records (`Restart::NotAsked` when none).
pub(crate) fn recorded_restart(existing: Option<&Secret>) -> Restart {
    existing
        .and_then(|s| {
            s.metadata
                .annotations
                .as_ref()?
                .get(RESTART_DIGEST_ANNOTATION)
        })
        .map_or(Restart::NotAsked, |digest| Restart::Digest {
            digest: digest.clone(),
            first_record: false,
        })
}

/// Whether `obj` is new to this controller: never reconciled (no status) and nothing
/// written for it in this process. Its Secret is then presumed absent and created
/// without reading first ([`create_presumed`]).
fn presumed_new(obj: &SealedStorageCred, ctx: &Context, uid: &str) -> bool {
    obj.status.is_none() && !ctx.data_digests.lock().unwrap().contains_key(uid)
}

/// Brings the Secret in line with the object. Plaintext lives in `Opened` and in
/// the `Wiped` Secret only for the duration of the write.
///
/// A new object ([`presumed_new`]) costs one KMS call and the create (with its
/// `managedFields` patch), no read. If a Secret of that name exists after all,
/// nothing was written; the plaintext is dropped and the checked way below runs (its
/// GET, and a second KMS call if the Secret must change).
pub(crate) async fn sync_secret(
    obj: &SealedStorageCred,
    ctx: &Context,
    namespace: &str,
    uid: &str,
    secret_name: &str,
) -> Result<Outcome> {
    check_type(obj, ctx)?;
    let digest = spec_digest(obj, namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    // Restarts asked for this Secret: it must carry a restart digest to be up to date.
    let asked = ctx
        .workloads
        .as_ref()
        .is_some_and(|w| w.any_naming(namespace, secret_name));
    if presumed_new(obj, ctx, uid) {
        let (mut desired, written_digest, restart) =
            unseal(obj, ctx, namespace, uid, secret_name, &digest, asked, false).await?;
        let created = create_presumed(&secrets, &mut desired, uid, &ctx.own_writes).await;
        drop(desired);
        if created? {
            return Ok(written(ctx, uid, written_digest, true, restart));
        }
        debug!(secret = %secret_name, "the Secret of a new object exists: checking it");
    }
    let existing = secrets
        .get_opt(secret_name)
        .await
        .map_err(Error::Kube)?
        .map(Wiped);
    let checked = Checked::of(existing.as_ref().map(|e| &e.0), uid, secret_name)?;
    let recorded = recorded_restart(existing.as_ref().map(|e| &e.0));
    let had_digest = matches!(recorded, Restart::Digest { .. });
    if let (Some(existing), Checked::Owned(_)) = (&existing, &checked)
        && up_to_date(&existing.0, obj, &digest)
        && (had_digest || !asked)
    {
        let data = existing.0.data.as_ref();
        let now = data_digest(data.into_iter().flatten().map(|(k, v)| (k, v.0.as_slice())));
        let mut digests = ctx.data_digests.lock().unwrap();
        match digests.get(uid) {
            Some(known) if *known == now => return Ok(Outcome::Unchanged { restart: recorded }),
            // First sight since start: trust the spec digest (no KMS call).
            None => {
                digests.insert(uid.to_string(), now);
                return Ok(Outcome::Unchanged { restart: recorded });
            }
            Some(_) => info!("the Secret's data was changed outside the controller; restoring"),
        }
    }
    let before = existing.as_ref().map(|e| {
        let data = e.0.data.as_ref();
        data_digest(data.into_iter().flatten().map(|(k, v)| (k, v.0.as_slice())))
    });
    drop(existing);

    let first_record = !had_digest && before.is_some();
    let (mut desired, written_digest, restart) = unseal(
        obj,
        ctx,
        namespace,
        uid,
        secret_name,
        &digest,
        asked,
        first_record,
    )
    .await?;
    let result = write(&secrets, &mut desired, checked, uid, &ctx.own_writes).await;
    drop(desired);
    result?;
    Ok(written(
        ctx,
        uid,
        written_digest,
        before != Some(written_digest),
        restart,
    ))
}

/// A write that landed: its data digest becomes the one drift is checked against.
fn written(
    ctx: &Context,
    uid: &str,
    digest: [u8; 32],
    content_changed: bool,
    restart: Restart,
) -> Outcome {
    ctx.data_digests
        .lock()
        .unwrap()
        .insert(uid.to_string(), digest);
    Outcome::Written {
        content_changed,
        restart,
    }
}

/// Opens the object (the KMS call) into the Secret to write, with the digest of its
/// data and, where a workload asks for restarts (`asked`), its restart digest.
#[allow(clippy::too_many_arguments)]
async fn unseal(
    obj: &SealedStorageCred,
    ctx: &Context,
    namespace: &str,
    uid: &str,
    secret_name: &str,
    digest: &str,
    asked: bool,
    first_record: bool,
) -> Result<(Wiped, [u8; 32], Restart)> {
    let mut audit = Unseal::new(obj, namespace, uid);
    let opened = seal::open_observed(obj, &ctx.keyring, &mut |c| audit.record(c)).await;
    audit.finish(match &opened {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    });
    let opened = opened.map_err(Error::Unseal)?;
    let written_digest = data_digest(
        opened
            .entries
            .iter()
            .map(|(k, v): (&String, &SecretBytes)| (k, v.expose())),
    );
    // The keyed digest of the values, only where a workload asks for restarts.
    let restart = if asked {
        match ctx.digest_keys.key(namespace).await {
            Ok(key) => Restart::Digest {
                digest: restart_digest(
                    &key,
                    namespace,
                    secret_name,
                    opened
                        .entries
                        .iter()
                        .map(|(k, v): (&String, &SecretBytes)| (k, v.expose())),
                ),
                first_record,
            },
            Err(e) => Restart::KeyFailed(e),
        }
    } else {
        Restart::NotAsked
    };
    let mut annotations = secret_annotations(obj, digest);
    if let Restart::Digest { digest: d, .. } = &restart {
        annotations.insert(RESTART_DIGEST_ANNOTATION.into(), d.clone());
    }
    let owner = obj
        .controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidObject("no uid".into()))?;
    // The one place plaintext becomes a k8s-openapi ByteString: exact-size copies,
    // wiped (with the whole Secret) when the returned `Wiped` drops right after the write.
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
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some(opened.template.type_.clone()),
        data: Some(data),
        ..Secret::default()
    });
    drop(opened);
    Ok((desired, written_digest, restart))
}

#[cfg(test)]
mod tests {
    use super::*;

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
