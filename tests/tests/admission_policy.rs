//! A stolen controller token, confined (issue 13.2): deploy/ applied to the real API
//! server, then requests made **as the controller's identity**
//! (system:serviceaccount:sealcred-system:sealcred-controller, a TokenRequest token):
//! deploy/admission-policy.yaml denies every workload change but the restart annotation
//! and every Secret write but to Secrets the controller manages; the same RBAC without
//! the policy (another ServiceAccount) is not denied, so the denials are the policy's.
//! Then the controller itself runs with that identity, under the policy, and everything
//! it does still works: Secrets created and updated, an adopted Secret taken over, three
//! kinds of workloads rolled.

mod controller_support;

use std::time::Duration;

use controller_support::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sealcred_shared::crd::{ClusterSealedStorageCred, SealedStorageCred};
use sealcred_tests::install::{kubectl_apply, kustomize_deploy};
use sealcred_tests::testenv;
use serde_json::{Value, json};

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

async fn merge<K>(api: &Api<K>, name: &str, patch: Value) -> kube::Result<K>
where
    K: Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

fn denied<T: std::fmt::Debug>(what: &str, r: kube::Result<T>, message: &str) {
    let err = r.expect_err(&format!("{what}: must be denied"));
    let text = err.to_string();
    assert!(
        text.contains("ValidatingAdmissionPolicy") && text.contains(message),
        "{what}: denied, but not by the policy with \"{message}\": {text}"
    );
}

fn secret(name: &str, labels: Value, annotations: Value, owners: Value, type_: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels, "annotations": annotations, "ownerReferences": owners},
        "type": type_,
        "stringData": {"k": "v"},
    }))
    .unwrap()
}

fn owner(uid: &str) -> Value {
    json!([{
        "apiVersion": "sealcred.io/v1alpha1", "kind": "SealedStorageCred",
        "name": "x", "uid": uid, "controller": true
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_token_is_confined_by_the_admission_policy() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    kubectl_apply(&env.kubeconfig(), &kustomize_deploy(&[]), false)
        .unwrap_or_else(|e| panic!("kubectl apply -k deploy/: {e}"));
    let ctl = env
        .sa_client("sealcred-system", "sealcred-controller")
        .await;
    let ns = env.unique_namespace("vap").await;

    let post = PostParams::default();
    let deployments = Api::<Deployment>::namespaced(ctl.clone(), &ns);
    Api::<Deployment>::namespaced(admin.clone(), &ns)
        .create(&post, &workload("Deployment", "web", Some("app")))
        .await
        .unwrap();
    Api::<StatefulSet>::namespaced(admin.clone(), &ns)
        .create(&post, &workload("StatefulSet", "store", Some("app")))
        .await
        .unwrap();
    Api::<DaemonSet>::namespaced(admin.clone(), &ns)
        .create(&post, &workload("DaemonSet", "agent", Some("app")))
        .await
        .unwrap();
    let admin_secrets = Api::<Secret>::namespaced(admin.clone(), &ns);
    for s in [
        secret("foreign", json!({}), json!({}), json!([]), "Opaque"),
        secret(
            "adoptable",
            json!({}),
            json!({"sealcred.io/adopt": "true"}),
            json!([]),
            "Opaque",
        ),
    ] {
        admin_secrets.create(&post, &s).await.unwrap();
    }

    // The policy takes effect within a moment of being created.
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "evil:1"}]}}}});
    wait_for("the admission policy in force", CONVERGE, || async {
        match merge(&deployments, "web", image.clone()).await {
            Err(e) if e.to_string().contains("ValidatingAdmissionPolicy") => Some(()),
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => {
                // Not yet in force: put the image back and retry.
                merge(
                    &Api::<Deployment>::namespaced(admin.clone(), &ns),
                    "web",
                    json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]}}}}),
                )
                .await
                .unwrap();
                None
            }
        }
    })
    .await;

    // Workloads: a patch that changes a container image is denied, for every kind ...
    let pod_spec = "may not change a workload's pod spec";
    denied(
        "Deployment image",
        merge(&deployments, "web", image.clone()).await,
        pod_spec,
    );
    let sts = Api::<StatefulSet>::namespaced(ctl.clone(), &ns);
    let ds = Api::<DaemonSet>::namespaced(ctl.clone(), &ns);
    denied(
        "StatefulSet image",
        merge(&sts, "store", image.clone()).await,
        pod_spec,
    );
    denied(
        "DaemonSet image",
        merge(&ds, "agent", image.clone()).await,
        pod_spec,
    );
    // ... and so is anything else but the restart annotation.
    for (what, patch, message) in [
        (
            "serviceAccountName",
            json!({"spec": {"template": {"spec": {"serviceAccountName": "admin"}}}}),
            pod_spec,
        ),
        (
            "hostPath volume",
            json!({"spec": {"template": {"spec": {"volumes": [{"name": "creds", "hostPath": {"path": "/"}}]}}}}),
            pod_spec,
        ),
        (
            "replicas",
            json!({"spec": {"replicas": 50}}),
            "outside the pod template",
        ),
        (
            "pod-template label",
            json!({"spec": {"template": {"metadata": {"labels": {"app": "web", "x": "y"}}}}}),
            "pod-template labels",
        ),
        (
            "another pod-template annotation",
            json!({"spec": {"template": {"metadata": {"annotations": {"sidecar.istio.io/inject": "false"}}}}}),
            "only the pod-template annotations",
        ),
        (
            "restart annotation that is no digest",
            json!({"spec": {"template": {"metadata": {"annotations": {"sealcred.io/restarted-for-app": "x"}}}}}),
            "only the pod-template annotations",
        ),
        (
            "workload annotation",
            json!({"metadata": {"annotations": {"sealcred.io/restart-on-change": "other"}}}),
            "labels, annotations, ownerReferences or finalizers",
        ),
    ] {
        denied(what, merge(&deployments, "web", patch).await, message);
    }
    // A patch that changes the restart annotation is allowed.
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"sealcred.io/restarted-for-app": DIGEST}}}}});
    let d = merge(&deployments, "web", restart.clone())
        .await
        .expect("the restart annotation is the controller's to change");
    assert_eq!(
        d.spec.template.metadata.unwrap().annotations.unwrap()["sealcred.io/restarted-for-app"],
        DIGEST
    );
    merge(&sts, "store", restart.clone()).await.unwrap();
    merge(&ds, "agent", restart).await.unwrap();

    // Secrets: a write to a foreign Secret is denied, however it is made. The Secrets below
    // name SealedStorageCred `x` as their controller: it exists, or kube-controller-manager's
    // garbage collector would delete them (an owner that is not there) in mid-test.
    let x = seal_object(env, &ns, "x", template(&[]), &[("k", "x")]).await;
    apply(&admin, &x).await;
    let x_uid = Api::<SealedStorageCred>::namespaced(admin.clone(), &ns)
        .get("x")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let secrets = Api::<Secret>::namespaced(ctl.clone(), &ns);
    let managed = json!({"app.kubernetes.io/managed-by": "sealcred-controller"});
    denied(
        "edit of a foreign Secret",
        merge(&secrets, "foreign", json!({"stringData": {"k": "stolen"}})).await,
        "only Secrets labelled",
    );
    denied(
        "takeover of a foreign Secret (label + ownerReference added)",
        merge(
            &secrets,
            "foreign",
            json!({"metadata": {"labels": managed, "ownerReferences": owner(&x_uid)}, "stringData": {"k": "stolen"}}),
        )
        .await,
        "may update only Secrets it already controls",
    );
    denied(
        "new Secret without the label",
        secrets
            .create(
                &post,
                &secret("plain", json!({}), json!({}), owner(&x_uid), "Opaque"),
            )
            .await,
        "only Secrets labelled",
    );
    denied(
        "new Secret without an ownerReference",
        secrets
            .create(
                &post,
                &secret("orphan", managed.clone(), json!({}), json!([]), "Opaque"),
            )
            .await,
        "controlled by a SealedStorageCred",
    );
    denied(
        "new service-account token Secret",
        secrets
            .create(
                &post,
                &secret(
                    "token",
                    managed.clone(),
                    json!({"kubernetes.io/service-account.name": "default"}),
                    owner(&x_uid),
                    "kubernetes.io/service-account-token",
                ),
            )
            .await,
        "mints credentials",
    );
    // What the controller does is allowed: create a managed Secret, update it, adopt one.
    secrets
        .create(
            &post,
            &secret("ours", managed.clone(), json!({}), owner(&x_uid), "Opaque"),
        )
        .await
        .expect("a managed Secret may be created");
    merge(&secrets, "ours", json!({"stringData": {"k": "v2"}}))
        .await
        .expect("a managed Secret may be updated");
    denied(
        "moving a managed Secret to another owner",
        merge(
            &secrets,
            "ours",
            json!({"metadata": {"ownerReferences": owner("2222")}}),
        )
        .await,
        "for the same SealedStorageCred",
    );
    merge(
        &secrets,
        "adoptable",
        json!({"metadata": {"labels": managed, "ownerReferences": owner("3333")}}),
    )
    .await
    .expect("a Secret annotated sealcred.io/adopt may be taken over");

    // Deletes: only of a managed Secret controlled by a ClusterSealedStorageCred (its copy
    // in a namespace that stopped matching). The cluster object exists (garbage collector).
    let cluster = ClusterSealedStorageCred::from_sealed_view(
        SealedStorageCred::new(&sealcred_tests::unique_name("vap-cluster"), x.spec.clone()),
        vec![],
        None,
    );
    let cluster = Api::<ClusterSealedStorageCred>::all(admin.clone())
        .patch(
            &cluster.name_any(),
            &PatchParams::apply("sealcred-tests").force(),
            &Patch::Apply(&cluster),
        )
        .await
        .unwrap();
    let cluster_owner = json!([{
        "apiVersion": "sealcred.io/v1alpha1", "kind": "ClusterSealedStorageCred",
        "name": cluster.name_any(), "uid": cluster.uid().unwrap(), "controller": true
    }]);
    // Allowed. Retried for a moment: in an environment where an older version of the
    // policy was in force, the update applied above takes a moment to replace it.
    let copy = secret(
        "copy",
        managed.clone(),
        json!({}),
        cluster_owner.clone(),
        "Opaque",
    );
    wait_for(
        "a managed Secret controlled by a ClusterSealedStorageCred created",
        CONVERGE,
        || async {
            match secrets.create(&post, &copy).await {
                Ok(_) => Some(()),
                Err(e) if e.to_string().contains("ValidatingAdmissionPolicy") => None,
                Err(e) => panic!("creating a cluster copy: {e}"),
            }
        },
    )
    .await;
    admin_secrets
        .create(
            &post,
            &secret(
                "unmanaged-copy",
                json!({}),
                json!({}),
                cluster_owner,
                "Opaque",
            ),
        )
        .await
        .unwrap();
    let dp = kube::api::DeleteParams::default();
    let deletes_only = "deletes only Secrets it manages for a ClusterSealedStorageCred";
    denied(
        "delete of a foreign Secret",
        secrets.delete("foreign", &dp).await,
        deletes_only,
    );
    denied(
        "delete of a namespaced object's managed Secret",
        secrets.delete("ours", &dp).await,
        deletes_only,
    );
    denied(
        "delete of an unlabelled Secret controlled by a ClusterSealedStorageCred",
        secrets.delete("unmanaged-copy", &dp).await,
        deletes_only,
    );
    secrets
        .delete("copy", &dp)
        .await
        .expect("a ClusterSealedStorageCred's managed copy may be deleted");

    // The same RBAC through another ServiceAccount is not confined: the denials above
    // are the policy's, not RBAC's.
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "unconfined", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "sealcred-controller-restarts"},
        "subjects": [{"kind": "ServiceAccount", "name": "unconfined", "namespace": ns}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&post, &binding)
        .await
        .unwrap();
    let other = env.sa_client(&ns, "unconfined").await;
    merge(&Api::<Deployment>::namespaced(other, &ns), "web", image)
        .await
        .expect("without the policy the same grant changes the image");

    // The controller itself, with this identity and under the policy: everything works.
    let obj = seal_object(env, &ns, "app", template(&[]), &[("password", "pw")]).await;
    let adopt = seal_object(env, &ns, "adopt-me", template(&[]), &[("k", "adopted")]).await;
    admin_secrets
        .create(
            &post,
            &secret(
                "adopt-me",
                json!({}),
                json!({"sealcred.io/adopt": "true"}),
                json!([]),
                "Opaque",
            ),
        )
        .await
        .unwrap();
    let controller = start_with(env, ctl.clone(), default_args(env, &ns), env.kms_endpoint()).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // the workload caches' first list
    apply(&admin, &obj).await;
    apply(&admin, &adopt).await;
    wait_secret(&admin, &ns, "app", &[("password", "pw")]).await;
    wait_secret(&admin, &ns, "adopt-me", &[("k", "adopted")]).await;
    wait_ready(&admin, &ns, "app", "True", "Unsealed").await;
    let rolled = |want: String| {
        let admin = admin.clone();
        let ns = ns.clone();
        async move {
            let key = "sealcred.io/restarted-for-app";
            let get = |t: k8s_openapi::api::core::v1::PodTemplateSpec| {
                t.metadata
                    .and_then(|m| m.annotations)
                    .and_then(|a| a.get(key).cloned())
            };
            let d = Api::<Deployment>::namespaced(admin.clone(), &ns)
                .get("web")
                .await
                .ok()?;
            let s = Api::<StatefulSet>::namespaced(admin.clone(), &ns)
                .get("store")
                .await
                .ok()?;
            let a = Api::<DaemonSet>::namespaced(admin.clone(), &ns)
                .get("agent")
                .await
                .ok()?;
            [
                get(d.spec.template),
                get(s.spec.template),
                get(a.spec.template),
            ]
            .iter()
            .all(|v| v.as_deref().is_some_and(|v| v != want && v.len() == 64))
            .then_some(())
        }
    };
    wait_for(
        "the three workloads rolled under the policy",
        CONVERGE,
        || rolled(DIGEST.to_string()),
    )
    .await;
    // A new value: the Secret is updated and the workloads are rolled again.
    let first = Api::<Deployment>::namespaced(admin.clone(), &ns)
        .get("web")
        .await
        .unwrap()
        .spec
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap()["sealcred.io/restarted-for-app"]
        .clone();
    let merged = merge_into(env, &obj, &[("user", "app")]).await;
    apply(&admin, &merged).await;
    wait_secret(&admin, &ns, "app", &[("password", "pw"), ("user", "app")]).await;
    wait_for("the workloads rolled again", CONVERGE, || {
        rolled(first.clone())
    })
    .await;
    // The controller created the namespace's restart-digest key under the policy; the
    // token may not change it afterwards.
    admin_secrets
        .get("sealcred-restart-digest-key")
        .await
        .expect("the restart-digest key Secret");
    denied(
        "update of the restart-digest key",
        merge(
            &secrets,
            "sealcred-restart-digest-key",
            json!({"stringData": {"key": "chosen"}}),
        )
        .await,
        "only Secrets labelled",
    );
    controller.stop().await.unwrap();
}
