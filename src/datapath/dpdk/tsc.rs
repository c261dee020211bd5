//! The time-stamp counter as the core's clock.

use crate::clock::Instant;

use super::Eal;

/// Converts TSC readings into [`Instant`]s: nanoseconds since the clock was created.
#[derive(Clone, Copy, Debug)]
pub struct TscClock {
    origin: u64,
    hz: u64,
    /// Nanoseconds per tick in 32.32 fixed point (one multiply per reading, no division).
    ns_per_tick_q32: u128,
}

impl TscClock {
    /// A clock starting at zero now, at the frequency EAL measured.
    pub fn new(_eal: Eal) -> TscClock {
        // SAFETY: EAL is up; reads the frequency it calibrated.
        let hz = unsafe { onvm_sys::rte_get_tsc_hz() }.max(1);
        TscClock {
            origin: Self::ticks(),
            hz,
            ns_per_tick_q32: (1_000_000_000u128 << 32) / u128::from(hz),
        }
    }

    /// The raw counter.
    #[inline]
    pub fn ticks() -> u64 {
        // SAFETY: reads the CPU's time-stamp counter; no memory is touched.
        unsafe { onvm_sys::kvlb_rdtsc() }
    }

    pub fn hz(&self) -> u64 {
        self.hz
    }

    /// The instant of a counter reading taken after the clock's creation.
    #[inline]
    pub fn at(&self, ticks: u64) -> Instant {
        let delta = u128::from(ticks.wrapping_sub(self.origin));
        Instant::from_nanos(((delta * self.ns_per_tick_q32) >> 32) as u64)
    }

    /// Now.
    #[inline]
    pub fn now(&self) -> Instant {
        self.at(Self::ticks())
    }
}
