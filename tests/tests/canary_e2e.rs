//! Canary values through the whole controller flow, on the real test
//! environment, including failure paths: the real `sealcred-controller` binary
//! runs with `RUST_LOG=trace`; afterwards the canary (and its base64) must not
//! appear in its log output, in any Event, in any status, or in /metrics.
//!
//! Needs the debug controller binary, which `cargo test --workspace` builds
//! (or `cargo build -p sealcred-controller`).

mod controller_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use controller_support::*;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::testenv;

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test]
async fn canary_never_leaves_the_secret() {
    let env = testenv().await;
    let client = env.kube_client().await;
    env.install_sealcred_crd().await;
    let ns = env.unique_namespace("canary").await;
    let other = env.unique_namespace("canary-moved").await;
    let canary = format!("CANARY-e2e-{}", std::process::id());
    let canary_b64 = base64::engine::general_purpose::STANDARD.encode(&canary);

    // A good object, a tampered one, one copied into another namespace, and one
    // whose Secret name is taken by a Secret we do not own.
    let mut good = seal_object(env, &ns, "good", template(&[]), &[("secret_key", &canary)]).await;
    let mut tampered = seal_object(
        env,
        &ns,
        "tampered",
        template(&[]),
        &[("secret_key", &canary)],
    )
    .await;
    let e = tampered.spec.entries.get_mut("secret_key").unwrap();
    let mut ct = base64::engine::general_purpose::STANDARD
        .decode(&e.ciphertext)
        .unwrap();
    ct[0] ^= 1;
    e.ciphertext = base64::engine::general_purpose::STANDARD.encode(&ct);
    let mut moved = good.clone();
    moved.metadata.namespace = Some(other.clone());
    let mut conflict =
        seal_object(env, &ns, "taken", template(&[]), &[("secret_key", &canary)]).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut foreign = Secret::default();
    foreign.metadata.name = Some("taken".into());
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    // Only this test's objects: the shared API server may hold many others.
    let run = format!("sealcred-canary-run={}", ns);
    for o in [&mut good, &mut tampered, &mut moved, &mut conflict] {
        o.metadata.labels = Some([("sealcred-canary-run".to_string(), ns.clone())].into());
        apply(&client, o).await;
    }

    // Kept after the run (target/testenv/) to read when the test fails.
    let log_path = sealcred_tests::repo_root().join(format!("target/testenv/canary-{ns}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = KillOnDrop(
        Command::new(controller_bin())
            .args([
                "--kms-allow",
                env.key_arn(),
                "--leader-elect=false",
                "--selector",
                &run,
                &format!("--metrics-addr=127.0.0.1:{port}"),
            ])
            .envs(env.all_env())
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    wait_ready(&client, &ns, "good", "True", "Unsealed").await;
    wait_ready(&client, &ns, "tampered", "False", "DecryptFailed").await;
    wait_ready(&client, &other, "good", "False", "DecryptFailed").await;
    wait_ready(&client, &ns, "taken", "False", "SecretConflict").await;
    // The value did reach the Secret (so the canary was really decrypted).
    wait_secret(&client, &ns, "good", &[("secret_key", &canary)]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let metrics = scrape(port);
    assert!(metrics.contains("sealcred_"), "no metrics scraped");
    let _ = child.0.kill();
    let _ = child.0.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.len() > 1000,
        "expected trace output, got {} bytes",
        logs.len()
    );

    let mut seen = vec![("controller logs (trace)", logs), ("/metrics", metrics)];
    for n in [&ns, &other] {
        let events: Api<Event> = Api::namespaced(client.clone(), n);
        let list = events.list(&ListParams::default()).await.unwrap();
        assert!(!list.items.is_empty(), "no events in {n}");
        seen.push(("events", serde_json::to_string(&list.items).unwrap()));
        let objs: Api<SealedStorageCred> = Api::namespaced(client.clone(), n);
        let list = objs.list(&ListParams::default()).await.unwrap();
        let status: Vec<_> = list.items.iter().map(|o| o.status.clone()).collect();
        seen.push(("status", serde_json::to_string(&status).unwrap()));
    }
    for (what, text) in &seen {
        assert!(!text.contains(&canary), "canary found in {what}");
        assert!(
            !text.contains(&canary_b64),
            "canary (base64) found in {what}"
        );
    }
}
