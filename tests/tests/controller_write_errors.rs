//! Secret-write errors become visible (issue 17.7), on the real API server: an
//! immutable `type` change, a 403 from RBAC, an admission denial and a quota. Each
//! gives Ready=False with its reason and Stalled=True (kstatus Failed, Argo CD
//! Degraded), a Warning Event, no value in any status or Event (the admission policy
//! here even echoes the refused value in its message), keeps the existing Secret,
//! and recovers to Ready=True once the cause is fixed, without a controller restart
//! (the refused write is retried with backoff, `--max-backoff=4` here).

mod controller_support;

use base64::Engine;
use controller_support::health::{argocd_health, condition, kstatus, live};
use controller_support::*;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{ResourceQuota, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use sealcred_shared::crd::SecretTemplate;
use sealcred_tests::{TestEnv, testenv, unique_name};
use serde_json::json;

/// Waits for the refusal: Ready=False `reason` for the current generation,
/// Stalled=True with it, kstatus Failed, Argo CD Degraded, a Warning Event of that
/// reason on the object; and no `canaries` (raw or base64) in the status or any Event.
async fn expect_refused(
    client: &kube::Client,
    ns: &str,
    name: &str,
    reason: &str,
    canaries: &[&str],
) {
    wait_ready(client, ns, name, "False", reason).await;
    let obj = live(client, ns, name).await;
    let (stalled, stalled_reason, message) = condition(&obj, "Stalled").expect("Stalled");
    assert_eq!(
        (stalled.as_str(), stalled_reason.as_str()),
        ("True", reason)
    );
    assert!(message.contains("refused to write Secret"), "{message}");
    assert_eq!(kstatus(&obj).0, "Failed", "{obj}");
    let (argo, argo_message) = argocd_health(&obj);
    assert_eq!(argo, "Degraded", "{argo_message}");
    let events = wait_for(&format!("a Warning {reason} Event"), CONVERGE, || async {
        let list = Api::<Event>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
            .then_some(list.items)
    })
    .await;
    let mut seen = obj.to_string();
    for e in &events {
        seen.push_str(e.note.as_deref().unwrap_or_default());
    }
    for c in canaries {
        let b64 = base64::engine::general_purpose::STANDARD.encode(c);
        assert!(
            !seen.contains(c) && !seen.contains(&b64),
            "a value leaked: {seen}"
        );
    }
}

async fn secret(client: &kube::Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

/// (1) The object's template now asks for another type: the API server refuses to
/// change an existing Secret's `type`. Fixed by deleting the Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_type_change_is_reported_and_recovers() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("werr-type").await;
    let ctl = start(env, &ns).await;
    let old = seal_object(
        env,
        &ns,
        "db",
        template(&[]),
        &[("password", "old-canary-1")],
    )
    .await;
    apply(&admin, &old).await;
    wait_ready(&admin, &ns, "db", "True", "Unsealed").await;

    let basic_auth = SecretTemplate {
        type_: "kubernetes.io/basic-auth".into(),
        ..template(&[])
    };
    let new = seal_object(env, &ns, "db", basic_auth, &[("password", "new-canary-1")]).await;
    apply(&admin, &new).await;
    expect_refused(&admin, &ns, "db", "SecretImmutableField", &["new-canary-1"]).await;
    let kept = secret(&admin, &ns, "db").await.expect("the Secret is kept");
    assert_eq!(kept.type_.as_deref(), Some("Opaque"));
    wait_secret(&admin, &ns, "db", &[("password", "old-canary-1")]).await;

    // The documented fix: delete the Secret; the controller creates it with the new type.
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    wait_ready(&admin, &ns, "db", "True", "Unsealed").await;
    wait_secret(&admin, &ns, "db", &[("password", "new-canary-1")]).await;
    let s = secret(&admin, &ns, "db").await.unwrap();
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_eq!(condition(&live(&admin, &ns, "db").await, "Stalled"), None);
    ctl.stop().await.unwrap();
}

/// The rules a namespaced controller (`--workload-restarts=false`) needs, with or
/// without the Secret writes.
fn controller_role(ns: &str, secret_writes: bool) -> Role {
    let mut secret_verbs = vec!["get", "list", "watch"];
    if secret_writes {
        secret_verbs.extend(["create", "patch"]);
    }
    serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "ctl", "namespace": ns},
        "rules": [
            {"apiGroups": ["sealcred.io"], "resources": ["sealedstoragecreds"], "verbs": ["list", "watch"]},
            {"apiGroups": ["sealcred.io"], "resources": ["sealedstoragecreds/status"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": secret_verbs},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        ],
    }))
    .unwrap()
}

async fn set_role(admin: &kube::Client, ns: &str, secret_writes: bool) {
    Api::<Role>::namespaced(admin.clone(), ns)
        .patch(
            "ctl",
            &PatchParams::apply("sealcred-tests").force(),
            &Patch::Apply(controller_role(ns, secret_writes)),
        )
        .await
        .unwrap();
}

/// Whether `client` may patch Secret `name` (an empty merge patch: authorised, then a no-op).
async fn may_patch(client: &kube::Client, ns: &str, name: &str) -> bool {
    match Api::<Secret>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({})))
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 403 => false,
        Err(e) => panic!("probing the Secret patch: {e}"),
    }
}

/// A controller for `ns` running as ServiceAccount `ctl` bound to Role `ctl`.
async fn restricted_controller(
    env: &TestEnv,
    admin: &kube::Client,
    ns: &str,
) -> (Running, kube::Client) {
    set_role(admin, ns, true).await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "ctl", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ctl"},
        "subjects": [{"kind": "ServiceAccount", "name": "ctl", "namespace": ns}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let sa = env.sa_client(ns, "ctl").await;
    let mut args = default_args(env, ns);
    args.push("--workload-restarts=false".into());
    (
        start_with(env, sa.clone(), args, env.kms_endpoint()).await,
        sa,
    )
}

/// (2) A 403: the controller's identity loses `patch` on Secrets. Fixed by granting it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_write_is_reported_and_recovers() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("werr-rbac").await;
    let (ctl, sa) = restricted_controller(env, &admin, &ns).await;
    let obj = seal_object(
        env,
        &ns,
        "db",
        template(&[]),
        &[("password", "old-canary-2")],
    )
    .await;
    apply(&admin, &obj).await;
    wait_ready(&admin, &ns, "db", "True", "Unsealed").await;

    set_role(&admin, &ns, false).await;
    wait_for("the Secret patch forbidden", CONVERGE, || async {
        (!may_patch(&sa, &ns, "db").await).then_some(())
    })
    .await;
    let changed = merge_into(env, &obj, &[("password", "new-canary-2")]).await;
    apply(&admin, &changed).await;
    expect_refused(&admin, &ns, "db", "SecretWriteForbidden", &["new-canary-2"]).await;
    let message = condition(&live(&admin, &ns, "db").await, "Ready")
        .unwrap()
        .2;
    assert!(message.contains("HTTP 403 Forbidden"), "{message}");
    wait_secret(&admin, &ns, "db", &[("password", "old-canary-2")]).await;

    set_role(&admin, &ns, true).await;
    wait_ready(&admin, &ns, "db", "True", "Unsealed").await;
    wait_secret(&admin, &ns, "db", &[("password", "new-canary-2")]).await;
    ctl.stop().await.unwrap();
}

/// (3) An admission denial: a ValidatingAdmissionPolicy, bound to this namespace,
/// refuses a new password — and echoes it in its message (the controller redacts it).
/// Fixed by deleting the binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_denial_is_reported_and_recovers() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("werr-vap").await;
    let ctl = start(env, &ns).await;
    let obj = seal_object(
        env,
        &ns,
        "db",
        template(&[]),
        &[("password", "old-canary-3")],
    )
    .await;
    apply(&admin, &obj).await;
    wait_ready(&admin, &ns, "db", "True", "Unsealed").await;

    let policy = unique_name("werr-vap");
    let pp = PatchParams::apply("sealcred-tests").force();
    let vap: ValidatingAdmissionPolicy = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["secrets"],
                }]},
                "validations": [{
                    "expression": "!has(object.data) || !('password' in object.data) || string(object.data.password).startsWith('old-')",
                    "messageExpression": "'test policy: password ' + string(object.data.password) + ' is not allowed'",
                }],
            },
    }))
    .unwrap();
    Api::<ValidatingAdmissionPolicy>::all(admin.clone())
        .patch(&policy, &pp, &Patch::Apply(&vap))
        .await
        .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
            },
    }))
    .unwrap();
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone());
    bindings
        .patch(&policy, &pp, &Patch::Apply(&binding))
        .await
        .unwrap();
    // In force within a moment: probe with a Secret of our own.
    let secrets = Api::<Secret>::namespaced(admin.clone(), &ns);
    let probe: Secret = serde_json::from_value(
        json!({"metadata": {"name": "probe"}, "stringData": {"password": "old-probe"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &probe)
        .await
        .unwrap();
    wait_for("the admission policy in force", CONVERGE, || async {
        let r = secrets
            .patch(
                "probe",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"password": "probe-2"}})),
            )
            .await;
        match r {
            Err(e) if e.to_string().contains("ValidatingAdmissionPolicy") => Some(()),
            Err(e) => panic!("probing the policy: {e}"),
            Ok(_) => None,
        }
    })
    .await;

    let changed = merge_into(env, &obj, &[("password", "new-canary-3")]).await;
    apply(&admin, &changed).await;
    expect_refused(&admin, &ns, "db", "AdmissionDenied", &["new-canary-3"]).await;
    let message = condition(&live(&admin, &ns, "db").await, "Ready")
        .unwrap()
        .2;
    assert!(
        message.contains("ValidatingAdmissionPolicy")
            && message.contains("password [redacted] is not allowed"),
        "{message}"
    );
    wait_secret(&admin, &ns, "db", &[("password", "old-canary-3")]).await;

    bindings
        .delete(&policy, &DeleteParams::default())
        .await
        .unwrap();
    wait_ready(&admin, &ns, "db", "True", "Unsealed").await;
    wait_secret(&admin, &ns, "db", &[("password", "new-canary-3")]).await;
    ctl.stop().await.unwrap();
}

/// Sets the quota's hard limit on Secrets, in the spec and, as the quota controller
/// would (this test cluster has no kube-controller-manager), in the status the
/// ResourceQuota admission plugin enforces, with `used` Secrets counted.
async fn set_quota(admin: &kube::Client, ns: &str, hard: u32, used: u32) {
    let api = Api::<ResourceQuota>::namespaced(admin.clone(), ns);
    api.patch(
        "secrets",
        &PatchParams::apply("sealcred-tests").force(),
        &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "secrets"},
            "spec": {"hard": {"secrets": hard.to_string()}},
        })),
    )
    .await
    .unwrap();
    api.patch_status(
        "secrets",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "hard": {"secrets": hard.to_string()},
            "used": {"secrets": used.to_string()},
        }})),
    )
    .await
    .unwrap();
}

/// (4) A quota: `secrets: 1` in a namespace that already holds one Secret, so the new
/// Secret cannot be created. Fixed by raising the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refusal_is_reported_and_recovers() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("werr-quota").await;
    let other: Secret =
        serde_json::from_value(json!({"metadata": {"name": "other"}, "stringData": {"k": "v"}}))
            .unwrap();
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    set_quota(&admin, &ns, 1, 1).await;

    let ctl = start(env, &ns).await;
    let obj = seal_object(env, &ns, "db", template(&[]), &[("password", "canary-4")]).await;
    apply(&admin, &obj).await;
    expect_refused(&admin, &ns, "db", "QuotaExceeded", &["canary-4"]).await;
    let message = condition(&live(&admin, &ns, "db").await, "Ready")
        .unwrap()
        .2;
    assert!(message.contains("exceeded quota: secrets"), "{message}");
    assert!(
        secret(&admin, &ns, "db").await.is_none(),
        "nothing was written"
    );
    assert!(secret(&admin, &ns, "other").await.is_some());

    set_quota(&admin, &ns, 2, 1).await;
    wait_ready(&admin, &ns, "db", "True", "Unsealed").await;
    wait_secret(&admin, &ns, "db", &[("password", "canary-4")]).await;
    ctl.stop().await.unwrap();
}
