//! `kubectl sealcred …` through kubectl's own plugin discovery (issue 12.4):
//! the real kubectl (/usr/bin/kubectl) with a `kubectl-sealcred` link to the
//! built binary on PATH — what the release archive and krew install.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KUBECTL: &str = "/usr/bin/kubectl";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Plugin {
    dir: tempfile::TempDir,
}

impl Plugin {
    /// A temp HOME whose bin/ holds `kubectl-sealcred -> sealcred`.
    fn new() -> Plugin {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_sealcred"),
            dir.path().join("bin/kubectl-sealcred"),
        )
        .unwrap();
        Plugin { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        let path = format!("{}:/usr/bin:/bin", self.path("bin").display());
        Command::new(KUBECTL)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.path())
            .env("KUBECONFIG", self.path("no-kubeconfig"))
            .args(args)
            .output()
            .unwrap()
    }
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

#[test]
fn kubectl_plugin_list_finds_sealcred() {
    if !Path::new(KUBECTL).exists() {
        panic!("{KUBECTL} is missing: the tests need Debian's kubectl");
    }
    let p = Plugin::new();
    let listed = ok(&p.kubectl(&["plugin", "list"]));
    assert!(
        listed.contains(&p.path("bin/kubectl-sealcred").display().to_string()),
        "{listed}"
    );
}

#[test]
fn kubectl_sealcred_seals_verifies_and_names_itself() {
    let p = Plugin::new();
    let key = p.path("local.key").display().to_string();
    ok(&p.kubectl(&["sealcred", "keygen", "--output-file", &key]));
    let kms = format!("local:{key}");
    ok(&p.kubectl(&[
        "sealcred",
        "seal",
        "--name",
        "creds",
        "-n",
        "team",
        "--from-literal",
        "access_key=AKIAEXAMPLE",
        "--kms",
        &kms,
        "--output-file",
        "s.yaml",
    ]));
    let sealed = std::fs::read_to_string(p.path("s.yaml")).unwrap();
    assert!(sealed.contains("kind: SealedStorageCred"), "{sealed}");
    assert!(!sealed.contains("AKIAEXAMPLE"));
    let verified = ok(&p.kubectl(&["sealcred", "verify", "--kms", &kms, "s.yaml"]));
    assert!(verified.contains("1 entries"), "{verified}");

    // Usage names the command as the user typed it.
    let help = ok(&p.kubectl(&["sealcred", "seal", "--help"]));
    assert!(help.contains("Usage: kubectl sealcred seal"), "{help}");
    let bad = p.kubectl(&["sealcred", "no-such-command"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("kubectl sealcred"),
        "{}",
        text(&bad.stderr)
    );
}
