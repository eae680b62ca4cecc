//! The controller against a real API server and the test KMS: scenarios 1–4 of issue 7
//! (unseal, update and drift repair, no takeover of foreign Secrets, tampering).

mod controller_support;

use std::collections::BTreeMap;

use controller_support::*;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{CustomResourceExt, ResourceExt};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::testenv;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_object_becomes_an_owned_secret() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("ctl-unseal").await;
    let ctl = start(env, &ns).await;
    // Every write to the Secret, seen from a watch opened before it exists.
    let writes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let watcher = {
        let api = Api::<Secret>::namespaced(client.clone(), &ns);
        let writes = writes.clone();
        let mut events = api
            .watch(&WatchParams::default().fields("metadata.name=db"), "0")
            .await
            .expect("watching the Secret")
            .boxed();
        tokio::spawn(async move {
            while let Some(Ok(e)) = events.next().await {
                let kind = match e {
                    WatchEvent::Added(_) => "ADDED",
                    WatchEvent::Modified(_) => "MODIFIED",
                    WatchEvent::Deleted(_) => "DELETED",
                    _ => continue,
                };
                writes.lock().unwrap().push(kind.to_string());
            }
        })
    };

    let obj = seal_object(
        env,
        &ns,
        "db",
        template(&[("app", "db")]),
        &[("username", "admin"), ("password", "s3cr3t-🔑")],
    )
    .await;
    apply(&client, &obj).await;
    wait_ready(&client, &ns, "db", "True", "Unsealed").await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    watcher.abort();
    // A new Secret is two writes: the create, and the patch that makes its
    // managedFields entry the apply's (no apply repeating what the create wrote).
    assert_eq!(*writes.lock().unwrap(), ["ADDED", "MODIFIED"]);

    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("db")
        .await
        .expect("Secret");
    let data = secret.data.clone().unwrap();
    assert_eq!(
        data,
        BTreeMap::from([
            ("password".to_string(), ByteString("s3cr3t-🔑".into())),
            ("username".to_string(), ByteString(b"admin".to_vec())),
        ])
    );
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let labels = secret.labels();
    assert_eq!(labels.get("app").map(String::as_str), Some("db"));
    assert_eq!(
        secret.annotations().get("team").map(String::as_str),
        Some("storage")
    );
    assert!(secret.annotations().contains_key("sealcred.io/spec-digest"));
    let live = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .get("db")
        .await
        .unwrap();
    let owners = secret.owner_references();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].controller, Some(true));
    assert_eq!(owners[0].kind, "SealedStorageCred");
    assert_eq!(Some(&owners[0].uid), live.metadata.uid.as_ref());
    // Owned by our server-side apply alone, so a key later dropped goes.
    let managers: Vec<_> = secret
        .managed_fields()
        .iter()
        .map(|m| (m.manager.as_deref(), m.operation.as_deref()))
        .collect();
    assert_eq!(managers, [(Some("sealcred-controller"), Some("Apply"))]);
    let status = live.status.unwrap();
    assert_eq!(status.observed_generation, live.metadata.generation);
    assert_eq!(status.secret_name.as_deref(), Some("db"));
    assert_eq!(status.entries, ["password", "username"]);
    let text = serde_json::to_string(&status).unwrap();
    assert!(!text.contains("s3cr3t") && !text.contains("admin"));
    assert_eq!(ctl.metrics().kms_calls_total(), 1);
    ctl.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_drift_are_applied_and_repaired() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("ctl-drift").await;
    let ctl = start(env, &ns).await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);

    let obj = seal_object(env, &ns, "app", template(&[]), &[("token", "one")]).await;
    apply(&client, &obj).await;
    wait_secret(&client, &ns, "app", &[("token", "one")]).await;

    // A merged key and a rotated value.
    let live = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .get("app")
        .await
        .unwrap();
    let merged = merge_into(env, &live, &[("token", "two"), ("extra", "x")]).await;
    apply(&client, &merged).await;
    wait_secret(&client, &ns, "app", &[("token", "two"), ("extra", "x")]).await;
    wait_ready(&client, &ns, "app", "True", "Unsealed").await;

    // Deleted: restored.
    secrets
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    wait_secret(&client, &ns, "app", &[("token", "two"), ("extra", "x")]).await;

    // Edited: restored.
    secrets
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "token": "aGFja2Vk" } })),
        )
        .await
        .unwrap();
    wait_secret(&client, &ns, "app", &[("token", "two"), ("extra", "x")]).await;

    // A key dropped from the object goes from the Secret the controller created
    // (its create's managedFields entry became the apply's; nobody co-owns `extra`).
    let fewer = seal_object(env, &ns, "app", template(&[]), &[("token", "three")]).await;
    apply(&client, &fewer).await;
    wait_secret(&client, &ns, "app", &[("token", "three")]).await;
    ctl.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unowned_secret_is_left_untouched() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("ctl-conflict").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": { "name": "taken", "labels": { "owner": "someone-else" } },
        "stringData": { "password": "theirs" },
    }))
    .unwrap();
    let before = secrets
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let ctl = start(env, &ns).await;

    let obj = seal_object(env, &ns, "taken", template(&[]), &[("password", "ours")]).await;
    apply(&client, &obj).await;
    wait_ready(&client, &ns, "taken", "False", "SecretConflict").await;

    let after = secrets.get("taken").await.unwrap();
    assert_eq!(after.resource_version(), before.resource_version());
    assert!(after.owner_references().is_empty());
    assert_eq!(
        secret_data(&client, &ns, "taken").await.unwrap()["password"],
        "theirs"
    );
    // A new object's Secret is presumed absent: one KMS call before the create that
    // found it taken (nothing written), and none at any later reconcile.
    assert_eq!(
        ctl.metrics().kms_calls_total(),
        1,
        "one KMS call for a new object's conflict"
    );
    let reconciled = ctl.metrics().reconciles_total();
    Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .patch(
            "taken",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": {
                "sealcred.io/reconcile-requested-at": "1"
            } } })),
        )
        .await
        .unwrap();
    wait_for("a reconcile after the poke", CONVERGE, || async {
        (ctl.metrics().reconciles_total() > reconciled).then_some(())
    })
    .await;
    wait_ready(&client, &ns, "taken", "False", "SecretConflict").await;
    assert_eq!(
        ctl.metrics().kms_calls_total(),
        1,
        "no KMS call for a known conflict"
    );
    assert_eq!(
        secrets.get("taken").await.unwrap().resource_version(),
        before.resource_version()
    );
    ctl.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_moved_objects_fail_to_unseal() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let home = env.unique_namespace("ctl-home").await;
    let ns = env.unique_namespace("ctl-tamper").await;
    let ctl = start(env, &ns).await;

    // An entry's ciphertext edited.
    let mut tampered = seal_object(env, &ns, "tampered", template(&[]), &[("k", "value-1")]).await;
    let e = tampered.spec.entries.get_mut("k").unwrap();
    let mut ct: Vec<char> = e.ciphertext.chars().collect();
    ct[2] = if ct[2] == 'A' { 'B' } else { 'A' };
    e.ciphertext = ct.into_iter().collect();
    apply(&client, &tampered).await;

    // A strict-scope object sealed for another namespace, copied here.
    let mut moved = seal_object(env, &home, "moved", template(&[]), &[("k", "value-2")]).await;
    moved.metadata.namespace = Some(ns.clone());
    apply(&client, &moved).await;

    // A template edited after sealing (authenticated by the header tag).
    let mut edited = seal_object(env, &ns, "edited", template(&[]), &[("k", "value-3")]).await;
    edited.spec.template.type_ = "kubernetes.io/basic-auth".into();
    apply(&client, &edited).await;

    for name in ["tampered", "moved", "edited"] {
        wait_ready(&client, &ns, name, "False", "DecryptFailed").await;
        assert!(
            secret_data(&client, &ns, name).await.is_none(),
            "no Secret for {name}"
        );
        let obj = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
            .get(name)
            .await
            .unwrap();
        let msg = &obj.status.unwrap().conditions[0].message;
        assert!(!msg.contains("value-"), "{msg}");
    }
    let _ = SealedStorageCred::crd();
    ctl.stop().await.unwrap();
}
