//! `sealcred seal`: a new object, or `--merge-into` an existing one.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;

use sealcred_shared::crd::{Scope, SealedStorageCred, SecretTemplate};
use sealcred_shared::keyring::Keyring;
use sealcred_shared::seal::{self, SealInput};
use sealcred_shared::secret::SecretBytes;

use super::{announce, announce_sealed, keys_for, print_notes, refs, scope_of};
use crate::cli::SealArgs;
use crate::error::CliError;
use crate::input::{self, Entries};
use crate::io::{ClusterTargets, read_sealed_file, render_doc, write_atomic, write_output};
use crate::keys;
use crate::profile;
use crate::rules;

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
        let changing = !labels.is_empty() || !annotations.is_empty();
        return merge_into(&args, target, entries, changing, &keyring).await;
    }

    let lookup = rules::lookup(args.output.output_file.as_deref().unwrap_or(Path::new(".")))?;
    let key_list = rules::resolve_keys(&args.keys.kms, &args.keys.public_key, &lookup, false)?
        .unwrap_or_default();
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
    let cluster = cluster_targets(
        &ClusterArgs {
            namespace: args.namespace.as_deref(),
            target_namespaces: &args.target_namespaces,
            namespace_selector: args.namespace_selector.as_deref(),
        },
        scope,
    )?;
    let namespace = if cluster.is_some() {
        // A ClusterSealedStorageCred has no namespace (a manifest's or a rule's is not its).
        None
    } else {
        args.namespace
            .or(manifest.namespace)
            .or(rule.and_then(|r| r.namespace.clone()))
    };
    if namespace.is_none() && scope != Scope::ClusterWide && scope != Scope::Cluster {
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
    if let Some(out) = &args.output.output_file
        && !args.reseal
        && out.exists()
        && same_as_file(
            out,
            &sealed_input,
            &sealed.object,
            cluster.as_ref(),
            &keyring,
        )
        .await
    {
        eprintln!(
            "sealcred: {}: unchanged (same object, values and keys); not rewritten",
            out.display()
        );
        return Ok(());
    }
    drop(sealed_input);
    print_notes(None, &sealed.notes);
    announce_sealed(&sealed.object);
    let obj = sealed.object;
    let text = render_doc(&obj, cluster.as_ref(), args.output.format)?;
    write_output(args.output.output_file.as_deref(), text.as_bytes())
}

/// The flags [`cluster_targets`] reads.
struct ClusterArgs<'a> {
    namespace: Option<&'a str>,
    target_namespaces: &'a [String],
    namespace_selector: Option<&'a str>,
}

/// With scope `cluster`: the ClusterSealedStorageCred's targets from
/// `--target-namespace` and `--namespace-selector` (at least one), and no
/// `--namespace`. Without it, those two flags are refused.
fn cluster_targets(
    args: &ClusterArgs<'_>,
    scope: Scope,
) -> Result<Option<ClusterTargets>, CliError> {
    let given = !args.target_namespaces.is_empty() || args.namespace_selector.is_some();
    if scope != Scope::Cluster {
        if given {
            return Err(CliError::new(
                "--target-namespace and --namespace-selector need --scope cluster (a ClusterSealedStorageCred)",
            ));
        }
        return Ok(None);
    }
    if args.namespace.is_some() {
        return Err(CliError::new(
            "--namespace: a ClusterSealedStorageCred (--scope cluster) has no namespace",
        )
        .hint("name the namespaces to write the Secret to with --target-namespace NS or --namespace-selector SELECTOR"));
    }
    if !given {
        return Err(
            CliError::new("--scope cluster: no namespace to write the Secret to").hint(
                "give --target-namespace NS (repeatable) and/or --namespace-selector SELECTOR",
            ),
        );
    }
    for (i, ns) in args.target_namespaces.iter().enumerate() {
        sealcred_shared::format::check_object_name("namespace", ns).map_err(|_| {
            CliError::new(format!(
                "--target-namespace (occurrence {}): not a namespace name (lowercase letters, digits, '-', at most 63 characters)",
                i + 1
            ))
        })?;
    }
    let selector = match args.namespace_selector {
        Some(s) => Some(
            crate::selector::parse(s)
                .map_err(|e| CliError::new(format!("--namespace-selector: {e}")))?,
        ),
        None => None,
    };
    let mut namespaces = args.target_namespaces.to_vec();
    namespaces.sort();
    namespaces.dedup();
    Ok(Some(ClusterTargets {
        namespaces,
        selector,
    }))
}

/// Whether `path` already holds what was just sealed: the same object
/// (namespace, name, scope, template, profile), the same values (the file is
/// opened: Decrypt) and the same wrapping keys. Any failure to tell is "no".
async fn same_as_file(
    path: &Path,
    input: &SealInput,
    new: &SealedStorageCred,
    cluster: Option<&ClusterTargets>,
    keyring: &Keyring,
) -> bool {
    let Ok(file) = read_sealed_file(path) else {
        return false;
    };
    let [doc] = &file.docs[..] else {
        return false;
    };
    if doc.cluster.as_ref() != cluster {
        return false;
    }
    let old = &doc.obj;
    let key_ids = |o: &SealedStorageCred| -> Option<std::collections::BTreeSet<String>> {
        let p = sealcred_shared::format::ParsedSpec::parse(&o.spec).ok()?;
        Some(
            p.data_keys[p.head]
                .wrappings
                .iter()
                .map(|w| w.key_id.clone())
                .collect(),
        )
    };
    if old.metadata.name != new.metadata.name
        || old.metadata.namespace != new.metadata.namespace
        || old.spec.scope != new.spec.scope
        || old.spec.template != new.spec.template
        || old.spec.profile != new.spec.profile
        || key_ids(old).is_none()
        || key_ids(old) != key_ids(new)
    {
        return false;
    }
    match seal::open(old, keyring).await {
        Ok(opened) => {
            opened.entries.len() == input.entries.len()
                && input.entries.iter().all(|(k, v)| {
                    opened
                        .entries
                        .get(k)
                        .is_some_and(|o| o.expose() == v.expose())
                })
        }
        Err(_) => false,
    }
}

/// `seal --merge-into`: add or replace entries of an existing sealed file.
async fn merge_into(
    args: &SealArgs,
    target: &Path,
    entries: Entries,
    changing: bool,
    keyring: &Keyring,
) -> Result<(), CliError> {
    merge_into_annotated(args, target, entries, changing, keyring, &BTreeMap::new()).await
}

/// [`merge_into`], also setting `annotations` on the object's metadata (not
/// authenticated, not secret: `rotate-access-key` records its state there).
pub(super) async fn merge_into_annotated(
    args: &SealArgs,
    target: &Path,
    mut entries: Entries,
    changing: bool,
    keyring: &Keyring,
    annotations: &BTreeMap<String, String>,
) -> Result<(), CliError> {
    let file = read_sealed_file(target)?;
    if file.docs.len() > 1 {
        return Err(CliError::new(format!(
            "holds {} documents; --merge-into takes a file with one SealedStorageCred",
            file.docs.len()
        ))
        .in_file(target));
    }
    let existing = file.docs[0].obj.clone();
    if !args.target_namespaces.is_empty() || args.namespace_selector.is_some() {
        return Err(CliError::new(
            "--target-namespace and --namespace-selector do not apply to --merge-into (edit spec.namespaces or spec.namespaceSelector in the file: they are not sealed)",
        )
        .in_file(target));
    }
    if args.secret_type.is_some()
        || args.secret_name.is_some()
        || changing
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
    let confirmed = confirm_binding(target, &existing, args, rule)?;
    let given = keys_for(&args.keys, &lookup, keyring).await?;
    let in_file = |e: seal::Error| CliError::from(e).in_file(target);
    // Stable output: where the user can decrypt, values that are already
    // sealed as given are not sealed again, and a merge that changes nothing
    // leaves the file as it is. Opening the file also verifies all of it.
    let mut verified = false;
    if !args.reseal {
        match seal::open(&existing, keyring).await {
            Ok(opened) => {
                verified = true;
                entries.0.retain(|k, v| {
                    opened
                        .entries
                        .get(k)
                        .is_none_or(|old| old.expose() != v.expose())
                });
                if entries.0.is_empty() {
                    eprintln!(
                        "sealcred: {}: unchanged (every value given is already sealed as it is); not rewritten",
                        target.display()
                    );
                    return Ok(());
                }
            }
            Err(e @ seal::Error::Provider(_)) => eprintln!(
                "sealcred: note: {}: cannot decrypt it to compare values ({e}); sealing every value given (--reseal skips this attempt)",
                target.display()
            ),
            Err(e) => return Err(in_file(e)),
        }
    }
    if given.is_some() && !confirmed && !verified {
        // Keys were chosen, but nothing the user said confirms the file's
        // namespace/name/scope: verify them with Decrypt instead.
        seal::verify_head(&existing, keyring).await.map_err(|e| match e {
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
        None => seal::merge(&existing, &entries.0, seal::Keys::Recorded(keyring))
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
    let mut merged = merged.object;
    if !annotations.is_empty() {
        merged
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(annotations.clone());
    }
    drop(entries);
    // In place: the file's format and the comments above the object are
    // kept. Elsewhere: the format asked for, the comments too.
    let text = match &args.output.output_file {
        None => file.render(&[merged])?,
        Some(_) => {
            file.docs[0].leading.clone()
                + &render_doc(&merged, file.docs[0].cluster.as_ref(), args.output.format)?
        }
    };
    let out = args.output.output_file.as_deref().unwrap_or(target);
    write_atomic(out, text.as_bytes())
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
