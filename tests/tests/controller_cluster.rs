//! Issue 14 on the fuller test cluster (kube-controller-manager runs the garbage
//! collector): what happens to a Secret when its SealedStorageCred is deleted; and
//! scale-out by sharding, with a lost Lease.

mod controller_support;

use std::time::Duration;

use controller_support::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::{testenv, unique_name};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_object_deletes_its_secret_unless_orphaned() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("gc").await;
    let ctl = start(env, &ns).await;
    for name in ["gone", "kept"] {
        apply(
            &client,
            &seal_object(env, &ns, name, template(&[]), &[("k", name)]).await,
        )
        .await;
    }
    wait_secret(&client, &ns, "gone", &[("k", "gone")]).await;
    wait_secret(&client, &ns, "kept", &[("k", "kept")]).await;
    let objects = Api::<SealedStorageCred>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);

    // Background propagation (kubectl's default): the garbage collector deletes the Secret.
    objects
        .delete("gone", &DeleteParams::background())
        .await
        .unwrap();
    wait_for(
        "the garbage collector to delete Secret gone",
        CONVERGE,
        || async {
            secrets
                .get_opt("gone")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;

    // --cascade=orphan: the Secret stays, without its owner reference, values intact.
    objects
        .delete("kept", &DeleteParams::orphan())
        .await
        .unwrap();
    wait_for("object kept to go", CONVERGE, || async {
        objects
            .get_opt("kept")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let s = wait_for(
        "the orphaned Secret to lose its owner reference",
        CONVERGE,
        || async {
            secrets.get_opt("kept").await.unwrap().filter(|s| {
                s.metadata
                    .owner_references
                    .as_deref()
                    .unwrap_or_default()
                    .is_empty()
            })
        },
    )
    .await;
    assert!(s.metadata.deletion_timestamp.is_none());
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_secret(&client, &ns, "kept", &[("k", "kept")]).await;
    ctl.stop().await.unwrap();
}

fn shard_args(
    env: &sealcred_tests::TestEnv,
    ns: &str,
    shard: &str,
    lease: &str,
    id: &str,
) -> Vec<String> {
    let mut args = leader_elected_args(env, ns);
    args.extend(
        [
            "--selector",
            &format!("shard={shard}"),
            "--lease-name",
            lease,
            "--identity",
            id,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_split_the_objects_and_a_lost_lease_hands_over() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("shards").await;
    let (lease_a, lease_b) = (unique_name("lease-a"), unique_name("lease-b"));

    let a = start_with(
        env,
        client.clone(),
        shard_args(env, &ns, "a", &lease_a, "shard-a-1"),
        env.kms_endpoint(),
    )
    .await;
    let b = start_with(
        env,
        client.clone(),
        shard_args(env, &ns, "b", &lease_b, "shard-b-1"),
        env.kms_endpoint(),
    )
    .await;
    wait_for("both shards to lead their Lease", CONVERGE, || async {
        (a.metrics().is_leader() && b.metrics().is_leader()).then_some(())
    })
    .await;
    let mut objs = Vec::new();
    for shard in ["a", "b"] {
        for i in 0..3 {
            let name = format!("{shard}-{i}");
            let obj = seal_object(env, &ns, &name, template(&[]), &[("k", &name)]).await;
            let mut obj = obj;
            obj.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("shard".into(), shard.into());
            apply(&client, &obj).await;
            objs.push(name);
        }
    }
    for name in &objs {
        wait_secret(&client, &ns, name, &[("k", name)]).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Each shard unsealed its three objects and no other.
    assert_eq!(a.metrics().kms_calls_total(), 3);
    assert_eq!(b.metrics().kms_calls_total(), 3);

    // A standby for shard a; then shard a's Lease is taken from its leader.
    let standby = start_with(
        env,
        client.clone(),
        shard_args(env, &ns, "a", &lease_a, "shard-a-2"),
        env.kms_endpoint(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!standby.metrics().is_leader());
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    Api::<Lease>::namespaced(client.clone(), &ns)
        .patch(
            &lease_a,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "holderIdentity": "intruder", "renewTime": now, "acquireTime": now } })),
        )
        .await
        .unwrap();
    // The leader notices at its next renewal and exits with LostLeadership.
    let res = tokio::time::timeout(Duration::from_secs(20), a.handle)
        .await
        .expect("the leader exits after losing its Lease")
        .expect("controller task");
    match res {
        Err(sealcred_controller::Error::LostLeadership(l)) => assert_eq!(l, lease_a),
        other => panic!("expected LostLeadership, got {other:?}"),
    }
    // The intruder never renews: the standby takes over once the Lease expires.
    wait_for("the standby to take shard a over", CONVERGE, || async {
        standby.metrics().is_leader().then_some(())
    })
    .await;
    let obj = seal_object(env, &ns, "a-3", template(&[]), &[("k", "a-3")]).await;
    let mut obj = obj;
    obj.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("shard".into(), "a".into());
    apply(&client, &obj).await;
    wait_secret(&client, &ns, "a-3", &[("k", "a-3")]).await;
    assert_eq!(
        b.metrics().kms_calls_total(),
        3,
        "shard b ignores shard a's objects"
    );
    standby.stop().await.unwrap();
    b.stop().await.unwrap();
}
