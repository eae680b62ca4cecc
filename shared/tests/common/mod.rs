//! Helpers shared by the format tests (`vectors.rs`, `gen_vectors.rs`, `tamper.rs`).
//!
//! Besides sealing and opening through the library, this module holds an
//! *independent* decryptor ([`independent_open`]) written from `docs/FORMAT.md`
//! with nothing but the raw primitives (AES-256-GCM, HKDF-SHA512, HMAC-SHA256):
//! if it and `seal::open` agree on every vector, the specification is complete.
#![allow(dead_code)]

pub mod tamper_cases;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use hmac::Mac;
use sha2::{Digest, Sha256, Sha512};

use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use sealcred_shared::Error;
use sealcred_shared::crd::{Scope, SealedStorageCred, SecretTemplate};
use sealcred_shared::keyring::{Allowlist, Keyring};
use sealcred_shared::provider::local::LocalKey;
use sealcred_shared::provider::rsa::{self, RsaPublicKey};
use sealcred_shared::provider::{
    EncryptionContext, GeneratedKey, KeyProvider, ProviderError, ProviderErrorKind,
};
use sealcred_shared::seal::{self, Opened, SealInput};
use sealcred_shared::secret::DataKey;
use sealcred_shared::secret::SecretBytes;

/// The fixed, public, TEST-ONLY key the vectors are sealed with: bytes 0x00..=0x1f.
pub const TEST_KEY_BYTES: [u8; 32] = {
    let mut k = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        k[i] = i as u8;
        i += 1;
    }
    k
};

/// Name of the test-only key file inside the vectors directory.
pub const TEST_KEY_FILE: &str = "TEST-ONLY-DO-NOT-USE.local.key";

/// `shared/tests/vectors`.
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// The key file's content for [`TEST_KEY_BYTES`].
pub fn test_key_file_text() -> String {
    format!(
        "sealcred-local-key-v1:{}\n",
        STANDARD.encode(TEST_KEY_BYTES)
    )
}

/// The error class written in `.expect` files and checked by the tamper matrix:
/// `seal::Error::reason()` followed by the variant (and sub-kind).
pub fn class(e: &Error) -> String {
    use sealcred_shared::format::FormatError as F;
    let detail = match e {
        Error::Format(f) => match f {
            F::UnsupportedVersion(_) => "Format.UnsupportedVersion",
            F::UnknownSuite(_) => "Format.UnknownSuite",
            F::BadField { .. } => "Format.BadField",
            F::InvalidName { .. } => "Format.InvalidName",
            F::Inconsistent(_) => "Format.Inconsistent",
            F::MissingMetadata { .. } => "Format.MissingMetadata",
            F::ClusterScopeInNamespace => "Format.ClusterScopeInNamespace",
        }
        .to_string(),
        Error::Provider(p) => format!(
            "Provider.{}",
            match p.kind {
                ProviderErrorKind::AccessDenied => "AccessDenied",
                ProviderErrorKind::KeyDisabled => "KeyDisabled",
                ProviderErrorKind::KeyPendingDeletion => "KeyPendingDeletion",
                ProviderErrorKind::KeyInvalidState => "KeyInvalidState",
                ProviderErrorKind::Unavailable => "Unavailable",
                ProviderErrorKind::InvalidCiphertext => "InvalidCiphertext",
                ProviderErrorKind::NotFound => "NotFound",
                ProviderErrorKind::KeyNotAllowed => "KeyNotAllowed",
                ProviderErrorKind::Other => "Other",
            }
        ),
        Error::HeaderAuth { what, .. } => match *what {
            "key commitment" => "HeaderAuth.Commitment".to_string(),
            "header tag" => "HeaderAuth.HeaderTag".to_string(),
            "state tag (the entry list)" => "HeaderAuth.StateTag".to_string(),
            other => format!("HeaderAuth.Unknown({other})"),
        },
        Error::EntryAuth { .. } => "EntryAuth".to_string(),
        Error::Input(_) => "Input".to_string(),
    };
    format!("{} {detail}", e.reason())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (hex) of the lines `name=value\n`, in byte-wise name order.
pub fn digest_entries<'a>(entries: impl IntoIterator<Item = (&'a String, &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (name, value) in entries {
        h.update(name.as_bytes());
        h.update(b"=");
        h.update(value);
        h.update(b"\n");
    }
    hex(&h.finalize())
}

/// [`digest_entries`] of an opened object.
pub fn digest_opened(o: &Opened) -> String {
    digest_entries(o.entries.iter().map(|(k, v)| (k, v.expose())))
}

/// The TEST-ONLY RSA key pair's files inside the vectors directory: the
/// private key (PKCS#8 PEM, public, for opening vectors only) and its
/// public-key file as `sealcred pubkey` writes it.
pub const TEST_RSA_KEY_FILE: &str = "TEST-ONLY-DO-NOT-USE.rsa-2048.pem";
/// See [`TEST_RSA_KEY_FILE`].
pub const TEST_PUBKEY_FILE: &str = "TEST-ONLY-DO-NOT-USE.rsa-2048.pubkey";
/// The (made-up) key ARN the test RSA key pair stands for.
pub const TEST_RSA_ARN: &str =
    "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-0000000000aa";

/// The PKCS#8 DER of the test RSA private key.
pub fn test_rsa_pkcs8() -> Vec<u8> {
    let pem = std::fs::read_to_string(vectors_dir().join(TEST_RSA_KEY_FILE)).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

/// The test RSA public key, loaded from its public-key file.
pub fn test_rsa_public() -> RsaPublicKey {
    RsaPublicKey::load(&vectors_dir().join(TEST_PUBKEY_FILE)).expect("test public-key file")
}

/// Stands in for KMS Decrypt of RSA wrappings under [`TEST_RSA_ARN`]: RSA-OAEP
/// with the test private key, then the library's binding check.
pub struct TestRsaKms(OaepPrivateDecryptingKey);

impl TestRsaKms {
    /// From the test key file.
    pub fn load() -> Self {
        let k = PrivateDecryptingKey::from_pkcs8(&test_rsa_pkcs8()).unwrap();
        TestRsaKms(OaepPrivateDecryptingKey::new(k).unwrap())
    }
}

#[async_trait::async_trait]
impl KeyProvider for TestRsaKms {
    fn name(&self) -> String {
        "test RSA KMS".into()
    }
    fn handles(&self, key_id: &str) -> bool {
        key_id == rsa::key_id_for(TEST_RSA_ARN)
    }
    async fn generate_data_key(
        &self,
        _: &EncryptionContext,
    ) -> Result<GeneratedKey, ProviderError> {
        unreachable!("the test RSA KMS only decrypts")
    }
    async fn wrap(
        &self,
        _: &DataKey,
        _: &EncryptionContext,
    ) -> Result<(String, Vec<u8>), ProviderError> {
        unreachable!("the test RSA KMS only decrypts")
    }
    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        rsa::check_ciphertext_len(key_id, ciphertext.len())?;
        let mut out = vec![0u8; 512];
        let plain = self
            .0
            .decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, &mut out, None)
            .map_err(|_| {
                ProviderError::new(
                    ProviderErrorKind::InvalidCiphertext,
                    "RSA-OAEP decryption failed",
                )
            })?;
        rsa::open_plaintext(key_id, ctx, plain)
    }
}

/// A keyring that accepts every key id and uses the local key at `path`, and
/// the test RSA key for [`TEST_RSA_ARN`] wrappings.
pub fn keyring(path: &Path) -> Keyring {
    Keyring::new(Allowlist::any(), Some(path.to_path_buf())).with_provider(
        &rsa::key_id_for(TEST_RSA_ARN),
        std::sync::Arc::new(TestRsaKms::load()),
    )
}

/// Opens with a fresh keyring on `key`.
pub async fn open(obj: &SealedStorageCred, key: &Path) -> Result<Opened, Error> {
    seal::open(obj, &keyring(key)).await
}

/// Plain-text entries as `SecretBytes`.
pub fn entries(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretBytes> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), SecretBytes::copy_from(v.as_bytes())))
        .collect()
}

/// A seal input.
pub fn input(
    name: &str,
    namespace: &str,
    scope: Scope,
    template: SecretTemplate,
    profile: Option<&str>,
    pairs: &[(&str, &str)],
) -> SealInput {
    SealInput {
        name: name.into(),
        namespace: Some(namespace.into()),
        scope,
        template,
        profile: profile.map(str::to_string),
        entries: entries(pairs),
    }
}

/// An `Opaque` template with no name, labels or annotations.
pub fn opaque() -> SecretTemplate {
    SecretTemplate {
        type_: "Opaque".into(),
        ..Default::default()
    }
}

/// Seals with the local key at `key`.
pub async fn seal_local(input: &SealInput, key: &Path) -> SealedStorageCred {
    let k = LocalKey::load(key).expect("load local key");
    seal::seal(input, &[&k]).await.expect("seal").object
}

/// Merges with the local key at `key`.
pub async fn merge_local(
    obj: &SealedStorageCred,
    pairs: &[(&str, &str)],
    key: &Path,
) -> SealedStorageCred {
    let k = LocalKey::load(key).expect("load local key");
    seal::merge(obj, &entries(pairs), seal::Keys::Given(&[&k]))
        .await
        .expect("merge")
        .object
}

/// YAML, as the CLI writes it.
pub fn to_yaml(obj: &SealedStorageCred) -> String {
    serde_saphyr::to_string(obj).expect("render YAML")
}

/// Parses YAML as the CLI does (through a JSON value).
pub fn from_yaml(text: &str) -> SealedStorageCred {
    let v: serde_json::Value = serde_saphyr::from_str(text).expect("parse YAML");
    serde_json::from_value(v).expect("a SealedStorageCred")
}

// ---------------------------------------------------------------------------
// The independent decryptor: docs/FORMAT.md, written out with raw primitives.
// ---------------------------------------------------------------------------

fn lp(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_be_bytes());
}

fn b64(s: &str) -> Vec<u8> {
    STANDARD.decode(s).expect("base64")
}

/// One entry's (name, AAD, nonce, plaintext).
pub type EntryTrace = (String, Vec<u8>, Vec<u8>, Vec<u8>);

/// Intermediate values of a decryption, for the worked example.
#[derive(Debug, Default)]
pub struct Trace {
    /// `scope_binding` bytes.
    pub binding: Vec<u8>,
    /// Canonical EncryptionContext bytes.
    pub context: Vec<u8>,
    /// The local wrap AAD.
    pub wrap_aad: Vec<u8>,
    /// Per data key, in object order.
    pub keys: Vec<KeyTrace>,
    /// Per entry: (name, AAD, nonce, plaintext).
    pub entries: Vec<EntryTrace>,
    /// Index of the head: the one data key no other lists in `supersedes`.
    pub head: usize,
    /// Canonical state bytes (the whole entry list).
    pub state: Vec<u8>,
    /// HMAC-SHA256(head's header key, state bytes).
    pub state_tag: Vec<u8>,
}

/// Intermediate values of one data key.
#[derive(Debug, Default)]
pub struct KeyTrace {
    /// Data-key id (HKDF salt).
    pub id: Vec<u8>,
    /// The unwrapped data key.
    pub data_key: Vec<u8>,
    /// HKDF output "value key".
    pub value_key: Vec<u8>,
    /// HKDF output "header key".
    pub header_key: Vec<u8>,
    /// HKDF output "commitment".
    pub commitment: Vec<u8>,
    /// Canonical header bytes.
    pub header: Vec<u8>,
    /// HMAC-SHA256(header key, header).
    pub header_tag: Vec<u8>,
}

/// Decrypts a valid object with the local key `kek`, using only the
/// specification. Panics on any failure (it is only run on valid vectors).
pub fn independent_open(
    obj: &SealedStorageCred,
    kek: &[u8; 32],
) -> (BTreeMap<String, Vec<u8>>, Trace) {
    let s = &obj.spec;
    assert_eq!(s.format_version, 1);
    assert_eq!(s.suite, "AES256GCM-HKDFSHA512-COMMIT");
    let scope = s.scope.as_str();
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let (ns, name) = match scope {
        "strict" => (ns, name),
        "namespace-wide" => (ns, String::new()),
        "cluster" => {
            assert!(ns.is_empty(), "scope cluster has no namespace");
            (String::new(), name)
        }
        _ => (String::new(), String::new()),
    };
    let mut t = Trace::default();
    lp(&mut t.binding, scope.as_bytes());
    lp(&mut t.binding, ns.as_bytes());
    lp(&mut t.binding, name.as_bytes());
    if scope == "cluster" {
        lp(&mut t.binding, b"ClusterSealedStorageCred");
    }

    // EncryptionContext, sorted by key: kind < name < namespace < scope.
    let mut ctx: Vec<(&str, &str)> = Vec::new();
    if scope == "cluster" {
        ctx.push(("sealcred.io/kind", "ClusterSealedStorageCred"));
    }
    if !name.is_empty() {
        ctx.push(("sealcred.io/name", &name));
    }
    if !ns.is_empty() {
        ctx.push(("sealcred.io/namespace", &ns));
    }
    ctx.push(("sealcred.io/scope", scope));
    count(&mut t.context, ctx.len());
    for (k, v) in &ctx {
        lp(&mut t.context, k.as_bytes());
        lp(&mut t.context, v.as_bytes());
    }

    // Local key id and wrap AAD.
    let mut fp = Sha256::new();
    fp.update(b"sealcred local key id");
    fp.update(kek);
    let key_id = format!("local:{}", hex(&fp.finalize()[..8]));
    lp(&mut t.wrap_aad, b"sealcred/v1 local wrap");
    lp(&mut t.wrap_aad, key_id.as_bytes());
    lp(&mut t.wrap_aad, &t.context);

    let mut template = Vec::new();
    lp(
        &mut template,
        s.template.name.as_deref().unwrap_or("").as_bytes(),
    );
    lp(&mut template, s.template.type_.as_bytes());
    for map in [&s.template.labels, &s.template.annotations] {
        count(&mut template, map.len());
        for (k, v) in map {
            lp(&mut template, k.as_bytes());
            lp(&mut template, v.as_bytes());
        }
    }

    let mut value_keys = BTreeMap::new();
    for dk in &s.data_keys {
        let rsa_id = format!("rsaes-oaep-sha256:{TEST_RSA_ARN}");
        let data_key = if let Some(w) = dk.wrappings.iter().find(|w| w.key_id == key_id) {
            let wrapped = b64(&w.ciphertext);
            assert_eq!(wrapped.len(), 12 + 32 + 16);
            let kek_cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*kek));
            let nonce: [u8; 12] = wrapped[..12].try_into().unwrap();
            kek_cipher
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: &wrapped[12..],
                        aad: &t.wrap_aad,
                    },
                )
                .expect("unwrap")
        } else {
            // RSA wrapping (FORMAT.md, "RSA wrapping"): OAEP-SHA-256 with the
            // private key, then data key ‖ SHA-256(lp(label) ‖ lp(ARN) ‖ lp(map(ctx))).
            let w = dk
                .wrappings
                .iter()
                .find(|w| w.key_id == rsa_id)
                .expect("a local or test RSA wrapping");
            let wrapped = b64(&w.ciphertext);
            assert_eq!(wrapped.len(), 256);
            let k = OaepPrivateDecryptingKey::new(
                PrivateDecryptingKey::from_pkcs8(&test_rsa_pkcs8()).unwrap(),
            )
            .unwrap();
            let mut out = vec![0u8; 256];
            let plain = k
                .decrypt(&OAEP_SHA256_MGF1SHA256, &wrapped, &mut out, None)
                .expect("RSA-OAEP")
                .to_vec();
            assert_eq!(plain.len(), 64);
            let mut b = Vec::new();
            lp(&mut b, b"sealcred/v1 rsa wrap");
            lp(&mut b, TEST_RSA_ARN.as_bytes());
            lp(&mut b, &t.context);
            assert_eq!(
                &plain[32..],
                Sha256::digest(&b).as_slice(),
                "RSA binding check"
            );
            plain[..32].to_vec()
        };
        let id = b64(&dk.id);
        let hk = Hkdf::<Sha512>::new(Some(&id), &data_key);
        let mut kt = KeyTrace {
            id: id.clone(),
            data_key: data_key.clone(),
            value_key: vec![0; 32],
            header_key: vec![0; 32],
            commitment: vec![0; 32],
            ..Default::default()
        };
        hk.expand(
            b"sealcred/v1 AES256GCM-HKDFSHA512-COMMIT value key",
            &mut kt.value_key,
        )
        .unwrap();
        hk.expand(
            b"sealcred/v1 AES256GCM-HKDFSHA512-COMMIT header key",
            &mut kt.header_key,
        )
        .unwrap();
        hk.expand(
            b"sealcred/v1 AES256GCM-HKDFSHA512-COMMIT commitment",
            &mut kt.commitment,
        )
        .unwrap();
        assert_eq!(kt.commitment, b64(&dk.commitment), "commitment");

        let h = &mut kt.header;
        lp(h, b"sealcred/v1 header");
        h.extend_from_slice(&s.format_version.to_be_bytes());
        lp(h, s.suite.as_bytes());
        lp(h, &t.binding);
        lp(h, &template);
        lp(h, s.profile.as_deref().unwrap_or("").as_bytes());
        lp(h, &id);
        lp(h, &kt.commitment);
        count(h, dk.names.len());
        for n in &dk.names {
            lp(h, n.as_bytes());
        }
        count(h, dk.supersedes.len());
        for x in &dk.supersedes {
            lp(h, x.as_bytes()); // the base64 text, not the decoded id
        }
        count(h, dk.wrappings.len());
        for w in &dk.wrappings {
            lp(h, w.key_id.as_bytes());
            lp(h, &b64(&w.ciphertext));
        }
        let mut mac =
            <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&kt.header_key).unwrap();
        mac.update(&kt.header);
        kt.header_tag = mac.finalize().into_bytes().to_vec();
        assert_eq!(kt.header_tag, b64(&dk.header_tag), "header tag");
        value_keys.insert(dk.id.clone(), (id, kt.value_key.clone()));
        t.keys.push(kt);
    }

    // The head: the one data key that no data key lists in `supersedes`
    // (ids compared as text). Its stateTag covers the whole entry list.
    let heads: Vec<usize> = (0..s.data_keys.len())
        .filter(|&i| {
            !s.data_keys
                .iter()
                .any(|d| d.supersedes.contains(&s.data_keys[i].id))
        })
        .collect();
    assert_eq!(heads.len(), 1, "exactly one head");
    t.head = heads[0];
    let st = &mut t.state;
    lp(st, b"sealcred/v1 state");
    st.extend_from_slice(&s.format_version.to_be_bytes());
    lp(st, s.suite.as_bytes());
    lp(st, &t.binding);
    count(st, s.entries.len());
    for (ename, e) in &s.entries {
        lp(st, ename.as_bytes());
        lp(st, &value_keys[&e.data_key].0); // the decoded id, 32 raw bytes
    }
    let mut mac =
        <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&t.keys[t.head].header_key).unwrap();
    mac.update(&t.state);
    t.state_tag = mac.finalize().into_bytes().to_vec();
    let stored = s.data_keys[t.head]
        .state_tag
        .as_deref()
        .expect("the head has a stateTag");
    assert_eq!(t.state_tag, b64(stored), "state tag");

    let mut out = BTreeMap::new();
    for (ename, e) in &s.entries {
        let (id, vk) = &value_keys[&e.data_key];
        let mut aad = Vec::new();
        lp(&mut aad, b"sealcred/v1 entry");
        aad.extend_from_slice(&s.format_version.to_be_bytes());
        lp(&mut aad, s.suite.as_bytes());
        lp(&mut aad, &t.binding);
        lp(&mut aad, ename.as_bytes());
        lp(&mut aad, id);
        let nonce: [u8; 12] = b64(&e.nonce).try_into().unwrap();
        let vk: [u8; 32] = vk.as_slice().try_into().unwrap();
        let pt = Aes256Gcm::new(&Key::<Aes256Gcm>::from(vk))
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &b64(&e.ciphertext),
                    aad: &aad,
                },
            )
            .expect("entry decrypts");
        t.entries
            .push((ename.clone(), aad, nonce.to_vec(), pt.clone()));
        out.insert(ename.clone(), pt);
    }
    (out, t)
}

// ---------------------------------------------------------------------------
// Mutations.
// ---------------------------------------------------------------------------

/// Flips bit `bit` (counted from the first byte's most significant bit,
/// modulo the length) of a base64 field and re-encodes it.
pub fn flip_b64(s: &str, bit: usize) -> String {
    let mut b = b64(s);
    let bit = bit % (b.len() * 8);
    b[bit / 8] ^= 0x80 >> (bit % 8);
    STANDARD.encode(b)
}

/// Applies `f` to the decoded bytes of a base64 field and re-encodes.
pub fn edit_b64(s: &str, f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut b = b64(s);
    f(&mut b);
    STANDARD.encode(b)
}

/// The worked example (every intermediate value of opening `obj` with the
/// test key), as written to `vectors/worked-example.txt`.
pub fn worked_example(obj: &SealedStorageCred) -> String {
    use std::fmt::Write;
    let (plain, t) = independent_open(obj, &TEST_KEY_BYTES);
    let mut s = String::new();
    let w = &mut s;
    writeln!(
        w,
        "# Worked example: opening ok-strict-2-entries.yaml with the TEST-ONLY key."
    )
    .unwrap();
    writeln!(
        w,
        "# Regenerated by gen_vectors.rs, checked by vectors.rs. All binary values in hex."
    )
    .unwrap();
    writeln!(
        w,
        "kek (local key, test-only)      {}",
        hex(&TEST_KEY_BYTES)
    )
    .unwrap();
    let key_id = &obj.spec.data_keys[0].wrappings[0].key_id;
    writeln!(w, "local key id                    {key_id}").unwrap();
    writeln!(w, "scope_binding                   {}", hex(&t.binding)).unwrap();
    writeln!(w, "encryption context bytes        {}", hex(&t.context)).unwrap();
    writeln!(w, "local wrap AAD                  {}", hex(&t.wrap_aad)).unwrap();
    for (i, (k, dk)) in t.keys.iter().zip(&obj.spec.data_keys).enumerate() {
        let wrapped = b64(&dk.wrappings[0].ciphertext);
        writeln!(w, "dataKeys[{i}].id                  {}", hex(&k.id)).unwrap();
        writeln!(
            w,
            "dataKeys[{i}] wrap nonce          {}",
            hex(&wrapped[..12])
        )
        .unwrap();
        writeln!(
            w,
            "dataKeys[{i}] wrap ciphertext     {}",
            hex(&wrapped[12..44])
        )
        .unwrap();
        writeln!(
            w,
            "dataKeys[{i}] wrap tag            {}",
            hex(&wrapped[44..])
        )
        .unwrap();
        writeln!(w, "dataKeys[{i}] data key            {}", hex(&k.data_key)).unwrap();
        writeln!(w, "dataKeys[{i}] value key           {}", hex(&k.value_key)).unwrap();
        writeln!(
            w,
            "dataKeys[{i}] header key          {}",
            hex(&k.header_key)
        )
        .unwrap();
        writeln!(
            w,
            "dataKeys[{i}] commitment          {}",
            hex(&k.commitment)
        )
        .unwrap();
        writeln!(w, "dataKeys[{i}] header bytes        {}", hex(&k.header)).unwrap();
        writeln!(
            w,
            "dataKeys[{i}] header tag          {}",
            hex(&k.header_tag)
        )
        .unwrap();
    }
    writeln!(w, "head (no other supersedes it)   dataKeys[{}]", t.head).unwrap();
    writeln!(w, "state bytes                     {}", hex(&t.state)).unwrap();
    writeln!(
        w,
        "dataKeys[{}] state tag           {}",
        t.head,
        hex(&t.state_tag)
    )
    .unwrap();
    for (name, aad, nonce, _) in &t.entries {
        let ct = b64(&obj.spec.entries[name].ciphertext);
        let (body, tag) = ct.split_at(ct.len() - 16);
        writeln!(w, "entries.{name} AAD       {}", hex(aad)).unwrap();
        writeln!(w, "entries.{name} nonce     {}", hex(nonce)).unwrap();
        writeln!(w, "entries.{name} ct        {}", hex(body)).unwrap();
        writeln!(w, "entries.{name} gcm tag   {}", hex(tag)).unwrap();
        writeln!(
            w,
            "entries.{name} plaintext {:?}",
            String::from_utf8_lossy(&plain[name])
        )
        .unwrap();
    }
    s
}
