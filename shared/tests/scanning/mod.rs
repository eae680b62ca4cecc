//! The scanning allocator behind the zeroization measurements (`zeroize_alloc.rs`
//! here, and `tests/tests/zeroize_reconcile.rs` for the controller's reconcile path):
//! when a heap block is freed on a recording thread, it is scanned for canaries, and
//! a block freed with a canary still in it — a copy nobody wiped — is recorded with
//! the first frame of a backtrace outside the standard library and this module.
//! Include it in a test binary with `#[path = ".../scanning/mod.rs"] mod scanning;`:
//! its `#[global_allocator]` then applies to that binary only.
#![allow(dead_code)]
#![allow(unsafe_code)] // a GlobalAlloc is unsafe by definition

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;

// ---------------------------------------------------------------- allocator

pub struct ScanningAlloc;

#[global_allocator]
static ALLOC: ScanningAlloc = ScanningAlloc;

thread_local! {
    /// Frees on this thread are scanned.
    static RECORDING: Cell<bool> = const { Cell::new(false) };
    /// Inside the scan itself (its own allocations are not scanned).
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// One canary: a label and the byte strings to look for.
pub type Needle = (&'static str, Vec<Vec<u8>>);

/// Canaries of the running scenario.
static NEEDLES: Mutex<Vec<Needle>> = Mutex::new(Vec::new());
/// Unwiped blocks found in the running scenario.
static FOUND: Mutex<Vec<Found>> = Mutex::new(Vec::new());

#[derive(Debug, Clone)]
pub struct Found {
    pub needle: &'static str,
    pub size: usize,
    /// First frame outside std/core/alloc/zeroize and this allocator.
    pub frame: String,
}

unsafe impl GlobalAlloc for ScanningAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if RECORDING.with(Cell::get) && !IN_HOOK.with(Cell::get) && layout.size() > 0 {
            IN_HOOK.with(|h| h.set(true));
            // SAFETY: the block is ours until System.dealloc below. Bytes never
            // written are read as whatever the allocator left there.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            scan(block);
            IN_HOOK.with(|h| h.set(false));
        }
        // Every freed block is zeroed (after the scan), in or out of a
        // scenario: a reused block then never shows a stale canary, and each
        // unwiped copy is counted once, where it was left.
        unsafe {
            std::ptr::write_bytes(ptr, 0, layout.size());
            System.dealloc(ptr, layout)
        }
    }

    // `realloc` is deliberately not forwarded to `System.realloc`: the default
    // (alloc, copy, dealloc) makes every block a growing buffer leaves behind
    // go through `dealloc` and get scanned. (The system allocator may grow in
    // place instead; counting every move is the conservative choice.)
}

fn scan(block: &[u8]) {
    let needles = NEEDLES.lock().unwrap();
    let hit = needles.iter().find(|(_, windows)| {
        windows
            .iter()
            .any(|w| block.windows(w.len()).any(|b| b == &w[..]))
    });
    if let Some((label, _)) = hit {
        let label = *label;
        drop(needles);
        let bt = std::backtrace::Backtrace::force_capture().to_string();
        FOUND.lock().unwrap().push(Found {
            needle: label,
            size: block.len(),
            frame: culprit(&bt),
        });
    }
}

/// The first frame of a backtrace that is neither the standard library, nor this
/// allocator, nor a drop glue / zeroize / hash-map wrapper, as `NAME @ ORIGIN`:
/// `ws:<path>` for a source file of this workspace, `dep:<crate-version>` for a
/// dependency (from its path in the cargo registry), `?` without debug info. Frame
/// names alone are not enough: with inlining, debug builds print short names
/// (`scan`, `dealloc`, `drop<…>`) without their module path.
fn culprit(bt: &str) -> String {
    const SKIP: &[&str] = &[
        "std::",
        "core::",
        "alloc::",
        "zeroize::",
        "__rustc",
        "__rust",
        "hashbrown::",
        "<std::",
        "<core::",
        "<alloc::",
        "<zeroize::",
        "<hashbrown::",
    ];
    const SKIP_DEPS: &[&str] = &["zeroize-", "hashbrown-"];
    let mut frames: Vec<(String, Option<String>)> = Vec::new();
    for line in bt.lines() {
        let line = line.trim_start();
        if let Some(at) = line.strip_prefix("at ") {
            if let Some(last) = frames.last_mut() {
                last.1.get_or_insert_with(|| at.to_string());
            }
            continue;
        }
        let Some((num, name)) = line.split_once(": ") else {
            continue;
        };
        if num.parse::<u32>().is_ok() {
            frames.push((name.to_string(), None));
        }
    }
    for (name, at) in frames {
        let origin = match at.as_deref() {
            Some(a) if a.starts_with("/rustc/") || a.contains("/scanning/mod.rs") => continue,
            Some(a) => match a.split_once("/registry/src/") {
                Some((_, rest)) => {
                    // index.crates.io-…/CRATE-VERSION/src/…
                    let krate = rest.split('/').nth(1).unwrap_or(rest);
                    if SKIP_DEPS.iter().any(|d| krate.starts_with(d)) {
                        continue;
                    }
                    format!("dep:{krate}")
                }
                None => format!("ws:{}", a.rsplit_once(':').map_or(a, |x| x.0)),
            },
            None => "?".to_string(),
        };
        if SKIP.iter().any(|s| name.starts_with(s)) {
            continue;
        }
        return format!("{name} @ {origin}");
    }
    "<no frame>".into()
}

/// 16-byte windows every 8 bytes of `bytes`: a partial copy of at least
/// 24 bytes of a needle contains one of them.
pub fn windows_of(bytes: &[u8]) -> Vec<Vec<u8>> {
    const W: usize = 16;
    if bytes.len() <= W {
        return vec![bytes.to_vec()];
    }
    let mut out: Vec<Vec<u8>> = (0..=bytes.len() - W)
        .step_by(8)
        .map(|i| bytes[i..i + W].to_vec())
        .collect();
    out.push(bytes[bytes.len() - W..].to_vec());
    out.dedup();
    out
}

pub struct Canaries(pub Vec<Needle>);

impl Canaries {
    pub fn new() -> Self {
        Canaries(Vec::new())
    }
    pub fn add(mut self, label: &'static str, bytes: &[u8]) -> Self {
        self.0.push((label, windows_of(bytes)));
        self
    }
}

// ---------------------------------------------------------------- measuring

/// Runs `f` with frees on this thread scanned for `canaries`; returns the
/// unwiped blocks found.
pub fn measure<R>(canaries: Canaries, f: impl FnOnce() -> R) -> (R, Vec<Found>) {
    *NEEDLES.lock().unwrap() = canaries.0;
    FOUND.lock().unwrap().clear();
    RECORDING.with(|r| r.set(true));
    let out = f();
    RECORDING.with(|r| r.set(false));
    let found = std::mem::take(&mut *FOUND.lock().unwrap());
    NEEDLES.lock().unwrap().clear();
    (out, found)
}

#[derive(Default)]
pub struct Report {
    rows: Vec<(String, Vec<Found>)>,
}

impl Report {
    pub fn add(&mut self, path: &str, found: Vec<Found>) {
        self.rows.push((path.to_string(), found));
    }

    /// Prints every path's unwiped blocks by frame, and fails if `is_ours` claims any
    /// beyond `known`: (path, canary, most copies) found and not fixed yet, each listed
    /// in docs/SECURITY.md. A known copy is an upper bound, not a requirement: whether a
    /// freed block still holds it when the scan runs depends on the allocator reusing it
    /// (seen absent on a fresh machine's run), so only more copies, or copies anywhere
    /// else, fail.
    pub fn print_and_check(&self, is_ours: fn(&str) -> bool, known: &[(&str, &str, usize)]) {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "\nzeroization, measured (unwiped freed heap blocks per path)"
        )
        .unwrap();
        writeln!(
            out,
            "{:<44} {:>5} {:>8}  by canary",
            "path", "ours", "outside"
        )
        .unwrap();
        let mut ours_total = Vec::new();
        for (path, found) in &self.rows {
            let ours: Vec<&Found> = found.iter().filter(|f| is_ours(&f.frame)).collect();
            let outside = found.len() - ours.len();
            let mut by: BTreeMap<&str, usize> = BTreeMap::new();
            for f in found {
                *by.entry(f.needle).or_default() += 1;
            }
            let by: Vec<String> = by.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            writeln!(
                out,
                "{path:<44} {:>5} {outside:>8}  {}",
                ours.len(),
                by.join(", ")
            )
            .unwrap();
            let mut frames: BTreeMap<(&str, &str, bool), (usize, usize)> = BTreeMap::new();
            for f in found {
                let e = frames
                    .entry((f.frame.as_str(), f.needle, is_ours(&f.frame)))
                    .or_default();
                e.0 += 1;
                e.1 = e.1.max(f.size);
            }
            for ((frame, needle, ours), (n, size)) in frames {
                writeln!(
                    out,
                    "    {} {n} x {needle} (≤{size} B) freed in {frame}",
                    if ours { "OURS   " } else { "outside" }
                )
                .unwrap();
            }
            ours_total.extend(ours.into_iter().map(|f| (path.clone(), f.clone())));
        }
        let mut counted: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (path, f) in &ours_total {
            *counted.entry((path.as_str(), f.needle)).or_default() += 1;
        }
        let expected: BTreeMap<(&str, &str), usize> =
            known.iter().map(|(p, n, c)| ((*p, *n), *c)).collect();
        let within_known = counted
            .iter()
            .all(|(k, n)| expected.get(k).is_some_and(|max| n <= max));
        assert!(
            within_known,
            "sealcred code freed block(s) with secrets in them unwiped: {counted:?}, known: {expected:?}\n{ours_total:#?}"
        );
    }
}
