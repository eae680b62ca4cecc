//! `scripts/release` without building (issue 12.4): its refusals and `--check`
//! run against a copy of the script in a throw-away git repository, with no
//! cargo on PATH (so a refusal that came after the build would show up as a
//! "cargo: command not found" failure instead of the expected message); the
//! krew manifest template and the crate metadata `cargo install` needs.
//! A full release (two fat-LTO builds) is not part of `scripts/test`:
//! docs/release.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    sealcred_tests::repo_root()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=sealcred-tests",
            "-c",
            "user.email=tests@sealcred.invalid",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

/// A git repository holding the release script and the workspace manifest,
/// committed: a clean tree.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::copy(
        root().join("scripts/release"),
        dir.path().join("scripts/release"),
    )
    .unwrap();
    std::fs::copy(root().join("Cargo.toml"), dir.path().join("Cargo.toml")).unwrap();
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "release test"]);
    dir
}

fn release(dir: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(dir.join("scripts/release"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir)
        .output()
        .unwrap()
}

fn refuses(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "expected a refusal; stderr: {err}");
    assert!(err.contains("release: error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(
        !err.contains("command not found"),
        "got past the refusals: {err}"
    );
}

fn version() -> String {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let ws = manifest.split("[workspace.package]").nth(1).unwrap();
    let line = ws.lines().find(|l| l.starts_with("version = ")).unwrap();
    line.trim_start_matches("version = ")
        .trim_matches('"')
        .to_string()
}

#[test]
fn check_on_a_clean_tree_prints_the_plan_and_builds_nothing() {
    let r = repo();
    let out = release(r.path(), &["--check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    let v = version();
    assert!(plan.contains(&format!("release v{v} from ")), "{plan}");
    assert!(plan.contains("(clean)"), "{plan}");
    assert!(plan.contains(&format!("into dist/v{v}")), "{plan}");
    assert!(plan.contains("--profile dist-cli -p sealcred"), "{plan}");
    assert!(
        plan.contains("--profile dist -p sealcred-controller"),
        "{plan}"
    );
    assert!(plan.contains("target-feature=+crt-static"), "{plan}");
    assert!(!r.path().join("dist").exists());
}

#[test]
fn a_dirty_tree_is_refused_unless_allowed() {
    let r = repo();
    std::fs::write(r.path().join("untracked.txt"), "x").unwrap();
    // Without --check too: the refusal comes before any build.
    refuses(&release(r.path(), &[]), "uncommitted change(s)");
    refuses(&release(r.path(), &["--check"]), "--allow-dirty");

    let out = release(r.path(), &["--check", "--allow-dirty"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(dirty)"),
        "{}",
        text(&out.stdout)
    );

    // A modified tracked file counts as well.
    std::fs::remove_file(r.path().join("untracked.txt")).unwrap();
    let manifest = r.path().join("Cargo.toml");
    let changed = std::fs::read_to_string(&manifest).unwrap() + "# changed\n";
    std::fs::write(&manifest, changed).unwrap();
    refuses(&release(r.path(), &["--check"]), "1 uncommitted change(s)");
}

#[test]
fn existing_artefacts_are_never_overwritten() {
    let r = repo();
    let dist = r.path().join(format!("dist/v{}", version()));
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("SHA256SUMS"), "old").unwrap();
    // (dist/ is untracked, so --allow-dirty; the artefact check comes first anyway.)
    refuses(&release(r.path(), &[]), "refusing to overwrite");
    refuses(
        &release(r.path(), &["--allow-dirty"]),
        "refusing to overwrite",
    );
    assert_eq!(
        std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap(),
        "old"
    );

    // Another, empty or new, directory is fine.
    let other = r.path().join("elsewhere");
    let out = release(
        r.path(),
        &["--check", "--allow-dirty", "--out", other.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = r.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    refuses(
        &release(
            r.path(),
            &["--allow-dirty", "--out", file.to_str().unwrap()],
        ),
        "refusing to overwrite",
    );
}

#[test]
fn unknown_arguments_are_refused() {
    let r = repo();
    refuses(
        &release(r.path(), &["--publish"]),
        "unknown argument: --publish",
    );
    refuses(&release(r.path(), &["--out"]), "--out needs a directory");
}

#[test]
fn krew_manifest_template_matches_the_release_archive() {
    let template = std::fs::read_to_string(root().join("plugins/sealcred.yaml")).unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&template).unwrap();
    assert_eq!(
        v["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(v["kind"], "Plugin");
    assert_eq!(v["metadata"]["name"], "sealcred");
    assert_eq!(v["spec"]["version"], "v@VERSION@");
    let platform = &v["spec"]["platforms"][0];
    assert_eq!(platform["selector"]["matchLabels"]["os"], "linux");
    assert_eq!(platform["selector"]["matchLabels"]["arch"], "amd64");
    assert_eq!(platform["sha256"], "@SHA256@");
    assert_eq!(platform["bin"], "sealcred");
    let uri = platform["uri"].as_str().unwrap();
    assert!(
        uri.ends_with("/sealcred-v@VERSION@-x86_64-unknown-linux-gnu.tar.gz"),
        "{uri}"
    );
    // The script names its archive the same way, fills both placeholders
    // and puts the files the manifest lists into the archive.
    let script = std::fs::read_to_string(root().join("scripts/release")).unwrap();
    assert!(script.contains(r#"cli_tgz="sealcred-v$version-$TARGET.tar.gz""#));
    assert!(script.contains(r#"-e "s/@VERSION@/$version/g" -e "s/@SHA256@/$sha/""#));
    assert!(script.contains(r#"ln -s sealcred "$cli_dir/kubectl-sealcred""#));
    assert!(script.contains(r#"cp LICENSE README.md "$cli_dir/""#));
    assert!(root().join("LICENSE").exists());
}

#[test]
fn crate_metadata_is_ready_for_cargo_install() {
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkg = |name: &str| {
        meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no package {name}"))
            .clone()
    };
    for name in ["sealcred", "sealcred-shared"] {
        let p = pkg(name);
        for field in ["description", "license", "repository", "homepage", "readme"] {
            assert!(
                p[field].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: no {field}"
            );
        }
        let keywords = p["keywords"].as_array().unwrap();
        assert!(
            !keywords.is_empty() && keywords.len() <= 5,
            "{name}: keywords"
        );
        assert!(
            !p["categories"].as_array().unwrap().is_empty(),
            "{name}: categories"
        );
        assert!(p["publish"].is_null(), "{name} must be publishable");
    }
    // The CLI's library dependency has a version (a path alone is not packaged).
    let cli = pkg("sealcred");
    let shared = cli["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "sealcred-shared")
        .unwrap()
        .clone();
    assert_eq!(shared["req"], format!("^{}", version()));
    assert!(
        cli["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "sealcred" && t["kind"][0] == "bin")
    );
}
