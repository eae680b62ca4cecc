//! Reading credential inputs. Every value read here goes straight into a
//! [`SecretBytes`]; error messages name the file, key or line, never a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sealcred_shared::format::check_entry_name;
use sealcred_shared::secret::SecretBytes;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::CliError;

/// The entries to seal, by key, with duplicate detection.
///
/// Errors about an entry name give its position (flag and index, file and
/// line), never the name itself: when a user forgets the `KEY=` part, the text
/// before the first `=` of a value (a base64 `==` padding, say) is taken for the
/// name, and it is a piece of the secret. Names from a manifest's `data` /
/// `stringData` maps are structurally names and are shown.
#[derive(Default)]
pub struct Entries(pub BTreeMap<String, SecretBytes>, BTreeMap<String, String>);

impl Entries {
    fn add(
        &mut self,
        key: &str,
        value: SecretBytes,
        from: &str,
        show_key: bool,
    ) -> Result<(), CliError> {
        let shown = if show_key {
            format!(" {key:?}")
        } else {
            String::new()
        };
        if let Err(e) = check_entry_name(key) {
            let problem = match e {
                sealcred_shared::format::FormatError::InvalidName { problem, .. } => problem,
                _ => "not a valid Secret key",
            };
            return Err(
                CliError::new(format!("{from}: invalid entry name{shown}: {problem}"))
                    .hint("entries are KEY=VALUE; the key is the part before the first '='"),
            );
        }
        if let Some(first) = self.1.get(key) {
            return Err(CliError::new(format!(
                "{from}: duplicate key{shown}, first given by {first} (each key may be given once)"
            )));
        }
        self.1.insert(key.to_string(), from.to_string());
        self.0.insert(key.to_string(), value);
        Ok(())
    }
}

fn split_kv<'a>(arg: &'a str, flag: &str) -> Result<(&'a str, &'a str), CliError> {
    arg.split_once('=').ok_or_else(|| {
        // Never print the argument: it may be a secret without its key.
        CliError::new(format!("{flag}: expected KEY=VALUE (no '=' found)"))
    })
}

/// `--from-literal KEY=VALUE`.
pub fn add_literals(entries: &mut Entries, literals: &[String]) -> Result<(), CliError> {
    for (i, lit) in literals.iter().enumerate() {
        let from = format!("--from-literal #{}", i + 1);
        let (k, v) = split_kv(lit, &from)?;
        entries.add(k, SecretBytes::copy_from(v.as_bytes()), &from, false)?;
    }
    Ok(())
}

/// Reads a whole file into a zeroizing buffer.
pub fn read_secret_file(path: &Path) -> Result<SecretBytes, CliError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| CliError::new(format!("{}: {}", path.display(), io_msg(&e))))?;
    let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
    // Not `read_to_end`: a file that grows while read would make it reallocate
    // and leave an unwiped copy behind.
    SecretBytes::read_all(&mut f, len + 1)
        .map_err(|e| CliError::new(format!("{}: {}", path.display(), io_msg(&e))))
}

fn io_msg(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// `--from-file [KEY=]PATH`; a directory adds each regular file in it.
pub fn add_files(entries: &mut Entries, specs: &[String]) -> Result<(), CliError> {
    for spec in specs {
        let (key, path) = match spec.split_once('=') {
            Some((k, p)) => (Some(k.to_string()), PathBuf::from(p)),
            None => (None, PathBuf::from(spec)),
        };
        if path.is_dir() {
            if key.is_some() {
                return Err(CliError::new(format!(
                    "--from-file {}: a key cannot be given for a directory",
                    path.display()
                )));
            }
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| CliError::new(format!("{}: {}", path.display(), io_msg(&e))))?
                .filter_map(|d| d.ok().map(|d| d.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for f in files {
                let k = file_key(&f)?;
                let v = read_secret_file(&f)?;
                entries.add(&k, v, &format!("--from-file {}", f.display()), false)?;
            }
            continue;
        }
        let k = match key {
            Some(k) => k,
            None => file_key(&path)?,
        };
        let v = read_secret_file(&path)?;
        entries.add(&k, v, &format!("--from-file {}", path.display()), false)?;
    }
    Ok(())
}

fn file_key(path: &Path) -> Result<String, CliError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            CliError::new(format!(
                "--from-file {}: cannot derive a key from the path; use KEY=PATH",
                path.display()
            ))
        })
}

/// `--from-env-file PATH`: KEY=VALUE lines.
pub fn add_env_files(entries: &mut Entries, paths: &[PathBuf]) -> Result<(), CliError> {
    for path in paths {
        let content = read_secret_file(path)?;
        let text = std::str::from_utf8(content.expose())
            .map_err(|_| CliError::new(format!("{}: not valid UTF-8", path.display())))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let from = format!("{} line {}", path.display(), i + 1);
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| CliError::new(format!("{from}: expected KEY=VALUE")))?;
            entries.add(
                k.trim_end(),
                SecretBytes::copy_from(v.as_bytes()),
                &from,
                false,
            )?;
        }
    }
    Ok(())
}

/// A string deserialized straight into a zeroizing buffer. Also takes integer
/// and boolean scalars (`port: 5432`) as their text, as Kubernetes' stringData
/// does not but people writing in an editor expect.
struct SecretString(SecretBytes);

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecretString;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, v: &str) -> Result<SecretString, E> {
                Ok(SecretString(SecretBytes::copy_from(v.as_bytes())))
            }
            fn visit_string<E>(self, v: String) -> Result<SecretString, E> {
                Ok(SecretString(SecretBytes::from_string(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<SecretString, E> {
                Ok(SecretString(SecretBytes::from_string(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<SecretString, E> {
                Ok(SecretString(SecretBytes::from_string(v.to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<SecretString, E> {
                Ok(SecretString(SecretBytes::from_string(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses the text `sealcred edit` gave the editor back: a YAML map of entry
/// name to value. Errors give the line, never the text.
pub fn parse_edited(text: &SecretBytes) -> Result<BTreeMap<String, SecretBytes>, CliError> {
    let s = std::str::from_utf8(text.expose())
        .map_err(|_| CliError::new("the edited text is not valid UTF-8"))?;
    if s.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(BTreeMap::new());
    }
    let map: BTreeMap<String, SecretString> = serde_saphyr::from_str(s).map_err(|e| {
        let at = e
            .without_snippet()
            .location()
            .map(|l| format!(" at line {}", l.line()))
            .unwrap_or_default();
        CliError::new(format!(
            "the edited text is not a map of `name: value` lines{at} (a value that is a list, a map or a float must be quoted)"
        ))
    })?;
    let mut out = BTreeMap::new();
    for (i, (k, v)) in map.into_iter().enumerate() {
        if let Err(e) = check_entry_name(&k) {
            let problem = match e {
                sealcred_shared::format::FormatError::InvalidName { problem, .. } => problem,
                _ => "not a valid Secret key",
            };
            return Err(CliError::new(format!(
                "the edited text: entry {} (in name order) has an invalid name: {problem}",
                i + 1
            )));
        }
        out.insert(k, v.0);
    }
    Ok(out)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ManifestMeta {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: ManifestMeta,
    #[serde(rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, SecretString>,
    #[serde(default)]
    string_data: BTreeMap<String, SecretString>,
}

/// What a Secret manifest contributes besides its entries.
#[derive(Default, Debug)]
pub struct ManifestInfo {
    /// metadata.name
    pub name: Option<String>,
    /// metadata.namespace
    pub namespace: Option<String>,
    /// type
    pub type_: Option<String>,
    /// metadata.labels
    pub labels: BTreeMap<String, String>,
    /// metadata.annotations (kubectl's last-applied annotation dropped)
    pub annotations: BTreeMap<String, String>,
}

/// Reads a Secret manifest (YAML or JSON) from `path` (`-` = stdin).
pub fn read_manifest(path: &Path, entries: &mut Entries) -> Result<ManifestInfo, CliError> {
    let (label, raw) = if path == Path::new("-") {
        let buf = SecretBytes::read_all(std::io::stdin().lock(), 64 * 1024)
            .map_err(|e| CliError::new(format!("stdin: {e}")))?;
        ("stdin".to_string(), buf)
    } else {
        (path.display().to_string(), read_secret_file(path)?)
    };
    let text = std::str::from_utf8(raw.expose())
        .map_err(|_| CliError::new(format!("{label}: not valid UTF-8")))?;
    if text.trim().is_empty() {
        return Err(CliError::new(format!(
            "{label}: empty input; give a Secret manifest, or use --from-literal/--from-file/--from-env-file"
        )));
    }
    // Parse errors may quote the input, which holds secrets: report only where.
    let m: Manifest = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| {
            CliError::new(format!(
                "{label}: not a valid Secret manifest (JSON error at line {}, column {})",
                e.line(),
                e.column()
            ))
        })?
    } else {
        serde_saphyr::from_str(text).map_err(|e| {
            let at = e
                .without_snippet()
                .location()
                .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
                .unwrap_or_default();
            CliError::new(format!(
                "{label}: not a valid Secret manifest (YAML error{at})"
            ))
        })?
    };
    if let Some(k) = &m.kind
        && k != "Secret"
    {
        return Err(CliError::new(format!(
            "{label}: kind is {k:?}, expected Secret"
        )));
    }
    if let Some(v) = &m.api_version
        && v != "v1"
    {
        return Err(CliError::new(format!(
            "{label}: apiVersion is {v:?}, expected v1"
        )));
    }
    let mut string_keys = std::collections::BTreeSet::new();
    for (k, v) in m.string_data {
        string_keys.insert(k.clone());
        entries.add(&k, v.0, &format!("{label}: stringData"), true)?;
    }
    for (k, v) in m.data {
        if string_keys.contains(&k) {
            continue; // as the API server does: stringData wins
        }
        let decoded = decode_b64(v.0.expose())
            .ok_or_else(|| CliError::new(format!("{label}: data.{k}: invalid base64")))?;
        entries.add(&k, decoded, &format!("{label}: data"), true)?;
    }
    let mut annotations = m.metadata.annotations;
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    Ok(ManifestInfo {
        name: m.metadata.name,
        namespace: m.metadata.namespace,
        type_: m.type_,
        labels: m.metadata.labels,
        annotations,
    })
}

/// Decodes base64 into a zeroizing buffer (whitespace tolerated, as in YAML block scalars).
pub fn decode_b64(text: &[u8]) -> Option<SecretBytes> {
    // Pre-sized: `collect()` from a filter would grow by reallocation.
    let mut clean: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(text.len()));
    clean.extend(text.iter().copied().filter(|b| !b.is_ascii_whitespace()));
    let mut out = SecretBytes::with_capacity(clean.len() / 4 * 3 + 3);
    STANDARD.decode_vec(&clean[..], out.expose_mut()).ok()?;
    Some(out)
}

/// Parses KEY=VALUE pairs for labels and annotations.
pub fn parse_pairs(flag: &str, pairs: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| CliError::new(format!("{flag} {p:?}: expected KEY=VALUE")))?;
        if k.is_empty() {
            return Err(CliError::new(format!("{flag} {p:?}: empty key")));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(CliError::new(format!("{flag}: duplicate key {k:?}")));
        }
    }
    Ok(out)
}
