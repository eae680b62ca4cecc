//! The tamper matrix (`shared/tests/common/tamper_cases.rs`) against the controller on
//! the real API server. Every row becomes its own object (own name and Secret name,
//! three shared namespaces for the moves), all applied at once to one controller:
//! - a row that must fail: the object ends Ready=False with the row's reason, and no
//!   Secret exists under the name it targets (or the API server's schema refused it);
//! - a row that must open: Ready=True and the Secret holds exactly the sealed values;
//! - no canary in any status, Event or log-visible error.

#[allow(unused_imports)]
#[path = "../../shared/tests/common/mod.rs"]
mod common;
mod controller_support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::tamper_cases::*;
use controller_support::*;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_tests::{testenv, unique_name};

/// What one row became on the cluster.
struct Applied {
    what: &'static str,
    base: Base,
    want: Option<&'static str>,
    ns: String,
    name: String,
    secret: String,
}

#[tokio::test]
async fn tamper_matrix_against_the_controller() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let admin = env.kube_client().await;
    let ns = env.unique_namespace("tm").await;
    let other = env.unique_namespace("tm-other").await;
    let elsewhere = env.unique_namespace("tm-else").await;
    let run = unique_name("tm");

    let mut applied = Vec::new();
    let mut refused = Vec::new();
    let mut skipped = Vec::new();
    for (i, (what, base, mutate, want)) in cases().into_iter().enumerate() {
        let place = Place {
            ns: ns.clone(),
            other_ns: other.clone(),
            elsewhere_ns: elsewhere.clone(),
            name: format!("c{i}"),
            renamed: format!("c{i}-renamed"),
            secret: format!("s{i}"),
        };
        let fx = fixtures(key(), &place).await;
        let mut o = fx.base(base);
        mutate(&mut o, &fx);
        let Some(obj_ns) = o.metadata.namespace.clone() else {
            // A namespaced resource cannot exist without a namespace.
            skipped.push(what);
            continue;
        };
        // Labels are not sealed: the selector keeps this run's controller to its objects.
        o.labels_mut()
            .insert("sealcred.io/tamper-run".into(), run.clone());
        let name = o.name_any();
        let secret = o.spec.template.name.clone().unwrap_or_else(|| name.clone());
        match try_apply(&admin, &o).await {
            Ok(_) => applied.push(Applied {
                what,
                base,
                want,
                ns: obj_ns,
                name,
                secret,
            }),
            Err(e) => {
                assert!(
                    want.is_some(),
                    "{what}: a row that must open was refused: {e}"
                );
                for c in canaries() {
                    assert!(
                        !e.to_string().contains(c),
                        "{what}: API error shows a canary"
                    );
                }
                refused.push(what);
            }
        }
    }

    let mut args = default_args(env, &ns);
    let at = args.iter().position(|a| a == "--namespace").unwrap();
    args.drain(at..at + 2);
    args.extend([
        "--selector".to_string(),
        format!("sealcred.io/tamper-run={run}"),
        "--local-key".to_string(),
        key().display().to_string(),
        "--concurrency=8".to_string(),
        "--workload-restarts=false".to_string(),
    ]);
    let controller = start_with(env, admin.clone(), args, env.kms_endpoint()).await;

    // Every applied object gets a Ready condition for its generation.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut results = BTreeMap::new();
    while results.len() < applied.len() {
        for a in &applied {
            if results.contains_key(&(a.ns.clone(), a.name.clone())) {
                continue;
            }
            if let Some((status, reason, true)) = ready(&admin, &a.ns, &a.name).await {
                results.insert((a.ns.clone(), a.name.clone()), (status, reason));
            }
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<_> = applied
                .iter()
                .filter(|a| !results.contains_key(&(a.ns.clone(), a.name.clone())))
                .map(|a| a.what)
                .collect();
            panic!("no Ready condition after 90 s for {missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let mut failed = Vec::new();
    for a in &applied {
        let (status, reason) = &results[&(a.ns.clone(), a.name.clone())];
        let data = secret_data(&admin, &a.ns, &a.secret).await;
        match a.want {
            Some(class) => {
                let want_reason = class.split(' ').next().unwrap();
                if status != "False" || reason != want_reason {
                    failed.push(format!(
                        "{}: Ready={status} {reason}, expected False {want_reason}",
                        a.what
                    ));
                }
                if data.is_some() {
                    failed.push(format!("{}: a Secret {} was written", a.what, a.secret));
                }
            }
            None => {
                let want: BTreeMap<String, String> = expected_values(a.base)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                if status != "True" {
                    failed.push(format!(
                        "{}: Ready={status} {reason}, expected True",
                        a.what
                    ));
                }
                if data.as_ref() != Some(&want) {
                    failed.push(format!(
                        "{}: the Secret does not hold the sealed values",
                        a.what
                    ));
                }
            }
        }
    }

    // No canary in any status or Event of the three namespaces.
    for n in [&ns, &other, &elsewhere] {
        let objs = Api::<SealedStorageCred>::namespaced(admin.clone(), n)
            .list(&ListParams::default())
            .await
            .unwrap();
        let events = Api::<Event>::namespaced(admin.clone(), n)
            .list(&ListParams::default())
            .await
            .unwrap();
        let shown = format!(
            "{}\n{}",
            serde_json::to_string(&objs.items.iter().map(|o| &o.status).collect::<Vec<_>>())
                .unwrap(),
            serde_json::to_string(&events.items).unwrap()
        );
        for c in canaries() {
            if shown.contains(c) {
                failed.push(format!("canary {c:?} in a status or Event of {n}"));
            }
        }
    }
    // The only Secrets are those of the rows that must open.
    let opened: usize = applied.iter().filter(|a| a.want.is_none()).count();
    let mut secrets = 0;
    for n in [&ns, &other, &elsewhere] {
        secrets += Api::<Secret>::namespaced(admin.clone(), n)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
    }
    if secrets != opened {
        failed.push(format!("{secrets} Secrets exist, {opened} rows open"));
    }
    controller.stop().await.expect("controller stops cleanly");

    let rejected = applied.iter().filter(|a| a.want.is_some()).count();
    assert!(
        rejected + refused.len() >= 20,
        "only {} rows must fail",
        rejected + refused.len()
    );
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
    println!(
        "{rejected} tampered objects rejected by the controller, {} refused by the API server's schema ({refused:?}), {} rows opened, skipped (not representable): {skipped:?}",
        refused.len(),
        opened
    );
}
