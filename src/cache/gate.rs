//! The switch that makes L2 "half-always on": on while traffic is skewed, off while it is
//! flat.
//!
//! Owns: the on/off decision and its transition counts. Must not: measure skew itself (the
//! caller hands in the top keys' share of traffic once per detector epoch) or log (the
//! caller logs the transitions it is handed).
//!
//! Hysteresis: in `auto` mode the gate turns on when the share reaches `on_share` and off
//! when it falls below `off_share` (≤ `on_share`), so a share hovering near one threshold
//! does not flap. A share that is not a number is ignored.

use crate::config::L2Mode;

use super::CacheError;

/// A change of the gate's state, for the caller to log and count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GateTransition {
    /// Skew rose to `share` (≥ the on threshold): L2 starts caching.
    On { share: f64 },
    /// Skew fell to `share` (< the off threshold): L2 drops everything and idles.
    Off { share: f64 },
}

/// Hysteresis on measured skew.
#[derive(Clone, Debug)]
pub struct SkewGate {
    mode: L2Mode,
    on_share: f64,
    off_share: f64,
    on: bool,
    turned_on: u64,
    turned_off: u64,
    last_share: Option<f64>,
}

impl SkewGate {
    /// A gate in `mode`; `auto` starts off. Thresholds must satisfy
    /// `0 ≤ off_share ≤ on_share ≤ 1`.
    pub fn new(mode: L2Mode, on_share: f64, off_share: f64) -> Result<SkewGate, CacheError> {
        let ok = (0.0..=1.0).contains(&on_share)
            && (0.0..=1.0).contains(&off_share)
            && off_share <= on_share;
        if !ok {
            return Err(CacheError::BadThresholds {
                on_share,
                off_share,
            });
        }
        Ok(SkewGate {
            mode,
            on_share,
            off_share,
            on: mode == L2Mode::On,
            turned_on: 0,
            turned_off: 0,
            last_share: None,
        })
    }

    /// Feeds one epoch's top-key traffic share; returns the transition it caused, if any.
    pub fn observe(&mut self, share: f64) -> Option<GateTransition> {
        if share.is_nan() {
            return None;
        }
        self.last_share = Some(share);
        if self.mode != L2Mode::Auto {
            return None;
        }
        if !self.on && share >= self.on_share {
            self.on = true;
            self.turned_on += 1;
            Some(GateTransition::On { share })
        } else if self.on && share < self.off_share {
            self.on = false;
            self.turned_off += 1;
            Some(GateTransition::Off { share })
        } else {
            None
        }
    }

    #[inline]
    pub fn is_on(&self) -> bool {
        self.on
    }

    pub fn mode(&self) -> L2Mode {
        self.mode
    }

    /// How many times the gate turned on, and off (the tests' view; for the stats, the
    /// caches count the transitions they are handed).
    #[cfg(test)]
    pub fn transitions(&self) -> (u64, u64) {
        (self.turned_on, self.turned_off)
    }

    /// The last share observed.
    pub fn last_share(&self) -> Option<f64> {
        self.last_share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis() {
        let mut g = SkewGate::new(L2Mode::Auto, 0.2, 0.1).unwrap();
        assert!(!g.is_on());
        assert_eq!(g.observe(0.15), None);
        assert_eq!(g.observe(0.2), Some(GateTransition::On { share: 0.2 }));
        // Between the thresholds: stays on.
        assert_eq!(g.observe(0.15), None);
        assert_eq!(g.observe(0.1), None);
        assert!(g.is_on());
        assert_eq!(g.observe(0.05), Some(GateTransition::Off { share: 0.05 }));
        assert_eq!(g.observe(0.15), None);
        assert!(!g.is_on());
        assert_eq!(g.observe(f64::NAN), None);
        assert_eq!(g.transitions(), (1, 1));
        assert_eq!(g.last_share(), Some(0.15));
    }

    #[test]
    fn equal_thresholds_do_not_flap() {
        let mut g = SkewGate::new(L2Mode::Auto, 0.3, 0.3).unwrap();
        assert!(g.observe(0.3).is_some());
        for _ in 0..10 {
            assert_eq!(g.observe(0.3), None);
        }
    }

    #[test]
    fn fixed_modes_and_bad_thresholds() {
        let mut on = SkewGate::new(L2Mode::On, 0.2, 0.1).unwrap();
        assert!(on.is_on());
        assert_eq!(on.observe(0.0), None);
        assert!(on.is_on());
        let mut off = SkewGate::new(L2Mode::Off, 0.2, 0.1).unwrap();
        assert_eq!(off.observe(1.0), None);
        assert!(!off.is_on());
        assert!(SkewGate::new(L2Mode::Auto, 0.1, 0.2).is_err());
        assert!(SkewGate::new(L2Mode::Auto, 1.5, 0.2).is_err());
        assert!(SkewGate::new(L2Mode::Auto, f64::NAN, 0.2).is_err());
    }
}
