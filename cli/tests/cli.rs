//! The real `sealcred` binary, with the local key: round trips and every bad
//! input the issue names. Each bad input must give a one-line `error:`, a
//! non-zero exit, no stdout, and leave existing files untouched; no canary
//! value may appear in any output.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

const CANARY: &str = "CANARY-s3cr3t-7f3a9b";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        Env { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("sealcred").unwrap();
        c.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("SEALCRED_LOCAL_KEY", self.path("local.key"))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.cmd().args(args).write_stdin(stdin).output().unwrap()
    }

    /// Seals the Flyte example into `name`.
    fn seal_flyte(&self, name: &str) -> PathBuf {
        let out = self.path(name);
        let o = self.run(&[
            "seal",
            "--name",
            "flyte-storage-creds",
            "-n",
            "flyte",
            "--from-literal",
            "access_key=AKIAEXAMPLE",
            "--from-literal",
            &format!("secret_key={CANARY}"),
            "--output-file",
            out.to_str().unwrap(),
        ]);
        ok(&o);
        out
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "failed: {}", text(&o.stderr));
    assert!(!text(&o.stderr).contains(CANARY));
}

/// Asserts a clean failure: non-zero exit, an `error:` line mentioning
/// `needle`, nothing on stdout, and no canary anywhere.
fn fails(o: &Output, needle: &str) {
    let err = text(&o.stderr);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    // A first-use notice ("sealcred: created a new local key") may precede the error.
    let first = err
        .lines()
        .find(|l| !l.starts_with("sealcred: "))
        .unwrap_or("");
    assert!(first.starts_with("error: "), "stderr: {err}");
    assert!(first.contains(needle), "expected {needle:?} in {first:?}");
    assert!(
        err.lines().all(|l| l.starts_with("error: ")
            || l.starts_with("hint: ")
            || l.starts_with("sealcred: ")),
        "{err}"
    );
    assert!(o.stdout.is_empty(), "stdout not empty: {}", text(&o.stdout));
    assert!(!err.contains(CANARY), "canary leaked: {err}");
}

fn edit(path: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(s.contains(from), "{from} not in file");
    std::fs::write(path, s.replacen(from, to, 1)).unwrap();
}

#[test]
fn seal_inspect_verify_unseal_round_trip() {
    let env = Env::new();
    let f = env.seal_flyte("s.yaml");
    let sealed = std::fs::read_to_string(&f).unwrap();
    assert!(!sealed.contains(CANARY));
    assert!(sealed.contains("kind: SealedStorageCred"));
    assert!(env.path("local.key").exists(), "default local key created");

    let o = env.run(&["inspect", f.to_str().unwrap()]);
    ok(&o);
    let shown = text(&o.stdout);
    assert!(shown.contains("access_key") && shown.contains("secret_key"));
    assert!(shown.contains("strict"));
    assert!(!shown.contains(CANARY));

    let o = env.run(&["verify", f.to_str().unwrap()]);
    ok(&o);
    assert!(!text(&o.stdout).contains(CANARY));

    let o = env.run(&["unseal", f.to_str().unwrap(), "-o", "json"]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "Secret");
    assert_eq!(v["metadata"]["name"], "flyte-storage-creds");
    assert_eq!(v["metadata"]["namespace"], "flyte");
    use base64::Engine;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(v["data"]["secret_key"].as_str().unwrap())
        .unwrap();
    assert_eq!(secret, CANARY.as_bytes());
}

#[test]
fn seal_from_manifest_on_stdin_yaml_and_json() {
    let env = Env::new();
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: team-a\n  labels:\n    app: x\ntype: Opaque\ndata:\n  a: {}\nstringData:\n  b: {CANARY}\n",
        "aGVsbG8="
    );
    let o = env.run_stdin(&["seal"], &yaml);
    ok(&o);
    std::fs::write(env.path("y.yaml"), &o.stdout).unwrap();
    let o = env.run(&["unseal", "y.yaml"]);
    ok(&o);
    let s = text(&o.stdout);
    assert!(s.contains("\"a\": aGVsbG8="), "{s}");
    assert!(s.contains("\"app\": \"x\""), "{s}");

    let json = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"j","namespace":"n"},"stringData":{"k":"v"}}"#;
    let o = env.run_stdin(&["seal", "-o", "json"], json);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "SealedStorageCred");
}

#[test]
fn from_file_and_env_file() {
    let env = Env::new();
    std::fs::write(env.path("cert.pem"), "PEM").unwrap();
    std::fs::write(env.path("e.env"), format!("# comment\n\nA=1\nB={CANARY}\n")).unwrap();
    let o = env.run(&[
        "seal",
        "--name",
        "x",
        "-n",
        "y",
        "--from-file",
        "cert.pem",
        "--from-file",
        "renamed=cert.pem",
        "--from-env-file",
        "e.env",
        "--output-file",
        "out.yaml",
    ]);
    ok(&o);
    let o = env.run(&["verify", "out.yaml"]);
    ok(&o);
    assert!(
        text(&o.stdout).contains("4 entries: A, B, cert.pem, renamed"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn merge_keeps_other_entries_byte_identical() {
    let env = Env::new();
    let f = env.seal_flyte("s.yaml");
    let before = std::fs::read_to_string(&f).unwrap();
    let o = env.run(&[
        "seal",
        "--merge-into",
        "s.yaml",
        "--from-literal",
        "region=us-east-1",
    ]);
    ok(&o);
    let after = std::fs::read_to_string(&f).unwrap();
    // Every line of the old object is still there, unchanged.
    for line in before.lines() {
        assert!(after.contains(line), "line changed or removed: {line}");
    }
    let o = env.run(&["verify", "s.yaml"]);
    ok(&o);
    assert!(text(&o.stdout).contains("3 entries"));

    // Replacing an entry re-seals only that entry.
    let o = env.run(&[
        "seal",
        "--merge-into",
        "s.yaml",
        "--from-literal",
        "access_key=AKIANEW",
    ]);
    ok(&o);
    let o = env.run(&["unseal", "s.yaml", "-o", "json"]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["data"]["access_key"], "QUtJQU5FVw==");

    // Template changes are refused in a merge.
    let o = env.run(&[
        "seal",
        "--merge-into",
        "s.yaml",
        "--from-literal",
        "z=1",
        "--label",
        "a=b",
    ]);
    fails(&o, "cannot change in a merge");
}

#[test]
fn rotate_makes_a_fresh_data_key() {
    let env = Env::new();
    let f = env.seal_flyte("s.yaml");
    let before = std::fs::read_to_string(&f).unwrap();
    let o = env.run(&["rotate", "s.yaml"]);
    ok(&o);
    let after = std::fs::read_to_string(&f).unwrap();
    assert_ne!(before, after);
    let id = |s: &str| s.lines().find(|l| l.contains("- id:")).unwrap().to_string();
    assert_ne!(id(&before), id(&after));
    ok(&env.run(&["verify", "s.yaml"]));
}

#[test]
fn keygen_never_overwrites() {
    let env = Env::new();
    let o = env.run(&["keygen", "--output-file", "k1"]);
    ok(&o);
    assert!(text(&o.stdout).starts_with("local:"));
    let before = std::fs::read(env.path("k1")).unwrap();
    let o = env.run(&["keygen", "--output-file", "k1"]);
    fails(&o, "already exists");
    assert_eq!(std::fs::read(env.path("k1")).unwrap(), before);
}

#[test]
fn completion_and_man() {
    let env = Env::new();
    let o = env.run(&["completion", "bash"]);
    ok(&o);
    assert!(text(&o.stdout).contains("sealcred"));
    let o = env.run(&["man"]);
    ok(&o);
    assert!(text(&o.stdout).contains(".TH"));
}

// ---- bad input -------------------------------------------------------------

#[test]
fn bad_malformed_manifest_does_not_echo_it() {
    let env = Env::new();
    let o = env.run_stdin(
        &["seal"],
        &format!("kind: Secret\ndata: [\n  {CANARY}: :\n"),
    );
    fails(&o, "stdin: not a valid Secret manifest");
}

#[test]
fn bad_base64_in_manifest() {
    let env = Env::new();
    let o = env.run_stdin(
        &["seal"],
        "apiVersion: v1\nkind: Secret\nmetadata: {name: a, namespace: b}\ndata:\n  key1: '!!notbase64'\n",
    );
    fails(&o, "data.key1: invalid base64");
}

#[test]
fn bad_invalid_entry_name() {
    let env = Env::new();
    let o = env.run(&[
        "seal",
        "--name",
        "a",
        "-n",
        "b",
        "--from-literal",
        &format!("bad/key={CANARY}"),
    ]);
    fails(
        &o,
        "--from-literal #1: invalid entry name: Secret keys may contain only",
    );
    assert!(!text(&o.stderr).contains("bad/key"));
}

/// Issue 13.6: a value given without its key (here a base64 string with `=`
/// padding) must not be echoed as an "entry name": the error names the flag and
/// its position only.
#[test]
fn bad_literal_value_without_key_is_not_echoed() {
    let env = Env::new();
    let piece = "Q0FOQVJZLWxpdC9rZXk+";
    let o = env.run(&[
        "seal",
        "--name",
        "a",
        "-n",
        "b",
        "--from-literal",
        "ok=1",
        "--from-literal",
        &format!("{piece}=="),
    ]);
    fails(&o, "--from-literal #2: invalid entry name");
    assert!(!text(&o.stderr).contains(piece), "{}", text(&o.stderr));
}

#[test]
fn bad_env_file_line_is_named_by_position_not_content() {
    let env = Env::new();
    let piece = "c2VjcmV0L3BpZWNl+x";
    let file = env.dir.path().join("creds.env");
    std::fs::write(&file, format!("# comment\nok=1\n{piece}==\n")).unwrap();
    let o = env.run(&[
        "seal",
        "--name",
        "a",
        "-n",
        "b",
        "--from-env-file",
        file.to_str().unwrap(),
    ]);
    fails(&o, "creds.env line 3: invalid entry name");
    assert!(!text(&o.stderr).contains(piece), "{}", text(&o.stderr));
    // A duplicate is named by both positions, not by the key.
    let piece = "c2VjcmV0UGllY2U";
    std::fs::write(&file, format!("{piece}=1\n{piece}=2\n")).unwrap();
    let o = env.run(&[
        "seal",
        "--name",
        "a",
        "-n",
        "b",
        "--from-env-file",
        file.to_str().unwrap(),
    ]);
    fails(&o, "creds.env line 2: duplicate key, first given by");
    assert!(!text(&o.stderr).contains(piece), "{}", text(&o.stderr));
}

#[test]
fn bad_duplicate_key() {
    let env = Env::new();
    let o = env.run(&[
        "seal",
        "--name",
        "a",
        "-n",
        "b",
        "--from-literal",
        "k=1",
        "--from-literal",
        "k=2",
    ]);
    fails(
        &o,
        "--from-literal #2: duplicate key, first given by --from-literal #1",
    );
}

#[test]
fn bad_literal_without_equals_is_not_echoed() {
    let env = Env::new();
    let o = env.run(&["seal", "--name", "a", "-n", "b", "--from-literal", CANARY]);
    fails(&o, "expected KEY=VALUE");
}

#[test]
fn bad_secret_over_one_mib() {
    let env = Env::new();
    std::fs::write(env.path("big"), vec![b'x'; 1024 * 1024 + 1]).unwrap();
    let o = env.run(&["seal", "--name", "a", "-n", "b", "--from-file", "big"]);
    fails(&o, "over Kubernetes' 1048576-byte limit");
}

#[test]
fn bad_missing_input_file() {
    let env = Env::new();
    let o = env.run(&["seal", "--name", "a", "-n", "b", "--from-file", "nope.txt"]);
    fails(&o, "nope.txt: no such file");
    let o = env.run(&["unseal", "missing.yaml"]);
    fails(&o, "missing.yaml: no such file");
}

#[test]
fn bad_missing_namespace() {
    let env = Env::new();
    let o = env.run(&["seal", "--name", "a", "--from-literal", "k=v"]);
    fails(&o, "no namespace");
}

#[test]
fn bad_unknown_format_version() {
    let env = Env::new();
    let f = env.seal_flyte("s.yaml");
    edit(&f, "formatVersion: 1", "formatVersion: 2");
    fails(
        &env.run(&["unseal", "s.yaml"]),
        "unsupported format version 2",
    );
    fails(
        &env.run(&["inspect", "s.yaml"]),
        "unsupported format version 2",
    );
}

#[test]
fn bad_unknown_suite() {
    let env = Env::new();
    let f = env.seal_flyte("s.yaml");
    edit(&f, "suite: AES256GCM-HKDFSHA512-COMMIT", "suite: AES128CBC");
    fails(&env.run(&["verify", "s.yaml"]), "unknown algorithm suite");
}

#[test]
fn bad_edited_scope() {
    let env = Env::new();
    let f = env.seal_flyte("s.yaml");
    edit(&f, "scope: strict", "scope: cluster-wide");
    fails(&env.run(&["unseal", "s.yaml"]), "s.yaml:");
    edit(&f, "scope: cluster-wide", "scope: galaxy-wide");
    fails(&env.run(&["unseal", "s.yaml"]), "invalid SealedStorageCred");
}

#[test]
fn bad_moved_namespace() {
    let env = Env::new();
    let f = env.seal_flyte("s.yaml");
    edit(&f, "namespace: flyte", "namespace: attacker");
    fails(
        &env.run(&["unseal", "s.yaml"]),
        "could not unwrap the data key",
    );
}

#[test]
fn bad_tampered_ciphertext() {
    let env = Env::new();
    let f = env.seal_flyte("s.yaml");
    let s = std::fs::read_to_string(&f).unwrap();
    // Flip the first base64 character of the secret_key ciphertext.
    let at = s.find("secret_key:\n").unwrap();
    let ct = at + s[at..].find("ciphertext: ").unwrap() + "ciphertext: ".len();
    let mut b = s.into_bytes();
    b[ct] = if b[ct] == b'A' { b'B' } else { b'A' };
    std::fs::write(&f, b).unwrap();
    fails(
        &env.run(&["unseal", "s.yaml"]),
        "entry secret_key: decryption failed",
    );
    fails(
        &env.run(&["verify", "s.yaml"]),
        "entry secret_key: decryption failed",
    );
}

#[test]
fn bad_swapped_data_key() {
    let env = Env::new();
    let a = env.seal_flyte("a.yaml");
    let b = env.seal_flyte("b.yaml");
    let wrapped = |p: &Path| {
        let s = std::fs::read_to_string(p).unwrap();
        s.lines()
            .skip_while(|l| !l.contains("keyId:"))
            .nth(1)
            .unwrap()
            .to_string()
    };
    let (wa, wb) = (wrapped(&a), wrapped(&b));
    edit(&a, &wa, &wb);
    fails(
        &env.run(&["unseal", "a.yaml"]),
        "key commitment does not verify",
    );
}

#[test]
fn bad_garbage_sealed_file() {
    let env = Env::new();
    std::fs::write(env.path("g.yaml"), "a: [").unwrap();
    fails(&env.run(&["verify", "g.yaml"]), "malformed YAML");
    std::fs::write(env.path("k.yaml"), "apiVersion: v1\nkind: Secret\n").unwrap();
    fails(&env.run(&["unseal", "k.yaml"]), "not a SealedStorageCred");
}

#[test]
fn error_never_truncates_an_existing_output_file() {
    let env = Env::new();
    std::fs::write(env.path("out.yaml"), "precious\n").unwrap();
    let o = env.run(&[
        "seal",
        "--name",
        "a",
        "-n",
        "b",
        "--from-file",
        "nope",
        "--output-file",
        "out.yaml",
    ]);
    fails(&o, "no such file");
    assert_eq!(
        std::fs::read_to_string(env.path("out.yaml")).unwrap(),
        "precious\n"
    );

    // A failed merge leaves the target untouched too.
    let f = env.seal_flyte("s.yaml");
    let before = std::fs::read(&f).unwrap();
    let o = env.run(&[
        "seal",
        "--merge-into",
        "s.yaml",
        "--from-literal",
        "bad key=1",
    ]);
    fails(&o, "invalid entry name");
    assert_eq!(std::fs::read(&f).unwrap(), before);

    // A failed rotate too.
    edit(&f, "namespace: flyte", "namespace: other");
    let before = std::fs::read(&f).unwrap();
    assert!(!env.run(&["rotate", "s.yaml"]).status.success());
    assert_eq!(std::fs::read(&f).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".sealcred-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left behind");
}

#[test]
fn wrong_local_key_is_named() {
    let env = Env::new();
    env.seal_flyte("s.yaml");
    ok(&env.run(&["keygen", "--output-file", "other.key"]));
    // Local keys are found by fingerprint among the candidates; move the right one away.
    std::fs::rename(env.path("local.key"), env.path("moved.key")).unwrap();
    let o = env.run(&["unseal", "s.yaml", "--local-key", "other.key"]);
    fails(
        &o,
        "which none of the local key files holds (tried other.key",
    );
    let o = env.run(&[
        "unseal",
        "s.yaml",
        "--local-key",
        "other.key",
        "--kms",
        "local:moved.key",
    ]);
    ok(&o);
}

/// The caps (issue 13.3) hold for what the CLI writes: a merge that would make a
/// 33rd data key, or a seal under more than 8 keys, is refused and writes nothing.
#[test]
fn writes_stay_within_the_caps() {
    let env = Env::new();
    let file = env.seal_flyte("s.yaml");
    let f = file.to_str().unwrap();
    for i in 0..31 {
        let o = env.run(&[
            "seal",
            "--merge-into",
            f,
            "--from-literal",
            &format!("k{i}=v"),
        ]);
        assert!(o.status.success(), "merge {i}: {}", text(&o.stderr));
    }
    let before = std::fs::read_to_string(&file).unwrap();
    fails(
        &env.run(&["seal", "--merge-into", f, "--from-literal", "one=more"]),
        "33 data keys, at most 32",
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    ok(&env.run(&["rotate", f]));

    let mut args = vec!["seal", "--name", "a", "-n", "b", "--from-literal", "k=v"];
    let keys: Vec<String> = (0..9)
        .map(|i| env.path(&format!("k{i}.key")).display().to_string())
        .collect();
    for k in &keys {
        ok(&env.run(&["keygen", "--output-file", k]));
    }
    let kms: Vec<String> = keys.iter().map(|k| format!("--kms=local:{k}")).collect();
    args.extend(kms.iter().map(String::as_str));
    fails(
        &env.run(&args),
        "9 keys given; a data key takes at most 8 wrappings",
    );
}
