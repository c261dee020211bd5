//! The executables of the workspace's other crates (`kvbench`, `kvlb-lc-experiments`) for
//! kvlb's integration tests.
//!
//! Cargo gives a test `CARGO_BIN_EXE_<name>` only for its own package's binaries, so these
//! are found where cargo puts them: the profile directory of the target directory this test
//! was built in (`target/debug/deps/<test>` → `target/debug/<bin>`, also under a
//! `CARGO_TARGET_DIR`). They are built there first with `cargo build -p <package>`, without
//! kvlb's features (a no-op when up to date; `scripts/test.sh` builds them beforehand), so a
//! test never runs a stale one. `KVBENCH` names a kvbench to use instead, as in the
//! scripts.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// kvbench, the load generator (package `kvbench`), or the one `$KVBENCH` names.
pub fn kvbench() -> PathBuf {
    if let Some(p) = std::env::var_os("KVBENCH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    exe("kvbench", "kvbench")
}

/// `package`'s binary `bin`, built for this test's profile and target directory: beside
/// the test's own package's binaries (`CARGO_BIN_EXE_*`).
pub fn exe(package: &str, bin: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get_or_insert_with(HashMap::new).get(bin) {
        return p.clone();
    }
    let test_exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> → target/<profile>, target.
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary lives in <target>/<profile>/deps")
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .expect("a profile directory lives in the target directory");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory name");
    let profile = match profile {
        "debug" => "dev",
        other => other,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["build", "--quiet", "--package", package, "--bin", bin])
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("running {cargo:?} build -p {package}: {e}"));
    assert!(
        out.status.success(),
        "cargo build -p {package} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let path = profile_dir.join(bin);
    assert!(
        path.is_file(),
        "cargo build -p {package} did not leave {}",
        path.display()
    );
    built
        .get_or_insert_with(HashMap::new)
        .insert(bin.to_owned(), path.clone());
    path
}
