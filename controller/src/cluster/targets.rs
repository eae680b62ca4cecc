//! Which namespaces a `ClusterSealedStorageCred` writes its Secret to, and which
//! objects a namespace change concerns. Pure functions over metadata.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::ObjectMeta;
use sealcred_shared::crd::ClusterSealedStorageCredSpec;

/// The matching namespaces that exist (and are not terminating), and the named
/// ones that do not exist (yet).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// Named or selected, present, not terminating: the Secret belongs there.
    pub present: BTreeSet<String>,
    /// Named in `spec.namespaces` but absent: reported, written once created.
    pub missing: BTreeSet<String>,
}

/// Whether the namespace `name` with `labels` is named or selected by `spec`.
pub fn matches(
    spec: &ClusterSealedStorageCredSpec,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    spec.namespaces.iter().any(|n| n == name)
        || spec
            .namespace_selector
            .as_ref()
            .is_some_and(|s| s.matches(labels))
}

/// The targets of `spec` among `namespaces` (the namespaces' metadata). A
/// terminating namespace is no target: its Secrets go with it, and the API server
/// refuses new objects in it.
pub fn targets<'a>(
    spec: &ClusterSealedStorageCredSpec,
    namespaces: impl IntoIterator<Item = &'a ObjectMeta>,
) -> Targets {
    let empty = BTreeMap::new();
    let mut out = Targets::default();
    let mut seen = BTreeSet::new();
    for ns in namespaces {
        let Some(name) = ns.name.as_deref() else {
            continue;
        };
        seen.insert(name.to_string());
        if ns.deletion_timestamp.is_none()
            && matches(spec, name, ns.labels.as_ref().unwrap_or(&empty))
        {
            out.present.insert(name.to_string());
        }
    }
    out.missing = spec
        .namespaces
        .iter()
        .filter(|n| !seen.contains(*n))
        .cloned()
        .collect();
    out
}

/// Whether a change of namespace `name` (created, relabelled, deleted) can change
/// `spec`'s targets: it is named, or `spec` has a selector (which may have matched
/// its old labels or match its new ones).
pub fn concerns(spec: &ClusterSealedStorageCredSpec, name: &str) -> bool {
    spec.namespace_selector.is_some() || spec.namespaces.iter().any(|n| n == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealcred_shared::crd::{NamespaceSelector, SelectorOperator, SelectorRequirement};
    use serde_json::json;

    fn ns(name: &str, labels: &[(&str, &str)], terminating: bool) -> ObjectMeta {
        serde_json::from_value(json!({
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            "deletionTimestamp": if terminating { Some("2026-01-01T00:00:00Z") } else { None },
        }))
        .unwrap()
    }

    fn spec(named: &[&str], selector: Option<NamespaceSelector>) -> ClusterSealedStorageCredSpec {
        let mut s: ClusterSealedStorageCredSpec = serde_json::from_value(json!({
            "formatVersion": 1, "suite": "x", "scope": "cluster",
            "template": {"type": "Opaque"}, "dataKeys": [], "entries": {},
        }))
        .unwrap();
        s.namespaces = named.iter().map(|n| n.to_string()).collect();
        s.namespace_selector = selector;
        s
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn flyte() -> NamespaceSelector {
        NamespaceSelector {
            match_labels: [("sealcred.io/flyte".to_string(), "true".to_string())].into(),
            match_expressions: vec![SelectorRequirement {
                key: "env".into(),
                operator: SelectorOperator::NotIn,
                values: vec!["production".into()],
            }],
        }
    }

    #[test]
    fn named_and_selected_namespaces_that_exist_and_are_not_terminating() {
        let all = [
            ns("named", &[], false),
            ns(
                "flytesnacks-development",
                &[("sealcred.io/flyte", "true")],
                false,
            ),
            ns(
                "flytesnacks-production",
                &[("sealcred.io/flyte", "true"), ("env", "production")],
                false,
            ),
            ns("other", &[("sealcred.io/flyte", "false")], false),
            ns("going", &[("sealcred.io/flyte", "true")], true),
            ns("named-going", &[], true),
        ];
        let t = targets(&spec(&["named", "named-going", "later"], None), &all);
        assert_eq!(t.present, set(&["named"]));
        assert_eq!(t.missing, set(&["later"]));
        let t = targets(&spec(&["named"], Some(flyte())), &all);
        assert_eq!(t.present, set(&["flytesnacks-development", "named"]));
        assert!(t.missing.is_empty());
        // Selector only.
        let t = targets(&spec(&[], Some(flyte())), &all);
        assert_eq!(t.present, set(&["flytesnacks-development"]));
        // Neither: nothing.
        assert_eq!(targets(&spec(&[], None), &all), Targets::default());
    }

    #[test]
    fn relabelled_out_and_unlisted_namespaces_stop_matching() {
        let before = [ns("a", &[("sealcred.io/flyte", "true")], false)];
        let after = [ns("a", &[("sealcred.io/flyte", "false")], false)];
        let s = spec(&[], Some(flyte()));
        assert_eq!(targets(&s, &before).present, set(&["a"]));
        assert!(targets(&s, &after).present.is_empty());
        let listed = [ns("b", &[], false)];
        assert_eq!(targets(&spec(&["b"], None), &listed).present, set(&["b"]));
        assert!(targets(&spec(&[], None), &listed).present.is_empty());
    }

    #[test]
    fn a_namespace_change_concerns_objects_naming_it_or_selecting() {
        assert!(concerns(&spec(&["a"], None), "a"));
        assert!(!concerns(&spec(&["a"], None), "b"));
        assert!(concerns(&spec(&[], Some(flyte())), "anything"));
        assert!(!concerns(&spec(&[], None), "a"));
    }
}
