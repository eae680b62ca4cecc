//! The primitives of suite `AES256GCM-HKDFSHA512-COMMIT`, apart from the format.
//!
//! From a data key and a data-key id, HKDF-SHA512 (salt = id) derives three
//! values: the AES-256-GCM value key, the HMAC-SHA256 header key, and the key
//! commitment. The commitment is stored in the object and compared in
//! constant time before anything is decrypted, so a ciphertext cannot be made
//! to open under two different data keys.

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use hkdf::Hkdf;
use hmac::Mac;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::format::{COMMITMENT_LEN, DATA_KEY_ID_LEN, GCM_TAG_LEN, HEADER_TAG_LEN, NONCE_LEN};
use crate::secret::{DataKey, SecretBytes};

const INFO_VALUE_KEY: &[u8] = b"sealcred/v1 AES256GCM-HKDFSHA512-COMMIT value key";
const INFO_HEADER_KEY: &[u8] = b"sealcred/v1 AES256GCM-HKDFSHA512-COMMIT header key";
const INFO_COMMIT: &[u8] = b"sealcred/v1 AES256GCM-HKDFSHA512-COMMIT commitment";

/// A decryption failed. Deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct AuthError;

/// Keys derived from one data key. The keys live on the heap, so moving a
/// `DerivedKeys` (into a `Vec`, out of a `Result`, across an `.await` inside an
/// async state machine) copies two pointers, never key bytes.
pub struct DerivedKeys {
    value_key: Box<Zeroizing<[u8; 32]>>,
    header_key: Box<Zeroizing<[u8; 32]>>,
    commitment: [u8; COMMITMENT_LEN],
}

impl DerivedKeys {
    /// HKDF-SHA512(salt = data-key id, ikm = data key), three expansions.
    pub fn derive(dk: &DataKey, id: &[u8; DATA_KEY_ID_LEN]) -> DerivedKeys {
        let hk = Hkdf::<Sha512>::new(Some(id), dk.expose());
        let mut value_key = Box::new(Zeroizing::new([0u8; 32]));
        let mut header_key = Box::new(Zeroizing::new([0u8; 32]));
        let mut commitment = [0u8; COMMITMENT_LEN];
        hk.expand(INFO_VALUE_KEY, &mut value_key[..])
            .expect("32 bytes is a valid length");
        hk.expand(INFO_HEADER_KEY, &mut header_key[..])
            .expect("32 bytes is a valid length");
        hk.expand(INFO_COMMIT, &mut commitment)
            .expect("32 bytes is a valid length");
        let keys = DerivedKeys {
            value_key,
            header_key,
            commitment,
        };
        drop(hk);
        scrub_stack();
        keys
    }

    /// The key commitment to store.
    pub fn commitment(&self) -> [u8; COMMITMENT_LEN] {
        self.commitment
    }

    /// Constant-time check of a stored commitment.
    pub fn check_commitment(&self, stored: &[u8; COMMITMENT_LEN]) -> Result<(), AuthError> {
        if bool::from(self.commitment.ct_eq(stored)) {
            Ok(())
        } else {
            Err(AuthError)
        }
    }

    /// HMAC-SHA256(header key, header bytes).
    pub fn header_tag(&self, header: &[u8]) -> [u8; HEADER_TAG_LEN] {
        self.mac(header).finalize().into_bytes().into()
    }

    /// HMAC-SHA256 keyed with the header key, fed `bytes`.
    fn mac(&self, bytes: &[u8]) -> hmac::Hmac<Sha256> {
        let mut mac = <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&self.header_key[..])
            .expect("HMAC takes any key length");
        mac.update(bytes);
        mac
    }

    /// Constant-time check of a stored header tag.
    pub fn check_header_tag(
        &self,
        header: &[u8],
        stored: &[u8; HEADER_TAG_LEN],
    ) -> Result<(), AuthError> {
        self.mac(header).verify_slice(stored).map_err(|_| AuthError)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(**self.value_key))
    }

    /// Encrypts `plaintext` under a fresh random nonce. Returns the nonce and
    /// ciphertext ‖ tag. Encryption reads the plaintext and writes the
    /// ciphertext straight into the output buffer (one pass, no plaintext copy).
    pub fn seal(&self, aad: &[u8], plaintext: &SecretBytes) -> ([u8; NONCE_LEN], Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        let mut out = vec![0u8; plaintext.len() + GCM_TAG_LEN];
        let (body, tail) = out.split_at_mut(plaintext.len());
        let io = InOutBuf::new(plaintext.expose(), body).expect("buffers of equal length");
        let tag = self
            .cipher()
            .encrypt_inout_detached(&Nonce::from(nonce), aad, io)
            .expect("plaintext within AES-GCM limits");
        tail.copy_from_slice(&tag);
        scrub_stack();
        (nonce, out)
    }

    /// Decrypts into a zeroizing buffer; on failure the buffer is wiped.
    pub fn open(
        &self,
        aad: &[u8],
        nonce: &[u8; NONCE_LEN],
        ciphertext: &[u8],
        tag: &[u8; GCM_TAG_LEN],
    ) -> Result<SecretBytes, AuthError> {
        let mut out = SecretBytes::copy_from(ciphertext);
        let opened = self.cipher().decrypt_inout_detached(
            &Nonce::from(*nonce),
            aad,
            out.expose_mut().as_mut_slice().into(),
            &Tag::from(*tag),
        );
        scrub_stack();
        match opened {
            Ok(()) => Ok(out),
            Err(_) => Err(AuthError),
        }
    }
}

/// How much stack [`scrub_stack`] overwrites below its caller: more than building
/// an AES-GCM cipher, HKDF-SHA512 or one seal or open use (debug builds included).
const SCRUB_BYTES: usize = 32 * 1024;

/// Overwrites `SCRUB_BYTES` of the stack below the caller's frame (volatile writes,
/// not elided), where the functions that just returned left key temporaries.
///
/// Building an AES-GCM cipher copies its key into stack temporaries (the key
/// array, the key schedule's working values, the cipher returned by value), and
/// HKDF's expansion blocks hold the derived keys; no type wipes those (the
/// cipher and the HMAC states themselves are wiped on drop). Left there, the bytes
/// travel: a large future later built on the same stack holds them as
/// uninitialised padding, and tokio copies them into a heap box when it boxes
/// the future (`block_on` and `spawn` box big futures). `shared/tests/
/// zeroize_alloc.rs` saw exactly that (docs/SECURITY.md, "Zeroization, measured").
/// Called after each use of a key by the functions of this module and of
/// `provider/local.rs`, never from inside the frame that made the copy.
#[inline(never)]
pub(crate) fn scrub_stack() {
    let mut region = [0u8; SCRUB_BYTES];
    zeroize::Zeroize::zeroize(&mut region[..]);
    std::hint::black_box(&region);
}

/// A fresh random data-key id.
pub fn random_id() -> [u8; DATA_KEY_ID_LEN] {
    let mut id = [0u8; DATA_KEY_ID_LEN];
    getrandom::fill(&mut id).expect("the OS random number generator failed");
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let dk = DataKey::random();
        let id = random_id();
        let k = DerivedKeys::derive(&dk, &id);
        let pt = SecretBytes::copy_from(b"hello");
        let (nonce, ct) = k.seal(b"aad", &pt);
        let (body, tag) = ct.split_at(ct.len() - GCM_TAG_LEN);
        let tag: [u8; 16] = tag.try_into().unwrap();
        assert_eq!(
            k.open(b"aad", &nonce, body, &tag).unwrap().expose(),
            b"hello"
        );
        assert_eq!(k.open(b"aaD", &nonce, body, &tag), Err(AuthError));
        // another data key: commitment differs, value does not open
        let k2 = DerivedKeys::derive(&DataKey::random(), &id);
        assert!(k2.check_commitment(&k.commitment()).is_err());
        assert!(k2.open(b"aad", &nonce, body, &tag).is_err());
        // another id with the same data key: different keys
        let k3 = DerivedKeys::derive(&dk, &random_id());
        assert_ne!(k3.commitment(), k.commitment());
    }

    #[test]
    fn header_tag_checks() {
        let k = DerivedKeys::derive(&DataKey::random(), &random_id());
        let t = k.header_tag(b"header");
        k.check_header_tag(b"header", &t).unwrap();
        assert!(k.check_header_tag(b"headeR", &t).is_err());
    }
}
