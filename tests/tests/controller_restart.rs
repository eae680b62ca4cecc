//! Scenario 6 of issue 7: a controller restarted with nothing changed makes no KMS call;
//! after the restart, drift is still repaired.

mod controller_support;

use controller_support::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use sealcred_tests::testenv;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_nothing_changed_makes_zero_kms_calls() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("ctl-restart").await;

    let first = start(env, &ns).await;
    for i in 0..3 {
        let name = format!("obj-{i}");
        let obj = seal_object(env, &ns, &name, template(&[]), &[("v", "value")]).await;
        apply(&client, &obj).await;
    }
    for i in 0..3 {
        wait_ready(&client, &ns, &format!("obj-{i}"), "True", "Unsealed").await;
    }
    assert_eq!(first.metrics().kms_calls_total(), 3);
    first.stop().await.unwrap();

    let second = start(env, &ns).await;
    wait_for(
        "the restarted controller to check all 3 objects",
        CONVERGE,
        || async { (second.metrics().reconciles_total() >= 3).then_some(()) },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        second.metrics().kms_calls_total(),
        0,
        "no KMS call on restart"
    );
    let text = second.state.render_metrics();
    assert!(
        text.contains("sealcred_reconciles_total{result=\"unchanged\"}"),
        "{text}"
    );
    assert!(!text.contains("result=\"written\""), "{text}");

    // Drift after the restart is still detected and repaired (one decrypt).
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            "obj-1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "v": "ZWRpdGVk" } })),
        )
        .await
        .unwrap();
    wait_secret(&client, &ns, "obj-1", &[("v", "value")]).await;
    assert_eq!(second.metrics().kms_calls_total(), 1);
    second.stop().await.unwrap();
}
