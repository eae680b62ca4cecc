//! A private local-kms server for one test ([`LocalKms`]): a second AWS KMS
//! implementation (github.com/nsmithuk/local-kms, built from Go modules by
//! `tools/local-kms/build`), stricter than moto where it matters here: it
//! decrypts RSA-OAEP ciphertext made outside it (offline sealing with a KMS
//! RSA public key) and honours key state (a disabled key, or one pending
//! deletion, is refused; moto still decrypts).
//!
//! Each [`LocalKms`] is its own process with its own data directory, on a
//! port the kernel picks (`PORT=0`; the port is read from its start-up log
//! line), killed and reaped on drop. local-kms binds every interface, not
//! only 127.0.0.1 (it has no bind-address setting); clients use 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use aws_sdk_kms::types::{KeySpec, KeyUsageType};

/// The account id local-kms puts in its ARNs.
pub const ACCOUNT: &str = "111122223333";
/// The region it serves.
pub const REGION: &str = "eu-west-1";

/// The local-kms binary: `$SEALCRED_LOCAL_KMS`, else `tools/local-kms/build`
/// (cached under ~/.cache/sealcred/local-kms/<version>/, built when missing:
/// about a minute cold).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SEALCRED_LOCAL_KMS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("tools/local-kms/build"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tools/local-kms/build");
    assert!(out.status.success(), "tools/local-kms/build failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A running private local-kms.
#[derive(Debug)]
pub struct LocalKms {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl LocalKms {
    /// Starts a server and waits until it accepts connections (well under a
    /// second once the binary is built).
    pub fn start() -> LocalKms {
        let bin = binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut child = Command::new(&bin)
            .env_clear()
            .env("PORT", "0")
            .env("KMS_DATA_PATH", &data)
            .env("KMS_REGION", REGION)
            .env("KMS_ACCOUNT_ID", ACCOUNT)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let (tx, rx) = mpsc::channel();
        let log_path = dir.path().join("local-kms.log");
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            let log_path = log_path.clone();
            std::thread::spawn(move || {
                let mut log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .ok();
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(l) = log.as_mut() {
                        let _ = writeln!(l, "{line}");
                    }
                    if let Some(p) = line
                        .split("Local KMS started on 0.0.0.0:")
                        .nth(1)
                        .and_then(|r| r.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
                    {
                        let _ = tx.send(p);
                    }
                }
            });
        }
        let port: u16 = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("local-kms did not start:\n{log}");
            }
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        LocalKms { child, dir, port }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A scratch directory that lives as long as the server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Environment for a child process (the CLI, the controller): this
    /// endpoint, its region and dummy credentials.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL_KMS", self.endpoint()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_DEFAULT_REGION", REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// A KMS client for this server.
    pub fn client(&self) -> aws_sdk_kms::Client {
        use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "local-kms",
            ))
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }

    /// Creates a key and returns its ARN.
    pub async fn create_key(&self, spec: KeySpec, usage: KeyUsageType) -> String {
        let out = self
            .client()
            .create_key()
            .key_spec(spec)
            .key_usage(usage)
            .send()
            .await
            .expect("local-kms CreateKey");
        out.key_metadata().unwrap().arn().unwrap().to_string()
    }

    /// A symmetric ENCRYPT_DECRYPT key.
    pub async fn symmetric_key(&self) -> String {
        self.create_key(KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt)
            .await
    }

    /// An ENCRYPT_DECRYPT RSA key pair.
    pub async fn rsa_key(&self, spec: KeySpec) -> String {
        self.create_key(spec, KeyUsageType::EncryptDecrypt).await
    }

    /// DisableKey.
    pub async fn disable(&self, arn: &str) {
        self.client()
            .disable_key()
            .key_id(arn)
            .send()
            .await
            .expect("DisableKey");
    }

    /// EnableKey.
    pub async fn enable(&self, arn: &str) {
        self.client()
            .enable_key()
            .key_id(arn)
            .send()
            .await
            .expect("EnableKey");
    }

    /// ScheduleKeyDeletion (7 days, the minimum).
    pub async fn schedule_deletion(&self, arn: &str) {
        self.client()
            .schedule_key_deletion()
            .key_id(arn)
            .pending_window_in_days(7)
            .send()
            .await
            .expect("ScheduleKeyDeletion");
    }

    /// CancelKeyDeletion (the key is then disabled, as in AWS).
    pub async fn cancel_deletion(&self, arn: &str) {
        self.client()
            .cancel_key_deletion()
            .key_id(arn)
            .send()
            .await
            .expect("CancelKeyDeletion");
    }
}

impl Drop for LocalKms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
