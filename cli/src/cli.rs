//! Command-line definitions (clap derive). Help, completions and the man page
//! are generated from these.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Seal storage credentials into git-safe SealedStorageCred resources.
///
/// Each seal makes a fresh data key (AWS KMS GenerateDataKey, or the local
/// key) bound to the object's namespace, name and scope, and encrypts every
/// value with AES-256-GCM. Only the controller in the cluster (or someone
/// allowed to call kms:Decrypt) can open the result.
#[derive(Parser, Debug)]
#[command(name = "sealcred", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    /// Log level for diagnostics on stderr (error, warn, info, debug, trace, or
    /// a tracing filter). At the default, `warn`, only sealcred's own warnings
    /// are shown: a failure is reported once, as the `error:` line.
    #[arg(long, global = true, env = "SEALCRED_LOG", default_value = "warn")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// YAML (default).
    #[default]
    Yaml,
    /// JSON.
    Json,
}

/// The scope a sealed object is bound to.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeArg {
    /// Bound to namespace and name.
    Strict,
    /// Bound to the namespace; may be renamed.
    NamespaceWide,
    /// Not bound; may be moved anywhere.
    ClusterWide,
    /// Bound to a ClusterSealedStorageCred's name (writes that kind; give
    /// --target-namespace and/or --namespace-selector).
    Cluster,
}

/// Where keys come from.
#[derive(Args, Debug, Clone, Default)]
pub struct KeyArgs {
    /// Key to seal with: a KMS key ARN, key id or alias/NAME; `local` for the
    /// default local key; or local:PATH. Repeat to wrap the data key under
    /// several keys (any one can unseal). Default: the local key.
    #[arg(
        long = "kms",
        value_name = "KEY",
        env = "SEALCRED_KMS",
        value_delimiter = ','
    )]
    pub kms: Vec<String>,

    /// Seal with the public half of an AWS KMS RSA key pair, from a file
    /// written by `sealcred pubkey`: no AWS credentials and no network needed
    /// (only kms:Decrypt on the key opens it). Repeatable; combines with --kms.
    #[arg(long = "public-key", value_name = "FILE")]
    pub public_key: Vec<PathBuf>,

    /// Local key file used to open objects sealed with a local key
    /// (default: $SEALCRED_LOCAL_KEY, else ~/.config/sealcred/local.key).
    #[arg(long, value_name = "PATH")]
    pub local_key: Option<PathBuf>,
}

/// Where output goes.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Yaml)]
    pub format: Format,

    /// Write to this file (atomically: a temporary file, then rename) instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub output_file: Option<PathBuf>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Seal a Secret: from flags like `kubectl create secret generic`, or a
    /// Secret manifest (YAML or JSON) on stdin.
    Seal(Box<SealArgs>),
    /// Show what is inside a sealed file without decrypting (no KMS call).
    Inspect {
        /// The sealed file.
        file: PathBuf,
        /// Output format (`yaml` prints a readable summary).
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Yaml)]
        format: Format,
        /// For `git diff`: one stable line per entry, key and template field
        /// (set `diff.sealcred.textconv` to `sealcred inspect --textconv`; see
        /// docs/git.md). Prints a file that is not sealed as it is.
        #[arg(long, conflicts_with = "format")]
        textconv: bool,
    },
    /// Decrypt a sealed file and print the Secret manifest (needs kms:Decrypt).
    Unseal {
        /// The sealed file.
        file: PathBuf,
        #[command(flatten)]
        keys: KeyArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Decrypt and check every entry of each file; print no values. Exits
    /// non-zero if any file fails (for CI pipelines).
    Verify {
        /// Sealed files (directories with --recursive).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Walk directories for SealedStorageCred files (*.yaml, *.yml, *.json).
        #[arg(short = 'r', long)]
        recursive: bool,
        /// How many files to verify at once (their KMS calls overlap; throttled
        /// calls are retried with backoff).
        #[arg(long, default_value_t = 8, value_parser = concurrency)]
        concurrency: usize,
        /// Use only the wrappings by this key id (as `sealcred inspect` shows
        /// it: a key ARN or local:FINGERPRINT); repeatable. A recovery drill:
        /// proves this key alone opens every data key of every file.
        #[arg(long = "only-key", value_name = "KEY_ID")]
        only_key: Vec<String>,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Compare a sealed file with the live cluster (current kubeconfig
    /// context): per entry same, different, missing or extra — never a value —
    /// and the object's Ready condition. Decrypts the file (kms:Decrypt) and
    /// reads the Secret (get secrets). Exit 0 same, 1 different, 2 error.
    Diff {
        /// The sealed file (one SealedStorageCred).
        file: PathBuf,
        /// The kubeconfig context to use (default: the current one).
        #[arg(long)]
        context: Option<String>,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Decrypt into $EDITOR (a private file on tmpfs, wiped on every exit) and
    /// re-seal only the entries you changed, like `sops edit`.
    Edit {
        /// The sealed file (one SealedStorageCred).
        file: PathBuf,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Re-encrypt each file under a fresh data key (with --kms, under new
    /// keys), or with --add-kms/--remove-kms change only the wrapping keys;
    /// each file is rewritten atomically.
    Rotate(RotateArgs),
    /// Rotate the IAM user access key sealed in a file, in two steps: `start`
    /// creates a new key (iam:CreateAccessKey) and merges it into the file (no
    /// kms:Decrypt with -n/--name and --kms); after the file is applied and the
    /// controller runs the new Secret, `finish` deactivates and deletes the old
    /// key. Each step is idempotent and resumable; the state (user, old and new
    /// key ids: not secret) is kept in the file's annotations. Never prints a
    /// value. See docs/rotation.md.
    RotateAccessKey(RotateAccessKeyArgs),
    /// Pre-commit guard: fail on plaintext Secret manifests, and on files under a
    /// creation rule's path that hold values without being sealed. Prints
    /// names and positions, never content. See docs/git.md.
    Check {
        /// Files or directories (walked, hidden entries skipped).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Write a public-key file for an AWS KMS RSA key pair (one GetPublicKey
    /// call), for sealing offline with `seal --public-key FILE` or a creation
    /// rule's `public_key:`. The file is not secret: commit it. With --check,
    /// compare an existing file with what KMS answers instead.
    Pubkey(PubkeyArgs),
    /// Create a local key file (mode 0600) for development and offline use.
    Keygen {
        /// Where to write the key (default: ~/.config/sealcred/local.key).
        #[arg(long, value_name = "PATH")]
        output_file: Option<PathBuf>,
    },
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// `sealcred pubkey` arguments.
#[derive(Args, Debug)]
pub struct PubkeyArgs {
    /// The RSA key (ENCRYPT_DECRYPT, RSA_2048/3072/4096): ARN, key id or
    /// alias/NAME. The file records the key ARN KMS answers with.
    #[arg(long = "kms", value_name = "KEY", required = true)]
    pub kms: String,
    /// Write the file here (atomically) instead of stdout.
    #[arg(long, value_name = "PATH", conflicts_with = "check")]
    pub output_file: Option<std::path::PathBuf>,
    /// Check that this public-key file holds exactly what KMS answers for
    /// --kms (for CI: a swapped file would seal to someone else's key).
    #[arg(long, value_name = "FILE")]
    pub check: Option<std::path::PathBuf>,
}

/// `sealcred rotate` arguments.
#[derive(Args, Debug)]
pub struct RotateArgs {
    /// Sealed files (directories with --recursive).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Walk directories for SealedStorageCred files (*.yaml, *.yml, *.json).
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Wrap every data key also under this key (values are not re-encrypted;
    /// needs one working existing key). Repeatable.
    #[arg(long = "add-kms", value_name = "KEY")]
    pub add_kms: Vec<String>,
    /// Wrap every data key also under the RSA public key in this file
    /// (written by `sealcred pubkey`). Repeatable.
    #[arg(long = "add-public-key", value_name = "FILE")]
    pub add_public_key: Vec<PathBuf>,
    /// Remove the wrapping by this key id (as `sealcred inspect` shows it). Repeatable.
    #[arg(long = "remove-kms", value_name = "KEY_ID")]
    pub remove_kms: Vec<String>,
    /// How many files to rotate at once (their KMS calls overlap; throttled
    /// calls are retried with backoff).
    #[arg(long, default_value_t = 8, value_parser = concurrency)]
    pub concurrency: usize,
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// The steps of `rotate-access-key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccessKeyStep {
    /// Create the new key and seal it into the file.
    Start,
    /// Deactivate, then delete, the old key (once the new Secret is live).
    Finish,
}

/// `sealcred rotate-access-key` arguments.
#[derive(Args, Debug)]
pub struct RotateAccessKeyArgs {
    /// `start` or `finish`.
    #[arg(value_enum)]
    pub step: AccessKeyStep,
    /// The sealed file (one SealedStorageCred).
    pub file: PathBuf,
    /// The IAM user whose key is sealed in the file (`start`; `finish` reads it
    /// from the file and checks it if given).
    #[arg(long)]
    pub user: Option<String>,
    /// The entry holding the access key id (default: the first of
    /// AWS_ACCESS_KEY_ID, aws_access_key_id, FLYTE_AWS_ACCESS_KEY_ID, access_key
    /// the file has).
    #[arg(long, value_name = "ENTRY")]
    pub id_entry: Option<String>,
    /// The entry holding the secret access key (default: the partner of the id entry).
    #[arg(long, value_name = "ENTRY")]
    pub secret_entry: Option<String>,
    /// The object's name, to merge without kms:Decrypt (with -n and --kms).
    #[arg(long)]
    pub name: Option<String>,
    /// The object's namespace, to merge without kms:Decrypt.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The kubeconfig context `finish` checks the controller's status in.
    #[arg(long)]
    pub context: Option<String>,
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// `sealcred seal` arguments.
#[derive(Args, Debug)]
pub struct SealArgs {
    /// Object (and default Secret) name. Default: the input manifest's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Namespace. Default: the input manifest's namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// What the ciphertext is bound to [default: strict].
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// With --scope cluster: a namespace the ClusterSealedStorageCred writes the Secret
    /// to (repeatable).
    #[arg(long = "target-namespace", value_name = "NS")]
    pub target_namespaces: Vec<String>,
    /// With --scope cluster: the namespaces to write the Secret to, by label
    /// (kubectl syntax: `k=v,k2 in (a,b),!k3`).
    #[arg(long = "namespace-selector", value_name = "SELECTOR")]
    pub namespace_selector: Option<String>,
    /// Secret type (default: Opaque, or the manifest's type).
    #[arg(long = "type", value_name = "TYPE")]
    pub secret_type: Option<String>,
    /// Secret name, when it differs from the object's name.
    #[arg(long, value_name = "NAME")]
    pub secret_name: Option<String>,
    /// A label on the Secret, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// An annotation on the Secret, KEY=VALUE (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// A literal value, KEY=VALUE (repeatable). Note: visible in the process list.
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    pub from_literal: Vec<String>,
    /// A file's content, [KEY=]PATH; a directory adds each regular file (repeatable).
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    pub from_file: Vec<String>,
    /// KEY=VALUE lines from a file (repeatable); `#` comments and blank lines skipped.
    #[arg(long = "from-env-file", value_name = "PATH")]
    pub from_env_file: Vec<PathBuf>,
    /// Read a Secret manifest (YAML or JSON; data and stringData) from this file, `-` for stdin.
    /// Used by default when no --from-* flag is given.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    /// Add or replace entries in this sealed file (no kms:Decrypt needed); it
    /// is rewritten in place unless --output-file is given.
    #[arg(long, value_name = "FILE")]
    pub merge_into: Option<PathBuf>,
    /// Seal every value anew even when the file already holds it: skips the
    /// Decrypt that compares them (by default an unchanged value, or an
    /// unchanged --output-file, is left as it is where the user can decrypt).
    #[arg(long)]
    pub reseal: bool,
    /// Render the Secret a known consumer reads from typed inputs, instead of
    /// raw keys: flyte-core, flyte-binary, flyte-task-env, aws-env (see docs/flyte.md).
    #[arg(long, value_name = "PROFILE", value_parser = parse_profile, help_heading = "Profiles",
          conflicts_with_all = ["from_literal", "from_file", "from_env_file", "manifest"])]
    pub profile: Option<String>,
    /// Access key id (not secret).
    #[arg(
        long,
        value_name = "ID",
        requires = "profile",
        help_heading = "Profiles"
    )]
    pub access_key_id: Option<String>,
    /// Read the secret access key from stdin (never pass it as an argument).
    #[arg(
        long,
        requires = "profile",
        conflicts_with = "secret_access_key_file",
        help_heading = "Profiles"
    )]
    pub secret_access_key_stdin: bool,
    /// Read the secret access key from a file.
    #[arg(
        long,
        value_name = "PATH",
        requires = "profile",
        help_heading = "Profiles"
    )]
    pub secret_access_key_file: Option<PathBuf>,
    /// Bucket (flyte-core, flyte-binary: the metadata container).
    #[arg(long, requires = "profile", help_heading = "Profiles")]
    pub bucket: Option<String>,
    /// Region of the bucket.
    #[arg(long, requires = "profile", help_heading = "Profiles")]
    pub region: Option<String>,
    /// S3-compatible endpoint URL (MinIO, ...), with its scheme: http:// means plain HTTP.
    #[arg(
        long,
        value_name = "URL",
        requires = "profile",
        help_heading = "Profiles"
    )]
    pub endpoint: Option<String>,
    /// Take the access key, secret key, session token and region from this
    /// profile of the AWS shared credentials/config files; flags override.
    #[arg(
        long,
        value_name = "NAME",
        requires = "profile",
        help_heading = "Profiles"
    )]
    pub from_aws_profile: Option<String>,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn concurrency(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err("expected a number from 1 to 256".into()),
    }
}

fn parse_profile(s: &str) -> Result<String, String> {
    match crate::profile::find(s) {
        Some(p) => Ok(p.name.to_string()),
        None => Err(format!(
            "unknown profile; known profiles:\n{}",
            crate::profile::PROFILES
                .iter()
                .map(|p| format!("  {:<15} {}", p.name, p.about))
                .collect::<Vec<_>>()
                .join("\n")
        )),
    }
}
