//! Smoke tests of the real test environment (`scripts/testenv`): the generated CRD on a
//! real kube-apiserver with server-side schema validation, a KMS data-key round trip
//! through moto with an EncryptionContext, and a least-privilege ServiceAccount identity.

use std::collections::HashMap;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
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
