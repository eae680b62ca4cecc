//! Sealing offline with a KMS RSA public key (issue 15), against a private
//! local-kms (it decrypts RSA-OAEP ciphertext made outside it and honours key
//! state; moto does neither): `sealcred pubkey`, `seal --public-key` with no
//! AWS credentials and no network, mixing with a symmetric key, merge and
//! rotate, creation rules, bad public-key files, and a disabled key.

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;
use sealcred_tests::aws_sdk_kms::types::{KeySpec, KeyUsageType};
use sealcred_tests::local_kms::LocalKms;

const CANARY: &str = "CANARY-pubkey-71c2aa";
/// Nothing listens here (the discard port): a call that tried the network
/// would fail.
const UNREACHABLE: &str = "http://127.0.0.1:9";

struct T {
    dir: tempfile::TempDir,
    kms: LocalKms,
    rt: tokio::runtime::Runtime,
}

impl T {
    fn new() -> T {
        T {
            dir: tempfile::tempdir().unwrap(),
            kms: LocalKms::start(),
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }

    /// The CLI with nothing from the environment but PATH and HOME.
    fn bare(&self) -> Command {
        let mut c = Command::cargo_bin("sealcred").unwrap();
        c.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path());
        c
    }

    /// Offline: no AWS_* variable but an unreachable KMS endpoint.
    fn offline(&self, args: &[&str]) -> Output {
        self.bare()
            .env("AWS_ENDPOINT_URL_KMS", UNREACHABLE)
            .args(args)
            .output()
            .unwrap()
    }

    /// With the private local-kms and dummy credentials.
    fn online(&self, args: &[&str]) -> Output {
        self.bare()
            .envs(self.kms.env())
            .args(args)
            .output()
            .unwrap()
    }

    fn rsa_key(&self) -> String {
        self.rt.block_on(self.kms.rsa_key(KeySpec::Rsa3072))
    }

    fn pubkey(&self, arn: &str, file: &str) {
        let out = self.online(&["pubkey", "--kms", arn, "--output-file", file]);
        ok(&out);
    }

    fn read(&self, f: &str) -> String {
        std::fs::read_to_string(self.path(f)).unwrap()
    }

    fn key_ids(&self, f: &str) -> Vec<Vec<String>> {
        let v: serde_json::Value = serde_saphyr::from_str(&self.read(f)).unwrap();
        v["spec"]["dataKeys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                d["wrappings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w["keyId"].as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", text(&o.stderr));
    text(&o.stdout)
}

/// Fails with exactly one `error:` line (and at most a hint) containing
/// every needle, nothing on stdout, no canary.
fn fails(o: &Output, needles: &[&str]) {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "expected failure; stderr {err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| {
            !l.starts_with("sealcred: ")
                && !l.starts_with("hint: ")
                && !l.ends_with("files failed verification")
        })
        .collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "expected {n:?} in {err}");
    }
    assert!(o.stdout.is_empty(), "stdout: {}", text(&o.stdout));
    assert!(!err.contains(CANARY));
}

fn seal_args<'a>(out: &'a str, secret: &'a str) -> Vec<&'a str> {
    vec![
        "seal",
        "--name",
        "s3-creds",
        "-n",
        "flyte",
        "--from-literal",
        "access_key=AKIAEXAMPLE",
        "--from-literal",
        secret,
        "--output-file",
        out,
    ]
}

#[test]
fn offline_seal_with_a_public_key_opens_through_kms_decrypt() {
    let t = T::new();
    let arn = t.rsa_key();
    t.pubkey(&arn, "prod.pubkey");
    let file = t.read("prod.pubkey");
    assert!(file.contains(&format!("keyArn: {arn}")), "{file}");
    assert!(file.contains("keySpec: RSA_3072") && file.contains("RSAES_OAEP_SHA_256"));

    // No credentials, no region, an endpoint nobody listens on.
    let secret = format!("secret_key={CANARY}");
    let mut args = seal_args("s.yaml", &secret);
    args.extend(["--public-key", "prod.pubkey"]);
    let out = t.offline(&args);
    ok(&out);
    assert!(!text(&out.stderr).contains(CANARY));
    let rsa_id = format!("rsaes-oaep-sha256:{arn}");
    assert_eq!(t.key_ids("s.yaml"), vec![vec![rsa_id.clone()]]);
    assert!(!t.read("s.yaml").contains(CANARY));

    // Opening needs KMS Decrypt (local-kms, RSAES_OAEP_SHA_256).
    assert!(ok(&t.online(&["verify", "s.yaml"])).contains("(2 entries"));
    let secret_manifest = ok(&t.online(&["unseal", "s.yaml"]));
    assert!(secret_manifest.contains("secret_key"));
    // ... and offline it cannot be opened.
    assert!(!t.offline(&["verify", "s.yaml"]).status.success());

    // `pubkey --check` agrees with KMS; a file of another key does not.
    ok(&t.online(&["pubkey", "--kms", &arn, "--check", "prod.pubkey"]));
    let other = t.rsa_key();
    let out = t.online(&["pubkey", "--kms", &other, "--check", "prod.pubkey"]);
    fails(&out, &["prod.pubkey", "does not hold the public key"]);
}

#[test]
fn one_data_key_under_a_symmetric_key_and_a_public_key_opens_with_either() {
    let t = T::new();
    let rsa = t.rsa_key();
    let sym = t.rt.block_on(t.kms.symmetric_key());
    t.pubkey(&rsa, "k.pubkey");
    let secret = format!("secret_key={CANARY}");
    let mut args = seal_args("s.yaml", &secret);
    args.extend(["--kms", &sym, "--public-key", "k.pubkey"]);
    ok(&t.online(&args));
    let rsa_id = format!("rsaes-oaep-sha256:{rsa}");
    assert_eq!(t.key_ids("s.yaml"), vec![vec![sym.clone(), rsa_id.clone()]]);
    for k in [&sym, &rsa_id] {
        let out = t.online(&["verify", "--only-key", k, "s.yaml"]);
        assert!(ok(&out).contains("(2 entries"), "{k}");
    }
}

#[test]
fn merge_and_rotate_keep_working_with_a_public_key() {
    let t = T::new();
    let rsa = t.rsa_key();
    let sym = t.rt.block_on(t.kms.symmetric_key());
    t.pubkey(&rsa, "k.pubkey");
    let rsa_id = format!("rsaes-oaep-sha256:{rsa}");
    let secret = format!("secret_key={CANARY}");
    let mut args = seal_args("s.yaml", &secret);
    args.extend(["--public-key", "k.pubkey"]);
    ok(&t.offline(&args));

    // Merge offline: keys and binding given, nothing decrypted.
    ok(&t.offline(&[
        "seal",
        "--merge-into",
        "s.yaml",
        "-n",
        "flyte",
        "--name",
        "s3-creds",
        "--public-key",
        "k.pubkey",
        "--reseal",
        "--from-literal",
        "region=eu-west-1",
    ]));
    assert_eq!(t.key_ids("s.yaml"), vec![vec![rsa_id.clone()]; 2]);
    assert!(ok(&t.online(&["verify", "s.yaml"])).contains("(3 entries"));

    // Rotate with the recorded keys: the public key comes from GetPublicKey.
    ok(&t.online(&["rotate", "s.yaml"]));
    assert_eq!(t.key_ids("s.yaml"), vec![vec![rsa_id.clone()]]);
    assert!(ok(&t.online(&["verify", "s.yaml"])).contains("(3 entries"));

    // A symmetric-only file gains an RSA wrapping without re-encrypting.
    let mut args = seal_args("sym.yaml", &secret);
    args.extend(["--kms", &sym]);
    ok(&t.online(&args));
    let before = t.read("sym.yaml");
    ok(&t.online(&["rotate", "sym.yaml", "--add-public-key", "k.pubkey"]));
    assert_eq!(
        t.key_ids("sym.yaml"),
        vec![vec![sym.clone(), rsa_id.clone()]]
    );
    let entries = |s: &str| s.split("entries:").nth(1).unwrap().to_string();
    assert_eq!(entries(&t.read("sym.yaml")), entries(&before));
    let out = t.online(&["verify", "--only-key", &rsa_id, "sym.yaml"]);
    assert!(ok(&out).contains("(2 entries"));
}

#[test]
fn a_creation_rule_seals_with_its_public_key_and_checks_the_arn() {
    let t = T::new();
    let rsa = t.rsa_key();
    std::fs::create_dir_all(t.path("keys")).unwrap();
    std::fs::create_dir_all(t.path("prod")).unwrap();
    t.pubkey(&rsa, "keys/prod.pubkey");
    let rules = |arn: &str| {
        format!(
            "creation_rules:\n  - path_regex: ^prod/\n    namespace: flyte\n    public_key:\n      - arn: {arn}\n        file: keys/prod.pubkey\n"
        )
    };
    std::fs::write(t.path(".sealcred.yaml"), rules(&rsa)).unwrap();
    let secret = format!("secret_key={CANARY}");
    let args = seal_args("prod/s.yaml", &secret);
    let out = t.offline(&args);
    ok(&out);
    assert!(text(&out.stderr).contains("using creation rule 1"));
    assert_eq!(
        t.key_ids("prod/s.yaml"),
        vec![vec![format!("rsaes-oaep-sha256:{rsa}")]]
    );
    ok(&t.online(&["verify", "prod/s.yaml"]));

    // The rule names another key than the file holds: refused, nothing written.
    let other = "arn:aws:kms:eu-west-1:111122223333:key/5e0d1c7a-0000-4000-8000-000000000001";
    std::fs::write(t.path(".sealcred.yaml"), rules(other)).unwrap();
    let args = seal_args("prod/t.yaml", &secret);
    let out = t.offline(&args);
    fails(&out, &["keys/prod.pubkey", &rsa, other, "rule 1"]);
    assert!(!t.path("prod/t.yaml").exists());
}

#[test]
fn bad_public_key_files_are_refused_naming_the_file_and_nothing_is_written() {
    let t = T::new();
    let rsa = t.rsa_key();
    t.pubkey(&rsa, "good.pubkey");
    let good = t.read("good.pubkey");
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "malformed.pubkey",
            "kind: SealcredPublicKey\nversion: [\n".into(),
            &["not a sealcred public-key file"],
        ),
        (
            "not-a-key.pubkey",
            good.replace("publicKey: MII", "publicKey: AAAAMII"),
            &["publicKey"],
        ),
        (
            "sign.pubkey",
            good.replace("ENCRYPT_DECRYPT", "SIGN_VERIFY"),
            &["key usage SIGN_VERIFY", "ENCRYPT_DECRYPT"],
        ),
        (
            "ecc.pubkey",
            good.replace("keySpec: RSA_3072", "keySpec: ECC_NIST_P256"),
            &["key spec ECC_NIST_P256", "does not support"],
        ),
        (
            "size.pubkey",
            good.replace("keySpec: RSA_3072", "keySpec: RSA_2048"),
            &["RSA_2048"],
        ),
    ];
    let secret = format!("secret_key={CANARY}");
    for (name, body, needles) in cases {
        std::fs::write(t.path(name), body).unwrap();
        let mut args = seal_args("out.yaml", &secret);
        args.extend(["--public-key", name]);
        let out = t.offline(&args);
        let mut all = vec![name];
        all.extend_from_slice(needles);
        fails(&out, &all);
        assert!(
            !t.path("out.yaml").exists(),
            "{name}: something was written"
        );
    }

    // `pubkey` refuses a SIGN_VERIFY key and a key spec it cannot seal with,
    // and writes nothing.
    let sign =
        t.rt.block_on(t.kms.create_key(KeySpec::Rsa2048, KeyUsageType::SignVerify));
    let out = t.online(&["pubkey", "--kms", &sign, "--output-file", "sign-kms.pubkey"]);
    fails(&out, &[&sign, "key usage SIGN_VERIFY"]);
    assert!(!t.path("sign-kms.pubkey").exists());
    let ecc = t.rt.block_on(
        t.kms
            .create_key(KeySpec::EccNistP256, KeyUsageType::SignVerify),
    );
    let out = t.online(&["pubkey", "--kms", &ecc, "--output-file", "ecc-kms.pubkey"]);
    fails(&out, &[&ecc, "SIGN_VERIFY"]);
    assert!(!t.path("ecc-kms.pubkey").exists());
}

#[test]
fn a_disabled_key_gives_one_line_saying_what_to_do() {
    let t = T::new();
    let sym = t.rt.block_on(t.kms.symmetric_key());
    let rsa = t.rsa_key();
    t.pubkey(&rsa, "k.pubkey");
    let secret = format!("secret_key={CANARY}");
    let mut args = seal_args("sym.yaml", &secret);
    args.extend(["--kms", &sym]);
    ok(&t.online(&args));
    let mut args = seal_args("rsa.yaml", &secret);
    args.extend(["--public-key", "k.pubkey"]);
    ok(&t.offline(&args));

    t.rt.block_on(t.kms.disable(&sym));
    t.rt.block_on(t.kms.disable(&rsa));
    for (f, key) in [("sym.yaml", &sym), ("rsa.yaml", &rsa)] {
        let out = t.online(&["verify", f]);
        fails(&out, &[f, key, "disabled", "enable it (aws kms enable-key"]);
    }
    let mut args = seal_args("new.yaml", &secret);
    args.extend(["--kms", &sym]);
    let out = t.online(&args);
    fails(&out, &[&sym, "disabled", "enable-key"]);
    assert!(!t.path("new.yaml").exists());

    t.rt.block_on(t.kms.schedule_deletion(&sym));
    let out = t.online(&["verify", "sym.yaml"]);
    fails(
        &out,
        &["sym.yaml", "scheduled for deletion", "cancel-key-deletion"],
    );

    t.rt.block_on(t.kms.enable(&rsa));
    ok(&t.online(&["verify", "rsa.yaml"]));
}

/// local-kms enforces the EncryptionContext as AWS KMS does: a symmetric
/// wrapping of an object edited into another namespace does not decrypt,
/// while its RSA wrapping fails the binding check.
#[test]
fn symmetric_wrappings_are_bound_by_the_context_on_local_kms() {
    let t = T::new();
    let sym = t.rt.block_on(t.kms.symmetric_key());
    let rsa = t.rsa_key();
    t.pubkey(&rsa, "k.pubkey");
    let secret = format!("secret_key={CANARY}");
    let mut args = seal_args("s.yaml", &secret);
    args.extend(["--kms", &sym, "--public-key", "k.pubkey"]);
    ok(&t.online(&args));
    let moved = t
        .read("s.yaml")
        .replace("namespace: flyte", "namespace: other");
    assert_ne!(moved, t.read("s.yaml"));
    std::fs::write(t.path("moved.yaml"), moved).unwrap();
    let out = t.online(&["verify", "--only-key", &sym, "moved.yaml"]);
    fails(&out, &["moved.yaml", "InvalidCiphertextException"]);
    let rsa_id = format!("rsaes-oaep-sha256:{rsa}");
    let out = t.online(&["verify", "--only-key", &rsa_id, "moved.yaml"]);
    fails(&out, &["moved.yaml", "binding check does not match"]);
}
