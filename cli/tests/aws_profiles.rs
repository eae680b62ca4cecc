//! AWS credentials as every AWS tool takes them (issue 12.5): the real
//! `sealcred` binary with an AWS config file in a temp HOME, no static
//! credentials in the environment, against a private moto that enforces IAM
//! (every request's SigV4 signature is checked against a known access key,
//! and its policies are applied), so a seal succeeds only with the
//! credentials the profile is meant to produce.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use sealcred_tests::TestEnv;
use sealcred_tests::moto::{AccessKey, MotoOptions, PrivateMoto};

const CANARY: &str = "CANARY-profiles-7d21";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sealcred ARGS` with HOME = `home`, the given AWS config and profile, and
/// nothing else from the AWS environment (no static keys, no IMDS).
fn sealcred(home: &Path, profile: &str, endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealcred"))
        .current_dir(home)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join(".aws/config"))
        .env("AWS_PROFILE", profile)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_KMS", endpoint)
        .env("AWS_ENDPOINT_URL_STS", endpoint)
        .args(args)
        .output()
        .unwrap()
}

fn seal(home: &Path, profile: &str, endpoint: &str, key: &str) -> Output {
    sealcred(
        home,
        profile,
        endpoint,
        &[
            "seal",
            "--name",
            "creds",
            "-n",
            "team",
            "--from-literal",
            &format!("secret_key={CANARY}"),
            "--kms",
            key,
            "--output-file",
            "s.yaml",
        ],
    )
}

fn write_config(home: &Path, config: &str) {
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(home.join(".aws/config"), config).unwrap();
}

/// An executable script printing `key` as credential_process JSON, and
/// touching `ran` so the test sees it was the process that was asked.
fn credential_script(home: &Path, name: &str, key: &AccessKey) -> String {
    let path = home.join(name);
    let ran = home.join(format!("{name}.ran"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ntouch '{}'\nprintf '%s\\n' '{{\"Version\": 1, \"AccessKeyId\": \"{}\", \"SecretAccessKey\": \"{}\"}}'\n",
            ran.display(),
            key.id,
            key.secret
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path.display().to_string()
}

fn assert_sealed_under(home: &Path, out: &Output, key: &str) {
    assert!(out.status.success(), "seal failed: {}", text(&out.stderr));
    let sealed = std::fs::read_to_string(home.join("s.yaml")).unwrap();
    assert!(sealed.contains(&format!("keyId: {key}")), "{sealed}");
    assert!(!sealed.contains(CANARY));
}

fn moto() -> PrivateMoto {
    PrivateMoto::start(
        TestEnv::get().root(),
        MotoOptions {
            tls: false,
            iam: true,
        },
    )
}

#[test]
fn credential_process_profile_seals_and_verifies() {
    let m = moto();
    let home = tempfile::tempdir().unwrap();
    let good = credential_script(home.path(), "creds.sh", &m.access_key("sealer"));
    let wrong = credential_script(
        home.path(),
        "wrong.sh",
        &AccessKey {
            id: m.access_key("sealer").id,
            secret: "not-the-secret".into(),
        },
    );
    write_config(
        home.path(),
        &format!(
            "[profile ci]\ncredential_process = {good}\n\n[profile wrong]\ncredential_process = {wrong}\n"
        ),
    );

    let out = seal(home.path(), "ci", m.endpoint(), m.key_arn());
    assert_sealed_under(home.path(), &out, m.key_arn());
    assert!(home.path().join("creds.sh.ran").exists());
    let out = sealcred(home.path(), "ci", m.endpoint(), &["verify", "s.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Control: moto checks the signature, so a process handing out a wrong
    // secret cannot seal (this test would pass with any credentials otherwise).
    std::fs::remove_file(home.path().join("s.yaml")).unwrap();
    let out = seal(home.path(), "wrong", m.endpoint(), m.key_arn());
    assert!(!out.status.success(), "sealed with a wrong secret");
    assert!(home.path().join("wrong.sh.ran").exists());
    assert!(!home.path().join("s.yaml").exists());
}

#[test]
fn failing_credential_process_is_one_line_naming_the_profile() {
    let home = tempfile::tempdir().unwrap();
    let script = home.path().join("fail.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'token expired' >&2\necho 'see docs' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    write_config(
        home.path(),
        &format!("[profile ci]\ncredential_process = {}\n", script.display()),
    );
    let out = seal(
        home.path(),
        "ci",
        "http://127.0.0.1:9",
        "arn:aws:kms:us-east-1:123456789012:key/k",
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("credential_process of profile `ci` failed"),
        "{err}"
    );
    assert!(err.contains("token expired see docs"), "{err}");
}

#[test]
fn role_arn_with_source_profile_seals_through_sts_assume_role() {
    let m = moto();
    let home = tempfile::tempdir().unwrap();
    let base = m.access_key("base");
    write_config(
        home.path(),
        &format!(
            "[profile base]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n[profile sealer]\nrole_arn = {}\nsource_profile = base\n",
            base.id,
            base.secret,
            m.role_arn()
        ),
    );

    // Control: the source profile alone may not use KMS.
    let out = seal(home.path(), "base", m.endpoint(), m.key_arn());
    assert!(!out.status.success(), "user base sealed without the role");

    let out = seal(home.path(), "sealer", m.endpoint(), m.key_arn());
    assert_sealed_under(home.path(), &out, m.key_arn());
    // moto's STS recorded the AssumeRole for exactly that role.
    let data = m.model_data();
    let assumed = data["sts"]["AssumedRole"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        assumed.iter().any(|r| r["role_arn"] == m.role_arn()),
        "no AssumeRole of {} in {assumed:?}",
        m.role_arn()
    );
    // The sealed object records the key, never the profile or the role.
    let sealed = std::fs::read_to_string(home.path().join("s.yaml")).unwrap();
    assert!(
        !sealed.contains("sealer-role") && !sealed.contains("profile"),
        "{sealed}"
    );
}

const SSO_CONFIG: &str = "\
[profile dev]
sso_session = corp
sso_account_id = 111122223333
sso_role_name = Sealer

[sso-session corp]
sso_start_url = https://corp.example.invalid/start
sso_region = us-east-1

[profile legacy]
sso_start_url = https://corp.example.invalid/start
sso_region = us-east-1
sso_account_id = 111122223333
sso_role_name = Sealer

[profile deploy]
role_arn = arn:aws:iam::111122223333:role/deployer
source_profile = dev
";

/// The SDK's cache file for SSO session `corp`: ~/.aws/sso/cache/SHA1("corp").json.
const CORP_CACHE: &str = "ee0bfd2552fbd840c02cc48b6e823320543c450f.json";

/// One line naming `profile`, saying to log in to the profile that holds the
/// SSO settings (`login`), with the SDK's SSO provider's own cause (`cause`:
/// the provider really ran; without aws-config's `sso` feature it does not).
fn assert_sso_login_error(out: &Output, profile: &str, login: &str, cause: &str) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(&format!("profile `{profile}`")), "{err}");
    assert!(
        err.contains(cause),
        "expected the SDK's cause {cause:?}: {err}"
    );
    assert!(
        err.contains(&format!("run `aws sso login --profile {login}`")),
        "{err}"
    );
}

#[test]
fn sso_profile_without_a_cached_session_says_to_run_aws_sso_login() {
    let home = tempfile::tempdir().unwrap();
    write_config(home.path(), SSO_CONFIG);
    // Nothing listens on the discard port: the CLI must fail before any call.
    let key = "arn:aws:kms:us-east-1:111122223333:key/k";
    let no_token = "failed to load the cached SSO token";
    let no_file = ".aws/sso/cache/";
    for (profile, login, cause) in [
        ("dev", "dev", no_token),
        ("legacy", "legacy", no_file),
        ("deploy", "dev", no_token),
    ] {
        let out = seal(home.path(), profile, "http://127.0.0.1:9", key);
        assert_sso_login_error(&out, profile, login, cause);
        assert!(!home.path().join("s.yaml").exists());
    }

    // An expired cached token (no refresh token) says the same.
    let cache = home.path().join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(
        cache.join(CORP_CACHE),
        r#"{"accessToken": "expired-test-token", "expiresAt": "2020-01-01T00:00:00Z", "region": "us-east-1", "startUrl": "https://corp.example.invalid/start"}"#,
    )
    .unwrap();
    let out = seal(home.path(), "dev", "http://127.0.0.1:9", key);
    assert_sso_login_error(&out, "dev", "dev", "the SSO token has expired");
    assert!(!text(&out.stderr).contains("expired-test-token"));
}
