//! Rotation against the real environment:
//! - issue 5: workloads annotated `sealcred.io/restart-on-change` are rolled exactly once
//!   when the sealed content of their Secret changes, and never by a re-apply of the same
//!   object or a controller restart;
//! - a data key wrapped by two KMS keys behind two KMS endpoints (one per region,
//!   `--kms-endpoint REGION=URL`): with one endpoint down the controller still unseals
//!   through the other; with both down, Ready=False KmsUnavailable and the Secret is kept.
//!
//! Endpoint 1 is the shared moto behind a TCP proxy this test alone talks through (stopping
//! the shared moto would break the other tests); endpoint 2 is a second moto_server this
//! test starts (and stops) itself, holding a key in another region.

mod controller_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::config::Credentials;
use controller_support::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use sealcred_shared::crd::{Scope, SealedStorageCred};
use sealcred_shared::provider::aws::AwsKms;
use sealcred_shared::seal::{self, SealInput};
use sealcred_tests::{Proxy, TestEnv, testenv};
use serde_json::json;
use tokio::process::{Child, Command};

const RESTARTED_FOR: &str = "sealcred.io/restarted-for-app";

/// (metadata.generation, the pod-template annotation restarted-for-app).
async fn rollout_state<K>(client: &kube::Client, ns: &str, name: &str) -> (i64, Option<String>)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Serialize,
{
    let obj = Api::<K>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let v = serde_json::to_value(&obj).unwrap();
    let ann = v["spec"]["template"]["metadata"]["annotations"][RESTARTED_FOR]
        .as_str()
        .map(str::to_string);
    (obj.meta().generation.unwrap_or_default(), ann)
}

async fn events(client: &kube::Client, ns: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Forces a reconcile of `ns/name` (`sealcred.io/reconcile-requested-at`) and waits
/// until the controller has finished at least one more reconciliation.
async fn poke_and_settle(client: &kube::Client, ctl: &Running, ns: &str, name: &str, n: u32) {
    let before = ctl.metrics().reconciles_total();
    Api::<SealedStorageCred>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": {
                "sealcred.io/reconcile-requested-at": n.to_string()
            } } })),
        )
        .await
        .unwrap();
    wait_for("a reconcile after the poke", CONVERGE, || async {
        (ctl.metrics().reconciles_total() > before).then_some(())
    })
    .await;
    // Let any follow-up reconcile (triggered by our own writes) finish too.
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_workloads_restart_exactly_once_per_change() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("ctl-restart").await;
    let ctl = start(env, &ns).await;

    let obj = seal_object(env, &ns, "app", template(&[]), &[("token", "tok-1111")]).await;
    apply(&client, &obj).await;
    wait_secret(&client, &ns, "app", &[("token", "tok-1111")]).await;
    wait_ready(&client, &ns, "app", "True", "Unsealed").await;

    // Workloads created after the Secret: the pods read the current value.
    let pp = PostParams::default();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    deployments
        .create(&pp, &workload("Deployment", "web", Some("app")))
        .await
        .unwrap();
    deployments
        .create(&pp, &workload("Deployment", "unannotated", None))
        .await
        .unwrap();
    deployments
        .create(
            &pp,
            &workload("Deployment", "other-secret", Some("db,cache")),
        )
        .await
        .unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .create(&pp, &workload("StatefulSet", "store", Some("cache, app")))
        .await
        .unwrap();
    Api::<DaemonSet>::namespaced(client.clone(), &ns)
        .create(&pp, &workload("DaemonSet", "agent", Some("app")))
        .await
        .unwrap();

    // A resync-like reconcile with nothing changed: newly annotated workloads are not rolled.
    poke_and_settle(&client, &ctl, &ns, "app", 1).await;
    assert_eq!(
        rollout_state::<Deployment>(&client, &ns, "web").await,
        (1, None)
    );
    assert_eq!(ctl.metrics().workload_restarts_total(), 0);

    // A value changes (merge: no decryption) and the object is re-applied.
    let live = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .get("app")
        .await
        .unwrap();
    let merged = merge_into(env, &live, &[("token", "tok-2222")]).await;
    apply(&client, &merged).await;
    wait_secret(&client, &ns, "app", &[("token", "tok-2222")]).await;
    let digest = wait_for("web rolled", CONVERGE, || async {
        match rollout_state::<Deployment>(&client, &ns, "web").await {
            (2, Some(d)) => Some(d),
            _ => None,
        }
    })
    .await;
    assert_eq!(digest.len(), 64, "a SHA-256: {digest}");
    wait_for("store and agent rolled", CONVERGE, || async {
        let s = rollout_state::<StatefulSet>(&client, &ns, "store").await;
        let d = rollout_state::<DaemonSet>(&client, &ns, "agent").await;
        (s == (2, Some(digest.clone())) && d == (2, Some(digest.clone()))).then_some(())
    })
    .await;
    for name in ["unannotated", "other-secret"] {
        assert_eq!(
            rollout_state::<Deployment>(&client, &ns, name).await,
            (1, None),
            "{name} is not rolled"
        );
    }
    assert_eq!(ctl.metrics().workload_restarts_total(), 3);
    let text = ctl.state.render_metrics();
    for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
        let needle = format!("sealcred_workload_restarts_total{{kind=\"{kind}\"}} 1");
        assert!(text.contains(&needle), "{needle} not in\n{text}");
    }
    // The patch was a merge patch by our field manager, touching only that annotation.
    let web = deployments.get("web").await.unwrap();
    assert!(
        web.managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("sealcred-controller")
                && m.operation.as_deref() == Some("Update")),
        "{:?}",
        web.managed_fields()
    );
    // Events on the workload and on the SealedStorageCred.
    wait_for("restart events", CONVERGE, || async {
        let evs = events(&client, &ns).await;
        let on_web = evs.iter().any(|e| {
            e.reason.as_deref() == Some("SecretChanged")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Deployment")
        });
        let on_obj = evs.iter().any(|e| {
            e.reason.as_deref() == Some("WorkloadRestarted")
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("SealedStorageCred")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("Deployment web"))
        });
        (on_web && on_obj).then_some(())
    })
    .await;
    let notes: Vec<String> = events(&client, &ns)
        .await
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    assert!(
        notes.iter().all(|n| !n.contains("tok-")),
        "no value in events: {notes:?}"
    );

    // The same object applied again, and a reconcile forced: nothing changes.
    apply(&client, &merged).await;
    poke_and_settle(&client, &ctl, &ns, "app", 2).await;
    assert_eq!(
        rollout_state::<Deployment>(&client, &ns, "web").await,
        (2, Some(digest.clone()))
    );
    assert_eq!(ctl.metrics().workload_restarts_total(), 3);
    ctl.stop().await.unwrap();

    // A controller restart: the first reconcile changes nothing, and calls no KMS.
    let ctl = start(env, &ns).await;
    wait_for("the first reconcile after restart", CONVERGE, || async {
        (ctl.metrics().reconciles_total() >= 1).then_some(())
    })
    .await;
    poke_and_settle(&client, &ctl, &ns, "app", 3).await;
    assert_eq!(
        rollout_state::<Deployment>(&client, &ns, "web").await,
        (2, Some(digest.clone()))
    );
    assert_eq!(
        rollout_state::<StatefulSet>(&client, &ns, "store").await,
        (2, Some(digest.clone()))
    );
    assert_eq!(ctl.metrics().workload_restarts_total(), 0);
    assert_eq!(ctl.metrics().kms_calls_total(), 0);

    // A second change rolls each annotated workload once more.
    let live = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .get("app")
        .await
        .unwrap();
    let merged = merge_into(env, &live, &[("token", "tok-3333")]).await;
    apply(&client, &merged).await;
    wait_secret(&client, &ns, "app", &[("token", "tok-3333")]).await;
    let second = wait_for("web rolled again", CONVERGE, || async {
        match rollout_state::<Deployment>(&client, &ns, "web").await {
            (3, Some(d)) => Some(d),
            _ => None,
        }
    })
    .await;
    assert_ne!(second, digest);
    poke_and_settle(&client, &ctl, &ns, "app", 4).await;
    assert_eq!(
        rollout_state::<Deployment>(&client, &ns, "web").await,
        (3, Some(second))
    );
    assert_eq!(ctl.metrics().workload_restarts_total(), 3);
    ctl.stop().await.unwrap();
}

/// A second moto_server (from the project venv) on a free port; killed when dropped.
struct Moto2 {
    url: String,
    child: Child,
}

impl Moto2 {
    async fn start(env: &TestEnv) -> Moto2 {
        let bin = env.root().join(".venv/bin/moto_server");
        assert!(
            bin.exists(),
            "{} missing: `scripts/testenv up` installs it",
            bin.display()
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let moto = Moto2 {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let kms = moto.client(env, "us-west-2");
        wait_for("moto #2 to answer", Duration::from_secs(60), || async {
            kms.list_keys().send().await.ok().map(|_| ())
        })
        .await;
        moto
    }

    fn client(&self, env: &TestEnv, region: &str) -> aws_sdk_kms::Client {
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(&self.url)
            .credentials_provider(Credentials::new(
                env.var("AWS_ACCESS_KEY_ID").unwrap_or("testing"),
                env.var("AWS_SECRET_ACCESS_KEY").unwrap_or("testing"),
                None,
                None,
                "sealcred-tests",
            ))
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kms_keys_in_two_endpoints() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("ctl-two-kms").await;

    // Key A: the shared moto (us-east-1), reached by the controller through a proxy.
    let key_a = env.key_arn().to_string();
    let target: SocketAddr = env
        .kms_endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("moto address");
    let proxy_a = Proxy::start(target).await;
    // Key B: a key in us-west-2 on a second moto.
    let moto2 = Moto2::start(env).await;
    let key_b = moto2
        .client(env, "us-west-2")
        .create_key()
        .description("sealcred controller_rotation key B")
        .send()
        .await
        .expect("CreateKey on moto #2")
        .key_metadata
        .expect("key metadata")
        .arn
        .expect("key ARN");
    assert!(key_b.starts_with("arn:aws:kms:us-west-2:"), "{key_b}");
    assert!(key_a.starts_with("arn:aws:kms:us-east-1:"), "{key_a}");

    // The test seals directly against both servers.
    let kms_a = AwsKms::new(&sdk_config(env, env.kms_endpoint()).await, &key_a).unwrap();
    let kms_b = AwsKms::new(&sdk_config(env, &moto2.url).await, &key_b).unwrap();
    let obj = seal::seal(
        &SealInput {
            name: "svc".into(),
            namespace: Some(ns.clone()),
            scope: Scope::Strict,
            template: template(&[]),
            profile: None,
            entries: entries(&[("password", "v1")]),
        },
        &[&kms_a, &kms_b],
    )
    .await
    .expect("sealing under A and B")
    .object;
    let wrapping_keys: Vec<&str> = obj.spec.data_keys[0]
        .wrappings
        .iter()
        .map(|w| w.key_id.as_str())
        .collect();
    assert_eq!(wrapping_keys, [key_a.as_str(), key_b.as_str()]);

    // The controller: one endpoint per region; the default endpoint leads nowhere.
    let mut args = default_args(env, &ns);
    args.extend([
        "--kms-allow".to_string(),
        key_b.clone(),
        "--kms-endpoint".to_string(),
        format!("us-east-1={}", proxy_a.url),
        format!("--kms-endpoint=us-west-2={}", moto2.url),
    ]);
    let ctl = start_with(env, client.clone(), args, "http://127.0.0.1:9").await;
    apply(&client, &obj).await;
    wait_secret(&client, &ns, "svc", &[("password", "v1")]).await;
    wait_ready(&client, &ns, "svc", "True", "Unsealed").await;

    // Endpoint 1 down: a changed value is unsealed through key B.
    proxy_a.set_up(false);
    let live = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .get("svc")
        .await
        .unwrap();
    let v2 = seal::merge(
        &live,
        &entries(&[("password", "v2")]),
        seal::Keys::Given(&[&kms_a, &kms_b]),
    )
    .await
    .expect("merging v2")
    .object;
    apply(&client, &v2).await;
    wait_secret(&client, &ns, "svc", &[("password", "v2")]).await;
    wait_ready(&client, &ns, "svc", "True", "Unsealed").await;
    let text = ctl.state.render_metrics();
    assert!(
        text.contains("sealcred_kms_calls_total{operation=\"Decrypt\",outcome=\"unavailable\"}"),
        "{text}"
    );

    // Both down: Ready=False KmsUnavailable, the last good Secret kept.
    let live = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .get("svc")
        .await
        .unwrap();
    let v3 = seal::merge(
        &live,
        &entries(&[("password", "v3")]),
        seal::Keys::Given(&[&kms_a, &kms_b]),
    )
    .await
    .expect("merging v3")
    .object;
    moto2.stop().await;
    apply(&client, &v3).await;
    wait_ready(&client, &ns, "svc", "False", "KmsUnavailable").await;
    let obj = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .get("svc")
        .await
        .unwrap();
    let message = &obj.status.unwrap().conditions[0].message;
    assert!(
        message.contains("none of the 2 wrappings") && message.contains("unreachable"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        secret_data(&client, &ns, "svc").await,
        Some(BTreeMap::from([("password".to_string(), "v2".to_string())]))
    );
    ctl.stop().await.unwrap();
}
