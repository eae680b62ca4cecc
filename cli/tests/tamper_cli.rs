//! The tamper matrix (`shared/tests/common/tamper_cases.rs`) through the real binary:
//! every row is written to a file and given to `sealcred verify` and `sealcred unseal`.
//! A row that must fail fails both with a non-zero exit, one `error:` line naming the
//! file, nothing on stdout, and no canary in any output; a row that must open verifies
//! and unseals to exactly the sealed values.

#[allow(unused_imports)]
#[path = "../../shared/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use common::tamper_cases::*;
use common::to_yaml;

fn sealcred(dir: &Path, key: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("sealcred")
        .unwrap()
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("SEALCRED_LOCAL_KEY", key)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What is wrong with a failure's output (empty: a clean failure).
fn clean_failure(o: &Output, file: &str) -> Vec<String> {
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    let mut bad = Vec::new();
    if o.status.success() {
        bad.push("exit status 0".into());
    }
    if !out.is_empty() {
        bad.push(format!("stdout not empty: {out:?}"));
    }
    // One `error:` line naming the file (verify, which takes many files, adds its
    // summary line "N of M files failed verification").
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("hint: ") && !l.ends_with("files failed verification"))
        .collect();
    if lines.len() != 1 || !lines[0].starts_with("error: ") || !lines[0].contains(file) {
        bad.push(format!("not one `error:` line naming {file}: {err:?}"));
    }
    for c in canaries() {
        if out.contains(c) || err.contains(c) {
            bad.push(format!("canary {c:?} in the output"));
        }
    }
    bad
}

#[tokio::test]
async fn tamper_matrix_through_verify_and_unseal() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures(key(), &Place::standard()).await;
    let cases = cases();
    let mut failed = Vec::new();
    let mut rejected = 0;
    for (i, (what, base, mutate, want)) in cases.into_iter().enumerate() {
        let mut o = fx.base(base);
        mutate(&mut o, &fx);
        let file = format!("case-{i:02}.yaml");
        std::fs::write(dir.path().join(&file), to_yaml(&o)).unwrap();
        let verify = sealcred(dir.path(), key(), &["verify", &file]);
        let unseal = sealcred(dir.path(), key(), &["unseal", &file, "-o", "json"]);
        match want {
            Some(_) => {
                rejected += 1;
                for (cmd, out) in [("verify", &verify), ("unseal", &unseal)] {
                    for b in clean_failure(out, &file) {
                        failed.push(format!("{what}: {cmd}: {b}"));
                    }
                }
            }
            None => {
                if !verify.status.success() {
                    failed.push(format!("{what}: verify failed: {}", text(&verify.stderr)));
                }
                if !unseal.status.success() {
                    failed.push(format!("{what}: unseal failed: {}", text(&unseal.stderr)));
                    continue;
                }
                let secret: serde_json::Value = serde_json::from_slice(&unseal.stdout).unwrap();
                let got: BTreeMap<String, String> = secret["data"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| {
                        use base64::Engine;
                        let b = base64::engine::general_purpose::STANDARD
                            .decode(v.as_str().unwrap())
                            .unwrap();
                        (k.clone(), String::from_utf8(b).unwrap())
                    })
                    .collect();
                let want: BTreeMap<String, String> = expected_values(base)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                if got != want {
                    failed.push(format!("{what}: unsealed to other values"));
                }
            }
        }
    }
    assert!(rejected >= 20, "only {rejected} rows must fail");
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
    println!("{rejected} tampered objects rejected by verify and unseal");
}
