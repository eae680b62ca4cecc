//! The controller against a private local-kms (issue 15): objects sealed
//! offline with a KMS RSA public key are unsealed with KMS Decrypt
//! (RSAES_OAEP_SHA_256) within the allowlist, and key state is honoured —
//! a key disabled or scheduled for deletion while the controller serves its
//! objects gives `Ready=False` naming the state, keeps the Secret, and the
//! controller recovers on EnableKey without a restart. moto can do neither
//! (it refuses RSA ciphertext made outside it and ignores key state).

mod controller_support;

use controller_support::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use sealcred_shared::crd::{Scope, SealedStorageCred};
use sealcred_shared::provider::KeyProvider;
use sealcred_shared::provider::aws::AwsKms;
use sealcred_shared::provider::rsa::RsaPublicKey;
use sealcred_shared::seal::{self, SealInput};
use sealcred_tests::aws_sdk_kms::types::KeySpec;
use sealcred_tests::local_kms::LocalKms;
use sealcred_tests::{TestEnv, testenv};

struct Kms {
    local: LocalKms,
    sdk: aws_config::SdkConfig,
}

impl Kms {
    async fn start(env: &TestEnv) -> Kms {
        let local = LocalKms::start();
        let sdk = sdk_config(env, &local.endpoint()).await;
        Kms { local, sdk }
    }

    fn provider(&self, arn: &str) -> AwsKms {
        AwsKms::new(&self.sdk, arn).unwrap()
    }

    /// The public key as `sealcred pubkey` would write it, read back.
    async fn public_key(&self, arn: &str) -> RsaPublicKey {
        let text = self.provider(arn).get_public_key().await.unwrap().render();
        RsaPublicKey::parse(&text, "test.pubkey").unwrap()
    }
}

async fn seal_with(
    ns: &str,
    name: &str,
    pairs: &[(&str, &str)],
    keys: &[&dyn KeyProvider],
) -> SealedStorageCred {
    seal::seal(
        &SealInput {
            name: name.into(),
            namespace: Some(ns.into()),
            scope: Scope::Strict,
            template: template(&[]),
            profile: None,
            entries: entries(pairs),
        },
        keys,
    )
    .await
    .expect("sealing")
    .object
}

fn args(ns: &str, allow: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "sealcred-controller",
        "--namespace",
        ns,
        "--leader-elect=false",
        "--metrics-addr=off",
        "--max-backoff=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for k in allow {
        a.push("--kms-allow".into());
        a.push(k.to_string());
    }
    a
}

/// The status of condition `type_` (`None` when absent).
async fn condition(client: &kube::Client, ns: &str, name: &str, type_: &str) -> Option<String> {
    let obj = Api::<SealedStorageCred>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let status = obj.status?;
    let c = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some(c.status.clone())
}

async fn message(client: &kube::Client, ns: &str, name: &str) -> String {
    let obj = Api::<SealedStorageCred>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let status = obj.status.unwrap();
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    c.message.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_wrapped_objects_are_unsealed_within_the_allowlist() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("ctl-rsa").await;
    let kms = Kms::start(env).await;
    let rsa = kms.local.rsa_key(KeySpec::Rsa3072).await;
    let rsa4096 = kms.local.rsa_key(KeySpec::Rsa4096).await;
    let sym = kms.local.symmetric_key().await;
    let foreign = kms.local.rsa_key(KeySpec::Rsa2048).await;
    let public = kms.public_key(&rsa).await;
    let public4096 = kms.public_key(&rsa4096).await;
    let foreign_public = kms.public_key(&foreign).await;
    let sym_kms = kms.provider(&sym);

    let rsa_only = seal_with(&ns, "rsa-only", &[("k", "v-rsa")], &[&public]).await;
    let mixed = seal_with(&ns, "mixed", &[("k", "v-mixed")], &[&sym_kms, &public4096]).await;
    // Merged: an RSA-wrapped data key on top of a symmetric one.
    let base = seal_with(&ns, "merged", &[("a", "1"), ("b", "2")], &[&sym_kms]).await;
    let merged = seal::merge(
        &base,
        &entries(&[("b", "3")]),
        seal::Keys::Given(&[&public]),
    )
    .await
    .unwrap()
    .object;
    let not_allowed = seal_with(&ns, "not-allowed", &[("k", "v")], &[&foreign_public]).await;
    // The RSA-only object copied under another name: the binding check inside
    // the RSA plaintext refuses it.
    let mut moved = rsa_only.clone();
    moved.metadata.name = Some("moved".into());

    let ctl = start_with(
        env,
        client.clone(),
        // The allowlist names the key ARNs (one exactly, one by prefix would do too).
        args(&ns, &[&rsa, &rsa4096, &sym]),
        &kms.local.endpoint(),
    )
    .await;
    for o in [&rsa_only, &mixed, &merged, &not_allowed, &moved] {
        apply(&client, o).await;
    }
    wait_secret(&client, &ns, "rsa-only", &[("k", "v-rsa")]).await;
    wait_secret(&client, &ns, "mixed", &[("k", "v-mixed")]).await;
    wait_secret(&client, &ns, "merged", &[("a", "1"), ("b", "3")]).await;
    wait_ready(&client, &ns, "rsa-only", "True", "Unsealed").await;
    wait_ready(&client, &ns, "not-allowed", "False", "InvalidSpec").await;
    assert!(
        message(&client, &ns, "not-allowed")
            .await
            .contains("allowlist")
    );
    wait_ready(&client, &ns, "moved", "False", "DecryptFailed").await;
    assert!(
        message(&client, &ns, "moved")
            .await
            .contains("binding check"),
        "{}",
        message(&client, &ns, "moved").await
    );
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    assert!(secrets.get_opt("not-allowed").await.unwrap().is_none());
    assert!(secrets.get_opt("moved").await.unwrap().is_none());
    ctl.stop().await.unwrap();
}

/// Seals `ns/name` under `key`, lets the controller unseal it, then makes the
/// key unusable with `break_key` and changes the object (a merge: the
/// controller must Decrypt again). Ready=False `reason`, a message naming the
/// state, the Secret kept with its old value; after `fix_key`, recovery
/// without a restart.
async fn key_state_scenario(
    name: &str,
    break_key: impl AsyncFn(&LocalKms, &str),
    fix_key: impl AsyncFn(&LocalKms, &str),
    reason: &str,
    says: &[&str],
) {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace(name).await;
    let kms = Kms::start(env).await;
    let sym = kms.local.symmetric_key().await;
    let rsa = kms.local.rsa_key(KeySpec::Rsa2048).await;
    let public = kms.public_key(&rsa).await;
    let sym_kms = kms.provider(&sym);
    let ctl = start_with(
        env,
        client.clone(),
        args(&ns, &["arn:aws:kms:eu-west-1:111122223333:key/*"]),
        &kms.local.endpoint(),
    )
    .await;
    let sym_obj = seal_with(&ns, "sym", &[("k", "old")], &[&sym_kms]).await;
    let rsa_obj = seal_with(&ns, "rsa", &[("k", "old")], &[&public]).await;
    apply(&client, &sym_obj).await;
    apply(&client, &rsa_obj).await;
    wait_secret(&client, &ns, "sym", &[("k", "old")]).await;
    wait_secret(&client, &ns, "rsa", &[("k", "old")]).await;

    break_key(&kms.local, &sym).await;
    break_key(&kms.local, &rsa).await;
    let sym_new = seal::merge(
        &sym_obj,
        &entries(&[("k", "new")]),
        seal::Keys::Given(&[&sym_kms]),
    )
    .await;
    // Sealing under a disabled symmetric key fails too: merge under the
    // public key instead, which needs no KMS call.
    assert!(sym_new.is_err());
    let sym_new = seal::merge(
        &sym_obj,
        &entries(&[("k", "new")]),
        seal::Keys::Given(&[&public]),
    )
    .await
    .unwrap()
    .object;
    let rsa_new = seal::merge(
        &rsa_obj,
        &entries(&[("k", "new")]),
        seal::Keys::Given(&[&public]),
    )
    .await
    .unwrap()
    .object;
    apply(&client, &sym_new).await;
    apply(&client, &rsa_new).await;
    for obj in ["sym", "rsa"] {
        wait_ready(&client, &ns, obj, "False", reason).await;
        let m = message(&client, &ns, obj).await;
        for s in says {
            assert!(m.contains(s), "{obj}: {s:?} not in {m}");
        }
        // Someone must act (kstatus: Stalled), though the controller keeps retrying.
        assert_eq!(
            condition(&client, &ns, obj, "Stalled").await.as_deref(),
            Some("True")
        );
        // The Secret is kept as it was.
        assert_eq!(
            secret_data(&client, &ns, obj).await,
            Some([("k".to_string(), "old".to_string())].into())
        );
    }
    assert!(
        ctl.metrics().encode().contains("key_"),
        "the KMS call metric names the key state"
    );

    // The operator fixes the key: the controller recovers by itself.
    fix_key(&kms.local, &sym).await;
    fix_key(&kms.local, &rsa).await;
    wait_secret(&client, &ns, "sym", &[("k", "new")]).await;
    wait_secret(&client, &ns, "rsa", &[("k", "new")]).await;
    wait_ready(&client, &ns, "sym", "True", "Unsealed").await;
    wait_ready(&client, &ns, "rsa", "True", "Unsealed").await;
    ctl.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_key_keeps_the_secret_and_recovers_on_enable() {
    key_state_scenario(
        "ctl-key-disabled",
        async |k, arn| k.disable(arn).await,
        async |k, arn| k.enable(arn).await,
        "KmsKeyDisabled",
        &["is disabled", "enable it"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_pending_deletion_keeps_the_secret_and_recovers_on_cancel() {
    key_state_scenario(
        "ctl-key-deletion",
        async |k, arn| k.schedule_deletion(arn).await,
        async |k, arn| {
            k.cancel_deletion(arn).await;
            k.enable(arn).await;
        },
        "KmsKeyPendingDeletion",
        &["pending deletion", "cancel-key-deletion"],
    )
    .await;
}
