//! AWS credentials as every AWS tool takes them, and their failures in one line.
//!
//! The credential chain is the SDK's own (environment, the shared profile
//! with `credential_process`, IAM Identity Center (`sso_session` /
//! `sso_start_url`), `aws login` sessions, `role_arn` with `source_profile` or
//! `credential_source`, web identity, ECS/EKS container and EC2 instance
//! credentials). [`explain_failures`] wraps it so that a failure says, in one
//! line, which profile failed, how it gets its credentials, and what to do
//! (`aws sso login --profile P` for an SSO profile without a valid cached
//! session). [`failure_in`] finds that explanation inside an SDK error.
//!
//! Nothing here sees a credential: on success the SDK's credentials pass
//! through untouched; messages are built from the profile's setting names
//! and the SDK's error texts (which name files and exit codes, not keys).

use std::error::Error as StdError;
use std::fmt;

use aws_config::SdkConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_runtime::env_config::file::EnvConfigFiles;
use aws_types::os_shim_internal::{Env, Fs};

/// The longest cause text kept from the SDK (a `credential_process` may
/// print a lot on stderr).
const MAX_CAUSE: usize = 300;

/// Wraps `config`'s credentials provider (if any) so that its failures carry
/// a [`CredentialsFailure`].
pub fn explain_failures(config: SdkConfig) -> SdkConfig {
    match config.credentials_provider() {
        Some(inner) => config
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(Explained(inner)))
            .build(),
        None => config,
    }
}

/// The [`CredentialsFailure`] in an error's source chain, if credentials
/// were the reason a request could not be sent.
pub fn failure_in<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a CredentialsFailure> {
    let mut src: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = src {
        if let Some(f) = e.downcast_ref::<CredentialsFailure>() {
            return Some(f);
        }
        src = e.source();
    }
    None
}

/// Why no AWS credentials could be had: one line naming the profile and what
/// to do. Never holds a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsFailure {
    message: String,
}

impl fmt::Display for CredentialsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for CredentialsFailure {}

#[derive(Debug)]
struct Explained(SharedCredentialsProvider);

impl ProvideCredentials for Explained {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            match self.0.provide_credentials().await {
                Ok(c) => Ok(c),
                Err(e) => {
                    let message = explain(&e, &profiles().await);
                    Err(CredentialsError::provider_error(CredentialsFailure {
                        message,
                    }))
                }
            }
        })
    }
}

/// The selected profile and the profile files, as the SDK reads them (only
/// on a failure; `None` when the files cannot be read or parsed). Read
/// without logging: the SDK already warned about these files once.
async fn profiles() -> Option<aws_config::profile::ProfileSet> {
    use tracing::instrument::WithSubscriber;
    aws_config::profile::load(&Fs::real(), &Env::real(), &EnvConfigFiles::default(), None)
        .with_subscriber(tracing::subscriber::NoSubscriber::default())
        .await
        .ok()
}

/// How a profile gets its credentials, following `source_profile`.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    /// IAM Identity Center; the profile holding the `sso_*` settings.
    Sso(String),
    /// `aws login`; the profile holding `login_session`.
    Login(String),
    /// `credential_process`; the profile holding it.
    Process(String),
    /// Anything else (static keys, web identity, `credential_source`).
    Other,
}

fn source_of(set: &aws_config::profile::ProfileSet, name: &str) -> Option<Source> {
    let mut name = name.to_string();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let p = set.get_profile(&name)?;
        if p.get("sso_session").is_some() || p.get("sso_start_url").is_some() {
            return Some(Source::Sso(name));
        }
        if p.get("login_session").is_some() {
            return Some(Source::Login(name));
        }
        if p.get("credential_process").is_some() && p.get("role_arn").is_none() {
            return Some(Source::Process(name));
        }
        match p.get("source_profile") {
            Some(next) if p.get("role_arn").is_some() && !seen.contains(&next.to_string()) => {
                seen.push(name);
                name = next.to_string();
            }
            _ => return Some(Source::Other),
        }
    }
}

/// The SDK's error chain as one line: generic wrapper texts dropped, the
/// rest joined with ": ", whitespace collapsed, bounded in length.
fn cause(err: &CredentialsError) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = src {
        let text = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let generic = text.starts_with("an error occurred while loading")
            || text == "the credential provider was not enabled"
            || text == "unexpected credentials error";
        if !generic && !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = e.source();
    }
    let mut line = if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    };
    if line.len() > MAX_CAUSE {
        let mut end = MAX_CAUSE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

fn explain(err: &CredentialsError, set: &Option<aws_config::profile::ProfileSet>) -> String {
    let cause = cause(err);
    let Some(set) = set else {
        return format!("no AWS credentials ({cause})");
    };
    let profile = set.selected_profile();
    let via = |base: &str| {
        if base == profile {
            String::new()
        } else {
            format!(" (through source_profile `{base}`)")
        }
    };
    match source_of(set, profile) {
        Some(Source::Sso(base)) => format!(
            "no AWS credentials: profile `{profile}` signs in with IAM Identity Center (SSO){} and has no valid cached session ({cause}); run `aws sso login --profile {base}`",
            via(&base)
        ),
        Some(Source::Login(base)) => format!(
            "no AWS credentials: profile `{profile}` uses an `aws login` session{} that is missing or expired ({cause}); run `aws login --profile {base}`",
            via(&base)
        ),
        Some(Source::Process(base)) => format!(
            "no AWS credentials: the credential_process of profile `{base}` failed ({cause})"
        ),
        Some(Source::Other) => {
            format!("no AWS credentials from profile `{profile}` ({cause})")
        }
        None if profile == "default" => {
            "no AWS credentials found: none in the environment (AWS_ACCESS_KEY_ID), no profile `default` in the AWS config files, no web identity token, no container or instance credentials; set AWS_PROFILE or run `aws configure`".to_string()
        }
        None => format!(
            "no AWS credentials: profile `{profile}` (AWS_PROFILE) is not in the AWS config files"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(config: &str, profile: &str) -> aws_config::profile::ProfileSet {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, config).unwrap();
        let env = Env::from_slice(&[
            ("AWS_CONFIG_FILE", path.to_str().unwrap()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ("AWS_PROFILE", profile),
        ]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(aws_config::profile::load(
            &Fs::real(),
            &env,
            &EnvConfigFiles::default(),
            None,
        ))
        .unwrap()
    }

    const CONFIG: &str = "\
[profile dev]
sso_session = corp
sso_account_id = 111122223333
sso_role_name = Sealer
[sso-session corp]
sso_start_url = https://corp.example/start
sso_region = us-east-1
[profile via-sso]
role_arn = arn:aws:iam::111122223333:role/r
source_profile = dev
[profile proc]
credential_process = /bin/false
[profile loop-a]
role_arn = arn:aws:iam::111122223333:role/r
source_profile = loop-b
[profile loop-b]
role_arn = arn:aws:iam::111122223333:role/r
source_profile = loop-a
";

    #[test]
    fn sources_follow_source_profile_and_stop_on_loops() {
        let s = set(CONFIG, "dev");
        assert_eq!(source_of(&s, "dev"), Some(Source::Sso("dev".into())));
        assert_eq!(source_of(&s, "via-sso"), Some(Source::Sso("dev".into())));
        assert_eq!(source_of(&s, "proc"), Some(Source::Process("proc".into())));
        assert_eq!(source_of(&s, "loop-a"), Some(Source::Other));
        assert_eq!(source_of(&s, "missing"), None);
    }

    #[test]
    fn sso_failure_is_one_line_naming_the_profile_and_the_fix() {
        let s = set(CONFIG, "via-sso");
        let err =
            CredentialsError::provider_error("failed to load the cached SSO token\nsecond line");
        let m = explain(&err, &Some(s));
        assert!(!m.contains('\n'), "{m}");
        assert!(m.contains("profile `via-sso`"), "{m}");
        assert!(m.contains("source_profile `dev`"), "{m}");
        assert!(m.contains("run `aws sso login --profile dev`"), "{m}");
        assert!(
            m.contains("failed to load the cached SSO token second line"),
            "{m}"
        );
    }

    #[test]
    fn causes_are_bounded_and_skip_generic_wrappers() {
        let long = "x".repeat(5000);
        let err = CredentialsError::provider_error(long);
        let c = cause(&err);
        assert!(c.len() <= MAX_CAUSE + '…'.len_utf8(), "{}", c.len());
        assert!(!c.contains("an error occurred while loading"), "{c}");
    }
}
