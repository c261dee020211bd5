//! Passes DPDK's raw link flags to kvlb's final links.
//!
//! `onvm-sys` links DPDK, but flags that `cargo:rustc-link-lib` cannot express (the
//! `-Wl,--whole-archive` groups of a DPDK make build's `ldflags.txt`) only take effect when
//! the crate producing the executable emits them: `cargo:rustc-link-arg` from a dependency's
//! build script does not reach the final link. `onvm-sys` hands them over as `links`
//! metadata (`DEP_DPDK_LDFLAGS`); they apply to every kvlb executable (binary, tests,
//! benches, examples).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_DPDK_LDFLAGS");
    if let Ok(flags) = std::env::var("DEP_DPDK_LDFLAGS") {
        for flag in flags.split_whitespace() {
            println!("cargo:rustc-link-arg={flag}");
        }
    }
}
