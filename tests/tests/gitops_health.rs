//! Health that GitOps tools understand (issue 17.6), on status objects read from the
//! test cluster as the controller leaves them:
//! - Argo CD: deploy/argocd/health.lua, run in a real Lua 5.1 interpreter as Argo CD
//!   runs it — Healthy, Progressing and Degraded;
//! - Flux: kstatus (sigs.k8s.io/cli-utils v0.37.2, tools/kstatus) — Current when Ready,
//!   InProgress while a generation is unobserved or a transient failure is retried
//!   (`Reconciling=True`), Failed on a permanent failure (`Stalled=True`).

mod controller_support;

use controller_support::health::{argocd_health, condition, kstatus, live};
use controller_support::*;
use kube::api::{Api, Patch, PatchParams};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::testenv;
use serde_json::json;

#[test]
fn the_configmap_snippet_holds_the_script() {
    let cm =
        std::fs::read_to_string(sealcred_tests::repo_root().join("deploy/argocd/argocd-cm.yaml"))
            .unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&cm).unwrap();
    let embedded = v["data"]["resource.customizations.health.sealcred.io_SealedStorageCred"]
        .as_str()
        .unwrap();
    let script =
        std::fs::read_to_string(sealcred_tests::repo_root().join("deploy/argocd/health.lua"))
            .unwrap();
    assert_eq!(embedded, script);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_of_live_objects() {
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
    // No controller yet: no status, Progressing. (kstatus cannot tell an object no
    // controller has seen from a healthy one: without status.observedGeneration or a
    // condition it says Current; see docs/operations.md.)
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
    let obj = live(&client, &ns, "good").await;
    assert_eq!(argocd_health(&obj).0, "Healthy");
    assert_eq!(kstatus(&obj).0, "Current");
    assert_eq!(condition(&obj, "Stalled"), None);
    assert_eq!(condition(&obj, "Reconciling"), None);
    let obj = live(&client, &ns, "bad").await;
    let (status, message) = argocd_health(&obj);
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("DecryptFailed: "), "{message}");
    let (stalled, reason, stalled_message) = condition(&obj, "Stalled").expect("Stalled");
    assert_eq!(
        (stalled.as_str(), reason.as_str()),
        ("True", "DecryptFailed")
    );
    let (status, message) = kstatus(&obj);
    assert_eq!(status, "Failed");
    assert_eq!(message, stalled_message);
    ctl.stop().await.unwrap();

    // A new generation nobody has observed yet: Progressing / InProgress again.
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
    let (status, message) = kstatus(&obj);
    assert_eq!(status, "InProgress");
    assert!(message.contains("latest observed generation"), "{message}");

    // KMS unreachable: Ready=False KmsUnavailable is retried (Reconciling=True), so
    // Progressing / InProgress.
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
    let obj = live(&client, &ns2, "waiting").await;
    let (status, message) = argocd_health(&obj);
    assert_eq!(status, "Progressing", "{message}");
    assert!(message.starts_with("KmsUnavailable"), "{message}");
    assert_eq!(
        condition(&obj, "Reconciling").map(|c| (c.0, c.1)),
        Some(("True".to_string(), "KmsUnavailable".to_string()))
    );
    assert_eq!(condition(&obj, "Stalled"), None);
    assert_eq!(kstatus(&obj).0, "InProgress");
    ctl.stop().await.unwrap();
}

/// Status objects as an older controller wrote them (Ready only, no Stalled or
/// Reconciling): the Lua check still reads them as before.
#[test]
fn argocd_reads_ready_only_status() {
    let obj = |status: &str, reason: &str| {
        json!({
            "metadata": {"generation": 1},
            "status": {"observedGeneration": 1, "conditions": [
                {"type": "Ready", "status": status, "reason": reason, "message": "m", "observedGeneration": 1}
            ]}
        })
    };
    assert_eq!(argocd_health(&obj("True", "Unsealed")).0, "Healthy");
    assert_eq!(
        argocd_health(&obj("False", "KmsUnavailable")).0,
        "Progressing"
    );
    assert_eq!(argocd_health(&obj("False", "DecryptFailed")).0, "Degraded");
}
