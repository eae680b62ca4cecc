//! Short-lived credentials from AWS STS (`spec.sts`, issue 16.1).
//!
//! For an object with `spec.sts`, the Secret holds temporary credentials instead of
//! the sealed entries:
//! - the sealed entries `aws_access_key_id` / `aws_secret_access_key`, when present,
//!   are the long-lived key STS is called with. They are unsealed into zeroizing
//!   memory for the call and never written to the Secret (nor to etcd, status,
//!   Events or logs). Without them the controller's own identity calls STS.
//! - `roleArn` set: AssumeRole (the ARN must be on `--sts-role-allow`), else
//!   GetSessionToken (needs a sealed key: an IAM user's).
//! - Checks before any call: the role is allowed, the duration is within STS's
//!   limits (900..=43200 s for AssumeRole, 900..=129600 s for GetSessionToken),
//!   `refreshAt` is in (0, 1), the profile can carry a session token
//!   (`aws-env`, or none: the Secret has the aws-env keys). A failure is `Ready=False` with
//!   `StsRoleNotAllowed` / `StsInvalidSpec`, and no KMS or STS call.
//! - The Secret carries the credentials' issue and expiry times (annotations
//!   `sealcred.io/sts-issued-at`, `sealcred.io/sts-expires-at`; times only) and the
//!   status mirrors them (`status.credentials`). The object is requeued for its
//!   refresh time: `issuedAt + refreshAt × lifetime`, at least `--sts-min-refresh`
//!   after the issue.
//! - STS unreachable at refresh time: the current Secret stays while its
//!   credentials are valid (`Ready=False StsUnavailable`, naming the expiry;
//!   retried with backoff); once they expired, `Ready=False CredentialsExpired`
//!   (the Secret is not deleted: it holds expired credentials only).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::Region;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::RequestId;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta};
use kube::{Resource, ResourceExt};
use sealcred_shared::crd::{
    CredentialsStatus, STS_MAX_ASSUME_ROLE_DURATION, STS_MAX_SESSION_TOKEN_DURATION,
    STS_MIN_DURATION, SealedStorageCred, StsSpec,
};
use sealcred_shared::keyring::Allowlist;
use sealcred_shared::seal;
use sealcred_shared::secret::SecretBytes;
use zeroize::Zeroize;

use crate::annotations::{RESTART_DIGEST_ANNOTATION, SPEC_DIGEST_ANNOTATION};
use crate::audit::{TARGET as AUDIT, Unseal};
use crate::context::Context;
use crate::digest::restart_digest;
use crate::materialize::{
    Outcome, Restart, Wiped, check_type, is_subset, recorded_restart, secret_annotations,
    secret_labels, spec_digest,
};
use crate::options::Options;
use crate::write::{Checked, write};
use crate::{Error, Result};

/// Annotation on the Secret: when STS issued the credentials (RFC 3339).
pub const ISSUED_AT_ANNOTATION: &str = "sealcred.io/sts-issued-at";
/// Annotation on the Secret: when the credentials expire (RFC 3339).
pub const EXPIRES_AT_ANNOTATION: &str = "sealcred.io/sts-expires-at";
/// The sealed entry holding the long-lived access key id.
pub const SOURCE_KEY_ID: &str = "aws_access_key_id";
/// The sealed entry holding the long-lived secret access key.
pub const SOURCE_SECRET: &str = "aws_secret_access_key";

const DEFAULT_DURATION: i32 = 3600;
const DEFAULT_REFRESH_AT: f64 = 0.5;

/// The controller's STS settings (flags).
pub struct StsConfig {
    allow: Allowlist,
    endpoint: Option<String>,
    min_refresh: Duration,
}

impl StsConfig {
    /// From `--sts-role-allow`, `--sts-endpoint`, `--sts-min-refresh`.
    pub fn from_options(o: &Options) -> Result<StsConfig> {
        Ok(StsConfig {
            allow: o.sts_role_allowlist()?,
            endpoint: o.sts_endpoint.clone(),
            min_refresh: Duration::from_secs(o.sts_min_refresh_secs),
        })
    }
}

fn invalid(message: String) -> Error {
    Error::Sts {
        reason: "StsInvalidSpec",
        message,
        transient: false,
    }
}

/// What to ask STS for, checked.
#[derive(Debug, PartialEq)]
pub(crate) struct Plan {
    pub(crate) role_arn: Option<String>,
    pub(crate) duration: i32,
    pub(crate) refresh_at: f64,
}

/// Checks `spec` against the allowlist and STS's limits, with no call made.
pub(crate) fn plan(
    spec: &StsSpec,
    profile: Option<&str>,
    allow: &Allowlist,
    has_source_key: bool,
) -> Result<Plan> {
    let duration = spec.duration_seconds.unwrap_or(DEFAULT_DURATION);
    let max = match &spec.role_arn {
        Some(_) => STS_MAX_ASSUME_ROLE_DURATION,
        None => STS_MAX_SESSION_TOKEN_DURATION,
    };
    if !(STS_MIN_DURATION..=max).contains(&duration) {
        return Err(invalid(format!(
            "spec.sts.durationSeconds {duration} is outside STS's limits ({STS_MIN_DURATION}..={max} for {})",
            if spec.role_arn.is_some() {
                "AssumeRole"
            } else {
                "GetSessionToken"
            }
        )));
    }
    let refresh_at = spec.refresh_at.unwrap_or(DEFAULT_REFRESH_AT);
    if !(refresh_at > 0.0 && refresh_at < 1.0) {
        return Err(invalid(format!(
            "spec.sts.refreshAt {refresh_at} must be a fraction of the lifetime, between 0 and 1"
        )));
    }
    match profile {
        None | Some("aws-env") => {}
        Some(p) => {
            return Err(invalid(format!(
                "profile {p} has no field for a session token; spec.sts renders the aws-env profile (for Flyte: auth-type iam plus these variables, docs/flyte.md)"
            )));
        }
    }
    match &spec.role_arn {
        Some(arn) if !allow.allows(arn) => Err(Error::Sts {
            reason: "StsRoleNotAllowed",
            message: format!(
                "role {arn} is not on this controller's --sts-role-allow list; no STS call was made"
            ),
            transient: false,
        }),
        None if !has_source_key => Err(invalid(format!(
            "spec.sts without roleArn calls GetSessionToken, which needs the sealed entries {SOURCE_KEY_ID} and {SOURCE_SECRET} (an IAM user's key)"
        ))),
        _ => Ok(Plan {
            role_arn: spec.role_arn.clone(),
            duration,
            refresh_at,
        }),
    }
}

/// When to refresh credentials issued at `issued` and expiring at `expires`.
pub(crate) fn refresh_time(
    issued: jiff::Timestamp,
    expires: jiff::Timestamp,
    fraction: f64,
    min: Duration,
) -> jiff::Timestamp {
    let life = expires.duration_since(issued).as_secs_f64().max(0.0);
    let after = (life * fraction).max(min.as_secs_f64()).min(life);
    issued
        .checked_add(jiff::SignedDuration::from_secs_f64(after))
        .unwrap_or(expires)
}

fn ts(t: jiff::Timestamp) -> String {
    t.round(jiff::Unit::Second).unwrap_or(t).to_string()
}

fn credentials_status(
    issued: jiff::Timestamp,
    expires: jiff::Timestamp,
    plan: &Plan,
    cfg: &StsConfig,
) -> CredentialsStatus {
    CredentialsStatus {
        issued_at: ts(issued),
        expires_at: ts(expires),
        refresh_at: ts(refresh_time(
            issued,
            expires,
            plan.refresh_at,
            cfg.min_refresh,
        )),
    }
}

/// What a successful STS reconcile did, and when to come back.
pub(crate) struct Synced {
    pub(crate) outcome: Outcome,
    pub(crate) credentials: CredentialsStatus,
    pub(crate) requeue: Duration,
}

fn until(t: jiff::Timestamp) -> Duration {
    let d = t.duration_since(jiff::Timestamp::now());
    Duration::from_secs_f64(d.as_secs_f64().max(0.0)) + Duration::from_millis(100)
}

fn annotation_time(secret: &Secret, key: &str) -> Option<jiff::Timestamp> {
    secret.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// Temporary credentials, in zeroizing buffers.
struct Temporary {
    access_key_id: SecretBytes,
    secret_access_key: SecretBytes,
    session_token: SecretBytes,
    expires: jiff::Timestamp,
}

fn take(s: &mut String) -> SecretBytes {
    let b = SecretBytes::copy_from(s.as_bytes());
    s.zeroize();
    b
}

fn sts_error<E, R>(op: &str, what: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (transient, detail) = match &err {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("UnknownError").to_string();
            let transient = matches!(
                code.as_str(),
                "Throttling" | "ThrottlingException" | "ServiceUnavailable" | "InternalFailure"
            );
            let msg = s.err().message().unwrap_or("").to_string();
            (transient, format!("{code}: {msg}"))
        }
        SdkError::TimeoutError(_) => (true, "timed out".into()),
        SdkError::DispatchFailure(_) => (true, "connection failed".into()),
        SdkError::ResponseError(_) => (true, "unexpected response".into()),
        _ => (false, "request could not be built".into()),
    };
    Error::Sts {
        reason: if transient {
            "StsUnavailable"
        } else {
            "StsError"
        },
        message: format!("STS {op} {what} failed: {detail}"),
        transient,
    }
}

/// Calls STS. `source` is the sealed long-lived key, if any.
async fn call_sts(
    obj: &SealedStorageCred,
    ctx: &Context,
    namespace: &str,
    plan: &Plan,
    source: Option<(&SecretBytes, &SecretBytes)>,
) -> Result<Temporary> {
    let spec = obj.spec.sts.as_ref().expect("called for spec.sts");
    let sdk = ctx.keyring.sdk_config().await;
    let mut b = aws_sdk_sts::config::Builder::from(sdk);
    if let Some(r) = &spec.region {
        b = b.region(Region::new(r.clone()));
    }
    if let Some(url) = &ctx.sts.endpoint {
        b = b.endpoint_url(url);
    }
    if let Some((id, secret)) = source {
        let text = |v: &SecretBytes, what: &str| {
            std::str::from_utf8(v.expose())
                .map(str::to_string)
                .map_err(|_| invalid(format!("the sealed entry {what} is not UTF-8")))
        };
        // aws-credential-types keeps both in Zeroizing<String>.
        b = b.credentials_provider(aws_sdk_sts::config::Credentials::new(
            text(id, SOURCE_KEY_ID)?,
            text(secret, SOURCE_SECRET)?,
            None,
            None,
            "sealcred-sealed-key",
        ));
    }
    let client = aws_sdk_sts::Client::from_conf(b.build());
    let (op, what) = match &plan.role_arn {
        Some(arn) => ("AssumeRole", format!("for role {arn}")),
        None => ("GetSessionToken", String::new()),
    };
    let (creds, request_id) = match &plan.role_arn {
        Some(arn) => {
            let session = spec.session_name.clone().unwrap_or_else(|| {
                let mut n = format!("sealcred-{namespace}-{}", obj.name_any());
                n.truncate(64);
                n
            });
            let sent = client
                .assume_role()
                .role_arn(arn)
                .role_session_name(session)
                .set_external_id(spec.external_id.clone())
                .set_policy(spec.policy.clone())
                .duration_seconds(plan.duration)
                .send()
                .await;
            let rid = match &sent {
                Ok(o) => o.request_id(),
                Err(e) => e.request_id(),
            }
            .map(str::to_string);
            audit_sts(obj, namespace, op, &what, sent.is_ok(), rid.as_deref());
            let out = sent.map_err(|e| sts_error(op, &what, e))?;
            (out.credentials, rid)
        }
        None => {
            let sent = client
                .get_session_token()
                .duration_seconds(plan.duration)
                .send()
                .await;
            let rid = match &sent {
                Ok(o) => o.request_id(),
                Err(e) => e.request_id(),
            }
            .map(str::to_string);
            audit_sts(obj, namespace, op, &what, sent.is_ok(), rid.as_deref());
            let out = sent.map_err(|e| sts_error(op, &what, e))?;
            (out.credentials, rid)
        }
    };
    let _ = request_id;
    let mut c = creds.ok_or_else(|| Error::Sts {
        reason: "StsError",
        message: format!("STS {op} {what} returned no credentials"),
        transient: true,
    })?;
    let expires = jiff::Timestamp::from_second(c.expiration.secs()).map_err(|_| Error::Sts {
        reason: "StsError",
        message: format!("STS {op} {what} returned an unreadable expiry"),
        transient: true,
    })?;
    Ok(Temporary {
        access_key_id: take(&mut c.access_key_id),
        secret_access_key: take(&mut c.secret_access_key),
        session_token: take(&mut c.session_token),
        expires,
    })
}

fn audit_sts(
    obj: &SealedStorageCred,
    namespace: &str,
    op: &str,
    what: &str,
    ok: bool,
    request_id: Option<&str>,
) {
    tracing::info!(
        target: AUDIT,
        audit = "sts",
        namespace,
        name = obj.name_any(),
        uid = obj.uid().unwrap_or_default(),
        operation = op,
        role_arn = obj.spec.sts.as_ref().and_then(|s| s.role_arn.as_deref()).unwrap_or(""),
        result = if ok { "ok" } else { "error" },
        sts_request_id = request_id.unwrap_or(""),
        "{op} {what}"
    );
}

/// The Secret's entries for `t`, through the object's profile.
fn render(obj: &SealedStorageCred, t: &Temporary) -> BTreeMap<String, ByteString> {
    let region = obj.spec.sts.as_ref().and_then(|s| s.region.clone());
    let mut out = BTreeMap::new();
    let mut put = |k: &str, v: &[u8]| {
        out.insert(k.to_string(), ByteString(v.to_vec()));
    };
    put("AWS_ACCESS_KEY_ID", t.access_key_id.expose());
    put("AWS_SECRET_ACCESS_KEY", t.secret_access_key.expose());
    put("AWS_SESSION_TOKEN", t.session_token.expose());
    if let Some(r) = &region {
        put("AWS_REGION", r.as_bytes());
    }
    out
}

/// The entry names an STS object's Secret holds.
pub(crate) fn entry_names(obj: &SealedStorageCred) -> Vec<String> {
    let mut n = vec![
        "AWS_ACCESS_KEY_ID".to_string(),
        "AWS_SECRET_ACCESS_KEY".to_string(),
        "AWS_SESSION_TOKEN".to_string(),
    ];
    if obj.spec.sts.as_ref().is_some_and(|s| s.region.is_some()) {
        n.push("AWS_REGION".into());
    }
    n.sort();
    n
}

/// Brings an STS object's Secret in line: refreshes the credentials when they
/// are due (or the object changed), else leaves the Secret alone.
pub(crate) async fn sync(
    obj: &SealedStorageCred,
    ctx: &Context,
    namespace: &str,
    uid: &str,
    secret_name: &str,
) -> Result<Synced> {
    let spec = obj.spec.sts.as_ref().expect("called for spec.sts");
    check_type(obj, ctx)?;
    let has_source = obj.spec.entries.contains_key(SOURCE_KEY_ID)
        && obj.spec.entries.contains_key(SOURCE_SECRET);
    let plan = plan(
        spec,
        obj.spec.profile.as_deref(),
        &ctx.sts.allow,
        has_source,
    )?;
    let digest = spec_digest(obj, namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let existing = secrets
        .get_opt(secret_name)
        .await
        .map_err(Error::Kube)?
        .map(Wiped);
    let checked = Checked::of(existing.as_ref().map(|e| &e.0), uid, secret_name)?;
    let now = jiff::Timestamp::now();
    // The current credentials' lifetime, if the Secret is ours and holds some.
    let current = match (&existing, &checked) {
        (Some(e), Checked::Owned(_)) => annotation_time(&e.0, ISSUED_AT_ANNOTATION)
            .zip(annotation_time(&e.0, EXPIRES_AT_ANNOTATION)),
        _ => None,
    };
    let recorded = recorded_restart(existing.as_ref().map(|e| &e.0));
    let had_digest = matches!(recorded, Restart::Digest { .. });
    let asked = ctx
        .workloads
        .as_ref()
        .is_some_and(|w| w.any_naming(namespace, secret_name));
    if let (Some(e), Some((issued, expires))) = (&existing, current) {
        let keys_match =
            e.0.data
                .as_ref()
                .is_some_and(|d| d.keys().cloned().eq(entry_names(obj)));
        let fresh = keys_match
            && is_subset(
                &secret_annotations(obj, &digest),
                e.0.metadata.annotations.as_ref(),
            )
            && is_subset(&secret_labels(obj), e.0.metadata.labels.as_ref());
        let refresh = refresh_time(issued, expires, plan.refresh_at, ctx.sts.min_refresh);
        if fresh && now < refresh && (had_digest || !asked) {
            return Ok(Synced {
                outcome: Outcome::Unchanged { restart: recorded },
                credentials: credentials_status(issued, expires, &plan, &ctx.sts),
                requeue: until(refresh),
            });
        }
    }
    let existed = existing.is_some();
    drop(existing);

    let result = mint(obj, ctx, namespace, uid, &plan, has_source).await;
    let t = match result {
        Ok(t) => t,
        Err(e) => {
            return Err(match current {
                Some((_, expires)) if e.is_transient() && now < expires => Error::Sts {
                    reason: e.reason(),
                    message: format!(
                        "{e}; the current credentials in Secret {secret_name} are kept until they expire at {}",
                        ts(expires)
                    ),
                    transient: true,
                },
                Some((_, expires)) if e.is_transient() => Error::Sts {
                    reason: "CredentialsExpired",
                    message: format!(
                        "{e}; the credentials in Secret {secret_name} expired at {}",
                        ts(expires)
                    ),
                    transient: true,
                },
                _ => e,
            });
        }
    };
    let issued = now;
    let owner = obj
        .controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidObject("no uid".into()))?;
    let mut annotations = secret_annotations(obj, &digest);
    annotations.insert(ISSUED_AT_ANNOTATION.into(), ts(issued));
    annotations.insert(EXPIRES_AT_ANNOTATION.into(), ts(t.expires));
    debug_assert!(annotations.contains_key(SPEC_DIGEST_ANNOTATION));
    let data = render(obj, &t);
    // The keyed digest of the new values, where a workload asks for restarts
    // (every refresh is a new value: the workloads roll).
    let restart = if asked {
        match ctx.digest_keys.key(namespace).await {
            Ok(key) => Restart::Digest {
                digest: restart_digest(
                    &key,
                    namespace,
                    secret_name,
                    data.iter().map(|(k, v)| (k, v.0.as_slice())),
                ),
                first_record: !had_digest && existed,
            },
            Err(e) => Restart::KeyFailed(e),
        }
    } else {
        Restart::NotAsked
    };
    if let Restart::Digest { digest: d, .. } = &restart {
        annotations.insert(RESTART_DIGEST_ANNOTATION.into(), d.clone());
    }
    let mut desired = Wiped(Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(secret_labels(obj)),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some(obj.spec.template.type_.clone()),
        data: Some(data),
        ..Secret::default()
    });
    let expires = t.expires;
    drop(t);
    let written = write(&secrets, &mut desired, checked, uid, &ctx.own_writes).await;
    drop(desired);
    written?;
    let credentials = credentials_status(issued, expires, &plan, &ctx.sts);
    let refresh = refresh_time(issued, expires, plan.refresh_at, ctx.sts.min_refresh);
    Ok(Synced {
        outcome: Outcome::Written {
            content_changed: true,
            restart,
        },
        credentials,
        requeue: until(refresh),
    })
}

/// Unseals the source key (if any) and calls STS.
async fn mint(
    obj: &SealedStorageCred,
    ctx: &Context,
    namespace: &str,
    uid: &str,
    plan: &Plan,
    has_source: bool,
) -> Result<Temporary> {
    if !has_source {
        return call_sts(obj, ctx, namespace, plan, None).await;
    }
    let mut audit = Unseal::new(obj, namespace, uid);
    let opened = seal::open_observed(obj, &ctx.keyring, &mut |c| audit.record(c)).await;
    audit.finish(match &opened {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    });
    let opened = opened.map_err(Error::Unseal)?;
    let id = &opened.entries[SOURCE_KEY_ID];
    let secret = &opened.entries[SOURCE_SECRET];
    call_sts(obj, ctx, namespace, plan, Some((id, secret))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow() -> Allowlist {
        Allowlist::checked(["arn:aws:iam::111122223333:role/flyte/*".to_string()]).unwrap()
    }

    fn spec(role: Option<&str>, duration: Option<i32>) -> StsSpec {
        StsSpec {
            role_arn: role.map(str::to_string),
            duration_seconds: duration,
            ..StsSpec::default()
        }
    }

    #[test]
    fn plan_checks_role_duration_fraction_and_profile() {
        let ok = "arn:aws:iam::111122223333:role/flyte/storage";
        let p = plan(&spec(Some(ok), None), None, &allow(), false).unwrap();
        assert_eq!((p.duration, p.refresh_at), (3600, 0.5));
        let e = plan(
            &spec(Some("arn:aws:iam::111122223333:role/admin"), None),
            None,
            &allow(),
            true,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "StsRoleNotAllowed");
        assert!(!e.is_transient());
        for d in [899, 43_201] {
            let e = plan(&spec(Some(ok), Some(d)), None, &allow(), true).unwrap_err();
            assert_eq!(e.reason(), "StsInvalidSpec", "{d}");
            assert!(e.to_string().contains(&d.to_string()), "{e}");
        }
        for d in [900, 43_200] {
            plan(&spec(Some(ok), Some(d)), None, &allow(), true).unwrap();
        }
        // GetSessionToken: up to 36 h, and only with a sealed key.
        plan(&spec(None, Some(129_600)), None, &allow(), true).unwrap();
        assert!(plan(&spec(None, Some(129_601)), None, &allow(), true).is_err());
        assert_eq!(
            plan(&spec(None, None), None, &allow(), false)
                .unwrap_err()
                .reason(),
            "StsInvalidSpec"
        );
        for f in [0.0, 1.0, -0.5, f64::NAN] {
            let mut s = spec(Some(ok), None);
            s.refresh_at = Some(f);
            assert!(plan(&s, None, &allow(), true).is_err(), "{f}");
        }
        assert!(
            plan(
                &spec(Some(ok), None),
                Some("flyte-task-env"),
                &allow(),
                true
            )
            .is_err()
        );
        assert!(plan(&spec(Some(ok), None), Some("flyte-core"), &allow(), true).is_err());
        plan(&spec(Some(ok), None), Some("aws-env"), &allow(), true).unwrap();
        // No allowlist: no role.
        assert!(
            plan(
                &spec(Some(ok), None),
                None,
                &Allowlist::only(Vec::new()),
                true
            )
            .is_err()
        );
    }

    #[test]
    fn refresh_at_a_fraction_of_the_lifetime_with_a_floor() {
        let issued: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let expires: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let at = |f, min| refresh_time(issued, expires, f, Duration::from_secs(min)).to_string();
        assert_eq!(at(0.5, 60), "2026-01-01T00:30:00Z");
        assert_eq!(at(0.001, 60), "2026-01-01T00:01:00Z");
        // The floor never passes the expiry.
        assert_eq!(at(0.5, 7200), "2026-01-01T01:00:00Z");
    }
}
