//! Health that GitOps tools understand (issue 17.6): the Argo CD health check
//! (deploy/argocd/health.lua, run here in a real Lua 5.1 interpreter, as Argo
//! CD runs it) on status objects read from the test cluster — Healthy,
//! Progressing and Degraded as the controller leaves them.

mod controller_support;

use controller_support::*;
use kube::api::{Api, Patch, PatchParams};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::testenv;
use serde_json::json;

fn script() -> String {
    std::fs::read_to_string(sealcred_tests::repo_root().join("deploy/argocd/health.lua")).unwrap()
}

/// Runs the health check on `obj` (as Argo CD does: the object as the global
/// `obj`); returns (status, message).
fn argocd_health(obj: &serde_json::Value) -> (String, String) {
    use mlua::LuaSerdeExt;
    let lua = mlua::Lua::new();
    lua.globals()
        .set("obj", lua.to_value(obj).unwrap())
        .unwrap();
    let hs: mlua::Table = lua.load(script()).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

async fn live(client: &kube::Client, ns: &str, name: &str) -> serde_json::Value {
    let o = Api::<SealedStorageCred>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    serde_json::to_value(o).unwrap()
}

#[test]
fn the_configmap_snippet_holds_the_script() {
    let cm =
        std::fs::read_to_string(sealcred_tests::repo_root().join("deploy/argocd/argocd-cm.yaml"))
            .unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&cm).unwrap();
    let embedded = v["data"]["resource.customizations.health.sealcred.io_SealedStorageCred"]
        .as_str()
        .unwrap();
    assert_eq!(embedded, script());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argocd_health_of_live_objects() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("health").await;

    // Healthy, and Degraded (a flipped ciphertext: DecryptFailed).
    let good = seal_object(env, &ns, "good", template(&[]), &[("k", "v")]).await;
    let mut bad = seal_object(env, &ns, "bad", template(&[]), &[("k", "v")]).await;
    let e = bad.spec.entries.get_mut("k").unwrap();
    let mut ct = e.ciphertext.clone().into_bytes();
    ct[0] = if ct[0] == b'A' { b'B' } else { b'A' };
    e.ciphertext = String::from_utf8(ct).unwrap();
    // No controller yet: no status, Progressing.
    apply(&client, &good).await;
    let (status, message) = argocd_health(&live(&client, &ns, "good").await);
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("Progressing", "Waiting for sealcred-controller")
    );

    let ctl = start(env, &ns).await;
    apply(&client, &bad).await;
    wait_ready(&client, &ns, "good", "True", "Unsealed").await;
    wait_ready(&client, &ns, "bad", "False", "DecryptFailed").await;
    assert_eq!(
        argocd_health(&live(&client, &ns, "good").await).0,
        "Healthy"
    );
    let (status, message) = argocd_health(&live(&client, &ns, "bad").await);
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("DecryptFailed: "), "{message}");
    ctl.stop().await.unwrap();

    // A new generation nobody has observed yet: Progressing again.
    Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sealcred.io/reconcile-requested-at": "now"}}, "spec": {"profile": "x"}})),
        )
        .await
        .unwrap();
    let obj = live(&client, &ns, "good").await;
    assert!(obj["metadata"]["generation"].as_i64() > obj["status"]["observedGeneration"].as_i64());
    assert_eq!(argocd_health(&obj).0, "Progressing");

    // KMS unreachable: Ready=False KmsUnavailable is retried, so Progressing.
    let ns2 = env.unique_namespace("health-kms").await;
    let obj = seal_object(env, &ns2, "waiting", template(&[]), &[("k", "v")]).await;
    let ctl = start_with(
        env,
        client.clone(),
        default_args(env, &ns2),
        "http://127.0.0.1:9",
    )
    .await;
    apply(&client, &obj).await;
    wait_ready(&client, &ns2, "waiting", "False", "KmsUnavailable").await;
    let (status, message) = argocd_health(&live(&client, &ns2, "waiting").await);
    assert_eq!(status, "Progressing", "{message}");
    assert!(message.starts_with("KmsUnavailable"), "{message}");
    ctl.stop().await.unwrap();
}
