//! Scenario 5 of issue 7: KMS becomes unreachable while the controller runs. The last
//! good Secret is kept, Ready=False KmsUnavailable, and the controller recovers by
//! itself (backoff with jitter) once KMS is back.
//!
//! The outage is simulated with a TCP proxy in front of the shared moto server that
//! this test alone talks through: stopping the shared moto (`scripts/testenv kms-stop`)
//! would break every other test running at the same time.

mod controller_support;

use std::net::SocketAddr;

use controller_support::*;
use kube::api::Api;
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::{Proxy, testenv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_outage_keeps_the_secret_and_recovers() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("ctl-kms-outage").await;
    let target: SocketAddr = env
        .kms_endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("moto address");
    let proxy = Proxy::start(target).await;
    let ctl = start_with(env, client.clone(), default_args(env, &ns), &proxy.url).await;

    let obj = seal_object(env, &ns, "svc", template(&[]), &[("password", "v1")]).await;
    apply(&client, &obj).await;
    wait_secret(&client, &ns, "svc", &[("password", "v1")]).await;
    wait_ready(&client, &ns, "svc", "True", "Unsealed").await;

    // KMS down, and the value rotated: the controller cannot decrypt.
    proxy.set_up(false);
    let live = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .get("svc")
        .await
        .unwrap();
    let rotated = merge_into(env, &live, &[("password", "v2")]).await;
    apply(&client, &rotated).await;
    wait_ready(&client, &ns, "svc", "False", "KmsUnavailable").await;
    // The last good Secret is still there, unchanged; it stays so while KMS is down.
    assert_eq!(
        secret_data(&client, &ns, "svc").await.unwrap()["password"],
        "v1"
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        secret_data(&client, &ns, "svc").await.unwrap()["password"],
        "v1"
    );
    assert_eq!(
        ready(&client, &ns, "svc").await.unwrap().1,
        "KmsUnavailable"
    );

    // KMS back: recovers with no intervention.
    proxy.set_up(true);
    wait_secret(&client, &ns, "svc", &[("password", "v2")]).await;
    wait_ready(&client, &ns, "svc", "True", "Unsealed").await;
    let text = ctl.state.render_metrics();
    assert!(
        text.contains("sealcred_reconciles_total{result=\"KmsUnavailable\"}"),
        "{text}"
    );
    assert!(text.contains("outcome=\"unavailable\""), "{text}");
    ctl.stop().await.unwrap();
}
