//! Workloads restart only when a value changes (issue 17.3), on the real API server:
//! a Deployment annotated `sealcred.io/restart-on-change` keeps its pod template
//! through a rotate (fresh data key), a rewrap (a second KMS key added) and a re-seal
//! of the same values — all new ciphertext — and changes exactly once when one value
//! changes. The pod-template annotation is the keyed restart digest
//! (controller/src/digest.rs), never a plain hash of a value: a canary checks it
//! against SHA-256 of the values and recomputes it with the namespace's digest key.

mod controller_support;

use std::time::Duration;

use controller_support::*;
use hkdf::Hkdf;
use hmac::Mac;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_shared::keyring::{Allowlist, Keyring};
use sealcred_shared::provider::aws::AwsKms;
use sealcred_shared::seal;
use sealcred_tests::testenv;
use sha2::{Digest, Sha256};

const KEY: &str = "sealcred.io/restarted-for-app";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// (pod-template restart annotation, generation) of Deployment `web`.
async fn pod_template(client: &kube::Client, ns: &str) -> (Option<String>, i64) {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("web")
        .await
        .unwrap();
    let a = d
        .spec
        .template
        .metadata
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(KEY).cloned());
    (a, d.metadata.generation.unwrap())
}

async fn secret(client: &kube::Client, ns: &str) -> Secret {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get("app")
        .await
        .unwrap()
}

/// Applies `obj`, waits until the controller has written the Secret from it (its
/// spec digest) and has had time for the restart pass; returns the pod template state.
async fn apply_and_settle(
    client: &kube::Client,
    ns: &str,
    obj: &SealedStorageCred,
) -> (Option<String>, i64) {
    let before = secret(client, ns)
        .await
        .metadata
        .annotations
        .unwrap_or_default()
        .get("sealcred.io/spec-digest")
        .cloned();
    apply(client, obj).await;
    wait_for("the Secret rewritten", CONVERGE, || async {
        let now = secret(client, ns)
            .await
            .metadata
            .annotations
            .unwrap_or_default()
            .get("sealcred.io/spec-digest")
            .cloned();
        (now != before).then_some(())
    })
    .await;
    wait_ready(client, ns, "app", "True", "Unsealed").await;
    // The restart pass follows the status write in the same reconcile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    pod_template(client, ns).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_follow_values_not_ciphertext() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("restart-digest").await;

    // A second KMS key, for the rewrap.
    let kms = env.kms_client();
    let second = kms
        .create_key()
        .description("sealcred-tests: restart digest rewrap")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .arn
        .unwrap();
    let mut args = default_args(env, &ns);
    args.extend(["--kms-allow".to_string(), second.clone()]);
    let ctl = start_with(env, admin.clone(), args, env.kms_endpoint()).await;

    Api::<Deployment>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &workload("Deployment", "web", Some("app")),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await; // the workload cache's first list
    let values = [("password", "pw-canary-7"), ("user", "u")];
    let obj = seal_object(env, &ns, "app", template_of(), &values).await;
    apply(&admin, &obj).await;
    wait_secret(&admin, &ns, "app", &values).await;
    let first = wait_for("the first roll", CONVERGE, || async {
        let (a, g) = pod_template(&admin, &ns).await;
        a.map(|a| (a, g))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        pod_template(&admin, &ns).await,
        (Some(first.0.clone()), first.1)
    );
    let digest = first.0.clone();

    // The canary: the digest is keyed — not SHA-256 of any value, nor of the values
    // together — and it is what the Secret records and the namespace's key computes.
    assert_eq!(digest.len(), 64);
    let mut all = Sha256::new();
    for (k, v) in values {
        assert_ne!(
            digest,
            hex(&Sha256::digest(v.as_bytes())),
            "plain hash of {k}"
        );
        assert_ne!(digest, hex(&Sha256::digest(format!("{k}={v}").as_bytes())));
        all.update(v.as_bytes());
    }
    assert_ne!(digest, hex(&all.finalize()));
    let s = secret(&admin, &ns).await;
    assert_eq!(
        s.metadata.annotations.unwrap()["sealcred.io/restart-digest"],
        digest
    );
    let key_secret = Api::<Secret>::namespaced(admin.clone(), &ns)
        .get("sealcred-restart-digest-key")
        .await
        .expect("the namespace's digest key Secret");
    let key = &key_secret.data.unwrap()["key"].0;
    assert_eq!(key.len(), 32);
    let mut info = b"sealcred.io/restart-digest/v1".to_vec();
    for part in [ns.as_bytes(), b"app"] {
        info.extend_from_slice(&(part.len() as u64).to_be_bytes());
        info.extend_from_slice(part);
    }
    let mut k = [0u8; 32];
    Hkdf::<Sha256>::new(None, key)
        .expand(&info, &mut k)
        .unwrap();
    let mut mac = <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&k).unwrap();
    for (name, value) in values {
        mac.update(&(name.len() as u64).to_be_bytes());
        mac.update(name.as_bytes());
        mac.update(&(value.len() as u64).to_be_bytes());
        mac.update(value.as_bytes());
    }
    assert_eq!(digest, hex(&mac.finalize().into_bytes()));

    // Same values, new ciphertext: no pod-template change.
    let sdk = sdk_config(env, env.kms_endpoint()).await;
    let keyring = Keyring::new(
        Allowlist::only([env.key_arn().to_string(), second.clone()]),
        None,
    )
    .with_sdk_config(sdk.clone());
    let rotated = seal::rotate(&obj, &keyring, seal::Keys::Recorded(&keyring))
        .await
        .unwrap()
        .object;
    assert_ne!(rotated.spec.entries, obj.spec.entries, "rotate re-encrypts");
    assert_eq!(
        apply_and_settle(&admin, &ns, &rotated).await,
        (Some(digest.clone()), first.1),
        "rotate"
    );
    let p2 = AwsKms::new(&sdk, &second).unwrap();
    let rewrapped = seal::rewrap(&rotated, &keyring, &[&p2], &[])
        .await
        .unwrap()
        .object;
    assert_ne!(rewrapped.spec, rotated.spec, "rewrap adds a wrapping");
    assert_eq!(
        apply_and_settle(&admin, &ns, &rewrapped).await,
        (Some(digest.clone()), first.1),
        "rewrap"
    );
    let resealed = seal_object(env, &ns, "app", template_of(), &values).await;
    assert_ne!(resealed.spec.entries, rewrapped.spec.entries);
    assert_eq!(
        apply_and_settle(&admin, &ns, &resealed).await,
        (Some(digest.clone()), first.1),
        "re-seal"
    );

    // One value changes: exactly one pod-template change.
    let changed = merge_into(env, &resealed, &[("password", "pw-canary-8")]).await;
    let (after, generation) = apply_and_settle(&admin, &ns, &changed).await;
    wait_secret(
        &admin,
        &ns,
        "app",
        &[("password", "pw-canary-8"), ("user", "u")],
    )
    .await;
    let after = after.expect("annotated");
    assert_ne!(after, digest);
    assert_eq!(
        generation,
        first.1 + 1,
        "exactly one change of the pod template"
    );
    ctl.stop().await.unwrap();
}

fn template_of() -> sealcred_shared::crd::SecretTemplate {
    controller_support::template(&[])
}

/// A Secret written without a restart digest (an older controller; here one with
/// restarts off) and a workload carrying another value (an older controller's
/// ciphertext digest): the controller records the digest (one Decrypt) and rolls
/// nothing; the next value change rolls once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_recorded_digest_rolls_nothing() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("restart-digest-up").await;
    let values = [("password", "pw-canary-9")];
    let obj = seal_object(env, &ns, "app", template_of(), &values).await;
    let mut args = default_args(env, &ns);
    args.push("--workload-restarts=false".into());
    let old = start_with(env, admin.clone(), args, env.kms_endpoint()).await;
    apply(&admin, &obj).await;
    wait_secret(&admin, &ns, "app", &values).await;
    wait_ready(&admin, &ns, "app", "True", "Unsealed").await;
    old.stop().await.unwrap();
    let s = secret(&admin, &ns).await;
    assert!(
        !s.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("sealcred.io/restart-digest")
    );

    let older = "ab".repeat(32);
    let mut d: Deployment = workload("Deployment", "web", Some("app"));
    d.spec
        .template
        .metadata
        .get_or_insert_default()
        .annotations
        .get_or_insert_default()
        .insert(KEY.into(), older.clone());
    Api::<Deployment>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let (_, generation) = pod_template(&admin, &ns).await;

    let ctl = start(env, &ns).await;
    let recorded = wait_for("the digest recorded", CONVERGE, || async {
        secret(&admin, &ns)
            .await
            .metadata
            .annotations
            .unwrap_or_default()
            .get("sealcred.io/restart-digest")
            .cloned()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        pod_template(&admin, &ns).await,
        (Some(older.clone()), generation),
        "nothing rolled"
    );
    assert_eq!(ctl.metrics().workload_restarts_total(), 0);

    let changed = merge_into(env, &obj, &[("password", "pw-canary-10")]).await;
    let (after, g) = apply_and_settle(&admin, &ns, &changed).await;
    assert_ne!(after.as_deref(), Some(recorded.as_str()));
    assert_ne!(after.as_deref(), Some(older.as_str()));
    assert_eq!(g, generation + 1, "one roll for the value change");
    ctl.stop().await.unwrap();
}
