//! `rss-of CMD [ARGS...]`: runs CMD (stdin, stdout and stderr inherited), waits, and
//! prints `<wall seconds> <peak RSS KiB>` of that child on stderr's last line.
//!
//! Why not measure from the Python harness: a child forked from Python inherits the
//! parent's resident set until `execve`, and Linux keeps that high-water mark in the
//! child's `ru_maxrss`, so `/bin/true` launched from Python "peaks" at ≈ 11 MB. From this
//! small launcher the floor is ≈ 1–2 MB, the same for every tool measured.

use std::process::{Command, ExitCode};
use std::time::Instant;

use nix::sys::resource::{UsageWho, getrusage};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(cmd) = args.next() else {
        eprintln!("usage: rss-of CMD [ARGS...]");
        return ExitCode::from(2);
    };
    let t = Instant::now();
    let status = match Command::new(&cmd).args(args).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rss-of: cannot run {}: {e}", cmd.to_string_lossy());
            return ExitCode::from(2);
        }
    };
    let wall = t.elapsed().as_secs_f64();
    let maxrss = getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss())
        .unwrap_or(-1);
    eprintln!("rss-of: {wall:.6} {maxrss}");
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    }
}
