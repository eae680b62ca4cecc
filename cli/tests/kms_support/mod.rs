//! Shared by the CLI's KMS test binaries: a temp dir running the real `sealcred`
//! binary against the test environment's moto KMS, key creation, and reading
//! what a sealed file records.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;
use sealcred_tests::TestEnv;
use sealcred_tests::aws_sdk_kms;

pub const CANARY: &str = "CANARY-kms-5e1f0c";

pub struct Dir {
    pub dir: tempfile::TempDir,
    pub env: &'static TestEnv,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().unwrap(),
            env: TestEnv::get(),
        }
    }

    pub fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("sealcred").unwrap();
        c.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(self.env.kms_env());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Seals `flyte-storage-creds` in `ns` (two entries, one a canary) under `kms`.
    pub fn seal(&self, file: &str, ns: &str, kms: &[&str]) -> Output {
        let mut args = vec![
            "seal".to_string(),
            "--name".into(),
            "flyte-storage-creds".into(),
            "-n".into(),
            ns.into(),
            "--from-literal".into(),
            "access_key=AKIAEXAMPLE".into(),
            "--from-literal".into(),
            format!("secret_key={CANARY}"),
            "--output-file".into(),
            file.into(),
        ];
        for k in kms {
            args.push("--kms".into());
            args.push(k.to_string());
        }
        self.cmd().args(&args).output().unwrap()
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).unwrap()
    }

    /// The key ids wrapping each data key of `file`, in file order.
    pub fn wrappings(&self, file: &str) -> Vec<Vec<String>> {
        let v: serde_json::Value = serde_saphyr::from_str(&self.read(file)).unwrap();
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

    /// Asserts that each of `keys` alone opens every data key and entry of
    /// `file` (`sealcred verify --only-key K`), and that the file lists
    /// `entries` entries.
    pub fn opens_with_each(&self, file: &str, keys: &[&str], entries: usize) {
        for k in keys {
            let out = self.run(&["verify", "--only-key", k, file]);
            assert!(
                out.status.success(),
                "{file} does not open with {k} alone: {}",
                text(&out.stderr)
            );
            assert!(
                text(&out.stdout).contains(&format!("({entries} entries")),
                "{}",
                text(&out.stdout)
            );
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", text(&o.stderr));
    text(&o.stdout)
}

pub fn fails(o: &Output, needle: &str) {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "expected failure; stderr {err}");
    assert!(err.contains("error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
    assert!(!err.contains(CANARY) && !text(&o.stdout).contains(CANARY));
}

/// A moto KMS client for `region` (moto serves every region on one endpoint).
pub fn kms_client_in(env: &TestEnv, region: &str) -> aws_sdk_kms::Client {
    use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
    let creds = Credentials::new(
        env.var("AWS_ACCESS_KEY_ID").unwrap(),
        env.var("AWS_SECRET_ACCESS_KEY").unwrap(),
        None,
        None,
        "sealcred-cli-tests",
    );
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(env.kms_endpoint())
        .credentials_provider(creds)
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// A new symmetric key in `region`; its ARN.
pub fn create_key_in(env: &TestEnv, region: &str) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        kms_client_in(env, region)
            .create_key()
            .description("sealcred cli test key")
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap()
            .arn
            .unwrap()
    })
}

/// A new symmetric key in the test environment's region; its ARN.
pub fn create_key(env: &TestEnv) -> String {
    create_key_in(env, env.region())
}

/// A new alias for `arn`; the alias name.
pub fn create_alias(env: &TestEnv, arn: &str) -> String {
    let name = format!("alias/{}", sealcred_tests::unique_name("cli"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        env.kms_client()
            .create_alias()
            .alias_name(&name)
            .target_key_id(arn)
            .send()
            .await
            .unwrap();
    });
    name
}
