//! Diagnostics on stderr: the `--log-level` filter.

use tracing_subscriber::EnvFilter;

/// The filter for `--log-level LEVEL`. At the default level (`warn`), the
/// AWS SDK's credential-chain warnings are left out: aws-config logs each
/// provider that fails at WARN, with multi-line debug dumps of its error,
/// and sealcred's one-line error already says which profile failed and what
/// to do. Any other level, or a filter naming `aws_config`, is taken as given.
pub fn filter(level: &str) -> EnvFilter {
    let spec = if level == "warn" {
        "warn,aws_config=error"
    } else {
        level
    };
    EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("warn"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_level_quiets_only_aws_config() {
        let default = filter("warn").to_string();
        assert!(
            default.contains("aws_config=error") && default.contains("warn"),
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
