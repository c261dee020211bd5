//! How tests that need a real component (memcached, DPDK, tshark, libmemcached, network
//! namespaces, OpenNetVM) say that they ran against it, or why they could not.
//!
//! Included by the integration tests (`mod skip;`) and, through `#[path]`, by the library's
//! own unit tests, so there is one rule:
//! - [`skip`] reports a test that cannot run here. A component that `scripts/test.sh`
//!   installs ([`Need::Installed`]) must be there in CI (`CI=true`, or
//!   `KVLB_REQUIRE_REAL=1`): the skip becomes a failure. Elsewhere, and for components
//!   nothing installs ([`Need::Optional`]: OpenNetVM), the test passes and the skip is
//!   printed on the process's real stdout (libtest's capture takes only the print
//!   macros, so a skip is never hidden) and appended to `$KVLB_SKIP_LOG`.
//! - [`used`] records that the running test exercised a real component, in
//!   `$KVLB_REAL_LOG`; `scripts/test.sh` lists those tests by component at the end.
//!
//! Both logs are lines of `component<TAB>test binary::test name<TAB>detail`.
#![allow(dead_code)]

use std::io::Write;

/// Whether a missing component may be skipped in CI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// `scripts/test.sh` installs it (or CI has it: root, namespaces): CI must run the test.
    Installed,
    /// Nothing installs it (OpenNetVM): the test skips loudly wherever it is missing.
    Optional,
}

/// Whether this run must not skip tests whose components `scripts/test.sh` installs.
pub fn strict() -> bool {
    let on = |v: &str| {
        std::env::var(v)
            .map(|s| {
                let s = s.trim().to_ascii_lowercase();
                !s.is_empty() && s != "0" && s != "false" && s != "no"
            })
            .unwrap_or(false)
    };
    on("CI") || on("KVLB_REQUIRE_REAL")
}

/// `binary::test`, from the test binary's name (without cargo's hash) and the test
/// thread's name, which libtest sets to the test's path.
pub fn test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => s,
        })
        .unwrap_or_else(|| "?".into());
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("main");
    format!("{binary}::{test}")
}

fn clean(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

fn append(var: &str, line: &str) {
    if let Some(path) = std::env::var_os(var) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            // One write per line: O_APPEND keeps concurrent test processes' lines whole.
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Reports that the running test cannot use `component` here, for `reason`. Panics in CI
/// when `need` is [`Need::Installed`]; otherwise the caller returns and the test passes.
pub fn skip(component: &str, need: Need, reason: &str) {
    let test = test_name();
    if need == Need::Installed && strict() {
        panic!(
            "{test} needs {component}, which scripts/test.sh installs, but cannot run it in CI: \
             {reason}"
        );
    }
    let line = format!("{}\t{}\t{}\n", clean(component), test, clean(reason));
    append("KVLB_SKIP_LOG", &line);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\nSKIPPED {test} ({component}): {reason}");
    let _ = out.flush();
}

/// Records that the running test exercised the real `component` (`detail`: which one, e.g.
/// a version or binary).
pub fn used(component: &str, detail: &str) {
    let line = format!("{}\t{}\t{}\n", clean(component), test_name(), clean(detail));
    append("KVLB_REAL_LOG", &line);
}
