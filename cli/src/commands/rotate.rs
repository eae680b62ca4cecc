//! `sealcred rotate`: fresh data keys, or changed wrapping keys, file by file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use sealcred_shared::seal;

use super::{collect_files, keys_for, refs};
use crate::cli::RotateArgs;
use crate::error::CliError;
use crate::io::{read_sealed_file, write_atomic};
use crate::keys;
use crate::rules;

/// Refuses, before anything is written, a `--remove-kms` that names no
/// wrapping in any of the files (a typo or an alias would otherwise leave the
/// key in place, silently).
fn check_remove_kms(files: &[PathBuf], remove: &[String]) -> Result<(), CliError> {
    let mut found = vec![false; remove.len()];
    for f in files {
        let Ok(sealed) = read_sealed_file(f) else {
            continue;
        };
        for doc in &sealed.docs {
            for (i, k) in remove.iter().enumerate() {
                found[i] |= doc
                    .obj
                    .spec
                    .data_keys
                    .iter()
                    .any(|d| d.wrappings.iter().any(|w| &w.key_id == k));
            }
        }
    }
    let unused: Vec<&str> = remove
        .iter()
        .zip(&found)
        .filter(|(_, f)| !**f)
        .map(|(k, _)| k.as_str())
        .collect();
    if unused.is_empty() {
        return Ok(());
    }
    let place = match files {
        [one] => one.display().to_string(),
        _ => format!("any of the {} files", files.len()),
    };
    Err(CliError::new(format!(
        "--remove-kms {}: no wrapping in {place} is by this key; nothing was changed",
        unused.join(", ")
    ))
    .hint("give the key id exactly as `sealcred inspect` shows it (the key ARN, not an alias)"))
}

/// `sealcred rotate`.
pub async fn rotate(args: &RotateArgs) -> Result<(), CliError> {
    let files = collect_files(&args.paths, args.recursive)?;
    if files.is_empty() {
        return Err(CliError::new("no SealedStorageCred files found"));
    }
    let rewrap =
        !args.add_kms.is_empty() || !args.add_public_key.is_empty() || !args.remove_kms.is_empty();
    if rewrap && (!args.keys.kms.is_empty() || !args.keys.public_key.is_empty()) {
        return Err(CliError::new(
            "--kms/--public-key (new data key under new keys) cannot be combined with --add-kms/--add-public-key/--remove-kms (same data key, changed wrappings)",
        ));
    }
    if !args.remove_kms.is_empty() {
        check_remove_kms(&files, &args.remove_kms)?;
    }
    let keys = &args.keys;
    let mut lookups = Vec::with_capacity(files.len());
    let mut rule_keys = Vec::new();
    for f in &files {
        let l = rules::lookup(f)?;
        if let rules::Lookup::Matched(r) = &l {
            rule_keys.extend(keys::local_paths(&r.kms));
        }
        lookups.push(l);
    }
    let keyring = keys::keyring(keys, &rule_keys);
    let add_choice = rules::KeyChoice {
        kms: args.add_kms.clone(),
        public: args
            .add_public_key
            .iter()
            .map(|f| rules::PublicKeyRef {
                file: f.clone(),
                expect: None,
            })
            .collect(),
    };
    let add = if add_choice.is_empty() {
        Vec::new()
    } else {
        keys::providers(&add_choice, keys, &keyring).await?
    };
    // Stop between files on Ctrl-C: every write is atomic, so no file is half-written.
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    let bar = (files.len() > 1 && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(files.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    // Files are rotated concurrently (KMS round trips dominate), at most
    // --concurrency at a time; results are reported in file order. An
    // interrupt stops new files from starting; every write is atomic.
    let say = |line: &str| match &bar {
        Some(b) => b.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    };
    let (keyring, add, interrupted) = (&keyring, &add, &interrupted);
    let mut results = futures::stream::iter(files.iter().zip(&lookups))
        .map(|(f, lookup)| async move {
            if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            let result = async {
                // Every document of the file, then one atomic write: a file is
                // rotated whole or not at all.
                let sealed = read_sealed_file(f)?;
                let mut objects = Vec::with_capacity(sealed.docs.len());
                let mut notes = Vec::new();
                let keys_given = if rewrap {
                    None
                } else {
                    keys_for(keys, lookup, keyring).await?
                };
                for (i, doc) in sealed.docs.iter().enumerate() {
                    let obj = &doc.obj;
                    let out = if rewrap {
                        seal::rewrap(obj, keyring, &refs(add), &args.remove_kms).await
                    } else {
                        match &keys_given {
                            Some(p) => {
                                seal::rotate(obj, keyring, seal::Keys::Given(&refs(p))).await
                            }
                            None => seal::rotate(obj, keyring, seal::Keys::Recorded(keyring)).await,
                        }
                    }
                    .map_err(|e| CliError::new(format!("{}: {e}", sealed.label(f, i))))?;
                    notes.extend(out.notes);
                    objects.push(out.object);
                }
                // The write ends in an fsync (~2 ms here): off the runtime's one
                // thread, so the files' writes overlap each other and the other
                // files' KMS round trips instead of queueing behind them.
                let text = sealed.render(&objects)?;
                let path = f.clone();
                tokio::task::spawn_blocking(move || write_atomic(&path, text.as_bytes()))
                    .await
                    .map_err(|e| CliError::new(format!("{}: cannot write: {e}", f.display())))??;
                Ok::<_, CliError>(notes)
            }
            .await;
            Some((f, result))
        })
        .buffered(args.concurrency);
    let mut failures = 0;
    let mut done = 0;
    while let Some(r) = results.next().await {
        let Some((f, result)) = r else { continue };
        done += 1;
        match result {
            Ok(notes) => notes
                .iter()
                .for_each(|n| say(&format!("sealcred: note: {}: {n}", f.display()))),
            Err(e) => {
                say(&format!("error: {e}"));
                failures += 1;
            }
        }
        if let Some(b) = &bar {
            b.set_message(f.display().to_string());
            b.inc(1);
        }
    }
    drop(results);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let skipped = files.len() - done;
    eprintln!(
        "{} {} of {} files{}{}",
        if rewrap { "rewrapped" } else { "rotated" },
        done - failures,
        files.len(),
        if failures > 0 {
            format!("; {failures} failed (left unchanged)")
        } else {
            String::new()
        },
        if skipped > 0 {
            format!("; interrupted, {skipped} not started (unchanged)")
        } else {
            String::new()
        },
    );
    if failures > 0 || skipped > 0 {
        Err(CliError::new(format!(
            "{} of {} files were not rotated",
            failures + skipped,
            files.len()
        )))
    } else {
        Ok(())
    }
}
