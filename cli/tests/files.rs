//! Files as people keep them in git (issue 17, sections 5 and 8): several
//! documents in one file, comments above a document, `git diff` through the
//! textconv mode, and the pre-commit check. The real binary, local keys.

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;

const CANARY: &str = "CANARY-files-91c3";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }
    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("sealcred").unwrap();
        c.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("SEALCRED_LOCAL_KEY", self.path("local.key"));
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }
    fn read(&self, n: &str) -> String {
        std::fs::read_to_string(self.path(n)).unwrap()
    }
    fn write(&self, n: &str, text: &str) {
        if let Some(d) = self.path(n).parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(self.path(n), text).unwrap();
    }
    /// Seals object `name` with one canary value into `file`.
    fn seal(&self, file: &str, name: &str) {
        if let Some(d) = self.path(file).parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        ok(&self.run(&[
            "seal",
            "--name",
            name,
            "-n",
            "flyte",
            "--from-literal",
            &format!("secret_key={CANARY}-{name}"),
            "--output-file",
            file,
        ]));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", text(&o.stderr));
    text(&o.stdout)
}

fn fails(o: &Output, needle: &str) -> String {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "expected failure; stderr {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
    assert!(
        !err.contains(CANARY) && !text(&o.stdout).contains(CANARY),
        "{err}"
    );
    err
}

/// Two sealed objects in one file, with comments above each.
fn two_documents(env: &Env) -> String {
    env.seal("a.yaml", "first");
    env.seal("b.yaml", "second");
    let both = format!(
        "# owned by the storage team\n---\n{}---\n# the second object\n{}",
        env.read("a.yaml"),
        env.read("b.yaml")
    );
    env.write("both.yaml", &both);
    both
}

#[test]
fn several_documents_inspect_verify_unseal_rotate() {
    let env = Env::new();
    let before = two_documents(&env);

    let shown = ok(&env.run(&["inspect", "both.yaml"]));
    assert!(
        shown.contains("both.yaml (document 1): SealedStorageCred flyte/first"),
        "{shown}"
    );
    assert!(
        shown.contains("both.yaml (document 2): SealedStorageCred flyte/second"),
        "{shown}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&env.run(&["inspect", "both.yaml", "-o", "json"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);

    let out = ok(&env.run(&["verify", "both.yaml"]));
    assert!(
        out.contains("ok    both.yaml (document 1) (1 entries: secret_key)"),
        "{out}"
    );
    assert!(
        out.contains("ok    both.yaml (document 2) (1 entries: secret_key)"),
        "{out}"
    );

    let yaml = ok(&env.run(&["unseal", "both.yaml"]));
    assert_eq!(yaml.matches("kind: Secret").count(), 2, "{yaml}");
    assert_eq!(yaml.matches("\n---\n").count(), 1);
    let list: serde_json::Value =
        serde_json::from_str(&ok(&env.run(&["unseal", "both.yaml", "-o", "json"]))).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][1]["metadata"]["name"], "second");

    ok(&env.run(&["rotate", "both.yaml"]));
    let after = env.read("both.yaml");
    assert_ne!(after, before);
    assert!(
        after.starts_with("# owned by the storage team\n"),
        "{after}"
    );
    assert!(after.contains("---\n# the second object\n"), "{after}");
    assert_eq!(after.matches("kind: SealedStorageCred").count(), 2);
    ok(&env.run(&["verify", "both.yaml"]));

    // A merge needs a file with one object.
    fails(
        &env.run(&["seal", "--merge-into", "both.yaml", "--from-literal", "x=y"]),
        "holds 2 documents",
    );
}

#[test]
fn a_bad_document_is_named_and_the_file_is_left_whole() {
    let env = Env::new();
    two_documents(&env);
    let original = env.read("both.yaml");
    // Flip one character of the second document's entry ciphertext.
    let second = original.rfind("ciphertext: ").unwrap() + "ciphertext: ".len();
    let mut bytes = original.clone().into_bytes();
    bytes[second] = if bytes[second] == b'A' { b'B' } else { b'A' };
    std::fs::write(env.path("both.yaml"), &bytes).unwrap();
    let tampered = env.read("both.yaml");
    let o = env.run(&["verify", "both.yaml"]);
    fails(&o, "error: both.yaml (document 2): ");
    assert!(text(&o.stdout).contains("ok    both.yaml (document 1)"));
    fails(&env.run(&["rotate", "both.yaml"]), "both.yaml (document 2)");
    assert_eq!(env.read("both.yaml"), tampered, "nothing written");
    // A YAML error names the file line, not the document line.
    env.write(
        "broken.yaml",
        &format!("{}---\nfoo: [unclosed\n", env.read("a.yaml")),
    );
    let lines = env.read("a.yaml").lines().count();
    fails(
        &env.run(&["inspect", "broken.yaml"]),
        &format!(
            "broken.yaml (document 2): malformed YAML at line {}",
            lines + 2
        ),
    );
}

#[test]
fn a_merge_keeps_the_comments_above_the_object() {
    let env = Env::new();
    env.seal("s.yaml", "creds");
    let with_header = format!(
        "# owner: storage team\n# rotate yearly\n\n{}",
        env.read("s.yaml")
    );
    env.write("s.yaml", &with_header);
    ok(&env.run(&[
        "seal",
        "--merge-into",
        "s.yaml",
        "--from-literal",
        "region=r",
    ]));
    let merged = env.read("s.yaml");
    assert!(
        merged.starts_with("# owner: storage team\n# rotate yearly\n\n"),
        "{merged}"
    );
    ok(&env.run(&["verify", "s.yaml"]));
}

#[test]
fn textconv_shows_which_entries_changed_and_never_fails() {
    let env = Env::new();
    env.seal("s.yaml", "creds");
    let before = ok(&env.run(&["inspect", "--textconv", "s.yaml"]));
    assert!(
        before.starts_with("SealedStorageCred flyte/creds (scope strict)\n"),
        "{before}"
    );
    let entry = before
        .lines()
        .find(|l| l.starts_with("entry secret_key: "))
        .unwrap()
        .to_string();
    ok(&env.run(&[
        "seal",
        "--merge-into",
        "s.yaml",
        "--from-literal",
        "region=r",
    ]));
    let after = ok(&env.run(&["inspect", "--textconv", "s.yaml"]));
    assert!(
        after.contains(&entry),
        "an untouched entry's line is unchanged"
    );
    assert!(after.lines().any(|l| l.starts_with("entry region: ")));
    assert!(!after.contains(CANARY));
    // Not a sealed file: shown as it is, exit 0 (git diffs it as text).
    env.write("plain.txt", "hello\n");
    assert_eq!(
        ok(&env.run(&["inspect", "--textconv", "plain.txt"])),
        "hello\n"
    );
}

/// The `.gitattributes` lines docs/git.md gives, with a real git.
#[test]
fn git_diff_through_textconv() {
    let env = Env::new();
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .args(args)
            .current_dir(env.dir.path())
            .env("HOME", env.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    git(&["init", "-q"]);
    git(&["config", "user.email", "t@example.invalid"]);
    git(&["config", "user.name", "t"]);
    let bin = assert_cmd::cargo::cargo_bin("sealcred");
    git(&[
        "config",
        "diff.sealcred.textconv",
        &format!("{} inspect --textconv", bin.display()),
    ]);
    env.write(".gitattributes", "*.sealed.yaml diff=sealcred\n");
    env.seal("creds.sealed.yaml", "creds");
    git(&["add", "."]);
    git(&["commit", "-qm", "sealed"]);
    ok(&env.run(&[
        "seal",
        "--merge-into",
        "creds.sealed.yaml",
        "--from-literal",
        "region=eu-west-1",
    ]));
    let diff = git(&["-c", "core.pager=cat", "diff"]);
    assert!(
        diff.lines().any(|l| l.starts_with("+entry region: ")),
        "{diff}"
    );
    assert!(
        !diff.lines().any(|l| l.starts_with("-entry secret_key")),
        "{diff}"
    );
    assert!(
        !diff.contains("ciphertext: "),
        "the raw YAML is not shown: {diff}"
    );
}

#[test]
fn check_refuses_plaintext_secrets_and_unsealed_files_under_a_rule() {
    let env = Env::new();
    env.seal("deploy/prod/creds.sealed.yaml", "creds");
    env.write(
        "deploy/prod/app.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec: {}\n",
    );
    ok(&env.run(&["check", "deploy"]));

    // A plaintext Secret, anywhere; in a second document too.
    env.write(
        "deploy/dev/leak.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  k: {CANARY}\n"
        ),
    );
    let err = fails(
        &env.run(&["check", "deploy"]),
        "deploy/dev/leak.yaml (document 2): a plaintext Secret",
    );
    assert!(
        err.contains("1 of 3 files hold unsealed credentials"),
        "{err}"
    );
    // An empty Secret (no data) is not a leak.
    env.write(
        "deploy/dev/leak.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ntype: Opaque\n",
    );
    ok(&env.run(&["check", "deploy"]));

    // Under a creation rule: a bare values file must be sealed; manifests may stay.
    let key = env.path("local.key"); // made by the first seal
    env.write(
        ".sealcred.yaml",
        &format!(
            "creation_rules:\n  - path_regex: ^deploy/prod/\n    kms: [local:{}]\n",
            key.display()
        ),
    );
    ok(&env.run(&["check", "deploy"]));
    env.write(
        "deploy/prod/creds.env",
        &format!("AWS_SECRET_ACCESS_KEY={CANARY}\n"),
    );
    fails(
        &env.run(&["check", "deploy"]),
        "deploy/prod/creds.env: under creation rule 1 of",
    );
    // The same file outside every rule is not this check's business.
    std::fs::rename(
        env.path("deploy/prod/creds.env"),
        env.path("deploy/dev/creds.env"),
    )
    .unwrap();
    ok(&env.run(&["check", "deploy"]));
}

/// Issue 17.3: unchanged input gives a byte-identical file where the user can
/// decrypt; `--reseal` seals anew.
#[test]
fn sealing_the_same_input_again_leaves_the_file_byte_identical() {
    let env = Env::new();
    env.seal("s.yaml", "creds");
    let first = env.read("s.yaml");
    let again = env.run(&[
        "seal",
        "--name",
        "creds",
        "-n",
        "flyte",
        "--from-literal",
        &format!("secret_key={CANARY}-creds"),
        "--output-file",
        "s.yaml",
    ]);
    ok(&again);
    assert!(
        text(&again.stderr).contains("unchanged"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(env.read("s.yaml"), first);
    // Another value, another namespace, or --reseal: rewritten.
    for extra in [
        vec!["--from-literal", "secret_key=other", "-n", "flyte"],
        vec![
            "--from-literal",
            "secret_key=CANARY-files-91c3-creds",
            "-n",
            "other",
        ],
        vec![
            "--from-literal",
            "secret_key=CANARY-files-91c3-creds",
            "-n",
            "flyte",
            "--reseal",
        ],
    ] {
        env.write("t.yaml", &first);
        let mut args = vec!["seal", "--name", "creds", "--output-file", "t.yaml"];
        args.extend(extra.iter().copied());
        ok(&env.run(&args));
        assert_ne!(env.read("t.yaml"), first, "{extra:?}");
    }
}

#[test]
fn a_merge_of_identical_values_is_a_no_op() {
    let env = Env::new();
    env.seal("s.yaml", "creds");
    let first = env.read("s.yaml");
    let same = format!("secret_key={CANARY}-creds");
    let o = env.run(&["seal", "--merge-into", "s.yaml", "--from-literal", &same]);
    ok(&o);
    assert!(text(&o.stderr).contains("unchanged"), "{}", text(&o.stderr));
    assert_eq!(env.read("s.yaml"), first);
    // One same, one new: only the new one is sealed; the old entry stays byte-identical.
    ok(&env.run(&[
        "seal",
        "--merge-into",
        "s.yaml",
        "--from-literal",
        &same,
        "--from-literal",
        "region=r",
    ]));
    let v: serde_json::Value = serde_saphyr::from_str(&env.read("s.yaml")).unwrap();
    let old: serde_json::Value = serde_saphyr::from_str(&first).unwrap();
    assert_eq!(
        v["spec"]["entries"]["secret_key"],
        old["spec"]["entries"]["secret_key"]
    );
    assert_eq!(v["spec"]["dataKeys"].as_array().unwrap().len(), 2);
    // --reseal re-seals the identical value too.
    ok(&env.run(&[
        "seal",
        "--merge-into",
        "s.yaml",
        "--reseal",
        "--from-literal",
        &same,
    ]));
    let w: serde_json::Value = serde_saphyr::from_str(&env.read("s.yaml")).unwrap();
    assert_ne!(
        w["spec"]["entries"]["secret_key"],
        old["spec"]["entries"]["secret_key"]
    );
}
