//! `controller-limit --input FILE --namespace NS --concurrency C --out FILE`: the limit the
//! controller benchmark compares sealcred-controller with (BENCHMARKS.md, "Controllers").
//!
//! A plain client doing only the unavoidable work of unsealing N objects: for each line of
//! FILE (JSON: `name`, `keyId`, `ciphertext` (b64 of the KMS CiphertextBlob), `context`
//! (the EncryptionContext), `data` (the Secret's values)), one KMS Decrypt of that blob with
//! that context and key id, then one server-side apply of a Secret of the same shape into
//! NS. C workers (the controller's `--concurrency`), each doing decrypt-then-write, over one
//! KMS client and one kube client (connection pools shared, as in the controller). The
//! environment configures both (AWS_* and KUBECONFIG), as for the controller.
//!
//! Writes `{"n", "concurrency", "wall_s", "decrypt_s", "write_s"}` to `--out`: wall time from
//! the first call to the last response (clients built before), and the summed per-call
//! latencies of each kind. The decrypted data keys are zeroized at once and never used.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use aws_sdk_kms::error::ProvideErrorMetadata as _;
use aws_sdk_kms::primitives::Blob;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use zeroize::Zeroizing;

struct Item {
    name: String,
    key_id: String,
    ciphertext: Vec<u8>,
    context: HashMap<String, String>,
    data: serde_json::Map<String, serde_json::Value>,
}

fn arg(args: &[String], flag: &str) -> Result<String, String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
        .ok_or_else(|| format!("missing {flag}"))
}

fn parse_line(no: usize, line: &str) -> Result<Item, String> {
    let bad = |what: &str| format!("input line {no}: {what}");
    let v: serde_json::Value = serde_json::from_str(line).map_err(|_| bad("not JSON"))?;
    let s = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| bad(&format!("no string field {k}")))
    };
    let ciphertext = base64::engine::general_purpose::STANDARD
        .decode(s("ciphertext")?)
        .map_err(|_| bad("ciphertext is not base64"))?;
    let context = serde_json::from_value(v.get("context").cloned().unwrap_or_default())
        .map_err(|_| bad("context is not a string map"))?;
    let data = v
        .get("data")
        .and_then(|d| d.as_object())
        .cloned()
        .ok_or_else(|| bad("no object field data"))?;
    Ok(Item {
        name: s("name")?,
        key_id: s("keyId")?,
        ciphertext,
        context,
        data,
    })
}

async fn work(args: Vec<String>) -> Result<(), String> {
    let input = arg(&args, "--input")?;
    let ns = arg(&args, "--namespace")?;
    let out = arg(&args, "--out")?;
    let concurrency: usize = arg(&args, "--concurrency")?
        .parse()
        .map_err(|_| "--concurrency: not a number".to_string())?;
    let text = std::fs::read_to_string(&input).map_err(|e| format!("{input}: {e}"))?;
    let items: Vec<Item> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(i + 1, l))
        .collect::<Result<_, _>>()?;
    let n = items.len();

    let config = aws_config::load_from_env().await;
    let kms = aws_sdk_kms::Client::new(&config);
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("kube client: {e}"))?;
    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));

    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (kms, secrets, items, next) =
            (kms.clone(), secrets.clone(), items.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let (mut dec, mut wr) = (0f64, 0f64);
            let pp = PatchParams::apply("sealcred-bench-limit").force();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(it) = items.get(i) else { break };
                let t = Instant::now();
                let r = kms
                    .decrypt()
                    .key_id(&it.key_id)
                    .ciphertext_blob(Blob::new(it.ciphertext.clone()))
                    .set_encryption_context(Some(it.context.clone()))
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "{}: KMS Decrypt failed: {}",
                            it.name,
                            e.code().unwrap_or("?")
                        )
                    })?;
                drop(r.plaintext.map(|b| Zeroizing::new(b.into_inner())));
                dec += t.elapsed().as_secs_f64();
                let t = Instant::now();
                let secret = serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": it.name, "labels": {"bench": "1"}},
                    "data": it.data,
                });
                secrets
                    .patch(&it.name, &pp, &Patch::Apply(&secret))
                    .await
                    .map_err(|e| format!("{}: Secret apply failed: {e}", it.name))?;
                wr += t.elapsed().as_secs_f64();
            }
            Ok::<_, String>((dec, wr))
        }));
    }
    let (mut dec, mut wr) = (0f64, 0f64);
    for w in workers {
        let (d, w) = w.await.map_err(|e| format!("worker: {e}"))??;
        dec += d;
        wr += w;
    }
    let wall = t0.elapsed().as_secs_f64();
    let r = serde_json::json!({"n": n, "concurrency": concurrency, "wall_s": wall,
                               "decrypt_s": dec, "write_s": wr});
    std::fs::write(&out, r.to_string()).map_err(|e| format!("{out}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("controller-limit: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(work(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("controller-limit: {e}");
            ExitCode::FAILURE
        }
    }
}
