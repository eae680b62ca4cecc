//! A KMS RSA key pair as a [`KeyProvider`] for recorded `rsaes-oaep-sha256:`
//! wrappings: opening calls KMS `Decrypt` (RSAES_OAEP_SHA_256, no context) and
//! checks the binding inside the plaintext ([`super::rsa::open_plaintext`]);
//! sealing (rotate or merge with the recorded keys) fetches the public key
//! once with `GetPublicKey` and encrypts locally.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::aws::AwsKms;
use super::rsa::{self, RsaPublicKey};
use super::{EncryptionContext, GeneratedKey, KeyProvider, ProviderError, ProviderErrorKind};
use crate::secret::DataKey;

/// One KMS RSA key, named by its recorded key id.
pub struct KmsRsa {
    kms: Arc<AwsKms>,
    key_id: String,
    arn: String,
    public: OnceCell<RsaPublicKey>,
}

impl KmsRsa {
    /// A provider for `key_id` (`rsaes-oaep-sha256:ARN`), calling KMS through
    /// `kms` (a provider for the ARN).
    pub fn new(kms: Arc<AwsKms>, key_id: &str) -> Result<KmsRsa, ProviderError> {
        let arn = rsa::arn_of(key_id).ok_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::KeyNotAllowed,
                format!("{key_id:?}: not an RSA key id (rsaes-oaep-sha256:<key ARN>)"),
            )
        })?;
        Ok(KmsRsa {
            kms,
            key_id: key_id.to_string(),
            arn: arn.to_string(),
            public: OnceCell::new(),
        })
    }

    async fn public(&self) -> Result<&RsaPublicKey, ProviderError> {
        self.public
            .get_or_try_init(|| async {
                let key = self.kms.get_public_key().await?;
                if key.arn() != self.arn {
                    return Err(ProviderError::new(
                        ProviderErrorKind::Other,
                        format!(
                            "AWS KMS GetPublicKey for {} answered for {}",
                            self.arn,
                            key.arn()
                        ),
                    ));
                }
                Ok(key)
            })
            .await
    }
}

#[async_trait]
impl KeyProvider for KmsRsa {
    fn name(&self) -> String {
        format!("AWS KMS RSA key {}", self.arn)
    }

    fn handles(&self, key_id: &str) -> bool {
        key_id == self.key_id
    }

    async fn generate_data_key(
        &self,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, ProviderError> {
        self.public().await?.generate_data_key(ctx).await
    }

    async fn wrap(
        &self,
        key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<(String, Vec<u8>), ProviderError> {
        self.public().await?.wrap(key, ctx).await
    }

    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        rsa::check_ciphertext_len(key_id, ciphertext.len())?;
        let plain = self.kms.decrypt_rsa(key_id, &self.arn, ciphertext).await?;
        rsa::open_plaintext(key_id, ctx, &plain)
    }
}
