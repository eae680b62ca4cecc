//! Issue 19: every re-seal path keeps exactly the set of wrapping keys it is
//! meant to keep, each key once — rotate, rotate --add-kms/--remove-kms, merge,
//! and creation rules; keys in one region, across regions, and by alias — and
//! afterwards each key alone opens every entry (`verify --only-key`, the
//! recovery drill). Against the real KMS wire protocol (moto), through the
//! real binary.
//!
//! Before the fix, re-sealing resolved each recorded key id to one provider per
//! region, which sealed under the first key it was built for: K1, K2 became
//! K1, K1 (`rotate_keeps_two_keys_of_one_region` and the merge tests fail on
//! that code).
//!
//! Cross-account keys are not tested here: moto serves one account per
//! credential, and a key ARN is looked up in the caller's account. Nothing in
//! the key handling is keyed by account (providers are per key, clients per
//! region); the KeyId check refuses an answer from another account
//! (`shared/src/provider/aws.rs` unit tests).

mod kms_support;

use kms_support::{CANARY, Dir, create_alias, create_key, create_key_in, fails, ok, text};

const OTHER_REGION: &str = "us-west-2";

fn two_keys(d: &Dir) -> (String, String) {
    (d.env.key_arn().to_string(), create_key(d.env))
}

#[test]
fn rotate_keeps_two_keys_of_one_region() {
    let d = Dir::new();
    let (k1, k2) = two_keys(&d);
    ok(&d.seal("s.yaml", "flyte", &[&k1, &k2]));
    assert_eq!(d.wrappings("s.yaml"), [vec![k1.clone(), k2.clone()]]);
    let out = d.run(&["rotate", "s.yaml"]);
    ok(&out);
    assert_eq!(
        d.wrappings("s.yaml"),
        [vec![k1.clone(), k2.clone()]],
        "rotate must keep both keys, each once"
    );
    d.opens_with_each("s.yaml", &[&k1, &k2], 2);
}

#[test]
fn merge_without_kms_keeps_every_verified_key() {
    let d = Dir::new();
    let (k1, k2) = two_keys(&d);
    ok(&d.seal("s.yaml", "flyte", &[&k1, &k2]));
    let out = d.run(&[
        "seal",
        "--merge-into",
        "s.yaml",
        "--from-literal",
        "region=us-east-1",
    ]);
    ok(&out);
    let w = d.wrappings("s.yaml");
    assert_eq!(w.len(), 2);
    assert_eq!(
        w[1],
        [k1.clone(), k2.clone()],
        "the new data key's wrappings"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("sealed for namespace flyte, name flyte-storage-creds (scope strict)")
            && err.contains(&format!("under {k1}, {k2}")),
        "{err}"
    );
    d.opens_with_each("s.yaml", &[&k1, &k2], 3);
}

#[test]
fn merge_with_kms_and_confirmed_binding_keeps_the_given_keys() {
    let d = Dir::new();
    let (k1, k2) = two_keys(&d);
    ok(&d.seal("s.yaml", "flyte", &[&k1, &k2]));
    ok(&d.run(&[
        "seal",
        "--merge-into",
        "s.yaml",
        "-n",
        "flyte",
        "--name",
        "flyte-storage-creds",
        "--kms",
        &k1,
        "--kms",
        &k2,
        "--from-literal",
        "region=us-east-1",
    ]));
    assert_eq!(d.wrappings("s.yaml")[1], [k1.clone(), k2.clone()]);
    d.opens_with_each("s.yaml", &[&k1, &k2], 3);
}

#[test]
fn add_and_remove_keep_exact_sets() {
    let d = Dir::new();
    let (k1, k2) = two_keys(&d);
    let k3 = create_key(d.env);
    ok(&d.seal("s.yaml", "flyte", &[&k1, &k2]));
    ok(&d.run(&["rotate", "s.yaml", "--add-kms", &k3]));
    assert_eq!(
        d.wrappings("s.yaml"),
        [vec![k1.clone(), k2.clone(), k3.clone()]]
    );
    d.opens_with_each("s.yaml", &[&k1, &k2, &k3], 2);
    ok(&d.run(&["rotate", "s.yaml", "--remove-kms", &k1]));
    assert_eq!(d.wrappings("s.yaml"), [vec![k2.clone(), k3.clone()]]);
    d.opens_with_each("s.yaml", &[&k2, &k3], 2);
    // A rotate afterwards keeps the new set.
    ok(&d.run(&["rotate", "s.yaml"]));
    assert_eq!(d.wrappings("s.yaml"), [vec![k2.clone(), k3.clone()]]);
    d.opens_with_each("s.yaml", &[&k2, &k3], 2);
}

#[test]
fn remove_of_a_key_that_wraps_nothing_fails_and_writes_nothing() {
    let d = Dir::new();
    let (k1, k2) = two_keys(&d);
    ok(&d.seal("s.yaml", "flyte", &[&k1, &k2]));
    let before = d.read("s.yaml");
    let alias = d.env.alias().to_string();
    fails(
        &d.run(&["rotate", "s.yaml", "--remove-kms", &alias]),
        "no wrapping in s.yaml is by this key; nothing was changed",
    );
    assert_eq!(d.read("s.yaml"), before);
}

#[test]
fn creation_rule_keys_are_kept_by_rotate_and_merge() {
    let d = Dir::new();
    let (k1, k2) = two_keys(&d);
    std::fs::write(
        d.path(".sealcred.yaml"),
        format!("creation_rules:\n  - kms: [{k1}, {k2}]\n    namespace: flyte\n"),
    )
    .unwrap();
    let sealed = d.run(&[
        "seal",
        "--name",
        "flyte-storage-creds",
        "--from-literal",
        &format!("secret_key={CANARY}"),
        "--output-file",
        "s.yaml",
    ]);
    ok(&sealed);
    assert_eq!(d.wrappings("s.yaml"), [vec![k1.clone(), k2.clone()]]);
    ok(&d.run(&["rotate", "s.yaml"]));
    assert_eq!(d.wrappings("s.yaml"), [vec![k1.clone(), k2.clone()]]);
    // The rule confirms the namespace; --name the name: no Decrypt needed.
    ok(&d.run(&[
        "seal",
        "--merge-into",
        "s.yaml",
        "--name",
        "flyte-storage-creds",
        "--from-literal",
        "region=r",
    ]));
    assert_eq!(d.wrappings("s.yaml")[1], [k1.clone(), k2.clone()]);
    d.opens_with_each("s.yaml", &[&k1, &k2], 2);
}

#[test]
fn keys_in_two_regions_are_kept() {
    let d = Dir::new();
    let k1 = d.env.key_arn().to_string();
    let k2 = create_key(d.env);
    let west = create_key_in(d.env, OTHER_REGION);
    assert!(west.contains(&format!(":{OTHER_REGION}:")), "{west}");
    ok(&d.seal("s.yaml", "flyte", &[&k1, &west, &k2]));
    assert_eq!(
        d.wrappings("s.yaml"),
        [vec![k1.clone(), west.clone(), k2.clone()]]
    );
    ok(&d.run(&["rotate", "s.yaml"]));
    ok(&d.run(&["seal", "--merge-into", "s.yaml", "--from-literal", "x=y"]));
    assert_eq!(
        d.wrappings("s.yaml"),
        [
            vec![k1.clone(), west.clone(), k2.clone()],
            vec![k1.clone(), west.clone(), k2.clone()]
        ]
    );
    d.opens_with_each("s.yaml", &[&k1, &west, &k2], 3);
}

#[test]
fn an_alias_and_its_arn_give_one_wrapping_and_a_note() {
    let d = Dir::new();
    let k2 = create_key(d.env);
    let alias = create_alias(d.env, &k2);
    let k1 = d.env.key_arn().to_string();
    let out = d.seal("s.yaml", "flyte", &[&k1, &alias, &k2]);
    ok(&out);
    assert_eq!(d.wrappings("s.yaml"), [vec![k1.clone(), k2.clone()]]);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "note: AWS KMS key {alias} and AWS KMS key {k2} are the same key ({k2}): wrapped once"
        )),
        "{err}"
    );
    // The same string twice: used once, said once.
    let out = d.seal("t.yaml", "flyte", &[&k1, &k1]);
    ok(&out);
    assert_eq!(d.wrappings("t.yaml"), [vec![k1.clone()]]);
    assert!(text(&out.stderr).contains("is given twice"));
    // Adding a key by alias that already wraps the data key (by ARN): not twice.
    let out = d.run(&["rotate", "s.yaml", "--add-kms", &alias]);
    ok(&out);
    assert_eq!(d.wrappings("s.yaml"), [vec![k1.clone(), k2.clone()]]);
    assert!(
        text(&out.stderr).contains("already wraps the data keys"),
        "{}",
        text(&out.stderr)
    );
    // Rotating by alias records the ARN.
    ok(&d.run(&["rotate", "s.yaml", "--kms", &alias]));
    assert_eq!(d.wrappings("s.yaml"), [vec![k2.clone()]]);
}

#[test]
fn a_key_id_kms_did_not_ask_for_is_refused() {
    // moto looks keys up by key id only: an ARN naming another account with the
    // test key's id is answered with the test key's own ARN. Recording that
    // answer would name a key the user did not ask for.
    let d = Dir::new();
    let k1 = d.env.key_arn().to_string();
    let elsewhere = k1.replacen(":123456789012:", ":999999999999:", 1);
    assert_ne!(elsewhere, k1);
    let o = d.seal("s.yaml", "flyte", &[&elsewhere]);
    fails(&o, "answered for key");
    assert!(!d.path("s.yaml").exists());
}

#[test]
fn verify_warns_on_duplicate_wrappings_and_add_kms_repairs_them() {
    let d = Dir::new();
    let (k1, k2) = two_keys(&d);
    ok(&d.seal("s.yaml", "flyte", &[&k1, &k2]));
    damage_like_issue_19(&d, "s.yaml");
    assert_eq!(d.wrappings("s.yaml"), [vec![k1.clone(), k1.clone()]]);
    let out = d.run(&["verify", "s.yaml"]);
    ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("is wrapped twice by {k1}")) && err.contains("docs/rotation.md"),
        "{err}"
    );
    // The repair docs/rotation.md gives.
    ok(&d.run(&["rotate", "s.yaml", "--add-kms", &k2]));
    assert_eq!(d.wrappings("s.yaml"), [vec![k1.clone(), k2.clone()]]);
    let out = d.run(&["verify", "s.yaml"]);
    ok(&out);
    assert!(!text(&out.stderr).contains("wrapped twice"));
    d.opens_with_each("s.yaml", &[&k1, &k2], 2);
}

/// Rewrites `file` as the re-seal bug left it: the head data key's second
/// wrapping replaced by a second, genuine wrapping under the first key, and the
/// header tag recomputed (so the file verifies, as damaged files do).
fn damage_like_issue_19(d: &Dir, file: &str) {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use sealcred_shared::crd::{SealedStorageCred, Wrapping};
    use sealcred_shared::crypto::DerivedKeys;
    use sealcred_shared::format::{self, Binding, ParsedSpec, ParsedWrapping};
    use sealcred_shared::secret::DataKey;
    use sealcred_tests::aws_sdk_kms::primitives::Blob;

    let mut obj: SealedStorageCred = serde_saphyr::from_str(&d.read(file)).unwrap();
    let parsed = ParsedSpec::parse(&obj.spec).unwrap();
    let binding = Binding::new(
        parsed.scope,
        obj.metadata.namespace.as_deref(),
        obj.metadata.name.as_deref(),
    )
    .unwrap();
    let ctx: std::collections::HashMap<String, String> =
        binding.encryption_context().into_iter().collect();
    let head = &parsed.data_keys[parsed.head];
    let k1 = head.wrappings[0].key_id.clone();
    let kms = d.env.kms_client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (key, ct2) = rt.block_on(async {
        let plain = kms
            .decrypt()
            .key_id(&k1)
            .ciphertext_blob(Blob::new(head.wrappings[0].ciphertext.clone()))
            .set_encryption_context(Some(ctx.clone()))
            .send()
            .await
            .unwrap()
            .plaintext
            .unwrap();
        let ct2 = kms
            .encrypt()
            .key_id(&k1)
            .plaintext(plain.clone())
            .set_encryption_context(Some(ctx.clone()))
            .send()
            .await
            .unwrap()
            .ciphertext_blob
            .unwrap();
        (
            DataKey::from_slice(plain.as_ref()).unwrap(),
            ct2.into_inner(),
        )
    });
    let mut updated = head.clone();
    updated.wrappings[1] = ParsedWrapping {
        key_id: k1.clone(),
        ciphertext: ct2.clone(),
    };
    let header = format::header_bytes(
        parsed.version,
        &parsed.suite,
        &binding,
        &parsed.template,
        parsed.profile.as_deref(),
        &updated,
    );
    let tag = DerivedKeys::derive(&key, &head.id).header_tag(&header);
    let target = &mut obj.spec.data_keys[parsed.head];
    target.wrappings[1] = Wrapping {
        key_id: k1,
        ciphertext: STANDARD.encode(&ct2),
    };
    target.header_tag = STANDARD.encode(tag);
    std::fs::write(d.path(file), serde_json::to_string_pretty(&obj).unwrap()).unwrap();
}
