//! Regenerates the test vectors in `shared/tests/vectors/`:
//!
//! ```text
//! cargo test -p sealcred-shared --test gen_vectors -- --ignored
//! ```
//!
//! Every run draws fresh data keys, ids and nonces, so every `.yaml` changes;
//! the `.expect` files do not (they depend only on the plaintexts and on the
//! error each mutation must cause). Review the diff, then commit. The key is
//! the fixed, public test key in `TEST-ONLY-DO-NOT-USE.local.key`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use sealcred_shared::crd::{Scope, SealedStorageCred, SecretTemplate};
use sealcred_shared::provider::local::LocalKey;
use sealcred_shared::seal;

type Mutation = fn(&mut SealedStorageCred, &Bases);

/// The valid objects the failure cases are derived from.
struct Bases {
    strict: SealedStorageCred,
    /// Sealed once, then merged once (two data keys).
    merged: SealedStorageCred,
    /// `merged`, merged once more (three data keys).
    merged3: SealedStorageCred,
    /// `merged` before the merge.
    merged_history: Vec<SealedStorageCred>,
}

const STRICT: &[(&str, &str)] = &[
    ("access_key", "AKIAIOSFODNN7EXAMPLE"),
    ("secret_key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
];
const NS_WIDE: &[(&str, &str)] = &[("password", "hunter2"), ("username", "flyte")];
const CLUSTER: &[(&str, &str)] = &[("token", "cluster-wide-token-value")];
const MERGE_1: &[(&str, &str)] = &[
    ("access_key", "AKIA-FIRST"),
    ("region", "eu-west-1"),
    ("secret_key", "first-secret"),
];
const MERGE_2: &[(&str, &str)] = &[
    ("endpoint", "https://s3.example"),
    ("secret_key", "second-secret"),
];
const MERGE_3: &[(&str, &str)] = &[("region", "us-east-2")];

/// What the merged object holds after the three seals.
fn merged_plain() -> BTreeMap<&'static str, &'static str> {
    let mut m = BTreeMap::new();
    for set in [MERGE_1, MERGE_2, MERGE_3] {
        for (k, v) in set {
            m.insert(*k, *v);
        }
    }
    m
}

fn strict_template() -> SecretTemplate {
    SecretTemplate {
        name: Some("s3-creds".into()),
        type_: "Opaque".into(),
        labels: [("app".to_string(), "flyte".to_string())].into(),
        annotations: [("sealcred.io/owner".to_string(), "data-team".to_string())].into(),
    }
}

fn digest_pairs(pairs: &[(&str, &str)]) -> String {
    let m: BTreeMap<String, &[u8]> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes()))
        .collect();
    digest_entries(m.iter().map(|(k, v)| (k, *v)))
}

/// The failure cases: name, base, mutation, expected class.
fn failures() -> Vec<(&'static str, Mutation, &'static str)> {
    vec![
        (
            "err-strict-renamed",
            |o, b| {
                *o = b.strict.clone();
                o.metadata.name = Some("other-name".into());
            },
            "DecryptFailed Provider.InvalidCiphertext",
        ),
        (
            "err-strict-moved-namespace",
            |o, b| {
                *o = b.strict.clone();
                o.metadata.namespace = Some("other-ns".into());
            },
            "DecryptFailed Provider.InvalidCiphertext",
        ),
        (
            "err-namespace-wide-moved-namespace",
            |o, _| {
                o.metadata.namespace = Some("other-ns".into());
            },
            "DecryptFailed Provider.InvalidCiphertext",
        ),
        (
            "err-scope-edited",
            |o, b| {
                *o = b.strict.clone();
                o.spec.scope = Scope::ClusterWide;
            },
            "DecryptFailed Provider.InvalidCiphertext",
        ),
        (
            "err-format-version-2",
            |o, b| {
                *o = b.strict.clone();
                o.spec.format_version = 2;
            },
            "InvalidSpec Format.UnsupportedVersion",
        ),
        (
            "err-format-version-0",
            |o, b| {
                *o = b.strict.clone();
                o.spec.format_version = 0;
            },
            "InvalidSpec Format.UnsupportedVersion",
        ),
        (
            "err-unknown-suite",
            |o, b| {
                *o = b.strict.clone();
                o.spec.suite = "AES128GCM-HKDFSHA256".into();
            },
            "InvalidSpec Format.UnknownSuite",
        ),
        (
            "err-template-label-edited",
            |o, b| {
                *o = b.strict.clone();
                o.spec.template.labels.insert("app".into(), "evil".into());
            },
            "DecryptFailed HeaderAuth.HeaderTag",
        ),
        (
            "err-profile-added",
            |o, b| {
                *o = b.strict.clone();
                o.spec.profile = Some("s3".into());
            },
            "DecryptFailed HeaderAuth.HeaderTag",
        ),
        (
            "err-ciphertexts-swapped",
            |o, b| {
                *o = b.strict.clone();
                let e = &mut o.spec.entries;
                let a = e["access_key"].clone();
                let s = e["secret_key"].clone();
                e.insert("access_key".into(), s);
                e.insert("secret_key".into(), a);
            },
            "DecryptFailed EntryAuth",
        ),
        (
            "err-entry-dropped",
            |o, b| {
                *o = b.strict.clone();
                o.spec.entries.remove("secret_key");
            },
            "InvalidSpec Format.Inconsistent",
        ),
        (
            "err-merged-entry-replayed",
            |o, b| {
                // put back secret_key as sealed under the first data key
                *o = b.merged.clone();
                let first = o.spec.data_keys[0].id.clone();
                let old = b.merged_first_entry("secret_key");
                assert_eq!(old.data_key, first);
                o.spec.entries.insert("secret_key".into(), old);
            },
            "InvalidSpec Format.Inconsistent",
        ),
        (
            "err-merged-supersedes-needed-removed",
            |o, b| {
                // the second data key no longer claims to replace the first one
                *o = b.merged.clone();
                o.spec.data_keys[1].supersedes.clear();
            },
            "InvalidSpec Format.Inconsistent",
        ),
        (
            "err-merged-supersedes-edited",
            |o, b| {
                // an extra, absent id: structurally still fine (ids in supersedes need not
                // be present, and the head stays the same), so the header tag catches it.
                // (Removing an id instead makes the removed key a second head, or breaks
                // the supersede rule: see err-merged-two-heads.)
                *o = b.merged3.clone();
                let s = &mut o.spec.data_keys[2].supersedes;
                s.push(edit_b64(&s[0], |v| v.iter_mut().for_each(|x| *x ^= 0x5a)));
                s.sort();
            },
            "DecryptFailed HeaderAuth.HeaderTag",
        ),
        (
            "err-merged-two-heads",
            |o, b| {
                // the newest data key no longer lists the second one, which nothing
                // else supersedes and no name needs: two data keys are now superseded
                // by no other (the head rule, before any key is used)
                *o = b.merged3.clone();
                let second = o.spec.data_keys[1].id.clone();
                o.spec.data_keys[2].supersedes.retain(|s| *s != second);
            },
            "InvalidSpec Format.Inconsistent",
        ),
        (
            "err-merged-partial-rollback",
            |o, b| {
                // drop the second data key and the entry only it held (endpoint), put
                // back secret_key as sealed under the first data key, keep the third
                // merge's region: structurally consistent, every header verifies, the
                // newest data key's state tag does not
                *o = b.merged3.clone();
                let second = o.spec.data_keys[1].id.clone();
                o.spec.data_keys.retain(|d| d.id != second);
                o.spec.entries.remove("endpoint");
                let old = b.merged_first_entry("secret_key");
                o.spec.entries.insert("secret_key".into(), old);
            },
            "DecryptFailed HeaderAuth.StateTag",
        ),
        (
            "err-merged-newest-data-key-dropped",
            |o, b| {
                // the newest data key and its only entry (region) are gone, but the
                // value it replaced is not put back: the first data key names region
                *o = b.merged3.clone();
                o.spec.data_keys.pop();
                o.spec.entries.remove("region");
            },
            "InvalidSpec Format.Inconsistent",
        ),
        (
            "err-merged-state-tag-from-older-key",
            |o, b| {
                // the newest data key carries the (stale) state tag of an older one
                *o = b.merged3.clone();
                o.spec.data_keys[2].state_tag = o.spec.data_keys[1].state_tag.clone();
            },
            "DecryptFailed HeaderAuth.StateTag",
        ),
        (
            "err-state-tag-missing",
            |o, b| {
                *o = b.strict.clone();
                o.spec.data_keys[0].state_tag = None;
            },
            "InvalidSpec Format.BadField",
        ),
        (
            "err-merged-state-tag-missing-on-newest",
            |o, b| {
                *o = b.merged.clone();
                o.spec.data_keys[1].state_tag = None;
            },
            "InvalidSpec Format.BadField",
        ),
        (
            "err-state-tag-flipped",
            |o, b| {
                *o = b.strict.clone();
                let d = &mut o.spec.data_keys[0];
                d.state_tag = Some(flip_b64(d.state_tag.as_deref().unwrap(), 200));
            },
            "DecryptFailed HeaderAuth.StateTag",
        ),
        (
            "err-commitment-flipped",
            |o, b| {
                *o = b.strict.clone();
                let d = &mut o.spec.data_keys[0];
                d.commitment = flip_b64(&d.commitment, 77);
            },
            "DecryptFailed HeaderAuth.Commitment",
        ),
        (
            "err-header-tag-flipped",
            |o, b| {
                *o = b.strict.clone();
                let d = &mut o.spec.data_keys[0];
                d.header_tag = flip_b64(&d.header_tag, 3);
            },
            "DecryptFailed HeaderAuth.HeaderTag",
        ),
        (
            "err-wrapped-key-flipped",
            |o, b| {
                *o = b.strict.clone();
                let w = &mut o.spec.data_keys[0].wrappings[0];
                w.ciphertext = flip_b64(&w.ciphertext, 200);
            },
            "DecryptFailed Provider.InvalidCiphertext",
        ),
        (
            "err-ciphertext-bit-flipped",
            |o, b| {
                *o = b.strict.clone();
                let e = o.spec.entries.get_mut("access_key").unwrap();
                e.ciphertext = flip_b64(&e.ciphertext, 9);
            },
            "DecryptFailed EntryAuth",
        ),
        (
            "err-gcm-tag-flipped",
            |o, b| {
                *o = b.strict.clone();
                let e = o.spec.entries.get_mut("access_key").unwrap();
                e.ciphertext = edit_b64(&e.ciphertext, |v| *v.last_mut().unwrap() ^= 1);
            },
            "DecryptFailed EntryAuth",
        ),
        (
            "err-nonce-flipped",
            |o, b| {
                *o = b.strict.clone();
                let e = o.spec.entries.get_mut("secret_key").unwrap();
                e.nonce = flip_b64(&e.nonce, 95);
            },
            "DecryptFailed EntryAuth",
        ),
        (
            "err-ciphertext-truncated",
            |o, b| {
                *o = b.strict.clone();
                let e = o.spec.entries.get_mut("access_key").unwrap();
                e.ciphertext = edit_b64(&e.ciphertext, |v| v.truncate(15));
            },
            "InvalidSpec Format.BadField",
        ),
        (
            "err-nonce-bad-base64",
            |o, b| {
                *o = b.strict.clone();
                o.spec.entries.get_mut("access_key").unwrap().nonce = "not*base64!!".into();
            },
            "InvalidSpec Format.BadField",
        ),
        (
            "err-wrapping-key-id-changed",
            |o, b| {
                *o = b.strict.clone();
                o.spec.data_keys[0].wrappings[0].key_id = "local:0000000000000000".into();
            },
            "InvalidSpec Provider.KeyNotAllowed",
        ),
    ]
}

impl Bases {
    /// The `name` entry of the merged object as it was right after the first seal.
    fn merged_first_entry(&self, name: &str) -> sealcred_shared::crd::SealedEntry {
        self.merged_history[0].spec.entries[name].clone()
    }
}

#[tokio::test]
#[ignore = "regenerates shared/tests/vectors; run by hand"]
async fn generate_vectors() {
    let dir = vectors_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(&dir).unwrap() {
        let p = f.unwrap().path();
        if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "expect")
        ) {
            std::fs::remove_file(p).unwrap();
        }
    }
    let key = dir.join(TEST_KEY_FILE);
    std::fs::write(&key, test_key_file_text()).unwrap();

    let mut out: Vec<(String, SealedStorageCred, String)> = Vec::new();

    let strict = seal_local(
        &input(
            "s3-creds",
            "flyte",
            Scope::Strict,
            strict_template(),
            None,
            STRICT,
        ),
        &key,
    )
    .await;
    out.push((
        "ok-strict-2-entries".into(),
        strict.clone(),
        format!("ok {}", digest_pairs(STRICT)),
    ));

    let ns = seal_local(
        &input(
            "db-creds",
            "flyte",
            Scope::NamespaceWide,
            opaque(),
            Some("postgres"),
            NS_WIDE,
        ),
        &key,
    )
    .await;
    out.push((
        "ok-namespace-wide".into(),
        ns.clone(),
        format!("ok {}", digest_pairs(NS_WIDE)),
    ));
    let mut renamed = ns.clone();
    renamed.metadata.name = Some("renamed-creds".into());
    out.push((
        "ok-namespace-wide-renamed".into(),
        renamed,
        format!("ok {}", digest_pairs(NS_WIDE)),
    ));

    let cw = seal_local(
        &input(
            "shared-token",
            "platform",
            Scope::ClusterWide,
            opaque(),
            None,
            CLUSTER,
        ),
        &key,
    )
    .await;
    out.push((
        "ok-cluster-wide".into(),
        cw.clone(),
        format!("ok {}", digest_pairs(CLUSTER)),
    ));
    let mut moved = cw.clone();
    moved.metadata.name = Some("elsewhere".into());
    moved.metadata.namespace = Some("other-ns".into());
    out.push((
        "ok-cluster-wide-moved".into(),
        moved,
        format!("ok {}", digest_pairs(CLUSTER)),
    ));

    // Scope cluster: a ClusterSealedStorageCred's sealed view (no namespace). It does not
    // open under a namespace (a SealedStorageCred), nor renamed.
    let mut cluster_in = input(
        "flyte-task-env",
        "unused",
        Scope::Cluster,
        opaque(),
        Some("flyte-task-env"),
        CLUSTER,
    );
    cluster_in.namespace = None;
    let cluster = seal_local(&cluster_in, &key).await;
    out.push((
        "ok-cluster".into(),
        cluster.clone(),
        format!("ok {}", digest_pairs(CLUSTER)),
    ));
    let mut in_namespace = cluster.clone();
    in_namespace.metadata.namespace = Some("flyte".into());
    out.push((
        "err-cluster-in-namespace".into(),
        in_namespace,
        "error InvalidSpec Format.ClusterScopeInNamespace".into(),
    ));
    let mut renamed_cluster = cluster.clone();
    renamed_cluster.metadata.name = Some("other-task-env".into());
    out.push((
        "err-cluster-renamed".into(),
        renamed_cluster,
        "error DecryptFailed Provider.InvalidCiphertext".into(),
    ));
    let mut widened = cluster.clone();
    widened.spec.scope = Scope::ClusterWide;
    out.push((
        "err-cluster-widened-to-cluster-wide".into(),
        widened,
        "error DecryptFailed Provider.InvalidCiphertext".into(),
    ));

    let m1 = seal_local(
        &input(
            "merged-creds",
            "flyte",
            Scope::Strict,
            opaque(),
            None,
            MERGE_1,
        ),
        &key,
    )
    .await;
    let m2 = merge_local(&m1, MERGE_2, &key).await;
    assert_eq!(m2.spec.data_keys.len(), 2);
    let m2_expect = {
        let mut m: BTreeMap<&str, &str> = MERGE_1.iter().copied().collect();
        m.extend(MERGE_2.iter().copied());
        let v: Vec<(&str, &str)> = m.into_iter().collect();
        format!("ok {}", digest_pairs(&v))
    };
    out.push((
        "ok-merged-2-data-keys".into(),
        m2.clone(),
        m2_expect.clone(),
    ));
    let m3 = merge_local(&m2, MERGE_3, &key).await;
    assert_eq!(m3.spec.data_keys.len(), 3);
    let v: Vec<(&str, &str)> = merged_plain().into_iter().collect();
    out.push((
        "ok-merged-3-data-keys".into(),
        m3.clone(),
        format!("ok {}", digest_pairs(&v)),
    ));

    // Only the newest data key's stateTag is read: an older one may be stale
    // (it always is after a merge) or absent.
    let mut older_untagged = m2.clone();
    older_untagged.spec.data_keys[0].state_tag = None;
    out.push((
        "ok-merged-older-state-tag-absent".into(),
        older_untagged,
        m2_expect,
    ));

    let bases = Bases {
        strict: strict.clone(),
        merged: m2.clone(),
        merged3: m3.clone(),
        merged_history: vec![m1.clone()],
    };
    for (name, mutate, class) in failures() {
        let mut o = ns.clone();
        mutate(&mut o, &bases);
        out.push((name.into(), o, format!("error {class}")));
    }

    for (name, obj, expect) in &out {
        // Never write a vector that does not do what it says.
        let got = match open(obj, &key).await {
            Ok(o) => format!("ok {}", digest_opened(&o)),
            Err(e) => format!("error {}", class(&e)),
        };
        assert_eq!(&got, expect, "{name}");
        let mut obj = obj.clone();
        for d in &mut obj.spec.data_keys {
            d.sealed_at = None; // keep the vectors free of wall-clock noise
        }
        std::fs::write(dir.join(format!("{name}.yaml")), to_yaml(&obj)).unwrap();
        std::fs::write(dir.join(format!("{name}.expect")), format!("{expect}\n")).unwrap();
    }

    write_worked_example(&dir, &key);
}

/// Writes `worked-example.txt`: every intermediate value of opening
/// `ok-strict-2-entries.yaml` (quoted in docs/FORMAT.md).
fn write_worked_example(dir: &Path, key: &Path) {
    assert_eq!(std::fs::read_to_string(key).unwrap(), test_key_file_text());
    let obj = from_yaml(&std::fs::read_to_string(dir.join("ok-strict-2-entries.yaml")).unwrap());
    std::fs::write(dir.join("worked-example.txt"), worked_example(&obj)).unwrap();
}

/// Regenerates only the RSA-wrapping vectors (`*-rsa-*`), leaving the others
/// (and the worked example) as they are:
///
/// ```text
/// cargo test -p sealcred-shared --test gen_vectors -- --ignored generate_rsa_vectors
/// ```
#[tokio::test]
#[ignore = "regenerates shared/tests/vectors/*-rsa-*; run by hand"]
async fn generate_rsa_vectors() {
    let dir = vectors_dir();
    let key = dir.join(TEST_KEY_FILE);
    let local = LocalKey::load(&key).unwrap();
    let public = test_rsa_public();
    let strict_in = input(
        "s3-creds",
        "flyte",
        Scope::Strict,
        strict_template(),
        None,
        STRICT,
    );
    let strict_ok = format!("ok {}", digest_pairs(STRICT));
    let rsa_only = seal::seal(&strict_in, &[&public]).await.unwrap().object;
    let mixed = seal::seal(&strict_in, &[&local, &public])
        .await
        .unwrap()
        .object;
    let m1 = seal_local(
        &input(
            "merged-creds",
            "flyte",
            Scope::Strict,
            opaque(),
            None,
            MERGE_1,
        ),
        &key,
    )
    .await;
    let merged = seal::merge(&m1, &entries(MERGE_2), seal::Keys::Given(&[&public]))
        .await
        .unwrap()
        .object;
    let merged_expect = {
        let mut m: BTreeMap<&str, &str> = MERGE_1.iter().copied().collect();
        m.extend(MERGE_2.iter().copied());
        let v: Vec<(&str, &str)> = m.into_iter().collect();
        format!("ok {}", digest_pairs(&v))
    };
    // The same object sealed for another namespace: its RSA wrapping carries
    // that namespace's binding check.
    let mut other_in = input(
        "s3-creds",
        "other-ns",
        Scope::Strict,
        strict_template(),
        None,
        STRICT,
    );
    other_in.namespace = Some("other-ns".into());
    let other = seal::seal(&other_in, &[&public]).await.unwrap().object;

    let invalid = "error DecryptFailed Provider.InvalidCiphertext".to_string();
    let mut out: Vec<(String, SealedStorageCred, String)> = vec![
        ("ok-rsa-strict".into(), rsa_only.clone(), strict_ok.clone()),
        (
            "ok-rsa-mixed-local-and-rsa".into(),
            mixed.clone(),
            strict_ok.clone(),
        ),
        ("ok-rsa-merged-into-local".into(), merged, merged_expect),
    ];
    let mut o = rsa_only.clone();
    o.metadata.namespace = Some("other-ns".into());
    out.push(("err-rsa-moved-namespace".into(), o, invalid.clone()));
    let mut o = rsa_only.clone();
    o.metadata.name = Some("other-name".into());
    out.push(("err-rsa-renamed".into(), o, invalid.clone()));
    let mut o = rsa_only.clone();
    o.spec.scope = Scope::NamespaceWide;
    out.push(("err-rsa-scope-edited".into(), o, invalid.clone()));
    let mut o = rsa_only.clone();
    let w = &mut o.spec.data_keys[0].wrappings[0];
    w.ciphertext = flip_b64(&w.ciphertext, 8 * 100);
    out.push(("err-rsa-ciphertext-flipped".into(), o, invalid.clone()));
    let mut o = rsa_only.clone();
    let w = &mut o.spec.data_keys[0].wrappings[0];
    w.ciphertext = edit_b64(&w.ciphertext, |b| b.truncate(255));
    out.push(("err-rsa-ciphertext-truncated".into(), o, invalid.clone()));
    // A wrapping taken from the object sealed for another namespace.
    let mut o = rsa_only.clone();
    o.spec.data_keys[0].wrappings[0] = other.spec.data_keys[0].wrappings[0].clone();
    out.push((
        "err-rsa-wrapping-from-other-object".into(),
        o,
        invalid.clone(),
    ));
    // Anyone with the public key can wrap a data key of their own, with the
    // right binding: the key commitment refuses it.
    let mut o = rsa_only.clone();
    let ctx = sealcred_shared::format::Binding::new(Scope::Strict, Some("flyte"), Some("s3-creds"))
        .unwrap()
        .encryption_context();
    let forged = public
        .encrypt(&sealcred_shared::secret::DataKey::random(), &ctx)
        .unwrap();
    o.spec.data_keys[0].wrappings[0].ciphertext = sealcred_shared::format::encode_b64(&forged);
    out.push((
        "err-rsa-wrapping-replaced".into(),
        o,
        "error DecryptFailed HeaderAuth.Commitment".into(),
    ));
    // The local wrapping of the mixed object removed: the header tag covers
    // the wrapping list.
    let mut o = mixed.clone();
    o.spec.data_keys[0].wrappings.remove(0);
    out.push((
        "err-rsa-mixed-local-wrapping-dropped".into(),
        o,
        "error DecryptFailed HeaderAuth.HeaderTag".into(),
    ));

    for (name, obj, expect) in &out {
        let got = match open(obj, &key).await {
            Ok(o) => format!("ok {}", digest_opened(&o)),
            Err(e) => format!("error {}", class(&e)),
        };
        assert_eq!(&got, expect, "{name}");
        let mut obj = obj.clone();
        for d in &mut obj.spec.data_keys {
            d.sealed_at = None;
        }
        std::fs::write(dir.join(format!("{name}.yaml")), to_yaml(&obj)).unwrap();
        std::fs::write(dir.join(format!("{name}.expect")), format!("{expect}\n")).unwrap();
    }
}
