//! Scenario 7 of issue 7: the controller running as a ServiceAccount bound only to the
//! shipped RBAC (deploy/rbac.yaml) unseals an object (scenario 1), with leader election.

mod controller_support;

use controller_support::*;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams};
use sealcred_tests::{testenv, unique_name};
use serde_json::Value;

/// The YAML documents of deploy/rbac.yaml, as JSON values.
fn shipped_rbac() -> Vec<Value> {
    let text = std::fs::read_to_string(sealcred_tests::repo_root().join("deploy/rbac.yaml"))
        .expect("deploy/rbac.yaml");
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).expect("YAML document"))
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/rbac.yaml"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_only_the_shipped_rbac() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("ctl-rbac").await;
    let sa = "sealcred-controller";
    let docs = shipped_rbac();
    let pp = PatchParams::apply("sealcred-tests").force();

    // The shipped ClusterRoles as they are (the core one, the restarts one and the
    // ClusterSealedStorageCred one); each binding (unique name) to this test's
    // ServiceAccount.
    let roles: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ClusterRole").collect();
    assert_eq!(
        roles.len(),
        3,
        "deploy/rbac.yaml: the core, the restarts and the cluster ClusterRole"
    );
    for doc in docs.iter().filter(|d| d["kind"] == "ClusterRole") {
        let role: ClusterRole = serde_json::from_value(doc.clone()).unwrap();
        let role_name = role.metadata.name.clone().unwrap();
        Api::<ClusterRole>::all(admin.clone())
            .patch(&role_name, &pp, &Patch::Apply(&role))
            .await
            .unwrap();
    }
    for doc in docs.iter().filter(|d| d["kind"] == "ClusterRoleBinding") {
        let mut binding: ClusterRoleBinding = serde_json::from_value(doc.clone()).unwrap();
        let binding_name = unique_name(binding.metadata.name.as_deref().unwrap());
        binding.metadata.name = Some(binding_name.clone());
        for s in binding.subjects.iter_mut().flatten() {
            s.namespace = Some(ns.clone());
        }
        Api::<ClusterRoleBinding>::all(admin.clone())
            .patch(&binding_name, &pp, &Patch::Apply(&binding))
            .await
            .unwrap();
    }
    // The leader-election Role and RoleBinding, moved into this test's namespace.
    let mut lrole: Role = serde_json::from_value(find(&docs, "Role").clone()).unwrap();
    lrole.metadata.namespace = Some(ns.clone());
    let lrole_name = lrole.metadata.name.clone().unwrap();
    Api::<Role>::namespaced(admin.clone(), &ns)
        .patch(&lrole_name, &pp, &Patch::Apply(&lrole))
        .await
        .unwrap();
    let mut lbinding: RoleBinding =
        serde_json::from_value(find(&docs, "RoleBinding").clone()).unwrap();
    lbinding.metadata.namespace = Some(ns.clone());
    for s in lbinding.subjects.iter_mut().flatten() {
        s.namespace = Some(ns.clone());
    }
    let lbinding_name = lbinding.metadata.name.clone().unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .patch(&lbinding_name, &pp, &Patch::Apply(&lbinding))
        .await
        .unwrap();

    let sa_client = env.sa_client(&ns, sa).await;
    // Events are published with the ServiceAccount's rights.
    let (ctl, _obj) = main_scenario_as(env, &admin, sa_client, &ns).await;
    ctl.stop().await.unwrap();
}
