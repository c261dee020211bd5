//! SIGINT/SIGTERM for the standalone DPDK datapath (the ONVM NF uses ONVM's own handler).

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    // Async-signal-safe: one atomic store.
    STOP.store(true, Ordering::SeqCst);
}

/// Set once SIGINT or SIGTERM arrives, after [`StopFlag::install`].
#[derive(Debug)]
pub struct StopFlag;

impl StopFlag {
    /// Installs the handler for SIGINT and SIGTERM and returns the flag it sets.
    pub fn install() -> std::io::Result<&'static AtomicBool> {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler
            // only performs an atomic store, which is async-signal-safe; the pointer to
            // `action` is valid for the call.
            let ret = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, std::ptr::null_mut())
            };
            if ret != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(&STOP)
    }
}
