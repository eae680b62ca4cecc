//! Sealing, merging, opening and rotating whole objects.
//!
//! Plaintext exists here only as [`SecretBytes`]: an input entry lives from the
//! caller's read until [`seal`] returns; an opened entry lives in [`Opened`]
//! until the caller drops it. Data keys live in [`DataKey`] for the duration of
//! one call.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;

use crate::crd::{
    Scope, SealedDataKey, SealedEntry, SealedStorageCred, SealedStorageCredSpec, SecretTemplate,
    Wrapping,
};
use crate::crypto::{DerivedKeys, random_id};
use crate::format::{
    self, Binding, DATA_KEY_ID_LEN, FORMAT_VERSION, FormatError, ParsedDataKey, ParsedSpec,
    ParsedWrapping, SECRET_SIZE_LIMIT, SUITE_V1, encode_b64,
};
use crate::keyring::Keyring;
use crate::provider::{KeyProvider, ProviderError, ProviderErrorKind};
use crate::secret::{DataKey, SecretBytes};

/// Why sealing or opening failed. Never carries plaintext.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object is malformed (structural check).
    #[error("{0}")]
    Format(#[from] FormatError),
    /// A key provider call failed.
    #[error("{0}")]
    Provider(#[from] ProviderError),
    /// A data key's commitment or header tag did not verify.
    #[error(
        "data key {id}: {what} does not verify — the object was edited after sealing (template, scope, keys or entry list) or it belongs to another namespace/name"
    )]
    HeaderAuth {
        /// The data key id.
        id: String,
        /// `key commitment`, `header tag` or `state tag (the entry list)`.
        what: &'static str,
    },
    /// An entry did not decrypt.
    #[error(
        "entry {name}: decryption failed — the value was tampered with, moved from another entry or object, or the scope/namespace/name changed"
    )]
    EntryAuth {
        /// The entry name.
        name: String,
    },
    /// Bad input to seal or merge.
    #[error("{0}")]
    Input(String),
}

impl Error {
    /// The controller's `Ready=False` reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Format(_) | Error::Input(_) => "InvalidSpec",
            Error::HeaderAuth { .. } | Error::EntryAuth { .. } => "DecryptFailed",
            Error::Provider(p) => match p.kind {
                ProviderErrorKind::Unavailable => "KmsUnavailable",
                ProviderErrorKind::AccessDenied => "AccessDenied",
                ProviderErrorKind::KeyDisabled => "KmsKeyDisabled",
                ProviderErrorKind::KeyPendingDeletion => "KmsKeyPendingDeletion",
                ProviderErrorKind::KeyInvalidState => "KmsKeyInvalidState",
                ProviderErrorKind::InvalidCiphertext => "DecryptFailed",
                ProviderErrorKind::KeyNotAllowed => "InvalidSpec",
                ProviderErrorKind::NotFound | ProviderErrorKind::Other => "KmsError",
            },
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Provider(p) if p.is_transient())
    }

    /// Whether a KMS key's state is the problem (disabled, pending deletion,
    /// another unusable state): someone must act in KMS, and a retry is what
    /// notices the fix (the controller backs off, then recovers on EnableKey
    /// without a restart).
    pub fn is_key_state(&self) -> bool {
        matches!(self, Error::Provider(p) if p.is_key_state())
    }
}

/// Everything needed to seal a new object.
#[derive(Debug)]
pub struct SealInput {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (required unless the scope is cluster-wide).
    pub namespace: Option<String>,
    /// The scope.
    pub scope: Scope,
    /// The Secret template.
    pub template: SecretTemplate,
    /// The profile that rendered the entries, if any.
    pub profile: Option<String>,
    /// The plaintext values.
    pub entries: BTreeMap<String, SecretBytes>,
}

/// An opened object: the Secret to write.
#[derive(Debug)]
pub struct Opened {
    /// The Secret's name (template name, or the object's name).
    pub secret_name: String,
    /// The template.
    pub template: SecretTemplate,
    /// The plaintext values, by name.
    pub entries: BTreeMap<String, SecretBytes>,
}

/// A sealed, merged, rotated or rewrapped object, and what the caller should
/// tell the user about its keys.
#[derive(Debug)]
pub struct Sealed {
    /// The object to write.
    pub object: SealedStorageCred,
    /// One line per thing worth saying about the keys: two given keys that are
    /// the same key (wrapped once), a key dropped by a re-seal. Never a value.
    pub notes: Vec<String>,
}

/// Which keys a merge or rotate wraps its new data key under.
pub enum Keys<'a> {
    /// Keys the user chose (`--kms`, a creation rule), in order: the first
    /// generates the data key.
    Given(&'a [&'a dyn KeyProvider]),
    /// Exactly the keys that wrap the object's newest data key, each once —
    /// used only after that data key has been verified with Decrypt (a key id
    /// in a file nobody verified is attacker-controlled). The keyring opens the
    /// data key and provides the keys.
    Recorded(&'a Keyring),
}

fn check_entries(entries: &BTreeMap<String, SecretBytes>) -> Result<(), Error> {
    if entries.is_empty() {
        return Err(Error::Input("nothing to seal: no entries given".into()));
    }
    let mut total = 0;
    for (name, v) in entries {
        format::check_entry_name(name)?;
        total += name.len() + v.len();
    }
    if total > SECRET_SIZE_LIMIT {
        return Err(Error::Input(format!(
            "the Secret would be {total} bytes, over Kubernetes' {SECRET_SIZE_LIMIT}-byte limit"
        )));
    }
    Ok(())
}

fn binding_of(meta: &ObjectMeta, scope: Scope) -> Result<Binding, Error> {
    Ok(Binding::new(
        scope,
        meta.namespace.as_deref(),
        meta.name.as_deref(),
    )?)
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Makes one data key, wraps it under every provider (the first generates it),
/// and seals `entries` under it. Two providers that turn out to be the same key
/// (an alias and its ARN: KMS answers with the same key ARN) give one wrapping
/// and a note.
async fn seal_group(
    spec: &SealedStorageCredSpec,
    binding: &Binding,
    providers: &[&dyn KeyProvider],
    entries: &BTreeMap<String, SecretBytes>,
    survivors: &BTreeMap<String, [u8; DATA_KEY_ID_LEN]>,
    supersedes: Vec<String>,
    notes: &mut Vec<String>,
) -> Result<(SealedDataKey, BTreeMap<String, SealedEntry>), Error> {
    if providers.len() > crate::crd::MAX_WRAPPINGS {
        return Err(Error::Input(format!(
            "{} keys given; a data key takes at most {} wrappings",
            providers.len(),
            crate::crd::MAX_WRAPPINGS
        )));
    }
    let (first, rest) = providers
        .split_first()
        .ok_or_else(|| Error::Input("no key to seal with".into()))?;
    let ctx = binding.encryption_context();
    let generated = first.generate_data_key(&ctx).await?;
    let dk: DataKey = generated.key;
    let mut wrappings = vec![ParsedWrapping {
        key_id: generated.key_id,
        ciphertext: generated.ciphertext,
    }];
    let mut given = vec![first.name()];
    for p in rest {
        let (key_id, ciphertext) = p.wrap(&dk, &ctx).await?;
        if let Some(i) = wrappings.iter().position(|w| w.key_id == key_id) {
            notes.push(format!(
                "{} and {} are the same key ({key_id}): wrapped once",
                given[i],
                p.name()
            ));
            continue;
        }
        given.push(p.name());
        wrappings.push(ParsedWrapping { key_id, ciphertext });
    }
    seal_with_key(
        spec, binding, &dk, wrappings, entries, survivors, supersedes,
    )
}

fn seal_with_key(
    spec: &SealedStorageCredSpec,
    binding: &Binding,
    dk: &DataKey,
    wrappings: Vec<ParsedWrapping>,
    entries: &BTreeMap<String, SecretBytes>,
    survivors: &BTreeMap<String, [u8; DATA_KEY_ID_LEN]>,
    mut supersedes: Vec<String>,
) -> Result<(SealedDataKey, BTreeMap<String, SealedEntry>), Error> {
    supersedes.sort();
    supersedes.dedup();
    let id = random_id();
    let keys = DerivedKeys::derive(dk, &id);
    let parsed = ParsedDataKey {
        id_b64: encode_b64(&id),
        id,
        commitment: keys.commitment(),
        names: entries.keys().cloned().collect(),
        supersedes,
        wrappings,
        header_tag: [0; 32],
        state_tag: None,
    };
    let header = format::header_bytes(
        FORMAT_VERSION,
        SUITE_V1,
        binding,
        &spec.template,
        spec.profile.as_deref(),
        &parsed,
    );
    let tag = keys.header_tag(&header);
    // The whole entry list after this seal: the survivors, then ours.
    let mut state: BTreeMap<&str, &[u8; DATA_KEY_ID_LEN]> =
        survivors.iter().map(|(n, i)| (n.as_str(), i)).collect();
    for name in entries.keys() {
        state.insert(name.as_str(), &id);
    }
    let state_tag = keys.header_tag(&format::state_bytes(
        FORMAT_VERSION,
        SUITE_V1,
        binding,
        state.into_iter(),
    ));
    let mut sealed = BTreeMap::new();
    for (name, value) in entries {
        let aad = format::entry_aad(FORMAT_VERSION, SUITE_V1, binding, name, &id);
        let (nonce, ct) = keys.seal(&aad, value);
        sealed.insert(
            name.clone(),
            SealedEntry {
                data_key: parsed.id_b64.clone(),
                nonce: encode_b64(&nonce),
                ciphertext: encode_b64(&ct),
            },
        );
    }
    let group = SealedDataKey {
        id: parsed.id_b64.clone(),
        commitment: encode_b64(&parsed.commitment),
        names: parsed.names,
        supersedes: parsed.supersedes,
        wrappings: parsed
            .wrappings
            .into_iter()
            .map(|w| Wrapping {
                key_id: w.key_id,
                ciphertext: encode_b64(&w.ciphertext),
            })
            .collect(),
        header_tag: encode_b64(&tag),
        state_tag: Some(encode_b64(&state_tag)),
        sealed_at: Some(now_rfc3339()),
    };
    Ok((group, sealed))
}

/// Seals a new object under a fresh data key from the first provider, wrapped
/// also under the others (any one of them can unseal).
pub async fn seal(input: &SealInput, providers: &[&dyn KeyProvider]) -> Result<Sealed, Error> {
    format::check_object_name("name", &input.name)?;
    if let Some(ns) = &input.namespace {
        format::check_object_name("namespace", ns)?;
    }
    if let Some(n) = &input.template.name {
        format::check_object_name("template name", n)?;
    }
    check_entries(&input.entries)?;
    let mut obj = SealedStorageCred::new(
        &input.name,
        SealedStorageCredSpec {
            format_version: FORMAT_VERSION,
            suite: SUITE_V1.to_string(),
            scope: input.scope,
            template: input.template.clone(),
            profile: input.profile.clone(),
            data_keys: Vec::new(),
            entries: BTreeMap::new(),
            sts: None,
        },
    );
    obj.metadata.namespace = input.namespace.clone();
    let binding = binding_of(&obj.metadata, input.scope)?;
    let mut notes = Vec::new();
    let (group, entries) = seal_group(
        &obj.spec,
        &binding,
        providers,
        &input.entries,
        &BTreeMap::new(),
        Vec::new(),
        &mut notes,
    )
    .await?;
    obj.spec.data_keys.push(group);
    obj.spec.entries = entries;
    format::check_limits(&obj.spec)?;
    Ok(Sealed { object: obj, notes })
}

/// Adds or replaces entries: the new entries go under a new data key that
/// supersedes the existing ones; every other entry and data key stays
/// byte-for-byte as it was.
///
/// With [`Keys::Given`] nothing is decrypted: the caller chose the keys, and
/// must have confirmed the binding (namespace, name, scope) the file's metadata
/// claims against the user's flags or creation rule — it is not authenticated
/// here. With [`Keys::Recorded`] the newest data key is verified first
/// ([`verify_head`], one Decrypt), and its keys are used.
pub async fn merge(
    existing: &SealedStorageCred,
    entries: &BTreeMap<String, SecretBytes>,
    keys: Keys<'_>,
) -> Result<Sealed, Error> {
    let parsed = ParsedSpec::parse(&existing.spec)?;
    check_entries(entries)?;
    let binding = binding_of(&existing.metadata, parsed.scope)?;
    let mut notes = Vec::new();
    let recorded;
    let providers: Vec<&dyn KeyProvider> = match keys {
        Keys::Given(p) => p.to_vec(),
        Keys::Recorded(keyring) => {
            let ids = verify_head(existing, keyring).await?;
            recorded = providers_for_ids(keyring, &ids).await?;
            recorded.iter().map(|p| p.as_ref()).collect()
        }
    };
    let supersedes: Vec<String> = parsed.data_keys.iter().map(|d| d.id_b64.clone()).collect();
    let survivors: BTreeMap<String, [u8; DATA_KEY_ID_LEN]> = parsed
        .entries
        .iter()
        .filter(|(n, _)| !entries.contains_key(*n))
        .map(|(n, e)| (n.clone(), parsed.data_keys[e.data_key].id))
        .collect();
    let (group, sealed) = seal_group(
        &existing.spec,
        &binding,
        &providers,
        entries,
        &survivors,
        supersedes,
        &mut notes,
    )
    .await?;
    let mut out = existing.clone();
    out.status = None;
    for (name, e) in sealed {
        out.spec.entries.insert(name, e);
    }
    out.spec.data_keys.push(group);
    let live: std::collections::BTreeSet<&String> =
        out.spec.entries.values().map(|e| &e.data_key).collect();
    let keep: Vec<SealedDataKey> = out
        .spec
        .data_keys
        .iter()
        .filter(|d| live.contains(&d.id))
        .cloned()
        .collect();
    out.spec.data_keys = keep;
    // What a reader would refuse is never written (a 33rd data key, say).
    format::check_limits(&out.spec)?;
    Ok(Sealed { object: out, notes })
}

/// Providers for exactly these key ids, each once, in order.
async fn providers_for_ids(
    keyring: &Keyring,
    ids: &[String],
) -> Result<Vec<std::sync::Arc<dyn KeyProvider>>, Error> {
    let mut out = Vec::with_capacity(ids.len());
    let mut seen: Vec<&str> = Vec::new();
    for id in ids {
        if seen.contains(&id.as_str()) {
            continue;
        }
        seen.push(id);
        out.push(keyring.provider_for_sealing(id).await?);
    }
    if out.is_empty() {
        return Err(Error::Input("the object records no key; pass --kms".into()));
    }
    Ok(out)
}

/// Verifies the object's newest data key — one unwrap (trying its allowed
/// wrappings in order), the key commitment, its header tag (binding, scope,
/// template, profile, its wrappings) and the state tag (the entry list) — and
/// returns the key ids of its wrappings, which are then authentic. No entry is
/// decrypted.
pub async fn verify_head(obj: &SealedStorageCred, keyring: &Keyring) -> Result<Vec<String>, Error> {
    let parsed = ParsedSpec::parse(&obj.spec)?;
    let binding = binding_of(&obj.metadata, parsed.scope)?;
    let head = &parsed.data_keys[parsed.head];
    keyring.check_allowed(std::slice::from_ref(head))?;
    let data_key = keyring.unwrap(&binding, head).await?;
    let keys = verify_data_key(&parsed, &binding, parsed.head, &data_key)?;
    drop(data_key);
    check_state_tag(&parsed, &binding, &keys)?;
    Ok(head.wrappings.iter().map(|w| w.key_id.clone()).collect())
}

fn check_state_tag(
    parsed: &ParsedSpec,
    binding: &Binding,
    head_keys: &DerivedKeys,
) -> Result<(), Error> {
    let head = &parsed.data_keys[parsed.head];
    let state_tag = head.state_tag.as_ref().expect("checked by parse");
    head_keys
        .check_header_tag(&parsed.state_bytes(binding), state_tag)
        .map_err(|_| Error::HeaderAuth {
            id: head.id_b64.clone(),
            what: "state tag (the entry list)",
        })
}

/// Key ids that wrap the same data key more than once (a file damaged by the
/// re-seal bug of issue 19, or edited): `(data key id, key id)` pairs.
pub fn duplicate_wrappings(obj: &SealedStorageCred) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for d in &obj.spec.data_keys {
        for (i, w) in d.wrappings.iter().enumerate() {
            let first = d.wrappings.iter().position(|v| v.key_id == w.key_id);
            let reported = out
                .iter()
                .any(|(dk, k): &(String, String)| *dk == d.id && *k == w.key_id);
            if first != Some(i) && !reported {
                out.push((d.id.clone(), w.key_id.clone()));
            }
        }
    }
    out
}

/// Verifies and decrypts every entry. Nothing is returned unless everything
/// verifies: version and suite, structure, allowlist (before any KMS call),
/// then per data key the unwrap (with the EncryptionContext rebuilt from the
/// object's own metadata), the key commitment, the header tag, and each entry.
pub async fn open(obj: &SealedStorageCred, keyring: &Keyring) -> Result<Opened, Error> {
    open_observed(obj, keyring, &mut |_| {}).await
}

/// [`open`], reporting each key-provider call to `on_call` (see
/// [`Keyring::unwrap_observed`]).
pub async fn open_observed(
    obj: &SealedStorageCred,
    keyring: &Keyring,
    on_call: &mut (dyn FnMut(&crate::keyring::UnwrapCall<'_>) + Send),
) -> Result<Opened, Error> {
    let parsed = ParsedSpec::parse(&obj.spec)?;
    let binding = binding_of(&obj.metadata, parsed.scope)?;
    keyring.check_allowed(&parsed.data_keys)?;
    let mut keys = Vec::with_capacity(parsed.data_keys.len());
    for (i, dk) in parsed.data_keys.iter().enumerate() {
        let data_key = keyring.unwrap_observed(&binding, dk, on_call).await?;
        keys.push(verify_data_key(&parsed, &binding, i, &data_key)?);
    }
    check_state_tag(&parsed, &binding, &keys[parsed.head])?;
    let mut entries = BTreeMap::new();
    for (name, e) in &parsed.entries {
        let aad = parsed.entry_aad(&binding, name);
        let value = keys[e.data_key]
            .open(&aad, &e.nonce, &e.ciphertext, &e.tag)
            .map_err(|_| Error::EntryAuth { name: name.clone() })?;
        entries.insert(name.clone(), value);
    }
    let secret_name = parsed
        .template
        .name
        .clone()
        .or_else(|| obj.metadata.name.clone())
        .unwrap_or_default();
    Ok(Opened {
        secret_name,
        template: parsed.template,
        entries,
    })
}

fn verify_data_key(
    parsed: &ParsedSpec,
    binding: &Binding,
    i: usize,
    data_key: &DataKey,
) -> Result<DerivedKeys, Error> {
    let dk = &parsed.data_keys[i];
    let keys = DerivedKeys::derive(data_key, &dk.id);
    keys.check_commitment(&dk.commitment)
        .map_err(|_| Error::HeaderAuth {
            id: dk.id_b64.clone(),
            what: "key commitment",
        })?;
    keys.check_header_tag(&parsed.header_bytes(binding, i), &dk.header_tag)
        .map_err(|_| Error::HeaderAuth {
            id: dk.id_b64.clone(),
            what: "header tag",
        })?;
    Ok(keys)
}

/// Re-seals every entry under one fresh data key. Metadata, scope, template
/// and profile are kept. With [`Keys::Recorded`] the new data key is wrapped by
/// exactly the keys that wrapped the newest one (authentic: [`open`] verified
/// every header first); a key that wrapped only older data keys is not kept,
/// and a note says so.
pub async fn rotate(
    obj: &SealedStorageCred,
    keyring: &Keyring,
    keys: Keys<'_>,
) -> Result<Sealed, Error> {
    rotate_changed(obj, keyring, keys, &BTreeMap::new(), &[]).await
}

/// [`rotate`] with changed entries: `upserts` added or replaced and `removals`
/// dropped, every entry then sealed under one fresh data key (removing an
/// entry needs a new head over the whole entry list, so nothing is kept).
pub async fn rotate_changed(
    obj: &SealedStorageCred,
    keyring: &Keyring,
    keys: Keys<'_>,
    upserts: &BTreeMap<String, SecretBytes>,
    removals: &[String],
) -> Result<Sealed, Error> {
    let mut opened = open(obj, keyring).await?;
    for name in removals {
        opened.entries.remove(name);
    }
    for (name, value) in upserts {
        opened
            .entries
            .insert(name.clone(), SecretBytes::copy_from(value.expose()));
    }
    check_entries(&opened.entries)?;
    let mut notes = Vec::new();
    let recorded;
    let providers: Vec<&dyn KeyProvider> = match keys {
        Keys::Given(p) => p.to_vec(),
        Keys::Recorded(sealing) => {
            let parsed = ParsedSpec::parse(&obj.spec)?;
            let head = &parsed.data_keys[parsed.head];
            let ids: Vec<String> = head.wrappings.iter().map(|w| w.key_id.clone()).collect();
            let mut older: Vec<&str> = Vec::new();
            for d in &parsed.data_keys {
                for w in &d.wrappings {
                    if !ids.contains(&w.key_id) && !older.contains(&w.key_id.as_str()) {
                        older.push(&w.key_id);
                    }
                }
            }
            for k in older {
                notes.push(format!(
                    "{k} wrapped older data keys but not the newest: the rotated object is not wrapped by it (pass --kms to choose the keys)"
                ));
            }
            recorded = providers_for_ids(sealing, &ids).await?;
            recorded.iter().map(|p| p.as_ref()).collect()
        }
    };
    let mut out = obj.clone();
    out.status = None;
    let binding = binding_of(&obj.metadata, obj.spec.scope)?;
    let (group, entries) = seal_group(
        &obj.spec,
        &binding,
        &providers,
        &opened.entries,
        &BTreeMap::new(),
        Vec::new(),
        &mut notes,
    )
    .await?;
    out.spec.data_keys = vec![group];
    out.spec.entries = entries;
    format::check_limits(&out.spec)?;
    Ok(Sealed { object: out, notes })
}

/// Changes which keys wrap each data key, without touching any entry: every
/// data key is unwrapped (any one working wrapping suffices), wrapped under
/// each key in `add` that does not wrap it yet, stripped of the wrappings whose
/// key id is in `remove`, and its header tag recomputed. Fails if a data key
/// would be left with no wrapping.
pub async fn rewrap(
    obj: &SealedStorageCred,
    keyring: &Keyring,
    add: &[&dyn KeyProvider],
    remove: &[String],
) -> Result<Sealed, Error> {
    let parsed = ParsedSpec::parse(&obj.spec)?;
    let binding = binding_of(&obj.metadata, parsed.scope)?;
    keyring.check_allowed(&parsed.data_keys)?;
    let ctx = binding.encryption_context();
    let mut out = obj.clone();
    out.status = None;
    let mut notes = Vec::new();
    for (i, dk) in parsed.data_keys.iter().enumerate() {
        let data_key = keyring.unwrap(&binding, dk).await?;
        verify_data_key(&parsed, &binding, i, &data_key)?;
        let mut wrappings: Vec<ParsedWrapping> = dk
            .wrappings
            .iter()
            .filter(|w| !remove.contains(&w.key_id))
            .cloned()
            .collect();
        // Duplicates already in the file (damaged by an older re-seal) go too.
        let mut seen: Vec<String> = Vec::new();
        wrappings.retain(|w| {
            let first = !seen.contains(&w.key_id);
            seen.push(w.key_id.clone());
            first
        });
        for p in add {
            let (key_id, ciphertext) = p.wrap(&data_key, &ctx).await?;
            if wrappings.iter().any(|w| w.key_id == key_id) {
                let note = format!(
                    "{} ({key_id}) already wraps the data keys: not added twice",
                    p.name()
                );
                if !notes.contains(&note) {
                    notes.push(note);
                }
                continue;
            }
            wrappings.push(ParsedWrapping { key_id, ciphertext });
        }
        if wrappings.is_empty() {
            return Err(Error::Input(format!(
                "data key {} would have no wrapping key left; add one with --add-kms before removing the last",
                dk.id_b64
            )));
        }
        let mut updated = dk.clone();
        updated.wrappings = wrappings;
        let keys = DerivedKeys::derive(&data_key, &dk.id);
        let header = format::header_bytes(
            parsed.version,
            &parsed.suite,
            &binding,
            &parsed.template,
            parsed.profile.as_deref(),
            &updated,
        );
        let target = &mut out.spec.data_keys[i];
        target.header_tag = encode_b64(&keys.header_tag(&header));
        target.wrappings = updated
            .wrappings
            .into_iter()
            .map(|w| Wrapping {
                key_id: w.key_id,
                ciphertext: encode_b64(&w.ciphertext),
            })
            .collect();
    }
    format::check_limits(&out.spec)?;
    Ok(Sealed { object: out, notes })
}
