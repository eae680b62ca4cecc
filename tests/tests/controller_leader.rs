//! Scenario 8 of issue 7: two replicas with leader election; only the leader
//! reconciles, and when it dies (no lease release) the other takes over.

mod controller_support;

use std::time::Duration;

use controller_support::*;
use kube::api::Api;
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::{testenv, unique_name};

fn replica_args(env: &sealcred_tests::TestEnv, ns: &str, lease: &str, id: &str) -> Vec<String> {
    let mut args = leader_elected_args(env, ns);
    args.extend(
        ["--lease-name", lease, "--identity", id]
            .iter()
            .map(|s| s.to_string()),
    );
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("ctl-leader").await;
    let lease = unique_name("lease");

    let a = start_with(
        env,
        client.clone(),
        replica_args(env, &ns, &lease, "replica-a"),
        env.kms_endpoint(),
    )
    .await;
    wait_for("replica a to lead", CONVERGE, || async {
        a.metrics().is_leader().then_some(())
    })
    .await;
    let b = start_with(
        env,
        client.clone(),
        replica_args(env, &ns, &lease, "replica-b"),
        env.kms_endpoint(),
    )
    .await;

    let obj = seal_object(env, &ns, "cred", template(&[]), &[("k", "one")]).await;
    apply(&client, &obj).await;
    wait_secret(&client, &ns, "cred", &[("k", "one")]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a.metrics().reconciles_total() > 0);
    assert_eq!(
        b.metrics().reconciles_total(),
        0,
        "the standby does not reconcile"
    );
    assert!(!b.metrics().is_leader());

    // The leader dies without releasing the lease: b takes over after the lease expires.
    a.handle.abort();
    wait_for("replica b to lead", Duration::from_secs(20), || async {
        b.metrics().is_leader().then_some(())
    })
    .await;
    let live = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .get("cred")
        .await
        .unwrap();
    let changed = merge_into(env, &live, &[("k", "two")]).await;
    apply(&client, &changed).await;
    wait_secret(&client, &ns, "cred", &[("k", "two")]).await;
    assert!(b.metrics().reconciles_total() > 0);

    // A clean stop releases the lease.
    b.stop().await.unwrap();
    let lease_obj =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &ns)
            .get(&lease)
            .await
            .unwrap();
    assert_eq!(lease_obj.spec.unwrap().holder_identity, None);
}
