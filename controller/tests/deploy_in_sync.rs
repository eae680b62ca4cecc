//! deploy/crd.yaml and the Helm chart's CRD are exactly what `sealcred-controller crd`
//! prints (regenerate with `cargo run -p sealcred-controller -- crd > deploy/crd.yaml`).

use std::path::Path;

fn generated() -> String {
    sealcred_controller::crds_yaml().expect("CRDs to YAML")
}

fn document(i: usize) -> String {
    sealcred_controller::crd_documents().expect("CRDs to YAML")[i].clone()
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
        read("charts/sealcred/crds/sealedstoragecreds.yaml") == document(0),
        "charts/sealcred/crds/sealedstoragecreds.yaml is stale: copy the first document of deploy/crd.yaml"
    );
    assert!(
        read("charts/sealcred/crds/clustersealedstoragecreds.yaml") == document(1),
        "charts/sealcred/crds/clustersealedstoragecreds.yaml is stale: copy the second document of deploy/crd.yaml"
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
