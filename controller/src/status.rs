//! What an object reports: its Ready condition (written by server-side apply on the
//! status subresource) and its Events.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use sealcred_shared::crd::{Condition, SealedStorageCred, SealedStorageCredStatus};
use serde_json::json;

use crate::context::Context;
use crate::{Error, FIELD_MANAGER, Result};

/// Whether a failed reconcile will be retried until it fixes itself
/// (`Reconciling`), or needs someone to act (`Stalled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Unsealed, Secret written: `Ready=True` only.
    Ready,
    /// `Ready=False` and `Reconciling=True` (kstatus: InProgress).
    Transient,
    /// `Ready=False` and `Stalled=True` (kstatus: Failed).
    Permanent,
}

fn condition(
    prev: Option<&SealedStorageCredStatus>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let last_transition_time = prev
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| {
            jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map(|t| t.to_string())
                .unwrap_or_default()
        });
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time,
        observed_generation: generation,
    }
}

/// The conditions of an object, following kstatus' conventions
/// (sigs.k8s.io/cli-utils, what Flux reads): `Ready` always; `Reconciling=True`
/// beside a transient failure and `Stalled=True` beside a permanent one, each with
/// the same reason and message; neither (absent, as kstatus' "abnormal-true"
/// conditions should be) when Ready.
pub(crate) fn conditions(
    prev: Option<&SealedStorageCredStatus>,
    health: Health,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    let ready = if health == Health::Ready {
        "True"
    } else {
        "False"
    };
    let mut out = vec![condition(prev, "Ready", ready, reason, message, generation)];
    match health {
        Health::Ready => {}
        Health::Transient => out.push(condition(
            prev,
            "Reconciling",
            "True",
            reason,
            message,
            generation,
        )),
        Health::Permanent => out.push(condition(
            prev, "Stalled", "True", reason, message, generation,
        )),
    }
    out
}

/// The `ConsumersUpdated` condition (see [`crate::consumers::summarize`]).
pub(crate) fn consumers_condition(
    prev: Option<&SealedStorageCredStatus>,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    condition(
        prev,
        "ConsumersUpdated",
        status,
        reason,
        message,
        generation,
    )
}

/// Writes the status with server-side apply on the status subresource, unless
/// it is already what it should be (so status writes do not loop).
pub(crate) async fn write_status(
    obj: &SealedStorageCred,
    ctx: &Context,
    status: SealedStorageCredStatus,
) -> Result<()> {
    if obj.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<SealedStorageCred> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": SealedStorageCred::api_version(&()),
        "kind": SealedStorageCred::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

pub(crate) async fn publish(
    ctx: &Context,
    obj: &SealedStorageCred,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let mut note = note;
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Unseal".into(),
        secondary: None,
    };
    ctx.recorder.send(ev, obj.object_ref(&()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kstatus_conditions_beside_ready() {
        let types = |h| {
            conditions(None, h, "R", "m", Some(2))
                .into_iter()
                .map(|c| (c.type_, c.status))
                .collect::<Vec<_>>()
        };
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(types(Health::Ready), [s("Ready", "True")]);
        assert_eq!(
            types(Health::Transient),
            [s("Ready", "False"), s("Reconciling", "True")]
        );
        assert_eq!(
            types(Health::Permanent),
            [s("Ready", "False"), s("Stalled", "True")]
        );
        // The transition time of an unchanged condition is kept.
        let mut prev = SealedStorageCredStatus {
            conditions: conditions(None, Health::Permanent, "R", "m", Some(1)),
            ..Default::default()
        };
        for c in &mut prev.conditions {
            c.last_transition_time = "2020-01-01T00:00:00Z".into();
        }
        let next = conditions(Some(&prev), Health::Permanent, "R2", "m2", Some(2));
        assert!(
            next.iter()
                .all(|c| c.last_transition_time == "2020-01-01T00:00:00Z")
        );
    }
}
