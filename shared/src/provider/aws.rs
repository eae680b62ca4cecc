//! The AWS KMS provider: every call sealcred makes to AWS KMS is in this file.
//!
//! Configuration is the standard AWS chain (env, shared profile / `AWS_PROFILE`
//! with `credential_process`, IAM Identity Center, `aws login`, `role_arn` and
//! `source_profile`; web identity / IRSA, ECS and EKS pod identity; failures
//! explained by [`super::aws_credentials`]), the region from
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
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, EncryptionAlgorithmSpec};
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
    super::aws_credentials::explain_failures(loader.load().await)
}

/// The region inside a KMS key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`).
pub fn arn_region(key: &str) -> Option<&str> {
    let mut parts = key.split(':');
    (parts.next()? == "arn").then_some(())?;
    parts.next()?;
    (parts.next()? == "kms").then_some(())?;
    parts.next().filter(|r| !r.is_empty())
}

/// The parts of a KMS key ARN (`arn:PARTITION:kms:REGION:ACCOUNT:key/ID`).
#[derive(Debug, PartialEq, Eq)]
pub struct KeyArn<'a> {
    /// `aws`, `aws-cn`, `aws-us-gov`.
    pub partition: &'a str,
    /// The key's region.
    pub region: &'a str,
    /// The owning account.
    pub account: &'a str,
    /// The key id (a UUID, or `mrk-…` for a multi-Region key).
    pub key_id: &'a str,
}

impl<'a> KeyArn<'a> {
    /// Parses a key ARN; `None` for anything else (aliases, bare ids).
    pub fn parse(s: &'a str) -> Option<KeyArn<'a>> {
        let mut p = s.splitn(6, ':');
        (p.next()? == "arn").then_some(())?;
        let partition = p.next()?;
        (p.next()? == "kms").then_some(())?;
        let region = p.next()?;
        let account = p.next()?;
        let key_id = p.next()?.strip_prefix("key/")?;
        let nonempty = |v: &str| !v.is_empty() && !v.contains(['/', ':']);
        (partition.starts_with("aws") && nonempty(region) && nonempty(account) && nonempty(key_id))
            .then_some(KeyArn {
                partition,
                region,
                account,
                key_id,
            })
    }
}

/// One AWS KMS key (ARN, key id, `alias/NAME` or alias ARN). Every call names
/// this key; clients are shared between the keys of one region
/// ([`AwsKms::with_key`]), never the key.
#[derive(Clone)]
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

    /// The same client (region, endpoint, credentials, connection pool) for
    /// another key. `key` must be in this provider's region: a key ARN naming
    /// another region is refused (its calls would go to the wrong endpoint).
    pub fn with_key(&self, key: &str) -> Result<AwsKms, ProviderError> {
        if let Some(r) = arn_region(key)
            && r != self.region
        {
            return Err(ProviderError::new(
                ProviderErrorKind::Other,
                format!("KMS key {key} is in {r}, not {}", self.region),
            ));
        }
        Ok(AwsKms {
            client: self.client.clone(),
            key: key.to_string(),
            region: self.region.clone(),
        })
    }

    /// The key as given (ARN, key id or alias).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The KeyId KMS answered with, checked against the key asked for: it is
    /// what gets recorded in the object, so it must name the key that really
    /// wrapped the data key. A key ARN must come back unchanged; a bare key id
    /// must come back as that key's ARN in this region; an alias must come back
    /// as a key ARN in the alias's region (and account, for an alias ARN).
    fn checked_key_id(&self, op: &str, returned: Option<String>) -> Result<String, ProviderError> {
        let asked = self.key.as_str();
        let mismatch = |got: &str| {
            ProviderError::new(
                ProviderErrorKind::Other,
                format!(
                    "AWS KMS {op} with key {asked} in {} answered for key {got:?}: refusing to record a key that was not asked for (check the endpoint; a proxy or a misconfigured KMS answered)",
                    self.region
                ),
            )
        };
        let Some(got) = returned else {
            return Err(ProviderError::new(
                ProviderErrorKind::Other,
                format!("AWS KMS {op} with key {asked} returned no KeyId"),
            ));
        };
        let Some(parts) = KeyArn::parse(&got) else {
            return Err(mismatch(&got));
        };
        let ok = match KeyArn::parse(asked) {
            Some(_) => got == asked,
            None => match asked.strip_prefix("arn:") {
                // An alias ARN: arn:PARTITION:kms:REGION:ACCOUNT:alias/NAME.
                Some(_) => {
                    let mut a = asked.split(':');
                    let (partition, region, account) = (a.nth(1), a.nth(1), a.next());
                    partition == Some(parts.partition)
                        && region == Some(parts.region)
                        && account == Some(parts.account)
                }
                None if asked.starts_with("alias/") => parts.region == self.region,
                None => parts.region == self.region && parts.key_id == asked,
            },
        };
        if ok { Ok(got) } else { Err(mismatch(&got)) }
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
        if let Some(why) =
            std::error::Error::source(&err).and_then(super::aws_credentials::failure_in)
        {
            // Kept `Unavailable` (as every dispatch failure was): for the
            // controller a web identity / STS failure may pass.
            return ProviderError::new(
                ProviderErrorKind::Unavailable,
                format!("AWS KMS {op} with key {key} in {region} failed: {why}"),
            );
        }
        let (kind, detail) = match &err {
            SdkError::ServiceError(s) => {
                let e = s.err();
                let code = e.code().unwrap_or("UnknownError");
                let msg = e.message().unwrap_or("");
                let kind = match code {
                    "AccessDeniedException"
                    | "UnrecognizedClientException"
                    | "InvalidSignatureException"
                    | "ExpiredTokenException" => ProviderErrorKind::AccessDenied,
                    "DisabledException" => ProviderErrorKind::KeyDisabled,
                    "KMSInvalidStateException"
                        if msg.to_ascii_lowercase().contains("pending deletion") =>
                    {
                        ProviderErrorKind::KeyPendingDeletion
                    }
                    "KMSInvalidStateException" => ProviderErrorKind::KeyInvalidState,
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
                " — check the caller's IAM policy and the key policy (kms:EncryptionContext conditions) and that the key is enabled".to_string()
            }
            ProviderErrorKind::KeyDisabled => format!(
                " — the key is disabled: enable it (aws kms enable-key --key-id {key}) or re-seal under another key"
            ),
            ProviderErrorKind::KeyPendingDeletion => format!(
                " — the key is scheduled for deletion: cancel it (aws kms cancel-key-deletion --key-id {key}, then enable-key) before the waiting period ends, or what only it wraps is lost"
            ),
            ProviderErrorKind::KeyInvalidState => {
                " — the key is not usable in its current state (aws kms describe-key shows its KeyState)".to_string()
            }
            ProviderErrorKind::InvalidCiphertext => {
                " — the object's namespace/name/scope differ from when it was sealed, or it was tampered with".to_string()
            }
            ProviderErrorKind::NotFound => {
                " — check the key id/alias, the account and AWS_REGION".to_string()
            }
            ProviderErrorKind::Unavailable => {
                " — KMS endpoint unreachable or throttling; retry later".to_string()
            }
            _ => String::new(),
        };
        ProviderError::new(
            kind,
            format!("AWS KMS {op} with key {key} in {region} failed: {detail}{hint}"),
        )
    }
}

impl AwsKms {
    /// KMS `Decrypt` of an RSA wrapping made offline with the key's public
    /// half: `EncryptionAlgorithm = RSAES_OAEP_SHA_256`, `KeyId` = the
    /// recorded ARN, and no EncryptionContext (asymmetric Decrypt takes none;
    /// the caller checks the binding inside the plaintext). The plaintext is
    /// returned in a zeroizing buffer.
    pub async fn decrypt_rsa(
        &self,
        key_id: &str,
        arn: &str,
        ciphertext: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ProviderError> {
        let out = self
            .client
            .decrypt()
            .key_id(arn)
            .ciphertext_blob(Blob::new(ciphertext.to_vec()))
            .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
            .send()
            .await
            .map_err(|e| self.error("Decrypt", key_id, e))?;
        if out.key_id.as_deref() != Some(arn) {
            return Err(ProviderError::new(
                ProviderErrorKind::Other,
                format!("AWS KMS Decrypt with key {arn} answered for another key"),
            ));
        }
        Ok(zeroize::Zeroizing::new(
            out.plaintext.map(Blob::into_inner).unwrap_or_default(),
        ))
    }

    /// KMS `GetPublicKey` for this provider's key, checked: an
    /// `ENCRYPT_DECRYPT` RSA key offering `RSAES_OAEP_SHA_256`, recorded under
    /// the key ARN KMS answered with.
    pub async fn get_public_key(&self) -> Result<super::rsa::RsaPublicKey, ProviderError> {
        let out = self
            .client
            .get_public_key()
            .key_id(&self.key)
            .send()
            .await
            .map_err(|e| self.error("GetPublicKey", &self.key, e))?;
        let arn = self.checked_key_id("GetPublicKey", out.key_id.clone())?;
        let der = out
            .public_key
            .as_ref()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default();
        let algorithms: Vec<&str> = out
            .encryption_algorithms()
            .iter()
            .map(|a| a.as_str())
            .collect();
        super::rsa::RsaPublicKey::new(
            &format!("AWS KMS GetPublicKey in {}", self.region),
            &arn,
            out.key_usage().map(|u| u.as_str()).unwrap_or("(none)"),
            out.key_spec().map(|s| s.as_str()).unwrap_or("(none)"),
            &algorithms,
            &der,
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
        let key_id = self.checked_key_id("GenerateDataKey", out.key_id.clone())?;
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
        let key_id = self.checked_key_id("Encrypt", out.key_id)?;
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
        self.unwrap_traced(key_id, ciphertext, ctx).await.0
    }

    async fn unwrap_traced(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        ctx: &EncryptionContext,
    ) -> (Result<DataKey, ProviderError>, Option<String>) {
        let sent = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(ciphertext.to_vec()))
            .set_encryption_context(Some(Self::context(ctx)))
            .send()
            .await;
        // The request id comes from the response headers (or the error body):
        // never from the plaintext.
        let request_id = match &sent {
            Ok(out) => out.request_id(),
            Err(e) => e
                .request_id()
                .or_else(|| e.as_service_error()?.request_id()),
        }
        .map(str::to_string);
        let result = match sent {
            Ok(out) => take_key(out.plaintext, "Decrypt", key_id),
            Err(e) => Err(self.error("Decrypt", key_id, e)),
        };
        (result, request_id)
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

    #[test]
    fn key_arn_parts() {
        let a = KeyArn::parse("arn:aws:kms:eu-west-1:111122223333:key/abc").unwrap();
        assert_eq!(
            (a.partition, a.region, a.account, a.key_id),
            ("aws", "eu-west-1", "111122223333", "abc")
        );
        assert!(KeyArn::parse("arn:aws:kms:eu-west-1:111122223333:alias/x").is_none());
        assert!(KeyArn::parse("arn:aws:kms:eu-west-1:111122223333:key/").is_none());
        assert!(KeyArn::parse("arn:aws:kms::111122223333:key/abc").is_none());
        assert!(KeyArn::parse("arn:aws:kms:eu-west-1:111122223333:key/a/b").is_none());
        assert!(KeyArn::parse("abc").is_none());
    }

    fn provider(key: &str) -> AwsKms {
        let conf = SdkConfig::builder()
            .region(Region::new("eu-west-1"))
            .behavior_version(BehaviorVersion::latest())
            .build();
        AwsKms::new(&conf, key).unwrap()
    }

    #[test]
    fn returned_key_id_must_name_the_key_asked_for() {
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/k1";
        let other = "arn:aws:kms:eu-west-1:111122223333:key/k2";
        let check = |asked: &str, got: Option<&str>| {
            provider(asked).checked_key_id("Encrypt", got.map(str::to_string))
        };
        assert_eq!(check(arn, Some(arn)).unwrap(), arn);
        let e = check(arn, Some(other)).unwrap_err();
        assert!(e.message.contains("answered for key"), "{}", e.message);
        assert!(check(arn, None).is_err());
        // A bare key id: its ARN in this region.
        assert_eq!(check("k1", Some(arn)).unwrap(), arn);
        assert!(check("k1", Some(other)).is_err());
        assert!(check("k1", Some("arn:aws:kms:us-east-1:111122223333:key/k1")).is_err());
        // An alias: some key ARN of its region (and account, for an alias ARN).
        assert_eq!(check("alias/a", Some(other)).unwrap(), other);
        assert!(check("alias/a", Some("alias/a")).is_err());
        let alias_arn = "arn:aws:kms:eu-west-1:111122223333:alias/a";
        assert_eq!(check(alias_arn, Some(arn)).unwrap(), arn);
        assert!(check(alias_arn, Some("arn:aws:kms:eu-west-1:999999999999:key/k1")).is_err());
        // Another account's ARN for the same key id is another key.
        assert!(check(arn, Some("arn:aws:kms:eu-west-1:999999999999:key/k1")).is_err());
    }

    #[test]
    fn with_key_keeps_the_key_and_refuses_another_region() {
        let p = provider("arn:aws:kms:eu-west-1:1:key/a");
        let q = p.with_key("arn:aws:kms:eu-west-1:1:key/b").unwrap();
        assert_eq!(q.key(), "arn:aws:kms:eu-west-1:1:key/b");
        assert_eq!(p.key(), "arn:aws:kms:eu-west-1:1:key/a");
        assert!(p.with_key("arn:aws:kms:us-east-1:1:key/b").is_err());
    }
}
