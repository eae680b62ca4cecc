//! The subcommands, one module each; helpers they share live here.

mod access_key;
mod check;
mod diff;
mod edit;
mod inspect;
mod open;
mod pubkey;
mod rotate;
mod seal;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sealcred_shared::crd::{Scope, SealedStorageCred};
use sealcred_shared::format::ParsedSpec;
use sealcred_shared::keyring::Keyring;
use sealcred_shared::provider::KeyProvider;

use crate::cli::{KeyArgs, ScopeArg};
use crate::error::CliError;
use crate::keys;
use crate::rules;

pub use access_key::rotate_access_key;
pub use check::check;
pub use diff::diff;
pub use edit::edit;
pub use inspect::inspect;
pub use open::{unseal, verify};
pub use pubkey::pubkey;
pub use rotate::rotate;
pub use seal::seal;

fn scope_of(s: ScopeArg) -> Scope {
    match s {
        ScopeArg::Strict => Scope::Strict,
        ScopeArg::NamespaceWide => Scope::NamespaceWide,
        ScopeArg::ClusterWide => Scope::ClusterWide,
        ScopeArg::Cluster => Scope::Cluster,
    }
}

fn refs(p: &[Arc<dyn KeyProvider>]) -> Vec<&dyn KeyProvider> {
    p.iter().map(|p| p.as_ref()).collect()
}

/// Keys for merge/rotate: `--kms` if given, else the matching creation rule's
/// (both [`seal::Keys::Given`]), else the keys recorded in the object —
/// [`seal::Keys::Recorded`], which the library uses only after verifying them.
async fn keys_for(
    args: &KeyArgs,
    lookup: &rules::Lookup,
    keyring: &Keyring,
) -> Result<Option<Vec<Arc<dyn KeyProvider>>>, CliError> {
    match rules::resolve_keys(&args.kms, &args.public_key, lookup, true)? {
        Some(list) => Ok(Some(keys::providers(&list, args, keyring).await?)),
        None => Ok(None),
    }
}

/// Prints the library's notes about keys (duplicates, dropped keys) on stderr.
fn print_notes(file: Option<&Path>, notes: &[String]) {
    for n in notes {
        match file {
            Some(f) => eprintln!("sealcred: note: {}: {n}", f.display()),
            None => eprintln!("sealcred: note: {n}"),
        }
    }
}

/// Says on stderr what a seal or merge bound its new data key to and which
/// keys wrap it (issue 13: the user sees what was sealed for).
fn announce_sealed(obj: &SealedStorageCred) {
    let Some(head) = ParsedSpec::parse(&obj.spec)
        .ok()
        .map(|p| obj.spec.data_keys[p.head].clone())
    else {
        return;
    };
    let ns = obj.metadata.namespace.as_deref().unwrap_or("");
    let name = obj.metadata.name.as_deref().unwrap_or("");
    let bound = match obj.spec.scope {
        Scope::Strict => format!("namespace {ns}, name {name}"),
        Scope::NamespaceWide => format!("namespace {ns}, any name"),
        Scope::ClusterWide => "any namespace and name".to_string(),
        Scope::Cluster => format!("ClusterSealedStorageCred {name}"),
    };
    let keys: Vec<&str> = head.wrappings.iter().map(|w| w.key_id.as_str()).collect();
    eprintln!(
        "sealcred: sealed for {bound} (scope {}) under {}",
        obj.spec.scope,
        keys.join(", ")
    );
}

/// Says on stderr which creation rule applies (SOPS users asked for this).
fn announce(lookup: &rules::Lookup) {
    if let rules::Lookup::Matched(r) = lookup {
        eprintln!(
            "sealcred: using creation rule {} of {}",
            r.index,
            r.file.display()
        );
    }
}

/// Local key files named by the creation rules that apply to `files`.
fn rule_local_keys(files: &[PathBuf]) -> Vec<PathBuf> {
    files
        .iter()
        .filter_map(|f| match rules::lookup(f) {
            Ok(rules::Lookup::Matched(r)) => Some(keys::local_paths(&r.kms)),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Expands directories (with --recursive) into the SealedStorageCred files in them.
fn collect_files(paths: &[PathBuf], recursive: bool) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        if !recursive {
            return Err(CliError::new(format!(
                "{} is a directory; pass --recursive for every sealed file in it",
                p.display()
            )));
        }
        out.extend(walk(p)?.into_iter().filter(|e| {
            let name = e.to_string_lossy();
            (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
                && std::fs::read_to_string(e).is_ok_and(|t| t.contains("SealedStorageCred"))
        }));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Every file under `dir`, sorted, skipping hidden files and directories
/// (`.git`, `.sealcred.yaml`).
fn walk(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| CliError::new(format!("{}: {e}", dir.display())))?;
        for e in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if e.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if e.is_dir() {
                stack.push(e);
            } else {
                out.push(e);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `sealcred keygen`.
pub fn keygen(path: Option<&Path>) -> Result<(), CliError> {
    let path = path
        .map(Path::to_path_buf)
        .or_else(sealcred_shared::provider::local::default_path)
        .ok_or_else(|| CliError::new("no key path: pass --output-file"))?;
    if path.exists() {
        return Err(CliError::new(format!(
            "{} already exists; not overwriting it",
            path.display()
        )));
    }
    let k = sealcred_shared::provider::local::LocalKey::create(&path)?;
    println!("{} {}", k.key_id(), path.display());
    Ok(())
}
