//! Turning `--kms` values into key providers.

use std::path::PathBuf;
use std::sync::Arc;

use sealcred_shared::keyring::{Allowlist, Keyring};
use sealcred_shared::provider::KeyProvider;
use sealcred_shared::provider::local::{self, LocalKey};
use sealcred_shared::provider::rsa::RsaPublicKey;

use crate::cli::KeyArgs;
use crate::error::CliError;
use crate::rules::{KeyChoice, PublicKeyRef};

/// Loads the local key at `path` (or the default path). When `create` is set
/// and the default key does not exist yet, creates it with a notice on stderr.
pub fn local_key(path: Option<PathBuf>, create: bool) -> Result<LocalKey, CliError> {
    let explicit = path.is_some();
    let path = path.or_else(local::default_path).ok_or_else(|| {
        CliError::new("no local key path: set SEALCRED_LOCAL_KEY or HOME, or pass --kms local:PATH")
    })?;
    if !path.exists() && create && !explicit {
        let k = LocalKey::create(&path)?;
        eprintln!(
            "sealcred: created a new local key {} at {} (mode 0600). Back it up: objects sealed with it cannot be opened without it.",
            k.key_id(),
            path.display()
        );
        return Ok(k);
    }
    Ok(LocalKey::load(&path)?)
}

/// Providers for sealing from key names (`--kms` values or a creation rule's);
/// an empty list means the default local key, created if missing. A name given
/// twice is used once (with a note); two names for one key (an alias and its
/// ARN) are found when KMS answers, and wrapped once (see `seal`).
pub async fn providers(
    choice: &KeyChoice,
    args: &KeyArgs,
    keyring: &Keyring,
) -> Result<Vec<Arc<dyn KeyProvider>>, CliError> {
    if choice.is_empty() {
        return Ok(vec![Arc::new(local_key(args.local_key.clone(), true)?)]);
    }
    let mut out: Vec<Arc<dyn KeyProvider>> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for k in &choice.kms {
        let k = k.trim();
        if seen.contains(&k) {
            eprintln!("sealcred: note: key {k} is given twice: wrapped once");
            continue;
        }
        seen.push(k);
        if k == "local" {
            out.push(Arc::new(local_key(args.local_key.clone(), true)?));
        } else if let Some(p) = k.strip_prefix("local:") {
            out.push(Arc::new(local_key(Some(PathBuf::from(p)), false)?));
        } else if k.is_empty() {
            return Err(CliError::new("--kms: empty key"));
        } else {
            out.push(keyring.aws_key(k).await?);
        }
    }
    for p in &choice.public {
        out.push(Arc::new(public_key(p)?));
    }
    Ok(out)
}

/// Loads a public-key file, checking the ARN a creation rule expects of it.
/// Reads the file only: no credentials, no network.
pub fn public_key(p: &PublicKeyRef) -> Result<RsaPublicKey, CliError> {
    let key = RsaPublicKey::load(&p.file)?;
    if let Some((arn, said)) = &p.expect
        && key.arn() != arn
    {
        return Err(CliError::new(format!(
            "{}: holds the public key of {}, but {said} says {arn}",
            p.file.display(),
            key.arn()
        ))
        .hint("fetch the right one with `sealcred pubkey --kms ARN --output-file FILE`, or correct the rule"));
    }
    Ok(key)
}

/// A keyring for opening objects: every recorded key may be used (the user
/// chose the file). Local keys are looked up, by fingerprint, in --local-key,
/// every `--kms local:PATH`, the `extra` paths (from creation rules) and the
/// default key file.
pub fn keyring(args: &KeyArgs, extra: &[PathBuf]) -> Keyring {
    let mut paths = local_paths(&args.kms);
    paths.extend(extra.iter().cloned());
    paths.extend(local::default_path());
    Keyring::new(Allowlist::any(), args.local_key.clone()).with_local_keys(paths)
}

/// The local key files named by key lists (`local:PATH` entries).
pub fn local_paths(keys: &[String]) -> Vec<PathBuf> {
    keys.iter()
        .filter_map(|k| k.strip_prefix("local:").map(PathBuf::from))
        .collect()
}
