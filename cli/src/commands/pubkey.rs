//! `sealcred pubkey`: the public half of a KMS RSA key pair, as a public-key
//! file (docs/FORMAT.md, "Public-key file"), from one GetPublicKey call.

use sealcred_shared::keyring::{Allowlist, Keyring};
use sealcred_shared::provider::rsa::RsaPublicKey;

use crate::cli::PubkeyArgs;
use crate::error::CliError;
use crate::io::write_output;

/// `sealcred pubkey`.
pub async fn pubkey(args: &PubkeyArgs) -> Result<(), CliError> {
    // Read the file to check first: a bad one fails before any KMS call.
    let existing = args.check.as_deref().map(RsaPublicKey::load).transpose()?;
    let keyring = Keyring::new(Allowlist::any(), None);
    let kms = keyring.aws_key(&args.kms).await?;
    let key = kms.get_public_key().await?;
    match (&args.check, existing) {
        (Some(path), Some(file)) => {
            if file.arn() != key.arn() || file.der() != key.der() || file.spec() != key.spec() {
                return Err(CliError::new(format!(
                    "{}: does not hold the public key KMS gives for {} ({}): do not seal with it",
                    path.display(),
                    args.kms,
                    key.arn()
                ))
                .hint(format!(
                    "rewrite it with `sealcred pubkey --kms {} --output-file {}` and review where the other one came from",
                    key.arn(),
                    path.display()
                )));
            }
            eprintln!(
                "sealcred: {}: matches {} ({})",
                path.display(),
                key.arn(),
                key.spec()
            );
            Ok(())
        }
        _ => {
            write_output(args.output_file.as_deref(), key.render().as_bytes())?;
            if let Some(p) = &args.output_file {
                eprintln!(
                    "sealcred: wrote the public key of {} ({}) to {}",
                    key.arn(),
                    key.spec(),
                    p.display()
                );
            }
            Ok(())
        }
    }
}
