//! Test support for sealcred: a real kube-apiserver + etcd (with kube-controller-manager,
//! kube-scheduler and KWOK's simulated Nodes) and a moto KMS server, all on 127.0.0.1,
//! started by `scripts/testenv up` (see `docs/testing.md`).
//!
//! ```no_run
//! # async fn demo() {
//! let env = sealcred_tests::testenv().await; // runs `scripts/testenv up` once per process
//! env.install_sealcred_crd().await;
//! let ns = env.unique_namespace("my-test").await;
//! let client = env.kube_client().await;
//! let kms = env.kms_client();
//! # let _ = (ns, client, kms);
//! # }
//! ```
//!
//! The environment is shared by every test of every test binary (the script serialises
//! `up` with a file lock and reuses running servers), so a test must work in its own
//! namespace ([`TestEnv::unique_namespace`]) and must not assume it is alone. Nothing is
//! torn down at the end of a test run: `scripts/testenv down` does that.
//!
//! Setting `SEALCRED_TESTENV_ENV_FILE=/path/to/env.sh` skips `scripts/testenv up` and uses
//! an environment that is already running.
//!
//! TLS: kube is built with rustls and the aws-lc-rs provider; kube-client installs that
//! provider as the process default when it builds its first TLS connector. The KMS client
//! talks plain HTTP to moto.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod apiserver;
pub mod local_kms;
pub mod moto;

pub use aws_sdk_kms;
pub use kube;

pub mod install;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};

/// Field manager used for the server-side applies done by the test support.
pub const FIELD_MANAGER: &str = "sealcred-tests";

/// Variables of `env.sh` that configure an AWS SDK for the moto KMS server.
pub const KMS_ENV_KEYS: &[&str] = &[
    "AWS_ENDPOINT_URL_KMS",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_EC2_METADATA_DISABLED",
];

/// How long [`TestEnv::install_crd`] waits for a CRD to become Established.
const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);

/// The running test environment (parsed from `target/testenv/env.sh`).
#[derive(Debug)]
pub struct TestEnv {
    root: PathBuf,
    env_file: PathBuf,
    vars: BTreeMap<String, String>,
}

static TESTENV: OnceLock<Result<TestEnv, String>> = OnceLock::new();

/// The process-wide test environment; the first call runs `scripts/testenv up` on a
/// blocking thread (the first `up` on a fresh machine builds etcd and kube-apiserver,
/// which takes minutes; a warm `up` takes seconds; a running environment is reused).
pub async fn testenv() -> &'static TestEnv {
    match tokio::task::spawn_blocking(TestEnv::get).await {
        Ok(env) => env,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl TestEnv {
    /// Blocking variant of [`testenv`]. Panics, with the script's diagnosis, if the
    /// environment cannot be brought up (the same message for every later caller).
    pub fn get() -> &'static TestEnv {
        match TESTENV.get_or_init(TestEnv::start) {
            Ok(env) => env,
            Err(e) => panic!("sealcred test environment unavailable: {e}"),
        }
    }

    fn start() -> Result<TestEnv, String> {
        let root = repo_root();
        let env_file = match std::env::var_os("SEALCRED_TESTENV_ENV_FILE") {
            Some(path) => PathBuf::from(path),
            None => run_up(&root)?,
        };
        let text = std::fs::read_to_string(&env_file)
            .map_err(|e| format!("reading {}: {e}", env_file.display()))?;
        let vars = parse_env_sh(&text);
        for key in [
            "KUBECONFIG",
            "SEALCRED_TEST_KMS_KEY_ARN",
            "SEALCRED_TEST_KMS_ALIAS",
        ]
        .iter()
        .chain(KMS_ENV_KEYS)
        {
            if !vars.contains_key(*key) {
                return Err(format!("{} does not set {key}", env_file.display()));
            }
        }
        Ok(TestEnv {
            root,
            env_file,
            vars,
        })
    }

    /// The repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of `env.sh` (source it in a shell to reach the same servers).
    pub fn env_file(&self) -> &Path {
        &self.env_file
    }

    /// A variable exported by `env.sh`.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    fn required(&self, key: &str) -> &str {
        self.var(key)
            .unwrap_or_else(|| panic!("{} does not set {key}", self.env_file.display()))
    }

    /// Every variable exported by `env.sh`, for a child process (`Command::envs`).
    pub fn all_env(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The KMS endpoint, region and dummy credentials, for a child process.
    pub fn kms_env(&self) -> Vec<(String, String)> {
        KMS_ENV_KEYS
            .iter()
            .map(|k| (k.to_string(), self.required(k).to_string()))
            .collect()
    }

    /// `KUBECONFIG` (admin), for a child process.
    pub fn kube_env(&self) -> Vec<(String, String)> {
        vec![(
            "KUBECONFIG".to_string(),
            self.required("KUBECONFIG").to_string(),
        )]
    }

    /// Path of the admin kubeconfig (user `sealcred-admin`, group `system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.required("KUBECONFIG"))
    }

    /// ARN of the symmetric KMS key created on moto.
    pub fn key_arn(&self) -> &str {
        self.required("SEALCRED_TEST_KMS_KEY_ARN")
    }

    /// `alias/sealcred-test`, which points to [`TestEnv::key_arn`].
    pub fn alias(&self) -> &str {
        self.required("SEALCRED_TEST_KMS_ALIAS")
    }

    /// `http://127.0.0.1:PORT` of the moto server.
    pub fn kms_endpoint(&self) -> &str {
        self.required("AWS_ENDPOINT_URL_KMS")
    }

    /// AWS region of the test KMS (`us-east-1`).
    pub fn region(&self) -> &str {
        self.required("AWS_REGION")
    }

    /// A kube client with the admin kubeconfig.
    pub async fn kube_client(&self) -> kube::Client {
        client_from_kubeconfig(&self.kubeconfig()).await
    }

    /// An aws-sdk-kms client for moto; reads nothing from the process environment or
    /// `~/.aws`.
    pub fn kms_client(&self) -> aws_sdk_kms::Client {
        use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
        let creds = Credentials::new(
            self.required("AWS_ACCESS_KEY_ID"),
            self.required("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "sealcred-testenv",
        );
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region().to_string()))
            .endpoint_url(self.kms_endpoint())
            .credentials_provider(creds)
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }

    /// Writes (and returns the path of) a kubeconfig for ServiceAccount `ns/sa`, creating the
    /// namespace and the ServiceAccount if missing, with a TokenRequest token (24 h). The
    /// ServiceAccount has no permissions unless the test grants some with RBAC.
    pub fn sa_kubeconfig(&self, ns: &str, sa: &str) -> PathBuf {
        write_sa_kubeconfig(&self.root, ns, sa)
    }

    /// A kube client acting as ServiceAccount `ns/sa` (see [`TestEnv::sa_kubeconfig`]).
    pub async fn sa_client(&self, ns: &str, sa: &str) -> kube::Client {
        let (root, ns, sa) = (self.root.clone(), ns.to_string(), sa.to_string());
        let path = tokio::task::spawn_blocking(move || write_sa_kubeconfig(&root, &ns, &sa))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        client_from_kubeconfig(&path).await
    }

    /// Creates a fresh namespace `<prefix>-<unique suffix>` and returns its name.
    ///
    /// The test support never deletes them (deleting one works: kube-controller-manager's
    /// namespace controller removes it in seconds); `scripts/testenv down` wipes etcd.
    pub async fn unique_namespace(&self, prefix: &str) -> String {
        let name = unique_name(prefix);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": name, "labels": { "sealcred.io/test": "true" } },
        }))
        .expect("namespace object");
        Api::<Namespace>::all(self.kube_client().await)
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        name
    }

    /// Server-side applies a CRD (forcing ownership) and waits until it is Established.
    pub async fn install_crd(&self, crd: &CustomResourceDefinition) {
        let name = crd
            .metadata
            .name
            .clone()
            .expect("the CRD has a metadata.name");
        let api = Api::<CustomResourceDefinition>::all(self.kube_client().await);
        let mut crd = crd.clone();
        crd.metadata.managed_fields = None;
        crd.metadata.resource_version = None;
        crd.status = None;
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        let established = await_condition(api, &name, conditions::is_crd_established());
        match tokio::time::timeout(CRD_ESTABLISHED_TIMEOUT, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("waiting for CRD {name}: {e}"),
            Err(_) => panic!("CRD {name} not Established after {CRD_ESTABLISHED_TIMEOUT:?}"),
        }
    }

    /// Installs the `SealedStorageCred` and `ClusterSealedStorageCred` CRDs generated
    /// from the Rust types (a controller watching every namespace needs both).
    pub async fn install_sealcred_crd(&self) {
        use kube::CustomResourceExt;
        self.install_crd(&sealcred_shared::crd::SealedStorageCred::crd())
            .await;
        self.install_crd(&sealcred_shared::crd::ClusterSealedStorageCred::crd())
            .await;
    }

    /// Stops the moto server (KMS becomes unreachable; the port is kept). Affects every
    /// test that uses KMS at the same time: use it only from tests that run alone.
    pub fn kms_stop(&self) {
        self.run_script(&["kms-stop"]);
    }

    /// Restarts moto on the same port, re-creating the same key (same ARN and key
    /// material), so ciphertexts made before [`TestEnv::kms_stop`] decrypt again.
    pub fn kms_start(&self) {
        self.run_script(&["kms-start"]);
    }

    /// Restarts kube-apiserver on the same port (etcd keeps running: no data lost).
    /// Every client sees connection errors meanwhile: only from tests that run alone.
    pub fn apiserver_restart(&self) {
        self.run_script(&["apiserver-restart"]);
    }

    fn run_script(&self, args: &[&str]) {
        let status = Command::new(self.root.join("scripts/testenv"))
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("running scripts/testenv {args:?}: {e}"));
        assert!(
            status.success(),
            "scripts/testenv {args:?} failed: {status}"
        );
    }
}

/// The repository root (the parent of this package's manifest directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A kube client from a kubeconfig file (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("loading kubeconfig {}: {e}", path.display()));
    kube::Client::try_from(config)
        .unwrap_or_else(|e| panic!("kube client from {}: {e}", path.display()))
}

/// A DNS-1123 label `<prefix>-<suffix>`, unique in this process and very likely across
/// processes (pid, time and a counter).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() { c } else { '-' }
        })
        .take(40)
        .collect();
    clean = clean.trim_matches('-').to_string();
    if clean.is_empty() {
        clean.push('t');
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mix = (nanos as u64) ^ (u64::from(std::process::id()) << 32) ^ n.rotate_left(17);
    format!("{clean}-{:x}{n}", mix & 0xff_ffff_ffff)
}

/// Parses the `export KEY='value'` lines written by `scripts/testenv`.
pub fn parse_env_sh(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|rest| rest.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

fn write_sa_kubeconfig(root: &Path, ns: &str, sa: &str) -> PathBuf {
    let out = root
        .join("target/testenv/sa")
        .join(format!("{ns}.{sa}.kubeconfig"));
    let output = Command::new(root.join("scripts/testenv"))
        .arg("sa-kubeconfig")
        .arg(ns)
        .arg(sa)
        .arg(&out)
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running scripts/testenv sa-kubeconfig: {e}"));
    assert!(
        output.status.success(),
        "scripts/testenv sa-kubeconfig {ns} {sa} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn run_up(root: &Path) -> Result<PathBuf, String> {
    let script = root.join("scripts/testenv");
    // Progress and diagnostics (stderr) go straight to the terminal / CI log.
    let output = Command::new(&script)
        .arg("up")
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`scripts/testenv up` failed ({}); its messages are above",
            output.status
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or("`scripts/testenv up` printed no env.sh path")?;
    Ok(PathBuf::from(path.trim()))
}

/// A TCP proxy that can be switched off (connections reset, open ones cut), or held:
/// while held, the bytes clients send wait in the proxy, so a request is in flight
/// and unanswered until [`Proxy::hold`]`(false)` (a delayed KMS).
pub struct Proxy {
    /// `http://127.0.0.1:PORT` of the proxy.
    pub url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    hold: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `target` on a free loopback port, switched on, not held.
    pub async fn start(target: std::net::SocketAddr) -> Proxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let hold = Arc::new(tokio::sync::watch::Sender::new(false));
        let waiting = Arc::new(AtomicUsize::new(0));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (up2, hold2, waiting2, conns2) = (
            Arc::clone(&up),
            Arc::clone(&hold),
            Arc::clone(&waiting),
            Arc::clone(&conns),
        );
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let (hold, waiting) = (hold2.subscribe(), Arc::clone(&waiting2));
                let h = tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_server, mut to_server) = outbound.into_split();
                    let upstream = async move {
                        let mut hold = hold;
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from_client.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if *hold.borrow_and_update() {
                                waiting.fetch_add(1, Ordering::SeqCst);
                                let _ = hold.wait_for(|held| !*held).await;
                                waiting.fetch_sub(1, Ordering::SeqCst);
                            }
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_server.shutdown().await;
                    };
                    let downstream = async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                        let _ = to_client.shutdown().await;
                    };
                    tokio::join!(upstream, downstream);
                });
                conns2.lock().unwrap().push(h);
            }
        });
        Proxy {
            url,
            up,
            hold,
            waiting,
            conns,
            _accept: accept,
        }
    }

    /// Switches the proxy on or off (off: new connections are reset, open ones cut).
    pub fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            for h in self.conns.lock().unwrap().drain(..) {
                h.abort();
            }
        }
    }

    /// Holds (`true`) or releases (`false`) the bytes clients send: while held, a
    /// request reaches the proxy but not the server, and its client waits.
    pub fn hold(&self, held: bool) {
        self.hold.send_replace(held);
    }

    /// How many client writes are waiting in the proxy because it is held.
    pub fn held_requests(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_sh() {
        let vars = parse_env_sh(
            "# comment\nexport KUBECONFIG='/a/b'\nexport AWS_REGION=\"us-east-1\"\nexport X=y\n",
        );
        assert_eq!(vars["KUBECONFIG"], "/a/b");
        assert_eq!(vars["AWS_REGION"], "us-east-1");
        assert_eq!(vars["X"], "y");
        assert_eq!(vars.len(), 3);
    }

    #[test]
    fn unique_names_are_dns_labels() {
        let a = unique_name("My_Test!");
        let b = unique_name("My_Test!");
        assert_ne!(a, b);
        for n in [&a, &b, &unique_name(&"x".repeat(100)), &unique_name("--")] {
            assert!(n.len() <= 63, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
            assert!(!n.starts_with('-') && !n.ends_with('-'), "{n}");
        }
    }
}
