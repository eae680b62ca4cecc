//! Faults under load: 500 objects applied in a burst while (a) the KMS server is down
//! and comes back, (b) kube-apiserver restarts, (c) the controller is killed with SIGKILL
//! and started again. Each phase re-seals every object with new values (a new data key
//! per object, through KMS) and must converge to exactly those values.
//!
//! A watch on the namespace's Secrets checks every version the API server ever holds:
//! a Secret is never deleted, never empty or half-written (both keys always hold the
//! same version), never goes back to an older version, and never holds another object's
//! values (each object has its own, so a Secret decrypted under the wrong context would
//! show). The real controller binary runs (so SIGKILL is real). This is the only test in
//! its binary: it stops the shared KMS and restarts the shared API server.

mod controller_support;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use controller_support::*;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use sealcred_shared::crd::SealedStorageCred;
use sealcred_shared::provider::aws::AwsKms;
use sealcred_shared::seal;
use sealcred_tests::{TestEnv, testenv};

const N: usize = 500;
const BURST: usize = 16;
const CONVERGE_LOAD: Duration = Duration::from_secs(240);

fn values(i: usize, version: u32) -> [(String, String); 2] {
    [
        ("access_key".into(), format!("ak-{i}-v{version}")),
        ("secret_key".into(), format!("sk-{i}-v{version}")),
    ]
}

fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix('o')?.parse().ok()
}

/// Which version of object `i` the Secret's data is, or why it is none.
fn version_of(i: usize, data: &BTreeMap<String, Vec<u8>>) -> Result<u32, String> {
    if data.len() != 2 {
        return Err(format!("{} keys", data.len()));
    }
    for v in 1..=3 {
        if values(i, v)
            .iter()
            .all(|(k, want)| data.get(k).map(Vec::as_slice) == Some(want.as_bytes()))
        {
            return Ok(v);
        }
    }
    Err("values of no version of this object (mixed, emptied or another object's)".into())
}

/// Seals (version 1) or merges (later versions) every object, 8 KMS calls at a time.
async fn seal_all(
    env: &TestEnv,
    ns: &str,
    prev: Option<&[SealedStorageCred]>,
    version: u32,
) -> Vec<SealedStorageCred> {
    let sdk = sdk_config(env, env.kms_endpoint()).await;
    let kms = AwsKms::new(&sdk, env.key_arn()).expect("KMS provider");
    let kms = &kms;
    stream::iter(0..N)
        .map(|i| async move {
            let pairs = values(i, version);
            let pairs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match prev {
                None => {
                    let input = seal::SealInput {
                        name: format!("o{i}"),
                        namespace: Some(ns.into()),
                        scope: sealcred_shared::crd::Scope::Strict,
                        template: template(&[]),
                        profile: None,
                        entries: entries(&pairs),
                    };
                    seal::seal(&input, &[kms]).await.expect("sealing").object
                }
                Some(p) => {
                    seal::merge(&p[i], &entries(&pairs), seal::Keys::Given(&[kms]))
                        .await
                        .expect("merging")
                        .object
                }
            }
        })
        .buffered(8)
        .collect()
        .await
}

/// Applies every object, `BURST` at a time, retrying each until the API server takes
/// it (it may be restarting).
async fn apply_all(client: &kube::Client, objs: &[SealedStorageCred]) {
    stream::iter(objs)
        .for_each_concurrent(BURST, |o| async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                match try_apply(client, o).await {
                    Ok(_) => return,
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => panic!("applying {}: {e}", o.name_any()),
                }
            }
        })
        .await;
}

/// Waits until every Secret holds `version`; returns how long it took.
async fn converge(client: &kube::Client, ns: &str, version: u32, what: &str) -> Duration {
    let t0 = Instant::now();
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    loop {
        if let Ok(list) = api.list(&ListParams::default()).await {
            let done = list
                .items
                .iter()
                .filter(|s| {
                    let Some(i) = index_of(&s.name_any()) else {
                        return false;
                    };
                    let data: BTreeMap<String, Vec<u8>> = s
                        .data
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    version_of(i, &data) == Ok(version)
                })
                .count();
            if done == N {
                return t0.elapsed();
            }
            if t0.elapsed() > CONVERGE_LOAD {
                panic!(
                    "{what}: only {done} of {N} Secrets hold version {version} after {CONVERGE_LOAD:?}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn spawn_controller(env: &TestEnv, ns: &str, log_name: &str) -> KillOnDrop {
    let log_path = sealcred_tests::repo_root().join(format!("target/testenv/{log_name}-{ns}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    KillOnDrop(
        Command::new(controller_bin())
            .args([
                "--kms-allow",
                env.key_arn(),
                "--namespace",
                ns,
                "--leader-elect=false",
                "--metrics-addr=off",
                "--concurrency=16",
                "--max-backoff=4",
            ])
            .envs(env.all_env())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn converges_through_kms_apiserver_and_controller_faults() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("faults").await;

    // The monitor: every Secret version the API server reports.
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<usize, u32>>> = Arc::default();
    let monitor = {
        let (violations, seen) = (Arc::clone(&violations), Arc::clone(&seen));
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(ev) = events.next().await {
                let Ok(ev) = ev else { continue };
                let (secrets, deleted) = match ev {
                    watcher::Event::Apply(s) | watcher::Event::InitApply(s) => (vec![s], false),
                    watcher::Event::Delete(s) => (vec![s], true),
                    _ => continue,
                };
                for s in secrets {
                    let name = s.name_any();
                    let Some(i) = index_of(&name) else { continue };
                    if deleted {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("{name} was deleted"));
                        continue;
                    }
                    let data: BTreeMap<String, Vec<u8>> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    match version_of(i, &data) {
                        Ok(v) => {
                            let mut seen = seen.lock().unwrap();
                            let last = seen.entry(i).or_insert(v);
                            if v < *last {
                                violations
                                    .lock()
                                    .unwrap()
                                    .push(format!("{name} went back from v{last} to v{v}"));
                            }
                            *last = v.max(*last);
                        }
                        Err(why) => violations.lock().unwrap().push(format!("{name}: {why}")),
                    }
                }
            }
        })
    };
    let _stop_monitor = AbortOnDrop(monitor);

    let v1 = seal_all(env, &ns, None, 1).await;
    let v2 = seal_all(env, &ns, Some(&v1), 2).await;
    let v3 = seal_all(env, &ns, Some(&v2), 3).await;

    // (a) KMS down during the burst, back after it.
    env.kms_stop();
    let mut controller = spawn_controller(env, &ns, "faults-a");
    apply_all(&client, &v1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = Api::<Secret>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(during, 0, "Secrets were written while KMS was down");
    env.kms_start();
    let a = converge(&client, &ns, 1, "(a) KMS stopped and restarted").await;

    // (b) kube-apiserver restarts in the middle of the burst.
    let apply = {
        let (client, v2) = (client.clone(), v2.clone());
        tokio::spawn(async move { apply_all(&client, &v2).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.apiserver_restart();
    apply.await.unwrap();
    let b = converge(&client, &ns, 2, "(b) kube-apiserver restarted").await;

    // (c) the controller is SIGKILLed in the middle of the burst, then started again.
    let apply = {
        let (client, v3) = (client.clone(), v3.clone());
        tokio::spawn(async move { apply_all(&client, &v3).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    controller.0.kill().unwrap(); // SIGKILL
    controller.0.wait().unwrap();
    apply.await.unwrap();
    let written_before_restart = seen.lock().unwrap().values().filter(|v| **v == 3).count();
    controller = spawn_controller(env, &ns, "faults-c");
    let c = converge(&client, &ns, 3, "(c) controller SIGKILLed and restarted").await;

    // Give the monitor a moment to see the last events, then check everything.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(controller);
    let violations = violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "{} violations, first: {:?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let objects = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(secrets.len(), N);
    let uids: HashMap<String, String> = objects
        .iter()
        .map(|o| (o.name_any(), o.uid().unwrap()))
        .collect();
    for s in &secrets {
        let owner = s
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true));
        assert_eq!(
            owner.map(|r| &r.uid),
            uids.get(&s.name_any()),
            "{} is not controlled by its object",
            s.name_any()
        );
    }
    println!(
        "converged: (a) KMS back → all {N} in {a:?}; (b) API server restart → {b:?}; (c) SIGKILL ({written_before_restart} of {N} at v3 before the restart) → {c:?}"
    );
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
