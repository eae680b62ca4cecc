//! Key providers: who wraps and unwraps data keys.
//!
//! [`KeyProvider`] is the one trait; [`aws::AwsKms`] (AWS KMS),
//! [`local::LocalKey`] (a key file, for development and offline use),
//! [`rsa::RsaPublicKey`] (offline sealing with a KMS RSA public key) and
//! [`kms_rsa::KmsRsa`] (opening those wrappings with KMS Decrypt) implement
//! it. This module is the only place a data key crosses a process boundary:
//! grep for `generate_data_key` and `unwrap` to find every KMS call.

pub mod aws;
pub mod aws_credentials;
pub mod http;
pub mod kms_rsa;
pub mod local;
pub mod rsa;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

use crate::secret::DataKey;

/// The EncryptionContext (sorted).
pub type EncryptionContext = BTreeMap<String, String>;

/// Why a provider call failed. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// The caller may not use the key (IAM / key policy).
    AccessDenied,
    /// The key is disabled (KMS `DisabledException`): an operator can enable it.
    KeyDisabled,
    /// The key is scheduled for deletion (`KMSInvalidStateException`, pending
    /// deletion): cancel the deletion and enable it before the waiting period ends.
    KeyPendingDeletion,
    /// The key is in another state that cannot be used (pending import,
    /// unavailable custom key store, ...).
    KeyInvalidState,
    /// The key service could not be reached, timed out or throttled: retry later.
    Unavailable,
    /// The wrapped key did not decrypt: wrong EncryptionContext, wrong key, or tampered.
    InvalidCiphertext,
    /// The key does not exist (wrong id, alias, account or region).
    NotFound,
    /// The key id is not one this provider, or the allowlist, accepts.
    KeyNotAllowed,
    /// Local key file problems, and anything else.
    Other,
}

/// A provider error: a kind and a one-line message naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// What kind of failure.
    pub kind: ProviderErrorKind,
    /// One line, naming the key and what to do next; never key material.
    pub message: String,
}

impl ProviderError {
    /// A new error.
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            message: message.into(),
        }
    }

    /// Whether retrying later can help.
    pub fn is_transient(&self) -> bool {
        self.kind == ProviderErrorKind::Unavailable
    }

    /// Whether the key's state (not the request) is the problem: retrying
    /// after an operator's fix (EnableKey, CancelKeyDeletion) helps.
    pub fn is_key_state(&self) -> bool {
        matches!(
            self.kind,
            ProviderErrorKind::KeyDisabled
                | ProviderErrorKind::KeyPendingDeletion
                | ProviderErrorKind::KeyInvalidState
        )
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProviderError {}

/// A data key and its first wrapping, as made by [`KeyProvider::generate_data_key`].
pub struct GeneratedKey {
    /// The plaintext data key.
    pub key: DataKey,
    /// The key id to record (for AWS KMS the key ARN KMS answered with).
    pub key_id: String,
    /// The wrapped data key.
    pub ciphertext: Vec<u8>,
}

/// Wraps and unwraps data keys under one key-encryption key.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// The key as the user named it (for messages).
    fn name(&self) -> String;

    /// Whether this provider can unwrap a wrapping recorded with `key_id`.
    fn handles(&self, key_id: &str) -> bool;

    /// A fresh 256-bit data key, wrapped under this provider's key with `ctx`.
    async fn generate_data_key(
        &self,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, ProviderError>;

    /// Wraps an existing data key (for a second wrapping, or rotate --add-kms).
    /// Returns the key id to record and the wrapped key.
    async fn wrap(
        &self,
        key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<(String, Vec<u8>), ProviderError>;

    /// Unwraps a data key recorded with `key_id`, passing `ctx` (and, for KMS,
    /// the expected KeyId).
    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError>;

    /// [`KeyProvider::unwrap`], with the service's request id for the call where
    /// it returns one (AWS KMS: `x-amzn-RequestId`, which CloudTrail records as
    /// the Decrypt event's `requestID`), on success and on failure. A request id
    /// is not secret. The default has none.
    async fn unwrap_traced(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        ctx: &EncryptionContext,
    ) -> (Result<DataKey, ProviderError>, Option<String>) {
        (self.unwrap(key_id, ciphertext, ctx).await, None)
    }
}

/// Whether a recorded key id names an AWS KMS key.
pub fn is_aws_key_id(key_id: &str) -> bool {
    key_id.starts_with("arn:aws:kms:")
        || key_id.starts_with("arn:aws-us-gov:kms:")
        || key_id.starts_with("arn:aws-cn:kms:")
}

/// Whether a recorded key id names a local key.
pub fn is_local_key_id(key_id: &str) -> bool {
    key_id.starts_with(local::KEY_ID_PREFIX)
}
