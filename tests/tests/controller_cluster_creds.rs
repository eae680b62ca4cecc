//! Issue 17 item 1: one `ClusterSealedStorageCred`, its Secret in every namespace it
//! names or selects, on the fuller test cluster (kube-controller-manager runs the
//! garbage collector).
//!
//! The controller runs without `--namespace` (the cluster kind needs every namespace),
//! sharded with `--selector` to this test's objects so that it leaves the other
//! tests' objects alone.

mod controller_support;

use std::collections::BTreeMap;

use controller_support::*;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use sealcred_shared::crd::{
    ClusterSealedStorageCred, NamespaceSelector, Scope, SealedStorageCred, SecretTemplate,
};
use sealcred_shared::provider::aws::AwsKms;
use sealcred_shared::seal::{self, SealInput};
use sealcred_tests::{TestEnv, testenv, unique_name};
use serde_json::json;

/// The label a namespace carries to be selected by this run's objects.
const SELECT: &str = "sealcred.io/cssc-test";
/// The label sharding the controller to this run's objects.
const SHARD: &str = "sealcred.io/cssc-shard";

/// A controller for every namespace, reconciling only objects labelled `SHARD=shard`.
async fn start_all_namespaces(env: &TestEnv, shard: &str) -> Running {
    let args: Vec<String> = [
        "sealcred-controller",
        "--kms-allow",
        env.key_arn(),
        "--selector",
        &format!("{SHARD}={shard}"),
        "--leader-elect=false",
        "--metrics-addr=off",
        "--max-backoff=4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    start_with(env, env.kube_client().await, args, env.kms_endpoint()).await
}

/// Seals `pairs` with scope `cluster` for the cluster object `name`.
async fn seal_cluster(
    env: &TestEnv,
    name: &str,
    shard: &str,
    namespaces: &[&str],
    selector: Option<&str>,
    pairs: &[(&str, &str)],
) -> ClusterSealedStorageCred {
    let sdk = sdk_config(env, env.kms_endpoint()).await;
    let kms = AwsKms::new(&sdk, env.key_arn()).expect("KMS provider");
    let view = seal::seal(
        &SealInput {
            name: name.into(),
            namespace: None,
            scope: Scope::Cluster,
            template: SecretTemplate {
                name: Some("flyte-task-env".into()),
                type_: "Opaque".into(),
                labels: BTreeMap::from([("app".to_string(), "flyte".to_string())]),
                annotations: BTreeMap::new(),
            },
            profile: None,
            entries: entries(pairs),
        },
        &[&kms],
    )
    .await
    .expect("sealing")
    .object;
    let mut obj = ClusterSealedStorageCred::from_sealed_view(
        view,
        namespaces.iter().map(|n| n.to_string()).collect(),
        selector.map(|v| NamespaceSelector {
            match_labels: BTreeMap::from([(SELECT.to_string(), v.to_string())]),
            ..NamespaceSelector::default()
        }),
    );
    obj.labels_mut().insert(SHARD.into(), shard.into());
    obj
}

async fn apply_cluster(client: &kube::Client, obj: &ClusterSealedStorageCred) {
    Api::<ClusterSealedStorageCred>::all(client.clone())
        .patch(
            &obj.name_any(),
            &PatchParams::apply("sealcred-tests").force(),
            &Patch::Apply(obj),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {}: {e}", obj.name_any()));
}

async fn label_namespace(client: &kube::Client, ns: &str, value: &str) {
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { SELECT: value } } })),
        )
        .await
        .unwrap();
}

async fn get_cluster(client: &kube::Client, name: &str) -> ClusterSealedStorageCred {
    Api::<ClusterSealedStorageCred>::all(client.clone())
        .get(name)
        .await
        .unwrap()
}

/// Waits until the object's status, for its current generation, says Ready=`status`
/// with `reason` and `namespacesReady` = `counts`.
async fn wait_cluster(client: &kube::Client, name: &str, status: &str, reason: &str, counts: &str) {
    wait_for(
        &format!("{name} Ready={status} {reason} {counts}"),
        CONVERGE,
        || async {
            let o = get_cluster(client, name).await;
            let s = o.status?;
            let c = s.conditions.iter().find(|c| c.type_ == "Ready")?;
            (s.observed_generation == o.metadata.generation
                && c.status == status
                && c.reason == reason
                && s.namespaces_ready.as_deref() == Some(counts))
            .then_some(())
        },
    )
    .await
}

async fn wait_gone(client: &kube::Client, ns: &str, name: &str, what: &str) {
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    wait_for(what, CONVERGE, || async {
        secrets.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_secret_in_every_named_and_selected_namespace() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let shard = unique_name("run");
    let pick = unique_name("pick");
    let canary = format!("CANARY-{}", unique_name("cssc"));

    let named = env.unique_namespace("cssc-named").await;
    let selected = env.unique_namespace("cssc-selected").await;
    label_namespace(&client, &selected, &pick).await;
    let unrelated = env.unique_namespace("cssc-unrelated").await;
    label_namespace(&client, &unrelated, "someone-else").await;
    let blocked = env.unique_namespace("cssc-blocked").await;
    // An unowned Secret of the same name: never touched, reported.
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": { "name": "flyte-task-env", "namespace": blocked },
        "stringData": { "token": "theirs" },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &blocked)
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();

    let ctl = start_all_namespaces(env, &shard).await;
    let name = unique_name("flyte-task-env");
    let pairs = [
        ("AWS_SECRET_ACCESS_KEY", canary.as_str()),
        ("AWS_REGION", "eu-west-1"),
    ];
    let obj = seal_cluster(env, &name, &shard, &[&named, &blocked], Some(&pick), &pairs).await;
    apply_cluster(&client, &obj).await;

    wait_secret(&client, &named, "flyte-task-env", &pairs).await;
    wait_secret(&client, &selected, "flyte-task-env", &pairs).await;
    wait_cluster(&client, &name, "False", "SecretConflict", "2/3").await;
    let live = get_cluster(&client, &name).await;
    let uid = live.uid().unwrap();
    // The copy's controller ownerReference is the cluster object.
    let copy = Api::<Secret>::namespaced(client.clone(), &named)
        .get("flyte-task-env")
        .await
        .unwrap();
    let owner = &copy.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("ClusterSealedStorageCred", uid.as_str(), Some(true))
    );
    assert_eq!(copy.labels().get("app").map(String::as_str), Some("flyte"));
    // The failing namespace first, with its reason; the unrelated one absent.
    let listed = &live.status.as_ref().unwrap().namespaces;
    assert_eq!(listed[0].name, blocked);
    assert_eq!(
        (listed[0].ready, listed[0].reason.as_str()),
        (false, "SecretConflict")
    );
    assert!(listed[0].message.contains("left untouched"), "{listed:?}");
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|n| n.name != unrelated));
    assert!(
        secret_data(&client, &unrelated, "flyte-task-env")
            .await
            .is_none()
    );
    let untouched = Api::<Secret>::namespaced(client.clone(), &blocked)
        .get("flyte-task-env")
        .await
        .unwrap();
    assert_eq!(untouched.metadata.owner_references, None);
    assert_eq!(
        secret_data(&client, &blocked, "flyte-task-env").await,
        Some(BTreeMap::from([("token".into(), "theirs".into())]))
    );
    // One unseal for both namespaces.
    assert_eq!(ctl.metrics().kms_calls_total(), 1);

    // A namespace created later, selected: it gets the Secret (no object change).
    let later = env.unique_namespace("cssc-later").await;
    label_namespace(&client, &later, &pick).await;
    wait_secret(&client, &later, "flyte-task-env", &pairs).await;
    wait_cluster(&client, &name, "False", "SecretConflict", "3/4").await;

    // Relabelled out: its copy is deleted.
    label_namespace(&client, &selected, "not-any-more").await;
    wait_gone(
        &client,
        &selected,
        "flyte-task-env",
        "the relabelled namespace's copy to go",
    )
    .await;

    // Removed from the list (and the blocked one too): the copy goes; the unowned
    // Secret stays as it was.
    let mut fewer = obj.clone();
    fewer.spec.namespaces = vec![];
    apply_cluster(&client, &fewer).await;
    wait_gone(
        &client,
        &named,
        "flyte-task-env",
        "the unlisted namespace's copy to go",
    )
    .await;
    wait_cluster(&client, &name, "True", "Unsealed", "1/1").await;
    assert_eq!(
        secret_data(&client, &blocked, "flyte-task-env").await,
        Some(BTreeMap::from([("token".into(), "theirs".into())]))
    );

    // The canary is in no status and no Event.
    let status = serde_json::to_string(&get_cluster(&client, &name).await.status).unwrap();
    assert!(!status.contains(&canary));
    let events = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    let ours: Vec<&Event> = events
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid.as_str()))
        .collect();
    assert!(
        ours.iter().any(|e| e.reason.as_deref() == Some("Unsealed")),
        "an Unsealed Event"
    );
    assert!(
        ours.iter()
            .any(|e| e.reason.as_deref() == Some("SecretConflict")),
        "a SecretConflict Event"
    );
    for e in &ours {
        assert!(!serde_json::to_string(e).unwrap().contains(&canary));
    }

    // Deleting the object: the garbage collector deletes every copy.
    Api::<ClusterSealedStorageCred>::all(client.clone())
        .delete(&name, &DeleteParams::background())
        .await
        .unwrap();
    wait_gone(
        &client,
        &later,
        "flyte-task-env",
        "the garbage collector to delete the copy",
    )
    .await;
    assert!(
        secret_data(&client, &blocked, "flyte-task-env")
            .await
            .is_some(),
        "the unowned Secret is not the object's"
    );
    ctl.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciphertext_does_not_cross_between_the_kinds() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let shard = unique_name("run");
    let ns = env.unique_namespace("cssc-cross").await;
    let name = unique_name("shared-creds");

    // Sealed for a ClusterSealedStorageCred, copied into a SealedStorageCred of the
    // same name.
    let cluster = seal_cluster(env, &name, &shard, &[&ns], None, &[("k", "v")]).await;
    let mut lifted = SealedStorageCred::new(&name, cluster.spec.sealed.clone());
    lifted.metadata.namespace = Some(ns.clone());
    lifted.labels_mut().insert(SHARD.into(), shard.clone());
    // Sealed for a SealedStorageCred (strict), copied into a ClusterSealedStorageCred.
    let namespaced = seal_object(env, &ns, "other", template(&[]), &[("k", "v")]).await;
    let mut promoted = ClusterSealedStorageCred::from_sealed_view(
        SealedStorageCred::new(&unique_name("promoted"), namespaced.spec.clone()),
        vec![ns.clone()],
        None,
    );
    promoted.labels_mut().insert(SHARD.into(), shard.clone());

    let ctl = start_all_namespaces(env, &shard).await;
    apply(&client, &lifted).await;
    apply_cluster(&client, &promoted).await;
    wait_ready(&client, &ns, &name, "False", "InvalidSpec").await;
    let promoted_name = promoted.name_any();
    wait_for("the promoted object's InvalidSpec", CONVERGE, || async {
        let o = get_cluster(&client, &promoted_name).await;
        let c = o
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (c.status == "False" && c.reason == "InvalidSpec" && c.message.contains("scope strict"))
            .then_some(())
    })
    .await;
    let lifted_status = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .get(&name)
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(
        lifted_status.conditions[0]
            .message
            .contains("scope cluster"),
        "{:?}",
        lifted_status.conditions
    );
    // Refused before any KMS call, and nothing written.
    assert_eq!(ctl.metrics().kms_calls_total(), 0);
    assert!(secret_data(&client, &ns, &name).await.is_none());
    assert!(secret_data(&client, &ns, &promoted_name).await.is_none());
    ctl.stop().await.unwrap();
}
