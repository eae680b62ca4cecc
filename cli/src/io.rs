//! Reading sealed files and writing output atomically.

use std::io::Write;
use std::path::Path;

use sealcred_shared::crd::{
    CLUSTER_KIND, ClusterSealedStorageCred, GROUP, KIND, NamespaceSelector, Scope,
    SealedStorageCred, VERSION,
};

use crate::cli::Format;
use crate::error::CliError;

/// A sealed file: one or more SealedStorageCred or ClusterSealedStorageCred
/// documents (YAML `---` separators; a JSON file holds one), each with the comment
/// lines above it.
pub struct SealedFile {
    /// The documents, in file order.
    pub docs: Vec<Doc>,
    /// Whether the file is JSON (rewritten as JSON).
    pub json: bool,
}

/// One document of a sealed file.
pub struct Doc {
    /// The object; for a ClusterSealedStorageCred, its sealed view (no namespace,
    /// scope `cluster`), which every command opens, merges and rotates alike.
    pub obj: SealedStorageCred,
    /// Comment and blank lines before it, kept when the file is rewritten.
    pub leading: String,
    /// A ClusterSealedStorageCred's targets (`None`: a SealedStorageCred).
    pub cluster: Option<ClusterTargets>,
}

/// The namespaces a ClusterSealedStorageCred targets (not sealed: kept as they are
/// when the file is rewritten).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterTargets {
    /// `spec.namespaces`.
    pub namespaces: Vec<String>,
    /// `spec.namespaceSelector`.
    pub selector: Option<NamespaceSelector>,
}

impl SealedFile {
    /// How errors and reports name document `i` of `path`: the path alone for a
    /// one-document file, else `path (document N)`.
    pub fn label(&self, path: &Path, i: usize) -> String {
        if self.docs.len() == 1 {
            path.display().to_string()
        } else {
            format!("{} (document {})", path.display(), i + 1)
        }
    }

    /// The file rewritten with `objs` (one per document, in order), keeping
    /// each document's leading comments.
    pub fn render(&self, objs: &[SealedStorageCred]) -> Result<String, CliError> {
        let format = if self.json {
            Format::Json
        } else {
            Format::Yaml
        };
        let mut out = String::new();
        for (i, (doc, obj)) in self.docs.iter().zip(objs).enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            out.push_str(&doc.leading);
            out.push_str(&render_doc(obj, doc.cluster.as_ref(), format)?);
        }
        Ok(out)
    }
}

fn read_text(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| {
        CliError::new(match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::InvalidData => "not valid UTF-8".to_string(),
            _ => e.to_string(),
        })
        .in_file(path)
    })
}

/// Reads every SealedStorageCred document of a file (YAML, possibly several
/// documents, or JSON). Errors name the file, the document and the file line.
pub fn read_sealed_file(path: &Path) -> Result<SealedFile, CliError> {
    let text = read_text(path)?;
    if text.trim_start().starts_with('{') {
        let (obj, cluster) = parse_sealed(&text).map_err(|e| e.in_file(path))?;
        return Ok(SealedFile {
            docs: vec![Doc {
                obj,
                leading: String::new(),
                cluster,
            }],
            json: true,
        });
    }
    let parts = split_documents(&text);
    let many = parts.len() > 1;
    let mut docs = Vec::with_capacity(parts.len());
    for (i, (first_line, leading, body)) in parts.into_iter().enumerate() {
        let (obj, cluster) = parse_yaml_at(&body, first_line).map_err(|e| {
            if many {
                e.in_file(Path::new(&format!(
                    "{} (document {})",
                    path.display(),
                    i + 1
                )))
            } else {
                e.in_file(path)
            }
        })?;
        docs.push(Doc {
            obj,
            leading,
            cluster,
        });
    }
    if docs.is_empty() {
        return Err(CliError::new("empty file: no SealedStorageCred in it").in_file(path));
    }
    Ok(SealedFile { docs, json: false })
}

/// Splits YAML text into documents at `---` lines (and `...` end markers):
/// `(line of the document's first line, leading comment lines, the rest)`.
/// Parts holding only comments and blank lines are carried into the next
/// document's leading comments.
fn split_documents(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut leading = String::new();
    let mut body = String::new();
    let mut start = 1;
    let mut in_body = false;
    let flush = |out: &mut Vec<(usize, String, String)>,
                 leading: &mut String,
                 body: &mut String,
                 start: usize| {
        if !body.trim().is_empty() {
            out.push((start, std::mem::take(leading), std::mem::take(body)));
        } else {
            body.clear();
        }
    };
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare == "..." {
            flush(&mut out, &mut leading, &mut body, start);
            in_body = false;
            continue;
        }
        if !in_body && (bare.is_empty() || bare.trim_start().starts_with('#')) {
            leading.push_str(line);
            if !line.ends_with('\n') {
                leading.push('\n');
            }
            continue;
        }
        if !in_body {
            in_body = true;
            start = n + 1;
        }
        body.push_str(line);
    }
    flush(&mut out, &mut leading, &mut body, start);
    out
}

/// A parsed document: the object (a cluster object's sealed view) and, for a
/// ClusterSealedStorageCred, its targets.
pub type Parsed = (SealedStorageCred, Option<ClusterTargets>);

fn parse_yaml_at(body: &str, first_line: usize) -> Result<Parsed, CliError> {
    let value: serde_json::Value = serde_saphyr::from_str(body).map_err(|e| {
        let at = e
            .without_snippet()
            .location()
            .map(|l| {
                format!(
                    " at line {}, column {}",
                    l.line() + first_line as u64 - 1,
                    l.column()
                )
            })
            .unwrap_or_default();
        CliError::new(format!("malformed YAML{at}"))
    })?;
    check_and_convert(value)
}

/// Parses a sealed object from text.
pub fn parse_sealed(text: &str) -> Result<Parsed, CliError> {
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
    check_and_convert(value)
}

fn check_and_convert(value: serde_json::Value) -> Result<Parsed, CliError> {
    let api = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    let want = format!("{GROUP}/{VERSION}");
    if api != want || (kind != KIND && kind != CLUSTER_KIND) {
        return Err(CliError::new(format!(
            "not a SealedStorageCred (apiVersion {api:?}, kind {kind:?}; expected {want} {KIND} or {CLUSTER_KIND})"
        )));
    }
    if kind == KIND {
        let obj: SealedStorageCred = serde_json::from_value(value)
            .map_err(|e| CliError::new(format!("invalid SealedStorageCred: {e}")))?;
        if obj.spec.scope == Scope::Cluster {
            return Err(CliError::new(
                "a SealedStorageCred with scope cluster: that scope is sealed for a ClusterSealedStorageCred and opens nowhere else",
            ));
        }
        return Ok((obj, None));
    }
    let obj: ClusterSealedStorageCred = serde_json::from_value(value)
        .map_err(|e| CliError::new(format!("invalid ClusterSealedStorageCred: {e}")))?;
    if obj.spec.sealed.scope != Scope::Cluster {
        return Err(CliError::new(format!(
            "a ClusterSealedStorageCred with scope {}: only scope cluster opens in one (the controller refuses it)",
            obj.spec.sealed.scope
        )));
    }
    if let Some(sel) = &obj.spec.namespace_selector {
        sel.check()
            .map_err(|e| CliError::new(format!("spec.{e}")))?;
    }
    let targets = ClusterTargets {
        namespaces: obj.spec.namespaces,
        selector: obj.spec.namespace_selector,
    };
    let mut metadata = obj.metadata;
    metadata.namespace = None;
    let view = SealedStorageCred {
        metadata,
        spec: obj.spec.sealed,
        status: None,
    };
    Ok((view, Some(targets)))
}

/// Serializes a document: a SealedStorageCred, or with `cluster` the
/// ClusterSealedStorageCred of the sealed view `obj` and those targets.
pub fn render_doc(
    obj: &SealedStorageCred,
    cluster: Option<&ClusterTargets>,
    format: Format,
) -> Result<String, CliError> {
    let Some(t) = cluster else {
        return render_sealed(obj, format);
    };
    let mut c = ClusterSealedStorageCred::from_sealed_view(
        obj.clone(),
        t.namespaces.clone(),
        t.selector.clone(),
    );
    c.metadata.managed_fields = None;
    c.metadata.resource_version = None;
    c.metadata.uid = None;
    c.metadata.generation = None;
    c.metadata.creation_timestamp = None;
    match format {
        Format::Json => serde_json::to_string_pretty(&c)
            .map(|s| s + "\n")
            .map_err(|e| CliError::new(format!("cannot render JSON: {e}"))),
        Format::Yaml => serde_saphyr::to_string(&c)
            .map_err(|e| CliError::new(format!("cannot render YAML: {e}"))),
    }
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
