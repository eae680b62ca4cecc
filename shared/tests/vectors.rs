//! Opens every vector in `shared/tests/vectors/` and checks its `.expect`
//! companion, so that any change to the sealed format is caught. See
//! `vectors/README.md` for the layout and `gen_vectors.rs` to regenerate.

mod common;

use std::collections::BTreeSet;

use common::*;

fn cases() -> Vec<(String, String, String)> {
    let dir = vectors_dir();
    let mut out = Vec::new();
    for f in std::fs::read_dir(&dir).expect("vectors dir") {
        let p = f.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        let yaml = std::fs::read_to_string(&p).unwrap();
        let expect = std::fs::read_to_string(p.with_extension("expect"))
            .unwrap_or_else(|_| panic!("{name}.yaml has no {name}.expect"));
        out.push((name, yaml, expect.trim().to_string()));
    }
    out.sort();
    out
}

#[tokio::test]
async fn every_vector_meets_its_expectation() {
    let key = vectors_dir().join(TEST_KEY_FILE);
    let cases = cases();
    let names: BTreeSet<&str> = cases.iter().map(|c| c.0.as_str()).collect();
    for must in [
        "ok-strict-2-entries",
        "ok-namespace-wide",
        "ok-namespace-wide-renamed",
        "ok-cluster-wide",
        "ok-cluster-wide-moved",
        "ok-cluster",
        "err-cluster-in-namespace",
        "err-cluster-renamed",
        "ok-merged-2-data-keys",
        "ok-merged-3-data-keys",
        "ok-rsa-strict",
        "ok-rsa-mixed-local-and-rsa",
        "ok-rsa-merged-into-local",
        "err-rsa-moved-namespace",
        "err-rsa-wrapping-replaced",
    ] {
        assert!(names.contains(must), "vector {must} is missing");
    }
    assert!(
        cases.iter().filter(|c| c.2.starts_with("error ")).count() >= 20,
        "failure vectors are missing"
    );
    let mut failed = Vec::new();
    for (name, yaml, expect) in &cases {
        let obj = from_yaml(yaml);
        let got = match open(&obj, &key).await {
            Ok(o) => format!("ok {}", digest_opened(&o)),
            Err(e) => format!("error {}", class(&e)),
        };
        assert_eq!(
            name.starts_with("ok-"),
            expect.starts_with("ok "),
            "{name}: the file name says ok-/err-"
        );
        if &got != expect {
            failed.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// The independent decryptor (written from docs/FORMAT.md with raw
/// primitives) agrees with `seal::open` on every valid vector.
#[tokio::test]
async fn independent_decryptor_agrees() {
    let key = vectors_dir().join(TEST_KEY_FILE);
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        test_key_file_text(),
        "the test key file changed"
    );
    for (name, yaml, _) in cases().iter().filter(|c| c.0.starts_with("ok-")) {
        let obj = from_yaml(yaml);
        let (plain, _) = independent_open(&obj, &TEST_KEY_BYTES);
        let opened = open(&obj, &key).await.unwrap();
        assert_eq!(opened.entries.len(), plain.len(), "{name}");
        for (k, v) in &opened.entries {
            assert_eq!(v.expose(), plain[k].as_slice(), "{name}: {k}");
        }
    }
}

/// `worked-example.txt` (quoted in docs/FORMAT.md) matches the strict vector.
#[test]
fn worked_example_is_current() {
    let dir = vectors_dir();
    let obj = from_yaml(&std::fs::read_to_string(dir.join("ok-strict-2-entries.yaml")).unwrap());
    let want = worked_example(&obj);
    let have = std::fs::read_to_string(dir.join("worked-example.txt")).unwrap();
    assert_eq!(have, want);
}

/// The YAML of every vector is what the library writes (a parse/render round
/// trip is the identity), so the vectors stay canonical.
#[test]
fn vectors_round_trip_through_yaml() {
    for (name, yaml, _) in cases() {
        let obj = from_yaml(&yaml);
        assert_eq!(to_yaml(&obj), yaml, "{name}");
    }
}

/// docs/FORMAT.md quotes the current worked example: every hex value of
/// 32 bytes or more in `worked-example.txt`, and the vector's YAML.
#[test]
fn format_md_quotes_the_current_example() {
    let dir = vectors_dir();
    let doc = std::fs::read_to_string(dir.join("../../../docs/FORMAT.md")).unwrap();
    let ex = std::fs::read_to_string(dir.join("worked-example.txt")).unwrap();
    let yaml = std::fs::read_to_string(dir.join("ok-strict-2-entries.yaml")).unwrap();
    assert!(
        doc.contains(&yaml),
        "FORMAT.md does not quote ok-strict-2-entries.yaml"
    );
    for line in ex.lines().filter(|l| !l.starts_with('#')) {
        let v = line.split_whitespace().last().unwrap();
        let quoted = [
            "data key",
            "value key",
            "header key",
            "commitment",
            "header tag",
            "dataKeys[0].id",
            "nonce",
            " ct ",
        ];
        if quoted.iter().any(|q| line.contains(q))
            && !line.contains("header bytes")
            && !line.starts_with("entries.secret_key ct")
        {
            assert!(doc.contains(v), "FORMAT.md does not quote {line:?}");
        }
    }
}

/// A data key wrapped under both a local key and an RSA public key opens with
/// either one alone (the other not on the allowlist), and with neither fails
/// before any call.
#[tokio::test]
async fn mixed_wrappings_open_with_either_key_alone() {
    use sealcred_shared::keyring::Allowlist;
    let dir = vectors_dir();
    let key = dir.join(TEST_KEY_FILE);
    let obj =
        from_yaml(&std::fs::read_to_string(dir.join("ok-rsa-mixed-local-and-rsa.yaml")).unwrap());
    let ids: Vec<String> = obj.spec.data_keys[0]
        .wrappings
        .iter()
        .map(|w| w.key_id.clone())
        .collect();
    assert!(
        ids[0].starts_with("local:") && ids[1].starts_with("rsaes-oaep-sha256:arn:"),
        "{ids:?}"
    );
    let want = std::fs::read_to_string(dir.join("ok-rsa-mixed-local-and-rsa.expect")).unwrap();
    for only in [ids[0].clone(), TEST_RSA_ARN.to_string()] {
        let ring = keyring(&key).with_allowlist(Allowlist::only([only.clone()]));
        let opened = sealcred_shared::seal::open(&obj, &ring).await.unwrap();
        assert_eq!(format!("ok {}\n", digest_opened(&opened)), want, "{only}");
    }
    let ring =
        keyring(&key).with_allowlist(Allowlist::only(["local:0000000000000000".to_string()]));
    let e = sealcred_shared::seal::open(&obj, &ring).await.unwrap_err();
    assert_eq!(class(&e), "InvalidSpec Provider.KeyNotAllowed");
}
