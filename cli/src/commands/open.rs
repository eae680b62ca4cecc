//! `sealcred unseal` and `sealcred verify`: the commands that decrypt.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use sealcred_shared::crd::SealedStorageCred;
use sealcred_shared::keyring::Allowlist;
use sealcred_shared::seal::{self, Opened};
use zeroize::Zeroizing;

use super::{collect_files, rule_local_keys};
use crate::cli::{Format, KeyArgs};
use crate::error::CliError;
use crate::io::{read_sealed_file, write_output};
use crate::keys;

/// Renders an opened object as a Secret manifest into a zeroizing buffer.
/// Strings are written as JSON string literals, which YAML also reads.
fn render_secret(obj: &SealedStorageCred, opened: &Opened, format: Format) -> Zeroizing<String> {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let cap: usize = opened
        .entries
        .iter()
        .map(|(k, v)| k.len() + v.len().div_ceil(3) * 4 + 16)
        .sum::<usize>()
        + 1024;
    let mut out = Zeroizing::new(String::with_capacity(cap));
    let ns = obj.metadata.namespace.as_deref();
    let t = &opened.template;
    match format {
        Format::Json => {
            out.push_str(
                "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Secret\",\n  \"metadata\": {\n",
            );
            out.push_str(&format!("    \"name\": {}", q(&opened.secret_name)));
            if let Some(ns) = ns {
                out.push_str(&format!(",\n    \"namespace\": {}", q(ns)));
            }
            for (field, map) in [("labels", &t.labels), ("annotations", &t.annotations)] {
                if !map.is_empty() {
                    let body: Vec<String> = map
                        .iter()
                        .map(|(k, v)| format!("{}: {}", q(k), q(v)))
                        .collect();
                    out.push_str(&format!(",\n    \"{field}\": {{{}}}", body.join(", ")));
                }
            }
            out.push_str(&format!(
                "\n  }},\n  \"type\": {},\n  \"data\": {{",
                q(&t.type_)
            ));
            for (i, (k, v)) in opened.entries.iter().enumerate() {
                out.push_str(if i == 0 { "\n    " } else { ",\n    " });
                out.push_str(&q(k));
                out.push_str(": \"");
                STANDARD.encode_string(v.expose(), &mut out);
                out.push('"');
            }
            out.push_str("\n  }\n}\n");
        }
        Format::Yaml => {
            out.push_str("apiVersion: v1\nkind: Secret\nmetadata:\n");
            out.push_str(&format!("  name: {}\n", q(&opened.secret_name)));
            if let Some(ns) = ns {
                out.push_str(&format!("  namespace: {}\n", q(ns)));
            }
            for (field, map) in [("labels", &t.labels), ("annotations", &t.annotations)] {
                if !map.is_empty() {
                    out.push_str(&format!("  {field}:\n"));
                    for (k, v) in map {
                        out.push_str(&format!("    {}: {}\n", q(k), q(v)));
                    }
                }
            }
            out.push_str(&format!("type: {}\ndata:\n", q(&t.type_)));
            for (k, v) in &opened.entries {
                out.push_str("  ");
                out.push_str(&q(k));
                out.push_str(": ");
                STANDARD.encode_string(v.expose(), &mut out);
                out.push('\n');
            }
        }
    }
    out
}

/// `sealcred unseal`.
pub async fn unseal(
    file: &Path,
    keys: &KeyArgs,
    format: Format,
    output: Option<&Path>,
) -> Result<(), CliError> {
    let sealed = read_sealed_file(file)?;
    let keyring = keys::keyring(keys, &rule_local_keys(&[file.to_path_buf()]));
    // Every document opens before anything is written (one Secret each: YAML
    // documents, or a JSON `List`).
    let mut texts = Vec::with_capacity(sealed.docs.len());
    for (i, doc) in sealed.docs.iter().enumerate() {
        let opened = seal::open(&doc.obj, &keyring)
            .await
            .map_err(|e| CliError::new(format!("{}: {e}", sealed.label(file, i))))?;
        texts.push(render_secret(&doc.obj, &opened, format));
    }
    if texts.len() == 1 {
        return write_output(output, texts[0].as_bytes());
    }
    let cap = texts.iter().map(|t| t.len() + 8).sum::<usize>() + 64;
    let mut all = Zeroizing::new(String::with_capacity(cap));
    match format {
        Format::Json => {
            all.push_str("{\n\"apiVersion\": \"v1\",\n\"kind\": \"List\",\n\"items\": [\n");
            for (i, t) in texts.iter().enumerate() {
                if i > 0 {
                    all.push_str(",\n");
                }
                all.push_str(t.trim_end());
            }
            all.push_str("\n]\n}\n");
        }
        Format::Yaml => {
            for (i, t) in texts.iter().enumerate() {
                if i > 0 {
                    all.push_str("---\n");
                }
                all.push_str(t);
            }
        }
    }
    drop(texts);
    write_output(output, all.as_bytes())
}

/// `sealcred verify`.
pub async fn verify(
    paths: &[PathBuf],
    recursive: bool,
    concurrency: usize,
    only: &[String],
    keys: &KeyArgs,
) -> Result<(), CliError> {
    let files = &collect_files(paths, recursive)?;
    if files.is_empty() {
        return Err(CliError::new("no SealedStorageCred files found"));
    }
    let mut keyring = keys::keyring(keys, &rule_local_keys(files));
    if !only.is_empty() {
        if let Some(bad) = only
            .iter()
            .find(|k| k.ends_with('*') || k.trim().is_empty())
        {
            return Err(CliError::new(format!(
                "--only-key {bad:?}: give a key id exactly as `sealcred inspect` shows it"
            )));
        }
        keyring = keyring.with_allowlist(Allowlist::only(only.iter().cloned()));
    }
    // Concurrently, at most `concurrency` files at a time; reported in file
    // order. Each file's plaintext is dropped inside its task: only entry names
    // leave it.
    let keyring = &keyring;
    let mut results = futures::stream::iter(files)
        .map(|f| async move {
            let sealed = read_sealed_file(f)?;
            let mut docs = Vec::with_capacity(sealed.docs.len());
            for (i, doc) in sealed.docs.iter().enumerate() {
                let label = sealed.label(f, i);
                let result = match seal::open(&doc.obj, keyring).await {
                    Ok(opened) => {
                        let names: Vec<String> = opened.entries.keys().cloned().collect();
                        drop(opened);
                        Ok((seal::duplicate_wrappings(&doc.obj), names))
                    }
                    Err(e) => Err(CliError::new(format!("{label}: {e}"))),
                };
                docs.push((label, result));
            }
            Ok::<_, CliError>(docs)
        })
        .buffered(concurrency);
    let mut failed = 0;
    while let Some(result) = results.next().await {
        let docs = match result {
            Ok(d) => d,
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
                continue;
            }
        };
        let mut file_failed = false;
        for (label, result) in docs {
            match result {
                Ok((duplicates, names)) => {
                    for (dk, key) in duplicates {
                        eprintln!(
                            "warning: {label}: data key {}… is wrapped twice by {key}: a second key it should have been wrapped by is missing (see docs/rotation.md, \"Repairing duplicate wrappings\")",
                            dk.get(..8).unwrap_or("")
                        );
                    }
                    println!(
                        "ok    {label} ({} entries: {})",
                        names.len(),
                        names.join(", ")
                    );
                }
                Err(e) => {
                    file_failed = true;
                    eprintln!("error: {e}");
                }
            }
        }
        failed += usize::from(file_failed);
    }
    if failed > 0 {
        return Err(CliError::new(format!(
            "{failed} of {} files failed verification",
            files.len()
        )));
    }
    Ok(())
}
