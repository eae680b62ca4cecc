//! The labels and annotations the controller reads and writes (its contract with users).

/// Annotation on the Secret: digest of the sealed spec it was written from.
pub const SPEC_DIGEST_ANNOTATION: &str = "sealcred.io/spec-digest";
/// Annotation on a SealedStorageCred: changing its value forces a reconcile (like
/// Flux's `reconcile.fluxcd.io/requestedAt`); other metadata edits do not trigger one.
pub const RECONCILE_REQUESTED_ANNOTATION: &str = "sealcred.io/reconcile-requested-at";
/// Annotation on a pre-existing Secret that lets the controller take it over.
pub const ADOPT_ANNOTATION: &str = "sealcred.io/adopt";
/// Label on every Secret the controller writes (the Secret watch selects on it).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "sealcred-controller";
/// Annotation on the Secret: the restart digest of the values it was last written with
/// (`crate::digest`), the value workloads' pod-template annotation is set to.
pub const RESTART_DIGEST_ANNOTATION: &str = "sealcred.io/restart-digest";

/// Label on the Secrets a `ClusterSealedStorageCred` writes (value
/// `ClusterSealedStorageCred`): its Secret watch and its pruning list select by it.
pub const OWNER_KIND_LABEL: &str = "sealcred.io/owner-kind";
