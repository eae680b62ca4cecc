//! `sealcred diff` (issue 17.4) against the real API server, with the
//! controller materializing the Secret: same, different, missing and extra
//! entries, the object's Ready condition and its consumers (a Deployment rolled on
//! KWOK nodes), exit codes 0/1/2, and never a value.

mod controller_support;

use std::path::{Path, PathBuf};
use std::process::Output;

use controller_support::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::{TestEnv, testenv};
use serde_json::json;

const CANARY: &str = "CANARY-diff-4a90";

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
        .envs(env.kms_env())
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn no_canary(o: &Output) {
    assert!(
        !text(&o.stdout).contains(CANARY) && !text(&o.stderr).contains(CANARY),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_against_the_live_cluster() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("cli-diff").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = run(
        env,
        d,
        &[
            "seal",
            "--kms",
            env.key_arn(),
            "--name",
            "creds",
            "-n",
            &ns,
            "--from-literal",
            "a=1",
            "--from-literal",
            &format!("b={CANARY}"),
            "--output-file",
            "s.yaml",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));

    // Not applied yet.
    let o = run(env, d, &["diff", "s.yaml"]);
    no_canary(&o);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("SealedStorageCred {ns}/creds: not in the cluster")),
        "{out}"
    );
    assert!(
        out.contains("  missing    a\n") && out.contains("  missing    b\n"),
        "{out}"
    );

    // Applied and materialized: the same.
    let obj: SealedStorageCred =
        serde_saphyr::from_str(&std::fs::read_to_string(d.join("s.yaml")).unwrap()).unwrap();
    // A consumer annotated for restart (rolled by the first write, on KWOK nodes).
    let mut web: Deployment = workload_mounting("Deployment", "web", "creds", Some("creds"));
    web.spec.replicas = Some(2);
    create(&client, &ns, &web).await;
    let ctl = start(env, &ns).await;
    apply(&client, &obj).await;
    wait_secret(&client, &ns, "creds", &[("a", "1"), ("b", CANARY)]).await;
    wait_ready(&client, &ns, "creds", "True", "Unsealed").await;
    wait_for("the consumer updated", ROLLOUT, || async {
        consumers(&client, &ns, "creds")
            .await
            .filter(|c| c.0 == "1/1" && c.1 == "True")
    })
    .await;
    let o = run(env, d, &["diff", "s.yaml"]);
    no_canary(&o);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(
        out.contains("the same as this file; Ready=True (Unsealed)"),
        "{out}"
    );
    assert!(
        out.contains(
            "Consumers: 1/1 updated; ConsumersUpdated=True (RolloutComplete)\n  \
             Updated    Deployment/web (2/2 updated, 2 ready)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("  same       a\n") && out.contains("  same       b\n"),
        "{out}"
    );
    ctl.stop().await.unwrap();

    // Edited in the cluster (the controller is stopped, so it is not repaired).
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"b": "other", "c": "x"}})),
        )
        .await
        .unwrap();
    let o = run(env, d, &["diff", "s.yaml"]);
    no_canary(&o);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    for line in ["  same       a\n", "  different  b\n", "  extra      c\n"] {
        assert!(out.contains(line), "{line:?} in {out}");
    }

    // A local change not applied yet.
    let o = run(
        env,
        d,
        &["seal", "--merge-into", "s.yaml", "--from-literal", "d=4"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run(env, d, &["diff", "s.yaml"]);
    let out = text(&o.stdout);
    assert!(
        out.contains("differs from this file (not applied yet"),
        "{out}"
    );
    assert!(out.contains("  missing    d\n"), "{out}");

    // An unreachable cluster is an error: exit 2, one line, no value.
    std::fs::write(
        d.join("kubeconfig"),
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:9'}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user: {token: t}\n",
    )
    .unwrap();
    let o = std::process::Command::new(sealcred_bin())
        .current_dir(d)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", d)
        .env("KUBECONFIG", d.join("kubeconfig"))
        .envs(env.kms_env())
        .args(["diff", "s.yaml"])
        .output()
        .unwrap();
    no_canary(&o);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).starts_with("error: "),
        "{}",
        text(&o.stderr)
    );
}
