//! Issue 8 on the real environment: the `sealcred` binary seals Flyte's storage
//! credentials with the `flyte-core` profile, the controller materializes
//! `flyte-storage-creds` with the one key `storage.yaml` (a complete flytestdlib
//! `storage:` block), and a Deployment mounting it the way the flyte-core chart mounts
//! `storage.secretName` (a projected config volume at `/etc/flyte/config`) passes the
//! API server's validation. Then the rotation runbook (docs/rotation.md): a new access
//! key merged in with `sealcred seal --profile flyte-core --merge-into`, re-applied, the
//! Secret updated, and flyteadmin, flytepropeller and datacatalog (Deployments shaped
//! like flyte-core's, annotated `sealcred.io/restart-on-change`) rolled for real on the
//! test cluster (kube-controller-manager, KWOK nodes): exactly once per change, none on
//! a re-apply.

mod controller_support;

use std::path::{Path, PathBuf};

use controller_support::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::{TestEnv, testenv};
use serde_json::{Value, json};

const SECRET: &str = "flyte-storage-creds";
const FLYTE_COMPONENTS: [&str; 3] = ["flyteadmin", "flytepropeller", "datacatalog"];
const RESTARTED_FOR: &str = "sealcred.io/restarted-for-flyte-storage-creds";

/// The `sealcred` binary of this build (`$CARGO_TARGET_DIR/debug/sealcred`): built by
/// `cargo test --workspace` (scripts/test), or by `cargo build -p sealcred`.
fn sealcred_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // .../debug/deps/controller_flyte-HASH → .../debug/sealcred
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let bin = dir.join(format!("sealcred{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} not found: this test runs the real CLI; build it first with `cargo build -p sealcred` \
         (same CARGO_TARGET_DIR), or run the whole workspace (`scripts/test`)",
        bin.display()
    );
    bin
}

/// Runs `sealcred ARGS` in `dir` with the test KMS environment and nothing else from ours.
async fn sealcred(env: &TestEnv, dir: &Path, args: &[&str]) {
    let out = tokio::process::Command::new(sealcred_bin())
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .envs(env.kms_env())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("running sealcred");
    assert!(
        out.status.success(),
        "sealcred {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_sealed(path: &Path) -> SealedStorageCred {
    let text = std::fs::read_to_string(path).expect("sealed file");
    serde_saphyr::from_str(&text).expect("a SealedStorageCred")
}

/// The flytestdlib storage block the flyte-core profile renders.
fn storage_block(access_key: &str, secret_key: &str) -> Value {
    json!({
        "storage": {
            "type": "s3",
            "container": "my-flyte-bucket",
            "connection": {
                "auth-type": "accesskey",
                "access-key": access_key,
                "secret-key": secret_key,
                "region": "us-east-1",
                "endpoint": "http://minio.flyte.svc:9000",
            },
            // The chart's defaults for the rest of storage.yaml, which this file replaces.
            "enable-multicontainer": false,
            "limits": { "maxDownloadMBs": 10 },
            "cache": { "max_size_mbs": 0, "target_gc_percent": 70 },
        }
    })
}

/// A flyte-core component as the chart deploys it with `storage.secretName` set: the
/// chart projects the component's config maps and the named Secret into one volume
/// mounted at `/etc/flyte/config`, and starts the binary with
/// `--config /etc/flyte/config/*.yaml` (flyteadmin: `serve`; flytepropeller: none;
/// datacatalog: `serve`).
fn flyte_component(name: &str, config_maps: &[&str], args: &[&str]) -> Deployment {
    let mut sources: Vec<Value> = config_maps
        .iter()
        .map(|c| json!({ "configMap": { "name": c } }))
        .collect();
    sources.push(json!({ "secret": { "name": SECRET } }));
    let mut command = vec![
        json!(name),
        json!("--config"),
        json!("/etc/flyte/config/*.yaml"),
    ];
    command.extend(args.iter().map(|a| json!(a)));
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": { "app.kubernetes.io/name": name },
            "annotations": { "sealcred.io/restart-on-change": SECRET },
        },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": name } },
                "spec": {
                    "containers": [{
                        "name": name,
                        "image": format!("cr.flyte.org/flyteorg/{name}:v1.15.0"),
                        "command": command,
                        "volumeMounts": [
                            { "name": "shared-data", "mountPath": "/etc/flyte/shared" },
                            { "name": "config-volume", "mountPath": "/etc/flyte/config" },
                        ],
                    }],
                    "volumes": [
                        { "name": "shared-data", "emptyDir": {} },
                        { "name": "config-volume", "projected": { "sources": sources } },
                    ],
                },
            },
        },
    }))
    .expect("Deployment")
}

fn flyteadmin() -> Deployment {
    flyte_component(
        "flyteadmin",
        &["flyte-admin-clusters-config", "flyte-admin-base-config"],
        &["serve"],
    )
}

/// The three flyte-core components that read `storage.secretName`.
fn flyte_components() -> [Deployment; 3] {
    [
        flyteadmin(),
        flyte_component("flytepropeller", &["flyte-propeller-config"], &[]),
        flyte_component("datacatalog", &["datacatalog-config"], &["serve"]),
    ]
}

/// Whether Deployment `name` has rolled exactly `rollouts` times (revision
/// `rollouts + 1`, that many + 1 ReplicaSets) and its one pod runs the newest template.
async fn rolled_exactly(
    client: &kube::Client,
    ns: &str,
    name: &str,
    rollouts: usize,
) -> Option<()> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    let revision = d
        .annotations()
        .get("deployment.kubernetes.io/revision")?
        .clone();
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={name}")))
        .await
        .ok()?
        .items;
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={name}")))
        .await
        .ok()?
        .items;
    let want = d
        .spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .clone()
        .unwrap_or_default();
    let status = d.status.clone()?;
    let done = revision == (rollouts + 1).to_string()
        && rs.len() == rollouts + 1
        && status.observed_generation == d.metadata.generation
        && status.updated_replicas == Some(1)
        && status.available_replicas == Some(1)
        && status.replicas == Some(1)
        && pods.len() == 1
        && pods.iter().all(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && want
                    .get(RESTARTED_FOR)
                    .is_none_or(|v| p.annotations().get(RESTARTED_FOR) == Some(v))
        });
    assert!(
        revision.parse::<usize>().ok()? <= rollouts + 1,
        "{name} rolled more than once per change"
    );
    done.then_some(())
}

async fn storage_yaml(client: &kube::Client, ns: &str) -> Option<Value> {
    let data = secret_data(client, ns, SECRET).await?;
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["storage.yaml"],
        "one key, storage.yaml"
    );
    Some(serde_saphyr::from_str(&data["storage.yaml"]).expect("storage.yaml is YAML"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flyte_core_profile_materializes_and_rotates() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("ctl-flyte").await;
    let ctl = start(env, &ns).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let sealed = dir.path().join("flyte-storage-creds.sealed.yaml");
    let sealed_s = sealed.to_str().unwrap();
    let old_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    std::fs::write(dir.path().join("secret_key"), format!("{old_secret}\n")).unwrap();

    sealcred(
        env,
        dir.path(),
        &[
            "seal",
            "--profile",
            "flyte-core",
            "--kms",
            env.key_arn(),
            "--name",
            SECRET,
            "-n",
            &ns,
            "--access-key-id",
            "AKIAIOSFODNN7EXAMPLE",
            "--secret-access-key-file",
            "secret_key",
            "--bucket",
            "my-flyte-bucket",
            "--region",
            "us-east-1",
            "--endpoint",
            "http://minio.flyte.svc:9000",
            "--output-file",
            sealed_s,
        ],
    )
    .await;
    let text = std::fs::read_to_string(&sealed).unwrap();
    assert!(
        !text.contains(old_secret),
        "no plaintext in the sealed file"
    );
    let obj = read_sealed(&sealed);
    assert_eq!(obj.spec.profile.as_deref(), Some("flyte-core"));
    apply(&client, &obj).await;
    wait_ready(&client, &ns, SECRET, "True", "Unsealed").await;
    assert_eq!(
        storage_yaml(&client, &ns).await.expect("the Secret"),
        storage_block("AKIAIOSFODNN7EXAMPLE", old_secret)
    );

    // flyteadmin, flytepropeller and datacatalog, mounting the Secret as flyte-core
    // does: created, and their pods run on the KWOK nodes.
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    for d in flyte_components() {
        let created = deployments
            .create(&PostParams::default(), &d)
            .await
            .expect("the API server accepts the flyte-core style mount");
        assert_eq!(created.metadata.generation, Some(1));
    }
    for name in FLYTE_COMPONENTS {
        wait_for(&format!("{name} running"), ROLLOUT, || {
            rolled_exactly(&client, &ns, name, 0)
        })
        .await;
    }

    // Rotation (docs/rotation.md): a new access key merged in, no decryption needed.
    let new_secret = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY";
    std::fs::write(dir.path().join("new_secret_key"), new_secret).unwrap();
    sealcred(
        env,
        dir.path(),
        &[
            "seal",
            "--profile",
            "flyte-core",
            "--merge-into",
            sealed_s,
            "--access-key-id",
            "AKIAI44QH8DHBEXAMPLE",
            "--secret-access-key-file",
            "new_secret_key",
            "--bucket",
            "my-flyte-bucket",
            "--region",
            "us-east-1",
            "--endpoint",
            "http://minio.flyte.svc:9000",
        ],
    )
    .await;
    let rotated = read_sealed(&sealed);
    apply(&client, &rotated).await;
    let want = storage_block("AKIAI44QH8DHBEXAMPLE", new_secret);
    wait_for("the rotated storage.yaml", CONVERGE, || async {
        (storage_yaml(&client, &ns).await.as_ref() == Some(&want)).then_some(())
    })
    .await;
    wait_ready(&client, &ns, SECRET, "True", "Unsealed").await;
    // Each component rolls exactly once, to a pod on the new template.
    for name in FLYTE_COMPONENTS {
        wait_for(&format!("{name} rolled once"), ROLLOUT, || {
            rolled_exactly(&client, &ns, name, 1)
        })
        .await;
    }
    assert_eq!(ctl.metrics().workload_restarts_total(), 3);

    // A second change: exactly one more rollout each; a re-apply of it: none.
    std::fs::write(
        dir.path().join("third_secret_key"),
        "x9Tm2oQe/Vd7Ls/K1pRwz8UyNaHcEXAMPLEKEY",
    )
    .unwrap();
    sealcred(
        env,
        dir.path(),
        &[
            "seal",
            "--profile",
            "flyte-core",
            "--merge-into",
            sealed_s,
            "--access-key-id",
            "AKIAJ7Q4EXAMPLE3RD00",
            "--secret-access-key-file",
            "third_secret_key",
            "--bucket",
            "my-flyte-bucket",
            "--region",
            "us-east-1",
            "--endpoint",
            "http://minio.flyte.svc:9000",
        ],
    )
    .await;
    let third = read_sealed(&sealed);
    apply(&client, &third).await;
    for name in FLYTE_COMPONENTS {
        wait_for(&format!("{name} rolled twice"), ROLLOUT, || {
            rolled_exactly(&client, &ns, name, 2)
        })
        .await;
    }
    apply(&client, &third).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for name in FLYTE_COMPONENTS {
        rolled_exactly(&client, &ns, name, 2)
            .await
            .expect("no rollout on a re-apply");
    }
    assert_eq!(ctl.metrics().workload_restarts_total(), 6);
    ctl.stop().await.unwrap();
}
