//! Criterion micro-benchmarks: sealing and opening one entry, and a whole
//! 2-entry object with the local key (no KMS round trip); and the consumer-status
//! computation of one reconcile as the cluster's workloads grow.

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

/// What a reconcile pays for `status.consumers`: the index lookup of the 3 workloads
/// naming its Secret and their summary, with 0, 1,000 and 20,000 other workloads in the
/// cache. Flat by design (an index by Secret, not a scan).
fn consumers(c: &mut Criterion) {
    use sealcred_controller::consumers::{Kind, Rollout, Workload, Workloads, summarize};
    let workload = |name: String, secret: &str| Workload {
        kind: Kind::Deployment,
        namespace: "flyte".into(),
        uid: format!("uid-{name}"),
        name,
        names: vec![secret.to_string()],
        restarted_for: BTreeMap::from([(
            "sealcred.io/restarted-for-flyte-storage-creds".to_string(),
            "d1".to_string(),
        )]),
        rollout: Rollout {
            desired: 3,
            updated: 3,
            ready: 3,
            complete: true,
        },
    };
    for others in [0usize, 1_000, 20_000] {
        let w = Workloads::new();
        w.mark_synced();
        for i in 0..others {
            w.apply(workload(format!("other-{i}"), &format!("secret-{i}")));
        }
        for name in ["flyteadmin", "flytepropeller", "datacatalog"] {
            w.apply(workload(name.into(), "flyte-storage-creds"));
        }
        c.bench_function(
            &format!("consumer status, 3 consumers, {others} other workloads"),
            |b| {
                b.iter(|| {
                    let found = w.consumers_of("flyte", "flyte-storage-creds");
                    summarize(&found, "flyte-storage-creds", Some("d1"))
                })
            },
        );
    }
}

criterion_group!(benches, entry, object, consumers);
criterion_main!(benches);
