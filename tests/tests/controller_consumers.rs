//! Issue 14 on the fuller test cluster (kube-controller-manager, kube-scheduler and
//! KWOK nodes, `scripts/testenv`): restart-on-change through real rollouts, and the
//! consumer status that follows them.
//!
//! - A Deployment (3 replicas), a StatefulSet and a DaemonSet name the Secret. The
//!   credential changes: the controller patches the three, their controllers roll them,
//!   KWOK runs the new pods; the test waits until every pod of each runs the new
//!   template and no old pod remains. `status.consumers` ends `3/3`, `Updated`, with
//!   `ConsumersUpdated=True`, by watch (the resync is an hour) and with no KMS call
//!   for following the rollouts. Re-applying the same object, or restarting the
//!   controller, rolls nothing.
//! - Workloads that name a Secret no object writes, or one of another namespace, are
//!   reported by an Event (and in the status, for the other namespace) and never rolled.

mod controller_support;

use std::collections::BTreeMap;
use std::time::Duration;

use controller_support::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::Resource;
use kube::api::{Api, ListParams};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::{TestEnv, testenv, unique_name};

async fn generation<K>(client: &kube::Client, ns: &str, name: &str) -> i64
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
        .meta()
        .generation
        .unwrap()
}

async fn generations(client: &kube::Client, ns: &str) -> [i64; 3] {
    [
        generation::<Deployment>(client, ns, "web").await,
        generation::<StatefulSet>(client, ns, "db").await,
        generation::<DaemonSet>(client, ns, "agent").await,
    ]
}

fn args_with_long_resync(env: &TestEnv, ns: &str) -> Vec<String> {
    let mut args = default_args(env, ns);
    args.extend(["--resync".to_string(), "3600".to_string()]);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_change_rolls_every_kind_and_the_status_follows() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("consumers").await;
    let n_nodes = nodes(env);

    let ctl = start_with(
        env,
        client.clone(),
        args_with_long_resync(env, &ns),
        env.kms_endpoint(),
    )
    .await;
    let obj = seal_object(env, &ns, "app", template(&[]), &[("key", "v1")]).await;
    apply(&client, &obj).await;
    wait_ready(&client, &ns, "app", "True", "Unsealed").await;

    let mut web: Deployment = workload("Deployment", "web", Some("app"));
    web.spec.replicas = Some(3);
    create(&client, &ns, &web).await;
    create(
        &client,
        &ns,
        &workload::<StatefulSet>("StatefulSet", "db", Some("app")),
    )
    .await;
    create(
        &client,
        &ns,
        &workload::<DaemonSet>("DaemonSet", "agent", Some("app")),
    )
    .await;
    wait_for("the first pods Running on KWOK nodes", ROLLOUT, || async {
        running(&client, &ns, "web", 3).await?;
        running(&client, &ns, "db", 1).await?;
        running(&client, &ns, "agent", n_nodes).await
    })
    .await;
    // Named after the Secret was written: not rolled, reported as untracked.
    let (summary, cond, states) = wait_for("the consumers in the status", CONVERGE, || async {
        consumers(&client, &ns, "app")
            .await
            .filter(|c| c.2.len() == 3)
    })
    .await;
    assert_eq!(
        (summary.as_str(), cond.as_str()),
        ("0/3", "Unknown"),
        "{states:?}"
    );
    assert!(states.values().all(|s| s == "Untracked"), "{states:?}");
    let before = generations(&client, &ns).await;

    // The credential changes.
    let changed = merge_into(env, &obj, &[("key", "v2")]).await;
    apply(&client, &changed).await;
    wait_secret(&client, &ns, "app", &[("key", "v2")]).await;
    let digest = secret_digest(&client, &ns, "app").await;
    let pods = wait_for(
        "every pod on the new template, no old pod left",
        ROLLOUT,
        || async {
            let mut all = rolled(&client, &ns, "web", 3, "app", &digest).await?;
            all.extend(rolled(&client, &ns, "db", 1, "app", &digest).await?);
            all.extend(rolled(&client, &ns, "agent", n_nodes, "app", &digest).await?);
            Some(all)
        },
    )
    .await;
    assert_eq!(pods.len(), 4 + n_nodes);
    let after = generations(&client, &ns).await;
    for (b, a) in before.iter().zip(after) {
        assert_eq!(
            a,
            b + 1,
            "one template change per workload: {before:?} → {after:?}"
        );
    }

    // The status follows the rollouts by watch (the resync is an hour).
    let (summary, _, states) = wait_for("ConsumersUpdated=True, 3/3", ROLLOUT, || async {
        consumers(&client, &ns, "app")
            .await
            .filter(|c| c.1 == "True")
    })
    .await;
    assert_eq!(summary, "3/3");
    assert_eq!(
        states,
        BTreeMap::from([
            ("DaemonSet/agent".to_string(), "Updated".to_string()),
            ("Deployment/web".to_string(), "Updated".to_string()),
            ("StatefulSet/db".to_string(), "Updated".to_string()),
        ])
    );
    let status = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .get("app")
        .await
        .unwrap()
        .status
        .unwrap();
    let web_status = status.consumers.iter().find(|c| c.name == "web").unwrap();
    assert_eq!(
        (
            web_status.replicas,
            web_status.updated_replicas,
            web_status.ready_replicas
        ),
        (3, 3, 3)
    );
    // Following the rollouts made no KMS call: the first unseal, the one that recorded
    // the restart digest when the workloads first named the Secret, and the change.
    assert_eq!(ctl.metrics().kms_calls_total(), 3);

    // The same object again, and a controller restart: no rollout.
    apply(&client, &changed).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ctl.stop().await.unwrap();
    let again = start_with(
        env,
        client.clone(),
        args_with_long_resync(env, &ns),
        env.kms_endpoint(),
    )
    .await;
    wait_for(
        "the restarted controller to check the object",
        CONVERGE,
        || async { (again.metrics().reconciles_total() >= 1).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        generations(&client, &ns).await,
        after,
        "no rollout on re-apply or restart"
    );
    let (summary, cond, _) = wait_for(
        "the restarted controller's consumer status",
        CONVERGE,
        || async {
            consumers(&client, &ns, "app")
                .await
                .filter(|c| c.1 == "True")
        },
    )
    .await;
    assert_eq!((summary.as_str(), cond.as_str()), ("3/3", "True"));
    again.stop().await.unwrap();
}

/// Events about workload `name` with `reason`.
async fn events_for(client: &kube::Client, ns: &str, name: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misnamed_consumers_are_reported_and_never_rolled() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("misnamed").await;
    let other = env.unique_namespace("misnamed-other").await;
    let run = unique_name("run");

    // One controller for both namespaces, kept to this run's objects by a label.
    let mut args = default_args(env, &ns);
    let i = args.iter().position(|a| a == "--namespace").unwrap();
    args.drain(i..i + 2);
    args.extend(["--selector".to_string(), format!("sealcred-test-run={run}")]);
    let ctl = start_with(env, client.clone(), args, env.kms_endpoint()).await;
    let mut obj = seal_object(env, &ns, "app", template(&[]), &[("key", "v1")]).await;
    obj.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("sealcred-test-run".into(), run.clone());
    apply(&client, &obj).await;
    wait_ready(&client, &ns, "app", "True", "Unsealed").await;

    // A typo in its own namespace, and a name in another namespace.
    create(
        &client,
        &ns,
        &workload::<Deployment>("Deployment", "typo", Some("apq")),
    )
    .await;
    create(
        &client,
        &other,
        &workload::<Deployment>("Deployment", "cross", Some(&format!("{ns}/app"))),
    )
    .await;
    wait_for(
        "the UnknownSecret and CrossNamespaceSecret Events",
        Duration::from_secs(60),
        || async {
            let a = events_for(&client, &ns, "typo", "UnknownSecret").await;
            let b = events_for(&client, &other, "cross", "CrossNamespaceSecret").await;
            (!a.is_empty() && !b.is_empty()).then_some(())
        },
    )
    .await;
    let (_, _, states) = wait_for("the refused consumer in the status", CONVERGE, || async {
        consumers(&client, &ns, "app").await
    })
    .await;
    assert_eq!(
        states,
        BTreeMap::from([(format!("Deployment/{other}/cross"), "Refused".to_string())])
    );

    // The credential changes: neither is rolled.
    apply(&client, &merge_into(env, &obj, &[("key", "v2")]).await).await;
    wait_secret(&client, &ns, "app", &[("key", "v2")]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(generation::<Deployment>(&client, &ns, "typo").await, 1);
    assert_eq!(generation::<Deployment>(&client, &other, "cross").await, 1);
    // Reported once each.
    assert_eq!(
        events_for(&client, &ns, "typo", "UnknownSecret")
            .await
            .len(),
        1
    );
    ctl.stop().await.unwrap();
}
