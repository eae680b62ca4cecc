//! Decryption: `seal::open` with a fixed local key on mutated valid objects.
//!
//! Init seals a valid object (two entries, strict scope) with the public
//! test-only key of `shared/tests/vectors`. Each input is either
//! - `0x00` ‖ a whole YAML document (the seed corpus: the test vectors), or
//! - a list of 3-byte edits (position hi, position lo, xor mask) applied to
//!   the valid object's YAML.
//!
//! Invariant: `open` never panics, and when it succeeds the entries are
//! exactly the sealed ones (for the init object) — a mutation that still opens
//! to different plaintext would be a forgery.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sealcred_shared::crd::{Scope, SealedStorageCred, SecretTemplate};
use sealcred_shared::keyring::{Allowlist, Keyring};
use sealcred_shared::provider::local::LocalKey;
use sealcred_shared::seal::{self, SealInput};
use sealcred_shared::secret::SecretBytes;

/// `sealcred-local-key-v1:` + base64(0x00..=0x1f): the public TEST-ONLY key.
const TEST_KEY_FILE: &str = "sealcred-local-key-v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";

struct Fixture {
    rt: tokio::runtime::Runtime,
    keyring: Keyring,
    valid_yaml: String,
    plaintexts: BTreeMap<String, Vec<u8>>,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.key");
        std::fs::write(&path, TEST_KEY_FILE).unwrap();
        let key = LocalKey::load(&path).unwrap();
        // Only the local key may be called: a mutated key id must never make
        // the fuzzer reach for AWS (network, IMDS).
        let keyring = Keyring::new(Allowlist::only([key.key_id().to_string()]), Some(path));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let plaintexts: BTreeMap<String, Vec<u8>> = [
            ("access_key".to_string(), b"AKIAFUZZFUZZFUZZ".to_vec()),
            ("secret_key".to_string(), b"fuzz/secret+key=value".to_vec()),
        ]
        .into();
        let input = SealInput {
            name: "s3-creds".into(),
            namespace: Some("flyte".into()),
            scope: Scope::Strict,
            template: SecretTemplate {
                type_: "Opaque".into(),
                ..Default::default()
            },
            profile: None,
            entries: plaintexts
                .iter()
                .map(|(k, v)| (k.clone(), SecretBytes::copy_from(v)))
                .collect(),
        };
        let obj = rt.block_on(seal::seal(&input, &[&key])).unwrap().object;
        let valid_yaml = serde_saphyr::to_string(&obj).unwrap();
        Fixture {
            rt,
            keyring,
            valid_yaml,
            plaintexts,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let (text, mutated_valid) = match data.split_first() {
        Some((0, doc)) => match std::str::from_utf8(doc) {
            Ok(t) => (t.to_string(), false),
            Err(_) => return,
        },
        _ => {
            let mut bytes = f.valid_yaml.clone().into_bytes();
            for edit in data.chunks_exact(3) {
                let pos = usize::from(u16::from_be_bytes([edit[0], edit[1]])) % bytes.len();
                bytes[pos] ^= edit[2];
            }
            match String::from_utf8(bytes) {
                Ok(t) => (t, true),
                Err(_) => return,
            }
        }
    };
    let Ok(obj) = serde_saphyr::from_str::<SealedStorageCred>(&text) else {
        return;
    };
    if let Ok(opened) = f.rt.block_on(seal::open(&obj, &f.keyring))
        && mutated_valid
    {
        let got: BTreeMap<&str, &[u8]> = opened
            .entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        let want: BTreeMap<&str, &[u8]> = f
            .plaintexts
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(got, want, "a mutated object opened to different entries");
    }
});
