//! Storage-credential profiles: render exactly the Secret each consumer reads.
//!
//! Every profile is one entry in [`PROFILES`]: its name, which inputs it needs,
//! and a render function that builds the Secret's keys in zeroizing memory.
//! Adding a consumer (MinIO, GCS HMAC, ...) is adding one entry.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sealcred_shared::secret::SecretBytes;

use crate::error::CliError;

/// Typed inputs of a profile. The secret parts live only in [`SecretBytes`].
#[derive(Default)]
pub struct Inputs {
    /// `--access-key-id` (or from the AWS profile).
    pub access_key_id: Option<SecretBytes>,
    /// From `--secret-access-key-stdin` / `--secret-access-key-file` / the AWS profile.
    pub secret_access_key: Option<SecretBytes>,
    /// From the AWS profile only.
    pub session_token: Option<SecretBytes>,
    /// `--bucket`.
    pub bucket: Option<String>,
    /// `--region` (or the AWS profile's region).
    pub region: Option<String>,
    /// `--endpoint` (validated URL).
    pub endpoint: Option<String>,
}

/// An input a profile may need.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Field {
    /// The access key id.
    AccessKeyId,
    /// The secret access key.
    SecretAccessKey,
    /// The bucket.
    Bucket,
    /// The region.
    Region,
    /// The endpoint.
    Endpoint,
    /// The session token.
    SessionToken,
}

impl Field {
    fn flag(self) -> &'static str {
        match self {
            Field::AccessKeyId => "--access-key-id",
            Field::SecretAccessKey => "--secret-access-key-stdin or --secret-access-key-file",
            Field::Bucket => "--bucket",
            Field::Region => "--region",
            Field::Endpoint => "--endpoint",
            Field::SessionToken => "a session token (from --from-aws-profile)",
        }
    }

    fn present(self, i: &Inputs) -> bool {
        match self {
            Field::AccessKeyId => i.access_key_id.is_some(),
            Field::SecretAccessKey => i.secret_access_key.is_some(),
            Field::Bucket => i.bucket.is_some(),
            Field::Region => i.region.is_some(),
            Field::Endpoint => i.endpoint.is_some(),
            Field::SessionToken => i.session_token.is_some(),
        }
    }
}

type Render = fn(&Inputs) -> BTreeMap<String, SecretBytes>;

/// One profile.
pub struct Profile {
    /// `--profile` value.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Inputs it must have.
    pub required: &'static [Field],
    /// Inputs it may use.
    pub optional: &'static [Field],
    render: Render,
}

/// The profiles. Sources of the shapes are in docs/flyte.md.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "flyte-core",
        about: "flyte-core chart, storage.secretName: key storage.yaml with a full storage: block (s3, accesskey)",
        required: &[
            Field::AccessKeyId,
            Field::SecretAccessKey,
            Field::Bucket,
            Field::Region,
        ],
        optional: &[Field::Endpoint],
        render: render_flyte_core,
    },
    Profile {
        name: "flyte-binary",
        about: "flyte-binary chart, configuration.inlineSecretRef: key 200-sealcred-storage.yaml with storage.stow (s3, accesskey)",
        required: &[
            Field::AccessKeyId,
            Field::SecretAccessKey,
            Field::Bucket,
            Field::Region,
        ],
        optional: &[Field::Endpoint],
        render: render_flyte_binary,
    },
    Profile {
        name: "flyte-task-env",
        about: "Flyte task pods (default-env-from-secrets): FLYTE_AWS_ACCESS_KEY_ID, FLYTE_AWS_SECRET_ACCESS_KEY, FLYTE_AWS_ENDPOINT",
        required: &[Field::AccessKeyId, Field::SecretAccessKey],
        optional: &[Field::Endpoint],
        render: render_flyte_task_env,
    },
    Profile {
        name: "aws-env",
        about: "AWS SDK environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL_S3",
        required: &[Field::AccessKeyId, Field::SecretAccessKey],
        optional: &[Field::SessionToken, Field::Region, Field::Endpoint],
        render: render_aws_env,
    },
];

/// Finds a profile by name.
pub fn find(name: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.name == name)
}

impl Profile {
    /// Validates `inputs` against this profile and renders the Secret's keys.
    pub fn render(&self, inputs: &Inputs) -> Result<BTreeMap<String, SecretBytes>, CliError> {
        for f in self.required {
            if !f.present(inputs) {
                return Err(CliError::new(format!(
                    "--profile {}: missing {}",
                    self.name,
                    f.flag()
                )));
            }
        }
        for f in [Field::Bucket, Field::Region, Field::Endpoint] {
            if f.present(inputs) && !self.required.contains(&f) && !self.optional.contains(&f) {
                return Err(CliError::new(format!(
                    "--profile {}: {} is not used by this profile",
                    self.name,
                    f.flag()
                )));
            }
        }
        Ok((self.render)(inputs))
    }
}

/// A growing zeroizing text buffer (pre-sized so it never reallocates).
struct Doc(SecretBytes);

impl Doc {
    fn new() -> Doc {
        Doc(SecretBytes::with_capacity(8192))
    }
    fn raw(&mut self, s: &str) -> &mut Self {
        self.push(s.as_bytes())
    }
    fn push(&mut self, b: &[u8]) -> &mut Self {
        let buf = self.0.expose_mut();
        if buf.len() + b.len() > buf.capacity() {
            // Grow by moving into a new zeroizing buffer; the old one is wiped on drop.
            let mut bigger = SecretBytes::with_capacity((buf.len() + b.len()) * 2);
            bigger.expose_mut().extend_from_slice(buf);
            self.0 = bigger;
        }
        self.0.expose_mut().extend_from_slice(b);
        self
    }
    /// A YAML double-quoted scalar (JSON string escaping is valid YAML).
    fn quoted(&mut self, v: &[u8]) -> &mut Self {
        self.raw("\"");
        for &c in v {
            match c {
                b'"' => self.raw("\\\""),
                b'\\' => self.raw("\\\\"),
                b'\n' => self.raw("\\n"),
                b'\r' => self.raw("\\r"),
                b'\t' => self.raw("\\t"),
                c if c < 0x20 => self.raw(&format!("\\u{c:04x}")),
                c => self.push(&[c]),
            };
        }
        self.raw("\"")
    }
    fn line(&mut self, indent_key: &str, v: &[u8]) -> &mut Self {
        self.raw(indent_key).raw(": ").quoted(v).raw("\n")
    }
    fn done(self) -> SecretBytes {
        self.0
    }
}

fn s(v: &Option<SecretBytes>) -> &[u8] {
    v.as_ref().map(|b| b.expose()).unwrap_or_default()
}

fn o(v: &Option<String>) -> &[u8] {
    v.as_deref().unwrap_or_default().as_bytes()
}

/// flyte-core: flytestdlib's storage config (`storage.Config`, `ConnectionConfig`).
fn render_flyte_core(i: &Inputs) -> BTreeMap<String, SecretBytes> {
    let mut d = Doc::new();
    d.raw("storage:\n  type: s3\n");
    d.line("  container", o(&i.bucket));
    d.raw("  connection:\n    auth-type: accesskey\n");
    d.line("    access-key", s(&i.access_key_id));
    d.line("    secret-key", s(&i.secret_access_key));
    d.line("    region", o(&i.region));
    if i.endpoint.is_some() {
        d.line("    endpoint", o(&i.endpoint));
    }
    // This file replaces the chart's whole storage.yaml: the chart's defaults
    // for what it would have written besides the connection are rendered too
    // (flyte-core values.yaml: storage.enableMultiContainer false,
    // storage.limits.maxDownloadMBs 10, storage.cache maxSizeMBs 0 /
    // targetGCPercent 70). No disable-ssl: the endpoint always carries its
    // scheme, and an explicit http:// already means plain HTTP to the S3 client.
    d.raw("  enable-multicontainer: false\n");
    d.raw("  limits:\n    maxDownloadMBs: 10\n");
    d.raw("  cache:\n    max_size_mbs: 0\n    target_gc_percent: 70\n");
    BTreeMap::from([("storage.yaml".to_string(), d.done())])
}

/// flyte-binary: the stow s3 config, as the chart's 003-storage.yaml and
/// 013-storage-secrets.yaml write it, in one file that sorts after them.
fn render_flyte_binary(i: &Inputs) -> BTreeMap<String, SecretBytes> {
    let mut d = Doc::new();
    d.raw("storage:\n  type: stow\n");
    d.line("  container", o(&i.bucket));
    d.raw("  stow:\n    kind: s3\n    config:\n      auth_type: accesskey\n");
    d.line("      access_key_id", s(&i.access_key_id));
    d.line("      secret_key", s(&i.secret_access_key));
    d.line("      region", o(&i.region));
    if i.endpoint.is_some() {
        d.line("      endpoint", o(&i.endpoint));
    }
    // Every stow config value is a string (a map of strings: a YAML boolean
    // would arrive as "1" and be ignored); no disable_ssl, as for flyte-core.
    // The same download limit as flyte-core renders (flytestdlib's own default
    // is 2 MB).
    d.raw("  limits:\n    maxDownloadMBs: 10\n");
    BTreeMap::from([("200-sealcred-storage.yaml".to_string(), d.done())])
}

/// A Secret of environment variables: each present value under its name.
fn env_vars(vars: &[(&str, Option<&[u8]>)]) -> BTreeMap<String, SecretBytes> {
    vars.iter()
        .filter_map(|(name, v)| v.map(|v| (name.to_string(), SecretBytes::copy_from(v))))
        .collect()
}

fn secret(v: &Option<SecretBytes>) -> Option<&[u8]> {
    v.as_ref().map(|b| b.expose())
}

fn plain(v: &Option<String>) -> Option<&[u8]> {
    v.as_deref().map(str::as_bytes)
}

/// Flyte task pods: the FLYTE_AWS_* variables flytekit's S3 access reads.
fn render_flyte_task_env(i: &Inputs) -> BTreeMap<String, SecretBytes> {
    env_vars(&[
        ("FLYTE_AWS_ACCESS_KEY_ID", secret(&i.access_key_id)),
        ("FLYTE_AWS_SECRET_ACCESS_KEY", secret(&i.secret_access_key)),
        ("FLYTE_AWS_ENDPOINT", plain(&i.endpoint)),
    ])
}

/// The standard AWS SDK environment variables.
fn render_aws_env(i: &Inputs) -> BTreeMap<String, SecretBytes> {
    env_vars(&[
        ("AWS_ACCESS_KEY_ID", secret(&i.access_key_id)),
        ("AWS_SECRET_ACCESS_KEY", secret(&i.secret_access_key)),
        ("AWS_SESSION_TOKEN", secret(&i.session_token)),
        ("AWS_REGION", plain(&i.region)),
        ("AWS_ENDPOINT_URL_S3", plain(&i.endpoint)),
    ])
}

/// Checks an endpoint URL: http or https, a host, no user info, query or fragment.
pub fn check_endpoint(e: &str) -> Result<String, CliError> {
    let bad = |why: &str| Err(CliError::new(format!("--endpoint {e:?}: {why}")));
    let u = match url::Url::parse(e) {
        Ok(u) => u,
        Err(err) => return bad(&format!("not a valid URL ({err})")),
    };
    if u.scheme() != "https" && u.scheme() != "http" {
        return bad("scheme must be https or http");
    }
    if u.host_str().is_none_or(str::is_empty) {
        return bad("no host");
    }
    if !u.username().is_empty() || u.password().is_some() {
        return bad("must not contain credentials");
    }
    if u.query().is_some() || u.fragment().is_some() {
        return bad("must not have a query or fragment");
    }
    Ok(e.trim_end_matches('/').to_string())
}

/// Checks a bucket name (S3 rules: 3-63 of lowercase, digits, '.', '-').
pub fn check_bucket(b: &str) -> Result<(), CliError> {
    let ok = (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(CliError::new(format!(
            "--bucket {b:?}: not a valid bucket name (3-63 lowercase letters, digits, '.' or '-')"
        )))
    }
}

/// Checks a region name, e.g. `us-east-1`.
pub fn check_region(r: &str) -> Result<(), CliError> {
    let ok = !r.is_empty()
        && r.len() <= 32
        && r.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(CliError::new(format!(
            "--region {r:?}: not a valid region name"
        )))
    }
}

/// Reads a secret from stdin (one value; a trailing newline is dropped).
pub fn secret_from_stdin() -> Result<SecretBytes, CliError> {
    let mut buf = SecretBytes::with_capacity(4096);
    std::io::stdin()
        .read_to_end(buf.expose_mut())
        .map_err(|e| CliError::new(format!("--secret-access-key-stdin: {e}")))?;
    trim_newline(buf, "--secret-access-key-stdin")
}

/// Reads a secret from a file (a trailing newline is dropped).
pub fn secret_from_file(path: &Path) -> Result<SecretBytes, CliError> {
    let buf = crate::input::read_secret_file(path)?;
    trim_newline(buf, &format!("--secret-access-key-file {}", path.display()))
}

fn trim_newline(mut buf: SecretBytes, from: &str) -> Result<SecretBytes, CliError> {
    let v = buf.expose_mut();
    while v.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
        if let Some(c) = v.last_mut() {
            *c = 0;
        }
        v.pop();
    }
    if v.is_empty() {
        return Err(CliError::new(format!("{from}: empty secret access key")));
    }
    if v.iter().any(|c| c.is_ascii_whitespace()) {
        return Err(CliError::new(format!(
            "{from}: the secret access key contains whitespace (one key expected)"
        )));
    }
    Ok(buf)
}

/// Credentials and region of a named profile in the AWS shared files
/// (`AWS_SHARED_CREDENTIALS_FILE`/`~/.aws/credentials`, `AWS_CONFIG_FILE`/`~/.aws/config`).
pub fn from_aws_profile(name: &str, inputs: &mut Inputs) -> Result<(), CliError> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let creds_path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws").join("credentials"));
    let config_path = std::env::var_os("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws").join("config"));
    let creds = crate::input::read_secret_file(&creds_path).ok();
    let config = crate::input::read_secret_file(&config_path).ok();
    let config_section = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    let mut found = false;
    for (file, section) in [(&creds, name.to_string()), (&config, config_section)] {
        let Some(file) = file else { continue };
        let text = std::str::from_utf8(file.expose()).unwrap_or("");
        for (k, v) in ini_section(text, &section) {
            found = true;
            match k {
                "aws_access_key_id" if inputs.access_key_id.is_none() => {
                    inputs.access_key_id = Some(SecretBytes::copy_from(v.as_bytes()))
                }
                "aws_secret_access_key" if inputs.secret_access_key.is_none() => {
                    inputs.secret_access_key = Some(SecretBytes::copy_from(v.as_bytes()))
                }
                "aws_session_token" if inputs.session_token.is_none() => {
                    inputs.session_token = Some(SecretBytes::copy_from(v.as_bytes()))
                }
                "region" if inputs.region.is_none() => inputs.region = Some(v.to_string()),
                "endpoint_url" if inputs.endpoint.is_none() => {
                    inputs.endpoint = Some(check_endpoint(v)?)
                }
                _ => {}
            }
        }
    }
    if !found {
        return Err(CliError::new(format!(
            "--from-aws-profile {name}: no such profile in {} or {}",
            creds_path.display(),
            config_path.display()
        )));
    }
    Ok(())
}

/// The `key = value` pairs of `[section]` in an INI text. Values are slices of
/// the (zeroizing) input; nothing is copied.
fn ini_section<'a>(text: &'a str, section: &str) -> Vec<(&'a str, &'a str)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = h.trim() == section;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.push((k.trim(), v.trim()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_checks() {
        assert!(check_endpoint("https://s3.example.com").is_ok());
        assert!(check_endpoint("http://minio.minio:9000/").is_ok());
        for bad in [
            "s3.example.com",
            "ftp://x",
            "https://",
            "https://u:p@x",
            "https://x?a=b",
            "https://x#f",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ini_parsing() {
        let t =
            "[default]\naws_access_key_id = A\n[other]\naws_access_key_id=B\n; c\nregion = eu\n";
        assert_eq!(
            ini_section(t, "other"),
            vec![("aws_access_key_id", "B"), ("region", "eu")]
        );
    }

    #[test]
    fn quoting_is_yaml_safe() {
        let mut d = Doc::new();
        d.quoted(b"a\"b\\c\nd");
        assert_eq!(d.done().expose(), br#""a\"b\\c\nd""#);
    }
}
