//! Consistency checking: per-key version bookkeeping shared by every kvbench thread, and
//! the verdict on each value a GET returns.
//!
//! The rule checked is the one a cache in front of memcached must keep (kvlb's): a GET may
//! miss, but a GET that returns a value must return the value of the last acknowledged SET
//! of that key as of when the GET was sent, or of a newer one (in flight then, or written
//! since). Never an older one.
//!
//! To make "older" decidable, kvbench allows at most one SET of a key in flight at a time
//! across all threads ([`KeyVersions::begin_set`] refuses a second; the workload turns that
//! operation into a GET and counts it). Versions of a key are then written in the order
//! they are issued, so "version v < the acknowledged version a" means the value read was
//! overwritten by a completed SET before the GET started: stale. A SET that times out or
//! fails leaves its version issued but unacknowledged; its value may or may not be in
//! memcached, and reading it is not stale until a later SET of the key is acknowledged.
//!
//! Owns: the per-key state and the verdict. Must not: parse protocol or do I/O.

use std::sync::atomic::{AtomicU64, Ordering};

use super::value::{self, Corruption, Stamp};

const IN_FLIGHT: u64 = 1 << 63;
const ISSUED_SHIFT: u32 = 32;
const ISSUED_MASK: u64 = 0x7fff_ffff;

/// Per key: the last issued version (31 bits), the last acknowledged version (32 bits) and
/// whether a SET is in flight, in one atomic word. 8 bytes per key.
#[derive(Debug)]
pub struct KeyVersions {
    words: Box<[AtomicU64]>,
}

/// The versions of one key, as read at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KeyState {
    pub issued: u32,
    pub acked: u32,
    pub in_flight: bool,
}

fn unpack(w: u64) -> KeyState {
    KeyState {
        issued: ((w >> ISSUED_SHIFT) & ISSUED_MASK) as u32,
        acked: w as u32,
        in_flight: w & IN_FLIGHT != 0,
    }
}

fn pack(s: KeyState) -> u64 {
    (u64::from(s.issued) << ISSUED_SHIFT)
        | u64::from(s.acked)
        | if s.in_flight { IN_FLIGHT } else { 0 }
}

impl KeyVersions {
    /// Bookkeeping for keys `0..keys`, all at version 0 (never written by this run).
    pub fn new(keys: u32) -> KeyVersions {
        KeyVersions {
            words: (0..keys).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The state of `key` (out-of-range keys read as never written).
    pub fn state(&self, key: u32) -> KeyState {
        self.words
            .get(key as usize)
            .map_or(KeyState::default(), |w| unpack(w.load(Ordering::Acquire)))
    }

    /// Claims the next version of `key` for a SET, or `None` if a SET of the key is in
    /// flight (or the key is out of range, or its 2^31 versions are used up).
    pub fn begin_set(&self, key: u32) -> Option<u32> {
        let word = self.words.get(key as usize)?;
        let mut cur = word.load(Ordering::Acquire);
        loop {
            let s = unpack(cur);
            if s.in_flight || u64::from(s.issued) >= ISSUED_MASK {
                return None;
            }
            let next = KeyState {
                issued: s.issued + 1,
                in_flight: true,
                ..s
            };
            match word.compare_exchange_weak(cur, pack(next), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(next.issued),
                Err(actual) => cur = actual,
            }
        }
    }

    /// The SET of `version` was acknowledged (STORED).
    pub fn ack_set(&self, key: u32, version: u32) {
        self.finish(key, version, true);
    }

    /// The SET of `version` failed or timed out: its outcome is unknown.
    pub fn abort_set(&self, key: u32, version: u32) {
        self.finish(key, version, false);
    }

    fn finish(&self, key: u32, version: u32, acked: bool) {
        let Some(word) = self.words.get(key as usize) else {
            return;
        };
        let mut cur = word.load(Ordering::Acquire);
        loop {
            let s = unpack(cur);
            if s.issued != version || !s.in_flight {
                // Not the SET in flight (cannot happen with one SET per key in flight).
                debug_assert!(false, "finish of a SET that is not in flight");
                return;
            }
            let next = KeyState {
                issued: s.issued,
                acked: if acked { version.max(s.acked) } else { s.acked },
                in_flight: false,
            };
            match word.compare_exchange_weak(cur, pack(next), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// What a value returned by a GET is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The last acknowledged version at send time, or a newer one.
    Fresh,
    /// A value of another kvbench run (or of something else that kvbench did not write)
    /// while this run has not acknowledged a SET of the key yet: not ours to judge.
    Foreign,
    /// Older than the SET acknowledged before the GET was sent (including another run's
    /// value after this run's SET was acknowledged).
    Stale { got: u32, acked: u32 },
    /// Not a value anyone wrote for this key: bad checksum, bad header, or a version this
    /// run never issued (above the last issued one, or 0).
    Corrupt(CorruptKind),
}

/// Why a value is corrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorruptKind {
    Bytes(Corruption),
    /// A version above everything issued for the key so far.
    UnissuedVersion {
        got: u32,
        issued: u32,
    },
}

/// Judges `data`, returned for key `key` (named `name`) by a GET that was sent when the
/// key's acknowledged version was `acked_at_send`; `issued_now` is the key's last issued
/// version when the reply arrived.
pub fn check(
    run_id: u32,
    name: &[u8],
    data: &[u8],
    acked_at_send: u32,
    issued_now: u32,
) -> Verdict {
    let Stamp {
        run_id: run,
        version,
    } = match value::decode(name, data) {
        Ok(s) => s,
        Err(e) => return Verdict::Corrupt(CorruptKind::Bytes(e)),
    };
    if run != run_id {
        return if acked_at_send > 0 {
            Verdict::Stale {
                got: 0,
                acked: acked_at_send,
            }
        } else {
            Verdict::Foreign
        };
    }
    // Versions start at 1: version 0 is never written by a validating run.
    if version > issued_now || version == 0 {
        return Verdict::Corrupt(CorruptKind::UnissuedVersion {
            got: version,
            issued: issued_now,
        });
    }
    if version < acked_at_send {
        return Verdict::Stale {
            got: version,
            acked: acked_at_send,
        };
    }
    Verdict::Fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::encode;

    #[test]
    fn one_set_in_flight_per_key() {
        let kv = KeyVersions::new(4);
        assert_eq!(kv.begin_set(1), Some(1));
        assert_eq!(kv.begin_set(1), None);
        assert_eq!(kv.begin_set(2), Some(1));
        kv.ack_set(1, 1);
        assert_eq!(
            kv.state(1),
            KeyState {
                issued: 1,
                acked: 1,
                in_flight: false
            }
        );
        assert_eq!(kv.begin_set(1), Some(2));
        kv.abort_set(1, 2);
        assert_eq!(
            kv.state(1),
            KeyState {
                issued: 2,
                acked: 1,
                in_flight: false
            }
        );
        assert_eq!(kv.begin_set(1), Some(3));
        kv.ack_set(1, 3);
        assert_eq!(kv.state(1).acked, 3);
        assert_eq!(kv.begin_set(9), None);
        assert_eq!(kv.state(9), KeyState::default());
    }

    #[test]
    fn concurrent_writers_get_distinct_versions() {
        let kv = std::sync::Arc::new(KeyVersions::new(1));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while got.len() < 1000 {
                        if let Some(v) = kv.begin_set(0) {
                            got.push(v);
                            kv.ack_set(0, v);
                        }
                    }
                    got
                })
            })
            .collect();
        let mut all: Vec<u32> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=4000).collect::<Vec<_>>());
        assert_eq!(kv.state(0).acked, 4000);
    }

    #[test]
    fn verdicts() {
        let run = 0xabcd;
        let name = b"kvb:5";
        let val = |run_id, version| {
            let mut v = Vec::new();
            encode(&mut v, name, Stamp { run_id, version }, 50);
            v
        };
        assert_eq!(check(run, name, &val(run, 3), 3, 3), Verdict::Fresh);
        // Newer than acknowledged (in flight when the GET was sent).
        assert_eq!(check(run, name, &val(run, 4), 3, 4), Verdict::Fresh);
        assert_eq!(
            check(run, name, &val(run, 2), 3, 4),
            Verdict::Stale { got: 2, acked: 3 }
        );
        assert_eq!(
            check(run, name, &val(run, 5), 3, 4),
            Verdict::Corrupt(CorruptKind::UnissuedVersion { got: 5, issued: 4 })
        );
        assert_eq!(
            check(run, name, &val(run, 0), 0, 0),
            Verdict::Corrupt(CorruptKind::UnissuedVersion { got: 0, issued: 0 })
        );
        assert_eq!(check(run, name, &val(7, 9), 0, 0), Verdict::Foreign);
        assert_eq!(
            check(run, name, &val(7, 9), 1, 1),
            Verdict::Stale { got: 0, acked: 1 }
        );
        assert_eq!(
            check(run, b"kvb:6", &val(run, 3), 3, 3),
            Verdict::Corrupt(CorruptKind::Bytes(Corruption::Checksum))
        );
        assert_eq!(
            check(run, name, b"hello", 0, 0),
            Verdict::Corrupt(CorruptKind::Bytes(Corruption::Short))
        );
    }
}
