//! sealcred's shared library, used by the `sealcred` CLI and the controller.
//!
//! Where things live:
//! - [`crd`]: the `SealedStorageCred` resource types (the CRD is generated from them).
//! - [`format`]: the sealed wire format — canonical bytes, structural checks. No keys.
//! - [`crypto`]: the primitives of the one algorithm suite (HKDF, AES-GCM, HMAC).
//! - [`secret`]: the only types that hold plaintext or data keys (zeroizing, unprintable).
//! - [`provider`]: key providers — AWS KMS ([`provider::aws`], every KMS call) and a local key file.
//! - [`keyring`]: resolving recorded key ids under an allowlist.
//! - [`seal`]: sealing, merging, opening and rotating whole objects.
//!
//! The format is specified in `docs/FORMAT.md`.
#![deny(missing_docs)]

pub mod crd;
pub mod crypto;
pub mod format;
pub mod keyring;
pub mod provider;
pub mod seal;
pub mod secret;

pub use seal::Error;
