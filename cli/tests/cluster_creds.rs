//! `sealcred seal --scope cluster` writes a ClusterSealedStorageCred (issue 17 item 1),
//! and inspect, verify, unseal and rotate read one; the scopes do not cross kinds. The
//! real binary, a local key.

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;

const CANARY: &str = "CANARY-cluster-7d2e";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::cargo_bin("sealcred")
            .unwrap()
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("SEALCRED_LOCAL_KEY", self.path("local.key"))
            .args(args)
            .output()
            .unwrap()
    }
    fn read(&self, n: &str) -> String {
        std::fs::read_to_string(self.path(n)).unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", text(&o.stderr));
    text(&o.stdout)
}

fn fails(o: &Output, needle: &str) {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "expected failure; stderr {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
    assert!(!err.contains(CANARY), "{err}");
}

#[test]
fn seal_inspect_verify_unseal_rotate_a_cluster_object() {
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    let secret = format!("FLYTE_AWS_SECRET_ACCESS_KEY={CANARY}");
    ok(&env.run(&[
        "seal",
        "--name",
        "flyte-task-s3",
        "--scope",
        "cluster",
        "--namespace-selector",
        "flyte.org/task-credentials=s3",
        "--target-namespace",
        "flytesnacks-development",
        "--from-literal",
        &secret,
        "--output-file",
        "c.yaml",
    ]));
    let file = env.read("c.yaml");
    assert!(file.contains("kind: ClusterSealedStorageCred"), "{file}");
    assert!(file.contains("scope: cluster"), "{file}");
    assert!(file.contains("flyte.org/task-credentials: s3"), "{file}");
    assert!(file.contains("- flytesnacks-development"), "{file}");
    assert!(!file.contains("namespace: "), "cluster-scoped: {file}");
    assert!(!file.contains(CANARY));

    let shown = ok(&env.run(&["inspect", "c.yaml"]));
    assert!(
        shown.contains("ClusterSealedStorageCred flyte-task-s3"),
        "{shown}"
    );
    assert!(
        shown.contains("targets:  namespaces flytesnacks-development"),
        "{shown}"
    );
    ok(&env.run(&["verify", "c.yaml"]));
    let opened = ok(&env.run(&["unseal", "c.yaml"]));
    assert!(opened.contains("FLYTE_AWS_SECRET_ACCESS_KEY"), "{opened}");

    // rotate keeps the kind and the targets.
    ok(&env.run(&["rotate", "c.yaml"]));
    let rotated = env.read("c.yaml");
    assert_ne!(rotated, file, "new data key");
    assert!(
        rotated.contains("kind: ClusterSealedStorageCred"),
        "{rotated}"
    );
    assert!(
        rotated.contains("flyte.org/task-credentials: s3"),
        "{rotated}"
    );
    assert!(rotated.contains("- flytesnacks-development"), "{rotated}");
    ok(&env.run(&["verify", "c.yaml"]));

    // Scope cluster as a SealedStorageCred, or another scope as a cluster object: refused.
    let as_namespaced =
        rotated.replace("kind: ClusterSealedStorageCred", "kind: SealedStorageCred");
    std::fs::write(env.path("n.yaml"), as_namespaced).unwrap();
    fails(
        &env.run(&["verify", "n.yaml"]),
        "scope cluster: that scope is sealed for a ClusterSealedStorageCred",
    );
    let widened = rotated.replace("scope: cluster", "scope: cluster-wide");
    std::fs::write(env.path("w.yaml"), widened).unwrap();
    fails(
        &env.run(&["verify", "w.yaml"]),
        "only scope cluster opens in one",
    );

    // The targets need --scope cluster, and --scope cluster needs targets.
    fails(
        &env.run(&[
            "seal",
            "--name",
            "x",
            "-n",
            "a",
            "--target-namespace",
            "b",
            "--from-literal",
            "k=v",
        ]),
        "need --scope cluster",
    );
    fails(
        &env.run(&[
            "seal",
            "--name",
            "x",
            "--scope",
            "cluster",
            "--from-literal",
            "k=v",
        ]),
        "no namespace to write the Secret to",
    );
    // -n is not a target; a bad namespace name or selector is named by its flag, and
    // nothing is written.
    for (args, needle) in [
        (
            &["--scope", "cluster", "-n", "a", "--target-namespace", "b"][..],
            "--namespace: a ClusterSealedStorageCred (--scope cluster) has no namespace",
        ),
        (
            &[
                "--scope",
                "cluster",
                "--target-namespace",
                "b",
                "--target-namespace",
                "Bad_NS",
            ][..],
            "--target-namespace (occurrence 2): not a namespace name",
        ),
        (
            &["--scope", "cluster", "--namespace-selector", "a in (x"][..],
            "--namespace-selector: unbalanced parentheses",
        ),
        (
            &["--scope", "cluster", "--namespace-selector", "a=b,,c"][..],
            "--namespace-selector: term 2 is empty",
        ),
    ] {
        let mut all = vec!["seal", "--name", "x", "--output-file", "bad.yaml"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--from-literal", &secret]);
        let o = env.run(&all);
        fails(&o, needle);
        assert_eq!(
            text(&o.stderr)
                .lines()
                .filter(|l| l.starts_with("error"))
                .count(),
            1
        );
        assert!(
            !env.path("bad.yaml").exists(),
            "nothing written for {args:?}"
        );
    }
}
