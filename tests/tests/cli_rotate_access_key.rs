//! Issue 16.2: `sealcred rotate-access-key start|finish` against moto IAM and the
//! test cluster: a new key merged into the file, the old one deleted only once the
//! controller runs the new Secret and every consumer is rolled onto it (a real
//! rollout on KWOK nodes); each step idempotent; two keys refused; no value printed.

mod controller_support;

use std::path::{Path, PathBuf};
use std::process::Output;

use aws_sdk_iam::types::StatusType;
use controller_support::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::{TestEnv, testenv, unique_name};

fn sealcred_bin() -> PathBuf {
    let p = controller_bin().with_file_name("sealcred");
    assert!(
        p.exists(),
        "{} missing: cargo build -p sealcred",
        p.display()
    );
    p
}

fn run(env: &TestEnv, dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(sealcred_bin())
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("KUBECONFIG", env.kubeconfig())
        .env("AWS_ENDPOINT_URL_IAM", env.kms_endpoint())
        .envs(env.kms_env())
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn iam(env: &TestEnv) -> aws_sdk_iam::Client {
    use aws_sdk_iam::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_iam::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(env.kms_endpoint())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "t"))
        .build();
    aws_sdk_iam::Client::from_conf(conf)
}

async fn keys(iam: &aws_sdk_iam::Client, user: &str) -> Vec<(String, bool)> {
    iam.list_access_keys()
        .user_name(user)
        .send()
        .await
        .unwrap()
        .access_key_metadata
        .into_iter()
        .map(|m| {
            (
                m.access_key_id.unwrap(),
                m.status == Some(StatusType::Active),
            )
        })
        .collect()
}

fn read_obj(path: &Path) -> SealedStorageCred {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_access_key_start_then_finish() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("rotate-key").await;
    let dir = tempfile::tempdir().unwrap();
    let iam = iam(env);
    let user = unique_name("storage-user");
    iam.create_user().user_name(&user).send().await.unwrap();
    let k1 = iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    let file = dir.path().join("creds.yaml");
    let f = file.to_str().unwrap();
    let o = run(
        env,
        dir.path(),
        &[
            "seal",
            "--name",
            "creds",
            "-n",
            &ns,
            "--kms",
            env.key_arn(),
            "--from-literal",
            &format!("AWS_ACCESS_KEY_ID={}", k1.access_key_id),
            "--from-literal",
            &format!("AWS_SECRET_ACCESS_KEY={}", k1.secret_access_key),
            "--output-file",
            f,
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let start = [
        "rotate-access-key",
        "start",
        f,
        "--user",
        &user,
        "-n",
        &ns,
        "--name",
        "creds",
        "--kms",
        env.key_arn(),
    ];
    let mut outputs = Vec::new();

    // Two keys already: refused, nothing written, nothing created.
    let k2 = iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    let before = std::fs::read(&file).unwrap();
    let before_obj = read_obj(&file);
    let o = run(env, dir.path(), &start);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("already has 2 access keys"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(keys(&iam, &user).await.len(), 2);
    outputs.push(o);
    iam.delete_access_key()
        .user_name(&user)
        .access_key_id(&k2.access_key_id)
        .send()
        .await
        .unwrap();

    // start: a new key, merged in; the state in the annotations.
    let o = run(env, dir.path(), &start);
    assert!(o.status.success(), "{}", text(&o.stderr));
    outputs.push(o);
    let obj = read_obj(&file);
    let ann = obj.metadata.annotations.clone().unwrap();
    assert_eq!(ann["sealcred.io/access-key-rotation"], "started");
    assert_eq!(ann["sealcred.io/access-key-user"], user);
    assert_eq!(ann["sealcred.io/access-key-old-id"], k1.access_key_id);
    let new = ann["sealcred.io/access-key-new-id"].clone();
    let now = keys(&iam, &user).await;
    assert_eq!(now.len(), 2);
    assert!(
        now.iter().all(|(_, active)| *active),
        "both keys active until finish"
    );
    // A merge replacing both entries: one new data key (the old one held nothing else).
    assert_eq!(obj.spec.data_keys.len(), 1);
    assert!(
        !before_obj
            .spec
            .data_keys
            .iter()
            .any(|d| d.id == obj.spec.data_keys[0].id)
    );
    assert_eq!(
        obj.spec.data_keys[0].supersedes,
        [before_obj.spec.data_keys[0].id.clone()]
    );

    // start again: nothing changes.
    let written = std::fs::read(&file).unwrap();
    let o = run(env, dir.path(), &start);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("already started"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(std::fs::read(&file).unwrap(), written);
    assert_eq!(keys(&iam, &user).await.len(), 2);
    outputs.push(o);

    // finish before the file is applied: refused, the old key stays active.
    let finish = ["rotate-access-key", "finish", f];
    let o = run(env, dir.path(), &finish);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("not in the cluster"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        keys(&iam, &user)
            .await
            .contains(&(k1.access_key_id.clone(), true))
    );
    outputs.push(o);

    // Applied, but no controller yet: still refused (no Ready=True).
    apply(&client, &obj).await;
    let o = run(env, dir.path(), &finish);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("not finishing"),
        "{}",
        text(&o.stderr)
    );
    outputs.push(o);

    // A consumer of the Secret, rolled on change, whose new pods cannot start yet
    // (a node selector no node matches).
    let mut web: Deployment = workload_mounting("Deployment", "web", "creds", Some("creds"));
    web.spec.replicas = Some(2);
    web.spec.template.spec.as_mut().unwrap().node_selector =
        Some([("sealcred.test/pool".to_string(), "none".to_string())].into());
    create(&client, &ns, &web).await;

    // The controller runs the new Secret, but the consumer still rolls: refused.
    let ctl = controller_support::start(env, &ns).await;
    wait_ready(&client, &ns, "creds", "True", "Unsealed").await;
    let data = secret_data(&client, &ns, "creds").await.unwrap();
    assert_eq!(data["AWS_ACCESS_KEY_ID"], new);
    let new_secret = data["AWS_SECRET_ACCESS_KEY"].clone();
    let (summary, cond, _) = wait_for("the consumer reported rolling", CONVERGE, || async {
        consumers(&client, &ns, "creds")
            .await
            .filter(|c| c.2.get("Deployment/web").map(String::as_str) == Some("Rolling"))
    })
    .await;
    assert_eq!((summary.as_str(), cond.as_str()), ("0/1", "False"));
    let o = run(env, dir.path(), &finish);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("consumers are not all updated"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(
        keys(&iam, &user).await.len(),
        2,
        "both keys kept while a consumer rolls"
    );
    outputs.push(o);

    // The pods can run: the rollout completes, and finish deactivates and deletes
    // the old key.
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": { "template": { "spec": { "nodeSelector": null } } }
            })),
        )
        .await
        .unwrap();
    let digest = secret_digest(&client, &ns, "creds").await;
    wait_for(
        "the consumer's pods on the new credential",
        ROLLOUT,
        || async { rolled(&client, &ns, "web", 2, "creds", &digest).await },
    )
    .await;
    wait_for("the consumers updated", CONVERGE, || async {
        consumers(&client, &ns, "creds")
            .await
            .filter(|c| c.0 == "1/1" && c.1 == "True")
    })
    .await;
    let o = run(env, dir.path(), &finish);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains(&format!("deleted access key {}", k1.access_key_id)));
    outputs.push(o);
    assert_eq!(keys(&iam, &user).await, [(new.clone(), true)]);
    let done = read_obj(&file);
    assert_eq!(
        done.metadata.annotations.unwrap()["sealcred.io/access-key-rotation"],
        "finished"
    );
    assert_eq!(done.spec, obj.spec, "finish changes only the annotations");

    // finish again: already done.
    let o = run(env, dir.path(), &finish);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("already finished"),
        "{}",
        text(&o.stderr)
    );
    outputs.push(o);

    // No secret access key (old or new) in anything the command printed.
    for o in &outputs {
        let all = text(&o.stdout) + &text(&o.stderr);
        assert!(
            !all.contains(&new_secret) && !all.contains(&k1.secret_access_key),
            "{all}"
        );
    }
    ctl.stop().await.unwrap();
}
