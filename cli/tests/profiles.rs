//! Storage-credential profiles through the real binary: each profile's
//! unsealed Secret has exactly the expected keys, and the rendered storage
//! config carries exactly the fields Flyte reads — no others, none misspelled.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;
use base64::Engine;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYCANARY";
const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";

/// flytestdlib `storage.Config` JSON names (flyteorg/flyte
/// flytestdlib/storage/config.go, `Config`, `ConnectionConfig`, `LimitsConfig`,
/// `CachingConfig`, `StowConfig`).
const FLYTESTDLIB_STORAGE: &[&str] = &[
    "type",
    "connection",
    "stow",
    "container",
    "enable-multicontainer",
    "cache",
    "limits",
    "defaultHttpClient",
    "signedUrl",
];
const FLYTESTDLIB_CONNECTION: &[&str] = &[
    "endpoint",
    "auth-type",
    "access-key",
    "secret-key",
    "region",
    "disable-ssl",
];
const FLYTESTDLIB_LIMITS: &[&str] = &["maxDownloadMBs"];
const FLYTESTDLIB_CACHE: &[&str] = &["max_size_mbs", "target_gc_percent"];
const FLYTESTDLIB_STOW: &[&str] = &["kind", "config"];
/// flyteorg/stow s3 config keys (s3/config.go constants).
const STOW_S3: &[&str] = &[
    "auth_type",
    "access_key_id",
    "secret_key",
    "token",
    "region",
    "endpoint",
    "disable_ssl",
    "v2_signing",
    "disable_force_path_style",
];

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.txt"), format!("{SECRET}\n")).unwrap();
        Env { dir }
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
    fn seal(&self, profile: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "seal",
            "--profile",
            profile,
            "--name",
            "flyte-storage-creds",
            "-n",
            "flyte",
        ];
        args.extend_from_slice(extra);
        self.cmd().args(&args).output().unwrap()
    }
    /// Seals, unseals, and returns the Secret's data, decoded.
    fn round_trip(
        &self,
        profile: &str,
        extra: &[&str],
    ) -> std::collections::BTreeMap<String, String> {
        let o = self.seal(profile, &[extra, &["--output-file", "s.yaml"]].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            !std::fs::read_to_string(self.path("s.yaml"))
                .unwrap()
                .contains(SECRET)
        );
        let i = self.cmd().args(["inspect", "s.yaml"]).output().unwrap();
        assert!(String::from_utf8_lossy(&i.stdout).contains(&format!("profile:  {profile}")));
        let u = self
            .cmd()
            .args(["unseal", "s.yaml", "-o", "json"])
            .output()
            .unwrap();
        assert!(u.status.success());
        let v: serde_json::Value = serde_json::from_slice(&u.stdout).unwrap();
        v["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap();
                (k.clone(), String::from_utf8(b).unwrap())
            })
            .collect()
    }
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn subset(have: &BTreeSet<String>, allowed: &[&str], what: &str) {
    for k in have {
        assert!(
            allowed.contains(&k.as_str()),
            "{what}: {k:?} is not a field Flyte reads"
        );
    }
}

const TYPED: &[&str] = &[
    "--access-key-id",
    KEY_ID,
    "--secret-access-key-file",
    "secret.txt",
    "--bucket",
    "my-flyte-bucket",
    "--region",
    "eu-west-1",
];

#[test]
fn flyte_core_renders_storage_yaml_with_flytestdlib_fields() {
    let env = Env::new();
    let data = env.round_trip(
        "flyte-core",
        &[TYPED, &["--endpoint", "http://minio.flyte.svc:9000"]].concat(),
    );
    assert_eq!(data.keys().collect::<Vec<_>>(), ["storage.yaml"]);
    let doc: serde_json::Value = serde_saphyr::from_str(&data["storage.yaml"]).unwrap();
    assert_eq!(keys(&doc), BTreeSet::from(["storage".to_string()]));
    let st = &doc["storage"];
    subset(&keys(st), FLYTESTDLIB_STORAGE, "storage");
    subset(
        &keys(&st["connection"]),
        FLYTESTDLIB_CONNECTION,
        "storage.connection",
    );
    subset(&keys(&st["limits"]), FLYTESTDLIB_LIMITS, "storage.limits");
    assert_eq!(st["type"], "s3");
    assert_eq!(st["container"], "my-flyte-bucket");
    let c = &st["connection"];
    assert_eq!(c["auth-type"], "accesskey");
    assert_eq!(c["access-key"], KEY_ID);
    assert_eq!(c["secret-key"], SECRET);
    assert_eq!(c["region"], "eu-west-1");
    assert_eq!(c["endpoint"], "http://minio.flyte.svc:9000");
    // The scheme decides; a disable-ssl flag would be redundant (and mistyped
    // once it reaches stow's map of strings).
    assert!(c.get("disable-ssl").is_none(), "{c}");
    // The chart's own defaults for the rest of the file it no longer writes.
    subset(&keys(&st["cache"]), FLYTESTDLIB_CACHE, "storage.cache");
    assert_eq!(st["enable-multicontainer"], false);
    assert_eq!(st["limits"]["maxDownloadMBs"], 10);
    assert_eq!(st["cache"]["target_gc_percent"], 70);
}

#[test]
fn flyte_binary_renders_stow_config() {
    let env = Env::new();
    let data = env.round_trip("flyte-binary", TYPED);
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["200-sealcred-storage.yaml"]
    );
    let doc: serde_json::Value =
        serde_saphyr::from_str(&data["200-sealcred-storage.yaml"]).unwrap();
    let st = &doc["storage"];
    subset(&keys(st), FLYTESTDLIB_STORAGE, "storage");
    subset(&keys(&st["stow"]), FLYTESTDLIB_STOW, "storage.stow");
    subset(&keys(&st["stow"]["config"]), STOW_S3, "storage.stow.config");
    assert_eq!(st["type"], "stow");
    assert_eq!(st["stow"]["kind"], "s3");
    assert_eq!(st["stow"]["config"]["auth_type"], "accesskey");
    assert_eq!(st["stow"]["config"]["access_key_id"], KEY_ID);
    assert_eq!(st["stow"]["config"]["secret_key"], SECRET);
    assert!(st["stow"]["config"].get("endpoint").is_none());
    assert_eq!(
        st["limits"]["maxDownloadMBs"], 10,
        "the same limit as flyte-core"
    );
    // With an http endpoint too, every stow config value is a YAML string.
    let data = env.round_trip(
        "flyte-binary",
        &[TYPED, &["--endpoint", "http://minio.flyte.svc:9000"]].concat(),
    );
    let doc: serde_json::Value =
        serde_saphyr::from_str(&data["200-sealcred-storage.yaml"]).unwrap();
    let config = doc["storage"]["stow"]["config"].as_object().unwrap();
    assert!(config.values().all(|v| v.is_string()), "{config:?}");
    assert!(config.get("disable_ssl").is_none());
}

#[test]
fn flyte_task_env_keys() {
    let env = Env::new();
    let data = env.round_trip(
        "flyte-task-env",
        &[
            "--access-key-id",
            KEY_ID,
            "--secret-access-key-file",
            "secret.txt",
            "--endpoint",
            "https://s3.example.com",
        ],
    );
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        [
            "FLYTE_AWS_ACCESS_KEY_ID",
            "FLYTE_AWS_ENDPOINT",
            "FLYTE_AWS_SECRET_ACCESS_KEY"
        ]
    );
    assert_eq!(data["FLYTE_AWS_SECRET_ACCESS_KEY"], SECRET);
}

#[test]
fn aws_env_from_an_aws_profile() {
    let env = Env::new();
    std::fs::create_dir(env.path(".aws")).unwrap();
    std::fs::write(
        env.path(".aws/credentials"),
        format!("[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = x\n\n[flyte]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\naws_session_token = TOKEN123\n"),
    )
    .unwrap();
    std::fs::write(
        env.path(".aws/config"),
        "[profile flyte]\nregion = ap-south-1\n",
    )
    .unwrap();
    let data = env.round_trip("aws-env", &["--from-aws-profile", "flyte"]);
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        [
            "AWS_ACCESS_KEY_ID",
            "AWS_REGION",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN"
        ]
    );
    assert_eq!(data["AWS_ACCESS_KEY_ID"], KEY_ID);
    assert_eq!(data["AWS_SECRET_ACCESS_KEY"], SECRET);
    assert_eq!(data["AWS_SESSION_TOKEN"], "TOKEN123");
    assert_eq!(data["AWS_REGION"], "ap-south-1");

    // flags override the profile
    let data = env.round_trip(
        "aws-env",
        &["--from-aws-profile", "flyte", "--region", "us-west-2"],
    );
    assert_eq!(data["AWS_REGION"], "us-west-2");
}

#[test]
fn secret_from_stdin() {
    let env = Env::new();
    let o = env
        .cmd()
        .args([
            "seal",
            "--profile",
            "flyte-task-env",
            "--name",
            "a",
            "-n",
            "b",
            "--access-key-id",
            KEY_ID,
            "--secret-access-key-stdin",
        ])
        .write_stdin(format!("{SECRET}\n"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Each bad input: non-zero, one error line naming the flag, no output, no secret echoed.
#[test]
fn bad_inputs_name_the_flag() {
    let env = Env::new();
    let without = |flag: &str| -> Vec<&str> {
        let mut out = Vec::new();
        let mut skip = false;
        for a in TYPED {
            if skip {
                skip = false;
                continue;
            }
            if *a == flag {
                skip = true;
                continue;
            }
            out.push(*a);
        }
        out
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (without("--bucket"), "missing --bucket"),
        (without("--region"), "missing --region"),
        (without("--access-key-id"), "missing --access-key-id"),
        (
            without("--secret-access-key-file"),
            "missing --secret-access-key-stdin or --secret-access-key-file",
        ),
        (
            [TYPED, &["--endpoint", "minio:9000"]].concat(),
            "--endpoint \"minio:9000\"",
        ),
        (
            [TYPED, &["--endpoint", "ftp://minio"]].concat(),
            "scheme must be https or http",
        ),
        (
            [TYPED, &["--endpoint", "https://user:pw@minio"]].concat(),
            "must not contain credentials",
        ),
        (
            [&without("--bucket")[..], &["--bucket", "Bad_Bucket"]].concat(),
            "--bucket \"Bad_Bucket\": not a valid bucket name",
        ),
        (
            [&without("--region")[..], &["--region", "EU WEST"]].concat(),
            "--region \"EU WEST\": not a valid region name",
        ),
        (
            [
                &without("--secret-access-key-file")[..],
                &["--secret-access-key-file", "nope.txt"],
            ]
            .concat(),
            "nope.txt: no such file",
        ),
        (
            [TYPED, &["--from-aws-profile", "ghost"]].concat(),
            "--from-aws-profile ghost: no such profile",
        ),
        (
            [
                &without("--access-key-id")[..],
                &["--access-key-id", "AKIA/../x"],
            ]
            .concat(),
            "--access-key-id: expected letters and digits only",
        ),
    ];
    for (args, needle) in cases {
        let o = env.seal("flyte-core", &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(o.stdout.is_empty());
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
        assert!(!err.contains(SECRET), "secret echoed: {err}");
    }

    // Flags a profile does not use are refused rather than silently dropped.
    let o = env.seal(
        "flyte-task-env",
        &[
            "--access-key-id",
            KEY_ID,
            "--secret-access-key-file",
            "secret.txt",
            "--bucket",
            "my-bucket",
        ],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--bucket is not used by this profile"));

    // Typed inputs and raw keys do not mix; profile flags need --profile; unknown profile.
    let o = env.seal("flyte-core", &[TYPED, &["--from-literal", "a=b"]].concat());
    assert!(!o.status.success());
    let o = env
        .cmd()
        .args(["seal", "--name", "a", "-n", "b", "--bucket", "x"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let o = env.seal("gcs-magic", TYPED);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown profile"));

    // The secret key is never a plain argument.
    let o = env.seal(
        "flyte-core",
        &[TYPED, &["--secret-access-key", SECRET]].concat(),
    );
    assert!(!o.status.success());
}
