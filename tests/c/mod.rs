//! Builds the C harnesses in this folder against the system's libmemcached, once per name
//! per test process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles `tests/c/<name>.c` with `$CC` (default `cc`) and `-lmemcached` into
/// `CARGO_TARGET_TMPDIR/<name>`, or says why it could not. Built under a private name, then
/// renamed: concurrent test processes never run a half-written binary.
pub fn build_with_libmemcached(name: &str) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let exe = dir.join(name);
    let tmp = dir.join(format!("{name}.{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = Command::new(&cc)
        .args(["-O2", "-Wall", "-o"])
        .arg(&tmp)
        .arg(&src)
        .arg("-lmemcached")
        .output()
        .map_err(|e| format!("cannot run '{cc}': {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "'{cc} {} -lmemcached' failed (is libmemcached-dev installed?):\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::rename(&tmp, &exe).map_err(|e| format!("cannot rename {name}: {e}"))?;
    Ok(exe)
}
