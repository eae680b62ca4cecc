//! `sealcred rotate-access-key start|finish FILE`: rotate the IAM user access key
//! a sealed file holds, end to end (issue 16.2).
//!
//! - `start`: the user must have exactly one access key (IAM allows two; with
//!   two there is no room for a new one, and which one the file holds is
//!   unknown: refused). Creates a new key (`iam:CreateAccessKey`) and merges it
//!   into the file as `seal --merge-into` does (no `kms:Decrypt` with `-n`,
//!   `--name` and `--kms`), recording in the file's metadata annotations the
//!   state: `sealcred.io/access-key-rotation: started`, the user, and the old and
//!   new access key *ids* (ids are not secret: they appear in CloudTrail, IAM
//!   listings and error messages; the secret access key is never recorded or
//!   printed). Run again, it finds the recorded new key and does nothing.
//! - `finish`: only when the cluster's SealedStorageCred is this file (same
//!   spec) and its status shows the new Secret live: `Ready=True` for the
//!   current generation, and `ConsumersUpdated=True` when the controller reports
//!   that condition. Then deactivates (`iam:UpdateAccessKey` Inactive) and deletes
//!   (`iam:DeleteAccessKey`) the old key, and records
//!   `sealcred.io/access-key-rotation: finished`. Run again, it finds the old key
//!   gone and only records the state.

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_iam::types::StatusType;
use kube::Api;
use sealcred_shared::crd::SealedStorageCred;
use sealcred_shared::secret::SecretBytes;
use zeroize::Zeroize;

use super::diff::client;
use super::seal::merge_into_annotated;
use crate::cli::{AccessKeyStep, Cli, Command, RotateAccessKeyArgs};
use crate::error::CliError;
use crate::input::Entries;
use crate::io::{read_sealed_file, write_atomic};
use crate::keys;

/// The rotation's state in the file: `started` or `finished`.
pub const STATE: &str = "sealcred.io/access-key-rotation";
/// The IAM user.
pub const USER: &str = "sealcred.io/access-key-user";
/// The key id before the rotation.
pub const OLD: &str = "sealcred.io/access-key-old-id";
/// The key id the rotation created.
pub const NEW: &str = "sealcred.io/access-key-new-id";

/// Entry-name pairs (id, secret) the profiles and `spec.sts` use, in order.
const PAIRS: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ("aws_access_key_id", "aws_secret_access_key"),
    ("FLYTE_AWS_ACCESS_KEY_ID", "FLYTE_AWS_SECRET_ACCESS_KEY"),
    ("access_key", "secret_key"),
];

fn annotation<'a>(obj: &'a SealedStorageCred, key: &str) -> Option<&'a str> {
    obj.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

async fn iam_client() -> aws_sdk_iam::Client {
    let sdk = sealcred_shared::provider::aws::load_sdk_config().await;
    let mut b = aws_sdk_iam::config::Builder::from(&sdk);
    if sdk.region().is_none() {
        // IAM is global; its requests are signed for us-east-1.
        b = b.region(aws_config::Region::new("us-east-1"));
    }
    aws_sdk_iam::Client::from_conf(b.build())
}

fn iam_error(op: &str, user: &str, e: impl std::error::Error) -> CliError {
    // The SDK's error names the code and message (no key material: requests
    // carry only ids; CreateAccessKey's secret is in a response, not an error).
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    CliError::new(format!("IAM {op} for user {user} failed: {msg}"))
}

/// (access key id, active) of each of the user's keys.
async fn list_keys(iam: &aws_sdk_iam::Client, user: &str) -> Result<Vec<(String, bool)>, CliError> {
    let out = iam
        .list_access_keys()
        .user_name(user)
        .send()
        .await
        .map_err(|e| iam_error("ListAccessKeys", user, e))?;
    Ok(out
        .access_key_metadata
        .into_iter()
        .filter_map(|m| {
            let active = m.status == Some(StatusType::Active);
            m.access_key_id.map(|id| (id, active))
        })
        .collect())
}

fn entry_names<'a>(
    obj: &'a SealedStorageCred,
    args: &'a RotateAccessKeyArgs,
    file: &Path,
) -> Result<(String, String), CliError> {
    if let (Some(i), Some(s)) = (&args.id_entry, &args.secret_entry) {
        return Ok((i.clone(), s.clone()));
    }
    let found = PAIRS.iter().find(|(i, s)| {
        args.id_entry.as_deref().is_none_or(|x| x == *i)
            && args.secret_entry.as_deref().is_none_or(|x| x == *s)
            && obj.spec.entries.contains_key(*i)
            && obj.spec.entries.contains_key(*s)
    });
    match found {
        Some((i, s)) => Ok((i.to_string(), s.to_string())),
        None => Err(CliError::new(format!(
            "no access-key entries found (looked for {})",
            PAIRS
                .iter()
                .map(|(i, s)| format!("{i}+{s}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .in_file(file)
        .hint(if obj.spec.profile.as_deref().is_some_and(|p| p.starts_with("flyte-core") || p == "flyte-binary") {
            "this profile renders the key into a config file, which a merge cannot change without decrypting: re-seal it with `sealcred seal --profile ...` or `sealcred edit`"
        } else {
            "name them with --id-entry and --secret-entry"
        })),
    }
}

/// Builds the `seal --merge-into FILE` arguments for this rotation.
fn seal_args(args: &RotateAccessKeyArgs) -> Result<Box<crate::cli::SealArgs>, CliError> {
    let mut argv: Vec<String> = vec!["sealcred".into(), "seal".into(), "--merge-into".into()];
    argv.push(args.file.display().to_string());
    if let Some(n) = &args.namespace {
        argv.extend(["-n".into(), n.clone()]);
    }
    if let Some(n) = &args.name {
        argv.extend(["--name".into(), n.clone()]);
    }
    for k in &args.keys.kms {
        argv.extend(["--kms".into(), k.clone()]);
    }
    if let Some(p) = &args.keys.local_key {
        argv.extend(["--local-key".into(), p.display().to_string()]);
    }
    use clap::Parser;
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Command::Seal(a),
            ..
        }) => Ok(a),
        Ok(_) => unreachable!("parsed as seal"),
        Err(e) => Err(CliError::new(format!("rotate-access-key: {}", e.kind()))),
    }
}

/// `sealcred rotate-access-key`.
pub async fn rotate_access_key(args: &RotateAccessKeyArgs) -> Result<(), CliError> {
    match args.step {
        AccessKeyStep::Start => start(args).await,
        AccessKeyStep::Finish => finish(args).await,
    }
}

fn one_object(path: &Path) -> Result<(crate::io::SealedFile, SealedStorageCred), CliError> {
    let file = read_sealed_file(path)?;
    if file.docs.len() != 1 {
        return Err(CliError::new(format!(
            "holds {} documents; rotate-access-key takes a file with one SealedStorageCred",
            file.docs.len()
        ))
        .in_file(path));
    }
    let obj = file.docs[0].obj.clone();
    Ok((file, obj))
}

async fn start(args: &RotateAccessKeyArgs) -> Result<(), CliError> {
    let path = args.file.as_path();
    let (_, obj) = one_object(path)?;
    let recorded_user = annotation(&obj, USER);
    let user = match (&args.user, recorded_user) {
        (Some(u), _) => u.clone(),
        (None, Some(u)) => u.to_string(),
        (None, None) => {
            return Err(CliError::new(
                "rotate-access-key start: --user NAME is required",
            ));
        }
    };
    let iam = iam_client().await;
    let keys = list_keys(&iam, &user).await?;
    if annotation(&obj, STATE) == Some("started") {
        if recorded_user != Some(user.as_str()) {
            return Err(CliError::new(format!(
                "a rotation for user {} is in progress in this file; finish it first",
                recorded_user.unwrap_or("")
            ))
            .in_file(path));
        }
        let new = annotation(&obj, NEW).unwrap_or("");
        if keys.iter().any(|(id, _)| id == new) {
            eprintln!(
                "sealcred: {}: already started: access key {new} of user {user} is sealed in it; apply the file, then run `sealcred rotate-access-key finish {}`",
                path.display(),
                path.display()
            );
            return Ok(());
        }
        return Err(CliError::new(format!(
            "the rotation recorded new access key {new}, which user {user} no longer has"
        ))
        .in_file(path)
        .hint("seal the user's current key into the file, remove the sealcred.io/access-key-* annotations, and start again"));
    }
    let old = match keys.as_slice() {
        [(id, _)] => id.clone(),
        [] => {
            return Err(CliError::new(format!(
                "user {user} has no access key: nothing to rotate"
            )));
        }
        many => {
            let ids: Vec<&str> = many.iter().map(|(id, _)| id.as_str()).collect();
            return Err(CliError::new(format!(
                "user {user} already has {} access keys ({}); IAM allows two, so there is no room for a new one",
                many.len(),
                ids.join(", ")
            ))
            .hint("delete the key the file does not hold (aws iam delete-access-key), or finish the rotation that created it"));
        }
    };
    let (id_entry, secret_entry) = entry_names(&obj, args, path)?;
    let seal = seal_args(args)?;
    let keyring = keys::keyring(&args.keys, &[]);

    let created = iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .map_err(|e| iam_error("CreateAccessKey", &user, e))?;
    let Some(mut key) = created.access_key else {
        return Err(CliError::new(format!(
            "IAM CreateAccessKey for user {user} returned no key"
        )));
    };
    let new = key.access_key_id.clone();
    let mut entries = Entries::default();
    entries.0 = BTreeMap::from([
        (
            id_entry,
            SecretBytes::copy_from(key.access_key_id.as_bytes()),
        ),
        (
            secret_entry,
            SecretBytes::copy_from(key.secret_access_key.as_bytes()),
        ),
    ]);
    key.secret_access_key.zeroize();
    drop(key);
    let state = BTreeMap::from([
        (STATE.to_string(), "started".to_string()),
        (USER.to_string(), user.clone()),
        (OLD.to_string(), old.clone()),
        (NEW.to_string(), new.clone()),
    ]);
    if let Err(e) = merge_into_annotated(&seal, path, entries, false, &keyring, &state).await {
        // The new key exists but is sealed nowhere: say how to undo it.
        eprintln!(
            "sealcred: error: created access key {new} for user {user}, but {} was not written; delete the key (aws iam delete-access-key --user-name {user} --access-key-id {new}) and run start again",
            path.display()
        );
        return Err(e);
    }
    eprintln!(
        "sealcred: created access key {new} for user {user} and sealed it into {} (old key {old} stays active); apply the file, then run `sealcred rotate-access-key finish {}`",
        path.display(),
        path.display()
    );
    Ok(())
}

/// Whether the cluster runs this file's Secret: the live object has this spec,
/// Ready=True for its generation, and ConsumersUpdated=True when reported.
async fn check_live(
    obj: &SealedStorageCred,
    context: Option<&str>,
    path: &Path,
) -> Result<(), CliError> {
    let ns = obj.metadata.namespace.as_deref().unwrap_or("default");
    let name = obj.metadata.name.as_deref().unwrap_or("");
    let client = client(context).await?;
    let live = Api::<SealedStorageCred>::namespaced(client, ns)
        .get_opt(name)
        .await
        .map_err(|e| CliError::new(format!("reading SealedStorageCred {ns}/{name}: {e}")))?
        .ok_or_else(|| {
            CliError::new(format!(
                "SealedStorageCred {ns}/{name} is not in the cluster"
            ))
            .hint(format!("kubectl apply -f {}", path.display()))
        })?;
    let not_yet = |why: String| {
        CliError::new(format!("not finishing: {why}; the old key stays active")).in_file(path)
    };
    if live.spec != obj.spec {
        return Err(
            not_yet(format!("the cluster's {ns}/{name} is not this file yet"))
                .hint(format!("kubectl apply -f {}", path.display())),
        );
    }
    let status = live.status.unwrap_or_default();
    let gen_ok = status.observed_generation.is_some()
        && status.observed_generation == live.metadata.generation;
    let cond = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
    match cond("Ready") {
        Some(c)
            if c.status == "True"
                && gen_ok
                && c.observed_generation
                    .is_none_or(|g| Some(g) == live.metadata.generation) => {}
        Some(c) => {
            return Err(not_yet(format!(
                "{ns}/{name} is Ready={} ({}) for generation {:?} of {:?}",
                c.status, c.reason, status.observed_generation, live.metadata.generation
            )));
        }
        None => return Err(not_yet(format!("{ns}/{name} has no Ready condition yet"))),
    }
    if let Some(c) = cond("ConsumersUpdated")
        && c.status != "True"
    {
        return Err(not_yet(format!(
            "{ns}/{name}'s consumers are not all updated (ConsumersUpdated={}, {})",
            c.status, c.reason
        )));
    }
    Ok(())
}

async fn finish(args: &RotateAccessKeyArgs) -> Result<(), CliError> {
    let path = args.file.as_path();
    let (file, mut obj) = one_object(path)?;
    let state = annotation(&obj, STATE);
    let (Some(user), Some(old), Some(new)) = (
        annotation(&obj, USER).map(str::to_string),
        annotation(&obj, OLD).map(str::to_string),
        annotation(&obj, NEW).map(str::to_string),
    ) else {
        return Err(CliError::new("no rotation recorded in this file")
            .in_file(path)
            .hint("run `sealcred rotate-access-key start FILE --user NAME` first"));
    };
    if let Some(u) = &args.user
        && *u != user
    {
        return Err(CliError::new(format!(
            "--user {u} differs from the rotation's user {user}"
        ))
        .in_file(path));
    }
    let iam = iam_client().await;
    let keys = list_keys(&iam, &user).await?;
    if state == Some("finished") && !keys.iter().any(|(id, _)| *id == old) {
        eprintln!(
            "sealcred: {}: already finished: user {user}'s old key {old} is deleted",
            path.display()
        );
        return Ok(());
    }
    if !keys.iter().any(|(id, _)| *id == new) {
        return Err(CliError::new(format!(
            "user {user} no longer has the new access key {new}: not deleting the old key {old}"
        ))
        .in_file(path));
    }
    check_live(&obj, args.context.as_deref(), path).await?;
    if let Some((_, active)) = keys.iter().find(|(id, _)| *id == old) {
        if *active {
            iam.update_access_key()
                .user_name(&user)
                .access_key_id(&old)
                .status(StatusType::Inactive)
                .send()
                .await
                .map_err(|e| iam_error("UpdateAccessKey", &user, e))?;
            eprintln!("sealcred: deactivated access key {old} of user {user}");
        }
        iam.delete_access_key()
            .user_name(&user)
            .access_key_id(&old)
            .send()
            .await
            .map_err(|e| iam_error("DeleteAccessKey", &user, e))?;
        eprintln!("sealcred: deleted access key {old} of user {user}");
    }
    obj.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(STATE.to_string(), "finished".to_string());
    write_atomic(path, file.render(&[obj])?.as_bytes())?;
    eprintln!(
        "sealcred: {}: rotation finished (user {user}: {new} active, {old} deleted)",
        path.display()
    );
    Ok(())
}
