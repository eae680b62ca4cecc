//! Helpers shared by the `controller_*` integration tests: sealing objects against the
//! test KMS (moto), running the controller in-process, and waiting for conditions.
#![allow(dead_code)]

pub mod health;
pub mod rollout;

#[allow(unused_imports)] // not every test uses the rollout helpers
pub use rollout::*;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::config::Credentials;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use sealcred_controller::metrics::Metrics;
use sealcred_controller::options::Options;
use sealcred_controller::run::State;
use sealcred_shared::crd::{Scope, SealedStorageCred, SecretTemplate};
use sealcred_shared::provider::aws::AwsKms;
use sealcred_shared::seal::{self, SealInput};
use sealcred_shared::secret::SecretBytes;
use sealcred_tests::TestEnv;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a test waits for the controller to converge.
pub const CONVERGE: Duration = Duration::from_secs(30);

/// An AWS configuration for the test KMS at `endpoint` (moto, or a proxy in front of it).
pub async fn sdk_config(env: &TestEnv, endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(env.region().to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            env.var("AWS_ACCESS_KEY_ID").unwrap_or("testing"),
            env.var("AWS_SECRET_ACCESS_KEY").unwrap_or("testing"),
            None,
            None,
            "sealcred-tests",
        ))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .load()
        .await
}

/// Values as SecretBytes.
pub fn entries(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretBytes> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), SecretBytes::copy_from(v.as_bytes())))
        .collect()
}

/// A template with labels and annotations.
pub fn template(labels: &[(&str, &str)]) -> SecretTemplate {
    SecretTemplate {
        name: None,
        type_: "Opaque".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: BTreeMap::from([("team".to_string(), "storage".to_string())]),
    }
}

/// Seals `pairs` into `ns/name` under the test KMS key.
pub async fn seal_object(
    env: &TestEnv,
    ns: &str,
    name: &str,
    template: SecretTemplate,
    pairs: &[(&str, &str)],
) -> SealedStorageCred {
    let sdk = sdk_config(env, env.kms_endpoint()).await;
    let kms = AwsKms::new(&sdk, env.key_arn()).expect("KMS provider");
    seal::seal(
        &SealInput {
            name: name.into(),
            namespace: Some(ns.into()),
            scope: Scope::Strict,
            template,
            profile: None,
            entries: entries(pairs),
        },
        &[&kms],
    )
    .await
    .expect("sealing")
    .object
}

/// Adds or replaces entries of `obj` (no decryption).
pub async fn merge_into(
    env: &TestEnv,
    obj: &SealedStorageCred,
    pairs: &[(&str, &str)],
) -> SealedStorageCred {
    let sdk = sdk_config(env, env.kms_endpoint()).await;
    let kms = AwsKms::new(&sdk, env.key_arn()).expect("KMS provider");
    seal::merge(obj, &entries(pairs), seal::Keys::Given(&[&kms]))
        .await
        .expect("merging")
        .object
}

/// Server-side applies the object as the test's field manager.
pub async fn apply(client: &kube::Client, obj: &SealedStorageCred) {
    let ns = obj.metadata.namespace.as_deref().expect("namespace");
    let name = obj.metadata.name.as_deref().expect("name");
    try_apply(client, obj)
        .await
        .unwrap_or_else(|e| panic!("applying {ns}/{name}: {e}"));
}

/// [`apply`], returning the API server's answer instead of panicking on an error.
pub async fn try_apply(
    client: &kube::Client,
    obj: &SealedStorageCred,
) -> kube::Result<SealedStorageCred> {
    let ns = obj.metadata.namespace.as_deref().expect("namespace");
    let name = obj.metadata.name.as_deref().expect("name");
    let mut obj = obj.clone();
    obj.metadata.resource_version = None;
    obj.metadata.managed_fields = None;
    obj.metadata.uid = None;
    obj.metadata.creation_timestamp = None;
    obj.metadata.generation = None;
    obj.status = None;
    Api::<SealedStorageCred>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("sealcred-tests").force(),
            &Patch::Apply(&obj),
        )
        .await
}

/// An in-process controller.
pub struct Running {
    pub state: Arc<State>,
    stop: watch::Sender<bool>,
    pub handle: JoinHandle<Result<(), sealcred_controller::Error>>,
}

impl Running {
    pub fn metrics(&self) -> &Metrics {
        self.state.metrics()
    }

    /// Asks the controller to stop and waits for it.
    pub async fn stop(self) -> Result<(), sealcred_controller::Error> {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("controller stops within 30 s")
            .expect("controller task")
    }
}

/// Default flags for a test controller restricted to `ns`, allowed the test key.
pub fn default_args(env: &TestEnv, ns: &str) -> Vec<String> {
    [
        "sealcred-controller",
        "--kms-allow",
        env.key_arn(),
        "--namespace",
        ns,
        "--leader-elect=false",
        "--metrics-addr=off",
        "--max-backoff=4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts the controller in-process with `args`, the kube `client` and KMS at `kms_endpoint`.
pub async fn start_with(
    env: &TestEnv,
    client: kube::Client,
    args: Vec<String>,
    kms_endpoint: &str,
) -> Running {
    let sdk = sdk_config(env, kms_endpoint).await;
    start_with_sdk(client, args, sdk).await
}

/// Starts the controller in-process with `args`, the kube `client` and this AWS
/// configuration (e.g. a private moto's endpoint and an IAM user's key).
pub async fn start_with_sdk(client: kube::Client, args: Vec<String>, sdk: SdkConfig) -> Running {
    let opts = Options::parse_from(args).expect("controller flags");
    let state = State::new(Arc::new(Metrics::new()));
    let (stop, stop_rx) = watch::channel(false);
    let handle = tokio::spawn(sealcred_controller::run::run(
        opts,
        client,
        Some(sdk),
        Arc::clone(&state),
        stop_rx,
    ));
    Running {
        state,
        stop,
        handle,
    }
}

/// Starts the controller for `ns` with the admin client and the test KMS.
pub async fn start(env: &TestEnv, ns: &str) -> Running {
    start_with(
        env,
        env.kube_client().await,
        default_args(env, ns),
        env.kms_endpoint(),
    )
    .await
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The object's Ready condition as (status, reason, observedGeneration matches generation).
pub async fn ready(client: &kube::Client, ns: &str, name: &str) -> Option<(String, String, bool)> {
    let obj = Api::<SealedStorageCred>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    let status = obj.status?;
    let c = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((
        c.status.clone(),
        c.reason.clone(),
        status.observed_generation == obj.metadata.generation,
    ))
}

/// Waits until Ready has `status` and `reason` for the current generation.
pub async fn wait_ready(client: &kube::Client, ns: &str, name: &str, status: &str, reason: &str) {
    wait_for(
        &format!("{ns}/{name} Ready={status} {reason}"),
        CONVERGE,
        || async {
            match ready(client, ns, name).await {
                Some((s, r, true)) if s == status && r == reason => Some(()),
                _ => None,
            }
        },
    )
    .await
}

/// The Secret's data as UTF-8 strings.
pub async fn secret_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Option<BTreeMap<String, String>> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    Some(
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect(),
    )
}

/// Waits until the Secret holds exactly `pairs`.
pub async fn wait_secret(client: &kube::Client, ns: &str, name: &str, pairs: &[(&str, &str)]) {
    let want: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    wait_for(
        &format!("Secret {ns}/{name} = {want:?}"),
        CONVERGE,
        || async { (secret_data(client, ns, name).await.as_ref() == Some(&want)).then_some(()) },
    )
    .await
}

/// [`default_args`] with leader election on a Lease in `ns` (3 s lease, renewed every 1 s).
pub fn leader_elected_args(env: &TestEnv, ns: &str) -> Vec<String> {
    let mut args = default_args(env, ns);
    args.retain(|a| a != "--leader-elect=false");
    args.extend(
        [
            "--leader-elect=true",
            "--lease-namespace",
            ns,
            "--lease-duration=3",
            "--lease-renew=1",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args
}

/// The main scenario under a limited identity: starts a leader-elected
/// controller for `ns` with `client` (e.g. a ServiceAccount's), seals and
/// applies `ns/db` as admin, and waits for the Secret, Ready=True and an
/// `Unsealed` Event published with that identity. Returns the controller and
/// the applied object.
pub async fn main_scenario_as(
    env: &TestEnv,
    admin: &kube::Client,
    client: kube::Client,
    ns: &str,
) -> (Running, SealedStorageCred) {
    let ctl = start_with(
        env,
        client,
        leader_elected_args(env, ns),
        env.kms_endpoint(),
    )
    .await;
    let obj = seal_object(
        env,
        ns,
        "db",
        template(&[("app", "db")]),
        &[("password", "pw")],
    )
    .await;
    apply(admin, &obj).await;
    wait_secret(admin, ns, "db", &[("password", "pw")]).await;
    wait_ready(admin, ns, "db", "True", "Unsealed").await;
    wait_for("an Unsealed event", CONVERGE, || async {
        let events =
            kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), ns)
                .list(&kube::api::ListParams::default())
                .await
                .ok()?;
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Unsealed"))
            .then_some(())
    })
    .await;
    (ctl, obj)
}

/// The controller binary cargo built next to the tests.
pub fn controller_bin() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| sealcred_tests::repo_root().join("target"));
    let p = target.join("debug/sealcred-controller");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p sealcred-controller` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// Kills the controller process even when an assertion fails first, so no stray
/// controller keeps reconciling other tests' objects.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Deployment, StatefulSet or DaemonSet mounting Secret `app`, annotated
/// `sealcred.io/restart-on-change: <restart_on>` when given.
pub fn workload<K: k8s_openapi::serde::de::DeserializeOwned>(
    kind: &str,
    name: &str,
    restart_on: Option<&str>,
) -> K {
    workload_mounting(kind, name, "app", restart_on)
}

/// [`workload`] mounting Secret `secret`.
pub fn workload_mounting<K: k8s_openapi::serde::de::DeserializeOwned>(
    kind: &str,
    name: &str,
    secret: &str,
    restart_on: Option<&str>,
) -> K {
    let mut annotations = serde_json::Map::new();
    if let Some(secrets) = restart_on {
        annotations.insert(
            "sealcred.io/restart-on-change".into(),
            serde_json::json!(secrets),
        );
    }
    let mut spec = serde_json::json!({
        "selector": { "matchLabels": { "app": name } },
        "template": {
            "metadata": { "labels": { "app": name } },
            "spec": { "containers": [{
                "name": "main",
                "image": "registry.k8s.io/pause:3.10",
                "volumeMounts": [{ "name": "creds", "mountPath": "/etc/creds", "readOnly": true }],
            }],
            "volumes": [{ "name": "creds", "secret": { "secretName": secret } }] },
        },
    });
    if kind == "StatefulSet" {
        spec["serviceName"] = serde_json::json!(name);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": { "name": name, "annotations": annotations },
        "spec": spec,
    }))
    .expect("workload")
}
