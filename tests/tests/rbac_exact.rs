//! Least privilege, exactly: every verb deploy/rbac.yaml grants is one the
//! controller uses, and every Kubernetes API call in controller/src is covered.
//!
//! 1. `shipped_rbac_is_exactly_what_the_code_calls` (no cluster): the call sites
//!    of controller/src are listed in [`CALLS`] with the grants each needs. The
//!    test finds every kube call in the source (a new call fails the test until
//!    it is listed here) and asserts that the shipped rules equal the union of
//!    the grants (plus [`KNOWN_EXTRA`], each with a reason).
//! 2. `namespace_scoped_install_works`: the ClusterRole's rules (minus
//!    [`KNOWN_EXTRA`]) as a Role in one namespace, the controller started with
//!    `--namespace`: it unseals, writes status and events, takes the lease, and
//!    its ServiceAccount cannot read Secrets in another namespace.

mod controller_support;

use std::collections::BTreeSet;

use controller_support::*;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams};
use sealcred_tests::{repo_root, testenv};
use serde_json::Value;

/// (apiGroup, resource, verb).
type Grant = (&'static str, &'static str, &'static str);

const SSC: &str = "sealedstoragecreds";
const CSSC: &str = "clustersealedstoragecreds";
/// The ClusterRole of the ClusterSealedStorageCred controller (all namespaces only).
const CLUSTER_ROLE: &str = "sealcred-controller-cluster";
const WORKLOADS: [&str; 3] = ["deployments", "statefulsets", "daemonsets"];

/// One kube call in controller/src: file, the call as written, why, and the
/// grants it needs (for each resource it may touch).
struct Call {
    file: &'static str,
    call: &'static str,
    what: &'static str,
    grants: &'static [Grant],
}

const CALLS: &[Call] = &[
    Call {
        file: "run.rs",
        call: ".list(",
        what: "start-up check that the CRD is installed (limit 1)",
        grants: &[("sealcred.io", SSC, "list")],
    },
    Call {
        file: "run.rs",
        call: "watcher(",
        what: "the watches behind the controller: SealedStorageCreds (the cache) and the \
               metadata of the managed Secrets (triggers only)",
        grants: &[
            ("sealcred.io", SSC, "list"),
            ("sealcred.io", SSC, "watch"),
            ("", "secrets", "list"),
            ("", "secrets", "watch"),
        ],
    },
    Call {
        file: "cluster/watch.rs",
        call: ".list(",
        what: "start-up check that the ClusterSealedStorageCred CRD is installed (limit 1)",
        grants: &[("sealcred.io", CSSC, "list")],
    },
    Call {
        file: "cluster/watch.rs",
        call: "watcher(",
        what: "the watches behind the ClusterSealedStorageCred controller: the objects (the \
               cache), the namespaces' metadata (targets; created or relabelled later) and the \
               metadata of the Secrets these objects write (triggers only)",
        grants: &[
            ("sealcred.io", CSSC, "list"),
            ("sealcred.io", CSSC, "watch"),
            ("", "namespaces", "list"),
            ("", "namespaces", "watch"),
            ("", "secrets", "list"),
            ("", "secrets", "watch"),
        ],
    },
    Call {
        file: "cluster/secrets.rs",
        call: ".get_opt(",
        what: "read a target namespace's Secret before writing it",
        grants: &[("", "secrets", "get")],
    },
    Call {
        file: "cluster/secrets.rs",
        call: ".list_metadata(",
        what: "list the metadata of the Secrets ClusterSealedStorageCreds wrote (label-selected), to prune",
        grants: &[("", "secrets", "list")],
    },
    Call {
        file: "cluster/secrets.rs",
        call: ".delete(",
        what: "delete a copy in a namespace that stopped matching (uid+resourceVersion precondition)",
        grants: &[("", "secrets", "delete")],
    },
    Call {
        file: "cluster/mod.rs",
        call: ".patch_status(",
        what: "server-side apply of a ClusterSealedStorageCred's status",
        grants: &[("sealcred.io", "clustersealedstoragecreds/status", "patch")],
    },
    Call {
        file: "materialize.rs",
        call: ".get_opt(",
        what: "read the target Secret before writing it",
        grants: &[("", "secrets", "get")],
    },
    Call {
        file: "sts.rs",
        call: ".get_opt(",
        what: "read the target Secret of an spec.sts object (its credentials' expiry) before writing it",
        grants: &[("", "secrets", "get")],
    },
    Call {
        file: "write.rs",
        call: ".create(",
        what: "create the Secret when none existed (create-only: fails if one appeared meanwhile)",
        grants: &[("", "secrets", "create")],
    },
    Call {
        file: "write.rs",
        call: ".patch(",
        what: "server-side apply of the Secret with the checked resourceVersion (an apply that \
               creates, after a deletion meanwhile, is authorized as create), and the merge \
               patch that leaves the apply the only manager after a create or an adoption",
        grants: &[("", "secrets", "patch"), ("", "secrets", "create")],
    },
    Call {
        file: "write.rs",
        call: ".get_opt(",
        what: "read the Secret again after a failed precondition (ownership re-check)",
        grants: &[("", "secrets", "get")],
    },
    Call {
        file: "digest.rs",
        call: ".get_opt(",
        what: "read the namespace's restart-digest key Secret",
        grants: &[("", "secrets", "get")],
    },
    Call {
        file: "digest.rs",
        call: ".create(",
        what: "create the namespace's restart-digest key Secret the first time a workload asks \
               for restarts (create-only)",
        grants: &[("", "secrets", "create")],
    },
    Call {
        file: "status.rs",
        call: ".patch_status(",
        what: "server-side apply of the status",
        grants: &[("sealcred.io", "sealedstoragecreds/status", "patch")],
    },
    Call {
        file: "events.rs",
        call: ".publish(",
        what: "the background task publishing the queued Events (about the objects, and the workloads restarted or misnamed)",
        grants: &[
            ("events.k8s.io", "events", "create"),
            ("events.k8s.io", "events", "patch"),
        ],
    },
    Call {
        file: "events.rs",
        call: ".create(",
        what: "create an Event (first occurrence)",
        grants: &[("events.k8s.io", "events", "create")],
    },
    Call {
        file: "events.rs",
        call: ".patch(",
        what: "patch an Event's series (a repeat within 6 minutes)",
        grants: &[("events.k8s.io", "events", "patch")],
    },
    Call {
        file: "leader.rs",
        call: ".get_opt(",
        what: "read the Lease holder",
        grants: &[("coordination.k8s.io", "leases", "get")],
    },
    Call {
        file: "leader.rs",
        call: ".create(",
        what: "create the Lease the first time",
        grants: &[("coordination.k8s.io", "leases", "create")],
    },
    Call {
        file: "leader.rs",
        call: ".replace(",
        what: "renew or take over the Lease (PUT = update)",
        grants: &[("coordination.k8s.io", "leases", "update")],
    },
    Call {
        file: "consumers.rs",
        call: "watcher(",
        what: "caches of the workloads (restart-on-change names, pod-template digests, rollout counts)",
        grants: &[
            ("apps", WORKLOADS[0], "list"),
            ("apps", WORKLOADS[0], "watch"),
            ("apps", WORKLOADS[1], "list"),
            ("apps", WORKLOADS[1], "watch"),
            ("apps", WORKLOADS[2], "list"),
            ("apps", WORKLOADS[2], "watch"),
        ],
    },
    Call {
        file: "restart.rs",
        call: ".get_opt(",
        what: "read a workload's pod-template annotation",
        grants: &[
            ("apps", WORKLOADS[0], "get"),
            ("apps", WORKLOADS[1], "get"),
            ("apps", WORKLOADS[2], "get"),
        ],
    },
    Call {
        file: "restart.rs",
        call: ".patch(",
        what: "roll a workload (merge patch of one pod-template annotation)",
        grants: &[
            ("apps", WORKLOADS[0], "patch"),
            ("apps", WORKLOADS[1], "patch"),
            ("apps", WORKLOADS[2], "patch"),
        ],
    },
];

/// Granted by deploy/rbac.yaml but used by no call in controller/src. Each
/// entry needs a reason; an empty list is the goal.
const KNOWN_EXTRA: &[(Grant, &str)] = &[];

/// The kube client calls looked for in controller/src. Any of these found at a
/// place not listed in [`CALLS`] fails the test.
const KUBE_CALLS: &[&str] = &[
    ".get(",
    ".get_opt(",
    ".get_metadata(",
    ".get_metadata_opt(",
    ".get_status(",
    ".list(",
    ".list_metadata(",
    ".watch(",
    ".watch_metadata(",
    ".create(",
    ".replace(",
    ".replace_status(",
    ".patch(",
    ".patch_status(",
    ".patch_metadata(",
    ".delete(",
    ".delete_collection(",
    ".publish(",
    ".owns(",
    ".watches(",
    "Controller::new(",
    "watcher(",
    "metadata_watcher(",
    "reflector(",
];

/// The YAML documents of deploy/rbac.yaml, as JSON values.
fn shipped_docs() -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join("deploy/rbac.yaml")).expect("rbac.yaml");
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).expect("YAML document"))
        .collect()
}

/// The rules of every `kind` document (deploy/rbac.yaml has two ClusterRoles: the core
/// one and `sealcred-controller-restarts`, which components/no-restarts drops).
fn rules_of(docs: &[Value], kind: &str) -> Vec<PolicyRule> {
    let hits: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert!(!hits.is_empty(), "no {kind} in deploy/rbac.yaml");
    hits.iter()
        .flat_map(|doc| {
            serde_json::from_value::<Vec<PolicyRule>>(doc["rules"].clone()).expect("rules")
        })
        .collect()
}

fn grants_of(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in rules {
        assert!(
            r.resource_names.is_none() && r.non_resource_urls.is_none(),
            "unexpected rule shape: {r:?}"
        );
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    assert_ne!(v, "*", "wildcard verb in {r:?}");
                    assert_ne!(res, "*", "wildcard resource in {r:?}");
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out
}

fn owned(g: &Grant) -> (String, String, String) {
    (g.0.to_string(), g.1.to_string(), g.2.to_string())
}

/// Source lines of controller/src/<file>, comments dropped.
fn code_lines(file: &str) -> Vec<(usize, String)> {
    let path = repo_root().join("controller/src").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut out = Vec::new();
    let mut in_tests = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            in_tests = true; // unit tests call no API server
        }
        if in_tests || t.starts_with("//") {
            continue;
        }
        out.push((i + 1, line.to_string()));
    }
    out
}

#[test]
fn shipped_rbac_is_exactly_what_the_code_calls() {
    // Every kube call in the controller's source is one listed in CALLS.
    // controller/src and its module directories, as paths relative to it.
    let mut files: Vec<String> = Vec::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(repo_root().join("controller/src").join(&dir)).unwrap() {
            let e = e.unwrap();
            let rel = if dir.is_empty() {
                e.file_name().to_string_lossy().into_owned()
            } else {
                format!("{dir}/{}", e.file_name().to_string_lossy())
            };
            if e.file_type().unwrap().is_dir() {
                dirs.push(rel);
            } else if rel.ends_with(".rs") {
                files.push(rel);
            }
        }
    }
    files.sort();
    let mut unlisted = Vec::new();
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    for file in &files {
        for (n, line) in code_lines(file) {
            for call in KUBE_CALLS {
                // `watcher(` also matches `metadata_watcher(`: match whole words.
                let hit = line.match_indices(call).any(|(i, _)| {
                    call.starts_with('.')
                        || i == 0
                        || !line.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && line.as_bytes()[i - 1] != b'_'
                });
                if !hit {
                    continue;
                }
                match CALLS.iter().find(|c| c.file == file && c.call == *call) {
                    Some(c) => {
                        seen.insert((c.file, c.call));
                    }
                    None if is_map_get(call, &line) => {}
                    None => unlisted.push(format!("controller/src/{file}:{n}: {}", line.trim())),
                }
            }
        }
    }
    assert!(
        unlisted.is_empty(),
        "kube calls not listed in CALLS (add them with the RBAC they need, and update deploy/rbac.yaml):\n{}",
        unlisted.join("\n")
    );
    let stale: Vec<String> = CALLS
        .iter()
        .filter(|c| !seen.contains(&(c.file, c.call)))
        .map(|c| format!("{} {} ({})", c.file, c.call, c.what))
        .collect();
    assert!(
        stale.is_empty(),
        "CALLS lists calls no longer in controller/src: {stale:?}"
    );

    // The shipped rules are exactly the union of what those calls need.
    let docs = shipped_docs();
    let mut shipped = grants_of(&rules_of(&docs, "ClusterRole"));
    shipped.extend(grants_of(&rules_of(&docs, "Role")));
    let needed: BTreeSet<_> = CALLS
        .iter()
        .flat_map(|c| c.grants.iter().map(owned))
        .collect();
    let extra_ok: BTreeSet<_> = KNOWN_EXTRA.iter().map(|(g, _)| owned(g)).collect();
    let missing: Vec<_> = needed.difference(&shipped).collect();
    assert!(
        missing.is_empty(),
        "deploy/rbac.yaml lacks grants the controller uses: {missing:?}"
    );
    let extra: Vec<_> = shipped
        .difference(&needed)
        .filter(|g| !extra_ok.contains(*g))
        .collect();
    assert!(
        extra.is_empty(),
        "deploy/rbac.yaml grants what no call in controller/src uses: {extra:?}"
    );
    let stale_extra: Vec<_> = extra_ok.difference(&shipped).collect();
    assert!(
        stale_extra.is_empty(),
        "KNOWN_EXTRA lists grants deploy/rbac.yaml no longer has (remove them here): {stale_extra:?}"
    );
    // The leader Role is namespaced and holds only the lease verbs.
    assert_eq!(
        grants_of(&rules_of(&docs, "Role")),
        CALLS
            .iter()
            .filter(|c| c.file == "leader.rs")
            .flat_map(|c| c.grants.iter().map(owned))
            .collect()
    );
    for (g, why) in KNOWN_EXTRA {
        println!("granted but unused: {g:?}: {why}");
    }
}

/// `.get(` on a map or an annotation list, not a kube call.
fn is_map_get(call: &str, line: &str) -> bool {
    call == ".get(" && !line.contains("api.get(") && !line.contains("Api")
}

/// Installs `role` in `ns`, bound to the ServiceAccount `ns/sealcred-controller`, and
/// returns a client authenticated as that ServiceAccount.
async fn install_role(
    env: &sealcred_tests::TestEnv,
    admin: &kube::Client,
    ns: &str,
    role: &Role,
) -> kube::Client {
    let sa = "sealcred-controller";
    let pp = PatchParams::apply("sealcred-tests").force();
    Api::<Role>::namespaced(admin.clone(), ns)
        .patch("sealcred-controller", &pp, &Patch::Apply(role))
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "sealcred-controller", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "sealcred-controller"},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .patch("sealcred-controller", &pp, &Patch::Apply(&binding))
        .await
        .unwrap();
    env.sa_client(ns, sa).await
}

/// The documents but the ClusterSealedStorageCred ClusterRole (`CLUSTER_ROLE`), whose
/// grants a controller restricted with `--namespace` does not use.
fn without_cluster_role(docs: &[Value]) -> Vec<Value> {
    docs.iter()
        .filter(|d| d["metadata"]["name"] != CLUSTER_ROLE)
        .cloned()
        .collect()
}

/// The ClusterRoles' rules (but `CLUSTER_ROLE`'s), minus [`KNOWN_EXTRA`], as a Role in `ns`.
fn namespaced_role(docs: &[Value], ns: &str) -> Role {
    let extra: BTreeSet<_> = KNOWN_EXTRA.iter().map(|(g, _)| owned(g)).collect();
    let mut rules = Vec::new();
    for r in rules_of(&without_cluster_role(docs), "ClusterRole") {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                let verbs: Vec<String> = r
                    .verbs
                    .iter()
                    .filter(|v| !extra.contains(&(g.clone(), res.clone(), (*v).clone())))
                    .cloned()
                    .collect();
                if !verbs.is_empty() {
                    rules.push(PolicyRule {
                        api_groups: Some(vec![g.clone()]),
                        resources: Some(vec![res.clone()]),
                        verbs,
                        ..Default::default()
                    });
                }
            }
        }
    }
    rules.extend(rules_of(docs, "Role"));
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "sealcred-controller", "namespace": ns},
        "rules": rules,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_scoped_install_works() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("ctl-rbac-ns").await;
    let other = env.unique_namespace("ctl-rbac-other").await;
    let role = namespaced_role(&shipped_docs(), &ns);
    let sa_client = install_role(env, &admin, &ns, &role).await;
    // Scoped for real: nothing outside its namespace.
    let err = Api::<Secret>::namespaced(sa_client.clone(), &other)
        .list(&ListParams::default())
        .await
        .expect_err("the namespaced controller must not list Secrets elsewhere");
    assert!(err.to_string().contains("forbidden"), "{err}");
    assert!(
        Api::<Secret>::all(sa_client.clone())
            .list(&ListParams::default().limit(1))
            .await
            .is_err(),
        "no cluster-wide Secret list"
    );

    // default_args include --namespace <ns>.
    let (ctl, obj) = main_scenario_as(env, &admin, sa_client, &ns).await;
    // A merge (new data key) is picked up from the watch and re-materialized.
    let merged = merge_into(env, &obj, &[("user", "app")]).await;
    apply(&admin, &merged).await;
    wait_secret(&admin, &ns, "db", &[("password", "pw"), ("user", "app")]).await;
    assert!(
        ctl.metrics().is_leader(),
        "took the lease with the namespaced Role"
    );
    ctl.stop().await.unwrap();
}

/// One step of [`full_scenario`] that did not happen.
type Missing = String;

/// Everything the controller does, step by step, as the ServiceAccount `ns/sa` with
/// `role`: the object is applied after the controller has started (so only the watch
/// can deliver it), the workloads are created after the caches' first list, the
/// Secret is written, the status and an Event appear, the workloads are rolled, an
/// outside edit of the Secret is repaired (Secret watch) and its repeated Event
/// becomes a series (Event patch), and the lease is still held at the end (renewed).
/// Returns the first step that did not happen within its timeout.
async fn full_scenario(
    env: &sealcred_tests::TestEnv,
    admin: &kube::Client,
    ns: &str,
    role: Role,
) -> Result<(), Missing> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    use k8s_openapi::api::events::v1::Event;
    use kube::api::PostParams;
    use std::time::Duration;

    const STEP: Duration = Duration::from_secs(20);
    let client = install_role(env, admin, ns, &role).await;

    let mut args = leader_elected_args(env, ns);
    args.retain(|a| a != "--max-backoff=4");
    args.push("--max-backoff=2".into());
    let ctl = start_with(env, client, args, env.kms_endpoint()).await;
    let started = tokio::time::Instant::now();
    // The caches' first lists are done before anything exists.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let post = PostParams::default();
    Api::<Deployment>::namespaced(admin.clone(), ns)
        .create(&post, &workload("Deployment", "web", Some("app")))
        .await
        .unwrap();
    Api::<StatefulSet>::namespaced(admin.clone(), ns)
        .create(&post, &workload("StatefulSet", "store", Some("app")))
        .await
        .unwrap();
    Api::<DaemonSet>::namespaced(admin.clone(), ns)
        .create(&post, &workload("DaemonSet", "agent", Some("app")))
        .await
        .unwrap();
    let obj = seal_object(env, ns, "app", template(&[]), &[("password", "pw")]).await;
    apply(admin, &obj).await;

    async fn step<F, Fut>(name: &str, mut f: F) -> Result<(), Missing>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + STEP;
        while tokio::time::Instant::now() < deadline {
            if f().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(name.to_string())
    }
    let want: std::collections::BTreeMap<String, String> =
        [("password".to_string(), "pw".to_string())].into();
    let events = |min_count: i32| {
        let admin = admin.clone();
        let ns = ns.to_string();
        async move {
            Api::<Event>::namespaced(admin, &ns)
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items.iter().any(|e| {
                        e.reason.as_deref() == Some("Unsealed")
                            && e.series.as_ref().map_or(1, |s| s.count) >= min_count
                    })
                })
                .unwrap_or(false)
        }
    };
    let result = async {
        step("the Secret is written", || async {
            secret_data(admin, ns, "app").await.as_ref() == Some(&want)
        })
        .await?;
        step("Ready=True in the status", || async {
            matches!(ready(admin, ns, "app").await, Some((s, _, true)) if s == "True")
        })
        .await?;
        step("an Unsealed Event", || events(1)).await?;
        step("the three workloads are rolled", || async {
            let key = "sealcred.io/restarted-for-app";
            let d = Api::<Deployment>::namespaced(admin.clone(), ns)
                .get("web")
                .await;
            let s = Api::<StatefulSet>::namespaced(admin.clone(), ns)
                .get("store")
                .await;
            let a = Api::<DaemonSet>::namespaced(admin.clone(), ns)
                .get("agent")
                .await;
            let has = |t: &k8s_openapi::api::core::v1::PodTemplateSpec| {
                t.metadata
                    .as_ref()
                    .and_then(|m| m.annotations.as_ref())
                    .is_some_and(|a| a.contains_key(key))
            };
            matches!((d, s, a), (Ok(d), Ok(s), Ok(a))
                if has(&d.spec.template) && has(&s.spec.template) && has(&a.spec.template))
        })
        .await?;
        Api::<Secret>::namespaced(admin.clone(), ns)
            .patch(
                "app",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"stringData": {"password": "edited"}})),
            )
            .await
            .unwrap();
        step("the edited Secret is repaired", || async {
            secret_data(admin, ns, "app").await.as_ref() == Some(&want)
        })
        .await?;
        step("the repeated Event becomes a series", || events(2)).await?;
        let held = Duration::from_secs(5).saturating_sub(started.elapsed());
        tokio::time::sleep(held).await;
        if ctl.handle.is_finished() || !ctl.metrics().is_leader() {
            return Err("the lease is still held after 5 s (renewed)".to_string());
        }
        Ok(())
    }
    .await;
    if !ctl.handle.is_finished() {
        let _ = ctl.stop().await;
    }
    result
}

/// Every verb the shipped rules grant is needed: with all of them the full scenario
/// succeeds; with any single one removed (everything else granted), some step of it
/// fails. All variants run at once, each in its own namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_granted_verb_is_needed() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let docs = shipped_docs();

    let full = namespaced_role(&docs, "x");
    let mut grants: Vec<(String, String, String)> =
        grants_of(&full.rules.clone().unwrap_or_default())
            .into_iter()
            .collect();
    grants.sort();
    let mut variants: Vec<Option<(String, String, String)>> = vec![None];
    variants.extend(grants.iter().cloned().map(Some));

    let runs = variants.iter().map(|without| {
        let admin = admin.clone();
        let docs = docs.clone();
        let without = without.clone();
        async move {
            let ns = env.unique_namespace("rbac-verb").await;
            let mut role = namespaced_role(&docs, &ns);
            if let Some((g, r, v)) = &without {
                let mut rules = Vec::new();
                for rule in role.rules.take().unwrap_or_default() {
                    let hit = rule.api_groups.as_deref() == Some(&[g.clone()][..])
                        && rule.resources.as_deref() == Some(&[r.clone()][..]);
                    let mut rule = rule;
                    if hit {
                        rule.verbs.retain(|x| x != v);
                    }
                    if !rule.verbs.is_empty() {
                        rules.push(rule);
                    }
                }
                role.rules = Some(rules);
            }
            let outcome = full_scenario(env, &admin, &ns, role).await;
            (without, outcome)
        }
    });
    let outcomes = futures::future::join_all(runs).await;

    let mut wrong = Vec::new();
    for (without, outcome) in &outcomes {
        match (without, outcome) {
            (None, Ok(())) => println!("all grants: the full scenario succeeds"),
            (None, Err(step)) => wrong.push(format!("with every grant, this failed: {step}")),
            (Some(g), Err(step)) => println!("without {g:?}: fails at \"{step}\""),
            (Some(g), Ok(())) => wrong.push(format!(
                "without {g:?} the full scenario still succeeds: the grant is not needed"
            )),
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    assert!(outcomes.len() > 20, "only {} variants", outcomes.len());
}

/// The ClusterSealedStorageCred scenario as ServiceAccount `ns/sealcred-controller`
/// bound to a ClusterRole with `rules`: a controller for every namespace (sharded to
/// this run's objects) writes the object's Secret to a named and a selected namespace,
/// reports Ready=True 2/2, and deletes the copy of a namespace relabelled out. Returns
/// the first step that did not happen.
async fn cluster_scenario(
    env: &sealcred_tests::TestEnv,
    admin: &kube::Client,
    rules: Vec<PolicyRule>,
) -> Result<(), Missing> {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use sealcred_shared::crd::{ClusterSealedStorageCred, NamespaceSelector, Scope};
    use std::time::Duration;

    const STEP: Duration = Duration::from_secs(20);
    let ns = env.unique_namespace("rbac-cluster").await;
    let selected = env.unique_namespace("rbac-cluster-sel").await;
    let shard = sealcred_tests::unique_name("shard");
    let role_name = sealcred_tests::unique_name("sealcred-rbac-cluster");
    let pp = PatchParams::apply("sealcred-tests").force();
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role_name}, "rules": rules,
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .patch(&role_name, &pp, &Patch::Apply(&role))
        .await
        .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": role_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": "sealcred-controller", "namespace": ns}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch(&role_name, &pp, &Patch::Apply(&binding))
        .await
        .unwrap();
    let client = env.sa_client(&ns, "sealcred-controller").await;
    let label = |v: &str| serde_json::json!({"metadata": {"labels": {"rbac-cluster": v}}});
    Api::<Namespace>::all(admin.clone())
        .patch(
            &selected,
            &PatchParams::default(),
            &Patch::Merge(label(&shard)),
        )
        .await
        .unwrap();

    let args: Vec<String> = [
        "sealcred-controller",
        "--kms-allow",
        env.key_arn(),
        "--selector",
        &format!("rbac-cluster={shard}"),
        "--leader-elect=false",
        "--metrics-addr=off",
        "--max-backoff=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ctl = start_with(env, client, args, env.kms_endpoint()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let sdk = sdk_config(env, env.kms_endpoint()).await;
    let kms = sealcred_shared::provider::aws::AwsKms::new(&sdk, env.key_arn()).unwrap();
    let name = sealcred_tests::unique_name("rbac-cluster-obj");
    let view = sealcred_shared::seal::seal(
        &sealcred_shared::seal::SealInput {
            name: name.clone(),
            namespace: None,
            scope: Scope::Cluster,
            template: template(&[]),
            profile: None,
            entries: entries(&[("password", "pw")]),
        },
        &[&kms],
    )
    .await
    .unwrap()
    .object;
    let mut obj = ClusterSealedStorageCred::from_sealed_view(
        view,
        vec![ns.clone()],
        Some(NamespaceSelector {
            match_labels: [("rbac-cluster".to_string(), shard.clone())].into(),
            ..NamespaceSelector::default()
        }),
    );
    obj.metadata.labels = Some([("rbac-cluster".to_string(), shard.clone())].into());
    Api::<ClusterSealedStorageCred>::all(admin.clone())
        .patch(&name, &pp, &Patch::Apply(&obj))
        .await
        .unwrap();

    async fn step<F, Fut>(name: &str, mut f: F) -> Result<(), Missing>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + STEP;
        while tokio::time::Instant::now() < deadline {
            if f().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(name.to_string())
    }
    let want: std::collections::BTreeMap<String, String> =
        [("password".to_string(), "pw".to_string())].into();
    let result = async {
        step("the Secret is written in both namespaces", || async {
            secret_data(admin, &ns, &name).await.as_ref() == Some(&want)
                && secret_data(admin, &selected, &name).await.as_ref() == Some(&want)
        })
        .await?;
        step("Ready=True 2/2 in the status", || async {
            let Ok(o) = Api::<ClusterSealedStorageCred>::all(admin.clone())
                .get(&name)
                .await
            else {
                return false;
            };
            o.status.is_some_and(|s| {
                s.namespaces_ready.as_deref() == Some("2/2")
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await?;
        Api::<Namespace>::all(admin.clone())
            .patch(
                &selected,
                &PatchParams::default(),
                &Patch::Merge(label("out")),
            )
            .await
            .unwrap();
        step("the relabelled namespace's copy is deleted", || async {
            secret_data(admin, &selected, &name).await.is_none()
        })
        .await
    }
    .await;
    if !ctl.handle.is_finished() {
        let _ = ctl.stop().await;
    }
    result
}

/// Every verb of the ClusterSealedStorageCred ClusterRole is needed: with every shipped
/// ClusterRole the cluster scenario succeeds; without any one of `CLUSTER_ROLE`'s verbs
/// (everything else granted) a step of it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_cluster_grant_is_needed() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let docs = shipped_docs();
    let all_rules = rules_of(&docs, "ClusterRole");
    let cluster_docs: Vec<Value> = docs
        .iter()
        .filter(|d| d["metadata"]["name"] == CLUSTER_ROLE)
        .cloned()
        .collect();
    let grants: Vec<(String, String, String)> = grants_of(&rules_of(&cluster_docs, "ClusterRole"))
        .into_iter()
        .collect();
    assert!(grants.len() >= 5, "{grants:?}");
    let mut variants: Vec<Option<(String, String, String)>> = vec![None];
    variants.extend(grants.iter().cloned().map(Some));
    let runs = variants.iter().map(|without| {
        let admin = admin.clone();
        let without = without.clone();
        let mut rules = all_rules.clone();
        if let Some((g, r, v)) = &without {
            // Split every rule per (group, resource), and drop the one verb.
            rules = rules
                .into_iter()
                .flat_map(|rule| {
                    let mut out = Vec::new();
                    for rg in rule.api_groups.iter().flatten() {
                        for rr in rule.resources.iter().flatten() {
                            let verbs: Vec<String> = rule
                                .verbs
                                .iter()
                                .filter(|x| !(rg == g && rr == r && *x == v))
                                .cloned()
                                .collect();
                            if !verbs.is_empty() {
                                out.push(PolicyRule {
                                    api_groups: Some(vec![rg.clone()]),
                                    resources: Some(vec![rr.clone()]),
                                    verbs,
                                    ..Default::default()
                                });
                            }
                        }
                    }
                    out
                })
                .collect();
        }
        async move { (without.clone(), cluster_scenario(env, &admin, rules).await) }
    });
    let outcomes = futures::future::join_all(runs).await;
    let mut wrong = Vec::new();
    for (without, outcome) in &outcomes {
        match (without, outcome) {
            (None, Ok(())) => println!("all grants: the cluster scenario succeeds"),
            (None, Err(step)) => wrong.push(format!("with every grant, this failed: {step}")),
            (Some(g), Err(step)) => println!("without {g:?}: fails at \"{step}\""),
            (Some(g), Ok(())) => wrong.push(format!(
                "without {g:?} the cluster scenario still succeeds: the grant is not needed"
            )),
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
