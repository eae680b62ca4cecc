//! `sealcred inspect`: what a sealed file holds, without decrypting.

use std::path::Path;

use sealcred_shared::crd::Scope;
use sealcred_shared::format::ParsedSpec;

use sealcred_shared::crd::SealedStorageCred;
use sha2::{Digest, Sha256};

use crate::cli::Format;
use crate::error::CliError;
use crate::io::{read_sealed_file, write_output};

/// `sealcred inspect`: every document of the file (a JSON array for several).
pub fn inspect(file: &Path, format: Format, textconv: bool) -> Result<(), CliError> {
    if textconv {
        return write_output(None, textconv_text(file).as_bytes());
    }
    let sealed = read_sealed_file(file)?;
    let mut text = String::new();
    let mut values = Vec::new();
    for (i, doc) in sealed.docs.iter().enumerate() {
        let label = sealed.label(file, i);
        match describe(&label, &doc.obj, doc.cluster.as_ref(), format)? {
            Described::Json(v) => values.push(v),
            Described::Text(t) => text.push_str(&t),
        }
    }
    if format == Format::Json {
        let v = match values.len() {
            1 => values.remove(0),
            _ => serde_json::Value::Array(values),
        };
        text = serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
    }
    write_output(None, text.as_bytes())
}

/// For `git diff` (`diff.sealcred.textconv = sealcred inspect --textconv`): one
/// stable line per fact, so a diff shows which entries, keys and template
/// fields changed. An entry's line carries a short hash of its ciphertext: it
/// changes exactly when the entry was re-sealed. Never fails: a file that is not
/// a sealed object is shown as it is (git diffs it as text).
fn textconv_text(file: &Path) -> String {
    let Ok(sealed) = read_sealed_file(file) else {
        return std::fs::read(file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
    };
    let mut s = String::new();
    for (i, doc) in sealed.docs.iter().enumerate() {
        let o = &doc.obj;
        if i > 0 {
            s.push_str("---\n");
        }
        let ns = o.metadata.namespace.as_deref().unwrap_or("");
        let name = o.metadata.name.as_deref().unwrap_or("");
        let t = &o.spec.template;
        if let Some(t) = &doc.cluster {
            s += &format!("ClusterSealedStorageCred {name} (scope {})\n", o.spec.scope);
            for n in &t.namespaces {
                s += &format!("target namespace {n}\n");
            }
            if let Some(sel) = &t.selector {
                s += &format!(
                    "target selector {}\n",
                    serde_json::to_string(sel).unwrap_or_default()
                );
            }
        } else {
            s += &format!("SealedStorageCred {ns}/{name} (scope {})\n", o.spec.scope);
        }
        s += &format!(
            "secret {} type {}\n",
            t.name.as_deref().unwrap_or(name),
            t.type_
        );
        if let Some(p) = &o.spec.profile {
            s += &format!("profile {p}\n");
        }
        for (k, v) in &t.labels {
            s += &format!("label {k}={v}\n");
        }
        for (k, v) in &t.annotations {
            s += &format!("annotation {k}={v}\n");
        }
        for (n, e) in &o.spec.entries {
            let h = Sha256::digest(e.ciphertext.as_bytes());
            s += &format!(
                "entry {n}: data key {}, ciphertext {}\n",
                e.data_key.get(..8).unwrap_or(""),
                h[..6]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
        }
        for d in &o.spec.data_keys {
            for w in &d.wrappings {
                s += &format!(
                    "data key {} wrapped by {}\n",
                    d.id.get(..8).unwrap_or(""),
                    w.key_id
                );
            }
        }
    }
    s
}

enum Described {
    Json(serde_json::Value),
    Text(String),
}

fn describe(
    label: &str,
    obj: &SealedStorageCred,
    cluster: Option<&crate::io::ClusterTargets>,
    format: Format,
) -> Result<Described, CliError> {
    let parsed =
        ParsedSpec::parse(&obj.spec).map_err(|e| CliError::new(format!("{label}: {e}")))?;
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let secret = parsed.template.name.clone().unwrap_or_else(|| name.clone());
    let entries: Vec<serde_json::Value> = parsed
        .entries
        .iter()
        .map(|(n, e)| {
            serde_json::json!({
                "name": n,
                "bytes": e.ciphertext.len(),
                "dataKey": parsed.data_keys[e.data_key].id_b64,
            })
        })
        .collect();
    let data_keys: Vec<serde_json::Value> = obj
        .spec
        .data_keys
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id,
                "sealedAt": d.sealed_at,
                "entries": d.names.iter().filter(|n| obj.spec.entries.get(*n).is_some_and(|e| e.data_key == d.id)).collect::<Vec<_>>(),
                "wrappedBy": d.wrappings.iter().map(|w| w.key_id.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(match format {
        Format::Json => Described::Json(serde_json::json!({
            "kind": if cluster.is_some() { "ClusterSealedStorageCred" } else { "SealedStorageCred" },
            "targetNamespaces": cluster.map(|t| t.namespaces.clone()),
            "namespaceSelector": cluster.and_then(|t| t.selector.clone()),
            "file": label,
            "name": name,
            "namespace": ns,
            "scope": parsed.scope.as_str(),
            "secret": {"name": secret, "type": parsed.template.type_, "labels": parsed.template.labels, "annotations": parsed.template.annotations},
            "profile": parsed.profile,
            "formatVersion": parsed.version,
            "suite": parsed.suite,
            "entries": entries,
            "dataKeys": data_keys,
        })),
        Format::Yaml => {
            let mut s = String::new();
            let bound = match parsed.scope {
                Scope::Strict => format!("bound to namespace {ns} and name {name}"),
                Scope::NamespaceWide => format!("bound to namespace {ns}"),
                Scope::ClusterWide => "not bound to a namespace or name".into(),
                Scope::Cluster => format!("bound to ClusterSealedStorageCred {name}"),
            };
            if parsed.scope == Scope::Cluster {
                s += &format!("{label}: ClusterSealedStorageCred {name}\n");
            } else {
                s += &format!("{label}: SealedStorageCred {ns}/{name}\n");
            }
            s += &format!("  scope:    {} ({bound})\n", parsed.scope);
            if let Some(t) = cluster {
                if !t.namespaces.is_empty() {
                    s += &format!("  targets:  namespaces {}\n", t.namespaces.join(", "));
                }
                if let Some(sel) = &t.selector {
                    s += &format!(
                        "  targets:  namespaces selected by {}\n",
                        serde_json::to_string(sel).unwrap_or_default()
                    );
                }
            }
            s += &format!("  secret:   {secret} (type {})\n", parsed.template.type_);
            if let Some(p) = &parsed.profile {
                s += &format!("  profile:  {p}\n");
            }
            s += &format!(
                "  format:   version {}, suite {}\n",
                parsed.version, parsed.suite
            );
            s += &format!("  entries:  {}\n", parsed.entries.len());
            for (n, e) in &parsed.entries {
                let dk = parsed.data_keys[e.data_key].id_b64.get(..8).unwrap_or("");
                s += &format!("    {n}  {} bytes  (data key {dk}…)\n", e.ciphertext.len());
            }
            s += &format!("  data keys: {}\n", obj.spec.data_keys.len());
            for d in &obj.spec.data_keys {
                s += &format!(
                    "    {}…  sealed {}\n",
                    d.id.get(..8).unwrap_or(""),
                    d.sealed_at.as_deref().unwrap_or("(unknown)")
                );
                for w in &d.wrappings {
                    s += &format!("      wrapped by {}\n", w.key_id);
                }
            }
            Described::Text(s)
        }
    })
}
