//! deploy/crd.yaml and the Helm chart's CRD are exactly what `sealcred-controller crd`
//! prints (regenerate with `cargo run -p sealcred-controller -- crd > deploy/crd.yaml`).

use std::path::Path;

use kube::CustomResourceExt;
use sealcred_shared::crd::SealedStorageCred;

fn generated() -> String {
    serde_saphyr::to_string(&SealedStorageCred::crd()).expect("CRD to YAML")
}

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn deploy_crd_yaml_is_in_sync() {
    assert!(
        read("deploy/crd.yaml") == generated(),
        "deploy/crd.yaml is stale: run `cargo run -p sealcred-controller -- crd > deploy/crd.yaml`"
    );
}

#[test]
fn helm_chart_crd_is_in_sync() {
    assert!(
        read("charts/sealcred/crds/sealedstoragecreds.yaml") == generated(),
        "charts/sealcred/crds/sealedstoragecreds.yaml is stale: copy deploy/crd.yaml"
    );
}

#[test]
fn deployment_is_locked_down() {
    let d = read("deploy/deployment.yaml");
    for needle in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "type: RuntimeDefault",
    ] {
        assert!(d.contains(needle), "deploy/deployment.yaml lacks {needle}");
    }
}
