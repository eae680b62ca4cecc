//! The tamper matrix, shared by its three runners: the library (`shared/tests/tamper.rs`),
//! the CLI's `verify`/`unseal` (`cli/tests/tamper_cli.rs`) and the controller on a real
//! API server (`tests/tests/controller_tamper.rs`). Each row is a mutation of a freshly
//! sealed object and the error class it must fail with (`None`: it must open).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sealcred_shared::crd::{Scope, SealedStorageCred, SecretTemplate, Wrapping};
use sealcred_shared::provider::local::LocalKey;

use super::*;

pub const CANARY_A: &str = "CANARY-access-5d1f0c";
pub const CANARY_S: &str = "CANARY-secret-a93e77";
pub const CANARY_R: &str = "CANARY-region-0b42d8";
pub const CANARY_NEW: &str = "CANARY-merged-77c1aa";

/// One tempdir key file for the whole test binary.
pub fn key() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("local.key");
        LocalKey::create(&p).unwrap();
        (d, p)
    });
    p
}

pub fn template(secret: &str) -> SecretTemplate {
    SecretTemplate {
        name: Some(secret.into()),
        type_: "Opaque".into(),
        labels: [("app".to_string(), "flyte".to_string())].into(),
        annotations: [("team".to_string(), "data".to_string())].into(),
    }
}

pub const PAIRS: &[(&str, &str)] = &[
    ("access_key", CANARY_A),
    ("region", CANARY_R),
    ("secret_key", CANARY_S),
];

/// Where the fixtures live: the library and CLI matrices use `flyte`/`creds`; the
/// controller matrix gives every case its own names (one API server, many cases).
#[derive(Clone)]
pub struct Place {
    /// The objects' namespace.
    pub ns: String,
    /// The namespace "move to another namespace" cases move to.
    pub other_ns: String,
    /// The namespace of `strict_elsewhere` and of the cluster-wide move.
    pub elsewhere_ns: String,
    /// The objects' name.
    pub name: String,
    /// The name "rename" cases rename to.
    pub renamed: String,
    /// The Secret the template names.
    pub secret: String,
}

impl Place {
    /// The names the library and CLI matrices use.
    pub fn standard() -> Place {
        Place {
            ns: "flyte".into(),
            other_ns: "other".into(),
            elsewhere_ns: "elsewhere".into(),
            name: "creds".into(),
            renamed: "other".into(),
            secret: "s3-creds".into(),
        }
    }
}

/// The objects a case starts from.
pub struct Fx {
    /// Where they are.
    pub place: Place,
    /// strict, three entries, one data key.
    pub strict: SealedStorageCred,
    /// Another strict object with the same namespace/name and entry names.
    pub strict_twin: SealedStorageCred,
    /// A strict object in another namespace.
    pub strict_elsewhere: SealedStorageCred,
    /// namespace-wide.
    pub ns_wide: SealedStorageCred,
    /// cluster-wide.
    pub cluster: SealedStorageCred,
    /// `strict` merged with a new `secret_key` and `endpoint` (two data keys).
    pub merged: SealedStorageCred,
    /// `strict` merged with `token` instead: a merge concurrent with `merged`.
    pub merged_concurrent: SealedStorageCred,
    /// A strict object with the same namespace/name and one entry, `token`.
    pub foreign: SealedStorageCred,
    /// Four sealed states of one object, each merged from the one before:
    /// h0 = `strict` (dk0: access_key, region, secret_key); h1 adds endpoint
    /// (dk1, new names only); h2 replaces secret_key (dk2); h3 replaces region
    /// (dk3). Every data key of h3 is byte-identical to its earlier self.
    pub history: Vec<SealedStorageCred>,
}

pub const H1: &[(&str, &str)] = &[("endpoint", "h1-endpoint")];
pub const H2: &[(&str, &str)] = &[("secret_key", "h2-secret")];
pub const H3: &[(&str, &str)] = &[("region", "h3-region")];

/// The plaintexts of `history[i]`.
pub fn history_values(i: usize) -> BTreeMap<&'static str, &'static str> {
    let mut m: BTreeMap<&str, &str> = PAIRS.iter().copied().collect();
    for step in [H1, H2, H3].iter().take(i) {
        m.extend(step.iter().copied());
    }
    m
}

pub async fn fixtures(k: &Path, place: &Place) -> Fx {
    let p = place;
    let strict = seal_local(
        &input(
            &p.name,
            &p.ns,
            Scope::Strict,
            template(&p.secret),
            None,
            PAIRS,
        ),
        k,
    )
    .await;
    let strict_twin = seal_local(
        &input(
            &p.name,
            &p.ns,
            Scope::Strict,
            template(&p.secret),
            None,
            PAIRS,
        ),
        k,
    )
    .await;
    let strict_elsewhere = seal_local(
        &input(
            &p.name,
            &p.elsewhere_ns,
            Scope::Strict,
            template(&p.secret),
            None,
            PAIRS,
        ),
        k,
    )
    .await;
    let ns_wide = seal_local(
        &input(
            &p.name,
            &p.ns,
            Scope::NamespaceWide,
            template(&p.secret),
            None,
            PAIRS,
        ),
        k,
    )
    .await;
    let cluster = seal_local(
        &input(
            &p.name,
            &p.ns,
            Scope::ClusterWide,
            template(&p.secret),
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
            &p.name,
            &p.ns,
            Scope::Strict,
            template(&p.secret),
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
        place: place.clone(),
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
pub enum Base {
    Strict,
    NsWide,
    Cluster,
    Merged,
    /// `history[3]` (four data keys).
    History,
}

pub type Mutation = fn(&mut SealedStorageCred, &Fx);

/// `None` = must open; `Some(class)` = must fail with `class` (see `common::class`).
pub type Case = (&'static str, Base, Mutation, Option<&'static str>);

impl Fx {
    /// The object a case starts from.
    pub fn base(&self, base: Base) -> SealedStorageCred {
        match base {
            Base::Strict => self.strict.clone(),
            Base::NsWide => self.ns_wide.clone(),
            Base::Cluster => self.cluster.clone(),
            Base::Merged => self.merged.clone(),
            Base::History => self.history[3].clone(),
        }
    }
}

/// The values an object built from `base` opens to (for the rows that must open).
pub fn expected_values(base: Base) -> BTreeMap<&'static str, &'static str> {
    let mut want: BTreeMap<&str, &str> = PAIRS.iter().copied().collect();
    match base {
        Base::Merged => {
            want.insert("endpoint", CANARY_NEW);
            want.insert("secret_key", CANARY_NEW);
        }
        Base::History => want = history_values(3),
        _ => {}
    }
    want
}

/// Every canary, and its tail (no output may hold either).
pub fn canaries() -> Vec<&'static str> {
    let mut v = Vec::new();
    for c in [CANARY_A, CANARY_S, CANARY_R, CANARY_NEW] {
        v.push(c);
        v.push(&c[7..]);
    }
    v
}

pub const TAMPERED: &str = "DecryptFailed EntryAuth";
pub const HEADER: &str = "DecryptFailed HeaderAuth.HeaderTag";
pub const COMMIT: &str = "DecryptFailed HeaderAuth.Commitment";
pub const UNWRAP: &str = "DecryptFailed Provider.InvalidCiphertext";
pub const INCONSISTENT: &str = "InvalidSpec Format.Inconsistent";
pub const BAD_FIELD: &str = "InvalidSpec Format.BadField";
pub const STATE: &str = "DecryptFailed HeaderAuth.StateTag";

pub fn entry<'a>(
    o: &'a mut SealedStorageCred,
    name: &str,
) -> &'a mut sealcred_shared::crd::SealedEntry {
    o.spec.entries.get_mut(name).unwrap()
}

/// Removes the data key with id `id`.
pub fn drop_data_key(o: &mut SealedStorageCred, id: &str) {
    o.spec.data_keys.retain(|d| d.id != id);
}

pub fn state_tag(o: &mut SealedStorageCred, i: usize) -> &mut String {
    o.spec.data_keys[i].state_tag.as_mut().unwrap()
}

/// The matrix: at least 20 rows must fail (checked by each runner).
pub fn cases() -> Vec<Case> {
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
            |o, fx| {
                o.metadata.namespace = Some(fx.place.other_ns.clone());
            },
            Some(UNWRAP),
        ),
        (
            "strict: rename",
            Strict,
            |o, fx| {
                o.metadata.name = Some(fx.place.renamed.clone());
            },
            Some(UNWRAP),
        ),
        (
            "namespace-wide: rename is allowed",
            NsWide,
            |o, fx| {
                o.metadata.name = Some(fx.place.renamed.clone());
            },
            None,
        ),
        (
            "namespace-wide: move to another namespace",
            NsWide,
            |o, fx| {
                o.metadata.namespace = Some(fx.place.other_ns.clone());
            },
            Some(UNWRAP),
        ),
        (
            "cluster-wide: rename and move are allowed",
            Cluster,
            |o, fx| {
                o.metadata.name = Some(fx.place.renamed.clone());
                o.metadata.namespace = Some(fx.place.elsewhere_ns.clone());
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
            "9 wrappings on a data key (over the cap of 8)",
            Strict,
            |o, _| {
                // Each could cost a KMS call: refused before any is made.
                for i in 0..8u8 {
                    o.spec.data_keys[0].wrappings.push(Wrapping {
                        key_id: format!("local:{:016x}", i),
                        ciphertext: encode(&[i; 60]),
                    });
                }
            },
            Some(BAD_FIELD),
        ),
        (
            "33 data keys (over the cap of 32)",
            History,
            |o, _| {
                let d = o.spec.data_keys[0].clone();
                while o.spec.data_keys.len() < 33 {
                    o.spec.data_keys.push(d.clone());
                }
            },
            Some(BAD_FIELD),
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

pub fn encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
