//! The controller binary refuses bad flags at start: non-zero exit, one error naming
//! the flag and the entry, before it contacts any API server.

use std::process::Command;

#[test]
fn over_matching_kms_allow_entry_stops_the_controller() {
    let out = Command::new(env!("CARGO_BIN_EXE_sealcred-controller"))
        .args([
            "--kms-allow",
            "arn:aws:kms:eu-west-1:111122223333:key/*,arn:aws:kms:eu-west-1:1111*",
            "--leader-elect=false",
            "--metrics-addr=off",
        ])
        // No cluster: the check must come first (this kubeconfig does not exist).
        .env("KUBECONFIG", "/nonexistent/sealcred-bad-flags")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("SEALCRED_KMS_ALLOW")
        .output()
        .expect("running sealcred-controller");
    assert!(!out.status.success(), "exit status {}", out.status);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("--kms-allow") && text.contains(r#"arn:aws:kms:eu-west-1:1111*"#),
        "the error names the flag and the entry: {text}"
    );
    assert!(
        text.contains("right after '/' or ':'"),
        "the error says what is allowed: {text}"
    );
    assert!(
        !text.contains("nonexistent"),
        "refused before reading the kubeconfig: {text}"
    );
}
