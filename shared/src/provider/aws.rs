//! The AWS KMS provider: every call sealcred makes to AWS KMS is in this file.
//!
//! Configuration is the standard AWS chain (env, shared profile / `AWS_PROFILE`,
//! web identity / IRSA, ECS and EKS pod identity), the region from
//! `AWS_REGION` (or the key ARN), and endpoint overrides from
//! `AWS_ENDPOINT_URL_KMS` / `AWS_ENDPOINT_URL`.
//!
//! Data keys come back from the SDK in a `Blob` (reference-counted, not
//! zeroized): each is copied into a [`DataKey`] at once and the SDK's buffer
//! wiped where we own it. The HTTP response body that carried it is outside our
//! control (see docs/SECURITY.md).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use zeroize::Zeroize;

use super::{EncryptionContext, GeneratedKey, KeyProvider, ProviderError, ProviderErrorKind};
use crate::secret::DataKey;

/// Loads the AWS configuration once (credential chain, region, endpoints),
/// with bounded timeouts and retries so an unreachable KMS fails in seconds.
pub async fn load_sdk_config() -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(super::http::LazyTlsClient::shared())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
    if std::env::var_os("AWS_MAX_ATTEMPTS").is_none() {
        loader = loader.retry_config(RetryConfig::standard().with_max_attempts(3));
    }
    loader.load().await
}

/// The region inside a KMS key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`).
pub fn arn_region(key: &str) -> Option<&str> {
    let mut parts = key.split(':');
    (parts.next()? == "arn").then_some(())?;
    parts.next()?;
    (parts.next()? == "kms").then_some(())?;
    parts.next().filter(|r| !r.is_empty())
}

/// One AWS KMS key (ARN, key id, `alias/NAME` or alias ARN).
pub struct AwsKms {
    client: Client,
    key: String,
    region: String,
}

impl AwsKms {
    /// A provider for `key`. A key ARN's own region wins over `AWS_REGION`.
    pub fn new(config: &SdkConfig, key: &str) -> Result<AwsKms, ProviderError> {
        Self::with_endpoint(config, key, None)
    }

    /// Like [`AwsKms::new`], with the KMS endpoint set to `endpoint` when given
    /// (it wins over `AWS_ENDPOINT_URL_KMS` / the configuration's endpoint).
    pub fn with_endpoint(
        config: &SdkConfig,
        key: &str,
        endpoint: Option<&str>,
    ) -> Result<AwsKms, ProviderError> {
        let mut b = aws_sdk_kms::config::Builder::from(config);
        if let Some(r) = arn_region(key) {
            b = b.region(Region::new(r.to_string()));
        }
        if let Some(url) = endpoint {
            b = b.endpoint_url(url);
        }
        let conf = b.build();
        let region = conf.region().map(|r| r.to_string()).ok_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::Other,
                format!(
                    "no AWS region for KMS key {key}: set AWS_REGION or give the key as an ARN"
                ),
            )
        })?;
        Ok(AwsKms {
            client: Client::from_conf(conf),
            key: key.to_string(),
            region,
        })
    }

    fn context(ctx: &EncryptionContext) -> HashMap<String, String> {
        ctx.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn error<E, R>(&self, op: &str, key: &str, err: SdkError<E, R>) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let region = &self.region;
        let (kind, detail) = match &err {
            SdkError::ServiceError(s) => {
                let e = s.err();
                let code = e.code().unwrap_or("UnknownError");
                let msg = e.message().unwrap_or("");
                let kind = match code {
                    "AccessDeniedException"
                    | "UnrecognizedClientException"
                    | "InvalidSignatureException"
                    | "ExpiredTokenException"
                    | "DisabledException"
                    | "KMSInvalidStateException" => ProviderErrorKind::AccessDenied,
                    "InvalidCiphertextException" | "IncorrectKeyException" => {
                        ProviderErrorKind::InvalidCiphertext
                    }
                    "NotFoundException" | "InvalidArnException" => ProviderErrorKind::NotFound,
                    "ThrottlingException"
                    | "KMSInternalException"
                    | "DependencyTimeoutException"
                    | "ServiceUnavailable"
                    | "InternalFailure" => ProviderErrorKind::Unavailable,
                    _ => ProviderErrorKind::Other,
                };
                (kind, format!("{code}: {msg}"))
            }
            SdkError::TimeoutError(_) => (ProviderErrorKind::Unavailable, "timed out".to_string()),
            SdkError::DispatchFailure(d) => {
                let what = if d.is_io() {
                    "connection failed"
                } else if d.is_timeout() {
                    "timed out"
                } else {
                    "request could not be sent"
                };
                // Walk the source chain for the root cause (no secrets in transport errors).
                let mut cause = String::new();
                let mut src: Option<&(dyn std::error::Error + 'static)> =
                    std::error::Error::source(&err);
                while let Some(s) = src {
                    cause = s.to_string();
                    src = s.source();
                }
                (ProviderErrorKind::Unavailable, format!("{what} ({cause})"))
            }
            SdkError::ResponseError(_) => (
                ProviderErrorKind::Unavailable,
                "unexpected response from the KMS endpoint".to_string(),
            ),
            _ => (
                ProviderErrorKind::Other,
                "request could not be built".to_string(),
            ),
        };
        let hint = match kind {
            ProviderErrorKind::AccessDenied => {
                " — check the caller's IAM policy and the key policy (kms:EncryptionContext conditions) and that the key is enabled"
            }
            ProviderErrorKind::InvalidCiphertext => {
                " — the object's namespace/name/scope differ from when it was sealed, or it was tampered with"
            }
            ProviderErrorKind::NotFound => " — check the key id/alias, the account and AWS_REGION",
            ProviderErrorKind::Unavailable => {
                " — KMS endpoint unreachable or throttling; retry later"
            }
            _ => "",
        };
        ProviderError::new(
            kind,
            format!("AWS KMS {op} with key {key} in {region} failed: {detail}{hint}"),
        )
    }
}

fn take_key(blob: Option<Blob>, what: &str, key: &str) -> Result<DataKey, ProviderError> {
    let mut bytes = blob.map(Blob::into_inner).unwrap_or_default();
    let dk = DataKey::from_slice(&bytes);
    bytes.zeroize();
    dk.ok_or_else(|| {
        ProviderError::new(
            ProviderErrorKind::Other,
            format!("AWS KMS {what} with key {key} returned no 32-byte data key"),
        )
    })
}

#[async_trait]
impl KeyProvider for AwsKms {
    fn name(&self) -> String {
        format!("AWS KMS key {}", self.key)
    }

    fn handles(&self, key_id: &str) -> bool {
        super::is_aws_key_id(key_id)
    }

    async fn generate_data_key(
        &self,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, ProviderError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(Self::context(ctx)))
            .send()
            .await
            .map_err(|e| self.error("GenerateDataKey", &self.key, e))?;
        let key_id = out.key_id.clone().unwrap_or_else(|| self.key.clone());
        let ciphertext = out
            .ciphertext_blob
            .clone()
            .map(Blob::into_inner)
            .unwrap_or_default();
        let key = take_key(out.plaintext, "GenerateDataKey", &self.key)?;
        if ciphertext.is_empty() {
            return Err(ProviderError::new(
                ProviderErrorKind::Other,
                format!(
                    "AWS KMS GenerateDataKey with key {} returned no ciphertext",
                    self.key
                ),
            ));
        }
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
        let out = self
            .client
            .encrypt()
            .key_id(&self.key)
            .plaintext(Blob::new(key.expose().to_vec()))
            .set_encryption_context(Some(Self::context(ctx)))
            .send()
            .await
            .map_err(|e| self.error("Encrypt", &self.key, e))?;
        let key_id = out.key_id.unwrap_or_else(|| self.key.clone());
        let ct = out
            .ciphertext_blob
            .map(Blob::into_inner)
            .unwrap_or_default();
        Ok((key_id, ct))
    }

    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        let out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(ciphertext.to_vec()))
            .set_encryption_context(Some(Self::context(ctx)))
            .send()
            .await
            .map_err(|e| self.error("Decrypt", key_id, e))?;
        take_key(out.plaintext, "Decrypt", key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_from_arn() {
        assert_eq!(
            arn_region("arn:aws:kms:eu-west-1:111122223333:key/abc"),
            Some("eu-west-1")
        );
        assert_eq!(arn_region("alias/x"), None);
        assert_eq!(arn_region("arn:aws:s3:::bucket"), None);
    }
}
