//! `sealcred inspect`: what a sealed file holds, without decrypting.

use std::path::Path;

use sealcred_shared::crd::Scope;
use sealcred_shared::format::ParsedSpec;

use crate::cli::Format;
use crate::error::CliError;
use crate::io::{read_sealed, write_output};

/// `sealcred inspect`.
pub fn inspect(file: &Path, format: Format) -> Result<(), CliError> {
    let obj = read_sealed(file)?;
    let parsed =
        ParsedSpec::parse(&obj.spec).map_err(|e| CliError::new(e.to_string()).in_file(file))?;
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
    let text = match format {
        Format::Json => {
            let v = serde_json::json!({
                "file": file.display().to_string(),
                "name": name,
                "namespace": ns,
                "scope": parsed.scope.as_str(),
                "secret": {"name": secret, "type": parsed.template.type_, "labels": parsed.template.labels, "annotations": parsed.template.annotations},
                "profile": parsed.profile,
                "formatVersion": parsed.version,
                "suite": parsed.suite,
                "entries": entries,
                "dataKeys": data_keys,
            });
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        }
        Format::Yaml => {
            let mut s = String::new();
            let bound = match parsed.scope {
                Scope::Strict => format!("bound to namespace {ns} and name {name}"),
                Scope::NamespaceWide => format!("bound to namespace {ns}"),
                Scope::ClusterWide => "not bound to a namespace or name".into(),
            };
            s += &format!("{}: SealedStorageCred {ns}/{name}\n", file.display());
            s += &format!("  scope:    {} ({bound})\n", parsed.scope);
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
            s
        }
    };
    write_output(None, text.as_bytes())
}
