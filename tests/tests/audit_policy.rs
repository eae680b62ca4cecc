//! Issue 16.3: deploy/audit/policy.yaml records every get/list/watch of a Secret at
//! Metadata level: the reader and the Secret, never its data.
//!
//! A private kube-apiserver (tests/src/apiserver.rs) runs with the shipped policy
//! and a log file; a ServiceAccount with a TokenRequest token reads a Secret
//! holding a canary (get, list, watch) and the audit log must show each read with
//! that user, at Metadata level, and the canary nowhere.

use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use sealcred_tests::TestEnv;
use sealcred_tests::apiserver::PrivateApiServer;

fn events(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_reads_are_audited_at_metadata_level() {
    let root = tokio::task::spawn_blocking(|| TestEnv::get().root().to_path_buf())
        .await
        .unwrap();
    let policy = root.join("deploy/audit/policy.yaml");
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("audit.log");
    let server = PrivateApiServer::start(&[
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", log_path.display()),
        "--audit-log-format=json".into(),
        "--audit-log-mode=blocking".into(),
    ])
    .await;
    let admin = server.admin_client().await;
    let ns = "team";
    let reader = server.sa_client(ns, "reader").await;

    let canary = format!("CANARY-audit-policy-{}", std::process::id());
    let canary_b64 = base64::engine::general_purpose::STANDARD.encode(&canary);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    let mut s = Secret::default();
    s.metadata.name = Some("storage-creds".into());
    s.data = Some(
        [(
            "secret_key".to_string(),
            ByteString(canary.clone().into_bytes()),
        )]
        .into(),
    );
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "read-secrets"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "read-secrets"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secrets"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    // The reads, as the ServiceAccount (RBAC may take a moment to see the binding).
    let as_reader: Api<Secret> = Api::namespaced(reader, ns);
    let mut got = None;
    for _ in 0..50 {
        if let Ok(s) = as_reader.get("storage-creds").await {
            got = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = got.expect("the ServiceAccount reads the Secret");
    assert_eq!(got.data.unwrap()["secret_key"].0, canary.as_bytes());
    as_reader.list(&ListParams::default()).await.unwrap();
    let wp = WatchParams::default().timeout(1);
    let mut stream = as_reader.watch(&wp, "0").await.unwrap().boxed();
    let mut watched = false;
    while let Some(ev) = stream.next().await {
        if let Ok(WatchEvent::Added(_)) = ev {
            watched = true;
        }
    }
    assert!(watched, "the watch delivered the Secret");
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(server);

    let log = std::fs::read_to_string(&log_path).expect("audit log written");
    assert!(!log.contains(&canary), "canary in the audit log");
    assert!(
        !log.contains(&canary_b64),
        "canary (base64) in the audit log"
    );
    let user = format!("system:serviceaccount:{ns}:reader");
    let all = events(&log);
    let reads: Vec<&serde_json::Value> = all
        .iter()
        .filter(|e| {
            e["user"]["username"] == user.as_str() && e["objectRef"]["resource"] == "secrets"
        })
        .collect();
    for verb in ["get", "list", "watch"] {
        let e = reads
            .iter()
            .find(|e| e["verb"] == verb)
            .unwrap_or_else(|| panic!("no audited {verb} by {user}: {reads:?}"));
        assert_eq!(e["level"], "Metadata", "{e}");
        assert_eq!(e["objectRef"]["namespace"], ns, "{e}");
        assert!(
            e.get("requestObject").is_none() && e.get("responseObject").is_none(),
            "{e}"
        );
        if verb == "get" {
            assert_eq!(e["objectRef"]["name"], "storage-creds", "{e}");
            assert_eq!(e["responseStatus"]["code"], 200, "{e}");
        }
    }
    // The admin's create of the Secret is audited too, without its body.
    let create = all
        .iter()
        .find(|e| e["verb"] == "create" && e["objectRef"]["resource"] == "secrets")
        .expect("the Secret's create is audited");
    assert_eq!(create["level"], "Metadata");
    // And no event anywhere holds a body.
    assert!(
        all.iter()
            .all(|e| e.get("requestObject").is_none() && e.get("responseObject").is_none()),
        "a Request/RequestResponse event in the log"
    );
}
