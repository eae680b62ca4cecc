//! Merging needs no kms:Decrypt: a provider that counts its calls wraps the
//! real AWS KMS provider (moto), and a merge makes exactly one GenerateDataKey
//! and zero Decrypt calls, leaving every other entry byte-identical.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use sealcred_shared::crd::{Scope, SecretTemplate};
use sealcred_shared::keyring::{Allowlist, Keyring};
use sealcred_shared::provider::aws::AwsKms;
use sealcred_shared::provider::{EncryptionContext, GeneratedKey, KeyProvider, ProviderError};
use sealcred_shared::seal::{self, SealInput};
use sealcred_shared::secret::{DataKey, SecretBytes};
use sealcred_tests::testenv;

struct Counting {
    inner: AwsKms,
    generate: AtomicUsize,
    unwrap: AtomicUsize,
}

#[async_trait]
impl KeyProvider for Counting {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn handles(&self, key_id: &str) -> bool {
        self.inner.handles(key_id)
    }
    async fn generate_data_key(
        &self,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, ProviderError> {
        self.generate.fetch_add(1, Ordering::SeqCst);
        self.inner.generate_data_key(ctx).await
    }
    async fn wrap(
        &self,
        key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<(String, Vec<u8>), ProviderError> {
        self.inner.wrap(key, ctx).await
    }
    async fn unwrap(
        &self,
        key_id: &str,
        ct: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        self.unwrap.fetch_add(1, Ordering::SeqCst);
        self.inner.unwrap(key_id, ct, ctx).await
    }
}

fn entries(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretBytes> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), SecretBytes::copy_from(v.as_bytes())))
        .collect()
}

#[tokio::test]
async fn merge_makes_no_decrypt_call_and_keeps_entries_byte_identical() {
    let env = testenv().await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(env.region().to_string()))
        .endpoint_url(env.kms_endpoint())
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    let p = Counting {
        inner: AwsKms::new(&sdk, env.key_arn()).unwrap(),
        generate: AtomicUsize::new(0),
        unwrap: AtomicUsize::new(0),
    };
    let input = SealInput {
        name: "flyte-storage-creds".into(),
        namespace: Some("flyte".into()),
        scope: Scope::Strict,
        template: SecretTemplate {
            type_: "Opaque".into(),
            ..Default::default()
        },
        profile: None,
        entries: entries(&[("access_key", "a"), ("secret_key", "b")]),
    };
    let obj = seal::seal(&input, &[&p]).await.unwrap().object;
    assert_eq!(p.generate.load(Ordering::SeqCst), 1);

    let merged = seal::merge(
        &obj,
        &entries(&[("secret_key", "b2"), ("region", "r")]),
        seal::Keys::Given(&[&p]),
    )
    .await
    .unwrap()
    .object;
    assert_eq!(p.unwrap.load(Ordering::SeqCst), 0, "merge called Decrypt");
    assert_eq!(p.generate.load(Ordering::SeqCst), 2);
    assert_eq!(
        merged.spec.entries["access_key"],
        obj.spec.entries["access_key"]
    );
    assert_eq!(merged.spec.data_keys[0], obj.spec.data_keys[0]);
    assert_eq!(merged.spec.data_keys.len(), 2);

    let keyring =
        Keyring::new(Allowlist::only([env.key_arn().to_string()]), None).with_sdk_config(sdk);
    let opened = seal::open(&merged, &keyring).await.unwrap();
    assert_eq!(opened.entries["secret_key"].expose(), b"b2");
    assert_eq!(opened.entries["access_key"].expose(), b"a");
    assert_eq!(opened.entries["region"].expose(), b"r");
}
