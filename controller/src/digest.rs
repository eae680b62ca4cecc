//! The restart digest: what the pod-template annotation `sealcred.io/restarted-for-<secret>`
//! holds, so that workloads roll when a *value* changes and only then (issue 17.3).
//!
//! `HMAC-SHA256(K, entries)` in hex, where the entries are encoded as length-prefixed
//! name/value pairs in name order, and `K = HKDF-SHA256(ikm = the namespace's digest key,
//! info = "sealcred.io/restart-digest/v1" ‖ len ‖ namespace ‖ len ‖ Secret name)`.
//! The same values give the same digest whatever their ciphertext (a rotate, a rewrap,
//! a re-seal); a changed value gives another. A pod template is readable by many, so
//! the digest is keyed: without the key, a low-entropy value cannot be tested against it.
//! K differs per Secret, so equal values in two Secrets do not show as equal digests.
//!
//! The digest key: 32 random bytes in the Secret [`DIGEST_KEY_SECRET`] (data key
//! `key`) of the namespace, created by the controller the first time a workload of that
//! namespace asks for restarts, and read (cached in memory, zeroized) afterwards. Who
//! can read it can read the namespace's Secrets, and so the values themselves. See
//! docs/operations.md, "Restart digest", for why not a key derived from the data key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hkdf::Hkdf;
use hmac::Mac;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::annotations::MANAGED_BY_VALUE;
use crate::materialize::Wiped;
use crate::refusal::refusal;
use crate::support::hex;
use crate::{Error, FIELD_MANAGER, Result};

/// Name of the Secret holding a namespace's restart-digest key.
pub const DIGEST_KEY_SECRET: &str = "sealcred-restart-digest-key";
/// Its data key.
const KEY_FIELD: &str = "key";
/// HKDF info prefix (versioned: a new derivation gets a new label).
const INFO: &[u8] = b"sealcred.io/restart-digest/v1";

/// A restart-digest key (32 bytes, wiped on drop).
pub type DigestKey = Arc<Zeroizing<[u8; 32]>>;

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The restart digest of `entries` (name, value), in name order, of Secret
/// `namespace/secret` under the namespace's digest `key`.
pub fn restart_digest<'a>(
    key: &[u8; 32],
    namespace: &str,
    secret: &str,
    entries: impl Iterator<Item = (&'a String, &'a [u8])>,
) -> String {
    let mut info = INFO.to_vec();
    put(&mut info, namespace.as_bytes());
    put(&mut info, secret.as_bytes());
    let mut k = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, key)
        .expand(&info, &mut k[..])
        .expect("32 bytes is a valid length");
    let mut mac = <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&k[..])
        .expect("HMAC takes any key length");
    for (name, value) in entries {
        mac.update(&(name.len() as u64).to_be_bytes());
        mac.update(name.as_bytes());
        mac.update(&(value.len() as u64).to_be_bytes());
        mac.update(value);
    }
    hex(&mac.finalize().into_bytes())
}

/// The digest keys of the namespaces seen so far (read or created once each).
pub struct DigestKeys {
    client: Client,
    keys: Mutex<HashMap<String, DigestKey>>,
}

impl DigestKeys {
    /// No key read yet.
    pub fn new(client: Client) -> Self {
        DigestKeys {
            client,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The digest key of `namespace`: from memory, else read from its Secret, else a
    /// new one created there (create-only: if another replica created one meanwhile,
    /// that one is read and used).
    pub async fn key(&self, namespace: &str) -> Result<DigestKey> {
        if let Some(k) = self.keys.lock().unwrap().get(namespace) {
            return Ok(Arc::clone(k));
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let key = match read(&api, namespace).await? {
            Some(k) => k,
            None => {
                let mut fresh = Zeroizing::new([0u8; 32]);
                getrandom::fill(&mut fresh[..])
                    .map_err(|e| Error::Config(format!("no randomness for a digest key: {e}")))?;
                let secret = Wiped(Secret {
                    metadata: ObjectMeta {
                        name: Some(DIGEST_KEY_SECRET.into()),
                        labels: Some(
                            [("app.kubernetes.io/name".to_string(), MANAGED_BY_VALUE.to_string())]
                                .into(),
                        ),
                        annotations: Some(
                            [(
                                "sealcred.io/purpose".to_string(),
                                "keys the restart digests in pod templates (docs/operations.md, Restart digest); deleting it rolls each annotated workload once, at its Secret's next write".to_string(),
                            )]
                            .into(),
                        ),
                        ..ObjectMeta::default()
                    },
                    type_: Some("Opaque".into()),
                    data: Some([(KEY_FIELD.to_string(), ByteString(fresh.to_vec()))].into()),
                    ..Secret::default()
                });
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                match api.create(&pp, &secret.0).await.map(Wiped) {
                    Ok(_) => Arc::new(fresh),
                    Err(kube::Error::Api(s)) if s.code == 409 => read(&api, namespace)
                        .await?
                        .ok_or_else(|| invalid(namespace, "vanished right after it was created"))?,
                    Err(e) => return Err(refusal(DIGEST_KEY_SECRET, e, None)),
                }
            }
        };
        self.keys
            .lock()
            .unwrap()
            .insert(namespace.to_string(), Arc::clone(&key));
        Ok(key)
    }
}

fn invalid(namespace: &str, what: &str) -> Error {
    Error::InvalidObject(format!(
        "the restart-digest key Secret {namespace}/{DIGEST_KEY_SECRET} {what}; delete it to let the controller make a new one"
    ))
}

/// Reads the key Secret: `None` if there is none.
async fn read(api: &Api<Secret>, namespace: &str) -> Result<Option<DigestKey>> {
    let Some(s) = api
        .get_opt(DIGEST_KEY_SECRET)
        .await
        .map_err(Error::Kube)?
        .map(Wiped)
    else {
        return Ok(None);
    };
    let bytes =
        s.0.data
            .as_ref()
            .and_then(|d| d.get(KEY_FIELD))
            .map(|b| b.0.as_slice())
            .ok_or_else(|| invalid(namespace, "has no data key `key`"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return Err(invalid(namespace, "does not hold a 32-byte key"));
    }
    key.copy_from_slice(bytes);
    Ok(Some(Arc::new(key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn d(key: &[u8; 32], ns: &str, secret: &str, pairs: &[(&str, &str)]) -> String {
        let owned: Vec<(String, Vec<u8>)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        restart_digest(
            key,
            ns,
            secret,
            owned.iter().map(|(k, v)| (k, v.as_slice())),
        )
    }

    #[test]
    fn keyed_per_secret_and_by_value_only() {
        let k = [7u8; 32];
        let base = d(&k, "n", "s", &[("password", "pw")]);
        assert_eq!(base.len(), 64);
        assert_eq!(base, d(&k, "n", "s", &[("password", "pw")]));
        assert_ne!(base, d(&k, "n", "s", &[("password", "pw2")]));
        assert_ne!(base, d(&k, "n", "t", &[("password", "pw")]), "per Secret");
        assert_ne!(
            base,
            d(&k, "m", "s", &[("password", "pw")]),
            "per namespace"
        );
        assert_ne!(
            base,
            d(&[8u8; 32], "n", "s", &[("password", "pw")]),
            "keyed"
        );
        assert_ne!(
            d(&k, "n", "s", &[("ab", "c")]),
            d(&k, "n", "s", &[("a", "bc")]),
            "length-prefixed"
        );
        // Never a plain hash of the value.
        assert_ne!(base, hex(&Sha256::digest(b"pw")));
    }
}
