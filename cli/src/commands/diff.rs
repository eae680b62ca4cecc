//! `sealcred diff FILE`: does the cluster's Secret hold what this file seals?
//!
//! Reads the current kubeconfig context (as kubectl does). Decrypts the file
//! locally (the user's KMS rights), reads the Secret (`get secrets`), and
//! prints per entry `same`, `different`, `missing` or `extra` — never a value —
//! plus whether the live SealedStorageCred is this file, its Ready condition and,
//! when workloads name the Secret for restart, the consumer status the controller
//! reports (which of them run the current credential). The Secret's data is wiped
//! as soon as it is compared. Exit 0 when the object and every entry are the same,
//! 1 when something differs, 2 on an error (as `kubectl diff`); consumers still
//! rolling do not change the exit status (`kubectl wait` or `rotate-access-key
//! finish` wait for them).

use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::config::KubeConfigOptions;
use sealcred_shared::crd::{SealedStorageCred, SealedStorageCredStatus};
use sealcred_shared::seal;
use zeroize::Zeroize;

use super::rule_local_keys;
use crate::cli::KeyArgs;
use crate::error::CliError;
use crate::io::read_sealed_file;
use crate::keys;

/// A client for the current kubeconfig context (or `context`), as kubectl
/// finds it: `KUBECONFIG`, else `~/.kube/config`, else in-cluster.
pub(super) async fn client(context: Option<&str>) -> Result<kube::Client, CliError> {
    let bad = |e: String| {
        CliError::new(format!("kubeconfig: {e}")).hint("set KUBECONFIG, or pass --context")
    };
    let config = match context {
        Some(ctx) => kube::Config::from_kubeconfig(&KubeConfigOptions {
            context: Some(ctx.to_string()),
            ..Default::default()
        })
        .await
        .map_err(|e| bad(e.to_string()))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| bad(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| bad(e.to_string()))
}

/// `sealcred diff`. `Ok(true)` when the cluster holds what the file seals.
pub async fn diff(file: &Path, context: Option<&str>, args: &KeyArgs) -> Result<bool, CliError> {
    let sealed = read_sealed_file(file)?;
    if sealed.docs.len() > 1 {
        return Err(CliError::new(format!(
            "holds {} documents; diff takes a file with one SealedStorageCred",
            sealed.docs.len()
        ))
        .in_file(file));
    }
    let obj = &sealed.docs[0].obj;
    let ns = obj.metadata.namespace.clone().ok_or_else(|| {
        CliError::new("the object has no namespace; diff needs one").in_file(file)
    })?;
    let name = obj.metadata.name.clone().unwrap_or_default();
    let keyring = keys::keyring(args, &rule_local_keys(&[file.to_path_buf()]));
    let opened = seal::open(obj, &keyring)
        .await
        .map_err(|e| CliError::from(e).in_file(file))?;
    let client = client(context).await?;
    let at = |what: &str, e: kube::Error| match e {
        kube::Error::Api(s) if s.code == 403 => CliError::new(format!(
            "reading {what} in namespace {ns}: forbidden ({})",
            s.message
        ))
        .hint("diff needs get on sealedstoragecreds and secrets in that namespace"),
        e => CliError::new(format!("reading {what} in namespace {ns}: {e}")),
    };

    let mut same = true;
    let live = Api::<SealedStorageCred>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(|e| at("the SealedStorageCred", e))?;
    match &live {
        None => {
            same = false;
            println!("SealedStorageCred {ns}/{name}: not in the cluster");
        }
        Some(l) => {
            let applied =
                serde_json::to_value(&l.spec).ok() == serde_json::to_value(&obj.spec).ok();
            same &= applied;
            let ready = l
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| {
                    let current = c.observed_generation.is_none()
                        || c.observed_generation == l.metadata.generation;
                    format!(
                        "Ready={} ({}{})",
                        c.status,
                        c.reason,
                        if current {
                            ""
                        } else {
                            ", for an older generation"
                        }
                    )
                })
                .unwrap_or_else(|| "no Ready condition yet".into());
            println!(
                "SealedStorageCred {ns}/{name}: in the cluster, {}; {ready}",
                if applied {
                    "the same as this file"
                } else {
                    "differs from this file (not applied yet, or edited in the cluster)"
                }
            );
            if let Some(st) = &l.status {
                print!("{}", consumers(st));
            }
        }
    }

    let secret_name = &opened.secret_name;
    let mut secret = Api::<Secret>::namespaced(client, &ns)
        .get_opt(secret_name)
        .await
        .map_err(|e| at("the Secret", e))?;
    let Some(s) = secret.as_mut() else {
        println!("Secret {ns}/{secret_name}: not in the cluster");
        for n in opened.entries.keys() {
            println!("  missing    {n}");
        }
        return Ok(false);
    };
    println!("Secret {ns}/{secret_name}:");
    let data = s.data.take().unwrap_or_default();
    let mut names: Vec<&String> = opened.entries.keys().chain(data.keys()).collect();
    names.sort();
    names.dedup();
    for n in names {
        let state = match (opened.entries.get(n), data.get(n)) {
            (Some(want), Some(have)) if want.expose() == have.0.as_slice() => "same",
            (Some(_), Some(_)) => "different",
            (Some(_), None) => "missing",
            (None, _) => "extra",
        };
        same &= state == "same";
        println!("  {state:<10} {n}");
    }
    for (_, mut v) in data {
        v.0.zeroize();
    }
    if let Some(sd) = s.string_data.as_mut() {
        sd.values_mut().for_each(|v| v.zeroize());
    }
    drop(opened);
    Ok(same)
}

/// The consumer lines of a live object's status: a summary and one line per
/// workload (kind, name, state, replica counts), or nothing when no workload names
/// the Secret. Workload names only, never a value.
fn consumers(st: &SealedStorageCredStatus) -> String {
    let Some(summary) = &st.consumers_updated else {
        return String::new();
    };
    let cond = st
        .conditions
        .iter()
        .find(|c| c.type_ == "ConsumersUpdated")
        .map(|c| format!("; ConsumersUpdated={} ({})", c.status, c.reason))
        .unwrap_or_default();
    let mut out = format!("Consumers: {summary} updated{cond}\n");
    for c in &st.consumers {
        let who = match &c.namespace {
            Some(ns) => format!("{}/{ns}/{}", c.kind, c.name),
            None => format!("{}/{}", c.kind, c.name),
        };
        out.push_str(&format!(
            "  {:<10} {who} ({}/{} updated, {} ready)\n",
            c.state, c.updated_replicas, c.replicas, c.ready_replicas
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealcred_shared::crd::{Condition, ConsumerStatus};

    fn consumer(kind: &str, name: &str, ns: Option<&str>, state: &str) -> ConsumerStatus {
        ConsumerStatus {
            kind: kind.into(),
            name: name.into(),
            namespace: ns.map(Into::into),
            state: state.into(),
            replicas: 3,
            updated_replicas: 2,
            ready_replicas: 3,
        }
    }

    #[test]
    fn consumer_lines() {
        assert_eq!(consumers(&SealedStorageCredStatus::default()), "");
        let st = SealedStorageCredStatus {
            consumers_updated: Some("0/1".into()),
            consumers: vec![
                consumer("Deployment", "web", None, "Rolling"),
                consumer("StatefulSet", "db", Some("other"), "Refused"),
            ],
            conditions: vec![Condition {
                type_: "ConsumersUpdated".into(),
                status: "False".into(),
                reason: "RolloutInProgress".into(),
                message: String::new(),
                last_transition_time: "2026-12-04T00:00:00Z".into(),
                observed_generation: None,
            }],
            ..SealedStorageCredStatus::default()
        };
        assert_eq!(
            consumers(&st),
            "Consumers: 0/1 updated; ConsumersUpdated=False (RolloutInProgress)\n  \
             Rolling    Deployment/web (2/3 updated, 3 ready)\n  \
             Refused    StatefulSet/other/db (2/3 updated, 3 ready)\n"
        );
    }
}
