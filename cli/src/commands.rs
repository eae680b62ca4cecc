//! The subcommands.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use sealcred_shared::crd::{Scope, SealedStorageCred, SecretTemplate};
use sealcred_shared::format::ParsedSpec;
use sealcred_shared::keyring::{Allowlist, Keyring};
use sealcred_shared::provider::KeyProvider;
use sealcred_shared::seal::{self, Opened, SealInput};
use sealcred_shared::secret::SecretBytes;
use zeroize::Zeroizing;

use crate::cli::{Format, KeyArgs, RotateArgs, ScopeArg, SealArgs};
use crate::error::CliError;
use crate::input::{self, Entries};
use crate::io::{read_sealed, render_sealed, write_atomic, write_output};
use crate::keys;
use crate::profile;
use crate::rules;

fn scope_of(s: ScopeArg) -> Scope {
    match s {
        ScopeArg::Strict => Scope::Strict,
        ScopeArg::NamespaceWide => Scope::NamespaceWide,
        ScopeArg::ClusterWide => Scope::ClusterWide,
    }
}

fn refs(p: &[Arc<dyn KeyProvider>]) -> Vec<&dyn KeyProvider> {
    p.iter().map(|p| p.as_ref()).collect()
}

/// Keys for merge/rotate: `--kms` if given, else the matching creation rule's
/// (both [`seal::Keys::Given`]), else the keys recorded in the object —
/// [`seal::Keys::Recorded`], which the library uses only after verifying them.
async fn keys_for(
    args: &KeyArgs,
    lookup: &rules::Lookup,
    keyring: &Keyring,
) -> Result<Option<Vec<Arc<dyn KeyProvider>>>, CliError> {
    match rules::resolve_keys(&args.kms, lookup, true)? {
        Some(list) => Ok(Some(keys::providers(&list, args, keyring).await?)),
        None => Ok(None),
    }
}

/// Prints the library's notes about keys (duplicates, dropped keys) on stderr.
fn print_notes(file: Option<&Path>, notes: &[String]) {
    for n in notes {
        match file {
            Some(f) => eprintln!("sealcred: note: {}: {n}", f.display()),
            None => eprintln!("sealcred: note: {n}"),
        }
    }
}

/// Says on stderr what a seal or merge bound its new data key to and which
/// keys wrap it (issue 13: the user sees what was sealed for).
fn announce_sealed(obj: &SealedStorageCred) {
    let Some(head) = ParsedSpec::parse(&obj.spec)
        .ok()
        .map(|p| obj.spec.data_keys[p.head].clone())
    else {
        return;
    };
    let ns = obj.metadata.namespace.as_deref().unwrap_or("");
    let name = obj.metadata.name.as_deref().unwrap_or("");
    let bound = match obj.spec.scope {
        Scope::Strict => format!("namespace {ns}, name {name}"),
        Scope::NamespaceWide => format!("namespace {ns}, any name"),
        Scope::ClusterWide => "any namespace and name".to_string(),
    };
    let keys: Vec<&str> = head.wrappings.iter().map(|w| w.key_id.as_str()).collect();
    eprintln!(
        "sealcred: sealed for {bound} (scope {}) under {}",
        obj.spec.scope,
        keys.join(", ")
    );
}

fn is_json_file(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|b| b.iter().find(|c| !c.is_ascii_whitespace()).copied())
        == Some(b'{')
}

/// `sealcred seal`.
pub async fn seal(args: SealArgs) -> Result<(), CliError> {
    let mut entries = Entries::default();
    input::add_literals(&mut entries, &args.from_literal)?;
    input::add_files(&mut entries, &args.from_file)?;
    input::add_env_files(&mut entries, &args.from_env_file)?;
    let no_flags =
        args.from_literal.is_empty() && args.from_file.is_empty() && args.from_env_file.is_empty();
    let manifest = match &args.manifest {
        Some(p) => Some(input::read_manifest(p, &mut entries)?),
        None if args.profile.is_some() => {
            entries.0 = profile_entries(&args)?;
            None
        }
        None if no_flags => {
            if std::io::stdin().is_terminal() {
                return Err(CliError::new("nothing to seal").hint(
                    "give --from-literal KEY=VALUE, --from-file [KEY=]PATH, --from-env-file PATH, or pipe a Secret manifest on stdin",
                ));
            }
            Some(input::read_manifest(Path::new("-"), &mut entries)?)
        }
        None => None,
    }
    .unwrap_or_default();

    let labels = input::parse_pairs("--label", &args.labels)?;
    let annotations = input::parse_pairs("--annotation", &args.annotations)?;
    let keyring = keys::keyring(&args.keys, &[]);

    if let Some(target) = &args.merge_into {
        let existing = read_sealed(target)?;
        if args.secret_type.is_some()
            || args.secret_name.is_some()
            || !labels.is_empty()
            || !annotations.is_empty()
            || args
                .scope
                .is_some_and(|s| scope_of(s) != existing.spec.scope)
            || (args.profile.is_some() && args.profile != existing.spec.profile)
        {
            return Err(CliError::new(format!(
                "--merge-into {}: the Secret template and scope cannot change in a merge (they are authenticated under every data key)",
                target.display()
            ))
            .hint("use `sealcred rotate` after editing, or seal a new object"));
        }
        for (flag, given, have) in [
            ("--name", &args.name, &existing.metadata.name),
            ("--namespace", &args.namespace, &existing.metadata.namespace),
        ] {
            if let Some(g) = given
                && Some(g) != have.as_ref()
            {
                return Err(CliError::new(format!(
                    "--merge-into {}: {flag} {g:?} differs from the file's {:?}",
                    target.display(),
                    have.as_deref().unwrap_or("")
                )));
            }
        }
        let lookup = rules::lookup(args.output.output_file.as_deref().unwrap_or(target))?;
        announce(&lookup);
        let rule = match &lookup {
            rules::Lookup::Matched(r) => Some(r),
            _ => None,
        };
        let confirmed = confirm_binding(target, &existing, &args, rule)?;
        let given = keys_for(&args.keys, &lookup, &keyring).await?;
        let in_file = |e: seal::Error| CliError::from(e).in_file(target);
        if given.is_some() && !confirmed {
            // Keys were chosen, but nothing the user said confirms the file's
            // namespace/name/scope: verify them with Decrypt instead.
            seal::verify_head(&existing, &keyring).await.map_err(|e| match e {
                seal::Error::Provider(p) => CliError::new(format!(
                    "{}: cannot confirm the namespace, name and scope this file claims ({}): {}",
                    target.display(),
                    claimed_binding(&existing),
                    p.message
                ))
                .hint("pass the ones it should have (-n NAMESPACE --name NAME, and --scope if not strict) to merge without kms:Decrypt"),
                other => in_file(other),
            })?;
        }
        let merged = match &given {
            Some(p) => seal::merge(&existing, &entries.0, seal::Keys::Given(&refs(p))).await,
            None => seal::merge(&existing, &entries.0, seal::Keys::Recorded(&keyring))
                .await
                .map_err(|e| match e {
                    seal::Error::Provider(p) => seal::Error::Input(format!(
                        "no --kms and no creation rule, so the keys recorded in the file are used, and they must be verified first: {}",
                        p.message
                    )),
                    other => other,
                }),
        }
        .map_err(in_file)?;
        print_notes(Some(target), &merged.notes);
        announce_sealed(&merged.object);
        let merged = merged.object;
        drop(entries);
        let format = if args.output.output_file.is_none() && is_json_file(target) {
            Format::Json
        } else {
            args.output.format
        };
        let text = render_sealed(&merged, format)?;
        let out = args.output.output_file.as_deref().unwrap_or(target);
        return write_atomic(out, text.as_bytes());
    }

    let lookup = rules::lookup(args.output.output_file.as_deref().unwrap_or(Path::new(".")))?;
    let key_list = rules::resolve_keys(&args.keys.kms, &lookup, false)?.unwrap_or_default();
    announce(&lookup);
    let rule = match &lookup {
        rules::Lookup::Matched(r) => Some(r),
        _ => None,
    };
    let name = args.name.or(manifest.name).ok_or_else(|| {
        CliError::new("no name: pass --name, or give a manifest with metadata.name")
    })?;
    let scope = args
        .scope
        .map(scope_of)
        .or(rule.and_then(|r| r.scope))
        .unwrap_or(Scope::Strict);
    let namespace = args
        .namespace
        .or(manifest.namespace)
        .or(rule.and_then(|r| r.namespace.clone()));
    if namespace.is_none() && scope != Scope::ClusterWide {
        return Err(CliError::new(format!(
            "no namespace: scope {scope} binds the namespace; pass --namespace (or -n)"
        )));
    }
    let mut all_labels = manifest.labels;
    all_labels.extend(labels);
    let mut all_annotations = manifest.annotations;
    all_annotations.extend(annotations);
    let template = SecretTemplate {
        name: args.secret_name,
        type_: args
            .secret_type
            .or(manifest.type_)
            .unwrap_or_else(|| "Opaque".into()),
        labels: all_labels,
        annotations: all_annotations,
    };
    let sealed_input = SealInput {
        name,
        namespace,
        scope,
        template,
        profile: args.profile.clone(),
        entries: entries.0,
    };
    let providers = keys::providers(&key_list, &args.keys, &keyring).await?;
    let sealed = seal::seal(&sealed_input, &refs(&providers)).await?;
    drop(sealed_input);
    print_notes(None, &sealed.notes);
    announce_sealed(&sealed.object);
    let obj = sealed.object;
    let text = render_sealed(&obj, args.output.format)?;
    write_output(args.output.output_file.as_deref(), text.as_bytes())
}

/// `namespace/name (scope S)` as the file's metadata claims it (not secret).
fn claimed_binding(obj: &SealedStorageCred) -> String {
    format!(
        "{}/{} (scope {})",
        obj.metadata.namespace.as_deref().unwrap_or(""),
        obj.metadata.name.as_deref().unwrap_or(""),
        obj.spec.scope
    )
}

/// Checks the binding a file claims (metadata namespace and name, spec scope:
/// unauthenticated until a data key is verified) against what the user said:
/// flags and the creation rule. A contradiction is an error; returns whether
/// everything the scope binds was confirmed (the scope itself, by `--scope`,
/// the rule, or being the strictest; the namespace by `-n` or the rule; the
/// name by `--name`).
fn confirm_binding(
    target: &Path,
    existing: &SealedStorageCred,
    args: &SealArgs,
    rule: Option<&rules::Rule>,
) -> Result<bool, CliError> {
    let scope = existing.spec.scope;
    let differs = |what: &str, said: &str, have: &str| {
        CliError::new(format!(
            "--merge-into {}: {what} {said:?} differs from the file's {have:?}",
            target.display()
        ))
    };
    if let Some(r) = rule {
        if let Some(s) = r.scope
            && s != scope
        {
            return Err(differs(
                &format!("creation rule {}'s scope", r.index),
                s.as_str(),
                scope.as_str(),
            ));
        }
        if let Some(ns) = &r.namespace
            && scope != Scope::ClusterWide
            && Some(ns) != existing.metadata.namespace.as_ref()
        {
            return Err(differs(
                &format!("creation rule {}'s namespace", r.index),
                ns,
                existing.metadata.namespace.as_deref().unwrap_or(""),
            ));
        }
    }
    let scope_ok =
        scope == Scope::Strict || args.scope.is_some() || rule.is_some_and(|r| r.scope.is_some());
    let ns_ok = scope == Scope::ClusterWide
        || args.namespace.is_some()
        || rule.is_some_and(|r| r.namespace.is_some());
    let name_ok = scope != Scope::Strict || args.name.is_some();
    Ok(scope_ok && ns_ok && name_ok)
}

/// Says on stderr which creation rule applies (SOPS users asked for this).
fn announce(lookup: &rules::Lookup) {
    if let rules::Lookup::Matched(r) = lookup {
        eprintln!(
            "sealcred: using creation rule {} of {}",
            r.index,
            r.file.display()
        );
    }
}

/// Validates the typed profile inputs and renders the profile's keys.
fn profile_entries(args: &SealArgs) -> Result<BTreeMap<String, SecretBytes>, CliError> {
    let name = args.profile.as_deref().unwrap_or_default();
    let p =
        profile::find(name).ok_or_else(|| CliError::new(format!("unknown profile {name:?}")))?;
    let mut i = profile::Inputs {
        access_key_id: args
            .access_key_id
            .as_deref()
            .map(|a| SecretBytes::copy_from(a.as_bytes())),
        bucket: args.bucket.clone(),
        region: args.region.clone(),
        ..Default::default()
    };
    if let Some(a) = &args.access_key_id
        && (a.is_empty() || !a.bytes().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(CliError::new(
            "--access-key-id: expected letters and digits only",
        ));
    }
    if args.secret_access_key_stdin {
        i.secret_access_key = Some(profile::secret_from_stdin()?);
    } else if let Some(f) = &args.secret_access_key_file {
        i.secret_access_key = Some(profile::secret_from_file(f)?);
    }
    if let Some(e) = &args.endpoint {
        i.endpoint = Some(profile::check_endpoint(e)?);
    }
    if let Some(aws) = &args.from_aws_profile {
        profile::from_aws_profile(aws, &mut i)?;
    }
    if let Some(b) = &i.bucket {
        profile::check_bucket(b)?;
    }
    if let Some(r) = &i.region {
        profile::check_region(r)?;
    }
    p.render(&i)
}

/// `sealcred inspect`.
pub fn inspect(file: &Path, format: Format) -> Result<(), CliError> {
    let obj = read_sealed(file)?;
    let parsed =
        ParsedSpec::parse(&obj.spec).map_err(|e| CliError::new(e.to_string()).in_file(file))?;
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let secret = parsed.template.name.clone().unwrap_or_else(|| name.clone());
    let entries: Vec<serde_json::Value> = parsed
        .entries
        .iter()
        .map(|(n, e)| {
            serde_json::json!({
                "name": n,
                "bytes": e.ciphertext.len(),
                "dataKey": parsed.data_keys[e.data_key].id_b64,
            })
        })
        .collect();
    let data_keys: Vec<serde_json::Value> = obj
        .spec
        .data_keys
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id,
                "sealedAt": d.sealed_at,
                "entries": d.names.iter().filter(|n| obj.spec.entries.get(*n).is_some_and(|e| e.data_key == d.id)).collect::<Vec<_>>(),
                "wrappedBy": d.wrappings.iter().map(|w| w.key_id.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let text = match format {
        Format::Json => {
            let v = serde_json::json!({
                "file": file.display().to_string(),
                "name": name,
                "namespace": ns,
                "scope": parsed.scope.as_str(),
                "secret": {"name": secret, "type": parsed.template.type_, "labels": parsed.template.labels, "annotations": parsed.template.annotations},
                "profile": parsed.profile,
                "formatVersion": parsed.version,
                "suite": parsed.suite,
                "entries": entries,
                "dataKeys": data_keys,
            });
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        }
        Format::Yaml => {
            let mut s = String::new();
            let bound = match parsed.scope {
                Scope::Strict => format!("bound to namespace {ns} and name {name}"),
                Scope::NamespaceWide => format!("bound to namespace {ns}"),
                Scope::ClusterWide => "not bound to a namespace or name".into(),
            };
            s += &format!("{}: SealedStorageCred {ns}/{name}\n", file.display());
            s += &format!("  scope:    {} ({bound})\n", parsed.scope);
            s += &format!("  secret:   {secret} (type {})\n", parsed.template.type_);
            if let Some(p) = &parsed.profile {
                s += &format!("  profile:  {p}\n");
            }
            s += &format!(
                "  format:   version {}, suite {}\n",
                parsed.version, parsed.suite
            );
            s += &format!("  entries:  {}\n", parsed.entries.len());
            for (n, e) in &parsed.entries {
                let dk = parsed.data_keys[e.data_key].id_b64.get(..8).unwrap_or("");
                s += &format!("    {n}  {} bytes  (data key {dk}…)\n", e.ciphertext.len());
            }
            s += &format!("  data keys: {}\n", obj.spec.data_keys.len());
            for d in &obj.spec.data_keys {
                s += &format!(
                    "    {}…  sealed {}\n",
                    d.id.get(..8).unwrap_or(""),
                    d.sealed_at.as_deref().unwrap_or("(unknown)")
                );
                for w in &d.wrappings {
                    s += &format!("      wrapped by {}\n", w.key_id);
                }
            }
            s
        }
    };
    write_output(None, text.as_bytes())
}

/// Renders an opened object as a Secret manifest into a zeroizing buffer.
/// Strings are written as JSON string literals, which YAML also reads.
fn render_secret(obj: &SealedStorageCred, opened: &Opened, format: Format) -> Zeroizing<String> {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let cap: usize = opened
        .entries
        .iter()
        .map(|(k, v)| k.len() + v.len().div_ceil(3) * 4 + 16)
        .sum::<usize>()
        + 1024;
    let mut out = Zeroizing::new(String::with_capacity(cap));
    let ns = obj.metadata.namespace.as_deref();
    let t = &opened.template;
    match format {
        Format::Json => {
            out.push_str(
                "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Secret\",\n  \"metadata\": {\n",
            );
            out.push_str(&format!("    \"name\": {}", q(&opened.secret_name)));
            if let Some(ns) = ns {
                out.push_str(&format!(",\n    \"namespace\": {}", q(ns)));
            }
            for (field, map) in [("labels", &t.labels), ("annotations", &t.annotations)] {
                if !map.is_empty() {
                    let body: Vec<String> = map
                        .iter()
                        .map(|(k, v)| format!("{}: {}", q(k), q(v)))
                        .collect();
                    out.push_str(&format!(",\n    \"{field}\": {{{}}}", body.join(", ")));
                }
            }
            out.push_str(&format!(
                "\n  }},\n  \"type\": {},\n  \"data\": {{",
                q(&t.type_)
            ));
            for (i, (k, v)) in opened.entries.iter().enumerate() {
                out.push_str(if i == 0 { "\n    " } else { ",\n    " });
                out.push_str(&q(k));
                out.push_str(": \"");
                STANDARD.encode_string(v.expose(), &mut out);
                out.push('"');
            }
            out.push_str("\n  }\n}\n");
        }
        Format::Yaml => {
            out.push_str("apiVersion: v1\nkind: Secret\nmetadata:\n");
            out.push_str(&format!("  name: {}\n", q(&opened.secret_name)));
            if let Some(ns) = ns {
                out.push_str(&format!("  namespace: {}\n", q(ns)));
            }
            for (field, map) in [("labels", &t.labels), ("annotations", &t.annotations)] {
                if !map.is_empty() {
                    out.push_str(&format!("  {field}:\n"));
                    for (k, v) in map {
                        out.push_str(&format!("    {}: {}\n", q(k), q(v)));
                    }
                }
            }
            out.push_str(&format!("type: {}\ndata:\n", q(&t.type_)));
            for (k, v) in &opened.entries {
                out.push_str("  ");
                out.push_str(&q(k));
                out.push_str(": ");
                STANDARD.encode_string(v.expose(), &mut out);
                out.push('\n');
            }
        }
    }
    out
}

/// Local key files named by the creation rules that apply to `files`.
fn rule_local_keys(files: &[PathBuf]) -> Vec<PathBuf> {
    files
        .iter()
        .filter_map(|f| match rules::lookup(f) {
            Ok(rules::Lookup::Matched(r)) => Some(keys::local_paths(&r.kms)),
            _ => None,
        })
        .flatten()
        .collect()
}

/// `sealcred unseal`.
pub async fn unseal(
    file: &Path,
    keys: &KeyArgs,
    format: Format,
    output: Option<&Path>,
) -> Result<(), CliError> {
    let obj = read_sealed(file)?;
    let keyring = keys::keyring(keys, &rule_local_keys(&[file.to_path_buf()]));
    let opened = seal::open(&obj, &keyring)
        .await
        .map_err(|e| CliError::from(e).in_file(file))?;
    let text = render_secret(&obj, &opened, format);
    drop(opened);
    write_output(output, text.as_bytes())
}

/// `sealcred verify`.
pub async fn verify(
    paths: &[PathBuf],
    recursive: bool,
    concurrency: usize,
    only: &[String],
    keys: &KeyArgs,
) -> Result<(), CliError> {
    let files = &collect_files(paths, recursive)?;
    if files.is_empty() {
        return Err(CliError::new("no SealedStorageCred files found"));
    }
    let mut keyring = keys::keyring(keys, &rule_local_keys(files));
    if !only.is_empty() {
        if let Some(bad) = only
            .iter()
            .find(|k| k.ends_with('*') || k.trim().is_empty())
        {
            return Err(CliError::new(format!(
                "--only-key {bad:?}: give a key id exactly as `sealcred inspect` shows it"
            )));
        }
        keyring = keyring.with_allowlist(Allowlist::only(only.iter().cloned()));
    }
    // Concurrently, at most `concurrency` files at a time; reported in file
    // order. Each file's plaintext is dropped inside its task: only entry names
    // leave it.
    let keyring = &keyring;
    let mut results = futures::stream::iter(files)
        .map(|f| async move {
            let obj = read_sealed(f)?;
            let opened = seal::open(&obj, keyring)
                .await
                .map_err(|e| CliError::from(e).in_file(f))?;
            let names: Vec<String> = opened.entries.keys().cloned().collect();
            drop(opened);
            Ok::<_, CliError>((seal::duplicate_wrappings(&obj), names))
        })
        .buffered(concurrency);
    let mut failed = 0;
    let mut i = 0;
    while let Some(result) = results.next().await {
        let f = &files[i];
        i += 1;
        match result {
            Ok((duplicates, names)) => {
                for (dk, key) in duplicates {
                    eprintln!(
                        "warning: {}: data key {}… is wrapped twice by {key}: a second key it should have been wrapped by is missing (see docs/rotation.md, \"Repairing duplicate wrappings\")",
                        f.display(),
                        dk.get(..8).unwrap_or("")
                    );
                }
                println!(
                    "ok    {} ({} entries: {})",
                    f.display(),
                    names.len(),
                    names.join(", ")
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(CliError::new(format!(
            "{failed} of {} files failed verification",
            files.len()
        )));
    }
    Ok(())
}

/// Expands directories (with --recursive) into the SealedStorageCred files in them.
fn collect_files(paths: &[PathBuf], recursive: bool) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        if !recursive {
            return Err(CliError::new(format!(
                "{} is a directory; pass --recursive for every sealed file in it",
                p.display()
            )));
        }
        let mut stack = vec![p.clone()];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| CliError::new(format!("{}: {e}", dir.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for e in entries {
                let name = e
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if name.starts_with('.') {
                    continue;
                }
                if e.is_dir() {
                    stack.push(e);
                } else if (name.ends_with(".yaml")
                    || name.ends_with(".yml")
                    || name.ends_with(".json"))
                    && std::fs::read_to_string(&e).is_ok_and(|t| t.contains("SealedStorageCred"))
                {
                    out.push(e);
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Refuses, before anything is written, a `--remove-kms` that names no
/// wrapping in any of the files (a typo or an alias would otherwise leave the
/// key in place, silently).
fn check_remove_kms(files: &[PathBuf], remove: &[String]) -> Result<(), CliError> {
    let mut found = vec![false; remove.len()];
    for f in files {
        let Ok(obj) = read_sealed(f) else { continue };
        for (i, k) in remove.iter().enumerate() {
            found[i] |= obj
                .spec
                .data_keys
                .iter()
                .any(|d| d.wrappings.iter().any(|w| &w.key_id == k));
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
    let rewrap = !args.add_kms.is_empty() || !args.remove_kms.is_empty();
    if rewrap && !args.keys.kms.is_empty() {
        return Err(CliError::new(
            "--kms (new data key under new keys) cannot be combined with --add-kms/--remove-kms (same data key, changed wrappings)",
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
    let add = if args.add_kms.is_empty() {
        Vec::new()
    } else {
        keys::providers(&args.add_kms, keys, &keyring).await?
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
                let obj = read_sealed(f)?;
                let out = if rewrap {
                    seal::rewrap(&obj, keyring, &refs(add), &args.remove_kms).await
                } else {
                    match keys_for(keys, lookup, keyring).await? {
                        Some(p) => seal::rotate(&obj, keyring, seal::Keys::Given(&refs(&p))).await,
                        None => seal::rotate(&obj, keyring, seal::Keys::Recorded(keyring)).await,
                    }
                }
                .map_err(|e| CliError::from(e).in_file(f))?;
                let format = if is_json_file(f) {
                    Format::Json
                } else {
                    Format::Yaml
                };
                write_atomic(f, render_sealed(&out.object, format)?.as_bytes())?;
                Ok::<_, CliError>(out.notes)
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

/// `sealcred keygen`.
pub fn keygen(path: Option<&Path>) -> Result<(), CliError> {
    let path = path
        .map(Path::to_path_buf)
        .or_else(sealcred_shared::provider::local::default_path)
        .ok_or_else(|| CliError::new("no key path: pass --output-file"))?;
    if path.exists() {
        return Err(CliError::new(format!(
            "{} already exists; not overwriting it",
            path.display()
        )));
    }
    let k = sealcred_shared::provider::local::LocalKey::create(&path)?;
    println!("{} {}", k.key_id(), path.display());
    Ok(())
}
