//! The real `sealcred` binary against the real AWS KMS wire protocol (the moto
//! server of the test environment): seal → inspect → verify → unseal, wrong
//! EncryptionContext, rotate to a new key, any-of-N keys, and KMS failures.

mod kms_support;

use kms_support::{CANARY, Dir, create_key, fails, ok};

#[test]
fn kms_seal_inspect_verify_unseal() {
    let d = Dir::new();
    let arn = d.env.key_arn().to_string();
    ok(&d.seal("s.yaml", "flyte", &[&arn]));
    let sealed = std::fs::read_to_string(d.path("s.yaml")).unwrap();
    assert!(sealed.contains(&format!("keyId: {arn}")), "{sealed}");
    assert!(!sealed.contains(CANARY));

    let shown = ok(&d.run(&["inspect", "s.yaml"]));
    assert!(shown.contains(&arn));
    ok(&d.run(&["verify", "s.yaml"]));
    let out = ok(&d.run(&["unseal", "s.yaml", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"]["access_key"], "QUtJQUVYQU1QTEU=");
}

#[test]
fn kms_alias_records_the_key_arn() {
    let d = Dir::new();
    let alias = d.env.alias().to_string();
    ok(&d.seal("s.yaml", "flyte", &[&alias]));
    let sealed = std::fs::read_to_string(d.path("s.yaml")).unwrap();
    assert!(
        sealed.contains(&format!("keyId: {}", d.env.key_arn())),
        "{sealed}"
    );
    ok(&d.run(&["verify", "s.yaml"]));
}

#[test]
fn kms_wrong_encryption_context_is_rejected_by_kms() {
    let d = Dir::new();
    ok(&d.seal("s.yaml", "flyte", &[d.env.key_arn()]));
    let s = std::fs::read_to_string(d.path("s.yaml")).unwrap();
    std::fs::write(
        d.path("s.yaml"),
        s.replace("namespace: flyte", "namespace: other"),
    )
    .unwrap();
    fails(&d.run(&["unseal", "s.yaml"]), "InvalidCiphertextException");
}

#[test]
fn kms_merge_and_rotate_to_a_new_key() {
    let d = Dir::new();
    let old = d.env.key_arn().to_string();
    ok(&d.seal("s.yaml", "flyte", &[&old]));
    let before = std::fs::read_to_string(d.path("s.yaml")).unwrap();
    ok(&d.run(&[
        "seal",
        "--merge-into",
        "s.yaml",
        "--from-literal",
        "region=us-east-1",
    ]));
    let merged = std::fs::read_to_string(d.path("s.yaml")).unwrap();
    for line in before.lines() {
        assert!(merged.contains(line), "changed by merge: {line}");
    }
    ok(&d.run(&["verify", "s.yaml"]));

    let new = create_key(d.env);
    ok(&d.run(&["rotate", "s.yaml", "--kms", &new]));
    let rotated = std::fs::read_to_string(d.path("s.yaml")).unwrap();
    assert!(rotated.contains(&new));
    assert!(
        !rotated.contains(&old),
        "re-keying left a reference to the old key"
    );
    let out = ok(&d.run(&["verify", "s.yaml"]));
    assert!(out.contains("3 entries"));
}

#[test]
fn kms_two_wrapping_keys_are_recorded_and_authenticated() {
    let d = Dir::new();
    let a = d.env.key_arn().to_string();
    let b = create_key(d.env);
    ok(&d.seal("s.yaml", "flyte", &[&a, &b]));
    let sealed = std::fs::read_to_string(d.path("s.yaml")).unwrap();
    assert!(sealed.contains(&a) && sealed.contains(&b));
    // Both wrappings are recorded; editing one fails closed (the header tag
    // covers every wrapping), and the original verifies.
    let first_ct = sealed
        .lines()
        .skip_while(|l| !l.contains(&format!("keyId: {a}")))
        .nth(1)
        .unwrap()
        .to_string();
    let broken = first_ct
        .replace("ciphertext: A", "ciphertext: B")
        .replace("ciphertext: ", "ciphertext: A");
    std::fs::write(d.path("s.yaml"), sealed.replace(&first_ct, &broken)).unwrap();
    // The header tag covers the wrappings, so a modified wrapping must fail closed.
    assert!(!d.run(&["verify", "s.yaml"]).status.success());
    std::fs::write(d.path("s.yaml"), &sealed).unwrap();
    ok(&d.run(&["verify", "s.yaml"]));
}

#[test]
fn kms_unreachable_endpoint_is_a_clear_error() {
    let d = Dir::new();
    let mut c = d.cmd();
    c.env("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9");
    let o = c
        .args([
            "seal",
            "--name",
            "a",
            "-n",
            "b",
            "--from-literal",
            &format!("k={CANARY}"),
            "--kms",
            d.env.key_arn(),
        ])
        .output()
        .unwrap();
    fails(&o, "connection failed");
    assert!(o.stdout.is_empty());
}

#[test]
fn kms_wrong_region_is_a_clear_error() {
    let d = Dir::new();
    let mut c = d.cmd();
    c.env("AWS_REGION", "eu-west-3");
    let o = c
        .args([
            "seal",
            "--name",
            "a",
            "-n",
            "b",
            "--from-literal",
            "k=v",
            "--kms",
            d.env.alias(),
        ])
        .output()
        .unwrap();
    fails(&o, "in eu-west-3 failed: NotFoundException");
}

#[test]
fn kms_unknown_key_is_a_clear_error() {
    let d = Dir::new();
    let o = d.run(&[
        "seal",
        "--name",
        "a",
        "-n",
        "b",
        "--from-literal",
        "k=v",
        "--kms",
        "alias/does-not-exist",
    ]);
    fails(&o, "NotFoundException");
}
