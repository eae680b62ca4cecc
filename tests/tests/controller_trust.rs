//! Issue 13 (trust), on the real API server through the controller:
//! - 13.3: objects over the caps (wrappings per data key, data keys per object) are
//!   refused by the CRD schema, and — for one stored before the caps — by the
//!   controller with `Ready=False InvalidSpec` and no KMS call;
//! - 13.4: a Secret type not on `--secret-types` (`kubernetes.io/service-account-token`
//!   by default) gives `Ready=False SecretTypeNotAllowed`, an Event, no Secret and no
//!   KMS call;
//! - 13.5: a Secret created by someone else while the controller waits for KMS (held
//!   in a proxy) is not taken over; an owned one edited meanwhile is written again;
//!   the `sealcred.io/adopt` path; and a created or adopted Secret has the
//!   controller's apply as its only manager, so keys dropped from the object go.

mod controller_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use controller_support::*;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::CustomResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use sealcred_shared::crd::{SealedStorageCred, SecretTemplate};
use sealcred_tests::{Proxy, TestEnv, testenv};

const MANAGER: &str = "sealcred-controller";

fn moto(env: &TestEnv) -> SocketAddr {
    env.kms_endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("moto address")
}

async fn get_secret(client: &kube::Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("reading the Secret")
}

/// A Secret made by someone else (field manager `someone-else`).
async fn foreign_secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
    pairs: &[(&str, &str)],
    annotations: &[(&str, &str)],
) {
    let s: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "labels": { "team": "theirs" },
            "annotations": annotations.iter().copied().collect::<BTreeMap<_, _>>(),
        },
        "stringData": pairs.iter().copied().collect::<BTreeMap<_, _>>(),
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(
            &PostParams {
                field_manager: Some("someone-else".into()),
                ..PostParams::default()
            },
            &s,
        )
        .await
        .expect("creating the foreign Secret");
}

/// (manager, operation) of each managedFields entry.
fn managers(s: &Secret) -> Vec<(String, String)> {
    s.metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn controlled_by(s: &Secret, obj_uid: &str) -> bool {
    s.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == obj_uid)
}

async fn uid_of(client: &kube::Client, ns: &str, name: &str) -> String {
    Api::<SealedStorageCred>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

async fn wait_held(proxy: &Proxy) {
    wait_for("a KMS request held in the proxy", CONVERGE, || async {
        (proxy.held_requests() > 0).then_some(())
    })
    .await;
}

async fn has_event(client: &kube::Client, ns: &str, reason: &str) -> bool {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some(reason))
}

// --- 13.5 ---------------------------------------------------------------------------

/// The race: the controller reads "no Secret", calls KMS (held), and meanwhile someone
/// creates the Secret. Before the fix the forced apply took it over (and the garbage
/// collector would later have deleted it with the object).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_created_while_kms_is_called_is_not_taken_over() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("trust-race").await;
    let proxy = Proxy::start(moto(env)).await;
    proxy.hold(true);
    let ctl = start_with(env, admin.clone(), default_args(env, &ns), &proxy.url).await;

    let obj = seal_object(env, &ns, "db", template(&[]), &[("password", "sealed")]).await;
    apply(&admin, &obj).await;
    wait_held(&proxy).await;
    assert!(get_secret(&admin, &ns, "db").await.is_none());
    foreign_secret(&admin, &ns, "db", &[("password", "theirs")], &[]).await;
    proxy.hold(false);

    wait_ready(&admin, &ns, "db", "False", "SecretConflict").await;
    assert!(ctl.metrics().kms_calls_total() >= 1, "KMS was called");
    let s = get_secret(&admin, &ns, "db").await.unwrap();
    assert_eq!(
        secret_data(&admin, &ns, "db").await.unwrap(),
        BTreeMap::from([("password".to_string(), "theirs".to_string())]),
        "the foreign Secret's data is untouched"
    );
    assert!(
        s.metadata.owner_references.is_none(),
        "no ownerReference added"
    );
    assert!(
        !s.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("app.kubernetes.io/managed-by")),
        "no label added"
    );
    assert!(
        managers(&s).iter().all(|(m, _)| m != MANAGER),
        "the controller wrote nothing: {:?}",
        managers(&s)
    );
    ctl.stop().await.unwrap();
}

/// An owned Secret edited while KMS is called: the apply's precondition fails, the
/// Secret is re-read (still ours) and written again, keeping the other writer's label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_secret_edited_while_kms_is_called_is_written_again() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("trust-retry").await;
    let proxy = Proxy::start(moto(env)).await;
    let ctl = start_with(env, admin.clone(), default_args(env, &ns), &proxy.url).await;

    let obj = seal_object(env, &ns, "db", template(&[]), &[("password", "v1")]).await;
    apply(&admin, &obj).await;
    wait_secret(&admin, &ns, "db", &[("password", "v1")]).await;
    wait_ready(&admin, &ns, "db", "True", "Unsealed").await;

    proxy.hold(true);
    let live = Api::<SealedStorageCred>::namespaced(admin.clone(), &ns)
        .get("db")
        .await
        .unwrap();
    apply(&admin, &merge_into(env, &live, &[("password", "v2")]).await).await;
    wait_held(&proxy).await;
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"edited": "meanwhile"}}})),
        )
        .await
        .unwrap();
    proxy.hold(false);

    wait_secret(&admin, &ns, "db", &[("password", "v2")]).await;
    wait_ready(&admin, &ns, "db", "True", "Unsealed").await;
    let s = get_secret(&admin, &ns, "db").await.unwrap();
    assert_eq!(
        s.metadata.labels.unwrap_or_default().get("edited"),
        Some(&"meanwhile".to_string())
    );
    ctl.stop().await.unwrap();
}

/// `sealcred.io/adopt: "true"`: the Secret is taken over; its keys that the object
/// does not hold are removed, and the controller's apply becomes its only manager.
/// Without the annotation: SecretConflict, untouched (then annotating adopts it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopting_a_secret_and_owning_it_alone() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("trust-adopt").await;
    let ctl = start(env, &ns).await;

    // Not annotated: refused, untouched.
    foreign_secret(&admin, &ns, "kept", &[("old", "x")], &[]).await;
    let kept = seal_object(env, &ns, "kept", template(&[]), &[("password", "p")]).await;
    apply(&admin, &kept).await;
    wait_ready(&admin, &ns, "kept", "False", "SecretConflict").await;
    assert_eq!(
        secret_data(&admin, &ns, "kept").await.unwrap(),
        BTreeMap::from([("old".to_string(), "x".to_string())])
    );

    // Annotated: adopted. `old` is not in the object and goes; `password` exists in
    // both with the same value (co-owned but for the managedFields patch).
    foreign_secret(
        &admin,
        &ns,
        "db",
        &[("old", "x"), ("password", "same")],
        &[("sealcred.io/adopt", "true")],
    )
    .await;
    let obj = seal_object(
        env,
        &ns,
        "db",
        template(&[]),
        &[("password", "same"), ("token", "t1")],
    )
    .await;
    apply(&admin, &obj).await;
    wait_ready(&admin, &ns, "db", "True", "Unsealed").await;
    wait_secret(&admin, &ns, "db", &[("password", "same"), ("token", "t1")]).await;
    let uid = uid_of(&admin, &ns, "db").await;
    let s = get_secret(&admin, &ns, "db").await.unwrap();
    assert!(controlled_by(&s, &uid), "our controller ownerReference");
    assert_eq!(
        managers(&s),
        [(MANAGER.to_string(), "Apply".to_string())],
        "the controller's apply is the only manager"
    );
    // Labels the object does not set are kept (no longer managed by anyone).
    assert_eq!(
        s.metadata.labels.unwrap_or_default().get("team"),
        Some(&"theirs".to_string())
    );

    // A new seal without `password`: the key goes from the Secret. Before the
    // managedFields patch, `someone-else` still co-owned it and it stayed (and the
    // mismatch cost a KMS call on every reconcile).
    let next = seal_object(env, &ns, "db", template(&[]), &[("token", "t2")]).await;
    apply(&admin, &next).await;
    wait_secret(&admin, &ns, "db", &[("token", "t2")]).await;
    wait_ready(&admin, &ns, "db", "True", "Unsealed").await;

    // The once-refused Secret, annotated now, is adopted at the next reconcile.
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .patch(
            "kept",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"sealcred.io/adopt": "true"}}}),
            ),
        )
        .await
        .unwrap();
    let mut again = kept.clone();
    again.metadata.annotations = Some(BTreeMap::from([(
        "sealcred.io/reconcile-requested-at".to_string(),
        "1".to_string(),
    )]));
    apply(&admin, &again).await;
    wait_secret(&admin, &ns, "kept", &[("password", "p")]).await;
    wait_ready(&admin, &ns, "kept", "True", "Unsealed").await;
    ctl.stop().await.unwrap();
}

/// A Secret the controller creates (create-only POST, then its apply) has the apply
/// as its only manager: a key dropped from the object is dropped from the Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_secret_is_owned_by_the_apply_alone() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("trust-create").await;
    let ctl = start(env, &ns).await;

    let obj = seal_object(
        env,
        &ns,
        "db",
        template(&[("app", "db")]),
        &[("password", "p"), ("user", "u")],
    )
    .await;
    apply(&admin, &obj).await;
    wait_secret(&admin, &ns, "db", &[("password", "p"), ("user", "u")]).await;
    wait_ready(&admin, &ns, "db", "True", "Unsealed").await;
    let s = get_secret(&admin, &ns, "db").await.unwrap();
    assert_eq!(managers(&s), [(MANAGER.to_string(), "Apply".to_string())]);

    let next = seal_object(env, &ns, "db", template(&[]), &[("password", "p2")]).await;
    apply(&admin, &next).await;
    wait_secret(&admin, &ns, "db", &[("password", "p2")]).await;
    let s = get_secret(&admin, &ns, "db").await.unwrap();
    assert!(
        !s.metadata.labels.unwrap_or_default().contains_key("app"),
        "a label dropped from the template is dropped from the Secret"
    );
    ctl.stop().await.unwrap();
}

// --- 13.4 ---------------------------------------------------------------------------

/// A template asking for a ServiceAccount token (the API server would mint one for
/// the named ServiceAccount, under the controller's identity), or for a type not on
/// the list, is refused before any KMS call; an allowed type is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_types_not_allowed_are_refused_before_kms() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("trust-types").await;
    let ctl = start(env, &ns).await;

    let typed = |type_: &str, annotations: &[(&str, &str)]| SecretTemplate {
        name: None,
        type_: type_.into(),
        labels: BTreeMap::new(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let token = seal_object(
        env,
        &ns,
        "token",
        typed(
            "kubernetes.io/service-account-token",
            &[("kubernetes.io/service-account.name", "default")],
        ),
        &[("extra", "x")],
    )
    .await;
    let helm = seal_object(
        env,
        &ns,
        "release",
        typed("helm.sh/release.v1", &[]),
        &[("release", "x")],
    )
    .await;
    apply(&admin, &token).await;
    apply(&admin, &helm).await;
    wait_ready(&admin, &ns, "token", "False", "SecretTypeNotAllowed").await;
    wait_ready(&admin, &ns, "release", "False", "SecretTypeNotAllowed").await;
    assert!(get_secret(&admin, &ns, "token").await.is_none());
    assert!(get_secret(&admin, &ns, "release").await.is_none());
    assert_eq!(ctl.metrics().kms_calls_total(), 0, "no KMS call");
    wait_for("a SecretTypeNotAllowed Event", CONVERGE, || async {
        has_event(&admin, &ns, "SecretTypeNotAllowed")
            .await
            .then_some(())
    })
    .await;
    let status = Api::<SealedStorageCred>::namespaced(admin.clone(), &ns)
        .get("token")
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(
        status.conditions[0]
            .message
            .contains("\"kubernetes.io/service-account-token\""),
        "{:?}",
        status.conditions
    );

    let basic = seal_object(
        env,
        &ns,
        "basic",
        typed("kubernetes.io/basic-auth", &[]),
        &[("password", "p"), ("username", "u")],
    )
    .await;
    apply(&admin, &basic).await;
    wait_secret(
        &admin,
        &ns,
        "basic",
        &[("password", "p"), ("username", "u")],
    )
    .await;
    wait_ready(&admin, &ns, "basic", "True", "Unsealed").await;
    ctl.stop().await.unwrap();

    // --secret-types replaces the list: helm.sh/release.v1 allowed, Opaque not.
    let mut args = default_args(env, &ns);
    args.push("--secret-types=helm.sh/release.v1".into());
    let ctl = start_with(env, admin.clone(), args, env.kms_endpoint()).await;
    wait_secret(&admin, &ns, "release", &[("release", "x")]).await;
    wait_ready(&admin, &ns, "release", "True", "Unsealed").await;
    let opaque = seal_object(env, &ns, "plain", template(&[]), &[("a", "b")]).await;
    apply(&admin, &opaque).await;
    wait_ready(&admin, &ns, "plain", "False", "SecretTypeNotAllowed").await;
    ctl.stop().await.unwrap();
}

// --- 13.3 ---------------------------------------------------------------------------

/// `obj` with its first data key's wrapping repeated up to `n` wrappings.
fn with_wrappings(obj: &SealedStorageCred, n: usize) -> SealedStorageCred {
    let mut o = obj.clone();
    let w = o.spec.data_keys[0].wrappings[0].clone();
    while o.spec.data_keys[0].wrappings.len() < n {
        o.spec.data_keys[0].wrappings.insert(0, w.clone());
    }
    o
}

/// `obj` with its data key repeated up to `n` data keys.
fn with_data_keys(obj: &SealedStorageCred, n: usize) -> SealedStorageCred {
    let mut o = obj.clone();
    let d = o.spec.data_keys[0].clone();
    while o.spec.data_keys.len() < n {
        o.spec.data_keys.push(d.clone());
    }
    o
}

/// The CRD without its `maxItems` (as a CRD from before the caps).
fn uncapped_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("maxItems");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(SealedStorageCred::crd()).unwrap();
    strip(&mut v);
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_over_the_caps_are_refused_by_the_crd_and_the_controller() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("trust-caps").await;
    let obj = seal_object(env, &ns, "wide", template(&[]), &[("password", "p")]).await;

    // The CRD schema: 8 wrappings / 32 data keys pass the schema, 9 / 33 do not.
    for (what, o, max) in [
        ("wrappings", with_wrappings(&obj, 9), 8),
        ("data keys", with_data_keys(&obj, 33), 32),
    ] {
        let e = match try_apply(&admin, &o).await {
            Ok(_) => panic!("{what}: the API server stored an object over the cap"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(&format!("must have at most {max} items")),
            "{what}: {e}"
        );
    }
    let mut at_cap = with_wrappings(&obj, 8);
    at_cap.metadata.name = Some("at-cap".into());
    try_apply(&admin, &at_cap)
        .await
        .expect("8 wrappings pass the schema");
    let mut at_cap = with_data_keys(&obj, 32);
    at_cap.metadata.name = Some("at-cap-dks".into());
    try_apply(&admin, &at_cap)
        .await
        .expect("32 data keys pass the schema");

    // An object stored before the caps (CRD without maxItems): the controller refuses
    // it before any KMS call. Another test may reinstall the capped CRD meanwhile, so
    // the apply is retried; the capped CRD is back before any assertion.
    let over = [
        ("over-w", with_wrappings(&obj, 9), "dataKeys[0].wrappings"),
        ("over-d", with_data_keys(&obj, 33), "dataKeys: 33 data keys"),
    ];
    let mut stored = Vec::new();
    for (name, o, _) in &over {
        let mut o = o.clone();
        o.metadata.name = Some((*name).into());
        let mut result = None;
        for _ in 0..5 {
            env.install_crd(&uncapped_crd()).await;
            result = Some(try_apply(&admin, &o).await);
            if result.as_ref().unwrap().is_ok() {
                break;
            }
        }
        stored.push(result.unwrap());
    }
    env.install_sealcred_crd().await;
    for r in &stored {
        assert!(r.is_ok(), "stored under the uncapped CRD: {r:?}");
    }

    let mut args = default_args(env, &ns);
    args.push("--workload-restarts=false".into());
    let ctl = start_with(env, admin.clone(), args, env.kms_endpoint()).await;
    for (name, _, field) in &over {
        wait_ready(&admin, &ns, name, "False", "InvalidSpec").await;
        let status = Api::<SealedStorageCred>::namespaced(admin.clone(), &ns)
            .get(name)
            .await
            .unwrap()
            .status
            .unwrap();
        assert!(
            status.conditions[0].message.contains(field),
            "{name}: {:?}",
            status.conditions
        );
        assert!(get_secret(&admin, &ns, name).await.is_none());
    }
    // The at-cap objects were sealed as `wide` and renamed, so no wrapping opens
    // (the EncryptionContext names `wide`): the one with 8 wrappings costs 8 KMS
    // calls, the most one data key can; 32 copies of one data key are refused as
    // duplicates before any call; the over-cap objects made none.
    wait_ready(&admin, &ns, "at-cap", "False", "DecryptFailed").await;
    wait_ready(&admin, &ns, "at-cap-dks", "False", "InvalidSpec").await;
    assert_eq!(
        ctl.metrics().kms_calls_total(),
        8,
        "{}",
        ctl.state.render_metrics()
    );
    ctl.stop().await.unwrap();
}
