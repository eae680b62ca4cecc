//! Creation rules (`.sealcred.yaml`), recursive rotate, and changing wrapping
//! keys with --add-kms / --remove-kms, through the real binary with local keys.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

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
            .env("SEALCRED_LOCAL_KEY", self.path("default.key"));
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }
    fn keygen(&self, name: &str) -> String {
        let o = self.run(&["keygen", "--output-file", name]);
        assert!(o.status.success());
        String::from_utf8(o.stdout)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    }
    fn seal_to(&self, out: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "seal",
            "--name",
            "creds",
            "--from-literal",
            "k=v",
            "--output-file",
            out,
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn rules(env: &Env) -> (String, String) {
    let prod = env.keygen("prod.key");
    let dev = env.keygen("dev.key");
    let root = env.dir.path().display();
    std::fs::write(
        env.path(".sealcred.yaml"),
        format!(
            "creation_rules:\n  - path_regex: ^envs/prod/\n    kms: [local:{root}/prod.key]\n    namespace: flyte\n  - path_regex: ^envs/dev/\n    kms: [local:{root}/dev.key]\n    namespace: flyte-dev\n    scope: namespace-wide\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(env.path("envs/prod/sub")).unwrap();
    std::fs::create_dir_all(env.path("envs/dev")).unwrap();
    std::fs::create_dir_all(env.path("other")).unwrap();
    (prod, dev)
}

#[test]
fn creation_rules_choose_key_namespace_and_scope_per_path() {
    let env = Env::new();
    let (prod, dev) = rules(&env);
    let out = ok(&env.seal_to("envs/prod/sub/a.yaml", &[]));
    assert!(out.contains("using creation rule 1"), "{out}");
    let a = read(&env.path("envs/prod/sub/a.yaml"));
    assert!(
        a.contains(&format!("keyId: {prod}")) && a.contains("namespace: flyte\n"),
        "{a}"
    );
    assert!(a.contains("scope: strict"));

    ok(&env.seal_to("envs/dev/b.yaml", &[]));
    let b = read(&env.path("envs/dev/b.yaml"));
    assert!(
        b.contains(&format!("keyId: {dev}")) && b.contains("namespace: flyte-dev"),
        "{b}"
    );
    assert!(b.contains("scope: namespace-wide"));

    // Flags override the rule.
    ok(&env.seal_to("envs/dev/c.yaml", &["-n", "elsewhere", "--scope", "strict"]));
    let c = read(&env.path("envs/dev/c.yaml"));
    assert!(c.contains("namespace: elsewhere") && c.contains("scope: strict"));
    ok(&env.seal_to("envs/dev/d.yaml", &["--kms", "local:prod.key"]));
    assert!(read(&env.path("envs/dev/d.yaml")).contains(&prod));
}

#[test]
fn no_matching_rule_and_no_key_fails_closed() {
    let env = Env::new();
    rules(&env);
    let o = env.seal_to("other/x.yaml", &["-n", "a"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no creation rule in") && err.contains("matches \"other/x.yaml\""),
        "{err}"
    );
    assert!(!env.path("other/x.yaml").exists());
    // With an explicit key it works.
    ok(&env.seal_to("other/x.yaml", &["-n", "a", "--kms", "local"]));
}

#[test]
fn invalid_rules_file_is_a_clear_error() {
    let env = Env::new();
    std::fs::write(
        env.path(".sealcred.yaml"),
        "creation_rules:\n  - path_regex: '('\n    kms: [local]\n",
    )
    .unwrap();
    let o = env.seal_to("x.yaml", &["-n", "a"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("rule 1: invalid path_regex"));
    std::fs::write(
        env.path(".sealcred.yaml"),
        "creation_rules:\n  - pathregex: x\n",
    )
    .unwrap();
    let o = env.seal_to("x.yaml", &["-n", "a"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid creation rules"));
}

#[test]
fn rotate_recursive_uses_rules_and_reports() {
    let env = Env::new();
    rules(&env);
    for f in [
        "envs/prod/a.yaml",
        "envs/prod/sub/b.yaml",
        "envs/dev/c.yaml",
    ] {
        ok(&env.seal_to(f, &[]));
    }
    std::fs::write(env.path("envs/prod/notes.yaml"), "not: sealed\n").unwrap();
    let before = read(&env.path("envs/prod/sub/b.yaml"));
    let o = env.run(&["rotate", "envs"]);
    assert!(
        !o.status.success(),
        "a directory without --recursive is refused"
    );
    let out = ok(&env.run(&["rotate", "--recursive", "envs"]));
    assert!(out.contains("rotated 3 of 3 files"), "{out}");
    assert_ne!(before, read(&env.path("envs/prod/sub/b.yaml")));
    assert_eq!(read(&env.path("envs/prod/notes.yaml")), "not: sealed\n");
    for f in [
        "envs/prod/a.yaml",
        "envs/prod/sub/b.yaml",
        "envs/dev/c.yaml",
    ] {
        ok(&env.run(&["verify", f]));
    }
}

#[test]
fn add_and_remove_wrapping_keys_without_touching_values() {
    let env = Env::new();
    let a = env.keygen("a.key");
    let b = env.keygen("b.key");
    ok(&env.seal_to("s.yaml", &["-n", "ns", "--kms", "local:a.key"]));
    let before = read(&env.path("s.yaml"));
    let entries = |s: &str| s[s.find("entries:").unwrap()..].to_string();

    ok(&env.run(&[
        "rotate",
        "s.yaml",
        "--add-kms",
        "local:b.key",
        "--local-key",
        "a.key",
    ]));
    let added = read(&env.path("s.yaml"));
    assert!(added.contains(&a) && added.contains(&b));
    assert_eq!(
        entries(&before),
        entries(&added),
        "values must not be re-encrypted"
    );

    // Now only b is needed: remove a, using b.
    ok(&env.run(&[
        "rotate",
        "s.yaml",
        "--remove-kms",
        &a,
        "--local-key",
        "b.key",
    ]));
    let removed = read(&env.path("s.yaml"));
    assert!(!removed.contains(&a) && removed.contains(&b));
    assert_eq!(entries(&before), entries(&removed));
    ok(&env.run(&["verify", "s.yaml", "--local-key", "b.key"]));
    assert!(
        !env.run(&["verify", "s.yaml", "--local-key", "a.key"])
            .status
            .success()
    );

    // Removing the last wrapping key is refused, file untouched.
    let o = env.run(&[
        "rotate",
        "s.yaml",
        "--remove-kms",
        &b,
        "--local-key",
        "b.key",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("would have no wrapping key left"));
    assert_eq!(read(&env.path("s.yaml")), removed);
}

/// A batch (verify and rotate over a directory, files in flight concurrently):
/// each failing file is reported by name, the others are done and reported in
/// file order, and the run ends non-zero with the count. The failing file is
/// left as it was.
#[test]
fn batches_report_each_failure_in_order_and_count_them() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("repo")).unwrap();
    let names: Vec<String> = (0..12).map(|i| format!("repo/f{i:02}.yaml")).collect();
    for n in &names {
        ok(&env.seal_to(n, &["-n", "ns"]));
    }
    // f05: a bit flipped in its only entry's ciphertext.
    let bad = env.path("repo/f05.yaml");
    let text = read(&bad);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("ciphertext:") && l.len() > 30)
        .unwrap()
        .to_string();
    let c = line.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &line[..line.len() - 1],
        if c == 'A' { 'B' } else { 'A' }
    );
    std::fs::write(&bad, text.replacen(&line, &flipped, 1)).unwrap();
    let tampered = read(&bad);

    let o = env.run(&["verify", "--recursive", "--concurrency", "4", "repo"]);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let ok_lines: Vec<&str> = out.lines().filter(|l| l.starts_with("ok ")).collect();
    let want: Vec<String> = names
        .iter()
        .filter(|n| !n.ends_with("f05.yaml"))
        .map(|n| format!("ok    {n} (1 entries: k)"))
        .collect();
    assert_eq!(ok_lines, want, "every good file, in file order");
    assert!(err.contains("error: repo/f05.yaml: "), "{err}");
    assert!(err.contains("1 of 12 files failed verification"), "{err}");

    let before: Vec<String> = names.iter().map(|n| read(&env.path(n))).collect();
    let o = env.run(&["rotate", "--recursive", "--concurrency", "4", "repo"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("error: repo/f05.yaml: "), "{err}");
    assert!(
        err.contains("rotated 11 of 12 files; 1 failed (left unchanged)"),
        "{err}"
    );
    assert_eq!(read(&bad), tampered);
    for (n, b) in names.iter().zip(&before) {
        if !n.ends_with("f05.yaml") {
            assert_ne!(&read(&env.path(n)), b, "{n} was not rotated");
            ok(&env.run(&["verify", n]));
        }
    }
    let o = env.run(&["verify", "--concurrency", "0", "repo/f00.yaml"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected a number from 1 to 256"));
}
