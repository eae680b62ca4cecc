//! What an object reports: its Ready condition (written by server-side apply on the
//! status subresource) and its Events.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use sealcred_shared::crd::{Condition, SealedStorageCred, SealedStorageCredStatus};
use serde_json::json;
use tracing::warn;

use crate::context::Context;
use crate::{Error, FIELD_MANAGER, Result};

pub(crate) fn ready_condition(
    prev: Option<&SealedStorageCredStatus>,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = prev
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| {
            jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map(|t| t.to_string())
                .unwrap_or_default()
        });
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
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
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        warn!(error = %e, "publishing an event failed");
    }
}
