//! The tamper matrix: every mutation of a freshly sealed object must make
//! `seal::open` fail with the right error class, and no error may carry the
//! plaintext. Plus the moves each scope allows, and property tests.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use common::tamper_cases::*;
use common::*;
use proptest::prelude::*;
use sealcred_shared::crd::{Scope, SealedStorageCred};
use sealcred_shared::keyring::{Allowlist, Keyring};
use sealcred_shared::provider::local::LocalKey;
use sealcred_shared::seal;

fn assert_no_plaintext(what: &str, e: &sealcred_shared::Error) {
    let shown = format!("{e} | {e:?}");
    for c in [CANARY_A, CANARY_S, CANARY_R, CANARY_NEW] {
        assert!(
            !shown.contains(c),
            "{what}: the error shows plaintext: {shown}"
        );
        assert!(
            !shown.contains(&c[7..]),
            "{what}: the error shows plaintext: {shown}"
        );
    }
}

#[tokio::test]
async fn tamper_matrix() {
    let fx = fixtures(key(), &Place::standard()).await;
    let cases = cases();
    assert!(cases.iter().filter(|c| c.3.is_some()).count() >= 20);
    let mut failed = Vec::new();
    for (what, base, mutate, want) in cases {
        let mut o = fx.base(base);
        let before = o.clone();
        mutate(&mut o, &fx);
        if want.is_some() {
            assert_ne!(
                to_yaml(&o),
                to_yaml(&before),
                "{what}: the mutation changed nothing"
            );
        }
        // Through YAML, as a reader would see it.
        let o = from_yaml(&to_yaml(&o));
        let got = seal::open(&o, &keyring(key())).await;
        match (got, want) {
            (Ok(opened), None) => {
                let want = expected_values(base);
                let got: BTreeMap<&str, &[u8]> = opened
                    .entries
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.expose()))
                    .collect();
                let want: BTreeMap<&str, &[u8]> =
                    want.into_iter().map(|(k, v)| (k, v.as_bytes())).collect();
                if got != want {
                    failed.push(format!("{what}: opened with the wrong values"));
                }
            }
            (Ok(_), Some(w)) => failed.push(format!("{what}: opened, expected {w}")),
            (Err(e), None) => {
                failed.push(format!("{what}: expected to open, got {}: {e}", class(&e)))
            }
            (Err(e), Some(w)) => {
                assert_no_plaintext(what, &e);
                if class(&e) != w {
                    failed.push(format!("{what}: expected {w}, got {}: {e}", class(&e)));
                }
            }
        }
    }
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}

/// A keyring whose allowlist does not include the key fails before any call.
#[tokio::test]
async fn allowlist_is_checked_before_unwrapping() {
    let fx = fixtures(key(), &Place::standard()).await;
    let kr = Keyring::new(
        Allowlist::only(["arn:aws:kms:eu-west-1:111122223333:key/*".to_string()]),
        Some(key().to_path_buf()),
    );
    let e = seal::open(&fx.strict, &kr).await.err().unwrap();
    assert_eq!(class(&e), "InvalidSpec Provider.KeyNotAllowed");
}

/// 13.3: an object over the caps (9 wrappings, each naming the real, allowed key;
/// 33 data keys) is refused with a `BadField` naming the field, before any
/// provider call (the observer counts every call the keyring makes).
#[tokio::test]
async fn caps_are_checked_before_any_key_call() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fx = fixtures(key(), &Place::standard()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let kr = keyring(key()).with_observer(Arc::new(move |_, _, _, _| {
        seen.fetch_add(1, Ordering::SeqCst);
    }));
    seal::open(&fx.strict, &kr)
        .await
        .expect("the fixture opens");
    assert_eq!(
        calls.swap(0, Ordering::SeqCst),
        1,
        "the observer sees calls"
    );

    let mut wide = fx.strict.clone();
    let w = wide.spec.data_keys[0].wrappings[0].clone();
    while wide.spec.data_keys[0].wrappings.len() < 9 {
        wide.spec.data_keys[0].wrappings.push(w.clone());
    }
    let e = seal::open(&wide, &kr).await.err().unwrap();
    assert_eq!(class(&e), BAD_FIELD, "{e}");
    assert!(e.to_string().contains("dataKeys[0].wrappings"), "{e}");
    assert!(e.to_string().contains("at most 8"), "{e}");

    let mut long = fx.history[3].clone();
    let d = long.spec.data_keys[0].clone();
    while long.spec.data_keys.len() < 33 {
        long.spec.data_keys.push(d.clone());
    }
    let e = seal::open(&long, &kr).await.err().unwrap();
    assert_eq!(class(&e), BAD_FIELD, "{e}");
    assert!(
        e.to_string()
            .starts_with("dataKeys: 33 data keys, at most 32"),
        "{e}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no key was called");
}

/// Formerly a known limitation: after two merges, drop the second data key
/// (endpoint, secret_key) with the entry only it held, put back the first
/// seal's secret_key, keep the third merge's region. Structurally consistent
/// and every data key's header verifies, but the state never existed: the
/// newest data key's state tag (over the whole entry list) rejects it.
#[tokio::test]
async fn partial_rollback_by_dropping_a_data_key_is_rejected() {
    let k = key();
    let m1 = seal_local(
        &input(
            "creds",
            "flyte",
            Scope::Strict,
            template("s3-creds"),
            None,
            PAIRS,
        ),
        k,
    )
    .await;
    let m2 = merge_local(&m1, &[("endpoint", "e2"), ("secret_key", "s2")], k).await;
    let m3 = merge_local(&m2, &[("region", "r3")], k).await;
    assert_eq!(m3.spec.data_keys.len(), 3);
    let mut forged = m3.clone();
    let second = forged.spec.data_keys[1].id.clone();
    forged.spec.data_keys.retain(|d| d.id != second);
    forged.spec.entries.remove("endpoint");
    forged
        .spec
        .entries
        .insert("secret_key".into(), m1.spec.entries["secret_key"].clone());
    // Structurally fine: the supersede rule and the head rule hold.
    let parsed = sealcred_shared::format::ParsedSpec::parse(&forged.spec).unwrap();
    assert_eq!(
        parsed.data_keys[parsed.head].id_b64,
        m3.spec.data_keys[2].id
    );
    let e = open(&forged, k).await.expect_err("the forged state opened");
    assert_no_plaintext("partial rollback", &e);
    assert_eq!(class(&e), STATE, "{e}");
}

/// What remains (FORMAT.md, "What merge-without-decrypt costs"): dropping the
/// newest data key together with exactly the entries it introduced, and
/// putting back exactly what it replaced, yields the previous sealed object
/// byte for byte; it verifies, as every earlier sealed state does.
#[tokio::test]
async fn dropping_the_newest_data_key_is_a_whole_object_rollback() {
    let fx = fixtures(key(), &Place::standard()).await;
    let h = &fx.history;
    // h3 -> h2: drop dk3, put back h0's region (what dk3 replaced).
    let mut back = h[3].clone();
    back.spec.data_keys.pop();
    back.spec
        .entries
        .insert("region".into(), h[0].spec.entries["region"].clone());
    assert_eq!(to_yaml(&back), to_yaml(&h[2]));
    // h3 -> h1: also drop dk2, put back h0's secret_key.
    let mut back2 = back.clone();
    back2.spec.data_keys.pop();
    back2
        .spec
        .entries
        .insert("secret_key".into(), h[0].spec.entries["secret_key"].clone());
    assert_eq!(to_yaml(&back2), to_yaml(&h[1]));
    for (o, i) in [(&back, 2), (&back2, 1)] {
        let opened = open(o, key()).await.unwrap();
        let got: BTreeMap<&str, &[u8]> = opened
            .entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        let want: BTreeMap<&str, &[u8]> = history_values(i)
            .into_iter()
            .map(|(k, v)| (k, v.as_bytes()))
            .collect();
        assert_eq!(got, want, "h{i}");
    }
}

/// Exhaustive: of every object assembled from pieces of one object's history
/// (for each entry name: absent, or any value it ever had; the data keys those
/// values need), exactly the four sealed states open.
#[tokio::test]
async fn only_earlier_sealed_states_verify() {
    let fx = fixtures(key(), &Place::standard()).await;
    let h = &fx.history;
    // every (name -> entry) ever sealed, and every data key ever present
    let mut versions: BTreeMap<String, Vec<sealcred_shared::crd::SealedEntry>> = BTreeMap::new();
    for st in h {
        for (n, e) in &st.spec.entries {
            let v = versions.entry(n.clone()).or_default();
            if !v.contains(e) {
                v.push(e.clone());
            }
        }
    }
    let all_keys = h[3].spec.data_keys.clone();
    let names: Vec<String> = versions.keys().cloned().collect();
    let mut choice = vec![0usize; names.len()]; // 0 = absent, i = versions[i-1]
    let mut opened = Vec::new();
    let mut tried = 0;
    loop {
        let mut o = h[3].clone();
        o.spec.entries.clear();
        for (n, &c) in names.iter().zip(&choice) {
            if c > 0 {
                o.spec.entries.insert(n.clone(), versions[n][c - 1].clone());
            }
        }
        o.spec.data_keys = all_keys
            .iter()
            .filter(|d| o.spec.entries.values().any(|e| e.data_key == d.id))
            .cloned()
            .collect();
        if !o.spec.entries.is_empty() {
            tried += 1;
            if open(&o, key()).await.is_ok() {
                opened.push(to_yaml(&o));
            }
        }
        // next choice (odometer)
        let mut i = 0;
        while i < names.len() {
            choice[i] += 1;
            if choice[i] <= versions[&names[i]].len() {
                break;
            }
            choice[i] = 0;
            i += 1;
        }
        if i == names.len() {
            break;
        }
    }
    assert_eq!(tried, 2 * 3 * 3 * 2 - 1);
    opened.sort();
    let mut want: Vec<String> = h.iter().map(to_yaml).collect();
    want.sort();
    assert_eq!(opened, want);
}

// ---------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn entry_name() -> impl Strategy<Value = String> {
    "[-._a-zA-Z0-9]{1,24}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        Just(Scope::Strict),
        Just(Scope::NamespaceWide),
        Just(Scope::ClusterWide)
    ]
}

fn values() -> impl Strategy<Value = BTreeMap<String, Vec<u8>>> {
    prop::collection::btree_map(
        entry_name(),
        prop::collection::vec(any::<u8>(), 0..80),
        1..6,
    )
}

fn seal_values(name: &str, scope: Scope, v: &BTreeMap<String, Vec<u8>>) -> SealedStorageCred {
    let input = seal::SealInput {
        name: name.into(),
        namespace: Some("ns".into()),
        scope,
        template: template("s3-creds"),
        profile: None,
        entries: v
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    sealcred_shared::secret::SecretBytes::copy_from(v),
                )
            })
            .collect(),
    };
    rt().block_on(seal_local(&input, key()))
}

/// Every base64-decoded binary field of an object, as (path, setter) pairs.
fn binary_fields(o: &SealedStorageCred) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (i, d) in o.spec.data_keys.iter().enumerate() {
        out.push((format!("dk{i}.id"), 32));
        out.push((format!("dk{i}.commitment"), 32));
        out.push((format!("dk{i}.headerTag"), 32));
        for (j, _) in d.supersedes.iter().enumerate() {
            out.push((format!("dk{i}.supersedes{j}"), 32));
        }
        for (j, w) in d.wrappings.iter().enumerate() {
            out.push((format!("dk{i}.wrapping{j}"), decode_len(&w.ciphertext)));
        }
        // Only the head's state tag is read (an older one is stale by design).
        let head = !o
            .spec
            .data_keys
            .iter()
            .any(|x| x.supersedes.contains(&d.id));
        if head {
            out.push((format!("dk{i}.stateTag"), 32));
        }
    }
    for (n, e) in &o.spec.entries {
        out.push((format!("entry.{n}.dataKey"), 32));
        out.push((format!("entry.{n}.nonce"), 12));
        out.push((format!("entry.{n}.ciphertext"), decode_len(&e.ciphertext)));
    }
    out
}

fn decode_len(s: &str) -> usize {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap()
        .len()
}

fn flip_field(o: &mut SealedStorageCred, path: &str, bit: usize) {
    let parts: Vec<&str> = path.splitn(3, '.').collect();
    if let Some(i) = parts[0].strip_prefix("dk") {
        let d = &mut o.spec.data_keys[i.parse::<usize>().unwrap()];
        let f = parts[1];
        let s = if f == "id" {
            &mut d.id
        } else if f == "commitment" {
            &mut d.commitment
        } else if f == "headerTag" {
            &mut d.header_tag
        } else if f == "stateTag" {
            d.state_tag.as_mut().unwrap()
        } else if let Some(j) = f.strip_prefix("supersedes") {
            &mut d.supersedes[j.parse::<usize>().unwrap()]
        } else {
            let j = f.strip_prefix("wrapping").unwrap();
            &mut d.wrappings[j.parse::<usize>().unwrap()].ciphertext
        };
        *s = flip_b64(s, bit);
    } else {
        let e = o.spec.entries.get_mut(parts[1]).unwrap();
        let s = match parts[2] {
            "dataKey" => &mut e.data_key,
            "nonce" => &mut e.nonce,
            _ => &mut e.ciphertext,
        };
        *s = flip_b64(s, bit);
    }
}

/// A merged object with two data keys and supersedes, sealed once.
fn merged_fixture() -> &'static SealedStorageCred {
    static M: OnceLock<SealedStorageCred> = OnceLock::new();
    M.get_or_init(|| rt().block_on(fixtures(key(), &Place::standard())).merged)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any valid names and values round trip, in every scope.
    #[test]
    fn round_trip(v in values(), scope in scope()) {
        let o = seal_values("obj", scope, &v);
        let o = from_yaml(&to_yaml(&o));
        let opened = rt().block_on(open(&o, key())).unwrap();
        let got: BTreeMap<String, Vec<u8>> = opened
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_vec()))
            .collect();
        prop_assert_eq!(got, v);
    }

    /// Any single bit flip in any base64-decoded binary field fails to open.
    #[test]
    fn any_bit_flip_fails(field in any::<prop::sample::Index>(), bit in any::<prop::sample::Index>()) {
        let base = merged_fixture();
        let fields = binary_fields(base);
        let (path, len) = &fields[field.index(fields.len())];
        let mut o = base.clone();
        flip_field(&mut o, path, bit.index(len * 8));
        prop_assert!(rt().block_on(open(&o, key())).is_err(), "{} bit {} opened", path, bit.index(len * 8));
    }

    /// Merge never decrypts and touches nothing else: every untouched entry
    /// and every surviving data key is byte-identical, the new data key comes
    /// last and supersedes every old one, and a data key is dropped only when
    /// all its entries were replaced.
    #[test]
    fn merge_leaves_the_rest_alone(
        first in prop::collection::btree_map("[a-f]", prop::collection::vec(any::<u8>(), 0..16), 1..5),
        second in prop::collection::btree_map("[a-f]", prop::collection::vec(any::<u8>(), 0..16), 1..5),
        third in prop::collection::btree_map("[a-f]", prop::collection::vec(any::<u8>(), 0..16), 1..5),
    ) {
        let mut o = seal_values("m", Scope::Strict, &first);
        let mut expect = first.clone();
        for next in [&second, &third] {
            let pairs: BTreeMap<String, sealcred_shared::secret::SecretBytes> = next
                .iter()
                .map(|(k, v)| (k.clone(), sealcred_shared::secret::SecretBytes::copy_from(v)))
                .collect();
            let k = LocalKey::load(key()).unwrap();
            let m = rt()
                .block_on(seal::merge(&o, &pairs, seal::Keys::Given(&[&k])))
                .unwrap()
                .object;
            for (n, e) in &o.spec.entries {
                if !next.contains_key(n) {
                    prop_assert_eq!(&m.spec.entries[n], e, "entry {} changed", n);
                }
            }
            let new = m.spec.data_keys.last().unwrap();
            prop_assert!(new.state_tag.is_some(), "the new data key has no stateTag");
            let old_ids: Vec<String> = {
                let mut v: Vec<String> = o.spec.data_keys.iter().map(|d| d.id.clone()).collect();
                v.sort();
                v
            };
            prop_assert_eq!(&new.supersedes, &old_ids);
            prop_assert_eq!(&new.names, &next.keys().cloned().collect::<Vec<_>>());
            for d in &o.spec.data_keys {
                let live = m.spec.entries.values().any(|e| e.data_key == d.id);
                match m.spec.data_keys.iter().find(|x| x.id == d.id) {
                    Some(x) => {
                        prop_assert!(live);
                        // including its (now stale) stateTag
                        prop_assert_eq!(&x.state_tag, &d.state_tag, "stateTag changed");
                        prop_assert_eq!(x, d, "data key changed");
                    }
                    None => prop_assert!(!live),
                }
            }
            // old data keys keep their relative order, before the new one
            let kept: Vec<&String> = m.spec.data_keys.iter().map(|d| &d.id).collect();
            let was: Vec<&String> = o.spec.data_keys.iter().map(|d| &d.id).filter(|id| kept.contains(id)).collect();
            prop_assert_eq!(&kept[..kept.len() - 1], &was[..]);
            expect.extend(next.iter().map(|(k, v)| (k.clone(), v.clone())));
            o = m;
        }
        let opened = rt().block_on(open(&o, key())).unwrap();
        let got: BTreeMap<String, Vec<u8>> = opened
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_vec()))
            .collect();
        prop_assert_eq!(got, expect);
    }
}

#[test]
fn tamper_helpers_sanity() {
    // flip_b64 is an involution and changes exactly one bit
    let s = encode(&[0u8; 32]);
    assert_ne!(flip_b64(&s, 5), s);
    assert_eq!(flip_b64(&flip_b64(&s, 5), 5), s);
    let _ = Path::new("");
}
