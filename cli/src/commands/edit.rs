//! `sealcred edit FILE`: decrypt into `$EDITOR`, re-seal what changed.
//!
//! Plaintext lives in three places, each as briefly as the edit needs:
//! the opened entries (zeroizing, in memory); the editable text (zeroizing);
//! and one file in a private directory (mode 0700, the file 0600) on tmpfs
//! when there is one (`/dev/shm`, else `$XDG_RUNTIME_DIR`, else the temp
//! dir), which the editor reads and writes. That directory is wiped — every
//! file in it overwritten with zeros, then removed, so editor swap and backup
//! files go too — on every way out: success, error, panic (Drop) and
//! SIGTERM/SIGHUP/SIGQUIT (SIGINT is left to the editor while it runs).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sealcred_shared::crd::SealedStorageCred;
use sealcred_shared::seal::{self, Opened};
use sealcred_shared::secret::SecretBytes;
use zeroize::Zeroizing;

use super::{keys_for, print_notes, refs, rule_local_keys};
use crate::cli::KeyArgs;
use crate::error::CliError;
use crate::input;
use crate::io::{read_sealed_file, write_atomic};
use crate::keys;
use crate::rules;

/// The private directory holding the plaintext file; wiped on drop.
struct Scratch {
    dir: PathBuf,
    file: PathBuf,
}

impl Scratch {
    fn create(text: &[u8]) -> Result<Scratch, CliError> {
        let base = tmpfs_dir();
        let dir = tempfile::Builder::new()
            .prefix("sealcred-edit-")
            .tempdir_in(&base)
            .map_err(|e| {
                CliError::new(format!(
                    "{}: cannot create a private directory: {e}",
                    base.display()
                ))
            })?
            .keep();
        // Private before anything is written into it.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| CliError::new(format!("{}: {e}", dir.display())))?;
        }
        let scratch = Scratch {
            file: dir.join("entries.yaml"),
            dir,
        };
        let mut f = std::fs::OpenOptions::new();
        f.write(true).create_new(true);
        {
            use std::os::unix::fs::OpenOptionsExt;
            f.mode(0o600);
        }
        let mut f = f
            .open(&scratch.file)
            .map_err(|e| CliError::new(format!("{}: {e}", scratch.file.display())))?;
        f.write_all(text)
            .and_then(|_| f.sync_all())
            .map_err(|e| CliError::new(format!("{}: {e}", scratch.file.display())))?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        wipe_dir(&self.dir);
    }
}

/// Overwrites every file under `dir` with zeros, then removes it all.
fn wipe_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                wipe_dir(&p);
                continue;
            }
            if let Ok(meta) = std::fs::symlink_metadata(&p)
                && meta.is_file()
                && let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&p)
            {
                let zeros = vec![0u8; meta.len() as usize];
                let _ = f.write_all(&zeros).and_then(|_| f.sync_all());
            }
            let _ = std::fs::remove_file(&p);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Where the plaintext file goes: tmpfs when there is one (never on disk).
fn tmpfs_dir() -> PathBuf {
    let writable = |p: &Path| {
        p.is_dir()
            && tempfile::Builder::new()
                .prefix(".sealcred-probe-")
                .tempfile_in(p)
                .is_ok()
    };
    let shm = Path::new("/dev/shm");
    if writable(shm) {
        return shm.to_path_buf();
    }
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
        && writable(&run)
    {
        return run;
    }
    std::env::temp_dir()
}

/// The text the editor gets: a comment header, then one `name: value` per
/// UTF-8 entry — single-line values double-quoted, multi-line ones as literal
/// blocks with an explicit indentation and chomping indicator, so every value
/// comes back exactly. Binary entries are listed, not shown, and kept.
fn editable_text(
    obj: &SealedStorageCred,
    opened: &Opened,
    file: &Path,
) -> (Zeroizing<String>, Vec<String>) {
    let cap: usize = opened
        .entries
        .iter()
        .map(|(k, v)| k.len() + v.len() * 2 + 16)
        .sum::<usize>()
        + 1024;
    let mut out = Zeroizing::new(String::with_capacity(cap));
    let mut binary = Vec::new();
    out.push_str(&format!(
        "# sealcred edit: {}/{} (scope {}) from {}\n",
        obj.metadata.namespace.as_deref().unwrap_or(""),
        obj.metadata.name.as_deref().unwrap_or(""),
        obj.spec.scope,
        file.display()
    ));
    out.push_str("# One entry per key (`name: value`; multi-line values as `name: |2` blocks).\n");
    out.push_str(
        "# Save and quit to re-seal what you changed; delete a key to remove its entry.\n",
    );
    out.push_str("# Quit without changes to leave the file as it is.\n");
    let mut body = Zeroizing::new(String::with_capacity(cap));
    for (k, v) in &opened.entries {
        let Ok(text) = std::str::from_utf8(v.expose()) else {
            binary.push(k.clone());
            continue;
        };
        let key = serde_json::to_string(k).unwrap_or_default();
        body.push_str(&key);
        body.push_str(": ");
        let multiline = text.contains('\n')
            && !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t');
        if multiline {
            let trailing = text.len() - text.trim_end_matches('\n').len();
            body.push_str(match trailing {
                0 => "|2-\n",
                1 => "|2\n",
                _ => "|2+\n",
            });
            for line in text.trim_end_matches('\n').split('\n') {
                if !line.is_empty() {
                    body.push_str("  ");
                }
                body.push_str(line);
                body.push('\n');
            }
            for _ in 1..trailing {
                body.push('\n');
            }
        } else {
            // A JSON string literal is a YAML double-quoted scalar.
            let quoted = Zeroizing::new(serde_json::to_string(text).unwrap_or_default());
            body.push_str(&quoted);
            body.push('\n');
        }
    }
    if !binary.is_empty() {
        out.push_str(&format!(
            "# Binary entries, not shown and kept as they are: {}\n",
            binary.join(", ")
        ));
    }
    out.push_str(&body);
    (out, binary)
}

/// Runs the editor on `path` and waits; on SIGTERM/SIGHUP/SIGQUIT the editor is
/// killed and the plaintext wiped before exiting.
async fn run_editor(path: &Path, scratch: Scratch) -> Result<Scratch, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let editor = ["SEALCRED_EDITOR", "VISUAL", "EDITOR"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|e| !e.trim().is_empty()))
        .unwrap_or_else(|| "vi".to_string());
    // Through sh, as git does, so EDITOR may carry arguments ("code --wait").
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sealcred-edit")
        .arg(path)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CliError::new(format!("cannot start the editor ({editor}): {e}")))?;
    let mut sigs = Vec::new();
    for kind in [
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::quit(),
        SignalKind::interrupt(),
    ] {
        sigs.push(signal(kind).map_err(|e| CliError::new(format!("cannot watch signals: {e}")))?);
    }
    let [term, hup, quit, int] = &mut sigs[..] else {
        unreachable!()
    };
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| CliError::new(format!("waiting for the editor: {e}")))?;
                if !status.success() {
                    return Err(CliError::new(format!(
                        "the editor ({editor}) exited with {status}; the sealed file is unchanged"
                    )));
                }
                return Ok(scratch);
            }
            _ = int.recv() => continue, // the editor has it too, and decides
            _ = term.recv() => return Err(interrupted(child, scratch, 15).await),
            _ = hup.recv() => return Err(interrupted(child, scratch, 1).await),
            _ = quit.recv() => return Err(interrupted(child, scratch, 3).await),
        }
    }
}

async fn interrupted(mut child: tokio::process::Child, scratch: Scratch, sig: i32) -> CliError {
    let _ = child.kill().await;
    drop(scratch);
    eprintln!(
        "error: interrupted (signal {sig}); the plaintext was wiped and the sealed file is unchanged"
    );
    std::process::exit(128 + sig);
}

/// `sealcred edit`.
pub async fn edit(file: &Path, args: &KeyArgs) -> Result<(), CliError> {
    let sealed = read_sealed_file(file)?;
    if sealed.docs.len() > 1 {
        return Err(CliError::new(format!(
            "holds {} documents; edit takes a file with one SealedStorageCred",
            sealed.docs.len()
        ))
        .in_file(file));
    }
    let obj = &sealed.docs[0].obj;
    let keyring = keys::keyring(args, &rule_local_keys(&[file.to_path_buf()]));
    let opened = seal::open(obj, &keyring)
        .await
        .map_err(|e| CliError::from(e).in_file(file))?;
    let (text, binary) = editable_text(obj, &opened, file);
    let scratch = Scratch::create(text.as_bytes())?;
    drop(text);
    let scratch = run_editor(&scratch.file.clone(), scratch).await?;
    let edited = input::read_secret_file(&scratch.file)?;
    drop(scratch);
    let edited = input::parse_edited(&edited).map_err(|e| e.in_file(file))?;

    let mut upserts: BTreeMap<String, SecretBytes> = BTreeMap::new();
    let mut added = 0;
    for (k, v) in edited.iter() {
        match opened.entries.get(k) {
            Some(old) if old.expose() == v.expose() => {}
            Some(_) => {
                upserts.insert(k.clone(), SecretBytes::copy_from(v.expose()));
            }
            None => {
                added += 1;
                upserts.insert(k.clone(), SecretBytes::copy_from(v.expose()));
            }
        }
    }
    let removals: Vec<String> = opened
        .entries
        .keys()
        .filter(|k| !edited.contains_key(*k) && !binary.contains(k))
        .cloned()
        .collect();
    drop(edited);
    drop(opened);
    if upserts.is_empty() && removals.is_empty() {
        eprintln!("sealcred: {}: no changes; not rewritten", file.display());
        return Ok(());
    }
    let changed = upserts.len() - added;
    let lookup = rules::lookup(file)?;
    let given = keys_for(args, &lookup, &keyring).await?;
    let given_refs = given.as_ref().map(|p| refs(p));
    let keys = match &given_refs {
        Some(p) => seal::Keys::Given(p),
        None => seal::Keys::Recorded(&keyring),
    };
    // Changed and added values only: a merge (the other entries stay
    // byte-for-byte). A removal needs a new head over the whole entry list.
    let out = if removals.is_empty() {
        seal::merge(obj, &upserts, keys).await
    } else {
        seal::rotate_changed(obj, &keyring, keys, &upserts, &removals).await
    }
    .map_err(|e| CliError::from(e).in_file(file))?;
    drop(upserts);
    print_notes(Some(file), &out.notes);
    write_atomic(file, sealed.render(&[out.object])?.as_bytes())?;
    eprintln!(
        "sealcred: {}: {changed} changed, {added} added, {} removed{}",
        file.display(),
        removals.len(),
        if removals.is_empty() {
            ""
        } else {
            " (every entry re-sealed under a new data key)"
        }
    );
    Ok(())
}
