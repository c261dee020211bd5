//! EAL start-up: once per process.

use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{rte_errno, rte_strerror, DpdkError};
use crate::config::PortId;

/// Set by the first attempt to start EAL (DPDK refuses a second `rte_eal_init` anyway).
static STARTED: AtomicBool = AtomicBool::new(false);

/// Proof that EAL is initialised in this process.
///
/// Zero-sized and `Copy`: pools and ports are created through it, so none can exist before
/// EAL is up, and EAL is never torn down while safe code runs (see [`Eal::cleanup`]).
#[derive(Clone, Copy, Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialises EAL with its arguments (`--no-huge`, `--vdev ...`, `-l 0`, ...; no program
    /// name). Fails if EAL was already started in this process, if EAL rejects the
    /// arguments, or if it leaves some of them unparsed.
    pub fn init<I, S>(args: I) -> Result<Eal, DpdkError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut strings = vec!["kvlb".to_string()];
        strings.extend(args.into_iter().map(|a| a.as_ref().to_string()));
        let argv = leak_argv(&strings)?;
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::EalAlreadyInitialised);
        }
        let argc = c_int::try_from(argv.len() - 1)
            .map_err(|_| DpdkError::EalInit("too many arguments".into()))?;
        // SAFETY: argv holds argc valid, NUL-terminated, writable strings followed by a NULL
        // pointer, all leaked so they outlive EAL (which may permute the array and keep
        // pointers into it). STARTED guarantees this runs at most once per process.
        let ret = unsafe { onvm_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(DpdkError::EalInit(rte_strerror(rte_errno())));
        }
        // EAL returns how many arguments it parsed (after permuting any it did not
        // understand to the end).
        let parsed = ret as usize;
        if parsed + 1 < strings.len() {
            let rest: Vec<String> = argv[parsed + 1..argv.len() - 1]
                .iter()
                .map(|&p| {
                    // SAFETY: the first argc entries of argv are the leaked, NUL-terminated
                    // strings (EAL only permutes them); the NULL terminator is excluded.
                    let arg = unsafe { std::ffi::CStr::from_ptr(p) };
                    arg.to_string_lossy().into_owned()
                })
                .collect();
            return Err(DpdkError::EalInit(format!(
                "EAL did not understand {rest:?} (EAL arguments come before the first '--')"
            )));
        }
        Ok(Eal { _private: () })
    }

    /// Creates a virtual device after start-up (`rte_dev_probe`), e.g.
    /// `net_ring7` or `net_pcap3,rx_pcap=in.pcap,tx_pcap=out.pcap`, and returns its port id.
    /// The same as an EAL `--vdev` argument, for code that creates ports as it goes (tests).
    pub fn probe_vdev(self, devargs: &str) -> Result<PortId, DpdkError> {
        let name = devargs.split(',').next().unwrap_or(devargs);
        let cargs = CString::new(devargs).map_err(|_| DpdkError::BadName(devargs.into()))?;
        let cname = CString::new(name).map_err(|_| DpdkError::BadName(name.into()))?;
        // SAFETY: EAL is up; cargs is a valid C string that DPDK parses and copies.
        let ret = unsafe { onvm_sys::rte_dev_probe(cargs.as_ptr()) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_dev_probe", ret));
        }
        let mut port = 0u16;
        // SAFETY: cname is a valid C string; port is writable.
        let ret = unsafe { onvm_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut port) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_dev_get_port_by_name", ret));
        }
        Ok(PortId(port))
    }

    /// The token for an EAL that something else (ONVM's `onvm_nflib_init`) started.
    ///
    /// # Safety
    /// `rte_eal_init` must have returned successfully in this process.
    #[cfg_attr(not(feature = "onvm"), allow(dead_code))]
    pub(crate) unsafe fn assume_initialised() -> Eal {
        STARTED.store(true, Ordering::SeqCst);
        Eal { _private: () }
    }

    /// The NUMA socket of the calling thread's lcore (`SOCKET_ID_ANY` off-EAL threads).
    pub fn socket_id(self) -> i32 {
        // SAFETY: EAL is up (self); rte_socket_id reads per-thread state.
        unsafe { onvm_sys::rte_socket_id() as i32 }
    }

    /// How many lcores EAL runs (for `tests/dpdk_layer.rs`; kvlb runs on one).
    pub fn lcore_count(self) -> u32 {
        // SAFETY: EAL is up; reads its configuration.
        unsafe { onvm_sys::rte_lcore_count() }
    }
}

/// A C `argv` (NUL-terminated strings and a NULL terminator) that lives for the rest of the
/// process: EAL permutes it and may keep pointers into it.
pub(crate) fn leak_argv(args: &[String]) -> Result<&'static mut [*mut c_char], DpdkError> {
    let mut argv = Vec::with_capacity(args.len() + 1);
    for a in args {
        let c = CString::new(a.as_str()).map_err(|_| DpdkError::NulInArgument(a.clone()))?;
        argv.push(c.into_raw());
    }
    argv.push(std::ptr::null_mut());
    Ok(Box::leak(argv.into_boxed_slice()))
}
