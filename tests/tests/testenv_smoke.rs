//! Smoke tests of the real test environment (`scripts/testenv`): the generated CRD on a
//! real kube-apiserver with server-side schema validation, a KMS data-key round trip
//! through moto with an EncryptionContext, a least-privilege ServiceAccount identity, and
//! the rest of the cluster: a Deployment rolled out by kube-controller-manager, its Pods
//! scheduled by kube-scheduler onto KWOK's simulated Nodes, and garbage collection.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::ApiResource;
use sealcred_shared::crd::{KIND, SealedStorageCred};
use sealcred_shared::format::{FORMAT_VERSION, SUITE_V1};
use sealcred_tests::testenv;
use serde_json::{Value, json};

/// base64 of `n` bytes of value `fill`.
fn b64(n: usize, fill: u8) -> String {
    STANDARD.encode(vec![fill; n])
}

/// A structurally valid SealedStorageCred (the values are not a real sealing: only the
/// API server's schema sees them).
fn valid_object(name: &str, key_arn: &str) -> Value {
    let dk = b64(32, 7);
    json!({
        "apiVersion": "sealcred.io/v1alpha1",
        "kind": KIND,
        "metadata": { "name": name },
        "spec": {
            "formatVersion": FORMAT_VERSION,
            "suite": SUITE_V1,
            "scope": "strict",
            "template": { "type": "Opaque" },
            "dataKeys": [{
                "id": dk,
                "commitment": b64(32, 1),
                "names": ["password"],
                "wrappings": [{ "keyId": key_arn, "ciphertext": b64(184, 2) }],
                "headerTag": b64(32, 3),
            }],
            "entries": {
                "password": { "dataKey": dk, "nonce": b64(12, 4), "ciphertext": b64(24, 5) },
            },
        },
    })
}

fn api_error_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[tokio::test]
async fn crd_is_served_and_schema_validated_by_the_api_server() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;

    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = crds
        .get("sealedstoragecreds.sealcred.io")
        .await
        .expect("CRD");
    let accepted = crd.status.and_then(|s| s.accepted_names).expect("names");
    assert_eq!(accepted.kind, "SealedStorageCred");
    assert_eq!(accepted.short_names, Some(vec!["ssc".to_string()]));

    let ns = env.unique_namespace("smoke-crd").await;
    let ar = ApiResource::erase::<SealedStorageCred>(&());
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let post = |v: Value| -> DynamicObject { serde_json::from_value(v).expect("object") };

    // A valid object is accepted and reads back as the Rust type.
    dynamic
        .create(
            &PostParams::default(),
            &post(valid_object("valid", env.key_arn())),
        )
        .await
        .expect("a valid SealedStorageCred is accepted");
    let typed: Api<SealedStorageCred> = Api::namespaced(client.clone(), &ns);
    let back = typed
        .get("valid")
        .await
        .expect("read back as SealedStorageCred");
    assert_eq!(back.spec.entries.len(), 1);
    assert_eq!(back.spec.data_keys[0].wrappings[0].key_id, env.key_arn());

    // Malformed objects are rejected by the server's structural schema (422 Invalid).
    let mut wrong_type = valid_object("wrong-type", env.key_arn());
    wrong_type["spec"]["entries"] = json!("not-a-map");
    let mut missing = valid_object("missing-field", env.key_arn());
    missing["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("dataKeys");
    let mut zero_version = valid_object("zero-version", env.key_arn());
    zero_version["spec"]["formatVersion"] = json!(0);
    for (obj, field) in [
        (wrong_type, "spec.entries"),
        (missing, "spec.dataKeys"),
        (zero_version, "spec.formatVersion"),
    ] {
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        let err = dynamic
            .create(&PostParams::default(), &post(obj))
            .await
            .expect_err(&format!("{name} must be rejected"));
        let kube::Error::Api(status) = &err else {
            panic!("{name}: expected an API error, got {err}");
        };
        assert_eq!(status.code, 422, "{name}: {status:?}");
        assert_eq!(status.reason, "Invalid", "{name}: {status:?}");
        assert!(
            status.message.contains(field),
            "{name}: message should name {field}: {}",
            status.message
        );
    }
    let names: Vec<String> = dynamic
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    assert_eq!(names, ["valid"]);
}

#[tokio::test]
async fn kms_data_key_round_trips_with_its_encryption_context() {
    let env = testenv().await;
    let kms = env.kms_client();
    let context: HashMap<String, String> = [
        ("sealcred.io/namespace", "team-a"),
        ("sealcred.io/name", "db-creds"),
        ("sealcred.io/scope", "strict"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let generated = kms
        .generate_data_key()
        .key_id(env.alias())
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(Some(context.clone()))
        .send()
        .await
        .expect("GenerateDataKey via the alias");
    assert_eq!(generated.key_id(), Some(env.key_arn()));
    let plaintext = generated.plaintext().expect("plaintext").as_ref().to_vec();
    assert_eq!(plaintext.len(), 32);
    let blob = generated.ciphertext_blob().expect("ciphertext").clone();

    let decrypted = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .key_id(env.key_arn())
        .set_encryption_context(Some(context.clone()))
        .send()
        .await
        .expect("Decrypt with the same context");
    assert_eq!(
        decrypted.plaintext().expect("plaintext").as_ref(),
        &plaintext[..]
    );
    assert_eq!(decrypted.key_id(), Some(env.key_arn()));

    let mut other = context.clone();
    other.insert("sealcred.io/namespace".to_string(), "team-b".to_string());
    for (what, ctx) in [("a different", Some(other)), ("no", None)] {
        let err = kms
            .decrypt()
            .ciphertext_blob(blob.clone())
            .set_encryption_context(ctx)
            .send()
            .await
            .expect_err("Decrypt must fail with another context");
        let service = err.into_service_error();
        assert!(
            service.is_invalid_ciphertext_exception(),
            "Decrypt with {what} context: expected InvalidCiphertextException, got {service:?}"
        );
    }

    let tampered = {
        let mut b = blob.into_inner();
        let last = b.len() - 1;
        b[last] ^= 1;
        Blob::new(b)
    };
    let err = kms
        .decrypt()
        .ciphertext_blob(tampered)
        .set_encryption_context(Some(context))
        .send()
        .await
        .expect_err("a tampered blob must not decrypt");
    assert!(err.into_service_error().is_invalid_ciphertext_exception());
}

#[tokio::test]
async fn service_account_without_rbac_cannot_list_secrets() {
    let env = testenv().await;
    let ns = env.unique_namespace("smoke-sa").await;

    // The admin can.
    let admin: Api<Secret> = Api::namespaced(env.kube_client().await, &ns);
    admin
        .list(&ListParams::default())
        .await
        .expect("admin lists Secrets");

    // A ServiceAccount with no RoleBinding cannot.
    let sa: Api<Secret> = Api::namespaced(env.sa_client(&ns, "no-rbac").await, &ns);
    let err = sa
        .list(&ListParams::default())
        .await
        .expect_err("a ServiceAccount without RBAC must not list Secrets");
    assert_eq!(api_error_code(&err), Some(403), "{err}");
    let kube::Error::Api(status) = &err else {
        unreachable!()
    };
    assert!(
        status
            .message
            .contains(&format!("system:serviceaccount:{ns}:no-rbac")),
        "{}",
        status.message
    );
}

/// Polls `probe` every 250 ms until it returns `Some`, for at most `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn pod_is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn deployment_runs_on_kwok_nodes_and_is_garbage_collected() {
    const TIMEOUT: Duration = Duration::from_secs(60);
    let env = testenv().await;
    let ns = env.unique_namespace("smoke-deploy").await;
    let client = env.kube_client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let nodes: Api<Node> = Api::all(client.clone());

    // kube-controller-manager's serviceaccount and root-ca-cert-publisher controllers
    // fill the new namespace.
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    eventually(
        "ServiceAccount default and ConfigMap kube-root-ca.crt",
        TIMEOUT,
        || async {
            let sa = service_accounts.get_opt("default").await.expect("get sa");
            let cm = config_maps
                .get_opt("kube-root-ca.crt")
                .await
                .expect("get cm");
            (sa.is_some() && cm.is_some()).then_some(())
        },
    )
    .await;

    // KWOK pulls no image: any name will do.
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "main", "image": "sealcred.invalid/nothing:1" }] },
            },
        },
    }))
    .expect("deployment");
    let uid = deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the Deployment")
        .metadata
        .uid
        .expect("uid");

    let by_app = ListParams::default().labels("app=web");
    let running = eventually(
        "3 ready and updated replicas, 3 Pods Running",
        TIMEOUT,
        || async {
            let d = deployments.get("web").await.expect("get deployment");
            let s = d.status.unwrap_or_default();
            let listed = pods.list(&by_app).await.expect("list pods").items;
            let ready: Vec<Pod> = listed.into_iter().filter(pod_is_ready).collect();
            (s.ready_replicas == Some(3) && s.updated_replicas == Some(3) && ready.len() == 3)
                .then_some(ready)
        },
    )
    .await;

    // Every Pod was bound by the scheduler to a KWOK Node and is owned by the Deployment's
    // one ReplicaSet.
    let rs = replicasets
        .list(&ListParams::default())
        .await
        .expect("list rs")
        .items;
    assert_eq!(rs.len(), 1, "one ReplicaSet");
    let rs_name = rs[0].metadata.name.clone().expect("rs name");
    let rs_owner = &rs[0].metadata.owner_references.as_ref().expect("rs owners")[0];
    assert_eq!(
        (rs_owner.kind.as_str(), &rs_owner.uid),
        ("Deployment", &uid)
    );
    for pod in &running {
        let name = pod.metadata.name.as_deref().expect("pod name");
        let owner = &pod.metadata.owner_references.as_ref().expect("pod owners")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("ReplicaSet", rs_name.as_str()),
            "{name}"
        );
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| panic!("{name} is not bound to a node"));
        let node = nodes.get(&node_name).await.expect("get node");
        let annotations = node.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations.get("kwok.x-k8s.io/node").map(String::as_str),
            Some("fake"),
            "{name} runs on {node_name}, which is not a KWOK node"
        );
    }

    // Background propagation: the Deployment goes at once, the garbage collector deletes
    // the ReplicaSet, and KWOK finishes deleting its Pods.
    deployments
        .delete("web", &DeleteParams::background())
        .await
        .expect("delete the Deployment");
    eventually(
        "the ReplicaSet and the Pods garbage collected",
        TIMEOUT,
        || async {
            let rs_left = replicasets.get_opt(&rs_name).await.expect("get rs");
            let pods_left = pods.list(&by_app).await.expect("list pods").items;
            (rs_left.is_none() && pods_left.is_empty()).then_some(())
        },
    )
    .await;
    assert!(deployments.get_opt("web").await.expect("get").is_none());
}
