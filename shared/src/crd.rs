//! The `SealedStorageCred` custom resource (`sealcred.io/v1alpha1`), and its
//! cluster-scoped sibling `ClusterSealedStorageCred`, which materializes the same
//! Secret in many namespaces.
//!
//! The CRD YAML is generated from these types (`SealedStorageCred::crd()`,
//! `ClusterSealedStorageCred::crd()`).
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
/// Kind of the cluster-scoped custom resource.
pub const CLUSTER_KIND: &str = "ClusterSealedStorageCred";

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
    /// Bound to the name of a cluster-scoped `ClusterSealedStorageCred` and to that
    /// kind: it opens in no namespaced `SealedStorageCred`, and a
    /// `ClusterSealedStorageCred` opens no other scope.
    Cluster,
}

impl Scope {
    /// The scope's name as written in the object and in the EncryptionContext.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Strict => "strict",
            Scope::NamespaceWide => "namespace-wide",
            Scope::ClusterWide => "cluster-wide",
            Scope::Cluster => "cluster",
        }
    }

    /// Parses a scope name (`strict`, `namespace-wide`, `cluster-wide`, `cluster`).
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "strict" => Some(Scope::Strict),
            "namespace-wide" => Some(Scope::NamespaceWide),
            "cluster-wide" => Some(Scope::ClusterWide),
            "cluster" => Some(Scope::Cluster),
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

/// Most namespaces `status.namespaces` of a [`ClusterSealedStorageCred`] lists
/// (failing ones first); the counts cover all of them.
pub const MAX_NAMESPACES_LISTED: usize = 50;

/// Most namespaces `spec.namespaces` of a [`ClusterSealedStorageCred`] may name
/// (CRD schema and the controller); a selector reaches any number.
pub const MAX_NAMESPACES_NAMED: usize = 256;

/// One sealed Secret, materialized in every namespace named in `spec.namespaces`
/// or selected by `spec.namespaceSelector` (docs/operations.md, "One Secret in
/// many namespaces"). Cluster-scoped; only scope `cluster` opens in it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sealcred.io",
    version = "v1alpha1",
    kind = "ClusterSealedStorageCred",
    shortname = "cssc",
    status = "ClusterSealedStorageCredStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".status.secretName"}"#,
    printcolumn = r#"{"name":"Namespaces","type":"string","jsonPath":".status.namespacesReady"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSealedStorageCredSpec {
    /// The sealed fields, as in a `SealedStorageCred` (scope must be `cluster`;
    /// `sts` is refused).
    #[serde(flatten)]
    pub sealed: SealedStorageCredSpec,
    /// Namespaces to write the Secret to, by name (at most 256). Not covered by
    /// the header tag: who may edit the object decides (RBAC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_NAMESPACES_NAMED))]
    pub namespaces: Vec<String>,
    /// Namespaces to write the Secret to, by label (ANDed terms, as a
    /// Kubernetes label selector). An empty selector is refused (it would
    /// select every namespace). Not covered by the header tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,
}

/// A label selector over namespaces (the `matchLabels`/`matchExpressions` of
/// Kubernetes' LabelSelector). Every term must hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Labels the namespace must carry with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements on the namespace's labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One requirement of a [`NamespaceSelector`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,
    /// The values (`In`/`NotIn`: at least one; `Exists`/`DoesNotExist`: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The operator of a [`SelectorRequirement`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent, or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl NamespaceSelector {
    /// Checks the selector's shape: at least one term, and `values` as each
    /// operator needs them. The error names the term, never a label value.
    pub fn check(&self) -> Result<(), String> {
        if self.match_labels.is_empty() && self.match_expressions.is_empty() {
            return Err(
                "namespaceSelector is empty (it would select every namespace); give matchLabels or matchExpressions"
                    .into(),
            );
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            let has_values = !r.values.is_empty();
            let needs_values = matches!(r.operator, SelectorOperator::In | SelectorOperator::NotIn);
            if has_values != needs_values {
                return Err(format!(
                    "namespaceSelector.matchExpressions[{i}]: operator {:?} {}",
                    r.operator,
                    if needs_values {
                        "needs at least one value"
                    } else {
                        "takes no values"
                    }
                ));
            }
        }
        Ok(())
    }

    /// Whether a namespace with `labels` is selected (every term holds).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let have = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => have.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => !have.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::Exists => have.is_some(),
                    SelectorOperator::DoesNotExist => have.is_none(),
                }
            })
    }
}

/// Status written by the controller on a [`ClusterSealedStorageCred`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSealedStorageCredStatus {
    /// The generation the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions; `Ready` is the one to watch (True when the Secret is written in
    /// every matching namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Name of the materialized Secret (the same in every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Names of the entries in the Secret (never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<String>,
    /// `READY/MATCHED`: in how many of the matching namespaces the Secret is
    /// written (`kubectl get cssc`, column Namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces_ready: Option<String>,
    /// The matching namespaces, failing ones first, then by name; at most 50
    /// (`MAX_NAMESPACES_LISTED`), also listing unowned Secrets that block a namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<TargetNamespaceStatus>,
}

/// Where the Secret stands in one matching namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetNamespaceStatus {
    /// The namespace.
    pub name: String,
    /// Whether the Secret there holds the current entries.
    pub ready: bool,
    /// `Unsealed`, or the Ready=False reason (`SecretConflict`, ...).
    pub reason: String,
    /// What is wrong, when not ready (never a value).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl ClusterSealedStorageCred {
    /// The object made from a sealed view (what [`Self::sealed_view`] gives, or
    /// `seal` made with scope `cluster`) and the namespaces it targets. The
    /// view's namespace is dropped (a cluster object has none).
    pub fn from_sealed_view(
        view: SealedStorageCred,
        namespaces: Vec<String>,
        namespace_selector: Option<NamespaceSelector>,
    ) -> ClusterSealedStorageCred {
        let mut metadata = view.metadata;
        metadata.namespace = None;
        ClusterSealedStorageCred {
            metadata,
            spec: ClusterSealedStorageCredSpec {
                sealed: view.spec,
                namespaces,
                namespace_selector,
            },
            status: None,
        }
    }

    /// The `SealedStorageCred` the sealing code sees for this object: its sealed
    /// fields, its name, uid, generation, labels and annotations, and no
    /// namespace (scope `cluster` binds the name alone, and refuses a namespace).
    pub fn sealed_view(&self) -> SealedStorageCred {
        SealedStorageCred {
            metadata: kube::api::ObjectMeta {
                name: self.metadata.name.clone(),
                namespace: None,
                uid: self.metadata.uid.clone(),
                generation: self.metadata.generation,
                labels: self.metadata.labels.clone(),
                annotations: self.metadata.annotations.clone(),
                ..Default::default()
            },
            spec: self.spec.sealed.clone(),
            status: None,
        }
    }
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
    fn cluster_crd_is_cluster_scoped_with_the_sealed_fields() {
        let crd = ClusterSealedStorageCred::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.kind, CLUSTER_KIND);
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["cssc".to_string()][..])
        );
        let v = serde_json::to_value(&crd.spec.versions[0]).unwrap();
        let props = &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for field in [
            "formatVersion",
            "scope",
            "dataKeys",
            "entries",
            "namespaces",
            "namespaceSelector",
        ] {
            assert!(props.get(field).is_some(), "spec.{field} missing");
        }
        let cols: Vec<_> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(cols, ["Ready", "Reason", "Secret", "Namespaces", "Age"]);
    }

    #[test]
    fn selector_terms_all_hold() {
        let labels: BTreeMap<String, String> = [
            ("team".to_string(), "ml".to_string()),
            ("env".to_string(), "dev".to_string()),
        ]
        .into();
        let req = |key: &str, operator, values: &[&str]| SelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        let sel = |ml: &[(&str, &str)], me: Vec<SelectorRequirement>| NamespaceSelector {
            match_labels: ml
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: me,
        };
        use SelectorOperator::*;
        assert!(sel(&[("team", "ml")], vec![]).matches(&labels));
        assert!(!sel(&[("team", "ml"), ("env", "prod")], vec![]).matches(&labels));
        assert!(sel(&[], vec![req("env", In, &["dev", "staging"])]).matches(&labels));
        assert!(!sel(&[], vec![req("env", NotIn, &["dev"])]).matches(&labels));
        assert!(sel(&[], vec![req("tier", NotIn, &["x"])]).matches(&labels));
        assert!(sel(&[], vec![req("team", Exists, &[])]).matches(&labels));
        assert!(!sel(&[], vec![req("team", DoesNotExist, &[])]).matches(&labels));
        assert!(!sel(&[("team", "ml")], vec![req("env", In, &["prod"])]).matches(&labels));
        // Shape checks.
        assert!(NamespaceSelector::default().check().is_err());
        assert!(sel(&[], vec![req("a", In, &[])]).check().is_err());
        assert!(sel(&[], vec![req("a", Exists, &["x"])]).check().is_err());
        sel(&[], vec![req("a", Exists, &[])]).check().unwrap();
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
