//! Reading sealed files and writing output atomically.

use std::io::Write;
use std::path::Path;

use sealcred_shared::crd::{GROUP, KIND, SealedStorageCred, VERSION};

use crate::cli::Format;
use crate::error::CliError;

/// Reads and parses a sealed object (YAML or JSON). Sealed files hold no
/// plaintext, so parse errors may be shown in full (without a snippet).
pub fn read_sealed(path: &Path) -> Result<SealedStorageCred, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::new(match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::InvalidData => "not valid UTF-8".to_string(),
            _ => e.to_string(),
        })
        .in_file(path)
    })?;
    parse_sealed(&text).map_err(|e| e.in_file(path))
}

/// Parses a sealed object from text.
pub fn parse_sealed(text: &str) -> Result<SealedStorageCred, CliError> {
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| CliError::new(format!("malformed JSON: {e}")))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| {
            let at = e
                .without_snippet()
                .location()
                .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
                .unwrap_or_default();
            CliError::new(format!("malformed YAML{at}"))
        })?
    };
    let api = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    let want = format!("{GROUP}/{VERSION}");
    if kind != KIND || api != want {
        return Err(CliError::new(format!(
            "not a SealedStorageCred (apiVersion {api:?}, kind {kind:?}; expected {want} {KIND})"
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| CliError::new(format!("invalid SealedStorageCred: {e}")))
}

/// Serializes a sealed object.
pub fn render_sealed(obj: &SealedStorageCred, format: Format) -> Result<String, CliError> {
    let mut obj = obj.clone();
    // Never write server-populated fields into git.
    obj.status = None;
    obj.metadata.managed_fields = None;
    obj.metadata.resource_version = None;
    obj.metadata.uid = None;
    obj.metadata.generation = None;
    obj.metadata.creation_timestamp = None;
    match format {
        Format::Json => serde_json::to_string_pretty(&obj)
            .map(|s| s + "\n")
            .map_err(|e| CliError::new(format!("cannot render JSON: {e}"))),
        Format::Yaml => serde_saphyr::to_string(&obj)
            .map_err(|e| CliError::new(format!("cannot render YAML: {e}"))),
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same directory,
/// fsync, rename), keeping an existing file's permissions; or to stdout.
pub fn write_output(path: Option<&Path>, bytes: &[u8]) -> Result<(), CliError> {
    match path {
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(bytes).and_then(|_| out.flush()) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                Err(e) => Err(CliError::new(format!("stdout: {e}"))),
            }
        }
        Some(path) => write_atomic(path, bytes),
    }
}

/// Atomic replace of `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let err = |e: std::io::Error| CliError::new(format!("{}: cannot write: {e}", path.display()));
    let mut tmp = tempfile::Builder::new()
        .prefix(".sealcred-")
        .tempfile_in(dir)
        .map_err(err)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
    }
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}
