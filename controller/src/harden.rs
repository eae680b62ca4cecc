//! Process hardening at start: no core dumps (a core of this process would hold
//! plaintext credentials) and not dumpable (no ptrace attach by same-uid
//! processes, no /proc/PID/mem reads).

/// Sets RLIMIT_CORE to 0 and PR_SET_DUMPABLE to 0. Returns what failed, if anything
/// (the caller logs it; failing to harden is not fatal).
#[cfg(target_os = "linux")]
pub fn harden_process() -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};
    let mut failed = Vec::new();
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        failed.push(format!("setrlimit(RLIMIT_CORE, 0): {e}"));
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        failed.push(format!("prctl(PR_SET_DUMPABLE, 0): {e}"));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Not Linux: only RLIMIT_CORE.
#[cfg(not(target_os = "linux"))]
pub fn harden_process() -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| format!("setrlimit(RLIMIT_CORE, 0): {e}"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn hardening_applies() {
        super::harden_process().unwrap();
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0));
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}
