//! A Secret write the API server refused, made visible (issue 17.7).
//!
//! An API error on the Secret write that retrying alone will not fix becomes
//! [`Error::SecretWrite`]: `Ready=False` with one of [`REFUSAL_REASONS`],
//! `Stalled=True`, a Warning Event, and a retry with exponential backoff (the fix —
//! a RoleBinding, a policy, a quota — is made outside anything the controller
//! watches, so only a retry notices it). Anything else (5xx, 429, a timeout) stays a
//! transient [`Error::Kube`].
//!
//! The message names the HTTP code, the API's reason and what it said, with every
//! value the write carried redacted: an admission policy's `messageExpression` or
//! a webhook may echo the object it refused.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use zeroize::Zeroizing;

use crate::Error;

/// RBAC refused the write (403 without an admission or quota message).
pub const FORBIDDEN: &str = "SecretWriteForbidden";
/// A ValidatingAdmissionPolicy or an admission webhook denied it.
pub const ADMISSION_DENIED: &str = "AdmissionDenied";
/// A ResourceQuota (e.g. `count/secrets`) refused a new Secret.
pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
/// The write would change a field the API server does not let change (the `type`
/// of an existing Secret, or anything of a Secret marked `immutable: true`).
pub const IMMUTABLE_FIELD: &str = "SecretImmutableField";
/// Any other validation refusal (400, 413, 422).
pub const REJECTED: &str = "SecretWriteRejected";

/// Every Ready=False reason of a refused Secret write.
pub const REFUSAL_REASONS: [&str; 5] = [
    FORBIDDEN,
    ADMISSION_DENIED,
    QUOTA_EXCEEDED,
    IMMUTABLE_FIELD,
    REJECTED,
];

/// The Ready=False reason for an API error of `code` saying `message`, or `None`
/// when the error is not a refusal (retry it as a transient error).
pub fn classify(code: u16, message: &str) -> Option<&'static str> {
    let admission =
        message.contains("ValidatingAdmissionPolicy") || message.contains("admission webhook");
    Some(match code {
        400 | 403 | 422 if admission => ADMISSION_DENIED,
        403 if message.contains("exceeded quota")
            || message.contains("status unknown for quota") =>
        {
            QUOTA_EXCEEDED
        }
        403 => FORBIDDEN,
        422 if message.contains("field is immutable") => IMMUTABLE_FIELD,
        400 | 413 | 422 => REJECTED,
        _ => return None,
    })
}

fn hint(reason: &str) -> &'static str {
    match reason {
        FORBIDDEN => {
            "grant the controller's identity create and patch on secrets in this namespace"
        }
        ADMISSION_DENIED => "the policy or webhook named above must allow the write",
        QUOTA_EXCEEDED => "raise the namespace's ResourceQuota or remove Secrets",
        IMMUTABLE_FIELD => {
            "delete the Secret to let the controller create it anew (the last one stays until then), or seal the old type again"
        }
        _ => "the object's template must produce a valid Secret",
    }
}

/// Replaces every occurrence of a value of `data` (as UTF-8 and as base64) in
/// `text` with `[redacted]`.
pub fn redact(text: &str, data: Option<&BTreeMap<String, ByteString>>) -> String {
    let mut out = Zeroizing::new(text.to_string());
    for v in data.into_iter().flat_map(|d| d.values()) {
        if v.0.is_empty() {
            continue;
        }
        let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&v.0));
        let forms = [std::str::from_utf8(&v.0).ok(), Some(b64.as_str())];
        for form in forms.into_iter().flatten() {
            if out.contains(form) {
                out = Zeroizing::new(str::replace(&out, form, "[redacted]"));
            }
        }
    }
    out.to_string()
}

/// The controller error for a failed write of Secret `name` carrying `data`.
pub(crate) fn refusal(
    name: &str,
    e: kube::Error,
    data: Option<&BTreeMap<String, ByteString>>,
) -> Error {
    let kube::Error::Api(s) = &e else {
        return Error::Kube(e);
    };
    let Some(reason) = classify(s.code, &s.message) else {
        return Error::Kube(e);
    };
    Error::SecretWrite {
        reason,
        message: format!(
            "the API server refused to write Secret {name}: HTTP {} {}: {}; {}",
            s.code,
            s.reason,
            redact(&s.message, data),
            hint(reason)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_classified() {
        let cases = [
            (
                403,
                "secrets \"db\" is forbidden: User \"system:serviceaccount:n:c\" cannot patch resource \"secrets\"",
                Some(FORBIDDEN),
            ),
            (
                403,
                "secrets \"db\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: no",
                Some(ADMISSION_DENIED),
            ),
            (
                422,
                "secrets \"db\" is invalid: : ValidatingAdmissionPolicy 'p' with binding 'b' denied request",
                Some(ADMISSION_DENIED),
            ),
            (
                400,
                "admission webhook \"w.example\" denied the request: no",
                Some(ADMISSION_DENIED),
            ),
            (
                403,
                "secrets \"db\" is forbidden: exceeded quota: q, requested: secrets=1, used: secrets=1, limited: secrets=1",
                Some(QUOTA_EXCEEDED),
            ),
            (
                422,
                "Secret \"db\" is invalid: type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable",
                Some(IMMUTABLE_FIELD),
            ),
            (
                422,
                "Secret \"db\" is invalid: data[a b]: Invalid value: \"a b\": a valid config key",
                Some(REJECTED),
            ),
            (409, "the object has been modified", None),
            (500, "etcdserver: request timed out", None),
            (429, "too many requests", None),
        ];
        for (code, message, want) in cases {
            assert_eq!(classify(code, message), want, "{code} {message}");
        }
    }

    #[test]
    fn a_refusal_is_permanent_but_backs_off() {
        let e = Error::SecretWrite {
            reason: FORBIDDEN,
            message: "m".into(),
        };
        assert!(!e.is_transient(), "Stalled, not Reconciling");
        assert!(e.backs_off(), "retried with the exponential backoff");
        assert_eq!(e.reason(), FORBIDDEN);
        assert!(REFUSAL_REASONS.contains(&e.reason()));
    }

    #[test]
    fn values_are_redacted_raw_and_base64() {
        let data = BTreeMap::from([
            ("k".to_string(), ByteString(b"canary-value".to_vec())),
            ("e".to_string(), ByteString(Vec::new())),
        ]);
        let out = redact(
            "denied: canary-value (Y2FuYXJ5LXZhbHVl) and more",
            Some(&data),
        );
        assert_eq!(out, "denied: [redacted] ([redacted]) and more");
    }
}
