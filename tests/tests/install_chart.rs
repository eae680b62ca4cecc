//! The Helm chart (charts/sealcred) and deploy/, proven (issue 12, sections 2 and 3):
//!
//! 1. `chart_lints_and_renders_the_values_matrix`: `helm lint --strict` and `helm template`
//!    of every values file in charts/sealcred/ci/ (default, namespace-scoped, IRSA,
//!    restarts off, extra KMS endpoints, every value set), each checked for what it is
//!    for; an empty `kms.allow` fails with a message naming the value.
//! 2. `chart_sets_every_controller_flag`: every flag of `sealcred-controller` has a
//!    value (a new flag fails here until the chart maps it).
//! 3. `chart_rbac_and_policies_equal_deploy`: in each install mode the chart's Roles,
//!    ClusterRoles and admission policies equal deploy/'s (kustomize with its
//!    components); deploy/'s rules equal what the code calls (tests/tests/rbac_exact.rs),
//!    so a rule missing from the chart fails here.
//! 4. `chart_renders_are_accepted_by_the_api_server`: every matrix render, and deploy/ in
//!    every mode, passes a server-side dry run (schema, RBAC escalation checks,
//!    admission), and an empty `kms.allow` fails a real `helm install`.
//! 5. `image_controller_runs_with_the_chart_identity`: `helm install` for real, then the
//!    controller **from the image** (buildah, the image's user 65532, in-cluster
//!    configuration from the chart ServiceAccount's token, the args the chart rendered)
//!    materializes a Secret and rolls a workload; the same token is denied an image
//!    change by the chart's admission policy; the container's root filesystem is left
//!    unchanged (the controller writes no file).
//! 6. `namespaced_chart_without_restarts_runs`: the chart in namespace mode with restarts
//!    off; the controller in-process with that ServiceAccount's identity unseals, and the
//!    identity can read nothing outside its namespace and no workload.

mod controller_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use clap::CommandFactory;
use controller_support::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use sealcred_tests::install::*;
use sealcred_tests::{repo_root, testenv, unique_name};
use serde_json::{Value, json};

const MATRIX: [&str; 6] = [
    "ci/default-values.yaml",
    "ci/namespaced-values.yaml",
    "ci/irsa-values.yaml",
    "ci/no-restarts-values.yaml",
    "ci/endpoints-values.yaml",
    "ci/full-values.yaml",
];

/// (apiGroup, resource, verb) of every rule of `role`.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in role["rules"].as_array().into_iter().flatten() {
        for g in r["apiGroups"].as_array().into_iter().flatten() {
            for res in r["resources"].as_array().into_iter().flatten() {
                for v in r["verbs"].as_array().into_iter().flatten() {
                    out.insert((
                        g.as_str().unwrap().into(),
                        res.as_str().unwrap().into(),
                        v.as_str().unwrap().into(),
                    ));
                }
            }
        }
    }
    out
}

/// Every Role/ClusterRole as (kind, name with the release prefix cut, namespace class)
/// → grants; every binding as (kind, name) → (role kind, role name, subject).
type Rbac = (
    BTreeMap<(String, String), BTreeSet<(String, String, String)>>,
    BTreeMap<(String, String), (String, String, String)>,
);

fn rbac(docs: &[Value], prefix: &str) -> Rbac {
    let norm = |n: &str| n.strip_prefix(prefix).unwrap_or(n).to_string();
    let mut roles = BTreeMap::new();
    let mut bindings = BTreeMap::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        let name = norm(d["metadata"]["name"].as_str().unwrap_or_default());
        match kind {
            "Role" | "ClusterRole" => {
                roles.insert((kind.to_string(), name), grants(d));
            }
            "RoleBinding" | "ClusterRoleBinding" => {
                let subjects = d["subjects"].as_array().unwrap();
                assert_eq!(subjects.len(), 1, "{kind} {name}: one subject");
                bindings.insert(
                    (kind.to_string(), name),
                    (
                        d["roleRef"]["kind"].as_str().unwrap().to_string(),
                        norm(d["roleRef"]["name"].as_str().unwrap()),
                        format!(
                            "{}/{}",
                            subjects[0]["kind"].as_str().unwrap(),
                            subjects[0]["name"].as_str().unwrap()
                        ),
                    ),
                );
            }
            _ => {}
        }
    }
    (roles, bindings)
}

fn chart(values: &str, set: &[String]) -> Vec<Value> {
    helm_template("sealcred", "sealcred-system", &[values], set)
        .unwrap_or_else(|e| panic!("helm template -f {values}: {e}"))
}

fn env_names(docs: &[Value]) -> Vec<String> {
    of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn chart_lints_and_renders_the_values_matrix() {
    let chart_dir = repo_root().join("charts/sealcred");
    for values in MATRIX {
        let out = output(
            Command::new(helm())
                .args(["lint", "--strict"])
                .arg(&chart_dir)
                .arg("-f")
                .arg(chart_dir.join(values)),
        );
        assert!(
            out.status.success(),
            "helm lint --strict -f {values}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let apps_rules = |docs: &[Value]| {
        docs.iter()
            .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
            .flat_map(grants)
            .filter(|g| g.0 == "apps")
            .count()
    };

    // default: cluster-wide, restarts on, policies, a PDB for the two replicas.
    let d = chart("ci/default-values.yaml", &[]);
    // core, restarts, and the ClusterSealedStorageCred role (-cluster).
    assert_eq!(of_kind(&d, "ClusterRole").len(), 3);
    assert_eq!(of_kind(&d, "Role").len(), 1, "only the leader Role");
    assert_eq!(of_kind(&d, "ValidatingAdmissionPolicy").len(), 2);
    assert_eq!(of_kind(&d, "ValidatingAdmissionPolicyBinding").len(), 2);
    let pdb = find(&d, "PodDisruptionBudget", "sealcred-sealcred-controller");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        of_kind(&d, "Deployment")[0]["spec"]["selector"]["matchLabels"]
    );
    assert!(of_kind(&d, "ServiceMonitor").is_empty());
    let args = controller_args(&d);
    assert!(args.contains(&"--kms-allow=arn:aws:kms:eu-west-1:111122223333:key/*".into()));
    assert!(args.contains(&"--workload-restarts=true".into()));
    assert!(!args.iter().any(|a| a.starts_with("--namespace")));
    let policy = find(
        &d,
        "ValidatingAdmissionPolicy",
        "sealcred-sealcred-controller-secrets",
    );
    assert!(
        policy["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap()
            .contains("'system:serviceaccount:sealcred-system:sealcred-controller'"),
        "the policy matches the chart's ServiceAccount"
    );
    // One replica: no PDB (it would block every drain).
    let one = chart("ci/default-values.yaml", &["replicaCount=1".into()]);
    assert!(of_kind(&one, "PodDisruptionBudget").is_empty());

    // namespace-scoped: Roles in the watched namespace, no ClusterRole at all.
    let d = chart("ci/namespaced-values.yaml", &[]);
    assert!(of_kind(&d, "ClusterRole").is_empty());
    assert!(of_kind(&d, "ClusterRoleBinding").is_empty());
    for r in of_kind(&d, "Role")
        .into_iter()
        .chain(of_kind(&d, "RoleBinding"))
    {
        let name = r["metadata"]["name"].as_str().unwrap();
        let want = if name.ends_with("-leader") {
            "sealcred-system"
        } else {
            "team-a"
        };
        assert_eq!(r["metadata"]["namespace"], want, "{name}");
    }
    assert!(controller_args(&d).contains(&"--namespace=team-a".into()));
    // ... and the release namespace when controller.namespace is empty.
    let d = chart(
        "ci/namespaced-values.yaml",
        &["controller.namespace=".into()],
    );
    assert!(controller_args(&d).contains(&"--namespace=sealcred-system".into()));

    // IRSA: the role annotation on the ServiceAccount, the region in the pod.
    let d = chart("ci/irsa-values.yaml", &[]);
    assert_eq!(
        of_kind(&d, "ServiceAccount")[0]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::111122223333:role/sealcred-controller"
    );
    assert!(env_names(&d).contains(&"AWS_REGION".into()));

    // restarts off: the flag, and no apps rule anywhere.
    let d = chart("ci/no-restarts-values.yaml", &[]);
    assert!(controller_args(&d).contains(&"--workload-restarts=false".into()));
    assert_eq!(apps_rules(&d), 0);
    assert_eq!(of_kind(&d, "ClusterRole").len(), 2);

    // extra KMS endpoints: one --kms-endpoint per region.
    let args = controller_args(&chart("ci/endpoints-values.yaml", &[]));
    for want in [
        "--kms-endpoint=eu-west-1=https://vpce-0a1b.kms.eu-west-1.vpce.amazonaws.com",
        "--kms-endpoint=eu-central-1=https://vpce-0c2d.kms.eu-central-1.vpce.amazonaws.com",
    ] {
        assert!(args.contains(&want.to_string()), "{want} in {args:?}");
    }

    // every value: a ServiceMonitor on the metrics Service's port, the local key mounted.
    let d = chart("ci/full-values.yaml", &[]);
    let sm = of_kind(&d, "ServiceMonitor");
    assert_eq!(sm.len(), 1);
    let svc = of_kind(&d, "Service")[0];
    assert_eq!(
        sm[0]["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    for (k, v) in sm[0]["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selects the Service"
        );
    }
    assert_eq!(sm[0]["metadata"]["labels"]["release"], "prometheus");
    let dep = of_kind(&d, "Deployment")[0];
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/sealcred-controller@sha256:0000000000000000000000000000000000000000000000000000000000000000"
    );
    assert!(controller_args(&d).contains(&"--local-key=/etc/sealcred/local-key/dev.key".into()));
    assert_eq!(
        dep["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "sealcred-dev-key"
    );

    // An empty kms.allow fails, naming the value.
    for set in [vec![], vec!["kms.allow=null".to_string()]] {
        let err = helm_template("sealcred", "sealcred-system", &[], &set)
            .expect_err("an empty kms.allow must fail");
        assert!(err.contains("kms.allow is empty"), "{err}");
    }
    let err = helm_template(
        "sealcred",
        "sealcred-system",
        &["ci/default-values.yaml"],
        &["rbac.scope=tenant".into()],
    )
    .expect_err("a bad rbac.scope must fail");
    assert!(err.contains("rbac.scope"), "{err}");
}

/// Flags provided by the pod's environment (downward API), not by a value.
const FROM_POD_ENV: [(&str, &str); 2] = [
    ("identity", "POD_NAME"),
    ("lease-namespace", "POD_NAMESPACE"),
];

#[test]
fn chart_sets_every_controller_flag() {
    let d = chart("ci/full-values.yaml", &[]);
    let args = controller_args(&d);
    let env = env_names(&d);
    let cmd = sealcred_controller::options::Cli::command();
    let mut missing = Vec::new();
    for a in cmd.get_arguments() {
        let Some(long) = a.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        if let Some((_, var)) = FROM_POD_ENV.iter().find(|(f, _)| *f == long) {
            assert!(env.contains(&var.to_string()), "--{long} comes from {var}");
            continue;
        }
        if !args
            .iter()
            .any(|x| x == &format!("--{long}") || x.starts_with(&format!("--{long}=")))
        {
            missing.push(format!("--{long}"));
        }
    }
    assert!(
        missing.is_empty(),
        "controller flags with no chart value (add one to charts/sealcred/values.yaml, \
         templates/deployment.yaml and ci/full-values.yaml): {missing:?}"
    );
}

/// The chart's admission policies with the ServiceAccount name and object names made
/// release-neutral, as deploy/ writes them.
fn policies(docs: &[Value], prefix: &str, username: &str) -> BTreeMap<String, Value> {
    docs.iter()
        .filter(|d| {
            d["kind"] == "ValidatingAdmissionPolicy"
                || d["kind"] == "ValidatingAdmissionPolicyBinding"
        })
        .map(|d| {
            let strip = |n: &str| n.strip_prefix(prefix).unwrap_or(n).to_string();
            let name = strip(d["metadata"]["name"].as_str().unwrap());
            let mut spec: Value = serde_json::from_str(
                &serde_json::to_string(&d["spec"])
                    .unwrap()
                    .replace(username, "USER"),
            )
            .unwrap();
            if let Some(p) = spec["policyName"].as_str().map(strip) {
                spec["policyName"] = json!(p);
            }
            collapse_whitespace(&mut spec);
            (format!("{} {name}", d["kind"].as_str().unwrap()), spec)
        })
        .collect()
}

/// CEL is whitespace-insensitive, and YAML emitters fold long strings differently.
fn collapse_whitespace(v: &mut Value) {
    match v {
        Value::String(s) => *s = s.split_whitespace().collect::<Vec<_>>().join(" "),
        Value::Array(a) => a.iter_mut().for_each(collapse_whitespace),
        Value::Object(o) => o.values_mut().for_each(collapse_whitespace),
        _ => {}
    }
}

#[test]
fn chart_rbac_and_policies_equal_deploy() {
    let modes: [(&str, &[&str], &str, Vec<String>); 4] = [
        ("cluster", &[], "ci/default-values.yaml", vec![]),
        (
            "cluster, restarts off",
            &["no-restarts"],
            "ci/no-restarts-values.yaml",
            vec![],
        ),
        (
            "namespace",
            &["namespace-scoped"],
            "ci/namespaced-values.yaml",
            vec!["controller.namespace=apps".into()],
        ),
        (
            "namespace, restarts off",
            &["namespace-scoped", "no-restarts"],
            "ci/namespaced-values.yaml",
            vec![
                "controller.namespace=apps".into(),
                "controller.workloadRestarts=false".into(),
            ],
        ),
    ];
    for (mode, components, values, set) in modes {
        let deploy = kustomize_deploy(components);
        let chart = chart(values, &set);
        // The chart's release "sealcred" prefixes its names with "sealcred-".
        let (d_roles, d_bindings) = rbac(&deploy, "");
        let (c_roles, c_bindings) = rbac(&chart, "sealcred-");
        assert_eq!(c_roles, d_roles, "{mode}: chart roles != deploy/ roles");
        assert_eq!(
            c_bindings, d_bindings,
            "{mode}: chart bindings != deploy/ bindings"
        );
        let user = "system:serviceaccount:sealcred-system:sealcred-controller";
        assert_eq!(
            policies(&chart, "sealcred-", user),
            policies(&deploy, "", user),
            "{mode}: chart admission policies != deploy/'s"
        );
        // Same args for the modes (the kustomize modes set the namespace by env).
        let c_args = controller_args(&chart);
        let d_args = controller_args(&deploy);
        let restarts_off = components.contains(&"no-restarts");
        assert_eq!(
            c_args.contains(&"--workload-restarts=false".into()),
            restarts_off,
            "{mode}"
        );
        assert_eq!(
            d_args.contains(&"--workload-restarts=false".into()),
            restarts_off,
            "{mode}"
        );
        if components.contains(&"namespace-scoped") {
            assert!(c_args.contains(&"--namespace=apps".into()), "{mode}");
            let env = &of_kind(&deploy, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
                [0]["env"];
            assert!(
                env.as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["name"] == "SEALCRED_NAMESPACE" && e["value"] == "apps"),
                "{mode}: deploy/ watches `apps`"
            );
        }
    }
}

fn admin_kubeconfig() -> std::path::PathBuf {
    sealcred_tests::TestEnv::get().kubeconfig()
}

#[tokio::test]
async fn chart_renders_are_accepted_by_the_api_server() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let release_ns = env.unique_namespace("chart-dry").await;
    let watched = env.unique_namespace("chart-dry-app").await;
    let kubeconfig = admin_kubeconfig();
    for values in MATRIX {
        let docs = helm_template(
            &unique_name("r"),
            &release_ns,
            &[values],
            &[format!("controller.namespace={watched}")],
        )
        .unwrap();
        // No prometheus-operator here: its CRD is not installed (the shape is checked above).
        let docs: Vec<Value> = docs
            .into_iter()
            .filter(|d| d["kind"] != "ServiceMonitor")
            .collect();
        kubectl_apply(&kubeconfig, &docs, true)
            .unwrap_or_else(|e| panic!("the server refused the chart with {values}: {e}"));
    }
    // deploy/ in each mode (its namespace first, for the dry run of namespaced objects).
    let base = kustomize_deploy(&[]);
    let ns_doc: Vec<Value> = base
        .iter()
        .filter(|d| d["kind"] == "Namespace")
        .cloned()
        .collect();
    kubectl_apply(&kubeconfig, &ns_doc, false).unwrap();
    let apps: Value =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}});
    kubectl_apply(&kubeconfig, &[apps], false).unwrap();
    for components in [
        &[][..],
        &["no-restarts"],
        &["namespace-scoped"],
        &["namespace-scoped", "no-restarts"],
    ] {
        kubectl_apply(&kubeconfig, &kustomize_deploy(components), true)
            .unwrap_or_else(|e| panic!("the server refused deploy/ + {components:?}: {e}"));
    }
    // `helm install` with kms.allow empty fails before creating anything, naming the value.
    let out = output(
        Command::new(helm())
            .args(["install", &unique_name("empty"), "--namespace", &release_ns])
            .arg(repo_root().join("charts/sealcred"))
            .arg("--kubeconfig")
            .arg(&kubeconfig),
    );
    assert!(
        !out.status.success(),
        "helm install with no kms.allow must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kms.allow is empty"), "{err}");
}

/// `helm install` of the chart for real, as admin; returns the installed Deployment.
async fn helm_install(
    release: &str,
    ns: &str,
    values: &str,
    set_json: &[(&str, Value)],
) -> Deployment {
    let env = testenv().await;
    let mut cmd = Command::new(helm());
    cmd.args(["install", release, "--namespace", ns])
        .arg(repo_root().join("charts/sealcred"))
        .arg("-f")
        .arg(repo_root().join("charts/sealcred").join(values))
        .arg("--kubeconfig")
        .arg(env.kubeconfig());
    for (k, v) in set_json {
        cmd.args(["--set-json", &format!("{k}={v}")]);
    }
    run_ok(&mut cmd);
    Api::<Deployment>::namespaced(env.kube_client().await, ns)
        .get(&format!("{release}-sealcred-controller"))
        .await
        .expect("the chart's Deployment")
}

fn deployment_args(d: &Deployment) -> Vec<String> {
    d.spec.template.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// SIGTERM to a process group (the buildah run and the controller under it).
fn signal_group(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, "--", &format!("-{pid}")])
        .status();
}

/// `buildah run` of the controller; `needle` finds the controller's own process.
struct StopOnDrop(Option<std::process::Child>, String);

impl StopOnDrop {
    /// SIGTERM to the controller (as the kubelet signals a container's process), then
    /// buildah's exit status, which is the controller's (SIGKILL after 20 s).
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("running");
        match process_with(&self.1) {
            Some((pid, _)) => {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            None => signal_group(child.id(), "-TERM"),
        }
        for _ in 0..200 {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        signal_group(child.id(), "-KILL");
        child.wait().unwrap()
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.0.is_some() {
            let _ = self.stop();
        }
    }
}

/// The pid and `Uid:` line of the process whose command line has `needle`.
fn process_with(needle: &str) -> Option<(u32, String)> {
    for e in std::fs::read_dir("/proc").ok()? {
        let e = e.ok()?;
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.starts_with("/usr/local/bin/sealcred-controller ") && cmdline.contains(needle) {
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let uid = status.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            return Some((pid, uid));
        }
    }
    None
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Mount points buildah itself creates in a container's root filesystem.
const BUILDAH_MOUNTS: [&str; 8] = [
    "etc/hosts",
    "etc/resolv.conf",
    "etc/hostname",
    "run",
    "proc",
    "dev",
    "sys",
    "var",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_controller_runs_with_the_chart_identity() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let image = image();

    // The image: numeric non-root user, labels, nothing but the binary and the CA bundle.
    let inspect = inspect_image(image);
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(
        config["Entrypoint"],
        json!(["/usr/local/bin/sealcred-controller"])
    );
    for label in ["source", "version", "licenses"] {
        let v = &config["Labels"][format!("org.opencontainers.image.{label}")];
        assert!(
            v.as_str().is_some_and(|s| !s.is_empty()),
            "label {label}: {v}"
        );
    }
    assert_eq!(
        config["Labels"]["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    let ctr = Container::from_image(image);
    let files: Vec<String> = tree_manifest(&ctr.rootfs, &BUILDAH_MOUNTS)
        .into_iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(
        files,
        [
            "etc",
            "etc/ssl",
            "etc/ssl/certs",
            "etc/ssl/certs/ca-certificates.crt",
            "usr",
            "usr/local",
            "usr/local/bin",
            "usr/local/bin/sealcred-controller"
        ],
        "the image holds the binary and the CA bundle only (no shell)"
    );

    // The chart, installed for real: cluster scope, restarts on, policies on, the test KMS
    // as the us-east-1 endpoint, watching one namespace (the API server is shared).
    let release = unique_name("img");
    let release_ns = env.unique_namespace("chart-img").await;
    let app_ns = env.unique_namespace("chart-img-app").await;
    let (repo, tag) = image.rsplit_once(':').unwrap();
    let deployment = helm_install(
        &release,
        &release_ns,
        "ci/default-values.yaml",
        &[
            ("kms.allow", json!([env.key_arn()])),
            ("kms.endpoints", json!({ env.region(): env.kms_endpoint() })),
            ("controller.namespace", json!(app_ns)),
            ("image.repository", json!(repo)),
            ("image.tag", json!(tag)),
        ],
    )
    .await;
    let spec = deployment.spec.template.spec.as_ref().unwrap();
    assert_eq!(spec.containers[0].image.as_deref(), Some(image));
    let sa = spec.service_account_name.clone().unwrap();

    // The chart ServiceAccount's token and the CA, where a pod has them.
    let dir = tempfile::tempdir().unwrap();
    let sa_dir = dir.path().join("serviceaccount");
    std::fs::create_dir(&sa_dir).unwrap();
    let sa_kubeconfig = env.sa_kubeconfig(&release_ns, &sa);
    let (token, ca) = token_and_ca(&sa_kubeconfig);
    std::fs::write(sa_dir.join("token"), &token).unwrap();
    std::fs::write(sa_dir.join("ca.crt"), &ca).unwrap();
    std::fs::write(sa_dir.join("namespace"), &release_ns).unwrap();
    let server: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(env.kubeconfig()).unwrap()).unwrap();
    let server = server["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_string();
    let api_port = server.rsplit(':').next().unwrap().to_string();

    // The chart's args, but /metrics on a free loopback port (buildah runs on the host network).
    let metrics_port = free_port();
    let mut args = vec!["/usr/local/bin/sealcred-controller".to_string()];
    for a in deployment_args(&deployment) {
        if a.starts_with("--metrics-addr=") {
            args.push(format!("--metrics-addr=127.0.0.1:{metrics_port}"));
        } else {
            args.push(a);
        }
    }
    let mut container_env = vec![
        ("POD_NAME".to_string(), format!("{release}-pod")),
        ("POD_NAMESPACE".to_string(), release_ns.clone()),
        // By name: the static binary resolves through /etc/hosts (the serving
        // certificate names localhost).
        (
            "KUBERNETES_SERVICE_HOST".to_string(),
            "localhost".to_string(),
        ),
        ("KUBERNETES_SERVICE_PORT".to_string(), api_port),
        ("RUST_LOG".to_string(), "info".to_string()),
        ("AWS_REGION".to_string(), env.region().to_string()),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
    ];
    for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        container_env.push((k.to_string(), env.var(k).unwrap().to_string()));
    }
    let volumes = vec![format!(
        "{}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
        sa_dir.display()
    )];

    // A first run makes buildah's mount points; after it, the root filesystem must not change.
    let log_dir = repo_root().join("target/testenv");
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut first = ctr.spawn(
        &volumes,
        &container_env,
        &[
            "/usr/local/bin/sealcred-controller".into(),
            "--version".into(),
        ],
        &log_dir.join(format!("image-{release}-version.log")),
    );
    assert!(first.wait().unwrap().success(), "the image runs its binary");
    let before = tree_manifest(&ctr.rootfs, &BUILDAH_MOUNTS);
    for line in tree_manifest(&ctr.rootfs, &[]) {
        let mut f = line.split(' ');
        let (path, mode, uid) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let mode = u32::from_str_radix(mode, 8).unwrap();
        assert!(
            uid == "0" && mode & 0o022 == 0,
            "{path} is writable by the image's user"
        );
    }

    let workload: Deployment = workload("Deployment", "web", Some("app"));
    Api::<Deployment>::namespaced(admin.clone(), &app_ns)
        .create(&PostParams::default(), &workload)
        .await
        .unwrap();
    let log = log_dir.join(format!("image-{release}.log"));
    let needle = format!("--lease-name={release}-sealcred-controller");
    let mut ctl = StopOnDrop(
        Some(ctr.spawn(&volumes, &container_env, &args, &log)),
        needle.clone(),
    );
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    wait_for(
        "the image's controller running as uid 65532",
        CONVERGE,
        || async { process_with(&needle) },
    )
    .await;
    let (_, uid) = process_with(&needle).unwrap();
    assert_eq!(
        uid.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65532"; 4],
        "{uid}"
    );
    wait_for("/readyz from the image's controller", CONVERGE, || async {
        http_get(metrics_port, "/readyz").filter(|r| r.starts_with("HTTP/1.1 200"))
    })
    .await;

    let obj = seal_object(
        env,
        &app_ns,
        "app",
        template(&[]),
        &[("password", "from-the-image")],
    )
    .await;
    apply(&admin, &obj).await;
    let converged = tokio::time::timeout(
        CONVERGE,
        wait_secret(&admin, &app_ns, "app", &[("password", "from-the-image")]),
    )
    .await;
    assert!(
        converged.is_ok(),
        "no Secret from the image's controller; its log:\n{}",
        show_log()
    );
    wait_ready(&admin, &app_ns, "app", "True", "Unsealed").await;
    // The restart (allowed by the policy: only the restart annotation changes).
    wait_for(
        "the workload rolled by the image's controller",
        CONVERGE,
        || async {
            let d = Api::<Deployment>::namespaced(admin.clone(), &app_ns)
                .get("web")
                .await
                .ok()?;
            let a = d.spec.template.metadata?.annotations?;
            a.contains_key("sealcred.io/restarted-for-app")
                .then_some(())
        },
    )
    .await;
    assert!(
        http_get(metrics_port, "/metrics")
            .is_some_and(|m| m.contains("sealcred_workload_restarts_total{kind=\"Deployment\"} 1")),
        "metrics from the image"
    );

    // The same token, used by someone else: the chart's policy denies an image change.
    let stolen = sealcred_tests::client_from_kubeconfig(&sa_kubeconfig).await;
    let err = Api::<Deployment>::namespaced(stolen, &app_ns)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "evil:1"}]}}}})),
        )
        .await
        .expect_err("an image change with the controller's token must be denied");
    assert!(
        err.to_string().contains("ValidatingAdmissionPolicy"),
        "{err}"
    );

    let status = ctl.stop();
    assert!(
        status.success(),
        "the controller exits cleanly on SIGTERM: {status}; log:\n{}",
        show_log()
    );
    assert_eq!(
        tree_manifest(&ctr.rootfs, &BUILDAH_MOUNTS),
        before,
        "the controller wrote to its root filesystem"
    );
    run_ok(
        Command::new(helm())
            .args(["uninstall", &release, "--namespace", &release_ns])
            .arg("--kubeconfig")
            .arg(env.kubeconfig()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_chart_without_restarts_runs() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let release = unique_name("nsr");
    let release_ns = env.unique_namespace("chart-ns").await;
    let app_ns = env.unique_namespace("chart-ns-app").await;
    let other = env.unique_namespace("chart-ns-other").await;
    let deployment = helm_install(
        &release,
        &release_ns,
        "ci/namespaced-values.yaml",
        &[
            ("kms.allow", json!([env.key_arn()])),
            ("kms.endpoints", json!({ env.region(): env.kms_endpoint() })),
            ("controller.namespace", json!(app_ns)),
            ("controller.workloadRestarts", json!(false)),
            ("controller.leaseDurationSeconds", json!(3)),
            ("controller.leaseRenewSeconds", json!(1)),
        ],
    )
    .await;
    let sa = deployment
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .service_account_name
        .clone()
        .unwrap();
    let client = env.sa_client(&release_ns, &sa).await;
    // Scoped: nothing outside the watched namespace, no workloads at all.
    for (what, res) in [
        (
            "Secrets elsewhere",
            Api::<Secret>::namespaced(client.clone(), &other)
                .list(&ListParams::default())
                .await
                .map(|_| ()),
        ),
        (
            "Deployments",
            Api::<Deployment>::namespaced(client.clone(), &app_ns)
                .list(&ListParams::default())
                .await
                .map(|_| ()),
        ),
    ] {
        let err = res.expect_err(what);
        assert!(err.to_string().contains("forbidden"), "{what}: {err}");
    }
    // The chart's args; the downward-API variables as flags; no metrics server.
    let mut args = vec!["sealcred-controller".to_string()];
    for a in deployment_args(&deployment) {
        args.push(if a.starts_with("--metrics-addr=") {
            "--metrics-addr=off".into()
        } else {
            a
        });
    }
    args.push(format!("--lease-namespace={release_ns}"));
    args.push(format!("--identity={release}-pod"));
    assert!(args.contains(&format!("--namespace={app_ns}")));
    assert!(args.contains(&"--workload-restarts=false".into()));
    let ctl = start_with(env, client, args, env.kms_endpoint()).await;
    let obj = seal_object(env, &app_ns, "db", template(&[]), &[("password", "scoped")]).await;
    apply(&admin, &obj).await;
    wait_secret(&admin, &app_ns, "db", &[("password", "scoped")]).await;
    wait_ready(&admin, &app_ns, "db", "True", "Unsealed").await;
    wait_for(
        "the lease taken with the chart's leader Role",
        CONVERGE,
        || async { ctl.metrics().is_leader().then_some(()) },
    )
    .await;
    ctl.stop().await.unwrap();
}
