//! Zeroization of the controller's reconcile path, measured with the scanning
//! allocator of `shared/tests/zeroize_alloc.rs` (`shared/tests/scanning/mod.rs`):
//! every heap block freed on the test thread while the real controller runs —
//! on a current-thread runtime, so the controller, kube-rs, hyper and rustls all
//! run on that thread — is scanned for the plaintext (and its base64), the data
//! key, the keys derived from it and the local key-encryption key.
//!
//! Scenario: a sealed object (local key) is applied before measuring; measured: the
//! controller starts, creates its Secret (unseal, create, managedFields patch), the
//! Secret's data is edited, the controller restores it (GET, unseal,
//! apply), and the controller stops. The test reads no Secret value itself.
//!
//! ```text
//! cargo test -p sealcred-tests --test zeroize_reconcile -- --nocapture
//! ```
//!
//! Ours: frames in this workspace's controller or library source, and runtime
//! frees (tokio tasks, futures-util's `FuturesUnordered`) of a future whose type
//! names a sealcred function. Everything else is a dependency's copy: the request
//! body kube-rs serializes, the HTTP/TLS buffers, serde_json's parse of the
//! response — listed in docs/SECURITY.md, "Copies outside our control".
#![allow(unsafe_code)] // the scanning allocator

mod controller_support;
#[path = "../../shared/tests/scanning/mod.rs"]
mod scanning;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use controller_support::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use scanning::{Canaries, Report, measure};
use sealcred_shared::crd::Scope;
use sealcred_shared::provider::local::LocalKey;
use sealcred_shared::provider::{EncryptionContext, GeneratedKey, KeyProvider, ProviderError};
use sealcred_shared::seal::{self, SealInput};
use sealcred_shared::secret::{DataKey, SecretBytes};
use sealcred_tests::TestEnv;

const CANARY: &[u8] = b"CANARY-RECONCILE-5eed0f1e2d3c";
const KNOWN_DATA_KEY: [u8; 32] = *b"DATAKEY-reconcile-0123456789abcd";
const KEK: [u8; 32] = *b"KEK-reconcile-test-key-bytes-zyx";
const INFO_VALUE_KEY: &[u8] = b"sealcred/v1 AES256GCM-HKDFSHA512-COMMIT value key";
const INFO_HEADER_KEY: &[u8] = b"sealcred/v1 AES256GCM-HKDFSHA512-COMMIT header key";

/// A provider whose data key is known, wrapped with a real local key.
struct KnownKey(LocalKey);

#[async_trait]
impl KeyProvider for KnownKey {
    fn name(&self) -> String {
        self.0.name()
    }
    fn handles(&self, key_id: &str) -> bool {
        self.0.handles(key_id)
    }
    async fn generate_data_key(
        &self,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, ProviderError> {
        let key = DataKey::from_slice(&KNOWN_DATA_KEY).unwrap();
        let (key_id, ciphertext) = self.0.wrap(&key, ctx).await?;
        Ok(GeneratedKey {
            key,
            key_id,
            ciphertext,
        })
    }
    async fn wrap(
        &self,
        key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<(String, Vec<u8>), ProviderError> {
        self.0.wrap(key, ctx).await
    }
    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        self.0.unwrap(key_id, ciphertext, ctx).await
    }
}

fn derived_keys(id_b64: &str) -> ([u8; 32], [u8; 32]) {
    let id = STANDARD.decode(id_b64).unwrap();
    let hk = hkdf::Hkdf::<sha2::Sha512>::new(Some(&id), &KNOWN_DATA_KEY);
    let (mut v, mut h) = ([0u8; 32], [0u8; 32]);
    hk.expand(INFO_VALUE_KEY, &mut v).unwrap();
    hk.expand(INFO_HEADER_KEY, &mut h).unwrap();
    (v, h)
}

/// See the module documentation.
fn is_ours(frame: &str) -> bool {
    let Some((name, origin)) = frame.rsplit_once(" @ ") else {
        return false;
    };
    let named_ours = name.trim_start_matches('<').starts_with("sealcred_");
    origin.starts_with("ws:")
        && (origin.contains("controller/src/") || origin.contains("shared/src/"))
        || origin == "?" && named_ours
        || (origin.starts_with("dep:tokio-") || origin.starts_with("dep:futures-util-"))
            && name.contains("sealcred_")
}

#[test]
fn the_reconcile_path_leaves_no_copy_of_ours() {
    let env = TestEnv::get();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("local.key");
    std::fs::write(
        &key_path,
        format!("sealcred-local-key-v1:{}\n", STANDARD.encode(KEK)),
    )
    .unwrap();
    let local = LocalKey::load(&key_path).unwrap();
    let key_id = local.key_id().to_string();

    let (admin, ns, obj) = rt.block_on(async {
        env.install_sealcred_crd().await;
        let admin = env.kube_client().await;
        let ns = env.unique_namespace("zeroize-reconcile").await;
        let input = SealInput {
            name: "db".into(),
            namespace: Some(ns.clone()),
            scope: Scope::Strict,
            template: template(&[]),
            profile: None,
            entries: BTreeMap::from([("password".to_string(), SecretBytes::copy_from(CANARY))]),
        };
        let obj = seal::seal(&input, &[&KnownKey(local)])
            .await
            .unwrap()
            .object;
        apply(&admin, &obj).await;
        (admin, ns, obj)
    });
    let (value_key, header_key) = derived_keys(&obj.spec.data_keys[0].id);
    let canaries = Canaries::new()
        .add("plaintext", CANARY)
        .add("plaintext base64", STANDARD.encode(CANARY).as_bytes())
        .add("data key", &KNOWN_DATA_KEY)
        .add("derived value key", &value_key)
        .add("derived header key", &header_key)
        .add("local KEK", &KEK);

    let mut args = default_args(env, &ns);
    args.extend([
        "--kms-allow".to_string(),
        key_id,
        "--local-key".to_string(),
        key_path.display().to_string(),
        "--workload-restarts=false".to_string(),
    ]);
    let written = |ctl: &Running| {
        ctl.state
            .render_metrics()
            .lines()
            .find(|l| l.starts_with("sealcred_reconciles_total{result=\"written\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (_, found) = measure(canaries, || {
        rt.block_on(async {
            let ctl = start_with(env, admin.clone(), args, env.kms_endpoint()).await;
            wait_ready(&admin, &ns, "db", "True", "Unsealed").await;
            // Drift: the data edited (to a value that is not a canary), then restored.
            Api::<Secret>::namespaced(admin.clone(), &ns)
                .patch(
                    "db",
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"data": {"password": "ZWRpdGVk"}})),
                )
                .await
                .unwrap();
            wait_for("the drift repaired", CONVERGE, || async {
                (written(&ctl) >= 2).then_some(())
            })
            .await;
            ctl.stop().await.unwrap();
            // Let the runtime drop what the stopped tasks held.
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
    });
    // After the measurement: the Secret holds the value (read outside the window).
    let data = rt.block_on(secret_data(&admin, &ns, "db")).unwrap();
    assert_eq!(data["password"].as_bytes(), CANARY);

    let mut report = Report::default();
    report.add("controller: create, drift repair, stop", found);
    report.print_and_check(is_ours, &[]);
}
