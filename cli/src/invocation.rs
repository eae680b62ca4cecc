//! How sealcred was invoked: as `sealcred`, or as kubectl's plugin
//! `kubectl sealcred` (an executable or link named `kubectl-sealcred` on
//! PATH, which kubectl runs with the arguments after `sealcred`).

use clap::{CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// The kubectl plugin's file name: kubectl finds `kubectl-NAME` on PATH.
pub const PLUGIN_FILE: &str = "kubectl-sealcred";

/// The name to show in usage and help for a program invoked as `argv0`.
pub fn bin_name(argv0: Option<&std::ffi::OsStr>) -> &'static str {
    let file = argv0
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .and_then(|f| f.to_str());
    if file == Some(PLUGIN_FILE) {
        "kubectl sealcred"
    } else {
        "sealcred"
    }
}

/// Parses the command line (exiting with clap's message on bad usage), with
/// usage and help naming the command as it was invoked.
pub fn parse() -> Cli {
    let argv0 = std::env::args_os().next();
    let matches = Cli::command()
        .bin_name(bin_name(argv0.as_deref()))
        .get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn plugin_link_is_shown_as_kubectl_sealcred() {
        assert_eq!(
            bin_name(Some(OsStr::new("/home/u/.krew/bin/kubectl-sealcred"))),
            "kubectl sealcred"
        );
        assert_eq!(
            bin_name(Some(OsStr::new("kubectl-sealcred"))),
            "kubectl sealcred"
        );
        assert_eq!(bin_name(Some(OsStr::new("/usr/bin/sealcred"))), "sealcred");
        assert_eq!(bin_name(None), "sealcred");
    }
}
