//! sealcred's Kubernetes controller: turns `SealedStorageCred` objects into Secrets.
//!
//! Modules:
//! - [`run`]: [`run::run`] (the watches, caches, leader loop and `Controller` wiring) and
//!   [`run::State`], what the HTTP server and the tests see of it.
//! - [`reconcile`]: the one `reconcile` and the one `error_policy`.
//! - [`materialize`]: the Secret an object becomes (type check, digests, when to write).
//! - [`write`]: ownership, and the Secret write under the precondition that was checked.
//! - [`refusal`]: a Secret write the API server refused (RBAC, admission, quota, an
//!   immutable field), classified into a Ready=False reason, values redacted.
//! - [`status`]: the Ready condition (server-side apply) and Events of an object.
//! - [`sts`]: short-lived credentials from AWS STS (`spec.sts`).
//! - [`context`]: what `reconcile` needs, and its memory between reconciles.
//! - [`audit`]: the audit trail, one structured log line per unseal.
//! - [`annotations`]: the labels and annotations the controller reads and writes.
//! - [`events`]: Events, with series and a small bounded cache.
//! - [`options`]: the command-line flags (also used by the tests to configure a run).
//! - [`metrics`]: Prometheus metrics (prometheus-client).
//! - [`leader`]: leader election on a `coordination.k8s.io` Lease.
//! - [`http`]: the `/metrics`, `/healthz` and `/readyz` server.
//! - [`harden`]: process hardening at start (no core dumps, not dumpable).
//! - [`digest`]: the keyed restart digest of a Secret's values, and its per-namespace key.
//! - [`consumers`]: the workloads that name a Secret (watched, indexed by Secret) and
//!   where their rollouts stand (`status.consumers`).
//! - [`restart`]: rolling restarts of workloads annotated `sealcred.io/restart-on-change`.
//!
//! Plaintext lives only in `SecretBytes` (from `sealcred_shared::secret`) until the
//! moment a Secret is written; see `docs/operations.md`.
#![deny(missing_docs)]

pub mod annotations;
pub mod audit;
pub mod cluster;
pub mod consumers;
pub mod context;
pub mod digest;
pub mod events;
pub mod harden;
pub mod http;
pub mod leader;
pub mod materialize;
pub mod metrics;
pub mod options;
pub mod reconcile;
pub mod refusal;
pub mod restart;
pub mod run;
pub mod status;
pub mod sts;
mod support;
pub mod write;

/// The CRDs as YAML: `SealedStorageCred`'s and `ClusterSealedStorageCred`'s, each one
/// document (the Helm chart's two files). `sealcred-controller crd` prints them joined
/// by `---` (deploy/crd.yaml).
pub fn crd_documents() -> std::result::Result<[String; 2], String> {
    use kube::CustomResourceExt;
    let ssc = serde_saphyr::to_string(&sealcred_shared::crd::SealedStorageCred::crd());
    let cssc = serde_saphyr::to_string(&sealcred_shared::crd::ClusterSealedStorageCred::crd());
    match (ssc, cssc) {
        (Ok(a), Ok(b)) => Ok([a, b]),
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
    }
}

/// What `sealcred-controller crd` prints: [`crd_documents`] joined by `---`.
pub fn crds_yaml() -> std::result::Result<String, String> {
    let [a, b] = crd_documents()?;
    Ok(format!("{a}---\n{b}"))
}

/// Field manager of every server-side apply the controller makes.
pub const FIELD_MANAGER: &str = "sealcred-controller";

/// Errors of the controller. None carries plaintext.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),
    /// Opening the sealed object failed (reason from `Error::reason()`).
    #[error("{0}")]
    Unseal(#[source] sealcred_shared::Error),
    /// A Secret with the target name exists and is not ours to take over.
    #[error("{0}")]
    SecretConflict(String),
    /// The API server refused the Secret write (RBAC, admission, quota, an immutable
    /// field, validation). `reason` is one of [`refusal::REFUSAL_REASONS`]; `message`
    /// names the API error's code and reason and never holds a value (see
    /// [`refusal`]).
    #[error("{message}")]
    SecretWrite {
        /// The Ready=False reason.
        reason: &'static str,
        /// What the API server said, values redacted.
        message: String,
    },
    /// The template asks for a Secret type not on `--secret-types`.
    #[error(
        "Secret type {0:?} is not allowed by this controller (its --secret-types); no Secret was written"
    )]
    SecretTypeNotAllowed(String),
    /// The object cannot be acted upon (missing name, namespace or uid).
    #[error("invalid object: {0}")]
    InvalidObject(String),
    /// The SealedStorageCred CRD is not installed.
    #[error(
        "a sealcred CRD (SealedStorageCred, ClusterSealedStorageCred) is not installed or not readable ({0}); apply deploy/crd.yaml (or `sealcred-controller crd | kubectl apply -f -`)"
    )]
    CrdMissing(#[source] kube::Error),
    /// This replica lost its leader lease.
    #[error("lost the leader lease {0}; exiting so that a fresh replica can take over")]
    LostLeadership(String),
    /// Bad configuration (flags).
    #[error("configuration: {0}")]
    Config(String),
    /// A watch cache the reconcile needs has not synced yet.
    #[error("{0}")]
    CacheNotReady(String),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
    /// Short-lived credentials (`spec.sts`) could not be made; `reason` is the
    /// Ready=False reason, `message` one line without any value.
    #[error("{message}")]
    Sts {
        /// `StsRoleNotAllowed`, `StsInvalidSpec`, `StsUnavailable`, `StsError`, `CredentialsExpired`.
        reason: &'static str,
        /// What happened and what to do.
        message: String,
        /// Whether retrying soon may help (STS unreachable or throttling).
        transient: bool,
    },
}

impl Error {
    /// The `Ready=False` reason for this error (also the metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Unseal(e) => e.reason(),
            Error::SecretConflict(_) => "SecretConflict",
            Error::SecretWrite { reason, .. } => reason,
            Error::SecretTypeNotAllowed(_) => "SecretTypeNotAllowed",
            Error::InvalidObject(_) => "InvalidSpec",
            Error::Kube(_) => "KubeError",
            Error::CrdMissing(_) => "CrdMissing",
            Error::LostLeadership(_) => "LostLeadership",
            Error::Config(_) => "Config",
            Error::Http(_) => "Http",
            Error::CacheNotReady(_) => "CacheNotReady",
            Error::Sts { reason, .. } => reason,
        }
    }

    /// Whether retrying soon may succeed by itself (KMS unavailable, API errors):
    /// the object reports `Reconciling=True`. Every other failure needs someone to
    /// act (fix the object, its key, RBAC, a policy, a quota) and reports
    /// `Stalled=True` (kstatus: Failed; Argo CD: Degraded).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unseal(e) => e.is_transient(),
            Error::Kube(_) | Error::CacheNotReady(_) => true,
            Error::Sts { transient, .. } => *transient,
            _ => false,
        }
    }

    /// Whether the retry follows the exponential backoff (1 s, 2 s, 4 s … up to
    /// `--max-backoff`): transient failures, and refused Secret writes, whose fix
    /// (a RoleBinding, a policy, a quota) is made outside anything the controller
    /// watches, so only a retry notices it.
    /// So do KMS keys in an unusable state (disabled, pending deletion): the
    /// fix (EnableKey, CancelKeyDeletion) is made in KMS.
    pub fn backs_off(&self) -> bool {
        self.is_transient()
            || matches!(self, Error::SecretWrite { .. })
            || matches!(self, Error::Unseal(e) if e.is_key_state())
    }
}

/// The controller's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
