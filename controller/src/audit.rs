//! The audit trail: one structured log line per unseal.
//!
//! Every time the controller unseals an object (a reconcile that calls KMS), it
//! writes one line with target [`TARGET`] (`sealcred::audit`), at level INFO, in the
//! controller's JSON log. Its fields (under `fields` in the JSON line):
//!
//! | field | what |
//! |---|---|
//! | `audit` | `"unseal"` |
//! | `namespace`, `name`, `uid`, `generation` | the object |
//! | `result` | `ok`, or the `Ready=False` reason (`KmsUnavailable`, `DecryptFailed`, …) |
//! | `kms_key_arn` | the key ids called, in call order, comma-separated (one for an object whose data key's first wrapping worked; a `local:` id for a local key) |
//! | `kms_request_id` | the KMS request id of each call, same order (empty where the service returned none) |
//! | `kms_results` | each call's outcome, same order (`ok`, `unavailable`, `access-denied`, …) |
//! | `kms_calls` | how many calls |
//! | `encryption_context` | the EncryptionContext, as a JSON object (scope, namespace and name as bound: names, not secrets) |
//!
//! A line never holds a value, a data key or a ciphertext. `kms_request_id` is the
//! `requestID` of the matching CloudTrail `Decrypt` event, and `encryption_context`
//! its `requestParameters.encryptionContext` (docs/operations.md, "Audit trail").

use sealcred_shared::crd::SealedStorageCred;
use sealcred_shared::format::Binding;
use sealcred_shared::keyring::UnwrapCall;
use sealcred_shared::provider::ProviderErrorKind;

/// The `tracing` target of audit lines.
pub const TARGET: &str = "sealcred::audit";

struct Call {
    key_id: String,
    request_id: Option<String>,
    result: &'static str,
}

fn kind_label(kind: &ProviderErrorKind) -> &'static str {
    match kind {
        ProviderErrorKind::AccessDenied => "access-denied",
        ProviderErrorKind::KeyDisabled => "key-disabled",
        ProviderErrorKind::KeyPendingDeletion => "key-pending-deletion",
        ProviderErrorKind::KeyInvalidState => "key-invalid-state",
        ProviderErrorKind::Unavailable => "unavailable",
        ProviderErrorKind::InvalidCiphertext => "invalid-ciphertext",
        ProviderErrorKind::NotFound => "not-found",
        ProviderErrorKind::KeyNotAllowed => "key-not-allowed",
        ProviderErrorKind::Other => "error",
    }
}

/// One unseal being recorded: feed it every key-provider call
/// ([`Unseal::record`]), then [`Unseal::finish`] with the outcome.
pub(crate) struct Unseal<'a> {
    obj: &'a SealedStorageCred,
    namespace: &'a str,
    uid: &'a str,
    calls: Vec<Call>,
}

impl<'a> Unseal<'a> {
    pub(crate) fn new(obj: &'a SealedStorageCred, namespace: &'a str, uid: &'a str) -> Self {
        Unseal {
            obj,
            namespace,
            uid,
            calls: Vec::new(),
        }
    }

    /// Records one call (names and ids only).
    pub(crate) fn record(&mut self, call: &UnwrapCall<'_>) {
        self.calls.push(Call {
            key_id: call.key_id.to_string(),
            request_id: call.request_id.map(str::to_string),
            result: match call.result {
                Ok(()) => "ok",
                Err(k) => kind_label(k),
            },
        });
    }

    /// Writes the one audit line of this unseal; `result` is `ok` or the reason.
    pub(crate) fn finish(self, result: &str) {
        let name = self.obj.metadata.name.as_deref().unwrap_or_default();
        let context = Binding::new(self.obj.spec.scope, Some(self.namespace), Some(name))
            .map(|b| b.encryption_context())
            .unwrap_or_default();
        let context = serde_json::to_string(&context).unwrap_or_default();
        let join =
            |f: &dyn Fn(&Call) -> &str| self.calls.iter().map(f).collect::<Vec<_>>().join(",");
        tracing::info!(
            target: TARGET,
            audit = "unseal",
            namespace = self.namespace,
            name,
            uid = self.uid,
            generation = self.obj.metadata.generation.unwrap_or_default(),
            result,
            kms_key_arn = join(&|c| c.key_id.as_str()),
            kms_request_id = join(&|c| c.request_id.as_deref().unwrap_or("")),
            kms_results = join(&|c| c.result),
            kms_calls = self.calls.len(),
            encryption_context = context,
            "unseal"
        );
    }
}

/// Adds `sealcred::audit=info` to a log filter that does not name the audit
/// target, so `RUST_LOG=warn` still keeps the audit trail (`sealcred::audit=off`
/// turns it off).
pub fn filter_directive(rust_log: Option<&str>) -> Option<&'static str> {
    match rust_log {
        Some(f) if f.contains(TARGET) => None,
        _ => Some("sealcred::audit=info"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_target_stays_on_unless_named() {
        assert_eq!(filter_directive(None), Some("sealcred::audit=info"));
        assert_eq!(filter_directive(Some("warn")), Some("sealcred::audit=info"));
        assert_eq!(filter_directive(Some("warn,sealcred::audit=off")), None);
    }
}
