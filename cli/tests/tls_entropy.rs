//! The CLI over HTTPS, and aws-lc's CPU-jitter entropy source kept out of it
//! (issue 18.1; docs/SECURITY.md "Entropy").
//!
//! aws-lc runs its jitter source (jitterentropy, `jent_*`) once per process at
//! the first use of randomness — the CLI's first TLS handshake — for ~60 ms of
//! CPU. The workspace builds aws-lc-sys with `AWS_LC_SYS_NO_JITTER_ENTROPY=1`
//! (.cargo/config.toml), which leaves the source out of the library: the
//! guard reads the symbol table of the very binary the tests run. A timing
//! guard would be flaky on a loaded 2-core machine; this one fails exactly
//! when the source is linked (e.g. the setting is lost, or a dependency brings
//! another aws-lc build), and a seal over HTTPS shows TLS still works.

use std::process::{Command, Output};

use sealcred_tests::TestEnv;
use sealcred_tests::moto::{MotoOptions, PrivateMoto};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn cli_binary_does_not_link_aws_lc_jitter_entropy() {
    let bin = env!("CARGO_BIN_EXE_sealcred");
    let out = Command::new("nm")
        .arg(bin)
        .output()
        .expect("run nm (binutils)");
    assert!(out.status.success(), "nm {bin}: {}", text(&out.stderr));
    let symbols = text(&out.stdout);
    // Not vacuous: the binary has a symbol table and aws-lc in it.
    assert!(
        symbols.contains("aws_lc_"),
        "no aws-lc symbols in {bin}: stripped, or aws-lc gone (then update this guard)"
    );
    let jitter: Vec<&str> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|name| name.contains("jent_"))
        .take(5)
        .collect();
    assert!(
        jitter.is_empty(),
        "{bin} links aws-lc's CPU-jitter entropy source ({jitter:?}): ~60 ms per CLI run over HTTPS; \
         build aws-lc-sys with AWS_LC_SYS_NO_JITTER_ENTROPY=1 (.cargo/config.toml [env])"
    );
}

fn seal(home: &std::path::Path, m: &PrivateMoto, ca: Option<&std::path::Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sealcred"));
    c.current_dir(home)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_KMS", m.endpoint())
        .env("AWS_MAX_ATTEMPTS", "1")
        .args([
            "seal",
            "--name",
            "creds",
            "-n",
            "team",
            "--from-literal",
            "k=v",
            "--kms",
            m.key_arn(),
            "--output-file",
            "s.yaml",
        ]);
    if let Some(ca) = ca {
        c.env("SSL_CERT_FILE", ca);
    }
    c.output().unwrap()
}

#[test]
fn seal_over_https_trusts_the_ca_from_ssl_cert_file() {
    let m = PrivateMoto::start(
        TestEnv::get().root(),
        MotoOptions {
            tls: true,
            iam: false,
        },
    );
    assert!(m.endpoint().starts_with("https://"), "{}", m.endpoint());
    let home = tempfile::tempdir().unwrap();

    // Control: without the test CA the server is not trusted (TLS is real).
    let out = seal(home.path(), &m, None);
    assert!(!out.status.success(), "sealed over untrusted TLS");
    assert!(!home.path().join("s.yaml").exists());

    let ca = m.ca().expect("CA");
    let out = seal(home.path(), &m, Some(&ca));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sealed = std::fs::read_to_string(home.path().join("s.yaml")).unwrap();
    assert!(
        sealed.contains(&format!("keyId: {}", m.key_arn())),
        "{sealed}"
    );
}
