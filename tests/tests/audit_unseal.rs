//! Issue 16.3: each unseal by the controller writes one structured audit line
//! (target `sealcred::audit`) naming the object, the KMS key, the
//! EncryptionContext, the result and the KMS request id, and never a value.
//!
//! The real `sealcred-controller` binary runs with `RUST_LOG=warn` (the audit
//! target stays on unless named) and its JSON log is read back. Needs the debug
//! controller binary (`cargo build -p sealcred-controller`).

mod controller_support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use controller_support::*;
use kube::api::Api;
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::testenv;

fn audit_lines(logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "sealcred::audit")
        .collect()
}

#[tokio::test]
async fn each_unseal_writes_one_audit_line_without_values() {
    let env = testenv().await;
    let client = env.kube_client().await;
    env.install_sealcred_crd().await;
    let ns = env.unique_namespace("audit").await;
    let canary = format!("CANARY-audit-{}", std::process::id());
    let canary_b64 = base64::engine::general_purpose::STANDARD.encode(&canary);

    let good = seal_object(env, &ns, "good", template(&[]), &[("secret_key", &canary)]).await;
    let mut tampered = seal_object(env, &ns, "bad", template(&[]), &[("k", &canary)]).await;
    let w = &mut tampered.spec.data_keys[0].wrappings[0];
    let mut ct = base64::engine::general_purpose::STANDARD
        .decode(&w.ciphertext)
        .unwrap();
    let last = ct.len() - 1;
    ct[last] ^= 1;
    w.ciphertext = base64::engine::general_purpose::STANDARD.encode(&ct);
    apply(&client, &good).await;
    apply(&client, &tampered).await;

    let log_path = sealcred_tests::repo_root().join(format!("target/testenv/audit-{ns}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = KillOnDrop(
        Command::new(controller_bin())
            .args([
                "--kms-allow",
                env.key_arn(),
                "--leader-elect=false",
                "--namespace",
                &ns,
                "--metrics-addr=off",
            ])
            .envs(env.all_env())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_ready(&client, &ns, "good", "True", "Unsealed").await;
    wait_secret(&client, &ns, "good", &[("secret_key", &canary)]).await;
    wait_ready(&client, &ns, "bad", "False", "DecryptFailed").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = child.0.kill();
    let _ = child.0.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(!logs.contains(&canary), "canary in the controller's log");
    assert!(!logs.contains(&canary_b64), "canary (base64) in the log");

    let objs: Api<SealedStorageCred> = Api::namespaced(client.clone(), &ns);
    let lines = audit_lines(&logs);
    let of = |name: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["fields"]["name"] == name)
            .collect()
    };

    // The good object: unsealed once (the Secret is then up to date), one line.
    let good_live = objs.get("good").await.unwrap();
    let good_lines = of("good");
    assert_eq!(good_lines.len(), 1, "one unseal, one line: {good_lines:?}");
    let f = &good_lines[0]["fields"];
    assert_eq!(good_lines[0]["level"], "INFO");
    assert_eq!(f["audit"], "unseal");
    assert_eq!(f["namespace"], ns.as_str());
    assert_eq!(f["uid"], good_live.metadata.uid.as_deref().unwrap());
    assert_eq!(f["result"], "ok");
    assert_eq!(f["kms_key_arn"], env.key_arn());
    assert_eq!(f["kms_results"], "ok");
    assert_eq!(f["kms_calls"], 1);
    let rid = f["kms_request_id"].as_str().unwrap();
    assert!(
        !rid.is_empty() && !rid.contains(','),
        "one KMS request id: {f}"
    );
    let ctx: BTreeMap<String, String> =
        serde_json::from_str(f["encryption_context"].as_str().unwrap()).unwrap();
    assert_eq!(
        ctx,
        BTreeMap::from([
            ("sealcred.io/name".to_string(), "good".to_string()),
            ("sealcred.io/namespace".to_string(), ns.clone()),
            ("sealcred.io/scope".to_string(), "strict".to_string()),
        ])
    );

    // The tampered wrapping: KMS refuses it; the failure is audited with its own request id.
    let bad_lines = of("bad");
    assert!(!bad_lines.is_empty(), "a failed unseal is audited too");
    for l in &bad_lines {
        let f = &l["fields"];
        assert_eq!(f["result"], "DecryptFailed", "{f}");
        assert_eq!(f["kms_results"], "invalid-ciphertext", "{f}");
        assert_eq!(f["kms_key_arn"], env.key_arn());
        assert!(!f["kms_request_id"].as_str().unwrap().is_empty(), "{f}");
        assert_ne!(f["kms_request_id"], rid, "each call has its own id");
    }
}
