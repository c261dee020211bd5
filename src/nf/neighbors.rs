//! IPv4 → Ethernet address resolution state, as an L3 network function keeps it.
//!
//! Static entries come from `--neighbor`; the rest is learned from ARP requests and replies
//! (and from frames a backend sends us). Unknown addresses are resolved by ARP requests the
//! core emits, at most one per address per `retry` interval. Learned entries are refreshed
//! whenever the neighbour speaks and are never aged out while it does.
//!
//! Owns: the table. Must not: build frames (the core emits ARP with `wire`).

use std::net::Ipv4Addr;
use std::time::Duration;

use hashbrown::HashMap;

use crate::clock::Instant;
use crate::config::Mac;

#[derive(Clone, Copy, Debug)]
struct Entry {
    mac: Option<Mac>,
    is_static: bool,
    /// When an ARP request for it was last emitted.
    asked: Option<Instant>,
}

/// The neighbour table.
#[derive(Debug)]
pub struct Neighbors {
    entries: HashMap<Ipv4Addr, Entry>,
    retry: Duration,
}

impl Neighbors {
    pub fn new(statics: &[(Ipv4Addr, Mac)], retry: Duration) -> Neighbors {
        let entries = statics
            .iter()
            .map(|&(ip, mac)| {
                (
                    ip,
                    Entry {
                        mac: Some(mac),
                        is_static: true,
                        asked: None,
                    },
                )
            })
            .collect();
        Neighbors { entries, retry }
    }

    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.entries.get(&ip).and_then(|e| e.mac)
    }

    /// Records that `ip` is at `mac` (static entries win). Returns true if this resolved or
    /// changed an entry.
    pub fn learn(&mut self, ip: Ipv4Addr, mac: Mac) -> bool {
        if mac == [0; 6] || mac[0] & 1 == 1 || ip.is_unspecified() || ip.is_broadcast() {
            return false; // never learn broadcast/multicast or null addresses
        }
        let e = self.entries.entry(ip).or_insert(Entry {
            mac: None,
            is_static: false,
            asked: None,
        });
        if e.is_static || e.mac == Some(mac) {
            return false;
        }
        e.mac = Some(mac);
        true
    }

    /// Addresses among `wanted` that are unresolved and due for an ARP request at `now`;
    /// each is marked as asked.
    pub fn due_requests<'a>(
        &'a mut self,
        wanted: impl IntoIterator<Item = Ipv4Addr> + 'a,
        now: Instant,
    ) -> impl Iterator<Item = Ipv4Addr> + 'a {
        let retry = self.retry;
        wanted.into_iter().filter(move |ip| {
            let e = self.entries.entry(*ip).or_insert(Entry {
                mac: None,
                is_static: false,
                asked: None,
            });
            if e.mac.is_some() {
                return false;
            }
            if e.asked
                .is_some_and(|t| now.saturating_duration_since(t) < retry)
            {
                return false;
            }
            e.asked = Some(now);
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

    #[test]
    fn static_learned_and_requests() {
        let mut n = Neighbors::new(&[(A, [2, 0, 0, 0, 0, 2])], Duration::from_secs(1));
        assert_eq!(n.lookup(A), Some([2, 0, 0, 0, 0, 2]));
        assert!(!n.learn(A, [2, 0, 0, 0, 0, 9]), "static entries win");
        let t0 = Instant::from_nanos(1);
        let due: Vec<_> = n.due_requests([A, B], t0).collect();
        assert_eq!(due, vec![B]);
        let due: Vec<_> = n
            .due_requests([A, B], t0 + Duration::from_millis(500))
            .collect();
        assert!(due.is_empty(), "retry interval");
        let due: Vec<_> = n.due_requests([B], t0 + Duration::from_secs(1)).collect();
        assert_eq!(due, vec![B]);
        assert!(!n.learn(B, [0xff; 6]), "broadcast is never learned");
        assert!(n.learn(B, [2, 0, 0, 0, 0, 3]));
        assert_eq!(n.lookup(B), Some([2, 0, 0, 0, 0, 3]));
        assert!(n
            .due_requests([B], t0 + Duration::from_secs(5))
            .next()
            .is_none());
    }
}
