//! Rollouts on the fuller test cluster (kube-controller-manager, kube-scheduler and
//! KWOK nodes): creating consumers, waiting for their pods, reading the consumer
//! status the controller reports.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use sealcred_controller::restart::restarted_for_key;
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::TestEnv;

/// How long a test waits for a rollout on KWOK nodes.
pub const ROLLOUT: Duration = Duration::from_secs(120);

/// How many simulated nodes the environment runs (`SEALCRED_TESTENV_NODES`).
pub fn nodes(env: &TestEnv) -> usize {
    env.var("SEALCRED_TESTENV_NODES")
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}

/// The restart digest Secret `secret` records (`sealcred.io/restart-digest`).
pub async fn secret_digest(client: &kube::Client, ns: &str, secret: &str) -> String {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get(secret)
        .await
        .unwrap();
    s.annotations()
        .get("sealcred.io/restart-digest")
        .cloned()
        .expect("the Secret records a restart digest")
}

/// Creates a namespaced object (a workload), failing the test on any error.
pub async fn create<K>(client: &kube::Client, ns: &str, obj: &K)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::Serialize
        + DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), obj)
        .await
        .unwrap();
}

/// The pods of workload `app=name` if every one of them (`want` pods, none deleting)
/// is Running and Ready with the pod-template annotation for Secret `secret`
/// (`sealcred.io/restarted-for-<secret>`) equal to `digest`.
pub async fn rolled(
    client: &kube::Client,
    ns: &str,
    name: &str,
    want: usize,
    secret: &str,
    digest: &str,
) -> Option<Vec<Pod>> {
    let key = restarted_for_key(secret);
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await
        .ok()?
        .items;
    let ok = pods.len() == want
        && pods.iter().all(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.annotations().get(&key).map(String::as_str) == Some(digest)
                && p.status.as_ref().is_some_and(|s| {
                    s.phase.as_deref() == Some("Running")
                        && s.conditions
                            .iter()
                            .flatten()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
        });
    ok.then_some(pods)
}

/// The running pods of workload `app=name`, whatever their template.
pub async fn running(client: &kube::Client, ns: &str, name: &str, want: usize) -> Option<()> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await
        .ok()?
        .items;
    (pods.len() == want
        && pods.iter().all(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        }))
    .then_some(())
}

/// The object's consumers: (summary, ConsumersUpdated status, kind/name → state).
pub async fn consumers(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Option<(String, String, BTreeMap<String, String>)> {
    let o = Api::<SealedStorageCred>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    let s = o.status?;
    let c = s
        .conditions
        .iter()
        .find(|c| c.type_ == "ConsumersUpdated")?;
    Some((
        s.consumers_updated.clone()?,
        c.status.clone(),
        s.consumers
            .iter()
            .map(|c| {
                let who = match &c.namespace {
                    Some(ns) => format!("{}/{ns}/{}", c.kind, c.name),
                    None => format!("{}/{}", c.kind, c.name),
                };
                (who, c.state.clone())
            })
            .collect(),
    ))
}
