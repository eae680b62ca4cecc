//! Criterion micro-benchmarks: sealing and opening one entry, and a whole
//! 2-entry object with the local key (no KMS round trip).

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use sealcred_shared::crd::{Scope, SecretTemplate};
use sealcred_shared::crypto::{DerivedKeys, random_id};
use sealcred_shared::keyring::{Allowlist, Keyring};
use sealcred_shared::provider::local::LocalKey;
use sealcred_shared::seal::{self, SealInput};
use sealcred_shared::secret::{DataKey, SecretBytes};

fn entry(c: &mut Criterion) {
    let keys = DerivedKeys::derive(&DataKey::random(), &random_id());
    let value = SecretBytes::copy_from(&[0x41; 40]);
    c.bench_function("seal one 40-byte entry", |b| {
        b.iter(|| keys.seal(b"aad-of-typical-length-0123456789", &value))
    });
    let (nonce, ct) = keys.seal(b"aad", &value);
    let (body, tag) = ct.split_at(ct.len() - 16);
    let tag: [u8; 16] = tag.try_into().unwrap();
    c.bench_function("open one 40-byte entry", |b| {
        b.iter(|| keys.open(b"aad", &nonce, body, &tag).unwrap())
    });
    c.bench_function("derive keys (HKDF-SHA512 x3)", |b| {
        let dk = DataKey::random();
        let id = random_id();
        b.iter(|| DerivedKeys::derive(&dk, &id))
    });
}

fn object(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let local = LocalKey::create(&path).unwrap();
    let input = SealInput {
        name: "flyte-storage-creds".into(),
        namespace: Some("flyte".into()),
        scope: Scope::Strict,
        template: SecretTemplate {
            type_: "Opaque".into(),
            ..Default::default()
        },
        profile: None,
        entries: BTreeMap::from([
            (
                "access_key".to_string(),
                SecretBytes::copy_from(b"AKIAIOSFODNN7EXAMPLE"),
            ),
            (
                "secret_key".to_string(),
                SecretBytes::copy_from(b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            ),
        ]),
    };
    c.bench_function("seal 2-entry object (local key)", |b| {
        b.iter(|| rt.block_on(seal::seal(&input, &[&local])).unwrap().object)
    });
    let obj = rt.block_on(seal::seal(&input, &[&local])).unwrap().object;
    let keyring = Keyring::new(Allowlist::any(), Some(path.clone()));
    c.bench_function("open 2-entry object (local key)", |b| {
        b.iter(|| rt.block_on(seal::open(&obj, &keyring)).unwrap())
    });
}

criterion_group!(benches, entry, object);
criterion_main!(benches);
