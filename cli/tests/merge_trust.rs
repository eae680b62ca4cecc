//! Issue 13.1: `seal --merge-into` never seals for a key or a binding that the
//! user did not choose or that was not verified. A git writer without KMS
//! rights edits the sealed file; an honest user then merges (the documented
//! flow). Before the fix, the merge wrapped the new data key under every key
//! recorded in the file and bound it to the file's metadata, so the new value
//! was sealed for the attacker. Against moto, through the real binary.

mod kms_support;

use kms_support::{CANARY, Dir, create_key_in, fails, kms_client_in, ok, text};

const NEW_VALUE: &str = "CANARY-merge-new-7d21";

fn edit(d: &Dir, file: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_saphyr::from_str(&d.read(file)).unwrap();
    f(&mut v);
    std::fs::write(d.path(file), serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// The attacker's own key (another region, so no region-keyed cache can hide
/// it) wrapping 32 random bytes: what a writer without Decrypt can add.
fn attacker_wrapping(d: &Dir) -> serde_json::Value {
    use base64::Engine;
    let key = create_key_in(d.env, "eu-north-1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ct = rt.block_on(async {
        kms_client_in(d.env, "eu-north-1")
            .encrypt()
            .key_id(&key)
            .plaintext(sealcred_tests::aws_sdk_kms::primitives::Blob::new(vec![
                7u8;
                32
            ]))
            .send()
            .await
            .unwrap()
            .ciphertext_blob
            .unwrap()
    });
    serde_json::json!({
        "keyId": key,
        "ciphertext": base64::engine::general_purpose::STANDARD.encode(ct.as_ref()),
    })
}

fn merge(d: &Dir, extra: &[&str]) -> std::process::Output {
    let literal = format!("secret_key={NEW_VALUE}");
    let mut args = vec!["seal", "--merge-into", "s.yaml", "--from-literal", &literal];
    args.extend_from_slice(extra);
    d.run(&args)
}

#[test]
fn a_wrapping_appended_by_a_git_writer_is_never_sealed_for() {
    let d = Dir::new();
    let k1 = d.env.key_arn().to_string();
    ok(&d.seal("s.yaml", "flyte", &[&k1]));
    let evil = attacker_wrapping(&d);
    let evil_key = evil["keyId"].as_str().unwrap().to_string();
    edit(&d, "s.yaml", |v| {
        v["spec"]["dataKeys"][0]["wrappings"]
            .as_array_mut()
            .unwrap()
            .push(evil)
    });
    let tampered = d.read("s.yaml");

    // No --kms, no rule: the recorded keys are used only once verified, and the
    // appended wrapping breaks the header tag.
    let o = merge(&d, &[]);
    fails(&o, "header tag does not verify");
    assert_eq!(d.read("s.yaml"), tampered, "nothing written");
    assert!(!text(&o.stderr).contains(NEW_VALUE));

    // Keys chosen and binding confirmed: where the user can decrypt, the file is
    // opened first (to compare values) and the tampering is found.
    let confirmed = ["--kms", &k1, "-n", "flyte", "--name", "flyte-storage-creds"];
    let o = merge(&d, &confirmed);
    fails(&o, "header tag does not verify");
    assert_eq!(d.read("s.yaml"), tampered, "nothing written");
    // Without that comparison (--reseal: no Decrypt at all), sealed under K1 only.
    let mut no_decrypt = confirmed.to_vec();
    no_decrypt.push("--reseal");
    let o = merge(&d, &no_decrypt);
    ok(&o);
    let w = d.wrappings("s.yaml");
    assert_eq!(w.last().unwrap(), std::slice::from_ref(&k1), "{w:?}");
    assert!(
        !w.last().unwrap().contains(&evil_key),
        "the new data key is wrapped by the attacker's key"
    );
}

#[test]
fn a_moved_namespace_is_never_sealed_for() {
    let d = Dir::new();
    let k1 = d.env.key_arn().to_string();
    ok(&d.seal("s.yaml", "flyte", &[&k1]));
    edit(&d, "s.yaml", |v| v["metadata"]["namespace"] = "evil".into());
    let tampered = d.read("s.yaml");

    // Keys chosen, binding not confirmed: verified with Decrypt, which fails
    // (the EncryptionContext names flyte).
    let o = merge(&d, &["--kms", &k1]);
    fails(
        &o,
        "cannot confirm the namespace, name and scope this file claims (evil/flyte-storage-creds (scope strict))",
    );
    assert!(text(&o.stderr).contains("-n NAMESPACE --name NAME"));
    assert_eq!(d.read("s.yaml"), tampered);

    // The user says which namespace: the contradiction is named.
    let o = merge(&d, &["--kms", &k1, "-n", "flyte"]);
    fails(&o, "--namespace \"flyte\" differs from the file's \"evil\"");
    assert_eq!(d.read("s.yaml"), tampered);

    // No --kms: recorded keys need verification, which fails the same way.
    let o = merge(&d, &[]);
    fails(&o, "InvalidCiphertextException");
    assert_eq!(d.read("s.yaml"), tampered);
}

#[test]
fn a_widened_scope_is_never_sealed_for() {
    let d = Dir::new();
    let k1 = d.env.key_arn().to_string();
    ok(&d.seal("s.yaml", "flyte", &[&k1]));
    edit(&d, "s.yaml", |v| v["spec"]["scope"] = "cluster-wide".into());
    let tampered = d.read("s.yaml");
    // Namespace and name confirmed, but a scope weaker than strict is not.
    let o = merge(
        &d,
        &["--kms", &k1, "-n", "flyte", "--name", "flyte-storage-creds"],
    );
    fails(&o, "cannot confirm");
    assert_eq!(d.read("s.yaml"), tampered);
}

#[test]
fn a_creation_rule_namespace_contradicting_the_file_is_an_error() {
    let d = Dir::new();
    let k1 = d.env.key_arn().to_string();
    ok(&d.seal("s.yaml", "flyte", &[&k1]));
    edit(&d, "s.yaml", |v| v["metadata"]["namespace"] = "evil".into());
    std::fs::write(
        d.path(".sealcred.yaml"),
        format!("creation_rules:\n  - kms: [{k1}]\n    namespace: flyte\n"),
    )
    .unwrap();
    let tampered = d.read("s.yaml");
    let o = merge(&d, &[]);
    fails(
        &o,
        "creation rule 1's namespace \"flyte\" differs from the file's \"evil\"",
    );
    assert_eq!(d.read("s.yaml"), tampered);
}

#[test]
fn an_honest_merge_says_what_it_sealed_for() {
    let d = Dir::new();
    let k1 = d.env.key_arn().to_string();
    ok(&d.seal("s.yaml", "flyte", &[&k1]));
    let o = merge(
        &d,
        &["--kms", &k1, "-n", "flyte", "--name", "flyte-storage-creds"],
    );
    ok(&o);
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(
            "sealcred: sealed for namespace flyte, name flyte-storage-creds (scope strict) under {k1}"
        )),
        "{err}"
    );
    assert!(!err.contains(NEW_VALUE) && !err.contains(CANARY));
    let out = ok(&d.run(&["unseal", "s.yaml", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    use base64::Engine;
    assert_eq!(
        v["data"]["secret_key"],
        base64::engine::general_purpose::STANDARD.encode(NEW_VALUE)
    );
}
