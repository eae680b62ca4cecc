//! The tamper matrix: every mutation of a freshly sealed object must make
//! `seal::open` fail with the right error class, and no error may carry the
//! plaintext. Plus the moves each scope allows, and property tests.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use proptest::prelude::*;
use sealcred_shared::crd::{Scope, SealedStorageCred, SecretTemplate, Wrapping};
use sealcred_shared::keyring::{Allowlist, Keyring};
use sealcred_shared::provider::local::LocalKey;
use sealcred_shared::seal;

const CANARY_A: &str = "CANARY-access-5d1f0c";
const CANARY_S: &str = "CANARY-secret-a93e77";
const CANARY_R: &str = "CANARY-region-0b42d8";
const CANARY_NEW: &str = "CANARY-merged-77c1aa";

/// One tempdir key file for the whole test binary.
fn key() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("local.key");
        LocalKey::create(&p).unwrap();
        (d, p)
    });
    p
}

fn template() -> SecretTemplate {
    SecretTemplate {
        name: Some("s3-creds".into()),
        type_: "Opaque".into(),
        labels: [("app".to_string(), "flyte".to_string())].into(),
        annotations: [("team".to_string(), "data".to_string())].into(),
    }
}

const PAIRS: &[(&str, &str)] = &[
    ("access_key", CANARY_A),
    ("region", CANARY_R),
    ("secret_key", CANARY_S),
];

/// The objects a case starts from.
struct Fx {
    /// strict, three entries, one data key.
    strict: SealedStorageCred,
    /// Another strict object with the same namespace/name and entry names.
    strict_twin: SealedStorageCred,
    /// A strict object in another namespace.
    strict_elsewhere: SealedStorageCred,
    /// namespace-wide.
    ns_wide: SealedStorageCred,
    /// cluster-wide.
    cluster: SealedStorageCred,
    /// `strict` merged with a new `secret_key` and `endpoint` (two data keys).
    merged: SealedStorageCred,
    /// `strict` merged with `token` instead: a merge concurrent with `merged`.
    merged_concurrent: SealedStorageCred,
    /// A strict object with the same namespace/name and one entry, `token`.
    foreign: SealedStorageCred,
    /// Four sealed states of one object, each merged from the one before:
    /// h0 = `strict` (dk0: access_key, region, secret_key); h1 adds endpoint
    /// (dk1, new names only); h2 replaces secret_key (dk2); h3 replaces region
    /// (dk3). Every data key of h3 is byte-identical to its earlier self.
    history: Vec<SealedStorageCred>,
}

const H1: &[(&str, &str)] = &[("endpoint", "h1-endpoint")];
const H2: &[(&str, &str)] = &[("secret_key", "h2-secret")];
const H3: &[(&str, &str)] = &[("region", "h3-region")];

/// The plaintexts of `history[i]`.
fn history_values(i: usize) -> BTreeMap<&'static str, &'static str> {
    let mut m: BTreeMap<&str, &str> = PAIRS.iter().copied().collect();
    for step in [H1, H2, H3].iter().take(i) {
        m.extend(step.iter().copied());
    }
    m
}

async fn fixtures() -> Fx {
    let k = key();
    let strict = seal_local(
        &input("creds", "flyte", Scope::Strict, template(), None, PAIRS),
        k,
    )
    .await;
    let strict_twin = seal_local(
        &input("creds", "flyte", Scope::Strict, template(), None, PAIRS),
        k,
    )
    .await;
    let strict_elsewhere = seal_local(
        &input("creds", "other", Scope::Strict, template(), None, PAIRS),
        k,
    )
    .await;
    let ns_wide = seal_local(
        &input(
            "creds",
            "flyte",
            Scope::NamespaceWide,
            template(),
            None,
            PAIRS,
        ),
        k,
    )
    .await;
    let cluster = seal_local(
        &input(
            "creds",
            "flyte",
            Scope::ClusterWide,
            template(),
            None,
            PAIRS,
        ),
        k,
    )
    .await;
    let merged = merge_local(
        &strict,
        &[("endpoint", CANARY_NEW), ("secret_key", CANARY_NEW)],
        k,
    )
    .await;
    assert_eq!(merged.spec.data_keys.len(), 2);
    let merged_concurrent = merge_local(&strict, &[("token", CANARY_NEW)], k).await;
    let foreign = seal_local(
        &input(
            "creds",
            "flyte",
            Scope::Strict,
            template(),
            None,
            &[("token", CANARY_NEW)],
        ),
        k,
    )
    .await;
    let mut history = vec![strict.clone()];
    for step in [H1, H2, H3] {
        let next = merge_local(history.last().unwrap(), step, k).await;
        history.push(next);
    }
    assert_eq!(history[3].spec.data_keys.len(), 4);
    Fx {
        strict,
        strict_twin,
        strict_elsewhere,
        ns_wide,
        cluster,
        merged,
        merged_concurrent,
        foreign,
        history,
    }
}

#[derive(Clone, Copy)]
enum Base {
    Strict,
    NsWide,
    Cluster,
    Merged,
    /// `history[3]` (four data keys).
    History,
}

type Mutation = fn(&mut SealedStorageCred, &Fx);

/// `None` = must open; `Some(class)` = must fail with `class` (see `common::class`).
type Case = (&'static str, Base, Mutation, Option<&'static str>);

const TAMPERED: &str = "DecryptFailed EntryAuth";
const HEADER: &str = "DecryptFailed HeaderAuth.HeaderTag";
const COMMIT: &str = "DecryptFailed HeaderAuth.Commitment";
const UNWRAP: &str = "DecryptFailed Provider.InvalidCiphertext";
const INCONSISTENT: &str = "InvalidSpec Format.Inconsistent";
const BAD_FIELD: &str = "InvalidSpec Format.BadField";
const STATE: &str = "DecryptFailed HeaderAuth.StateTag";

fn entry<'a>(
    o: &'a mut SealedStorageCred,
    name: &str,
) -> &'a mut sealcred_shared::crd::SealedEntry {
    o.spec.entries.get_mut(name).unwrap()
}

/// Removes the data key with id `id`.
fn drop_data_key(o: &mut SealedStorageCred, id: &str) {
    o.spec.data_keys.retain(|d| d.id != id);
}

fn state_tag(o: &mut SealedStorageCred, i: usize) -> &mut String {
    o.spec.data_keys[i].state_tag.as_mut().unwrap()
}

fn cases() -> Vec<Case> {
    use Base::*;
    vec![
        // --- entries moved around -------------------------------------------------
        (
            "swap two entries' ciphertexts",
            Strict,
            |o, _| {
                let a = o.spec.entries["access_key"].ciphertext.clone();
                let s = o.spec.entries["secret_key"].ciphertext.clone();
                entry(o, "access_key").ciphertext = s;
                entry(o, "secret_key").ciphertext = a;
            },
            Some(TAMPERED),
        ),
        (
            "swap two whole entries (nonce and ciphertext)",
            Strict,
            |o, _| {
                let a = o.spec.entries["access_key"].clone();
                let s = o.spec.entries["secret_key"].clone();
                o.spec.entries.insert("access_key".into(), s);
                o.spec.entries.insert("secret_key".into(), a);
            },
            Some(TAMPERED),
        ),
        (
            "rename an entry (entries map only)",
            Strict,
            |o, _| {
                let e = o.spec.entries.remove("region").unwrap();
                o.spec.entries.insert("zone".into(), e);
            },
            Some(INCONSISTENT),
        ),
        (
            "rename an entry in entries and in names",
            Strict,
            |o, _| {
                let e = o.spec.entries.remove("region").unwrap();
                o.spec.entries.insert("zone".into(), e);
                let n = &mut o.spec.data_keys[0].names;
                n.retain(|x| x != "region");
                n.push("zone".into());
                n.sort();
            },
            Some(HEADER),
        ),
        (
            "drop an entry",
            Strict,
            |o, _| {
                o.spec.entries.remove("region");
            },
            Some(INCONSISTENT),
        ),
        (
            "drop an entry and its name",
            Strict,
            |o, _| {
                o.spec.entries.remove("region");
                o.spec.data_keys[0].names.retain(|x| x != "region");
            },
            Some(HEADER),
        ),
        (
            "splice an entry from another object (as is)",
            Strict,
            |o, fx| {
                o.spec.entries.insert(
                    "region".into(),
                    fx.strict_twin.spec.entries["region"].clone(),
                );
            },
            Some(INCONSISTENT),
        ),
        (
            "splice an entry from another object (dataKey rewritten)",
            Strict,
            |o, fx| {
                let mut e = fx.strict_twin.spec.entries["region"].clone();
                e.data_key = o.spec.data_keys[0].id.clone();
                o.spec.entries.insert("region".into(), e);
            },
            Some(TAMPERED),
        ),
        (
            "replay the older value of an entry after a merge",
            Merged,
            |o, fx| {
                o.spec.entries.insert(
                    "secret_key".into(),
                    fx.strict.spec.entries["secret_key"].clone(),
                );
            },
            Some(INCONSISTENT),
        ),
        (
            "replay an older value and drop the newer data key",
            Merged,
            |o, fx| {
                // endpoint only exists under the newer key: dropping it all is a rollback,
                // but keeping endpoint makes the object inconsistent
                o.spec.entries.insert(
                    "secret_key".into(),
                    fx.strict.spec.entries["secret_key"].clone(),
                );
                o.spec.data_keys.truncate(1);
            },
            Some(INCONSISTENT),
        ),
        (
            "point a merged entry at the older data key",
            Merged,
            |o, _| {
                let first = o.spec.data_keys[0].id.clone();
                entry(o, "secret_key").data_key = first;
            },
            Some(INCONSISTENT),
        ),
        (
            "drop the newer data key's supersedes",
            Merged,
            |o, _| {
                o.spec.data_keys[1].supersedes.clear();
            },
            Some(INCONSISTENT),
        ),
        (
            "drop a data key of a merged object",
            Merged,
            |o, _| {
                o.spec.data_keys.remove(0);
            },
            Some(INCONSISTENT),
        ),
        (
            "swap the data keys' order",
            Merged,
            |o, _| {
                o.spec.data_keys.swap(0, 1);
            },
            None,
        ), // order is not significant: each header covers only its own data key, and the
        // head is found through `supersedes`
        (
            "drop an entry of a merged object",
            Merged,
            |o, _| {
                o.spec.entries.remove("endpoint");
            },
            Some(INCONSISTENT),
        ),
        (
            "add a foreign entry under a new name (our data key)",
            Strict,
            |o, fx| {
                let mut e = fx.foreign.spec.entries["token"].clone();
                e.data_key = o.spec.data_keys[0].id.clone();
                o.spec.entries.insert("token".into(), e);
            },
            Some(INCONSISTENT),
        ),
        (
            "add a foreign entry with its data key (same binding)",
            Strict,
            |o, fx| {
                // two data keys superseded by no other
                o.spec.data_keys.push(fx.foreign.spec.data_keys[0].clone());
                o.spec
                    .entries
                    .insert("token".into(), fx.foreign.spec.entries["token"].clone());
            },
            Some(INCONSISTENT),
        ),
        (
            "add a foreign entry with its data key, made to supersede ours",
            Strict,
            |o, fx| {
                let mut d = fx.foreign.spec.data_keys[0].clone();
                d.supersedes = vec![o.spec.data_keys[0].id.clone()];
                o.spec.data_keys.push(d);
                o.spec
                    .entries
                    .insert("token".into(), fx.foreign.spec.entries["token"].clone());
            },
            Some(HEADER),
        ),
        (
            "combine two concurrent merges",
            Merged,
            |o, fx| {
                // both new data keys supersede the first one: two heads
                o.spec
                    .data_keys
                    .push(fx.merged_concurrent.spec.data_keys[1].clone());
                o.spec.entries.insert(
                    "token".into(),
                    fx.merged_concurrent.spec.entries["token"].clone(),
                );
            },
            Some(INCONSISTENT),
        ),
        // --- rollbacks of parts of the history (h3: four data keys) ---------------
        (
            "drop an older data key that only added names, with its entries",
            History,
            |o, _| {
                let dk1 = o.spec.data_keys[1].id.clone();
                drop_data_key(o, &dk1);
                o.spec.entries.remove("endpoint");
            },
            Some(STATE),
        ),
        (
            "partial rollback: drop a middle data key, put back the value it replaced",
            History,
            |o, fx| {
                let dk2 = o.spec.data_keys[2].id.clone();
                drop_data_key(o, &dk2);
                o.spec.entries.insert(
                    "secret_key".into(),
                    fx.history[0].spec.entries["secret_key"].clone(),
                );
            },
            Some(STATE),
        ),
        (
            "drop the newest data key and its entry, restoring nothing",
            History,
            |o, _| {
                o.spec.data_keys.pop();
                o.spec.entries.remove("region");
            },
            Some(INCONSISTENT),
        ),
        (
            "drop the newest data key entirely, keeping its entry",
            History,
            |o, _| {
                o.spec.data_keys.pop();
            },
            Some(INCONSISTENT),
        ),
        (
            "drop the newest data key (restoring what it replaced) and an older one's entries",
            History,
            |o, fx| {
                // back to h2, except that dk1 and endpoint are also gone: h2's head (dk2)
                // recorded endpoint
                o.spec.data_keys.pop();
                o.spec.entries.insert(
                    "region".into(),
                    fx.history[0].spec.entries["region"].clone(),
                );
                let dk1 = o.spec.data_keys[1].id.clone();
                drop_data_key(o, &dk1);
                o.spec.entries.remove("endpoint");
            },
            Some(STATE),
        ),
        (
            "two heads: the newest data key no longer supersedes one nobody needs replaced",
            History,
            |o, _| {
                let dk2 = o.spec.data_keys[2].id.clone();
                o.spec.data_keys[3].supersedes.retain(|s| *s != dk2);
            },
            Some(INCONSISTENT),
        ),
        (
            "add an absent id to the newest data key's supersedes",
            History,
            |o, _| {
                let s = &mut o.spec.data_keys[3].supersedes;
                s.push(encode(&[9u8; 32]));
                s.sort();
            },
            Some(HEADER),
        ),
        // --- the state tag --------------------------------------------------------
        (
            "remove the stateTag (one data key)",
            Strict,
            |o, _| {
                o.spec.data_keys[0].state_tag = None;
            },
            Some(BAD_FIELD),
        ),
        (
            "remove the stateTag from the newest data key",
            Merged,
            |o, _| {
                o.spec.data_keys[1].state_tag = None;
            },
            Some(BAD_FIELD),
        ),
        (
            "remove the stateTag from an older data key",
            Merged,
            |o, _| {
                o.spec.data_keys[0].state_tag = None;
            },
            None,
        ), // only the head's state tag is read
        (
            "flip a bit in the stateTag",
            Strict,
            |o, _| {
                let t = state_tag(o, 0);
                *t = flip_b64(t, 31);
            },
            Some(STATE),
        ),
        (
            "flip a bit in the newest data key's stateTag",
            History,
            |o, _| {
                let t = state_tag(o, 3);
                *t = flip_b64(t, 250);
            },
            Some(STATE),
        ),
        (
            "flip a bit in an older data key's stateTag",
            Merged,
            |o, _| {
                let t = state_tag(o, 0);
                *t = flip_b64(t, 31);
            },
            None,
        ), // stale by design after a merge, and not read
        (
            "give the newest data key an older one's (stale) stateTag",
            History,
            |o, _| {
                o.spec.data_keys[3].state_tag = o.spec.data_keys[2].state_tag.clone();
            },
            Some(STATE),
        ),
        (
            "give the newest data key another object's stateTag",
            Strict,
            |o, fx| {
                o.spec.data_keys[0].state_tag = fx.strict_twin.spec.data_keys[0].state_tag.clone();
            },
            Some(STATE),
        ),
        // --- metadata and scope ---------------------------------------------------
        (
            "strict: move to another namespace",
            Strict,
            |o, _| {
                o.metadata.namespace = Some("other".into());
            },
            Some(UNWRAP),
        ),
        (
            "strict: rename",
            Strict,
            |o, _| {
                o.metadata.name = Some("other".into());
            },
            Some(UNWRAP),
        ),
        (
            "namespace-wide: rename is allowed",
            NsWide,
            |o, _| {
                o.metadata.name = Some("other".into());
            },
            None,
        ),
        (
            "namespace-wide: move to another namespace",
            NsWide,
            |o, _| {
                o.metadata.namespace = Some("other".into());
            },
            Some(UNWRAP),
        ),
        (
            "cluster-wide: rename and move are allowed",
            Cluster,
            |o, _| {
                o.metadata.name = Some("other".into());
                o.metadata.namespace = Some("elsewhere".into());
            },
            None,
        ),
        (
            "sealedAt is informational",
            Strict,
            |o, _| {
                o.spec.data_keys[0].sealed_at = Some("1999-01-01T00:00:00Z".into());
            },
            None,
        ),
        (
            "scope strict -> namespace-wide",
            Strict,
            |o, _| {
                o.spec.scope = Scope::NamespaceWide;
            },
            Some(UNWRAP),
        ),
        (
            "scope strict -> cluster-wide",
            Strict,
            |o, _| {
                o.spec.scope = Scope::ClusterWide;
            },
            Some(UNWRAP),
        ),
        (
            "scope cluster-wide -> strict",
            Cluster,
            |o, _| {
                o.spec.scope = Scope::Strict;
            },
            Some(UNWRAP),
        ),
        (
            "strict object without a namespace",
            Strict,
            |o, _| {
                o.metadata.namespace = None;
            },
            Some("InvalidSpec Format.MissingMetadata"),
        ),
        // --- bit flips ------------------------------------------------------------
        (
            "flip a bit in a ciphertext",
            Strict,
            |o, _| {
                let e = entry(o, "secret_key");
                e.ciphertext = flip_b64(&e.ciphertext, 0);
            },
            Some(TAMPERED),
        ),
        (
            "flip a bit in a GCM tag",
            Strict,
            |o, _| {
                let e = entry(o, "secret_key");
                e.ciphertext = edit_b64(&e.ciphertext, |v| *v.last_mut().unwrap() ^= 0x80);
            },
            Some(TAMPERED),
        ),
        (
            "flip a bit in a nonce",
            Strict,
            |o, _| {
                let e = entry(o, "secret_key");
                e.nonce = flip_b64(&e.nonce, 50);
            },
            Some(TAMPERED),
        ),
        (
            "flip a bit in the wrapped key",
            Strict,
            |o, _| {
                let w = &mut o.spec.data_keys[0].wrappings[0];
                w.ciphertext = flip_b64(&w.ciphertext, 300);
            },
            Some(UNWRAP),
        ),
        (
            "flip a bit in the commitment",
            Strict,
            |o, _| {
                let d = &mut o.spec.data_keys[0];
                d.commitment = flip_b64(&d.commitment, 255);
            },
            Some(COMMIT),
        ),
        (
            "flip a bit in the header tag",
            Strict,
            |o, _| {
                let d = &mut o.spec.data_keys[0];
                d.header_tag = flip_b64(&d.header_tag, 128);
            },
            Some(HEADER),
        ),
        (
            "flip a bit in the data-key id (dataKeys only)",
            Strict,
            |o, _| {
                let d = &mut o.spec.data_keys[0];
                d.id = flip_b64(&d.id, 7);
            },
            Some(INCONSISTENT),
        ),
        (
            "flip a bit in the data-key id (everywhere)",
            Strict,
            |o, _| {
                let old = o.spec.data_keys[0].id.clone();
                let new = flip_b64(&old, 7);
                o.spec.data_keys[0].id = new.clone();
                for e in o.spec.entries.values_mut() {
                    e.data_key = new.clone();
                }
            },
            Some(COMMIT),
        ),
        (
            "flip a bit in an entry's dataKey",
            Strict,
            |o, _| {
                let e = entry(o, "region");
                e.data_key = flip_b64(&e.data_key, 100);
            },
            Some(INCONSISTENT),
        ),
        (
            "truncate a ciphertext by one byte",
            Strict,
            |o, _| {
                let e = entry(o, "access_key");
                e.ciphertext = edit_b64(&e.ciphertext, |v| {
                    v.pop();
                });
            },
            Some(TAMPERED),
        ),
        (
            "truncate a ciphertext below the tag length",
            Strict,
            |o, _| {
                let e = entry(o, "access_key");
                e.ciphertext = edit_b64(&e.ciphertext, |v| v.truncate(15));
            },
            Some(BAD_FIELD),
        ),
        (
            "extend a ciphertext by one byte",
            Strict,
            |o, _| {
                let e = entry(o, "access_key");
                e.ciphertext = edit_b64(&e.ciphertext, |v| v.push(0));
            },
            Some(TAMPERED),
        ),
        // --- splicing keys --------------------------------------------------------
        (
            "splice the wrapped key of another object (same binding)",
            Strict,
            |o, fx| {
                o.spec.data_keys[0].wrappings = fx.strict_twin.spec.data_keys[0].wrappings.clone();
            },
            Some(COMMIT),
        ),
        (
            "splice the wrapped key of an object in another namespace",
            Strict,
            |o, fx| {
                o.spec.data_keys[0].wrappings =
                    fx.strict_elsewhere.spec.data_keys[0].wrappings.clone();
            },
            Some(UNWRAP),
        ),
        (
            "splice a whole data key of another object",
            Strict,
            |o, fx| {
                // the other object's data key, with all our entries pointed at it
                let d = fx.strict_twin.spec.data_keys[0].clone();
                for e in o.spec.entries.values_mut() {
                    e.data_key = d.id.clone();
                }
                o.spec.data_keys = vec![d];
            },
            Some(TAMPERED),
        ),
        (
            "add a wrapping with a bogus key id (first)",
            Strict,
            |o, _| {
                let w = Wrapping {
                    key_id: "local:ffffffffffffffff".into(),
                    ciphertext: encode(&[7u8; 60]),
                };
                o.spec.data_keys[0].wrappings.insert(0, w);
            },
            Some(HEADER),
        ),
        (
            "add a wrapping with an unknown key-id scheme (last)",
            Strict,
            |o, _| {
                let w = Wrapping {
                    key_id: "gcpkms:projects/x/keys/y".into(),
                    ciphertext: encode(&[7u8; 60]),
                };
                o.spec.data_keys[0].wrappings.push(w);
            },
            Some(HEADER),
        ),
        (
            "replace the only wrapping's key id",
            Strict,
            |o, _| {
                o.spec.data_keys[0].wrappings[0].key_id = "local:0000000000000000".into();
            },
            Some("InvalidSpec Provider.KeyNotAllowed"),
        ),
        (
            "remove every wrapping",
            Strict,
            |o, _| {
                o.spec.data_keys[0].wrappings.clear();
            },
            Some(INCONSISTENT),
        ),
        (
            "duplicate a data key",
            Strict,
            |o, _| {
                let d = o.spec.data_keys[0].clone();
                o.spec.data_keys.push(d);
            },
            Some(INCONSISTENT),
        ),
        (
            "unsort a data key's names",
            Strict,
            |o, _| {
                o.spec.data_keys[0].names.reverse();
            },
            Some(INCONSISTENT),
        ),
        // --- version, suite, template ---------------------------------------------
        (
            "downgrade formatVersion to 0",
            Strict,
            |o, _| {
                o.spec.format_version = 0;
            },
            Some("InvalidSpec Format.UnsupportedVersion"),
        ),
        (
            "upgrade formatVersion to 2",
            Strict,
            |o, _| {
                o.spec.format_version = 2;
            },
            Some("InvalidSpec Format.UnsupportedVersion"),
        ),
        (
            "unknown suite",
            Strict,
            |o, _| {
                o.spec.suite = "AES256GCM-HKDFSHA512".into();
            },
            Some("InvalidSpec Format.UnknownSuite"),
        ),
        (
            "edit the template name",
            Strict,
            |o, _| {
                o.spec.template.name = Some("other-secret".into());
            },
            Some(HEADER),
        ),
        (
            "remove the template name",
            Strict,
            |o, _| {
                o.spec.template.name = None;
            },
            Some(HEADER),
        ),
        (
            "edit the template type",
            Strict,
            |o, _| {
                o.spec.template.type_ = "kubernetes.io/basic-auth".into();
            },
            Some(HEADER),
        ),
        (
            "edit a template label",
            Strict,
            |o, _| {
                o.spec.template.labels.insert("app".into(), "other".into());
            },
            Some(HEADER),
        ),
        (
            "add a template annotation",
            Strict,
            |o, _| {
                o.spec.template.annotations.insert("x".into(), "y".into());
            },
            Some(HEADER),
        ),
        (
            "add a profile",
            Strict,
            |o, _| {
                o.spec.profile = Some("s3".into());
            },
            Some(HEADER),
        ),
        (
            "edit the template of a merged object",
            Merged,
            |o, _| {
                o.spec.template.labels.clear();
            },
            Some(HEADER),
        ),
        // --- bad base64 and lengths -----------------------------------------------
        (
            "bad base64: dataKeys.id",
            Strict,
            |o, _| o.spec.data_keys[0].id = "!!".into(),
            Some(BAD_FIELD),
        ),
        (
            "bad base64: commitment",
            Strict,
            |o, _| o.spec.data_keys[0].commitment = "a b".into(),
            Some(BAD_FIELD),
        ),
        (
            "bad base64: headerTag",
            Strict,
            |o, _| o.spec.data_keys[0].header_tag = "====".into(),
            Some(BAD_FIELD),
        ),
        (
            "bad base64: wrapping ciphertext",
            Strict,
            |o, _| {
                o.spec.data_keys[0].wrappings[0].ciphertext = "%%%".into();
            },
            Some(BAD_FIELD),
        ),
        (
            "bad base64: stateTag",
            Strict,
            |o, _| o.spec.data_keys[0].state_tag = Some("state?".into()),
            Some(BAD_FIELD),
        ),
        (
            "wrong length: 31-byte stateTag",
            Merged,
            |o, _| {
                let t = state_tag(o, 1);
                *t = edit_b64(t, |v| {
                    v.pop();
                });
            },
            Some(BAD_FIELD),
        ),
        (
            "bad base64: supersedes",
            Merged,
            |o, _| o.spec.data_keys[1].supersedes[0] = "@".into(),
            Some(BAD_FIELD),
        ),
        (
            "bad base64: entry nonce",
            Strict,
            |o, _| entry(o, "region").nonce = "nonce!".into(),
            Some(BAD_FIELD),
        ),
        (
            "bad base64: entry ciphertext",
            Strict,
            |o, _| {
                entry(o, "region").ciphertext = "*".into();
            },
            Some(BAD_FIELD),
        ),
        (
            "bad base64: entry dataKey",
            Strict,
            |o, _| entry(o, "region").data_key = "#".into(),
            Some(INCONSISTENT),
        ),
        (
            "non-canonical base64 (trailing bits) in the id",
            Strict,
            |o, _| {
                // 32 bytes = 43 chars + '=': the last char carries 2 unused bits
                let id = o.spec.data_keys[0].id.clone();
                let mut c: Vec<char> = id.chars().collect();
                let last = c[42];
                let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                let i = alphabet.find(last).unwrap();
                c[42] = alphabet.as_bytes()[i ^ 1] as char;
                let new: String = c.into_iter().collect();
                o.spec.data_keys[0].id = new.clone();
                for e in o.spec.entries.values_mut() {
                    e.data_key = new.clone();
                }
            },
            Some(BAD_FIELD),
        ),
        (
            "wrong length: 11-byte nonce",
            Strict,
            |o, _| {
                let e = entry(o, "region");
                e.nonce = edit_b64(&e.nonce, |v| {
                    v.pop();
                });
            },
            Some(BAD_FIELD),
        ),
        (
            "wrong length: 31-byte commitment",
            Strict,
            |o, _| {
                let d = &mut o.spec.data_keys[0];
                d.commitment = edit_b64(&d.commitment, |v| {
                    v.pop();
                });
            },
            Some(BAD_FIELD),
        ),
        (
            "empty wrapping key id",
            Strict,
            |o, _| {
                o.spec.data_keys[0].wrappings[0].key_id.clear();
            },
            Some(BAD_FIELD),
        ),
        (
            "invalid entry name",
            Strict,
            |o, _| {
                let e = o.spec.entries.remove("region").unwrap();
                o.spec.entries.insert("a/b".into(), e);
            },
            Some("InvalidSpec Format.InvalidName"),
        ),
        (
            "empty template type",
            Strict,
            |o, _| o.spec.template.type_.clear(),
            Some(BAD_FIELD),
        ),
    ]
}

fn encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

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
    let fx = fixtures().await;
    let cases = cases();
    assert!(cases.iter().filter(|c| c.3.is_some()).count() >= 20);
    let mut failed = Vec::new();
    for (what, base, mutate, want) in cases {
        let mut o = match base {
            Base::Strict => fx.strict.clone(),
            Base::NsWide => fx.ns_wide.clone(),
            Base::Cluster => fx.cluster.clone(),
            Base::Merged => fx.merged.clone(),
            Base::History => fx.history[3].clone(),
        };
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
                let mut want: BTreeMap<&str, &str> = PAIRS.iter().copied().collect();
                if matches!(base, Base::Merged) {
                    want.insert("endpoint", CANARY_NEW);
                    want.insert("secret_key", CANARY_NEW);
                }
                if matches!(base, Base::History) {
                    want = history_values(3);
                }
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
    let fx = fixtures().await;
    let kr = Keyring::new(
        Allowlist::only(["arn:aws:kms:eu-west-1:111122223333:key/*".to_string()]),
        Some(key().to_path_buf()),
    );
    let e = seal::open(&fx.strict, &kr).await.err().unwrap();
    assert_eq!(class(&e), "InvalidSpec Provider.KeyNotAllowed");
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
        &input("creds", "flyte", Scope::Strict, template(), None, PAIRS),
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
    let fx = fixtures().await;
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
    let fx = fixtures().await;
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
        template: template(),
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
    M.get_or_init(|| rt().block_on(fixtures()).merged)
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
            let m = rt().block_on(seal::merge(&o, &pairs, &[&k])).unwrap();
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
