//! Per-environment creation rules from `.sealcred.yaml`, found by walking up
//! from the file being written, or from the current directory when writing to
//! stdout (as SOPS finds `.sops.yaml`).
//!
//! ```yaml
//! creation_rules:
//!   - path_regex: ^environments/prod/
//!     kms: [arn:aws:kms:eu-west-1:111122223333:key/..., arn:aws:kms:eu-central-1:...]
//!     namespace: flyte
//!     scope: strict
//!   - path_regex: ^environments/dev/
//!     kms: [local]
//!   - path_regex: ^environments/staging/
//!     public_key:                 # seal offline with a KMS RSA public key
//!       - arn: arn:aws:kms:eu-west-1:111122223333:key/...
//!         file: keys/staging.pubkey   # relative to this .sealcred.yaml
//! ```
//!
//! The first rule whose `path_regex` matches the file's path (relative to the
//! directory holding `.sealcred.yaml`, with `/` separators) wins; a rule
//! without `path_regex` matches everything. Flags (`--kms`, `--namespace`,
//! `--scope`) override the rule. When a `.sealcred.yaml` exists but no rule
//! matches and no `--kms` is given, sealing fails closed.

use std::path::{Path, PathBuf};

use sealcred_shared::crd::Scope;
use serde::Deserialize;

use crate::error::CliError;

/// The file name looked for.
pub const FILE_NAME: &str = ".sealcred.yaml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    creation_rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path_regex: Option<String>,
    #[serde(default)]
    kms: Vec<String>,
    #[serde(default)]
    public_key: Vec<RawPublicKey>,
    namespace: Option<String>,
    scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublicKey {
    arn: String,
    file: PathBuf,
}

/// A public-key file to seal with, and the key ARN it must hold (a creation
/// rule names both, so a swapped file is caught).
#[derive(Debug, Clone, PartialEq)]
pub struct PublicKeyRef {
    /// The file (a rule's is resolved against the `.sealcred.yaml`'s directory).
    pub file: PathBuf,
    /// The ARN the file must hold, and where that was said (for messages).
    pub expect: Option<(String, String)>,
}

/// The keys to seal with: KMS keys (or local keys) by name, and public-key files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyChoice {
    /// `--kms` values or a rule's `kms:`.
    pub kms: Vec<String>,
    /// `--public-key` files or a rule's `public_key:`.
    pub public: Vec<PublicKeyRef>,
}

impl KeyChoice {
    /// No key at all (the default local key is used).
    pub fn is_empty(&self) -> bool {
        self.kms.is_empty() && self.public.is_empty()
    }
}

/// The rule that applies to a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Which `.sealcred.yaml` it came from.
    pub file: PathBuf,
    /// Its position (1-based) in `creation_rules`.
    pub index: usize,
    /// Keys to seal with.
    pub kms: Vec<String>,
    /// Public-key files to seal with.
    pub public_keys: Vec<PublicKeyRef>,
    /// Default namespace.
    pub namespace: Option<String>,
    /// Default scope.
    pub scope: Option<Scope>,
}

/// What the lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// No `.sealcred.yaml` above the file.
    NoConfig,
    /// A config exists but no rule matches `path` (relative path shown).
    NoMatch {
        /// The config file.
        file: PathBuf,
        /// The path that was matched.
        path: String,
    },
    /// A rule matched.
    Matched(Rule),
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

/// Finds the rule for `target` (the file being written; a directory when
/// writing to stdout).
pub fn lookup(target: &Path) -> Result<Lookup, CliError> {
    let target = absolute(target);
    let mut dir = if target.is_dir() {
        Some(target.as_path())
    } else {
        target.parent()
    };
    while let Some(d) = dir {
        let candidate = d.join(FILE_NAME);
        if candidate.is_file() {
            return match_in(&candidate, d, &target);
        }
        dir = d.parent();
    }
    Ok(Lookup::NoConfig)
}

fn match_in(config: &Path, root: &Path, target: &Path) -> Result<Lookup, CliError> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| CliError::new(format!("{}: {e}", config.display())))?;
    let parsed: RulesFile = serde_saphyr::from_str(&text).map_err(|e| {
        CliError::new(format!(
            "{}: invalid creation rules: {}",
            config.display(),
            e.without_snippet()
        ))
    })?;
    let rel = target
        .strip_prefix(root)
        .unwrap_or(target)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    for (i, r) in parsed.creation_rules.into_iter().enumerate() {
        let at = || format!("{} rule {}", config.display(), i + 1);
        let matches = match &r.path_regex {
            None => true,
            Some(re) => regex::Regex::new(re)
                .map_err(|e| CliError::new(format!("{}: invalid path_regex: {e}", at())))?
                .is_match(&rel),
        };
        if !matches {
            continue;
        }
        let scope = match &r.scope {
            None => None,
            Some(s) => Some(Scope::parse(s).ok_or_else(|| {
                CliError::new(format!(
                    "{}: unknown scope {s:?} (strict, namespace-wide, cluster-wide, cluster)",
                    at()
                ))
            })?),
        };
        if r.kms.is_empty() && r.public_key.is_empty() {
            return Err(CliError::new(format!(
                "{}: no keys (give kms, public_key or both)",
                at()
            )));
        }
        let public_keys = r
            .public_key
            .into_iter()
            .enumerate()
            .map(|(j, p)| PublicKeyRef {
                file: root.join(p.file),
                expect: Some((p.arn, format!("{} public_key {}", at(), j + 1))),
            })
            .collect();
        return Ok(Lookup::Matched(Rule {
            file: config.to_path_buf(),
            index: i + 1,
            kms: r.kms,
            public_keys,
            namespace: r.namespace,
            scope,
        }));
    }
    Ok(Lookup::NoMatch {
        file: config.to_path_buf(),
        path: rel,
    })
}

/// The keys to seal with: `--kms` and `--public-key` if either is given; else
/// the matching rule's; else `fallback` (None = the default local key). A
/// config without a matching rule is an error unless a key flag was given.
pub fn resolve_keys(
    flags: &[String],
    public: &[PathBuf],
    lookup: &Lookup,
    fallback_ok: bool,
) -> Result<Option<KeyChoice>, CliError> {
    if !flags.is_empty() || !public.is_empty() {
        return Ok(Some(KeyChoice {
            kms: flags.to_vec(),
            public: public
                .iter()
                .map(|f| PublicKeyRef {
                    file: f.clone(),
                    expect: None,
                })
                .collect(),
        }));
    }
    match lookup {
        Lookup::Matched(r) => Ok(Some(KeyChoice {
            kms: r.kms.clone(),
            public: r.public_keys.clone(),
        })),
        Lookup::NoConfig => Ok(None),
        Lookup::NoMatch { .. } if fallback_ok => Ok(None),
        Lookup::NoMatch { file, path } => Err(CliError::new(format!(
            "no creation rule in {} matches {path:?} and no --kms or --public-key was given",
            file.display()
        ))
        .hint("add a rule whose path_regex matches this path, or pass --kms KEY")),
    }
}
