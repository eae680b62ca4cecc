//! `sealcred check`: a pre-commit guard. Refuses plaintext Secret manifests
//! anywhere, and files under a creation rule's path that hold credentials
//! without being sealed. Never prints a file's content.

use std::path::{Path, PathBuf};

use super::walk;
use crate::error::CliError;
use crate::rules;

/// What is wrong with one file (or one document of it).
fn problems(path: &Path) -> Result<Vec<String>, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::new(format!("{}: cannot read: {}", path.display(), e.kind())))?;
    let mut out = Vec::new();
    let docs = parse_documents(&bytes);
    for (i, doc) in docs.iter().enumerate() {
        let at = if docs.len() > 1 {
            format!("{} (document {})", path.display(), i + 1)
        } else {
            path.display().to_string()
        };
        if let Some(v) = doc
            && is_plaintext_secret(v)
        {
            out.push(format!(
                "{at}: a plaintext Secret (kind: Secret with data or stringData); seal it with `sealcred seal -f {} --output-file FILE` and commit only the sealed file",
                path.display()
            ));
        }
    }
    // Under a creation rule's path, a file that is no Kubernetes object at all
    // (an env file, a key file, a bare YAML map of values) holds credentials that
    // should have been sealed. Other manifests (Deployments, ...) may live there.
    if let rules::Lookup::Matched(r) = rules::lookup(path)? {
        let any_object = docs.iter().any(|d| {
            d.as_ref()
                .is_some_and(|v| v.get("kind").is_some() && v.get("apiVersion").is_some())
        });
        if !any_object && !bytes.iter().all(u8::is_ascii_whitespace) {
            out.push(format!(
                "{}: under creation rule {} of {} but not a SealedStorageCred (nor any Kubernetes object): seal its values with `sealcred seal` and commit the sealed file instead",
                path.display(),
                r.index,
                r.file.display()
            ));
        }
    }
    Ok(out)
}

/// The YAML documents of a file as JSON values; `None` for a document (or a
/// file) that does not parse as YAML or JSON. Parse errors are not shown: they
/// could quote a secret.
fn parse_documents(bytes: &[u8]) -> Vec<Option<serde_json::Value>> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return vec![None];
    };
    if text.trim_start().starts_with('{') {
        return vec![serde_json::from_str(text).ok()];
    }
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare == "..." {
            docs.push(std::mem::take(&mut cur));
        } else {
            cur.push_str(line);
        }
    }
    docs.push(cur);
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|d| serde_saphyr::from_str::<serde_json::Value>(&d).ok())
        .collect()
}

fn is_plaintext_secret(v: &serde_json::Value) -> bool {
    let non_empty = |k: &str| match v.get(k) {
        Some(serde_json::Value::Object(m)) => !m.is_empty(),
        Some(serde_json::Value::Null) | None => false,
        Some(_) => true,
    };
    v.get("kind").and_then(|k| k.as_str()) == Some("Secret")
        && v.get("apiVersion").and_then(|k| k.as_str()) == Some("v1")
        && (non_empty("data") || non_empty("stringData"))
}

/// `sealcred check PATH...`: files, or directories (walked for every file).
pub fn check(paths: &[PathBuf]) -> Result<(), CliError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            files.extend(walk(p)?);
        } else {
            files.push(p.clone());
        }
    }
    let mut bad = 0;
    for f in &files {
        let found = problems(f)?;
        if !found.is_empty() {
            bad += 1;
        }
        for line in found {
            eprintln!("error: {line}");
        }
    }
    if bad > 0 {
        return Err(CliError::new(format!(
            "{bad} of {} files hold unsealed credentials",
            files.len()
        )));
    }
    Ok(())
}
