//! Zeroization, measured: a test-only global allocator that, when a heap block
//! is freed, scans it for canaries — plaintext values and their base64, a data
//! key of known bytes, the keys derived from it, and the local key-encryption
//! key and its key-file text. A block freed with a canary still in it is a copy
//! nobody wiped. This is its own test binary, so the allocator is global only
//! here; run it with
//!
//! ```text
//! cargo test -p sealcred-shared --test zeroize_alloc -- --nocapture
//! ```
//!
//! What it sees: heap blocks freed on the test thread while a scenario runs
//! (a current-thread runtime keeps every await on that thread). Reallocation
//! goes through `alloc` + copy + `dealloc` here, so every block a growing
//! buffer leaves behind is scanned. What it does not see: the stack (key
//! schedules, HKDF/HMAC state, `Key::from(*key)` temporaries), registers, and
//! blocks still allocated at the end.
//!
//! Every block is zeroed after the scan (and outside scenarios), so a block
//! reused later never carries a stale canary into another count.
//!
//! Each unwiped block is attributed, from a backtrace taken at the free, to the
//! first frame outside the standard library and the allocator: sealcred code
//! (ours — the test asserts there is none) or a dependency (outside our control
//! — printed). The CLI input parsing path is measured by compiling
//! `cli/src/input.rs` (and `cli/src/error.rs`) into this test: the CLI is a
//! binary crate, and nothing was moved.
#![allow(unsafe_code)] // a GlobalAlloc is unsafe by definition

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use scanning::{Canaries, Report, measure};
use sealcred_shared::crd::{Scope, SealedStorageCred, SecretTemplate};
use sealcred_shared::keyring::{Allowlist, Keyring};
use sealcred_shared::provider::local::LocalKey;
use sealcred_shared::provider::{EncryptionContext, GeneratedKey, KeyProvider, ProviderError};
use sealcred_shared::seal::{self, SealInput};
use sealcred_shared::secret::{DataKey, SecretBytes};

#[allow(dead_code)]
#[path = "../../cli/src/error.rs"]
mod error;
#[allow(dead_code)]
#[path = "../../cli/src/input.rs"]
mod input;
mod scanning;

/// Whether a frame (`NAME @ ORIGIN`, see `scanning`) is our code: a source file of
/// this workspace (the library, the CLI modules compiled in here, this test), or
/// the tokio runtime. A block freed by tokio is the state machine of one of our
/// `async fn`s (only local keys are used here, so no dependency's future runs):
/// locals held there are our copies too.
fn is_ours(frame: &str) -> bool {
    match frame.rsplit_once(" @ ") {
        Some((_, origin)) if origin.starts_with("ws:") || origin.starts_with("dep:tokio-") => true,
        Some((name, "?")) => {
            let f = name.trim_start_matches('<');
            f.starts_with("sealcred_shared::")
                || f.starts_with("zeroize_alloc::")
                || f.starts_with("tokio::")
        }
        _ => false,
    }
}

// ---------------------------------------------------------------- canaries

/// The small value: distinctive, 28 bytes.
const CANARY: &[u8] = b"CANARY-SECRET-f00dfeedc0ffee";
/// The pattern a large value (over 64 KiB) repeats.
const BIG_PATTERN: &[u8] = b"BIGCANARY-0123456789-abcdefghij-KLMNOPQRST/";
/// The data key the known-key provider hands out.
const KNOWN_DATA_KEY: [u8; 32] = *b"DATAKEY-known-bytes-0123456789ab";
/// The local key-encryption key of the test key file.
const KEK: [u8; 32] = *b"KEK-local-test-key-bytes-zyxwvut";

const INFO_VALUE_KEY: &[u8] = b"sealcred/v1 AES256GCM-HKDFSHA512-COMMIT value key";
const INFO_HEADER_KEY: &[u8] = b"sealcred/v1 AES256GCM-HKDFSHA512-COMMIT header key";

fn big_value() -> Vec<u8> {
    BIG_PATTERN
        .iter()
        .copied()
        .cycle()
        .take(150 * 1024)
        .collect()
}

fn kek_file_text() -> String {
    format!("sealcred-local-key-v1:{}\n", STANDARD.encode(KEK))
}

/// The value key and header key HKDF derives from the known data key for the
/// data key `id` (base64) recorded in a sealed object.
fn derived_keys(id_b64: &str) -> ([u8; 32], [u8; 32]) {
    let id = STANDARD.decode(id_b64).unwrap();
    let hk = hkdf::Hkdf::<sha2::Sha512>::new(Some(&id), &KNOWN_DATA_KEY);
    let (mut v, mut h) = ([0u8; 32], [0u8; 32]);
    hk.expand(INFO_VALUE_KEY, &mut v).unwrap();
    hk.expand(INFO_HEADER_KEY, &mut h).unwrap();
    (v, h)
}

fn value_canaries() -> Canaries {
    Canaries::new()
        .add("plaintext", CANARY)
        .add("plaintext base64", STANDARD.encode(CANARY).as_bytes())
        .add("plaintext (large)", BIG_PATTERN)
        .add(
            "plaintext base64 (large)",
            // base64 of the pattern repeated three times holds a stretch that
            // every alignment of the large value's base64 shares.
            STANDARD.encode(BIG_PATTERN.repeat(3)).as_bytes(),
        )
}

fn key_canaries(c: Canaries) -> Canaries {
    c.add("data key", &KNOWN_DATA_KEY)
        .add("local KEK", &KEK)
        .add("local KEK file text", kek_file_text().trim_end().as_bytes())
}

/// A provider whose data key is known (so it can be looked for), wrapped with
/// a real local key.
struct KnownKey(LocalKey);

#[async_trait]
impl KeyProvider for KnownKey {
    fn name(&self) -> String {
        self.0.name()
    }
    fn handles(&self, key_id: &str) -> bool {
        self.0.handles(key_id)
    }
    async fn generate_data_key(
        &self,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, ProviderError> {
        let key = DataKey::from_slice(&KNOWN_DATA_KEY).unwrap();
        let (key_id, ciphertext) = self.0.wrap(&key, ctx).await?;
        Ok(GeneratedKey {
            key,
            key_id,
            ciphertext,
        })
    }
    async fn wrap(
        &self,
        key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<(String, Vec<u8>), ProviderError> {
        self.0.wrap(key, ctx).await
    }
    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        self.0.unwrap(key_id, ciphertext, ctx).await
    }
}

fn seal_input(entries: BTreeMap<String, SecretBytes>) -> SealInput {
    SealInput {
        name: "s3-creds".into(),
        namespace: Some("flyte".into()),
        scope: Scope::Strict,
        template: SecretTemplate {
            type_: "Opaque".into(),
            ..Default::default()
        },
        profile: None,
        entries,
    }
}

fn entries() -> BTreeMap<String, SecretBytes> {
    let mut m = BTreeMap::new();
    m.insert("small".to_string(), SecretBytes::copy_from(CANARY));
    m.insert("large".to_string(), SecretBytes::new(big_value()));
    m
}

/// A reader that returns at most 8 KiB per call, as a pipe (stdin) does.
struct Pipe<'a>(&'a [u8]);

impl std::io::Read for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len()).min(8192);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn secrets_are_wiped_before_their_memory_is_freed() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_path = write(dir.path(), "local.key", kek_file_text().as_bytes());
    let mut report = Report::default();

    // Local key file → LocalKey.
    let (key, found) = measure(key_canaries(Canaries::new()), || {
        LocalKey::load(&key_path).unwrap()
    });
    report.add("local key: load", found);

    // seal::seal with a known data key (wrapped by the local key).
    let provider = KnownKey(key);
    let input = seal_input(entries());
    let (obj, found) = measure(key_canaries(value_canaries()), || {
        rt.block_on(seal::seal(&input, &[&provider]))
            .unwrap()
            .object
    });
    report.add("seal::seal (local key)", found);
    let (_, found) = measure(key_canaries(value_canaries()), || drop(input));
    report.add("seal input: drop", found);

    // seal::open through a keyring that loads the key file.
    let (value_key, header_key) = derived_keys(&obj.spec.data_keys[0].id);
    let open_canaries = || {
        key_canaries(value_canaries())
            .add("derived value key", &value_key)
            .add("derived header key", &header_key)
    };
    let (_, found) = measure(open_canaries(), || {
        let keyring = Keyring::new(Allowlist::any(), Some(key_path.clone()));
        let opened = rt.block_on(seal::open(&obj, &keyring)).unwrap();
        assert_eq!(opened.entries["small"].expose(), CANARY);
        assert_eq!(opened.entries["large"].len(), 150 * 1024);
        drop(opened);
    });
    report.add("seal::open + drop (keyring, local key)", found);

    // merge and rotate (rotate = open + seal).
    let (_, found) = measure(open_canaries(), || {
        let keyring = Keyring::new(Allowlist::any(), Some(key_path.clone()));
        let more = BTreeMap::from([("more".to_string(), SecretBytes::copy_from(CANARY))]);
        let merged = rt
            .block_on(seal::merge(&obj, &more, seal::Keys::Given(&[&provider])))
            .unwrap()
            .object;
        let rotated = rt
            .block_on(seal::rotate(
                &merged,
                &keyring,
                seal::Keys::Given(&[&provider]),
            ))
            .unwrap()
            .object;
        assert_eq!(rotated.spec.entries.len(), 3);
    });
    report.add("seal::merge + seal::rotate", found);

    // Tampered object: decryption fails after the data key was unwrapped.
    let mut tampered: SealedStorageCred = obj.clone();
    let ct = &mut tampered.spec.entries.get_mut("small").unwrap().ciphertext;
    let mut raw = STANDARD.decode(&ct).unwrap();
    raw[0] ^= 1;
    *ct = STANDARD.encode(raw);
    let (_, found) = measure(open_canaries(), || {
        let keyring = Keyring::new(Allowlist::any(), Some(key_path.clone()));
        assert!(rt.block_on(seal::open(&tampered, &keyring)).is_err());
    });
    report.add("seal::open, tampered entry", found);

    // RSA wrappings (provider/rsa.rs): encrypting a known data key with the
    // public key, and the binding check on a decrypted RSA plaintext (what
    // KMS Decrypt returns, here made by the test: the SDK's buffer is outside
    // this measurement, see "Copies outside our control"). aws-lc's own
    // buffers are C allocations, not seen by this allocator.
    let public = sealcred_shared::provider::rsa::RsaPublicKey::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors/TEST-ONLY-DO-NOT-USE.rsa-2048.pubkey"),
    )
    .unwrap();
    let ctx = sealcred_shared::format::Binding::new(Scope::Strict, Some("flyte"), Some("s3"))
        .unwrap()
        .encryption_context();
    let known = DataKey::from_slice(&KNOWN_DATA_KEY).unwrap();
    let (_, found) = measure(key_canaries(Canaries::new()), || {
        rt.block_on(public.wrap(&known, &ctx)).unwrap();
    });
    report.add("rsa: wrap a data key (public key)", found);
    let rsa_id = sealcred_shared::provider::rsa::key_id_for(public.arn());
    let mut plain = zeroize::Zeroizing::new(KNOWN_DATA_KEY.to_vec());
    plain.extend_from_slice(&sealcred_shared::provider::rsa::binding_check(
        public.arn(),
        &ctx,
    ));
    let (_, found) = measure(key_canaries(Canaries::new()), || {
        let k = sealcred_shared::provider::rsa::open_plaintext(&rsa_id, &ctx, &plain).unwrap();
        assert_eq!(k.expose(), &KNOWN_DATA_KEY);
    });
    report.add("rsa: binding check of a decrypted wrapping", found);
    drop((known, plain));

    // CLI input parsing (cli/src/input.rs compiled in).
    let big = big_value();
    let big_b64 = STANDARD.encode(&big);
    let canary = std::str::from_utf8(CANARY).unwrap();
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s3\ntype: Opaque\nstringData:\n  small: {canary}\ndata:\n  large: {big_b64}\n  small64: {}\n",
        STANDARD.encode(CANARY)
    );
    let json = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{{\"name\":\"s3\"}},\"stringData\":{{\"small\":\"{canary}\"}},\"data\":{{\"large\":\"{big_b64}\"}}}}"
    );
    let yaml_path = write(dir.path(), "secret.yaml", yaml.as_bytes());
    let json_path = write(dir.path(), "secret.json", json.as_bytes());
    let env_path = write(
        dir.path(),
        "creds.env",
        format!(
            "# creds\nSMALL={canary}\nLARGE={}\n",
            std::str::from_utf8(&big).unwrap()
        )
        .as_bytes(),
    );
    let file_path = write(dir.path(), "large", &big);
    drop((yaml, json, big, big_b64));

    for (label, path) in [
        ("cli: Secret manifest, YAML file", &yaml_path),
        ("cli: Secret manifest, JSON file", &json_path),
    ] {
        let (_, found) = measure(value_canaries(), || {
            let mut e = input::Entries::default();
            input::read_manifest(path, &mut e).unwrap();
            assert_eq!(e.0["small"].expose(), CANARY);
            assert_eq!(e.0["large"].len(), 150 * 1024);
        });
        report.add(label, found);
    }
    let literal = vec![format!("lit={canary}")];
    let (_, found) = measure(value_canaries(), || {
        let mut e = input::Entries::default();
        input::add_env_files(&mut e, std::slice::from_ref(&env_path)).unwrap();
        input::add_files(&mut e, &[format!("file={}", file_path.display())]).unwrap();
        input::add_literals(&mut e, &literal).unwrap();
        assert_eq!(e.0["SMALL"].expose(), CANARY);
        assert_eq!(e.0["file"].len(), 150 * 1024);
    });
    report.add("cli: --from-env-file, --from-file, literal", found);

    // Reading more than the expected size (stdin manifests over 64 KiB, or a
    // file that grows while read): the reader the CLI uses for both.
    let big = SecretBytes::new(big_value());
    let (_, found) = measure(value_canaries(), || {
        let v = SecretBytes::read_all(Pipe(big.expose()), 64 * 1024).unwrap();
        assert_eq!(v.len(), 150 * 1024);
    });
    report.add("SecretBytes::read_all, 150 KiB, hint 64 KiB", found);

    // Control: the instrument sees a known leak — `read_to_end` into a buffer
    // pre-sized too small (what the CLI did for stdin over 64 KiB).
    let (_, control) = measure(value_canaries(), || {
        let mut v = SecretBytes::with_capacity(64 * 1024);
        std::io::Read::read_to_end(&mut Pipe(big.expose()), v.expose_mut()).unwrap();
        assert_eq!(v.len(), 150 * 1024);
    });
    println!(
        "\ncontrol: read_to_end past a 64 KiB pre-size leaves {} unwiped block(s)",
        control.len()
    );
    assert!(!control.is_empty(), "the scanner must see the control leak");

    // No known exceptions: the key copies that building a cipher left on the stack,
    // carried into the heap when tokio boxed a future built there (seen in
    // `seal::open` of a tampered entry and in `seal::merge`), are gone since the
    // stack is scrubbed after each use of a key (`crypto::scrub_stack`).
    report.print_and_check(is_ours, &[]);
}
