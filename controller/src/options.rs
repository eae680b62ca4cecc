//! Command-line flags of `sealcred-controller` (each also readable from the environment).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use sealcred_shared::keyring::Allowlist;

/// The default of `--secret-types`: types that hold only the data they are given.
/// The API server acts on some other types: `kubernetes.io/service-account-token`
/// (it mints a non-expiring token for the ServiceAccount an annotation names),
/// `bootstrap.kubernetes.io/token` (node join credentials, in kube-system); and tools
/// trust their own (`helm.sh/release.v1`: Helm's release records). Add a type only
/// if every tenant who can create a SealedStorageCred may create such a Secret.
pub const DEFAULT_SECRET_TYPES: &str = "Opaque,kubernetes.io/basic-auth,kubernetes.io/tls,kubernetes.io/dockerconfigjson,kubernetes.io/ssh-auth";

/// The `sealcred-controller` command line.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "sealcred-controller",
    version,
    about = "Unseals SealedStorageCred objects into Kubernetes Secrets"
)]
pub struct Cli {
    /// What to do (default: run the controller).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Controller flags.
    #[command(flatten)]
    pub options: Options,
}

/// Subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Print the SealedStorageCred CRD (YAML) generated from the Rust types.
    Crd,
    /// Run the controller (the default).
    Run,
}

/// How the controller runs.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// KMS keys the controller may call: key ARNs, ARN prefixes ending in `*`
    /// (`arn:aws:kms:eu-west-1:111122223333:key/*`), or `local:<fingerprint>`.
    /// Repeatable, or comma-separated in SEALCRED_KMS_ALLOW. Objects naming
    /// other keys fail with InvalidSpec and cause no KMS call.
    #[arg(long = "kms-allow", env = "SEALCRED_KMS_ALLOW", value_delimiter = ',')]
    pub kms_allow: Vec<String>,

    /// A local key file (development clusters). Its own `local:` id is allowed.
    #[arg(long = "local-key", env = "SEALCRED_LOCAL_KEY")]
    pub local_key: Option<PathBuf>,

    /// Only watch this namespace (default: all namespaces).
    #[arg(long, env = "SEALCRED_NAMESPACE")]
    pub namespace: Option<String>,

    /// Only handle SealedStorageCreds matching this label selector (sharding).
    #[arg(long, env = "SEALCRED_SELECTOR")]
    pub selector: Option<String>,

    /// How many objects are reconciled at once.
    #[arg(long, env = "SEALCRED_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,

    /// Address of the /metrics, /healthz and /readyz server (`off` to disable).
    #[arg(
        long = "metrics-addr",
        env = "SEALCRED_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: String,

    /// Elect a leader through a coordination.k8s.io Lease (run several replicas).
    #[arg(long = "leader-elect", env = "SEALCRED_LEADER_ELECT", action = ArgAction::Set, default_value_t = true)]
    pub leader_elect: bool,

    /// Name of the Lease.
    #[arg(long = "lease-name", default_value = "sealcred-controller")]
    pub lease_name: String,

    /// Namespace of the Lease (default: POD_NAMESPACE, else `sealcred-system`).
    #[arg(
        long = "lease-namespace",
        env = "POD_NAMESPACE",
        default_value = "sealcred-system"
    )]
    pub lease_namespace: String,

    /// Seconds a leader's lease lasts without renewal before another replica takes over.
    #[arg(long = "lease-duration", default_value_t = 15)]
    pub lease_duration_secs: u64,

    /// Seconds between lease renewals (and between acquisition attempts).
    #[arg(long = "lease-renew", default_value_t = 5)]
    pub lease_renew_secs: u64,

    /// This replica's identity in the Lease (default: POD_NAME, else hostname-pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Longest wait between retries of a transient failure (KMS unavailable) or a refused
    /// Secret write (RBAC, admission, quota), in seconds.
    #[arg(long = "max-backoff", default_value_t = 300)]
    pub max_backoff_secs: u64,

    /// Seconds between periodic re-checks of a healthy object (no KMS call unless something changed).
    #[arg(long = "resync", default_value_t = 3600)]
    pub resync_secs: u64,

    /// KMS endpoint for the keys of one region, REGION=URL (repeatable, or
    /// comma-separated in SEALCRED_KMS_ENDPOINT): VPC endpoints, or tests with
    /// one KMS server per region. Other regions use the standard AWS configuration.
    #[arg(
        long = "kms-endpoint",
        env = "SEALCRED_KMS_ENDPOINT",
        value_name = "REGION=URL",
        value_delimiter = ','
    )]
    pub kms_endpoints: Vec<String>,

    /// Secret types the controller may write (comma-separated in
    /// SEALCRED_SECRET_TYPES). An object whose template asks for another type
    /// fails with SecretTypeNotAllowed before any KMS call, and no Secret is
    /// written. `kubernetes.io/service-account-token` is left out on purpose: the
    /// API server would mint a token for whichever ServiceAccount the template's
    /// annotation names.
    #[arg(
        long = "secret-types",
        env = "SEALCRED_SECRET_TYPES",
        value_delimiter = ',',
        default_value = DEFAULT_SECRET_TYPES
    )]
    pub secret_types: Vec<String>,

    /// Roll Deployments, StatefulSets and DaemonSets annotated
    /// `sealcred.io/restart-on-change` when a Secret they name changes
    /// (needs get/list/patch on them; `false` needs no such RBAC).
    #[arg(long = "workload-restarts", env = "SEALCRED_WORKLOAD_RESTARTS", action = ArgAction::Set, default_value_t = true)]
    pub workload_restarts: bool,

    /// IAM roles a SealedStorageCred's `spec.sts.roleArn` may name: role ARNs, or
    /// prefixes ending in `*` right after `/` or `:`
    /// (`arn:aws:iam::111122223333:role/flyte-*` is refused; `…:role/flyte/*` is
    /// fine). Repeatable, or comma-separated in SEALCRED_STS_ROLE_ALLOW. Empty:
    /// no AssumeRole (GetSessionToken with a sealed key still works).
    #[arg(
        long = "sts-role-allow",
        env = "SEALCRED_STS_ROLE_ALLOW",
        value_delimiter = ','
    )]
    pub sts_role_allow: Vec<String>,

    /// STS endpoint URL (VPC endpoints, tests); default: the standard AWS
    /// configuration (`AWS_ENDPOINT_URL_STS`, the regional endpoint).
    #[arg(long = "sts-endpoint", env = "SEALCRED_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,

    /// Shortest time between two STS refreshes of one object, in seconds (a
    /// floor under `spec.sts.refreshAt`).
    #[arg(long = "sts-min-refresh", default_value_t = 60)]
    pub sts_min_refresh_secs: u64,
}

impl Options {
    /// The `--sts-role-allow` entries as a checked [`Allowlist`] (the same rules
    /// as `--kms-allow`: a `*` only at the end, right after `/` or `:`).
    pub fn sts_role_allowlist(&self) -> Result<Allowlist, crate::Error> {
        Allowlist::checked(self.sts_role_allow.iter().cloned())
            .map_err(|e| crate::Error::Config(format!("--sts-role-allow: {e}")))
    }

    /// Options parsed from `args` (the first item is the program name).
    pub fn parse_from<I, T>(args: I) -> Result<Options, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::try_parse_from(args).map(|c| c.options)
    }

    /// The metrics address, or `None` when disabled.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, crate::Error> {
        if self.metrics_addr == "off" || self.metrics_addr.is_empty() {
            return Ok(None);
        }
        self.metrics_addr
            .parse()
            .map(Some)
            .map_err(|e| crate::Error::Config(format!("--metrics-addr {}: {e}", self.metrics_addr)))
    }

    /// This replica's identity.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "sealcred".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// Lease duration.
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_secs.max(1))
    }

    /// Lease renewal period.
    pub fn lease_renew(&self) -> Duration {
        Duration::from_secs(self.lease_renew_secs.max(1))
    }

    /// The `--kms-endpoint` flags as region → URL.
    pub fn kms_endpoints(&self) -> Result<HashMap<String, String>, crate::Error> {
        let mut out = HashMap::new();
        for e in &self.kms_endpoints {
            let (region, url) = e
                .split_once('=')
                .map(|(r, u)| (r.trim(), u.trim()))
                .filter(|(r, u)| !r.is_empty() && !u.is_empty())
                .ok_or_else(|| {
                    crate::Error::Config(format!("--kms-endpoint {e:?}: expected REGION=URL"))
                })?;
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(crate::Error::Config(format!(
                    "--kms-endpoint {e:?}: the URL must start with https:// (or http://)"
                )));
            }
            if out.insert(region.to_string(), url.to_string()).is_some() {
                return Err(crate::Error::Config(format!(
                    "--kms-endpoint: region {region} given twice"
                )));
            }
        }
        Ok(out)
    }

    /// The `--kms-allow` entries as a checked [`Allowlist`]: a `*` may only end an
    /// entry, right after `/` or `:` (`arn:aws:kms:eu-west-1:1111*` would also allow
    /// account 11112222…).
    pub fn allowlist(&self) -> Result<Allowlist, crate::Error> {
        Allowlist::checked(self.kms_allow.iter().cloned())
            .map_err(|e| crate::Error::Config(format!("--kms-allow: {e}")))
    }

    /// Checks flag combinations.
    pub fn validate(&self) -> Result<(), crate::Error> {
        self.allowlist()?;
        self.sts_role_allowlist()?;
        if let Some(url) = &self.sts_endpoint
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(crate::Error::Config(format!(
                "--sts-endpoint {url:?}: the URL must start with https:// (or http://)"
            )));
        }
        if self.secret_types.iter().any(|t| t.trim().is_empty()) {
            return Err(crate::Error::Config(
                "--secret-types: an empty entry (use Opaque for the default type)".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err(crate::Error::Config(
                "--concurrency must be at least 1".into(),
            ));
        }
        self.kms_endpoints()?;
        if self.leader_elect && self.lease_renew_secs >= self.lease_duration_secs {
            return Err(crate::Error::Config(
                "--lease-renew must be shorter than --lease-duration".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let o = Options::parse_from([
            "x",
            "--kms-allow",
            "arn:aws:kms:us-east-1:1:key/*",
            "--kms-allow=local:ab",
            "--leader-elect=false",
            "--namespace",
            "ns1",
            "--concurrency",
            "2",
        ])
        .unwrap();
        assert_eq!(o.kms_allow, ["arn:aws:kms:us-east-1:1:key/*", "local:ab"]);
        assert!(!o.leader_elect);
        assert_eq!(o.namespace.as_deref(), Some("ns1"));
        assert_eq!(o.concurrency, 2);
        assert!(o.workload_restarts);
        assert_eq!(
            o.secret_types,
            [
                "Opaque",
                "kubernetes.io/basic-auth",
                "kubernetes.io/tls",
                "kubernetes.io/dockerconfigjson",
                "kubernetes.io/ssh-auth"
            ]
        );
        o.validate().unwrap();
    }

    #[test]
    fn secret_types_parse() {
        let o = Options::parse_from(["x", "--secret-types", "Opaque,example.com/x"]).unwrap();
        assert_eq!(o.secret_types, ["Opaque", "example.com/x"]);
        o.validate().unwrap();
        let o = Options::parse_from(["x", "--secret-types", "Opaque,"]).unwrap();
        assert!(o.validate().is_err());
    }

    #[test]
    fn kms_endpoints_parse() {
        let o = Options::parse_from([
            "x",
            "--kms-endpoint",
            "us-east-1=http://127.0.0.1:1",
            "--kms-endpoint=eu-west-1=https://vpce-1.kms.eu-west-1.vpce.amazonaws.com",
            "--workload-restarts=false",
        ])
        .unwrap();
        let m = o.kms_endpoints().unwrap();
        assert_eq!(m["us-east-1"], "http://127.0.0.1:1");
        assert_eq!(
            m["eu-west-1"],
            "https://vpce-1.kms.eu-west-1.vpce.amazonaws.com"
        );
        assert!(!o.workload_restarts);
        for bad in ["us-east-1", "=http://x", "us-east-1=ftp://x"] {
            let o = Options::parse_from(["x", "--kms-endpoint", bad]).unwrap();
            assert!(o.validate().is_err(), "{bad}");
        }
        let o = Options::parse_from([
            "x",
            "--kms-endpoint=r=http://a",
            "--kms-endpoint=r=http://b",
        ])
        .unwrap();
        assert!(o.validate().is_err());
    }

    #[test]
    fn over_matching_kms_allow_is_refused() {
        let o = Options::parse_from([
            "x",
            "--kms-allow",
            "arn:aws:kms:eu-west-1:111122223333:key/*",
            "--kms-allow",
            "arn:aws:kms:eu-west-1:1111*",
        ])
        .unwrap();
        let e = o.validate().unwrap_err().to_string();
        assert!(
            e.contains("--kms-allow") && e.contains("\"arn:aws:kms:eu-west-1:1111*\""),
            "{e}"
        );
    }
}
