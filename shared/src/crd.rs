//! The `SealedStorageCred` custom resource (`sealcred.io/v1alpha1`).
//!
//! The CRD YAML is generated from these types (`SealedStorageCred::crd()`).
//! The meaning of every field, the encodings and the checks a reader must make
//! are specified in `docs/FORMAT.md`; the canonical byte encodings live in
//! [`crate::format`].

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the custom resource.
pub const GROUP: &str = "sealcred.io";
/// API version of the custom resource.
pub const VERSION: &str = "v1alpha1";
/// Kind of the custom resource.
pub const KIND: &str = "SealedStorageCred";

/// Most wrappings one data key may have (checked by the CRD schema and by
/// [`crate::format::ParsedSpec::parse`]). Each allowed wrapping can cost one KMS
/// call when the ones before it fail. A data key is wrapped by the keys named when
/// it was sealed plus those `rotate --add-kms` adds: a few regions and a recovery
/// key in another account are 3 to 5; 8 leaves room for a migration between two
/// such sets.
pub const MAX_WRAPPINGS: usize = 8;

/// Most data keys one object may have (CRD schema and
/// [`crate::format::ParsedSpec::parse`]). Each is one unwrap per reconcile. Every
/// `seal --merge-into` adds one, and keeps the older ones that still hold an entry
/// (`rotate` re-seals into one): 32 is 31 merges of new entries without a rotate.
/// With [`MAX_WRAPPINGS`], one reconcile makes at most 8 × 32 = 256 KMS calls
/// (it stops at the first data key that no wrapping opens).
pub const MAX_DATA_KEYS: usize = 32;

/// A git-safe, sealed Kubernetes Secret.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sealcred.io",
    version = "v1alpha1",
    kind = "SealedStorageCred",
    namespaced,
    shortname = "ssc",
    status = "SealedStorageCredStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".status.secretName"}"#,
    printcolumn = r#"{"name":"Scope","type":"string","jsonPath":".spec.scope","priority":1}"#,
    printcolumn = r#"{"name":"Consumers","type":"string","jsonPath":".status.consumersUpdated","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SealedStorageCredSpec {
    /// Sealed format version. This implementation reads and writes version 1.
    #[schemars(range(min = 1))]
    pub format_version: u32,
    /// Algorithm suite identifier, from a fixed allowlist (see docs/FORMAT.md).
    pub suite: String,
    /// Which object metadata the ciphertexts are bound to.
    pub scope: Scope,
    /// The Secret to produce (authenticated by every data key's header tag).
    pub template: SecretTemplate,
    /// The sealed credential profile that rendered the entries, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Data keys: each wrapped by one or more KMS keys, each with its header tag.
    /// At most 32 (`MAX_DATA_KEYS`).
    #[schemars(length(min = 1, max = MAX_DATA_KEYS))]
    pub data_keys: Vec<SealedDataKey>,
    /// The encrypted values, by Secret key name (sorted).
    pub entries: BTreeMap<String, SealedEntry>,
    /// Materialize short-lived STS credentials instead of the sealed entries
    /// (docs/operations.md, "Short-lived credentials"). Not covered by the header
    /// tag: the controller's `--sts-role-allow` list decides which roles may be named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts: Option<StsSpec>,
}

/// Least STS `DurationSeconds` (AssumeRole and GetSessionToken).
pub const STS_MIN_DURATION: i32 = 900;
/// Most AssumeRole `DurationSeconds` (the role's own maximum may be lower).
pub const STS_MAX_ASSUME_ROLE_DURATION: i32 = 43_200;
/// Most GetSessionToken `DurationSeconds` for an IAM user.
pub const STS_MAX_SESSION_TOKEN_DURATION: i32 = 129_600;

/// Short-lived credentials from AWS STS. The sealed entries `aws_access_key_id`
/// and `aws_secret_access_key`, when present, are the long-lived key the
/// controller calls STS with (it never writes them to the Secret); without them
/// the controller's own identity calls STS. The Secret gets the temporary
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` (and
/// `AWS_REGION` when `region` is set), rendered through the object's profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct StsSpec {
    /// The role to assume (AssumeRole); without it, GetSessionToken (needs a
    /// sealed IAM user key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// AssumeRole `ExternalId` (not secret: it is in the role's trust policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// AssumeRole `RoleSessionName` (default `sealcred-NAMESPACE-NAME`, cut to 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// An inline session policy (JSON) that narrows the role's permissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Lifetime of the credentials in seconds: 900 to 43200 for AssumeRole, to
    /// 129600 for GetSessionToken (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i32>,
    /// When to refresh, as a fraction of the lifetime (0 < f < 1, default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_at: Option<f64>,
    /// The region to call STS in and to write as `AWS_REGION` (default: the
    /// controller's region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// What the ciphertexts are bound to, as in Bitnami sealed-secrets.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Bound to the namespace and the name: the object cannot be renamed or moved.
    #[default]
    Strict,
    /// Bound to the namespace: the object can be renamed within it.
    NamespaceWide,
    /// Not bound to metadata: the object can be moved anywhere.
    ClusterWide,
}

impl Scope {
    /// The scope's name as written in the object and in the EncryptionContext.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Strict => "strict",
            Scope::NamespaceWide => "namespace-wide",
            Scope::ClusterWide => "cluster-wide",
        }
    }

    /// Parses a scope name (`strict`, `namespace-wide`, `cluster-wide`).
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "strict" => Some(Scope::Strict),
            "namespace-wide" => Some(Scope::NamespaceWide),
            "cluster-wide" => Some(Scope::ClusterWide),
            _ => None,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Secret that the controller materializes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Secret name; defaults to the SealedStorageCred's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Secret type, e.g. `Opaque`.
    #[serde(rename = "type", default = "default_secret_type")]
    pub type_: String,
    /// Labels of the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_secret_type() -> String {
    "Opaque".to_string()
}

/// One data key, wrapped by one or more KMS keys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealedDataKey {
    /// Data-key id: 32 random bytes, base64. Also the HKDF salt.
    pub id: String,
    /// Key commitment: 32 bytes, base64.
    pub commitment: String,
    /// The entry names sealed under this data key when it was made (sorted).
    pub names: Vec<String>,
    /// Ids of the data keys that existed when this one was merged in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<String>,
    /// The data key wrapped by each KMS key; any one suffices to unseal. At most 8
    /// (`MAX_WRAPPINGS`).
    #[schemars(length(min = 1, max = MAX_WRAPPINGS))]
    pub wrappings: Vec<Wrapping>,
    /// HMAC-SHA256 over the canonical header, 32 bytes, base64.
    pub header_tag: String,
    /// HMAC-SHA256 over the object's whole entry list (name → data key) as
    /// this data key left it, 32 bytes, base64. Checked on the newest data key
    /// (the one no other supersedes), so no entry can be dropped, added or
    /// rolled back on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_tag: Option<String>,
    /// When this data key was made (RFC 3339, informational, not authenticated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_at: Option<String>,
}

/// The data key wrapped by one key-encryption key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Wrapping {
    /// `arn:aws:kms:…:key/…` for AWS KMS, `rsaes-oaep-sha256:<key ARN>` for a KMS RSA key pair (sealed offline), or `local:<fingerprint>` for a local key.
    pub key_id: String,
    /// The wrapped data key, base64 (the KMS CiphertextBlob, the RSA-OAEP ciphertext, or the local envelope).
    pub ciphertext: String,
}

/// One encrypted value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealedEntry {
    /// Id of the data key this value is sealed under.
    pub data_key: String,
    /// 12-byte GCM nonce, base64.
    pub nonce: String,
    /// AES-256-GCM ciphertext followed by the 16-byte tag, base64.
    pub ciphertext: String,
}

/// Status written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealedStorageCredStatus {
    /// The generation the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions; `Ready` is the one to watch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Name of the materialized Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Names of the entries in the Secret (never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<String>,
    /// With `spec.sts`: when the credentials in the Secret expire (RFC 3339), and
    /// when the controller refreshes them. Times only, never a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsStatus>,
    /// The workloads that name the Secret in `sealcred.io/restart-on-change` (its
    /// consumers), each with its rollout to the current credential. Counts only,
    /// never a value. Omitted when no workload names the Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerStatus>,
    /// `UPDATED/TOTAL`: how many consumers run the current credential with their
    /// rollout complete, of how many (`kubectl get ssc -o wide`, column Consumers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers_updated: Option<String>,
}

/// One workload that reads the Secret, and where its rollout stands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: String,
    /// The workload's name.
    pub name: String,
    /// The workload's namespace, when it is not the object's: such a consumer is
    /// refused (a pod reads Secrets of its own namespace only) and never restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `Updated` (the current credential, rollout complete), `Rolling` (the current
    /// credential, rollout in progress), `Stale` (the pod template still names an
    /// older credential), `Untracked` (sealcred has not rolled it since it named the
    /// Secret: its pods may predate the current credential) or `Refused`.
    pub state: String,
    /// Desired replicas (DaemonSet: nodes that should run the pod).
    pub replicas: i32,
    /// Replicas on the workload's current pod template.
    pub updated_replicas: i32,
    /// Ready replicas.
    pub ready_replicas: i32,
}

/// The lifetime of the STS credentials in the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsStatus {
    /// When STS issued them (RFC 3339).
    pub issued_at: String,
    /// When they expire (RFC 3339), as STS said.
    pub expires_at: String,
    /// When the controller refreshes them (RFC 3339).
    pub refresh_at: String,
}

/// A status condition, as in the Kubernetes API conventions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message (never contains credential values).
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_has_names_and_columns() {
        let crd = SealedStorageCred::crd();
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.names.kind, KIND);
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["ssc".to_string()][..])
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, VERSION);
        let cols: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            ["Ready", "Reason", "Secret", "Scope", "Consumers", "Age"]
        );
        assert!(v.subresources.as_ref().unwrap().status.is_some());
    }

    #[test]
    fn crd_caps_data_keys_and_wrappings() {
        let crd = serde_json::to_value(SealedStorageCred::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let dks = &spec["properties"]["dataKeys"];
        assert_eq!(dks["maxItems"], MAX_DATA_KEYS);
        assert_eq!(
            dks["items"]["properties"]["wrappings"]["maxItems"],
            MAX_WRAPPINGS
        );
    }
}
