//! Issue 8 on the real environment: the `sealcred` binary seals Flyte's storage
//! credentials with the `flyte-core` profile, the controller materializes
//! `flyte-storage-creds` with the one key `storage.yaml` (a complete flytestdlib
//! `storage:` block), and a Deployment mounting it the way the flyte-core chart mounts
//! `storage.secretName` (a projected config volume at `/etc/flyte/config`) passes the
//! API server's validation. Then the rotation runbook (docs/rotation.md): a new access
//! key merged in with `sealcred seal --profile flyte-core --merge-into`, re-applied, the
//! Secret updated and the Deployment (annotated `sealcred.io/restart-on-change`) rolled.

mod controller_support;

use std::path::{Path, PathBuf};

use controller_support::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::{TestEnv, testenv};
use serde_json::{Value, json};

const SECRET: &str = "flyte-storage-creds";
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

/// flyteadmin as the flyte-core chart deploys it with `storage.secretName` set: the chart
/// projects its config maps and the named Secret into one volume mounted at
/// `/etc/flyte/config`, and starts `flyteadmin --config /etc/flyte/config/*.yaml serve`.
fn flyteadmin() -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "flyteadmin",
            "labels": { "app.kubernetes.io/name": "flyteadmin" },
            "annotations": { "sealcred.io/restart-on-change": SECRET },
        },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app.kubernetes.io/name": "flyteadmin" } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": "flyteadmin" } },
                "spec": {
                    "containers": [{
                        "name": "flyteadmin",
                        "image": "cr.flyte.org/flyteorg/flyteadmin:v1.15.0",
                        "command": ["flyteadmin", "--config", "/etc/flyte/config/*.yaml", "serve"],
                        "ports": [{ "containerPort": 8088 }, { "containerPort": 8089 }],
                        "volumeMounts": [
                            { "name": "shared-data", "mountPath": "/etc/flyte/shared" },
                            { "name": "config-volume", "mountPath": "/etc/flyte/config" },
                        ],
                    }],
                    "volumes": [
                        { "name": "shared-data", "emptyDir": {} },
                        { "name": "config-volume", "projected": { "sources": [
                            { "configMap": { "name": "flyte-admin-clusters-config" } },
                            { "configMap": { "name": "flyte-admin-base-config" } },
                            { "secret": { "name": SECRET } },
                        ] } },
                    ],
                },
            },
        },
    }))
    .expect("Deployment")
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

    // flyteadmin, mounting the Secret as flyte-core does: validated by the API server
    // (dry run), then created (no pods run: there is no kube-controller-manager).
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    deployments
        .create(&dry, &flyteadmin())
        .await
        .expect("the API server accepts the flyte-core style mount (dry run)");
    let created = deployments
        .create(&PostParams::default(), &flyteadmin())
        .await
        .expect("creating flyteadmin");
    assert_eq!(created.metadata.generation, Some(1));

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
    wait_for("flyteadmin rolled", CONVERGE, || async {
        let d = deployments.get("flyteadmin").await.ok()?;
        let rolled = d
            .spec
            .template
            .metadata?
            .annotations?
            .contains_key(RESTARTED_FOR);
        (rolled && d.metadata.generation == Some(2)).then_some(())
    })
    .await;
    assert_eq!(ctl.metrics().workload_restarts_total(), 1);
    ctl.stop().await.unwrap();
}
