//! The local key provider: a 256-bit key in a file, for development, offline
//! use and tests. It wraps data keys with AES-256-GCM, binding the
//! EncryptionContext exactly as KMS does (a wrong context fails to unwrap).
//!
//! Key file: one line, `sealcred-local-key-v1:` followed by the key in standard
//! base64, mode 0600. Default path: `$SEALCRED_LOCAL_KEY`, else
//! `$XDG_CONFIG_HOME/sealcred/local.key`, else `~/.config/sealcred/local.key`.

use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{EncryptionContext, GeneratedKey, KeyProvider, ProviderError, ProviderErrorKind};
use crate::crypto::scrub_stack;
use crate::format::{context_bytes, put_lp};
use crate::secret::{DATA_KEY_LEN, DataKey};

/// Prefix of a local key id (`local:` followed by 16 hex digits of fingerprint).
pub const KEY_ID_PREFIX: &str = "local:";
const FILE_PREFIX: &str = "sealcred-local-key-v1:";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A local key-encryption key, loaded from a file.
pub struct LocalKey {
    key: DataKey,
    key_id: String,
    path: PathBuf,
}

fn other(msg: String) -> ProviderError {
    ProviderError::new(ProviderErrorKind::Other, msg)
}

/// The default key file path.
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SEALCRED_LOCAL_KEY").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p).join("sealcred").join("local.key"));
    }
    std::env::var_os("HOME").filter(|p| !p.is_empty()).map(|h| {
        PathBuf::from(h)
            .join(".config")
            .join("sealcred")
            .join("local.key")
    })
}

impl LocalKey {
    /// Loads a key file.
    pub fn load(path: &Path) -> Result<LocalKey, ProviderError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            other(format!(
                "cannot read local key {}: {e} (create one with `sealcred keygen`)",
                path.display()
            ))
        })?);
        let b64 = text.trim().strip_prefix(FILE_PREFIX).ok_or_else(|| {
            other(format!(
                "{} is not a sealcred local key file",
                path.display()
            ))
        })?;
        let bytes = Zeroizing::new(
            STANDARD
                .decode(b64)
                .map_err(|_| other(format!("{}: the key is not valid base64", path.display())))?,
        );
        let key = DataKey::from_slice(&bytes).ok_or_else(|| {
            other(format!(
                "{}: the key must be {DATA_KEY_LEN} bytes",
                path.display()
            ))
        })?;
        Ok(LocalKey {
            key_id: fingerprint(&key),
            key,
            path: path.to_path_buf(),
        })
    }

    /// Creates a new key file (never overwrites one), mode 0600, parent dirs 0700.
    pub fn create(path: &Path) -> Result<LocalKey, ProviderError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(dir)
                .map_err(|e| other(format!("cannot create {}: {e}", dir.display())))?;
        }
        let key = DataKey::random();
        let mut line = Zeroizing::new(String::with_capacity(FILE_PREFIX.len() + 48));
        line.push_str(FILE_PREFIX);
        STANDARD.encode_string(key.expose(), &mut line);
        line.push('\n');
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(path)
            .map_err(|e| other(format!("cannot create local key {}: {e}", path.display())))?;
        f.write_all(line.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| other(format!("cannot write local key {}: {e}", path.display())))?;
        Ok(LocalKey {
            key_id: fingerprint(&key),
            key,
            path: path.to_path_buf(),
        })
    }

    /// The key id recorded in wrappings: `local:` + 16 hex digits.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Where the key was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(*self.key.expose()))
    }

    fn aad(&self, ctx: &EncryptionContext) -> Vec<u8> {
        let mut aad = Vec::new();
        put_lp(&mut aad, b"sealcred/v1 local wrap");
        put_lp(&mut aad, self.key_id.as_bytes());
        put_lp(&mut aad, &context_bytes(ctx));
        aad
    }

    fn wrap_key(&self, key: &DataKey, ctx: &EncryptionContext) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        // Encrypt in place inside the output buffer: no other plaintext copy.
        let mut out = Vec::with_capacity(NONCE_LEN + DATA_KEY_LEN + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(key.expose());
        let tag = self
            .cipher()
            .encrypt_inout_detached(
                &Nonce::from(nonce),
                &self.aad(ctx),
                (&mut out[NONCE_LEN..]).into(),
            )
            .expect("32-byte plaintext");
        out.extend_from_slice(&tag);
        scrub_stack();
        out
    }
}

/// `local:` + the first 16 hex digits of SHA-256("sealcred local key id" ‖ key).
fn fingerprint(key: &DataKey) -> String {
    let mut h = Sha256::new();
    h.update(b"sealcred local key id");
    h.update(key.expose());
    let d = h.finalize();
    let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{KEY_ID_PREFIX}{hex}")
}

#[async_trait]
impl KeyProvider for LocalKey {
    fn name(&self) -> String {
        format!("local key {} ({})", self.key_id, self.path.display())
    }

    fn handles(&self, key_id: &str) -> bool {
        key_id == self.key_id
    }

    async fn generate_data_key(
        &self,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, ProviderError> {
        let key = DataKey::random();
        let ciphertext = self.wrap_key(&key, ctx);
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
        Ok((self.key_id.clone(), self.wrap_key(key, ctx)))
    }

    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        if key_id != self.key_id {
            return Err(ProviderError::new(
                ProviderErrorKind::KeyNotAllowed,
                format!(
                    "sealed with local key {key_id}, but {} holds {}",
                    self.path.display(),
                    self.key_id
                ),
            ));
        }
        let invalid = || {
            ProviderError::new(
                ProviderErrorKind::InvalidCiphertext,
                format!(
                    "local key {} could not unwrap the data key: wrong namespace/name/scope for this object, or the wrapped key was tampered with",
                    self.key_id
                ),
            )
        };
        if ciphertext.len() != NONCE_LEN + DATA_KEY_LEN + TAG_LEN {
            return Err(invalid());
        }
        let (nonce, rest) = ciphertext.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(DATA_KEY_LEN);
        let mut buf = Zeroizing::new([0u8; DATA_KEY_LEN]);
        buf.copy_from_slice(body);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let tag: [u8; TAG_LEN] = tag.try_into().expect("length checked");
        let opened = self.cipher().decrypt_inout_detached(
            &Nonce::from(nonce),
            &self.aad(ctx),
            (&mut buf[..]).into(),
            &Tag::from(tag),
        );
        scrub_stack();
        opened.map_err(|_| invalid())?;
        Ok(DataKey::from_slice(&buf[..]).expect("32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wrap_unwrap_binds_context() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let k = LocalKey::create(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(LocalKey::create(&p).is_err(), "never overwrites");
        let k2 = LocalKey::load(&p).unwrap();
        assert_eq!(k.key_id(), k2.key_id());
        let mut ctx = EncryptionContext::new();
        ctx.insert("a".into(), "b".into());
        let g = k.generate_data_key(&ctx).await.unwrap();
        let back = k2.unwrap(&g.key_id, &g.ciphertext, &ctx).await.unwrap();
        assert_eq!(back.expose(), g.key.expose());
        ctx.insert("a".into(), "c".into());
        let e = k2
            .unwrap(&g.key_id, &g.ciphertext, &ctx)
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind, ProviderErrorKind::InvalidCiphertext);
    }
}
