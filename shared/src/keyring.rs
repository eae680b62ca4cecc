//! Resolving the key ids recorded in an object to providers, under an allowlist.
//!
//! A key id inside a sealed object is attacker-controlled: whoever can write the
//! object can name any KMS key in any account. The [`Keyring`] only calls keys
//! that its [`Allowlist`] accepts, passes the recorded id as the expected
//! `KeyId`, and tries a data key's wrappings in order until one works.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use tokio::sync::OnceCell;

use crate::format::{Binding, ParsedDataKey};
use crate::provider::aws::{AwsKms, arn_region, load_sdk_config};
use crate::provider::kms_rsa::KmsRsa;
use crate::provider::local::{self, LocalKey};
use crate::provider::rsa;
use crate::provider::{
    EncryptionContext, KeyProvider, ProviderError, ProviderErrorKind, is_aws_key_id,
    is_local_key_id,
};
use crate::secret::DataKey;

/// Which recorded key ids may be called. Entries are exact key ids, or
/// prefixes ending in `*` (e.g. `arn:aws:kms:eu-west-1:111122223333:key/*`).
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    entries: Option<Vec<String>>,
}

/// An allowlist entry whose `*` would match more than its author meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "allowlist entry {entry:?}: {problem}; a '*' may only end an entry, right after '/' or ':' (e.g. arn:aws:kms:eu-west-1:111122223333:key/*)"
)]
pub struct AllowlistError {
    /// The entry as given (an operator's configuration, never a secret).
    pub entry: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl Allowlist {
    /// Allows only the listed ids / prefixes, after checking that every `*`
    /// ends its entry right after `/` or `:`. A prefix cut inside a field
    /// over-matches: `arn:aws:kms:eu-west-1:1111*` also allows account
    /// `11112222…`, and `…:key/ab*` any key id starting with `ab`. A bare `*`
    /// (every key) is refused too.
    pub fn checked(entries: impl IntoIterator<Item = String>) -> Result<Self, AllowlistError> {
        let list = Allowlist::only(entries);
        for e in list.entries.iter().flatten() {
            let bad = |problem| {
                Err(AllowlistError {
                    entry: e.clone(),
                    problem,
                })
            };
            match e.find('*') {
                None => {}
                Some(i) if i + 1 != e.len() => return bad("'*' is not at the end"),
                Some(0) => return bad("a bare '*' would allow every key"),
                Some(i) if !matches!(e.as_bytes()[i - 1], b'/' | b':') => {
                    return bad("'*' does not come right after '/' or ':'");
                }
                Some(_) => {}
            }
        }
        Ok(list)
    }

    /// Allows every key (the CLI's default: the user chose the file).
    pub fn any() -> Self {
        Allowlist { entries: None }
    }

    /// Allows only the listed ids / prefixes.
    pub fn only(entries: impl IntoIterator<Item = String>) -> Self {
        Allowlist {
            entries: Some(entries.into_iter().filter(|e| !e.is_empty()).collect()),
        }
    }

    /// Whether `key_id` may be called. For an RSA wrapping
    /// (`rsaes-oaep-sha256:ARN`) the key called is the ARN: an entry matching
    /// the ARN allows it, as does one matching the whole key id.
    pub fn allows(&self, key_id: &str) -> bool {
        let arn = crate::provider::rsa::arn_of(key_id);
        match &self.entries {
            None => true,
            Some(list) => list.iter().any(|e| {
                let matches = |id: &str| match e.strip_suffix('*') {
                    Some(prefix) => id.starts_with(prefix),
                    None => id == e,
                };
                matches(key_id) || arn.is_some_and(matches)
            }),
        }
    }
}

/// Called after every key-provider call: operation, key id, outcome, latency.
/// Used by the controller's metrics; never sees key material.
pub type CallObserver =
    Arc<dyn Fn(&str, &str, Result<(), &ProviderErrorKind>, Duration) + Send + Sync>;

/// One unwrap call as [`Keyring::unwrap_observed`] reports it: which key was
/// called for which data key, with which EncryptionContext, the outcome and the
/// service's request id. Names and ids only; never key material or a value.
#[derive(Debug)]
pub struct UnwrapCall<'a> {
    /// The recorded key id that was called (a KMS key ARN, or `local:…`).
    pub key_id: &'a str,
    /// The data key's id (base64), as in the object.
    pub data_key_id: &'a str,
    /// The EncryptionContext passed (scope, namespace, name as bound: not secret).
    pub context: &'a EncryptionContext,
    /// The outcome.
    pub result: Result<(), &'a ProviderErrorKind>,
    /// The service's request id, where it returned one (AWS KMS).
    pub request_id: Option<&'a str>,
    /// How long the call took.
    pub latency: Duration,
}

/// Resolves recorded key ids to providers.
pub struct Keyring {
    allow: Allowlist,
    local_paths: Vec<PathBuf>,
    local: Mutex<HashMap<PathBuf, Arc<LocalKey>>>,
    sdk: OnceCell<SdkConfig>,
    aws: Mutex<HashMap<String, Arc<AwsKms>>>,
    region_endpoints: HashMap<String, String>,
    observer: Option<CallObserver>,
    extra: HashMap<String, Arc<dyn KeyProvider>>,
}

impl Keyring {
    /// A keyring. `local_path` is the local key file to use for `local:` ids
    /// (default: [`local::default_path`]).
    pub fn new(allow: Allowlist, local_path: Option<PathBuf>) -> Self {
        Keyring {
            allow,
            local_paths: local_path
                .or_else(local::default_path)
                .into_iter()
                .collect(),
            local: Mutex::new(HashMap::new()),
            sdk: OnceCell::new(),
            aws: Mutex::new(HashMap::new()),
            region_endpoints: HashMap::new(),
            observer: None,
            extra: HashMap::new(),
        }
    }

    /// Adds local key files to try (after the primary one) for `local:` ids;
    /// the one whose fingerprint matches the recorded id is used.
    pub fn with_local_keys(mut self, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        for p in paths {
            if !self.local_paths.contains(&p) {
                self.local_paths.push(p);
            }
        }
        self
    }

    /// Uses an already loaded AWS configuration.
    pub fn with_sdk_config(self, sdk: SdkConfig) -> Self {
        let _ = self.sdk.set(sdk);
        self
    }

    /// KMS endpoints per region (region → URL), for keys whose ARN names that
    /// region; other regions use the configuration's endpoint. For VPC
    /// endpoints, and for tests with one KMS server per region.
    pub fn with_region_endpoints(mut self, endpoints: HashMap<String, String>) -> Self {
        self.region_endpoints = endpoints;
        self
    }

    /// Uses `provider` for wrappings recorded with exactly `key_id` (still
    /// under the allowlist), before the built-in providers: for a provider
    /// this library does not build itself (tests open RSA wrappings with a
    /// test-only private key this way).
    pub fn with_provider(mut self, key_id: &str, provider: Arc<dyn KeyProvider>) -> Self {
        self.extra.insert(key_id.to_string(), provider);
        self
    }

    /// Replaces the allowlist.
    pub fn with_allowlist(mut self, allow: Allowlist) -> Self {
        self.allow = allow;
        self
    }

    /// Reports every provider call to `observer`.
    pub fn with_observer(mut self, observer: CallObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The allowlist.
    pub fn allowlist(&self) -> &Allowlist {
        &self.allow
    }

    /// Checks, with no call made, that every data key has at least one
    /// wrapping this keyring may call.
    pub fn check_allowed(&self, dks: &[ParsedDataKey]) -> Result<(), ProviderError> {
        for dk in dks {
            if !dk.wrappings.iter().any(|w| self.allow.allows(&w.key_id)) {
                let ids: Vec<&str> = dk.wrappings.iter().map(|w| w.key_id.as_str()).collect();
                return Err(ProviderError::new(
                    ProviderErrorKind::KeyNotAllowed,
                    format!(
                        "data key {} is wrapped only by keys not on the allowlist: {}",
                        dk.id_b64,
                        ids.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The local key whose id is `key_id`, from the candidate files.
    fn local_key(&self, key_id: &str) -> Result<Arc<LocalKey>, ProviderError> {
        let mut first_err = None;
        for path in &self.local_paths {
            let cached = self.local.lock().unwrap().get(path).cloned();
            let key = match cached {
                Some(k) => k,
                None => match LocalKey::load(path) {
                    Ok(k) => {
                        let k = Arc::new(k);
                        self.local.lock().unwrap().insert(path.clone(), k.clone());
                        k
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                        continue;
                    }
                },
            };
            if key.key_id() == key_id {
                return Ok(key);
            }
            first_err.get_or_insert_with(|| {
                ProviderError::new(
                    ProviderErrorKind::KeyNotAllowed,
                    format!(
                        "sealed with local key {key_id}, but {} holds {}",
                        path.display(),
                        key.key_id()
                    ),
                )
            });
        }
        if self.local_paths.len() > 1 {
            let tried: Vec<String> = self
                .local_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            return Err(ProviderError::new(
                ProviderErrorKind::KeyNotAllowed,
                format!(
                    "sealed with local key {key_id}, which none of the local key files holds (tried {}); pass the right one with --local-key",
                    tried.join(", ")
                ),
            ));
        }
        Err(first_err.unwrap_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::Other,
                "no local key path: set SEALCRED_LOCAL_KEY or HOME",
            )
        }))
    }

    /// The AWS configuration (loaded on first use).
    pub async fn sdk_config(&self) -> &SdkConfig {
        self.sdk.get_or_init(load_sdk_config).await
    }

    /// A provider for exactly `key` (ARN, key id or alias). Clients are cached
    /// per region and shared by every key of that region; each provider still
    /// names its own key in every call (sealing under a recorded key id must
    /// never fall back to another key of the same region).
    pub async fn aws_key(&self, key: &str) -> Result<Arc<AwsKms>, ProviderError> {
        let region = arn_region(key).unwrap_or("").to_string();
        let cached = self.aws.lock().unwrap().get(&region).cloned();
        let base = match cached {
            Some(b) => b,
            None => {
                let endpoint = self.region_endpoints.get(&region).map(String::as_str);
                let b = Arc::new(AwsKms::with_endpoint(
                    self.sdk_config().await,
                    key,
                    endpoint,
                )?);
                self.aws.lock().unwrap().insert(region, b.clone());
                b
            }
        };
        if base.key() == key {
            return Ok(base);
        }
        Ok(Arc::new(base.with_key(key)?))
    }

    async fn provider_for(&self, key_id: &str) -> Result<Arc<dyn KeyProvider>, ProviderError> {
        if let Some(p) = self.extra.get(key_id) {
            Ok(p.clone())
        } else if rsa::is_rsa_key_id(key_id) {
            let arn = rsa::arn_of(key_id).ok_or_else(|| {
                ProviderError::new(
                    ProviderErrorKind::KeyNotAllowed,
                    format!("RSA key id {key_id:?} does not hold a KMS key ARN"),
                )
            })?;
            Ok(Arc::new(KmsRsa::new(self.aws_key(arn).await?, key_id)?))
        } else if is_local_key_id(key_id) {
            Ok(self.local_key(key_id)?)
        } else if is_aws_key_id(key_id) {
            Ok(self.aws_key(key_id).await?)
        } else {
            Err(ProviderError::new(
                ProviderErrorKind::KeyNotAllowed,
                format!(
                    "unknown key id {key_id:?}: expected an AWS KMS key ARN, rsaes-oaep-sha256:<key ARN> or local:<fingerprint>"
                ),
            ))
        }
    }

    /// A provider to seal with for a recorded key id (used by merge and rotate
    /// when no new key is given): exactly that key.
    pub async fn provider_for_sealing(
        &self,
        key_id: &str,
    ) -> Result<Arc<dyn KeyProvider>, ProviderError> {
        self.provider_for(key_id).await
    }

    /// Unwraps a data key, trying its allowed wrappings in order. When all
    /// fail, a transient failure wins (so callers retry), then a ciphertext
    /// failure, then the first error.
    pub async fn unwrap(
        &self,
        binding: &Binding,
        dk: &ParsedDataKey,
    ) -> Result<DataKey, ProviderError> {
        self.unwrap_observed(binding, dk, &mut |_| {}).await
    }

    /// [`Keyring::unwrap`], reporting each call it makes to `on_call` (the
    /// controller's audit trail).
    pub async fn unwrap_observed(
        &self,
        binding: &Binding,
        dk: &ParsedDataKey,
        on_call: &mut (dyn FnMut(&UnwrapCall<'_>) + Send),
    ) -> Result<DataKey, ProviderError> {
        let ctx: EncryptionContext = binding.encryption_context();
        let mut errors: Vec<ProviderError> = Vec::new();
        for w in dk.wrappings.iter().filter(|w| self.allow.allows(&w.key_id)) {
            let started = Instant::now();
            let (result, request_id) = match self.provider_for(&w.key_id).await {
                Ok(p) => p.unwrap_traced(&w.key_id, &w.ciphertext, &ctx).await,
                Err(e) => (Err(e), None),
            };
            on_call(&UnwrapCall {
                key_id: &w.key_id,
                data_key_id: &dk.id_b64,
                context: &ctx,
                result: result.as_ref().map(|_| ()).map_err(|e| &e.kind),
                request_id: request_id.as_deref(),
                latency: started.elapsed(),
            });
            if let Some(obs) = &self.observer {
                obs(
                    "Decrypt",
                    &w.key_id,
                    result.as_ref().map(|_| ()).map_err(|e| &e.kind),
                    started.elapsed(),
                );
            }
            match result {
                Ok(k) => return Ok(k),
                Err(e) => errors.push(e),
            }
        }
        let pick = errors
            .iter()
            .position(|e| e.kind == ProviderErrorKind::Unavailable)
            .or_else(|| {
                errors
                    .iter()
                    .position(|e| e.kind == ProviderErrorKind::InvalidCiphertext)
            })
            .unwrap_or(0);
        let mut e = if errors.is_empty() {
            ProviderError::new(ProviderErrorKind::KeyNotAllowed, "no allowed wrapping")
        } else {
            errors.swap_remove(pick)
        };
        if dk.wrappings.len() > 1 {
            e.message = format!(
                "none of the {} wrappings of data key {} could be unwrapped; {}",
                dk.wrappings.len(),
                dk.id_b64,
                e.message
            );
        }
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matching() {
        let a = Allowlist::only([
            "arn:aws:kms:eu-west-1:1:key/*".to_string(),
            "local:abcd".to_string(),
        ]);
        assert!(a.allows("arn:aws:kms:eu-west-1:1:key/x"));
        assert!(!a.allows("arn:aws:kms:eu-west-1:2:key/x"));
        assert!(a.allows("local:abcd"));
        assert!(!a.allows("local:abce"));
        assert!(Allowlist::any().allows("anything"));
        assert!(!Allowlist::only(Vec::new()).allows("x"));
    }

    #[test]
    fn checked_allowlist_refuses_over_matching_entries() {
        let ok = [
            "arn:aws:kms:eu-west-1:111122223333:key/*",
            "arn:aws:kms:eu-west-1:111122223333:alias/*",
            "arn:aws:kms:eu-west-1:*",
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "local:abcd",
        ];
        Allowlist::checked(ok.iter().map(|s| s.to_string())).unwrap();
        let a = Allowlist::checked([ok[0].to_string()]).unwrap();
        assert!(a.allows("arn:aws:kms:eu-west-1:111122223333:key/x"));
        assert!(!a.allows("arn:aws:kms:eu-west-1:1111222233334:key/x"));
        for (bad, problem) in [
            ("arn:aws:kms:eu-west-1:1111*", "right after"),
            ("arn:aws:kms:eu-west-1:111122223333:key/ab*", "right after"),
            ("arn:aws:kms:eu-*", "right after"),
            ("arn:aws:kms:*:111122223333:key/*", "not at the end"),
            (
                "arn:aws:kms:eu-west-1:111122223333:key/*x",
                "not at the end",
            ),
            ("*", "every key"),
        ] {
            let err = Allowlist::checked(["local:abcd".to_string(), bad.to_string()]).unwrap_err();
            assert_eq!(err.entry, bad);
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{bad:?}")) && msg.contains(problem),
                "{msg}"
            );
        }
        // What `checked` refuses, `allows` would have over-matched:
        assert!(
            Allowlist::only(["arn:aws:kms:eu-west-1:1111*".to_string()])
                .allows("arn:aws:kms:eu-west-1:111122223333:key/x")
        );
    }
}
