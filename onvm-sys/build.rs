//! Finds DPDK (and, with the `onvm` feature, OpenNetVM), compiles kvlb's C shim over their
//! static-inline functions and generates Rust bindings with bindgen.
//!
//! DPDK is found in one of two ways:
//! - `RTE_SDK` + `RTE_TARGET`: DPDK's legacy make build, the one ONVM v21.10 uses (DPDK
//!   20.05). Static `librte_*.a` archives, linked the way DPDK links its own apps, which is
//!   also how ONVM's manager was linked: that matters, because an NF is a secondary process
//!   that must register exactly the tail queues the manager registered (libraries such as
//!   `rte_distributor` register one from a constructor when linked whole, and the NF then
//!   fails in `onvm_nflib_init` with `EAL: Cannot initialize tailq: RTE_DISTRIBUTOR`).
//!   - When the build left its apps' link line in `$RTE_SDK/$RTE_TARGET/lib/ldflags.txt`
//!     (ONVM's install script patches DPDK to write it), that line is used as is.
//!   - Otherwise the archives are linked as `$RTE_SDK/mk/rte.app.mk` lists them: whole
//!     where it wraps them in `--whole-archive` (the core libraries, buses, drivers and
//!     mempool handlers, which register themselves from constructors), normally where it
//!     does not (`rte_distributor`, `rte_lpm`, `rte_acl`, ...: only what kvlb calls is
//!     pulled in, which is nothing). Archives it does not name are left out.
//!   - Without `mk/rte.app.mk` either, every archive is linked whole, with a warning.
//!
//!   `KVLB_DPDK_LDFLAGS` overrides where the link line comes from: a file to use instead
//!   of `ldflags.txt`, or `none` to ignore `ldflags.txt` and derive the line from
//!   `mk/rte.app.mk` (the tests of this fallback use it).
//! - `pkg-config libdpdk`: a packaged DPDK (Debian 12's 22.11), linked as shared libraries;
//!   EAL loads the drivers at run time from its plugin directory.
//!
//! ONVM is found through `ONVM_HOME` (`onvm/onvm_nflib/*.h`, `onvm/lib/cJSON.h`, `libonvm.a`,
//! `libonvmhelper.a`).
//!
//! Link flags that `cargo:rustc-link-lib` cannot express (linker scripts, `-Wl,...` groups)
//! are handed to dependants as `links` metadata (`cargo:ldflags=...`, seen by the kvlb
//! package's build script as `DEP_DPDK_LDFLAGS`), because `cargo:rustc-link-arg` from a
//! dependency never reaches the final link.
//!
//! The C shim and bindgen see the same `-march` and CPU-flag defines as the DPDK build:
//! DPDK's inline functions and struct layouts depend on them.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the shim and bindgen need to compile against one DPDK, and how to link it.
struct Dpdk {
    /// Where it was found, for messages.
    origin: String,
    /// How it is linked, for messages (`onvm_sys::DPDK_LINK`).
    link: String,
    include_dirs: Vec<PathBuf>,
    /// Compiler flags other than `-I` (defines, `-include`, `-march`).
    cflags: Vec<String>,
    /// Native libraries for `cargo:rustc-link-lib` (`KIND=NAME`), in link order.
    link_libs: Vec<String>,
    link_search: Vec<PathBuf>,
    /// Raw linker flags for the final link (through `DEP_DPDK_LDFLAGS`).
    ldflags: Vec<String>,
}

fn main() {
    for var in [
        "RTE_SDK",
        "RTE_TARGET",
        "KVLB_DPDK_LDFLAGS",
        "ONVM_HOME",
        "PKG_CONFIG_PATH",
        "PKG_CONFIG_LIBDIR",
        "CC",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-changed=csrc/shim.c");

    let want_dpdk = env::var_os("CARGO_FEATURE_DPDK").is_some();
    let want_onvm = env::var_os("CARGO_FEATURE_ONVM").is_some();
    if !want_dpdk && !want_onvm {
        // Nothing to bind: the crate compiles to an empty library.
        return;
    }

    let dpdk = match env::var_os("RTE_SDK") {
        Some(sdk) => legacy_dpdk(Path::new(&sdk)),
        None if want_onvm => fail(
            "the `onvm` feature needs the DPDK that ONVM was built with: set RTE_SDK and \
             RTE_TARGET to that DPDK make build (ONVM v21.10 uses DPDK v20.05; see ONVM's \
             install guide), and ONVM_HOME to the openNetVM checkout",
        ),
        None => pkg_config_dpdk(),
    };
    let onvm = want_onvm.then(find_onvm);

    // --- the shim ---
    let mut build = cc::Build::new();
    build.file("csrc/shim.c").include("csrc");
    for dir in &dpdk.include_dirs {
        build.include(dir);
    }
    for flag in &dpdk.cflags {
        build.flag(flag);
    }
    if let Some(onvm) = &onvm {
        build.define("KVLB_WITH_ONVM", None);
        for dir in &onvm.include_dirs {
            build.include(dir);
        }
    }
    // DPDK headers trip some of cc's default warnings on some compilers; the shim itself is
    // one-line forwards, so only real errors matter here.
    build.warnings(false).opt_level(3);
    build.compile("kvlb_shim");

    // --- link (the shim's archive is emitted by cc above, so it comes first) ---
    if let Some(onvm) = &onvm {
        for dir in &onvm.lib_dirs {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
        // ONVM's libraries call into DPDK, which is linked after them.
        println!("cargo:rustc-link-lib=static:-bundle=onvm");
        println!("cargo:rustc-link-lib=static:-bundle=onvmhelper");
    }
    for dir in &dpdk.link_search {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    for lib in &dpdk.link_libs {
        println!("cargo:rustc-link-lib={lib}");
    }
    // Metadata for dependants (`links = "dpdk"`): DEP_DPDK_LDFLAGS, _ORIGIN, _CFLAGS, _ONVM.
    println!("cargo:ldflags={}", dpdk.ldflags.join(" "));
    println!("cargo:origin={}", dpdk.origin);
    println!("cargo:cflags={}", dpdk.cflags.join(" "));
    println!("cargo:onvm={}", u8::from(onvm.is_some()));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(
        out.join("link.rs"),
        format!(
            "/// How this build links DPDK ({}): for error messages.\npub const DPDK_LINK: &str = {:?};\n",
            dpdk.origin, dpdk.link
        ),
    )
    .unwrap_or_else(|e| fail(&format!("cannot write link.rs: {e}")));

    // --- bindings ---
    let mut clang_args: Vec<String> = dpdk
        .include_dirs
        .iter()
        .map(|d| format!("-I{}", d.display()))
        .collect();
    clang_args.push("-Icsrc".into());
    clang_args.extend(dpdk.cflags.iter().cloned());
    if let Some(onvm) = &onvm {
        clang_args.push("-DKVLB_WITH_ONVM".into());
        clang_args.extend(
            onvm.include_dirs
                .iter()
                .map(|d| format!("-I{}", d.display())),
        );
    }
    let mut builder = bindgen::Builder::default()
        .header("csrc/shim.h")
        .clang_args(&clang_args)
        .allowlist_function("kvlb_.*")
        .allowlist_function(
            "rte_eal_init|rte_eal_cleanup|rte_strerror|rte_socket_id|rte_get_tsc_hz|\
             rte_lcore_count|rte_pktmbuf_pool_create|rte_mempool_lookup|rte_mempool_free|\
             rte_mempool_avail_count|rte_mempool_in_use_count|\
             rte_eth_dev_is_valid_port|rte_eth_dev_count_avail|rte_eth_dev_info_get|\
             rte_eth_dev_configure|rte_eth_dev_adjust_nb_rx_tx_desc|rte_eth_rx_queue_setup|\
             rte_eth_tx_queue_setup|rte_eth_dev_start|rte_eth_dev_stop|rte_eth_dev_close|\
             rte_eth_macaddr_get|rte_eth_promiscuous_enable|rte_eth_stats_get|\
             rte_eth_dev_socket_id|rte_eth_dev_get_name_by_port|rte_eth_dev_get_port_by_name|\
             rte_dev_probe",
        )
        .allowlist_type("rte_mbuf|rte_eth_conf|rte_eth_dev_info|rte_eth_stats|rte_ether_addr")
        .allowlist_var(
            "RTE_MAX_ETHPORTS|RTE_PKTMBUF_HEADROOM|RTE_MBUF_DEFAULT_DATAROOM|\
             RTE_MEMPOOL_CACHE_MAX_SIZE|RTE_VER_YEAR|RTE_VER_MONTH|RTE_ETH_NAME_MAX_LEN|\
             SOCKET_ID_ANY",
        )
        // Only ever handled through pointers from Rust.
        .opaque_type("rte_mempool|rte_ring|rte_memzone")
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .prepend_enum_name(false)
        .size_t_is_usize(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    if onvm.is_some() {
        builder = builder
            .allowlist_function(
                "onvm_nflib_init_nf_local_ctx|onvm_nflib_init_nf_function_table|\
                 onvm_nflib_start_signal_handler|onvm_nflib_init|\
                 onvm_nflib_stop|onvm_nflib_return_pkt|onvm_nflib_return_pkt_bulk|\
                 onvm_flow_dir_nf_init",
            )
            .allowlist_type(
                "onvm_pkt_meta|onvm_nf_local_ctx|onvm_nf|onvm_nf_function_table|port_info",
            )
            .allowlist_var(
                "ONVM_NF_ACTION_.*|ONVM_SIGNAL_TERMINATION|ports|MAX_NFS|MAX_SERVICES|TAG_SIZE",
            );
    }
    let bindings = builder.generate().unwrap_or_else(|e| {
        fail(&format!(
            "bindgen failed on csrc/shim.h ({}): {e}",
            dpdk.origin
        ))
    });
    bindings
        .write_to_file(out.join("bindings.rs"))
        .unwrap_or_else(|e| fail(&format!("cannot write bindings: {e}")));
}

/// Stops the build with one clear message (cargo shows a build script's stderr on failure).
fn fail(msg: &str) -> ! {
    eprintln!("\nerror: onvm-sys: {msg}\n");
    eprintln!(
        "(Build without `--features dpdk`/`--features onvm` for the socket and replay \
         datapaths, which need neither.)\n"
    );
    std::process::exit(1);
}

/// Debian's (or any pkg-config-registered) DPDK, linked as shared libraries.
fn pkg_config_dpdk() -> Dpdk {
    let run = |args: &[&str]| -> String {
        let out = Command::new("pkg-config")
            .args(args)
            .arg("libdpdk")
            .output()
            .unwrap_or_else(|e| {
                fail(&format!(
                    "cannot run pkg-config ({e}). Install DPDK with `apt-get install \
                     libdpdk-dev pkg-config`, or set RTE_SDK and RTE_TARGET to a DPDK make \
                     build"
                ))
            });
        if !out.status.success() {
            fail(&format!(
                "pkg-config does not know libdpdk ({}). Install DPDK with `apt-get install \
                 libdpdk-dev`, point PKG_CONFIG_PATH at a DPDK install, or set RTE_SDK and \
                 RTE_TARGET to a DPDK make build",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let version = run(&["--modversion"]);
    let mut include_dirs = Vec::new();
    let mut cflags = Vec::new();
    let mut words = run(&["--cflags"])
        .split_whitespace()
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .into_iter();
    while let Some(w) = words.next() {
        if let Some(dir) = w.strip_prefix("-I") {
            include_dirs.push(PathBuf::from(dir));
        } else if w == "-include" {
            let file = words
                .next()
                .unwrap_or_else(|| fail("pkg-config --cflags libdpdk ends in -include"));
            cflags.push(w);
            cflags.push(file);
        } else {
            cflags.push(w);
        }
    }
    let mut link_libs = Vec::new();
    let mut link_search = Vec::new();
    let mut ldflags = Vec::new();
    for w in run(&["--libs"]).split_whitespace() {
        if let Some(lib) = w.strip_prefix("-l") {
            link_libs.push(format!("dylib={lib}"));
        } else if let Some(dir) = w.strip_prefix("-L") {
            link_search.push(PathBuf::from(dir));
        } else if w == "-Wl,--as-needed" {
            // rustc links with --as-needed already.
        } else {
            ldflags.push(w.to_string());
        }
    }
    Dpdk {
        origin: format!("pkg-config libdpdk {version}"),
        link: "shared libraries, from pkg-config".into(),
        include_dirs,
        cflags,
        link_libs,
        link_search,
        ldflags,
    }
}

/// DPDK's legacy make build at `$RTE_SDK/$RTE_TARGET`, linked statically.
fn legacy_dpdk(sdk: &Path) -> Dpdk {
    let target = env::var("RTE_TARGET").unwrap_or_else(|_| {
        fail(&format!(
            "RTE_SDK is set ({}) but RTE_TARGET is not; set it to the build's target \
             directory name, e.g. RTE_TARGET=x86_64-native-linuxapp-gcc",
            sdk.display()
        ))
    });
    let base = sdk.join(&target);
    let include = base.join("include");
    let lib = base.join("lib");
    if !include.join("rte_config.h").is_file() || !lib.is_dir() {
        fail(&format!(
            "no built DPDK at {} (expected include/rte_config.h and lib/): build it with \
             `make config T={target} O={target} && make O={target}` in RTE_SDK",
            base.display()
        ));
    }
    println!("cargo:rerun-if-changed={}", base.join(".config").display());
    println!(
        "cargo:rerun-if-changed={}",
        lib.join("ldflags.txt").display()
    );
    let config = fs::read_to_string(base.join(".config")).unwrap_or_default();
    let config_value = |key: &str| -> Option<String> {
        config.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|v| v.trim_matches('"').to_string())
        })
    };
    let enabled = |key: &str| config_value(key).as_deref() == Some("y");

    // The machine flags the DPDK build compiled itself with: read from the command line it
    // recorded for an EAL object, else derived like mk/rte.vars.mk does.
    let mut cflags =
        recorded_machine_flags(&base.join("build/lib/librte_eal")).unwrap_or_else(|| {
            let machine = config_value("CONFIG_RTE_MACHINE").unwrap_or_else(|| "native".into());
            let vars =
                fs::read_to_string(sdk.join("mk/machine").join(&machine).join("rte.vars.mk"))
                    .unwrap_or_default();
            // The first assignment is the machine's; later ones are compiler fallbacks.
            let mut flags: Vec<String> = vars
                .lines()
                .find_map(|l| l.trim().strip_prefix("MACHINE_CFLAGS"))
                .and_then(|l| l.trim_start().strip_prefix('='))
                .map(|l| l.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_else(|| vec!["-march=native".to_string()]);
            let defines = cpuflag_defines(sdk, &flags);
            flags.extend(defines);
            flags
        });
    cflags.push("-include".into());
    cflags.push(include.join("rte_config.h").display().to_string());

    let mut link_libs = Vec::new();
    let mut ldflags = Vec::new();
    // Where the apps' link line comes from: KVLB_DPDK_LDFLAGS=none ignores ldflags.txt,
    // another value names a file to read instead.
    let ldflags_file = match env::var("KVLB_DPDK_LDFLAGS") {
        Ok(v) if v == "none" => None,
        Ok(v) if !v.is_empty() => {
            let p = PathBuf::from(v);
            if !p.is_file() {
                fail(&format!(
                    "KVLB_DPDK_LDFLAGS={} is not a file (give a DPDK link line, or `none` to \
                     derive it from $RTE_SDK/mk/rte.app.mk)",
                    p.display()
                ));
            }
            Some(p)
        }
        _ => Some(lib.join("ldflags.txt")),
    };
    let link;
    if let Some((path, line)) =
        ldflags_file.and_then(|p| fs::read_to_string(&p).ok().map(|line| (p, line)))
    {
        // The exact link line of the DPDK build's own apps.
        println!("cargo:rerun-if-changed={}", path.display());
        ldflags.extend(line.split_whitespace().map(str::to_owned));
        link = format!("the link line in {}", path.display());
    } else {
        // libdpdk.a is a linker script naming the same archives, so it is skipped.
        let archives: Vec<String> = fs::read_dir(&lib)
            .unwrap_or_else(|e| fail(&format!("cannot list {}: {e}", lib.display())))
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| {
                n.strip_prefix("lib")
                    .and_then(|n| n.strip_suffix(".a"))
                    .filter(|n| n.starts_with("rte_"))
                    .map(str::to_owned)
            })
            .collect();
        if archives.is_empty() {
            fail(&format!("no librte_*.a in {}", lib.display()));
        }
        let app_mk = sdk.join("mk/rte.app.mk");
        println!("cargo:rerun-if-changed={}", app_mk.display());
        match fs::read_to_string(&app_mk) {
            Ok(mk) => {
                let (listed, whole) = app_mk_archives(&mk);
                for name in listed.iter().filter(|n| archives.contains(n)) {
                    link_libs.push(if whole.contains(name) {
                        format!("static:+whole-archive,-bundle={name}")
                    } else {
                        format!("static:-bundle={name}")
                    });
                }
                let mut unlisted: Vec<&String> =
                    archives.iter().filter(|a| !listed.contains(a)).collect();
                unlisted.sort();
                if !unlisted.is_empty() {
                    println!(
                        "cargo:warning=onvm-sys: {} does not link {} (nor does kvlb)",
                        app_mk.display(),
                        unlisted
                            .iter()
                            .map(|a| format!("lib{a}.a"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                link = format!(
                    "{} as {} wraps them (no ldflags.txt)",
                    lib.display(),
                    app_mk.display()
                );
            }
            Err(_) => {
                // Drivers and mempool handlers register from constructors: link all whole.
                let mut archives = archives;
                archives.sort();
                println!(
                    "cargo:warning=onvm-sys: neither {} nor {} is there: linking every \
                     librte_*.a whole. An ONVM NF built this way can register DPDK tail queues \
                     its manager did not, and fail in onvm_nflib_init.",
                    lib.join("ldflags.txt").display(),
                    app_mk.display()
                );
                link_libs.extend(
                    archives
                        .iter()
                        .map(|a| format!("static:+whole-archive,-bundle={a}")),
                );
                link = format!("every archive in {} whole", lib.display());
            }
        }
        if enabled("CONFIG_RTE_LIBRTE_PMD_PCAP") {
            link_libs.push("dylib=pcap".into());
        }
        if enabled("CONFIG_RTE_EAL_NUMA_AWARE_HUGEPAGES") || enabled("CONFIG_RTE_LIBRTE_VHOST_NUMA")
        {
            link_libs.push("dylib=numa".into());
        }
        for sys in ["m", "dl", "rt", "pthread"] {
            link_libs.push(format!("dylib={sys}"));
        }
    }
    Dpdk {
        origin: format!("DPDK make build at {}", base.display()),
        link,
        include_dirs: vec![include],
        cflags,
        link_libs,
        link_search: vec![lib],
        ldflags,
    }
}

/// The `librte_*` archives DPDK's `mk/rte.app.mk` links, in its order, and those of them it
/// wraps in `--whole-archive`. The make file switches whole-archive on and off around groups
/// of `-lrte_*` flags; a scan of its text in order, ignoring its conditionals, classifies
/// every archive it names (which archives exist decides which are linked: a disabled one
/// was never built). On DPDK 20.05 this gives exactly the classes of ONVM's `ldflags.txt`.
fn app_mk_archives(mk: &str) -> (Vec<String>, Vec<String>) {
    let (mut listed, mut whole) = (Vec::new(), Vec::new());
    let mut in_whole = false;
    for line in mk.lines() {
        let line = line.split('#').next().unwrap_or("");
        let Some((_, flags)) = line.split_once("+=") else {
            continue;
        };
        for flag in flags.split_whitespace() {
            match flag {
                "--whole-archive" => in_whole = true,
                "--no-whole-archive" => in_whole = false,
                _ => {
                    let Some(name) = flag.strip_prefix("-l").filter(|n| n.starts_with("rte_"))
                    else {
                        continue;
                    };
                    if !listed.iter().any(|l| l == name) {
                        listed.push(name.to_owned());
                        if in_whole {
                            whole.push(name.to_owned());
                        }
                    }
                }
            }
        }
    }
    (listed, whole)
}

/// The `-march`/`-mtune` flags and `-DRTE_MACHINE_CPUFLAG_*` defines on the first compile
/// command DPDK's make build recorded (`.*.o.cmd`) under `dir`.
fn recorded_machine_flags(dir: &Path) -> Option<Vec<String>> {
    let cmd = find_cmd_file(dir, 3)?;
    let text = fs::read_to_string(cmd).ok()?;
    let flags: Vec<String> = text
        .lines()
        .next()?
        .split_whitespace()
        .filter(|w| {
            w.starts_with("-march=")
                || w.starts_with("-mtune=")
                || w.starts_with("-DRTE_MACHINE_CPUFLAG_")
        })
        .map(str::to_owned)
        .collect();
    flags
        .iter()
        .any(|f| f.starts_with("-march="))
        .then_some(flags)
}

fn find_cmd_file(dir: &Path, depth: u32) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    if let Some(f) = entries.iter().find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') && n.ends_with(".o.cmd"))
    }) {
        return Some(f.clone());
    }
    if depth == 0 {
        return None;
    }
    entries
        .iter()
        .filter(|p| p.is_dir())
        .find_map(|d| find_cmd_file(d, depth - 1))
}

/// The `-DRTE_MACHINE_CPUFLAG_*` defines DPDK's make build derives from the compiler's
/// predefined macros under the machine flags (mirrors mk/rte.cpuflags.mk by reading it).
fn cpuflag_defines(sdk: &Path, machine_cflags: &[String]) -> Vec<String> {
    let Ok(mk) = fs::read_to_string(sdk.join("mk/rte.cpuflags.mk")) else {
        return Vec::new();
    };
    let compiler = cc::Build::new().get_compiler();
    let Ok(out) = Command::new(compiler.path())
        .args(machine_cflags)
        .args(["-dM", "-E", "-"])
        .stdin(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    let predefined = String::from_utf8_lossy(&out.stdout);
    let defined = |m: &str| {
        predefined
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(m))
    };
    // Pairs of lines: `ifneq ($(filter $(AUTO_CPUFLAGS),__SSE__),)` / `CPUFLAGS += SSE`.
    let mut defines = Vec::new();
    let mut pending: Option<bool> = None;
    for line in mk.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("ifneq ($(filter $(AUTO_CPUFLAGS),") {
            let macros = rest.trim_end_matches("),)");
            pending = Some(macros.split_whitespace().all(defined));
        } else if let Some(flag) = line.strip_prefix("CPUFLAGS += ") {
            if pending == Some(true) {
                defines.push(format!("-DRTE_MACHINE_CPUFLAG_{}", flag.trim()));
            }
        } else if line.starts_with("endif") {
            pending = None;
        }
    }
    defines
}

struct Onvm {
    include_dirs: Vec<PathBuf>,
    lib_dirs: Vec<PathBuf>,
}

fn find_onvm() -> Onvm {
    let home = env::var_os("ONVM_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            fail(
            "the `onvm` feature needs ONVM_HOME set to an openNetVM v21.10 checkout built with \
             `make` in onvm/ (see ONVM's install guide)",
        )
        });
    let nflib = home.join("onvm/onvm_nflib");
    let lib = home.join("onvm/lib");
    if !nflib.join("onvm_nflib.h").is_file() || !lib.join("cJSON.h").is_file() {
        fail(&format!(
            "ONVM_HOME={} has no onvm/onvm_nflib/onvm_nflib.h or onvm/lib/cJSON.h",
            home.display()
        ));
    }
    let find = |root: &Path, name: &str| -> PathBuf {
        find_file(root, name, 4).unwrap_or_else(|| {
            fail(&format!(
                "no {name} under {}: build ONVM first (`make` in $ONVM_HOME/onvm with RTE_SDK \
                 and RTE_TARGET set)",
                root.display()
            ))
        })
    };
    let libonvm = find(&nflib, "libonvm.a");
    let helper = find(&lib, "libonvmhelper.a");
    println!("cargo:rerun-if-changed={}", libonvm.display());
    println!("cargo:rerun-if-changed={}", helper.display());
    Onvm {
        include_dirs: vec![nflib, lib],
        lib_dirs: [libonvm, helper]
            .iter()
            .map(|p| p.parent().expect("a file has a parent").to_path_buf())
            .collect(),
    }
}

fn find_file(root: &Path, name: &str, depth: u32) -> Option<PathBuf> {
    let candidate = root.join(name);
    if candidate.is_file() {
        return Some(candidate);
    }
    if depth == 0 {
        return None;
    }
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.iter().find_map(|d| find_file(d, name, depth - 1))
}
