//! Diagnostics on stderr: the `--log-level` filter.

use tracing_subscriber::EnvFilter;

/// The filter for `--log-level LEVEL`. At the default level (`warn`), only
/// sealcred's own crates log: the libraries' warnings and errors are left out
/// (aws-config logs each credential provider that fails at WARN, with
/// multi-line debug dumps; kube-client logs a failed connection at ERROR), and
/// sealcred's one-line error already says what failed and what to do. Any
/// other level or filter is taken as given.
pub fn filter(level: &str) -> EnvFilter {
    let spec = if level == "warn" {
        "sealcred=warn,sealcred_shared=warn"
    } else {
        level
    };
    EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("warn"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_level_is_sealcred_only() {
        let default = filter("warn").to_string();
        assert!(
            default.contains("sealcred=warn")
                && default.contains("sealcred_shared=warn")
                && !default.contains("aws_config"),
            "{default}"
        );
        assert_eq!(filter("debug").to_string(), "debug");
        assert_eq!(
            filter("info,aws_config=debug").to_string(),
            "aws_config=debug,info"
        );
        assert_eq!(filter("[").to_string(), "warn");
    }
}
