//! A private etcd + kube-apiserver for one test ([`PrivateApiServer`]), for the
//! flags the shared test environment cannot take without disturbing other tests
//! (an audit policy and log, admission configuration, …).
//!
//! It runs the binaries `scripts/testenv` caches under
//! `$SEALCRED_CACHE_DIR/controlplane/` (default `~/.cache/sealcred/controlplane/`;
//! call [`crate::TestEnv::get`] first so they are built), on free loopback ports,
//! with its own etcd data, token file and ServiceAccount signing key in a
//! temporary directory. The serving certificate is the API server's own
//! self-signed one (`--cert-dir`); clients skip its verification (loopback, test
//! only). Both processes are killed when the value is dropped, also when the test
//! panics.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};

/// Control-plane versions `scripts/testenv` builds (its cache directory name).
const PREFERRED_DIR: &str = "k8s-v1.34.3-etcd-v3.6.4";

/// How long [`PrivateApiServer::start`] waits for the API server.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The cached control-plane binary `name` (`etcd`, `kube-apiserver`).
pub fn control_plane_bin(name: &str) -> PathBuf {
    let cache = std::env::var_os("SEALCRED_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sealcred")))
        .expect("HOME or SEALCRED_CACHE_DIR");
    let root = cache.join("controlplane");
    let preferred = root.join(PREFERRED_DIR).join(name);
    if preferred.exists() {
        return preferred;
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "no cached {name} under {}: run scripts/testenv up first",
            root.display()
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running private etcd + kube-apiserver (RBAC, token auth, TokenRequest).
pub struct PrivateApiServer {
    // Dropped in declaration order: the API server before etcd, then the files.
    apiserver: Killed,
    _etcd: Killed,
    dir: tempfile::TempDir,
    port: u16,
    admin_token: String,
}

impl PrivateApiServer {
    /// Starts etcd and kube-apiserver with `extra_args` added to the API server's
    /// flags, and waits until the API server serves (the `default` namespace exists).
    pub async fn start(extra_args: &[String]) -> PrivateApiServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let admin_token = format!("private-admin-{}-{}", std::process::id(), free_port());
        std::fs::write(
            d.join("tokens.csv"),
            format!("{admin_token},private-admin,private-admin,\"system:masters\"\n"),
        )
        .expect("token file");
        let key = d.join("sa.key");
        let out = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&key)
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(out.success(), "openssl genpkey failed");

        let (client_port, peer_port, port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let etcd_log = std::fs::File::create(d.join("etcd.log")).expect("etcd log");
        let etcd = Killed(
            Command::new(control_plane_bin("etcd"))
                .arg("--name=private")
                .arg(format!("--data-dir={}", d.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
                ))
                .arg(format!(
                    "--initial-cluster=private=http://127.0.0.1:{peer_port}"
                ))
                .arg("--unsafe-no-fsync")
                .stdin(Stdio::null())
                .stdout(etcd_log.try_clone().expect("log"))
                .stderr(etcd_log)
                .spawn()
                .expect("start etcd"),
        );
        let log = std::fs::File::create(d.join("apiserver.log")).expect("apiserver log");
        let apiserver = Killed(
            Command::new(control_plane_bin("kube-apiserver"))
                .arg(format!("--etcd-servers={etcd_url}"))
                .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
                .arg(format!("--secure-port={port}"))
                .arg(format!("--cert-dir={}", d.join("certs").display()))
                .arg("--service-cluster-ip-range=10.0.0.0/24")
                .arg("--authorization-mode=RBAC")
                .arg(format!(
                    "--token-auth-file={}",
                    d.join("tokens.csv").display()
                ))
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg(format!("--service-account-key-file={}", key.display()))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    key.display()
                ))
                .arg("--disable-admission-plugins=ServiceAccount")
                .arg("--enable-priority-and-fairness=false")
                .arg("--profiling=false")
                .args(extra_args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start kube-apiserver"),
        );
        let mut server = PrivateApiServer {
            apiserver,
            _etcd: etcd,
            dir,
            port,
            admin_token,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        let client = self.admin_client().await;
        loop {
            if let Ok(Some(_)) = self.apiserver.0.try_wait() {
                panic!(
                    "private kube-apiserver exited:\n{}",
                    self.log_tail("apiserver.log")
                );
            }
            if Api::<Namespace>::all(client.clone())
                .get_opt("default")
                .await
                .ok()
                .flatten()
                .is_some()
            {
                return;
            }
            if started.elapsed() > READY_TIMEOUT {
                panic!(
                    "private kube-apiserver not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log_tail("apiserver.log")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn log_tail(&self, file: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The scratch directory (etcd data, logs); lives as long as the server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a kubeconfig for `token` and returns its path.
    pub fn kubeconfig_for(&self, file: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(file);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: private\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: private\n  context:\n    cluster: private\n    user: u\ncurrent-context: private\n",
            self.url()
        );
        std::fs::write(&path, text).expect("kubeconfig");
        path
    }

    /// A client as `private-admin` (group `system:masters`).
    pub async fn admin_client(&self) -> kube::Client {
        let path = self.kubeconfig_for("admin.kubeconfig", &self.admin_token);
        crate::client_from_kubeconfig(&path).await
    }

    /// A client as ServiceAccount `ns/sa` (namespace and ServiceAccount created
    /// if missing), with a TokenRequest token. It has no permissions unless the
    /// test grants some.
    pub async fn sa_client(&self, ns: &str, sa: &str) -> kube::Client {
        let admin = self.admin_client().await;
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let mut n = Namespace::default();
        n.metadata.name = Some(ns.to_string());
        let _ = namespaces.create(&PostParams::default(), &n).await;
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
        let mut s = ServiceAccount::default();
        s.metadata.name = Some(sa.to_string());
        let _ = sas.create(&PostParams::default(), &s).await;
        let req = TokenRequest::default();
        let token = sas
            .create_token_request(sa, &PostParams::default(), &req)
            .await
            .expect("TokenRequest")
            .status
            .expect("token status")
            .token
            .expect("a token");
        let path = self.kubeconfig_for(&format!("{ns}.{sa}.kubeconfig"), &token);
        crate::client_from_kubeconfig(&path).await
    }
}
