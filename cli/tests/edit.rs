//! `sealcred edit` (issue 17.2) with `EDITOR` set to scripts: changed, added
//! and removed entries; no change; a failing editor; text that is not
//! `name: value`; the private temporary file (mode, place, wiped with the
//! editor's swap files) on success, on error and on SIGTERM.

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;

const CANARY: &str = "CANARY-edit-0b7e";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        let o = env.run(&[
            "seal",
            "--name",
            "creds",
            "-n",
            "flyte",
            "--from-literal",
            "access_key=AKIAEXAMPLE",
            "--from-literal",
            &format!("secret_key={CANARY}"),
            "--from-literal",
            &format!("storage.yaml=storage:\n  type: s3\n  key: {CANARY}\n"),
            "--output-file",
            "s.yaml",
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        env
    }
    fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }
    fn cmd(&self) -> Command {
        Command::from_std(self.std_cmd())
    }
    fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("sealcred"));
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
    /// `sealcred edit s.yaml` with EDITOR a script: `body` runs with the
    /// file as $1; it first records the file's path, mode and directory.
    fn edit(&self, body: &str) -> Output {
        let script = self.path("editor.sh");
        let log = self.path("editor.log");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nset -e\necho \"$1 $(stat -c %a \"$1\") $(stat -c %a \"$(dirname \"$1\")\")\" > '{}'\n{body}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        self.cmd()
            .env("EDITOR", script.display().to_string())
            .args(["edit", "s.yaml"])
            .output()
            .unwrap()
    }
    /// What the editor script recorded: (file, file mode, dir mode).
    fn editor_saw(&self) -> (PathBuf, String, String) {
        let log = std::fs::read_to_string(self.path("editor.log")).unwrap();
        let mut p = log.split_whitespace();
        (
            PathBuf::from(p.next().unwrap()),
            p.next().unwrap().to_string(),
            p.next().unwrap().to_string(),
        )
    }
    fn read(&self) -> String {
        std::fs::read_to_string(self.path("s.yaml")).unwrap()
    }
    fn unsealed(&self) -> serde_json::Value {
        let o = self.run(&["unseal", "s.yaml", "-o", "json"]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn entries(yaml: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    v["spec"]["entries"].clone()
}

/// The plaintext file and its directory are gone, and were private.
fn wiped(env: &Env) {
    let (file, mode, dir_mode) = env.editor_saw();
    assert_eq!(mode, "600", "file mode");
    assert_eq!(dir_mode, "700", "directory mode");
    if std::path::Path::new("/dev/shm").is_dir() {
        assert!(
            file.starts_with("/dev/shm"),
            "not on tmpfs: {}",
            file.display()
        );
    }
    assert!(!file.exists(), "{} left behind", file.display());
    assert!(!file.parent().unwrap().exists(), "directory left behind");
}

#[test]
fn a_changed_value_is_resealed_alone() {
    let env = Env::new();
    let before = env.read();
    let o = env.edit("sed -i 's/^\"access_key\": .*/\"access_key\": \"AKIANEW\"/' \"$1\"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("1 changed, 0 added, 0 removed"),
        "{}",
        text(&o.stderr)
    );
    wiped(&env);
    let (old, new) = (entries(&before), entries(&env.read()));
    assert_eq!(
        old["secret_key"], new["secret_key"],
        "an untouched entry stays byte-for-byte"
    );
    assert_eq!(old["storage.yaml"], new["storage.yaml"]);
    assert_ne!(old["access_key"], new["access_key"]);
    let v = env.unsealed();
    assert_eq!(v["data"]["access_key"], b64("AKIANEW"));
    assert_eq!(
        v["data"]["storage.yaml"],
        b64(&format!("storage:\n  type: s3\n  key: {CANARY}\n"))
    );
    assert!(!text(&o.stderr).contains(CANARY));
}

#[test]
fn added_and_removed_entries() {
    let env = Env::new();
    let o = env.edit(
        "sed -i '/^\"secret_key\":/d' \"$1\"\nprintf 'region: eu-west-1\\nport: 5432\\n' >> \"$1\"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("0 changed, 2 added, 1 removed"),
        "{}",
        text(&o.stderr)
    );
    wiped(&env);
    let v = env.unsealed();
    let names: Vec<&String> = v["data"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["access_key", "port", "region", "storage.yaml"]);
    assert_eq!(v["data"]["port"], b64("5432"));
}

#[test]
fn no_change_leaves_the_file_byte_identical() {
    let env = Env::new();
    let before = env.read();
    // Re-saving the same text (multi-line value included) is no change either.
    let o = env.edit("cp \"$1\" \"$1.tmp\" && mv \"$1.tmp\" \"$1\"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no changes; not rewritten"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(env.read(), before);
    wiped(&env);
}

#[test]
fn a_failing_editor_or_bad_text_leaves_the_file_untouched() {
    let env = Env::new();
    let before = env.read();
    // The editor leaves a swap file beside the plaintext: it goes too.
    let o = env.edit("echo x > \"$(dirname \"$1\")/.entries.yaml.swp\"\nexit 3");
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("exited with exit status: 3"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(env.read(), before);
    wiped(&env);

    for body in [
        "printf 'oops: [unclosed\\n' >> \"$1\"",
        "printf -- '- a list\\n' > \"$1\"",
        "printf 'bad/name: x\\n' >> \"$1\"",
    ] {
        let o = env.edit(body);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{body}: {err}");
        assert!(
            err.contains("error: s.yaml: the edited text"),
            "{body}: {err}"
        );
        assert!(
            !err.contains(CANARY) && !err.contains("AKIAEXAMPLE"),
            "{err}"
        );
        assert_eq!(env.read(), before, "{body}");
        wiped(&env);
    }
}

#[test]
fn sigterm_wipes_the_plaintext_and_changes_nothing() {
    let env = Env::new();
    let before = env.read();
    let script = env.path("editor.sh");
    let log = env.path("editor.log");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 $(stat -c %a \"$1\") $(stat -c %a \"$(dirname \"$1\")\")\" > '{}.tmp'\nmv '{0}.tmp' '{0}'\nsleep 30\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = env.std_cmd();
    let mut child = cmd
        .env("EDITOR", script.display().to_string())
        .args(["edit", "s.yaml"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !log.exists() {
        assert!(std::time::Instant::now() < deadline, "editor never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (file, _, _) = env.editor_saw();
    assert!(file.exists());
    nix_kill(child.id(), 15);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(!file.exists(), "plaintext left after SIGTERM");
    assert!(!file.parent().unwrap().exists());
    assert_eq!(env.read(), before);
}

fn nix_kill(pid: u32, sig: i32) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok);
}
