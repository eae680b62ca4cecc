//! Issue 16.1: short-lived STS credentials (`spec.sts`) against moto's STS.
//!
//! The controller's STS calls go through a switchable proxy in front of the
//! shared moto (`--sts-endpoint`), so an STS outage can be simulated while KMS
//! (the same moto, direct) stays up. `--sts-min-refresh=1` and a small
//! `refreshAt` make the refresh happen within seconds of a 900 s lifetime. A
//! Deployment annotated for restart is rolled onto the refreshed credentials.

mod controller_support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use controller_support::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use sealcred_controller::restart::restarted_for_key;
use sealcred_shared::crd::{SealedStorageCred, StsSpec};
use sealcred_tests::moto::{AccessKey, MotoOptions, PrivateMoto};
use sealcred_tests::{Proxy, testenv};

const ROLE: &str = "arn:aws:iam::123456789012:role/sealcred/storage";

fn sts_args(env: &sealcred_tests::TestEnv, ns: &str, sts: &str) -> Vec<String> {
    let mut args = default_args(env, ns);
    args.extend([
        "--sts-role-allow=arn:aws:iam::123456789012:role/sealcred/*".to_string(),
        format!("--sts-endpoint={sts}"),
        "--sts-min-refresh=1".to_string(),
    ]);
    args
}

async fn status_credentials(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Option<sealcred_shared::crd::CredentialsStatus> {
    Api::<SealedStorageCred>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?
        .status?
        .credentials
}

async fn ready_message(client: &kube::Client, ns: &str, name: &str) -> String {
    let o = Api::<SealedStorageCred>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    o.status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message
}

fn seconds(a: &str, b: &str) -> i64 {
    let a: jiff::Timestamp = a.parse().unwrap();
    let b: jiff::Timestamp = b.parse().unwrap();
    b.duration_since(a).as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_credentials_expire_refresh_and_survive_an_outage() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("ctl-sts").await;
    let target: SocketAddr = env
        .kms_endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("moto address");
    let proxy = Proxy::start(target).await;
    let ctl = start_with(
        env,
        client.clone(),
        sts_args(env, &ns, &proxy.url),
        env.kms_endpoint(),
    )
    .await;

    // The long-lived key (canaries) is sealed; the Secret gets temporary credentials.
    let canary_id = format!("AKIACANARY{}", std::process::id());
    let canary_secret = format!("CANARY-sts-secret-{}", std::process::id());
    let mut obj = seal_object(
        env,
        &ns,
        "storage",
        template(&[]),
        &[
            ("aws_access_key_id", &canary_id),
            ("aws_secret_access_key", &canary_secret),
        ],
    )
    .await;
    obj.spec.sts = Some(StsSpec {
        role_arn: Some(ROLE.into()),
        duration_seconds: Some(900),
        refresh_at: Some(0.004), // 3.6 s of 900 s
        region: Some("us-east-1".into()),
        ..StsSpec::default()
    });
    // A consumer, rolled on each change of the Secret.
    create(
        &client,
        &ns,
        &workload_mounting::<Deployment>("Deployment", "web", "storage", Some("storage")),
    )
    .await;
    apply(&client, &obj).await;
    wait_ready(&client, &ns, "storage", "True", "Unsealed").await;
    let first = secret_data(&client, &ns, "storage").await.unwrap();
    let first_digest = secret_digest(&client, &ns, "storage").await;
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        [
            "AWS_ACCESS_KEY_ID",
            "AWS_REGION",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN"
        ]
    );
    assert!(first["AWS_ACCESS_KEY_ID"].starts_with("ASIA"), "{first:?}");
    assert!(!first["AWS_SESSION_TOKEN"].is_empty());
    assert_ne!(first["AWS_ACCESS_KEY_ID"], canary_id);
    assert_ne!(first["AWS_SECRET_ACCESS_KEY"], canary_secret);

    // The expiry STS gave is recorded (status and Secret), never a value.
    let c1 = status_credentials(&client, &ns, "storage").await.unwrap();
    let life = seconds(&c1.issued_at, &c1.expires_at);
    assert!((895..=905).contains(&life), "lifetime {life} s: {c1:?}");
    let refresh_after = seconds(&c1.issued_at, &c1.refresh_at);
    assert!((3..=4).contains(&refresh_after), "{c1:?}");
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("storage")
        .await
        .unwrap();
    let ann = secret.metadata.annotations.unwrap();
    assert_eq!(ann["sealcred.io/sts-expires-at"], c1.expires_at);

    // The refresh happens at the fraction: new credentials, a new issue time.
    let second = wait_for("a refresh", Duration::from_secs(20), || async {
        let d = secret_data(&client, &ns, "storage").await?;
        (d["AWS_ACCESS_KEY_ID"] != first["AWS_ACCESS_KEY_ID"]).then_some(d)
    })
    .await;
    let c2 = wait_for("the refreshed status", CONVERGE, || async {
        status_credentials(&client, &ns, "storage")
            .await
            .filter(|c| c.issued_at != c1.issued_at)
    })
    .await;
    assert!(seconds(&c1.issued_at, &c2.issued_at) >= 3, "{c1:?} {c2:?}");

    // The consumer is rolled onto refreshed credentials: its pods run a template
    // carrying a later restart digest than the first Secret's (a real rollout on
    // KWOK nodes; each refresh rolls it again).
    let key = restarted_for_key("storage");
    wait_for(
        "the consumer rolled onto refreshed credentials",
        ROLLOUT,
        || async {
            let d = Api::<Deployment>::namespaced(client.clone(), &ns)
                .get("web")
                .await
                .ok()?;
            let v = d.spec.template.metadata?.annotations?.get(&key)?.clone();
            if v == first_digest {
                return None;
            }
            rolled(&client, &ns, "web", 1, "storage", &v).await
        },
    )
    .await;

    // STS down: the current Secret is kept (valid until its expiry), the outage reported.
    proxy.set_up(false);
    wait_ready(&client, &ns, "storage", "False", "StsUnavailable").await;
    let kept = secret_data(&client, &ns, "storage").await.unwrap();
    assert!(
        kept["AWS_ACCESS_KEY_ID"] == second["AWS_ACCESS_KEY_ID"]
            || kept["AWS_ACCESS_KEY_ID"].starts_with("ASIA"),
        "the Secret still holds temporary credentials"
    );
    let msg = ready_message(&client, &ns, "storage").await;
    assert!(msg.contains("kept until they expire at"), "{msg}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(secret_data(&client, &ns, "storage").await.unwrap(), kept);
    assert!(status_credentials(&client, &ns, "storage").await.is_some());

    // STS back: refreshed again, Ready.
    proxy.set_up(true);
    wait_ready(&client, &ns, "storage", "True", "Unsealed").await;
    wait_for("a refresh after the outage", CONVERGE, || async {
        let d = secret_data(&client, &ns, "storage").await?;
        (d["AWS_ACCESS_KEY_ID"] != kept["AWS_ACCESS_KEY_ID"]).then_some(())
    })
    .await;

    // A role not on the list, and a duration outside STS's limits: Ready=False, no Secret.
    let mut other = seal_object(env, &ns, "admin", template(&[]), &[("note", "x")]).await;
    other.spec.sts = Some(StsSpec {
        role_arn: Some("arn:aws:iam::123456789012:role/admin".into()),
        ..StsSpec::default()
    });
    apply(&client, &other).await;
    wait_ready(&client, &ns, "admin", "False", "StsRoleNotAllowed").await;
    let mut short = seal_object(env, &ns, "short", template(&[]), &[("note", "x")]).await;
    short.spec.sts = Some(StsSpec {
        role_arn: Some(ROLE.into()),
        duration_seconds: Some(60),
        ..StsSpec::default()
    });
    apply(&client, &short).await;
    wait_ready(&client, &ns, "short", "False", "StsInvalidSpec").await;
    for n in ["admin", "short"] {
        assert!(secret_data(&client, &ns, n).await.is_none(), "{n}");
    }

    // The long-lived key is nowhere: not in any Secret, status or Event.
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let objs = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let seen = [
        serde_json::to_string(&secrets.items).unwrap(),
        serde_json::to_string(&objs.items.iter().map(|o| &o.status).collect::<Vec<_>>()).unwrap(),
        serde_json::to_string(&events.items).unwrap(),
    ];
    for text in &seen {
        for c in [&canary_id, &canary_secret] {
            assert!(
                !text.contains(c.as_str()) && !text.contains(&b64(c)),
                "canary {c} leaked"
            );
        }
    }
    ctl.stop().await.unwrap();
}

/// An AWS configuration for a private moto, signed with `key`.
async fn private_sdk(moto: &PrivateMoto, key: &AccessKey) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            &key.id,
            &key.secret,
            None,
            None,
            "sealcred-tests",
        ))
        .load()
        .await
}

/// With IAM enforced (private moto: SigV4 checked, policies and the role's trust
/// policy applied), the sealed long-lived key is what calls STS: the controller's
/// own identity (user `sealer`, kms:* only) may not assume `sealer-role`, which
/// trusts only user `base`. Sealed `base` key: the Secret's credentials are the
/// role's (GetCallerIdentity says so). No sealed key: AssumeRole is denied, StsError.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sealed_key_calls_sts_under_enforced_iam() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("ctl-sts-iam").await;
    let moto = PrivateMoto::start(
        env.root(),
        MotoOptions {
            iam: true,
            ..MotoOptions::default()
        },
    );
    let sealer = moto.access_key("sealer");
    let base = moto.access_key("base");
    let sdk = private_sdk(&moto, &sealer).await;
    let args: Vec<String> = [
        "sealcred-controller",
        "--kms-allow",
        moto.key_arn(),
        "--namespace",
        &ns,
        "--leader-elect=false",
        "--metrics-addr=off",
        "--max-backoff=4",
        "--sts-role-allow",
        moto.role_arn(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ctl = start_with_sdk(client.clone(), args, sdk.clone()).await;

    let kms = sealcred_shared::provider::aws::AwsKms::new(&sdk, moto.key_arn()).unwrap();
    let seal = |name: &str, pairs: Vec<(String, String)>| {
        let kms = kms.clone();
        let ns = ns.clone();
        let name = name.to_string();
        async move {
            sealcred_shared::seal::seal(
                &sealcred_shared::seal::SealInput {
                    name,
                    namespace: Some(ns),
                    scope: sealcred_shared::crd::Scope::Strict,
                    template: template(&[]),
                    profile: None,
                    entries: pairs
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                sealcred_shared::secret::SecretBytes::copy_from(v.as_bytes()),
                            )
                        })
                        .collect(),
                },
                &[&kms],
            )
            .await
            .unwrap()
            .object
        }
    };
    let sts_spec = Some(StsSpec {
        role_arn: Some(moto.role_arn().into()),
        duration_seconds: Some(900),
        ..StsSpec::default()
    });
    let mut with_key = seal(
        "with-key",
        vec![
            ("aws_access_key_id".into(), base.id.clone()),
            ("aws_secret_access_key".into(), base.secret.clone()),
        ],
    )
    .await;
    with_key.spec.sts = sts_spec.clone();
    apply(&client, &with_key).await;
    let mut own = seal("own-identity", vec![("note".into(), "x".into())]).await;
    own.spec.sts = sts_spec;
    apply(&client, &own).await;

    wait_ready(&client, &ns, "with-key", "True", "Unsealed").await;
    let d = secret_data(&client, &ns, "with-key").await.unwrap();
    assert!(!d.values().any(|v| v == &base.secret || v == &base.id));
    // The temporary credentials are the role's.
    let temp = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            &d["AWS_ACCESS_KEY_ID"],
            &d["AWS_SECRET_ACCESS_KEY"],
            Some(d["AWS_SESSION_TOKEN"].clone()),
            None,
            "temp",
        ))
        .load()
        .await;
    let who = aws_sdk_sts::Client::new(&temp)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert!(
        who.arn()
            .unwrap_or_default()
            .contains("assumed-role/sealer-role/"),
        "{:?}",
        who.arn()
    );

    // The controller's own identity is not trusted by the role.
    wait_ready(&client, &ns, "own-identity", "False", "StsError").await;
    assert!(secret_data(&client, &ns, "own-identity").await.is_none());
    ctl.stop().await.unwrap();
}
