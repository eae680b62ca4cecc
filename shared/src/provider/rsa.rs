//! RSA wrappings: a data key encrypted offline with the public half of an AWS
//! KMS RSA key pair (`RSAES_OAEP_SHA_256`), opened only by KMS `Decrypt`.
//!
//! Sealing needs the public-key file written by `sealcred pubkey` and no AWS
//! credentials or network. Asymmetric `Decrypt` takes no EncryptionContext, so
//! the binding the context gives symmetric wrappings is carried inside the RSA
//! plaintext instead and checked after `Decrypt` (docs/FORMAT.md, "RSA
//! wrapping"):
//!
//! ```text
//! rsa_plaintext = data key (32) ‖ SHA-256(lp("sealcred/v1 rsa wrap") ‖ lp(key ARN) ‖ lp(map(ctx)))
//! ```
//!
//! Public-key file (YAML, docs/FORMAT.md, "Public-key file"):
//!
//! ```yaml
//! kind: SealcredPublicKey
//! version: 1
//! keyArn: arn:aws:kms:eu-west-1:111122223333:key/...
//! keyUsage: ENCRYPT_DECRYPT
//! keySpec: RSA_3072
//! encryptionAlgorithm: RSAES_OAEP_SHA_256
//! publicKey: <b64 of the DER SubjectPublicKeyInfo>
//! ```

use std::path::Path;

use async_trait::async_trait;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::aws::KeyArn;
use super::{EncryptionContext, GeneratedKey, KeyProvider, ProviderError, ProviderErrorKind};
use crate::format::{context_bytes, put_lp};
use crate::secret::{DATA_KEY_LEN, DataKey};

/// Prefix of an RSA wrapping's key id: `rsaes-oaep-sha256:` + the key ARN.
pub const KEY_ID_PREFIX: &str = "rsaes-oaep-sha256:";
/// The only encryption algorithm used (KMS's name for it).
pub const ALGORITHM: &str = "RSAES_OAEP_SHA_256";
/// The key usage a sealing key must have.
pub const KEY_USAGE: &str = "ENCRYPT_DECRYPT";
/// `kind` of a public-key file.
pub const FILE_KIND: &str = "SealcredPublicKey";
/// The key specs accepted, with their modulus sizes in bits.
pub const KEY_SPECS: &[(&str, usize)] =
    &[("RSA_2048", 2048), ("RSA_3072", 3072), ("RSA_4096", 4096)];
/// Length of the RSA plaintext: the data key and the binding check.
pub const PLAINTEXT_LEN: usize = DATA_KEY_LEN + 32;

/// Whether a recorded key id names an RSA wrapping.
pub fn is_rsa_key_id(key_id: &str) -> bool {
    key_id.starts_with(KEY_ID_PREFIX)
}

/// The key ARN of an RSA wrapping's key id (`None` unless it is one, with a
/// well-formed key ARN).
pub fn arn_of(key_id: &str) -> Option<&str> {
    key_id
        .strip_prefix(KEY_ID_PREFIX)
        .filter(|a| KeyArn::parse(a).is_some())
}

/// The key id recorded for a wrapping under `arn`.
pub fn key_id_for(arn: &str) -> String {
    format!("{KEY_ID_PREFIX}{arn}")
}

/// `SHA-256(lp("sealcred/v1 rsa wrap") ‖ lp(key ARN) ‖ lp(map(ctx)))`: binds
/// the RSA plaintext to the key and to the object's scope binding.
pub fn binding_check(arn: &str, ctx: &EncryptionContext) -> [u8; 32] {
    let mut b = Vec::new();
    put_lp(&mut b, b"sealcred/v1 rsa wrap");
    put_lp(&mut b, arn.as_bytes());
    put_lp(&mut b, &context_bytes(ctx));
    Sha256::digest(&b).into()
}

/// Whether a ciphertext length can be an RSA wrapping (one modulus of a
/// supported key spec): checked before any KMS call.
pub fn check_ciphertext_len(key_id: &str, len: usize) -> Result<(), ProviderError> {
    if KEY_SPECS.iter().any(|(_, bits)| bits / 8 == len) {
        return Ok(());
    }
    Err(ProviderError::new(
        ProviderErrorKind::InvalidCiphertext,
        format!(
            "RSA wrapping for {key_id}: ciphertext is {len} bytes, not 256, 384 or 512 — the object was tampered with"
        ),
    ))
}

/// Checks what KMS `Decrypt` returned for an RSA wrapping: exactly
/// [`PLAINTEXT_LEN`] bytes whose last 32 equal [`binding_check`] for this key
/// and the object's context (constant time). Returns the data key.
pub fn open_plaintext(
    key_id: &str,
    ctx: &EncryptionContext,
    plaintext: &[u8],
) -> Result<DataKey, ProviderError> {
    let bad = |why: &str| {
        ProviderError::new(
            ProviderErrorKind::InvalidCiphertext,
            format!(
                "RSA wrapping for {key_id}: {why} — the object's namespace/name/scope differ from when it was sealed, or it was tampered with"
            ),
        )
    };
    let arn = arn_of(key_id).ok_or_else(|| bad("not an RSA key id"))?;
    if plaintext.len() != PLAINTEXT_LEN {
        return Err(bad("the decrypted wrapping has the wrong length"));
    }
    let want = binding_check(arn, ctx);
    if !bool::from(plaintext[DATA_KEY_LEN..].ct_eq(&want)) {
        return Err(bad("the binding check does not match"));
    }
    DataKey::from_slice(&plaintext[..DATA_KEY_LEN]).ok_or_else(|| bad("no data key"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFile {
    kind: String,
    version: u32,
    key_arn: String,
    key_usage: String,
    key_spec: String,
    encryption_algorithm: String,
    public_key: String,
}

/// The public half of a KMS RSA key pair, checked: an `ENCRYPT_DECRYPT` key of
/// a supported spec whose SubjectPublicKeyInfo is an RSA key of that size.
pub struct RsaPublicKey {
    arn: String,
    key_id: String,
    spec: String,
    der: Vec<u8>,
    key: OaepPublicEncryptingKey,
    source: String,
}

fn bad_key(source: &str, msg: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(ProviderErrorKind::Other, format!("{source}: {msg}"))
}

impl RsaPublicKey {
    /// Checks a public key's description (from a file or from KMS
    /// GetPublicKey). `source` names where it came from, for messages;
    /// `algorithms` empty means the answer did not list them.
    pub fn new(
        source: &str,
        arn: &str,
        usage: &str,
        spec: &str,
        algorithms: &[&str],
        der: &[u8],
    ) -> Result<RsaPublicKey, ProviderError> {
        if KeyArn::parse(arn).is_none() {
            return Err(bad_key(
                source,
                format!("keyArn {arn:?} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)"),
            ));
        }
        if usage != KEY_USAGE {
            return Err(bad_key(
                source,
                format!(
                    "key {arn} has key usage {usage}; only {KEY_USAGE} RSA keys can seal (create one with KeyUsage=ENCRYPT_DECRYPT, KeySpec=RSA_3072)"
                ),
            ));
        }
        let Some((_, bits)) = KEY_SPECS.iter().find(|(s, _)| *s == spec) else {
            return Err(bad_key(
                source,
                format!(
                    "key {arn} has key spec {spec}, which sealcred does not support (RSA_2048, RSA_3072, RSA_4096)"
                ),
            ));
        };
        // AWS KMS lists the algorithms of every ENCRYPT_DECRYPT key; local-kms
        // leaves the list out of GetPublicKey. An empty list is "not stated".
        if !algorithms.is_empty() && !algorithms.contains(&ALGORITHM) {
            return Err(bad_key(
                source,
                format!("key {arn} does not offer {ALGORITHM}"),
            ));
        }
        let key = PublicEncryptingKey::from_der(der)
            .ok()
            .filter(|k| k.key_size_bits() == *bits)
            .and_then(|k| OaepPublicEncryptingKey::new(k).ok())
            .ok_or_else(|| {
                bad_key(
                    source,
                    format!("publicKey is not a DER SubjectPublicKeyInfo of an {spec} key"),
                )
            })?;
        Ok(RsaPublicKey {
            arn: arn.to_string(),
            key_id: key_id_for(arn),
            spec: spec.to_string(),
            der: der.to_vec(),
            key,
            source: source.to_string(),
        })
    }

    /// Parses a public-key file's text; `source` (the path) names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<RsaPublicKey, ProviderError> {
        let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| {
            bad_key(
                source,
                format!("not a sealcred public-key file: {}", e.without_snippet()),
            )
        })?;
        if raw.kind != FILE_KIND || raw.version != 1 {
            return Err(bad_key(
                source,
                format!("not a sealcred public-key file (want kind: {FILE_KIND}, version: 1)"),
            ));
        }
        let der = crate::format::decode_b64("publicKey", &raw.public_key, None)
            .map_err(|e| bad_key(source, e))?;
        RsaPublicKey::new(
            source,
            &raw.key_arn,
            &raw.key_usage,
            &raw.key_spec,
            &[&raw.encryption_algorithm],
            &der,
        )
    }

    /// Loads a public-key file.
    pub fn load(path: &Path) -> Result<RsaPublicKey, ProviderError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| bad_key(&source, e))?;
        RsaPublicKey::parse(&text, &source)
    }

    /// The file text (what `sealcred pubkey` writes): comments, then one
    /// `field: value` line per field (every value is a plain YAML scalar).
    pub fn render(&self) -> String {
        format!(
            "# sealcred public key (not secret): seal with `sealcred seal --public-key FILE`, no AWS credentials needed.\n\
             # Only kms:Decrypt on the key opens what it seals. Review changes to this file like changes to .sealcred.yaml.\n\
             kind: {FILE_KIND}\nversion: 1\nkeyArn: {}\nkeyUsage: {KEY_USAGE}\nkeySpec: {}\n\
             encryptionAlgorithm: {ALGORITHM}\npublicKey: {}\n",
            self.arn,
            self.spec,
            crate::format::encode_b64(&self.der)
        )
    }

    /// The key ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The key spec (`RSA_3072`, ...).
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Where the key came from (a file path, or KMS).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Encrypts `key` with its binding check for `ctx`.
    pub fn encrypt(
        &self,
        key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<Vec<u8>, ProviderError> {
        let mut plain = Zeroizing::new([0u8; PLAINTEXT_LEN]);
        plain[..DATA_KEY_LEN].copy_from_slice(key.expose());
        plain[DATA_KEY_LEN..].copy_from_slice(&binding_check(&self.arn, ctx));
        let mut out = vec![0u8; self.key.ciphertext_size()];
        let n = self
            .key
            .encrypt(&OAEP_SHA256_MGF1SHA256, &plain[..], &mut out, None)
            .map_err(|_| {
                bad_key(
                    &self.source,
                    format!("RSA-OAEP encryption under {} failed", self.arn),
                )
            })?
            .len();
        out.truncate(n);
        Ok(out)
    }
}

#[async_trait]
impl KeyProvider for RsaPublicKey {
    fn name(&self) -> String {
        format!("RSA public key {} ({})", self.arn, self.source)
    }

    fn handles(&self, key_id: &str) -> bool {
        key_id == self.key_id
    }

    async fn generate_data_key(
        &self,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, ProviderError> {
        let key = DataKey::random();
        let ciphertext = self.encrypt(&key, ctx)?;
        Ok(GeneratedKey {
            key,
            key_id: self.key_id.clone(),
            ciphertext,
        })
    }

    async fn wrap(
        &self,
        key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<(String, Vec<u8>), ProviderError> {
        Ok((self.key_id.clone(), self.encrypt(key, ctx)?))
    }

    async fn unwrap(
        &self,
        key_id: &str,
        _ciphertext: &[u8],
        _ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        Err(ProviderError::new(
            ProviderErrorKind::KeyNotAllowed,
            format!(
                "{key_id}: a public key cannot open what it sealed; opening needs kms:Decrypt on {}",
                self.arn
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = include_str!("../../tests/vectors/TEST-ONLY-DO-NOT-USE.rsa-2048.pubkey");

    fn edited(from: &str, to: &str) -> String {
        assert!(FILE.contains(from), "{from}");
        FILE.replace(from, to)
    }

    #[test]
    fn public_key_file_round_trips() {
        let k = RsaPublicKey::parse(FILE, "t.pubkey").unwrap();
        assert_eq!(k.spec(), "RSA_2048");
        assert_eq!(k.render(), FILE);
        assert!(k.handles(&key_id_for(k.arn())));
    }

    #[test]
    fn bad_public_key_files_are_refused_naming_the_file() {
        for (text, want) in [
            (
                edited("ENCRYPT_DECRYPT", "SIGN_VERIFY"),
                "key usage SIGN_VERIFY",
            ),
            (
                edited("keySpec: RSA_2048", "keySpec: ECC_NIST_P256"),
                "key spec ECC_NIST_P256",
            ),
            (
                edited("keySpec: RSA_2048", "keySpec: RSA_4096"),
                "not a DER SubjectPublicKeyInfo of an RSA_4096",
            ),
            (
                edited("RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1"),
                "does not offer RSAES_OAEP_SHA_256",
            ),
            (
                edited("kind: SealcredPublicKey", "kind: Secret"),
                "not a sealcred public-key file",
            ),
            (
                edited("keyArn: arn:aws:kms:", "keyArn: alias/"),
                "not a KMS key ARN",
            ),
            (edited("publicKey: MII", "publicKey: xMII"), "publicKey"),
            (
                edited("publicKey: MII", "publicKey: AAAAMII"),
                "not a DER SubjectPublicKeyInfo",
            ),
            (
                format!("{FILE}extra: 1\n"),
                "not a sealcred public-key file",
            ),
            ("[".to_string(), "not a sealcred public-key file"),
        ] {
            let e = RsaPublicKey::parse(&text, "keys/prod.pubkey")
                .err()
                .expect(want);
            assert!(e.message.starts_with("keys/prod.pubkey: "), "{}", e.message);
            assert!(e.message.contains(want), "{want}: {}", e.message);
            assert!(!e.message.contains('\n'), "{}", e.message);
        }
    }

    #[test]
    fn binding_check_is_bound_to_key_and_context() {
        let mut ctx = EncryptionContext::new();
        ctx.insert("sealcred.io/scope".into(), "strict".into());
        let a = "arn:aws:kms:eu-west-1:111122223333:key/a";
        let b = "arn:aws:kms:eu-west-1:111122223333:key/b";
        let check = binding_check(a, &ctx);
        assert_ne!(check, binding_check(b, &ctx));
        let mut plain = [7u8; PLAINTEXT_LEN];
        plain[DATA_KEY_LEN..].copy_from_slice(&check);
        let id = key_id_for(a);
        assert_eq!(
            open_plaintext(&id, &ctx, &plain).unwrap().expose(),
            &[7u8; 32]
        );
        assert!(open_plaintext(&key_id_for(b), &ctx, &plain).is_err());
        let mut other = ctx.clone();
        other.insert("sealcred.io/namespace".into(), "x".into());
        let e = open_plaintext(&id, &other, &plain).err().unwrap();
        assert_eq!(e.kind, ProviderErrorKind::InvalidCiphertext);
        assert!(open_plaintext(&id, &ctx, &plain[..PLAINTEXT_LEN - 1]).is_err());
        assert!(check_ciphertext_len(&id, 384).is_ok());
        assert!(check_ciphertext_len(&id, 255).is_err());
    }
}
