//! Benchmark (ignored by default): 1,000 SealedStorageCreds applied at once to a
//! `sealcred-controller` process; measures apply→all Secrets time, KMS calls and the
//! process's peak RSS (VmHWM). Then restarts it and checks the restart makes no KMS call.
//!
//! ```sh
//! export CARGO_TARGET_DIR=$HOME/.cache/sealcred/target
//! cargo build --release -p sealcred-controller
//! SEALCRED_CONTROLLER_BIN=$CARGO_TARGET_DIR/release/sealcred-controller \
//!   cargo test -p sealcred-tests --test controller_bench -- --ignored --nocapture
//! ```

mod controller_support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use controller_support::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use sealcred_tests::testenv;

const N: usize = 1000;

fn controller_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SEALCRED_CONTROLLER_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| sealcred_tests::repo_root().join("target"));
    target.join("release/sealcred-controller")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(env: &sealcred_tests::TestEnv, ns: &str, port: u16) -> Child {
    Command::new(controller_bin())
        .args([
            "--kms-allow",
            env.key_arn(),
            "--namespace",
            ns,
            "--leader-elect=false",
            "--concurrency=16",
            &format!("--metrics-addr=127.0.0.1:{port}"),
        ])
        .envs(env.all_env())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("starting sealcred-controller (build it first, see the module docs)")
}

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

fn counter(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: 1,000 objects; run explicitly"]
async fn thousand_objects() {
    let env = testenv().await;
    env.install_sealcred_crd().await;
    let client = env.kube_client().await;
    let ns = env.unique_namespace("ctl-bench").await;

    let t = Instant::now();
    let objects: Vec<_> = futures::stream::iter(0..N)
        .map(|i| {
            let ns = ns.clone();
            async move {
                seal_object(
                    env,
                    &ns,
                    &format!("cred-{i:04}"),
                    template(&[("bench", "1")]),
                    &[("username", "user"), ("password", &format!("pw-{i}"))],
                )
                .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    eprintln!(
        "sealed {N} objects in {:?} (not part of the measurement)",
        t.elapsed()
    );

    let port = free_port();
    let mut child = spawn(env, &ns, port);
    wait_for("controller metrics", CONVERGE, || async {
        (!scrape(port).is_empty()).then_some(())
    })
    .await;

    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let started = Instant::now();
    futures::stream::iter(objects.iter())
        .for_each_concurrent(16, |o| {
            let client = client.clone();
            async move { apply(&client, o).await }
        })
        .await;
    let applied = started.elapsed();
    let lp = ListParams::default().labels("bench=1");
    wait_for("all Secrets", Duration::from_secs(600), || async {
        let n = secrets.list_metadata(&lp).await.ok()?.items.len();
        (n == N).then_some(())
    })
    .await;
    let all = started.elapsed();
    let text = scrape(port);
    let kms = counter(&text, "sealcred_kms_calls_total");
    let rss = peak_rss_kib(child.id());
    eprintln!(
        "BENCH applied {N} objects in {applied:?}; all {N} Secrets present after {all:?}; \
         KMS calls {kms}; controller peak RSS {} MiB",
        rss / 1024
    );
    let _ = child.kill();
    let _ = child.wait();

    // Restart with nothing changed: zero KMS calls.
    let port = free_port();
    let mut child = spawn(env, &ns, port);
    let restarted = Instant::now();
    wait_for(
        "the restarted controller to check every object",
        Duration::from_secs(300),
        || async {
            (counter(&scrape(port), "sealcred_reconciles_total") >= N as u64).then_some(())
        },
    )
    .await;
    let text = scrape(port);
    let kms_after = counter(&text, "sealcred_kms_calls_total");
    let rss2 = peak_rss_kib(child.id());
    eprintln!(
        "BENCH restart: {N} objects checked in {:?}; KMS calls {kms_after}; peak RSS {} MiB",
        restarted.elapsed(),
        rss2 / 1024
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(kms, N as u64);
    assert_eq!(kms_after, 0);
}
