//! The sealed wire format, version 1: canonical encodings and structural checks.
//!
//! This module holds no keys and does no cryptography: it turns a
//! [`SealedStorageCredSpec`] into checked, decoded parts ([`ParsedSpec`]) and
//! builds the exact bytes that the primitives in [`crate::crypto`] authenticate.
//! `docs/FORMAT.md` is the specification; the section names below quote it.
//!
//! All variable-length fields are length-prefixed (`lp(x)` = 4-byte big-endian
//! length ‖ bytes; counts are 4-byte big-endian), so no two different inputs
//! share an encoding (no delimiter ambiguity).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::crd::{MAX_DATA_KEYS, MAX_WRAPPINGS, Scope, SealedStorageCredSpec, SecretTemplate};

/// The only format version this implementation reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The algorithm suites a reader accepts. There is no negotiation.
pub const SUITES: &[&str] = &[SUITE_V1];

/// Suite 1: HKDF-SHA512 key derivation with key commitment, AES-256-GCM per
/// value with a random 96-bit nonce, HMAC-SHA256 header tag.
pub const SUITE_V1: &str = "AES256GCM-HKDFSHA512-COMMIT";

/// Length of a data-key id (the HKDF salt), in bytes.
pub const DATA_KEY_ID_LEN: usize = 32;
/// Length of a key commitment, in bytes.
pub const COMMITMENT_LEN: usize = 32;
/// Length of a header tag, in bytes.
pub const HEADER_TAG_LEN: usize = 32;
/// Length of a GCM nonce, in bytes.
pub const NONCE_LEN: usize = 12;
/// Length of a GCM tag, in bytes.
pub const GCM_TAG_LEN: usize = 16;
/// Kubernetes' limit on a Secret's total size.
pub const SECRET_SIZE_LIMIT: usize = 1024 * 1024;

/// EncryptionContext key naming the scope.
pub const CTX_SCOPE: &str = "sealcred.io/scope";
/// EncryptionContext key naming the namespace (strict and namespace-wide).
pub const CTX_NAMESPACE: &str = "sealcred.io/namespace";
/// EncryptionContext key naming the object (strict and cluster).
pub const CTX_NAME: &str = "sealcred.io/name";
/// EncryptionContext key naming the kind the ciphertext opens in (cluster).
pub const CTX_KIND: &str = "sealcred.io/kind";

/// A structural problem in a sealed object, found before any key is used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// `formatVersion` is not one this implementation reads.
    #[error(
        "unsupported format version {0} (this sealcred reads version {FORMAT_VERSION}; upgrade sealcred or re-seal)"
    )]
    UnsupportedVersion(u32),
    /// `suite` is not on the allowlist.
    #[error("unknown algorithm suite {0:?} (known: {SUITE_V1})")]
    UnknownSuite(String),
    /// A base64 field does not decode, or has the wrong length.
    #[error("{field}: {problem}")]
    BadField {
        /// Path of the field, e.g. `entries.access_key.nonce`.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// An entry or template name is not valid.
    #[error("invalid {what} {name:?}: {problem}")]
    InvalidName {
        /// What kind of name.
        what: &'static str,
        /// The name.
        name: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The object's entries and data keys do not agree.
    #[error("inconsistent object: {0}")]
    Inconsistent(String),
    /// Metadata needed by the scope is missing.
    #[error("scope {scope} needs metadata.{field}, which is missing")]
    MissingMetadata {
        /// The scope.
        scope: Scope,
        /// `namespace` or `name`.
        field: &'static str,
    },
    /// Scope `cluster` on a namespaced object: it is sealed for a
    /// `ClusterSealedStorageCred` and opens nowhere else.
    #[error(
        "scope cluster is sealed for a ClusterSealedStorageCred; this object has metadata.namespace, so it is not one (nothing was decrypted)"
    )]
    ClusterScopeInNamespace,
}

/// Appends `lp(bytes)`.
pub fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("field longer than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a 4-byte big-endian count.
pub fn put_count(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("count over 2^32");
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_map(out: &mut Vec<u8>, map: &BTreeMap<String, String>) {
    put_count(out, map.len());
    for (k, v) in map {
        put_lp(out, k.as_bytes());
        put_lp(out, v.as_bytes());
    }
}

/// Where a sealed object lives: its own metadata, never a field of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The scope from the spec.
    pub scope: Scope,
    /// `metadata.namespace` when the scope binds it, else empty.
    pub namespace: String,
    /// `metadata.name` when the scope binds it, else empty.
    pub name: String,
}

/// What scope `cluster` adds to the binding: the kind it opens in.
const CLUSTER_BINDING_KIND: &str = crate::crd::CLUSTER_KIND;

impl Binding {
    /// Builds the binding from an object's metadata and scope. Metadata that the
    /// scope does not bind is dropped, so moving a namespace-wide object to a
    /// new name, or a cluster-wide one anywhere, keeps it valid.
    pub fn new(
        scope: Scope,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<Binding, FormatError> {
        let need = |v: Option<&str>, field| match v {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(FormatError::MissingMetadata { scope, field }),
        };
        Ok(match scope {
            Scope::Strict => Binding {
                scope,
                namespace: need(namespace, "namespace")?,
                name: need(name, "name")?,
            },
            Scope::NamespaceWide => Binding {
                scope,
                namespace: need(namespace, "namespace")?,
                name: String::new(),
            },
            Scope::ClusterWide => Binding {
                scope,
                namespace: String::new(),
                name: String::new(),
            },
            // A cluster-scoped object has no namespace: one with a namespace is a
            // namespaced SealedStorageCred, which must not open this scope.
            Scope::Cluster => {
                if namespace.is_some_and(|n| !n.is_empty()) {
                    return Err(FormatError::ClusterScopeInNamespace);
                }
                Binding {
                    scope,
                    namespace: String::new(),
                    name: need(name, "name")?,
                }
            }
        })
    }

    /// `scope_binding` = lp(scope) ‖ lp(namespace) ‖ lp(name), and for scope
    /// `cluster` ‖ lp("ClusterSealedStorageCred").
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_lp(&mut out, self.scope.as_str().as_bytes());
        put_lp(&mut out, self.namespace.as_bytes());
        put_lp(&mut out, self.name.as_bytes());
        if self.scope == Scope::Cluster {
            put_lp(&mut out, CLUSTER_BINDING_KIND.as_bytes());
        }
        out
    }

    /// The KMS EncryptionContext: scope always, namespace and name as bound, and
    /// for scope `cluster` the kind (`sealcred.io/kind: ClusterSealedStorageCred`).
    pub fn encryption_context(&self) -> BTreeMap<String, String> {
        let mut ctx = BTreeMap::new();
        ctx.insert(CTX_SCOPE.to_string(), self.scope.as_str().to_string());
        if self.scope == Scope::Cluster {
            ctx.insert(CTX_KIND.to_string(), CLUSTER_BINDING_KIND.to_string());
        }
        if !self.namespace.is_empty() {
            ctx.insert(CTX_NAMESPACE.to_string(), self.namespace.clone());
        }
        if !self.name.is_empty() {
            ctx.insert(CTX_NAME.to_string(), self.name.clone());
        }
        ctx
    }
}

/// Canonical bytes of an EncryptionContext: count ‖ (lp(key) ‖ lp(value))*, sorted.
pub fn context_bytes(ctx: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    put_map(&mut out, ctx);
    out
}

/// Canonical bytes of the template.
pub fn template_bytes(t: &SecretTemplate) -> Vec<u8> {
    let mut out = Vec::new();
    put_lp(&mut out, t.name.as_deref().unwrap_or("").as_bytes());
    put_lp(&mut out, t.type_.as_bytes());
    put_map(&mut out, &t.labels);
    put_map(&mut out, &t.annotations);
    out
}

/// One wrapping, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedWrapping {
    /// The key id as written.
    pub key_id: String,
    /// The wrapped data key.
    pub ciphertext: Vec<u8>,
}

/// One data key, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDataKey {
    /// Id as written (base64), used to match entries.
    pub id_b64: String,
    /// Id bytes (the HKDF salt).
    pub id: [u8; DATA_KEY_ID_LEN],
    /// The key commitment.
    pub commitment: [u8; COMMITMENT_LEN],
    /// Entry names sealed under this key at sealing time, sorted.
    pub names: Vec<String>,
    /// Ids (base64) of the data keys this one supersedes, sorted.
    pub supersedes: Vec<String>,
    /// Wrappings, in the order to try them.
    pub wrappings: Vec<ParsedWrapping>,
    /// The header tag.
    pub header_tag: [u8; HEADER_TAG_LEN],
    /// The state tag (required on the newest data key).
    pub state_tag: Option<[u8; HEADER_TAG_LEN]>,
}

/// One entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEntry {
    /// Index into [`ParsedSpec::data_keys`].
    pub data_key: usize,
    /// GCM nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext without the tag.
    pub ciphertext: Vec<u8>,
    /// GCM tag.
    pub tag: [u8; GCM_TAG_LEN],
}

/// A structurally valid spec, with every binary field decoded.
#[derive(Debug, Clone)]
pub struct ParsedSpec {
    /// Format version (always [`FORMAT_VERSION`]).
    pub version: u32,
    /// Suite (always on [`SUITES`]).
    pub suite: String,
    /// The scope field.
    pub scope: Scope,
    /// The template.
    pub template: SecretTemplate,
    /// The profile field.
    pub profile: Option<String>,
    /// Data keys in object order.
    pub data_keys: Vec<ParsedDataKey>,
    /// Entries by name.
    pub entries: BTreeMap<String, ParsedEntry>,
    /// Index of the newest data key: the one no other supersedes.
    pub head: usize,
}

/// Decodes standard base64 and checks the length when one is required.
pub fn decode_b64(field: &str, value: &str, len: Option<usize>) -> Result<Vec<u8>, FormatError> {
    let bytes = STANDARD.decode(value).map_err(|e| FormatError::BadField {
        field: field.to_string(),
        problem: format!("invalid base64 ({e})"),
    })?;
    if let Some(n) = len
        && bytes.len() != n
    {
        return Err(FormatError::BadField {
            field: field.to_string(),
            problem: format!("expected {n} bytes, found {}", bytes.len()),
        });
    }
    Ok(bytes)
}

fn decode_fixed<const N: usize>(field: &str, value: &str) -> Result<[u8; N], FormatError> {
    let v = decode_b64(field, value, Some(N))?;
    Ok(v.try_into().expect("length checked"))
}

/// Encodes standard base64.
pub fn encode_b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Checks a Secret data key name: `[-._a-zA-Z0-9]+`, at most 253 bytes, not `.` or `..`.
pub fn check_entry_name(name: &str) -> Result<(), FormatError> {
    let bad = |problem| {
        Err(FormatError::InvalidName {
            what: "entry name",
            name: name.to_string(),
            problem,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 253 {
        return bad("longer than 253 characters");
    }
    if name == "." || name == ".." {
        return bad("must not be '.' or '..'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return bad("Secret keys may contain only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// Checks a Kubernetes object name (RFC 1123 subdomain).
pub fn check_object_name(what: &'static str, name: &str) -> Result<(), FormatError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(FormatError::InvalidName {
            what,
            name: name.to_string(),
            problem: "must be lowercase letters, digits, '-' or '.', start and end alphanumeric, at most 253 characters",
        })
    }
}

/// Checks the caps that bound the KMS calls one object can cause: at most
/// [`MAX_DATA_KEYS`] data keys, and at most [`MAX_WRAPPINGS`] wrappings per data
/// key (the CRD schema has the same `maxItems`). [`ParsedSpec::parse`] calls it
/// first; a writer should call it on what it is about to write.
pub fn check_limits(spec: &SealedStorageCredSpec) -> Result<(), FormatError> {
    if spec.data_keys.len() > MAX_DATA_KEYS {
        return Err(FormatError::BadField {
            field: "dataKeys".into(),
            problem: format!(
                "{} data keys, at most {MAX_DATA_KEYS} (each merge adds one; `sealcred rotate` re-seals into one)",
                spec.data_keys.len()
            ),
        });
    }
    for (i, dk) in spec.data_keys.iter().enumerate() {
        if dk.wrappings.len() > MAX_WRAPPINGS {
            return Err(FormatError::BadField {
                field: format!("dataKeys[{i}].wrappings"),
                problem: format!("{} wrappings, at most {MAX_WRAPPINGS}", dk.wrappings.len()),
            });
        }
    }
    Ok(())
}

impl ParsedSpec {
    /// Checks everything that can be checked without a key (the "structural
    /// checks" of docs/FORMAT.md), in order: version, suite, the caps
    /// ([`check_limits`]), fields, names, references and the supersede rule.
    pub fn parse(spec: &SealedStorageCredSpec) -> Result<ParsedSpec, FormatError> {
        if spec.format_version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(spec.format_version));
        }
        if !SUITES.contains(&spec.suite.as_str()) {
            return Err(FormatError::UnknownSuite(spec.suite.clone()));
        }
        check_limits(spec)?;
        if let Some(name) = &spec.template.name {
            check_object_name("template name", name)?;
        }
        if spec.template.type_.is_empty() {
            return Err(FormatError::BadField {
                field: "template.type".into(),
                problem: "empty".into(),
            });
        }
        if spec.data_keys.is_empty() {
            return Err(FormatError::Inconsistent("no data keys".into()));
        }
        let mut data_keys = Vec::with_capacity(spec.data_keys.len());
        let mut index = BTreeMap::new();
        for (i, dk) in spec.data_keys.iter().enumerate() {
            let f = |name: &str| format!("dataKeys[{i}].{name}");
            let id = decode_fixed::<DATA_KEY_ID_LEN>(&f("id"), &dk.id)?;
            if index.insert(dk.id.clone(), i).is_some() {
                return Err(FormatError::Inconsistent(format!(
                    "data key id {} appears twice",
                    dk.id
                )));
            }
            let commitment = decode_fixed::<COMMITMENT_LEN>(&f("commitment"), &dk.commitment)?;
            let header_tag = decode_fixed::<HEADER_TAG_LEN>(&f("headerTag"), &dk.header_tag)?;
            let state_tag = match &dk.state_tag {
                Some(t) => Some(decode_fixed::<HEADER_TAG_LEN>(&f("stateTag"), t)?),
                None => None,
            };
            if dk.names.is_empty() {
                return Err(FormatError::Inconsistent(format!(
                    "{} is empty",
                    f("names")
                )));
            }
            for n in &dk.names {
                check_entry_name(n)?;
            }
            if !dk.names.windows(2).all(|w| w[0] < w[1]) {
                return Err(FormatError::Inconsistent(format!(
                    "{} must be sorted and unique",
                    f("names")
                )));
            }
            if !dk.supersedes.windows(2).all(|w| w[0] < w[1]) {
                return Err(FormatError::Inconsistent(format!(
                    "{} must be sorted and unique",
                    f("supersedes")
                )));
            }
            for (j, s) in dk.supersedes.iter().enumerate() {
                decode_b64(
                    &format!("{}[{j}]", f("supersedes")),
                    s,
                    Some(DATA_KEY_ID_LEN),
                )?;
            }
            if dk.wrappings.is_empty() {
                return Err(FormatError::Inconsistent(format!(
                    "{} is empty",
                    f("wrappings")
                )));
            }
            let mut wrappings = Vec::with_capacity(dk.wrappings.len());
            for (j, w) in dk.wrappings.iter().enumerate() {
                if w.key_id.is_empty() {
                    return Err(FormatError::BadField {
                        field: format!("{}[{j}].keyId", f("wrappings")),
                        problem: "empty".into(),
                    });
                }
                let ciphertext = decode_b64(
                    &format!("{}[{j}].ciphertext", f("wrappings")),
                    &w.ciphertext,
                    None,
                )?;
                if ciphertext.is_empty() {
                    return Err(FormatError::BadField {
                        field: format!("{}[{j}].ciphertext", f("wrappings")),
                        problem: "empty".into(),
                    });
                }
                wrappings.push(ParsedWrapping {
                    key_id: w.key_id.clone(),
                    ciphertext,
                });
            }
            data_keys.push(ParsedDataKey {
                id_b64: dk.id.clone(),
                id,
                commitment,
                names: dk.names.clone(),
                supersedes: dk.supersedes.clone(),
                wrappings,
                header_tag,
                state_tag,
            });
        }

        let mut entries = BTreeMap::new();
        let mut total = 0usize;
        for (name, e) in &spec.entries {
            check_entry_name(name)?;
            let f = |field: &str| format!("entries.{name}.{field}");
            let Some(&dk) = index.get(&e.data_key) else {
                return Err(FormatError::Inconsistent(format!(
                    "{} names data key {}, which is not in dataKeys",
                    f("dataKey"),
                    e.data_key
                )));
            };
            if data_keys[dk].names.binary_search(name).is_err() {
                return Err(FormatError::Inconsistent(format!(
                    "entry {name} is not among the names sealed under data key {}",
                    e.data_key
                )));
            }
            let nonce = decode_fixed::<NONCE_LEN>(&f("nonce"), &e.nonce)?;
            let mut ct = decode_b64(&f("ciphertext"), &e.ciphertext, None)?;
            if ct.len() < GCM_TAG_LEN {
                return Err(FormatError::BadField {
                    field: f("ciphertext"),
                    problem: format!("shorter than the {GCM_TAG_LEN}-byte tag (truncated?)"),
                });
            }
            total += name.len() + ct.len() - GCM_TAG_LEN;
            let tag: [u8; GCM_TAG_LEN] = ct.split_off(ct.len() - GCM_TAG_LEN).try_into().unwrap();
            entries.insert(
                name.clone(),
                ParsedEntry {
                    data_key: dk,
                    nonce,
                    ciphertext: ct,
                    tag,
                },
            );
        }
        if total > SECRET_SIZE_LIMIT {
            return Err(FormatError::Inconsistent(format!(
                "the Secret would be {total} bytes, over Kubernetes' {SECRET_SIZE_LIMIT}-byte limit"
            )));
        }

        // The supersede rule: every name a data key was sealed with is either
        // still sealed under it, or was replaced by a later data key that names
        // it and lists this one in `supersedes`.
        for dk in &data_keys {
            for n in &dk.names {
                let here = entries
                    .get(n)
                    .is_some_and(|e| data_keys[e.data_key].id_b64 == dk.id_b64);
                if here {
                    continue;
                }
                let replaced = entries.get(n).is_some_and(|e| {
                    let by = &data_keys[e.data_key];
                    by.supersedes.binary_search(&dk.id_b64).is_ok()
                });
                if !replaced {
                    return Err(FormatError::Inconsistent(format!(
                        "entry {n} sealed under data key {} is missing and was not replaced by a later data key (dropped or replayed entry)",
                        dk.id_b64
                    )));
                }
            }
        }
        let dks: BTreeSet<usize> = entries.values().map(|e| e.data_key).collect();
        if dks.len() != data_keys.len() {
            return Err(FormatError::Inconsistent(
                "a data key has no entries left (remove it, or re-seal)".into(),
            ));
        }

        // Exactly one data key is superseded by no other: the newest. Its state
        // tag authenticates the whole entry list.
        let superseded: BTreeSet<&String> =
            data_keys.iter().flat_map(|d| d.supersedes.iter()).collect();
        let heads: Vec<usize> = (0..data_keys.len())
            .filter(|&i| !superseded.contains(&data_keys[i].id_b64))
            .collect();
        let head = match heads[..] {
            [h] => h,
            _ => {
                return Err(FormatError::Inconsistent(format!(
                    "{} data keys are superseded by no other (expected exactly one: concurrent merges, or an edited supersedes list); re-seal with `sealcred rotate`",
                    heads.len()
                )));
            }
        };
        if data_keys[head].state_tag.is_none() {
            return Err(FormatError::BadField {
                field: format!("dataKeys[{head}].stateTag"),
                problem: "missing on the newest data key".into(),
            });
        }

        Ok(ParsedSpec {
            version: spec.format_version,
            suite: spec.suite.clone(),
            scope: spec.scope,
            template: spec.template.clone(),
            profile: spec.profile.clone(),
            data_keys,
            entries,
            head,
        })
    }

    /// The canonical entry-list bytes the newest data key's state tag covers.
    pub fn state_bytes(&self, binding: &Binding) -> Vec<u8> {
        state_bytes(
            self.version,
            &self.suite,
            binding,
            self.entries
                .iter()
                .map(|(n, e)| (n.as_str(), &self.data_keys[e.data_key].id)),
        )
    }

    /// The canonical header bytes of data key `i` (what its header tag covers).
    pub fn header_bytes(&self, binding: &Binding, i: usize) -> Vec<u8> {
        header_bytes(
            self.version,
            &self.suite,
            binding,
            &self.template,
            self.profile.as_deref(),
            &self.data_keys[i],
        )
    }

    /// The AAD of entry `name`.
    pub fn entry_aad(&self, binding: &Binding, name: &str) -> Vec<u8> {
        let e = &self.entries[name];
        entry_aad(
            self.version,
            &self.suite,
            binding,
            name,
            &self.data_keys[e.data_key].id,
        )
    }
}

/// Header bytes: see "Header tag" in docs/FORMAT.md.
pub fn header_bytes(
    version: u32,
    suite: &str,
    binding: &Binding,
    template: &SecretTemplate,
    profile: Option<&str>,
    dk: &ParsedDataKey,
) -> Vec<u8> {
    let mut out = Vec::new();
    put_lp(&mut out, b"sealcred/v1 header");
    out.extend_from_slice(&version.to_be_bytes());
    put_lp(&mut out, suite.as_bytes());
    put_lp(&mut out, &binding.bytes());
    put_lp(&mut out, &template_bytes(template));
    put_lp(&mut out, profile.unwrap_or("").as_bytes());
    put_lp(&mut out, &dk.id);
    put_lp(&mut out, &dk.commitment);
    put_count(&mut out, dk.names.len());
    for n in &dk.names {
        put_lp(&mut out, n.as_bytes());
    }
    put_count(&mut out, dk.supersedes.len());
    for s in &dk.supersedes {
        put_lp(&mut out, s.as_bytes());
    }
    put_count(&mut out, dk.wrappings.len());
    for w in &dk.wrappings {
        put_lp(&mut out, w.key_id.as_bytes());
        put_lp(&mut out, &w.ciphertext);
    }
    out
}

/// State bytes: see "State tag" in docs/FORMAT.md. `entries` must be in
/// name order (as a `BTreeMap` iterates).
pub fn state_bytes<'a>(
    version: u32,
    suite: &str,
    binding: &Binding,
    entries: impl ExactSizeIterator<Item = (&'a str, &'a [u8; DATA_KEY_ID_LEN])>,
) -> Vec<u8> {
    let mut out = Vec::new();
    put_lp(&mut out, b"sealcred/v1 state");
    out.extend_from_slice(&version.to_be_bytes());
    put_lp(&mut out, suite.as_bytes());
    put_lp(&mut out, &binding.bytes());
    put_count(&mut out, entries.len());
    for (name, id) in entries {
        put_lp(&mut out, name.as_bytes());
        put_lp(&mut out, id);
    }
    out
}

/// Entry AAD: see "Entries" in docs/FORMAT.md.
pub fn entry_aad(
    version: u32,
    suite: &str,
    binding: &Binding,
    name: &str,
    data_key_id: &[u8; DATA_KEY_ID_LEN],
) -> Vec<u8> {
    let mut out = Vec::new();
    put_lp(&mut out, b"sealcred/v1 entry");
    out.extend_from_slice(&version.to_be_bytes());
    put_lp(&mut out, suite.as_bytes());
    put_lp(&mut out, &binding.bytes());
    put_lp(&mut out, name.as_bytes());
    put_lp(&mut out, data_key_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lp_encoding_has_no_ambiguity() {
        let a = Binding {
            scope: Scope::Strict,
            namespace: "ab".into(),
            name: "c".into(),
        };
        let b = Binding {
            scope: Scope::Strict,
            namespace: "a".into(),
            name: "bc".into(),
        };
        assert_ne!(a.bytes(), b.bytes());
        let mut x = Vec::new();
        put_lp(&mut x, b"strict");
        assert_eq!(&x[..4], &[0, 0, 0, 6]);
    }

    #[test]
    fn binding_drops_unbound_metadata() {
        let ns = Binding::new(Scope::NamespaceWide, Some("flyte"), Some("a")).unwrap();
        assert_eq!(ns.name, "");
        let cw = Binding::new(Scope::ClusterWide, None, None).unwrap();
        assert_eq!(cw.encryption_context().len(), 1);
        let st = Binding::new(Scope::Strict, Some("flyte"), Some("creds")).unwrap();
        let ctx = st.encryption_context();
        assert_eq!(ctx[CTX_NAMESPACE], "flyte");
        assert_eq!(ctx[CTX_NAME], "creds");
        assert_eq!(ctx[CTX_SCOPE], "strict");
        assert!(matches!(
            Binding::new(Scope::Strict, Some("flyte"), None),
            Err(FormatError::MissingMetadata { field: "name", .. })
        ));
    }

    #[test]
    fn cluster_binding_is_the_name_and_the_kind_never_a_namespace() {
        let c = Binding::new(Scope::Cluster, None, Some("flyte-task-env")).unwrap();
        let ctx = c.encryption_context();
        assert_eq!(ctx.len(), 3);
        assert_eq!(ctx[CTX_SCOPE], "cluster");
        assert_eq!(ctx[CTX_NAME], "flyte-task-env");
        assert_eq!(ctx[CTX_KIND], "ClusterSealedStorageCred");
        assert!(!ctx.contains_key(CTX_NAMESPACE));
        // An empty namespace is no namespace (how a cluster-scoped object reads).
        assert_eq!(
            Binding::new(Scope::Cluster, Some(""), Some("flyte-task-env")).unwrap(),
            c
        );
        assert_eq!(
            Binding::new(Scope::Cluster, Some("flyte"), Some("flyte-task-env")),
            Err(FormatError::ClusterScopeInNamespace)
        );
        assert!(matches!(
            Binding::new(Scope::Cluster, None, None),
            Err(FormatError::MissingMetadata { field: "name", .. })
        ));
        // The bytes differ from every namespaced scope's, whatever the metadata.
        let strict = Binding {
            scope: Scope::Strict,
            namespace: String::new(),
            name: "flyte-task-env".into(),
        };
        assert_ne!(c.bytes(), strict.bytes());
        let mut expect = Vec::new();
        for part in ["cluster", "", "flyte-task-env", "ClusterSealedStorageCred"] {
            put_lp(&mut expect, part.as_bytes());
        }
        assert_eq!(c.bytes(), expect);
    }

    #[test]
    fn caps_on_data_keys_and_wrappings() {
        use crate::crd::{SealedDataKey, Wrapping};
        let dk = |wrappings: usize| SealedDataKey {
            id: String::new(),
            commitment: String::new(),
            names: Vec::new(),
            supersedes: Vec::new(),
            wrappings: vec![
                Wrapping {
                    key_id: "local:0000000000000000".into(),
                    ciphertext: String::new(),
                };
                wrappings
            ],
            header_tag: String::new(),
            state_tag: None,
            sealed_at: None,
        };
        let spec = |dks: usize, wrappings: usize| SealedStorageCredSpec {
            format_version: FORMAT_VERSION,
            suite: SUITE_V1.into(),
            scope: Scope::Strict,
            template: SecretTemplate::default(),
            profile: None,
            data_keys: (0..dks).map(|_| dk(wrappings)).collect(),
            entries: BTreeMap::new(),
            sts: None,
        };
        check_limits(&spec(MAX_DATA_KEYS, MAX_WRAPPINGS)).unwrap();
        let e = check_limits(&spec(MAX_DATA_KEYS + 1, 1)).unwrap_err();
        assert!(
            matches!(&e, FormatError::BadField { field, .. } if field == "dataKeys"),
            "{e}"
        );
        let mut s = spec(3, 1);
        s.data_keys[2] = dk(MAX_WRAPPINGS + 1);
        let e = check_limits(&s).unwrap_err();
        assert!(
            matches!(&e, FormatError::BadField { field, .. } if field == "dataKeys[2].wrappings"),
            "{e}"
        );
        // parse refuses it before looking at any other field.
        assert_eq!(ParsedSpec::parse(&s).unwrap_err(), e);
    }

    #[test]
    fn entry_names() {
        for ok in ["access_key", "a.b-c_D9", ".dotfile"] {
            check_entry_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "ä", &"x".repeat(254)] {
            assert!(check_entry_name(bad).is_err(), "{bad}");
        }
    }
}
