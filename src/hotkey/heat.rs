//! Hot-set bookkeeping shared by the detectors: each tracked key carries a [`Heat`], the
//! hot and warm keys are also kept in two short index lists (so re-checking them at a
//! bucket or epoch boundary costs their number, not the table size), and every change of
//! heat is queued as a [`HeatChange`] for the balancing core to act on (start or stop
//! replicating and caching a key).

use std::mem::size_of;

use super::keys::{KeyTable, Slot};
use super::{sort_items, HotItem};

/// Every live entry of `table` whose `score` is at least `min`, rendered by `item`,
/// hottest first: what `Detector::report` returns for the detectors built on a
/// [`KeyTable`].
pub(crate) fn report_items<P: Default>(
    table: &KeyTable<P>,
    min: u64,
    score: impl Fn(&P) -> u64,
    item: impl Fn(u32) -> HotItem,
) -> Vec<HotItem> {
    let mut items: Vec<HotItem> = table
        .live_indices()
        .filter(|&i| score(&table.slots[i as usize].p) >= min)
        .map(item)
        .collect();
    sort_items(&mut items);
    items
}

/// How hot a key is right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Heat {
    /// Below the warm threshold (or not tracked at all).
    #[default]
    Cold,
    /// Above the warm threshold (a fraction of the support), below the hot one: an L2
    /// cache candidate.
    Warm,
    /// Above the support threshold: replicate and cache it.
    Hot,
}

impl Heat {
    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Heat::Cold => "cold",
            Heat::Warm => "warm",
            Heat::Hot => "hot",
        }
    }
}

/// A key whose heat changed, oldest first in [`Detector::drain_changes`](super::Detector).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeatChange {
    pub key: Vec<u8>,
    pub from: Heat,
    pub to: Heat,
    /// The key's estimate (a lower bound on its count or weight in the detector's window)
    /// when it changed.
    pub estimate: u64,
}

/// Most changes queued before the oldest undrained ones are dropped (then
/// `drain_changes` reports the loss and the consumer resynchronises from `hot_items`).
pub(crate) const MAX_QUEUED_CHANGES: usize = 1 << 14;

/// What a detector's entry payload exposes to the book.
pub(crate) trait Tracked {
    fn heat(&self) -> Heat;
    fn set_heat(&mut self, h: Heat);
    fn list_pos(&self) -> u32;
    fn set_list_pos(&mut self, pos: u32);
}

#[derive(Debug, Default)]
pub(crate) struct HeatBook {
    hot: Vec<u32>,
    warm: Vec<u32>,
    changes: Vec<HeatChange>,
    lost: bool,
}

impl HeatBook {
    pub fn hot(&self) -> &[u32] {
        &self.hot
    }

    pub fn warm(&self) -> &[u32] {
        &self.warm
    }

    /// The hot (or warm) list as items rendered by `item`, hottest first.
    pub fn items(&self, heat: Heat, item: impl Fn(u32) -> HotItem) -> Vec<HotItem> {
        let list = match heat {
            Heat::Hot => &self.hot,
            Heat::Warm => &self.warm,
            Heat::Cold => return Vec::new(),
        };
        let mut items: Vec<HotItem> = list.iter().map(|&i| item(i)).collect();
        sort_items(&mut items);
        items
    }

    fn list(&mut self, h: Heat) -> Option<&mut Vec<u32>> {
        match h {
            Heat::Hot => Some(&mut self.hot),
            Heat::Warm => Some(&mut self.warm),
            Heat::Cold => None,
        }
    }

    /// Moves entry `idx` to heat `to`, queueing the change.
    pub fn set<P: Tracked>(&mut self, slots: &mut [Slot<P>], idx: u32, to: Heat, estimate: u64) {
        let from = slots[idx as usize].p.heat();
        if from == to {
            return;
        }
        let pos = slots[idx as usize].p.list_pos();
        if let Some(list) = self.list(from) {
            let pos = pos as usize;
            if pos < list.len() && list[pos] == idx {
                list.swap_remove(pos);
                if let Some(&moved) = list.get(pos) {
                    slots[moved as usize].p.set_list_pos(pos as u32);
                }
            }
        }
        if let Some(list) = self.list(to) {
            slots[idx as usize].p.set_list_pos(list.len() as u32);
            list.push(idx);
        }
        slots[idx as usize].p.set_heat(to);
        if self.changes.len() < MAX_QUEUED_CHANGES {
            self.changes.push(HeatChange {
                key: slots[idx as usize].key.to_vec(),
                from,
                to,
                estimate,
            });
        } else {
            self.lost = true;
        }
    }

    /// Re-evaluates every entry currently at heat `which` with `classify` (which returns
    /// the new heat and the estimate to report) and moves those whose heat changed.
    pub fn rescan<P: Tracked>(
        &mut self,
        slots: &mut [Slot<P>],
        which: Heat,
        classify: impl Fn(&Slot<P>) -> (Heat, u64),
    ) {
        let mut i = 0;
        loop {
            let idx = match self.list(which) {
                Some(list) if i < list.len() => list[i],
                _ => break,
            };
            let (to, est) = classify(&slots[idx as usize]);
            if to == which {
                i += 1;
            } else {
                // The last element is swapped into position i: look at i again.
                self.set(slots, idx, to, est);
            }
        }
    }

    /// Appends queued changes to `out`; false if some were dropped since the last drain.
    pub fn drain(&mut self, out: &mut Vec<HeatChange>) -> bool {
        out.append(&mut self.changes);
        !std::mem::take(&mut self.lost)
    }

    pub fn memory_bytes(&self) -> usize {
        (self.hot.capacity() + self.warm.capacity()) * 4
            + self.changes.capacity() * size_of::<HeatChange>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug)]
    struct P {
        heat: Heat,
        pos: u32,
        score: u64,
    }
    impl Tracked for P {
        fn heat(&self) -> Heat {
            self.heat
        }
        fn set_heat(&mut self, h: Heat) {
            self.heat = h
        }
        fn list_pos(&self) -> u32 {
            self.pos
        }
        fn set_list_pos(&mut self, pos: u32) {
            self.pos = pos
        }
    }

    fn slots(n: usize) -> Vec<Slot<P>> {
        (0..n)
            .map(|i| Slot {
                hash: i as u64,
                key: [b'a' + i as u8].as_slice().into(),
                live: true,
                p: P {
                    score: i as u64,
                    ..P::default()
                },
            })
            .collect()
    }

    #[test]
    fn lists_follow_heat_and_changes_are_queued() {
        let mut s = slots(6);
        let mut b = HeatBook::default();
        for i in 0..6 {
            b.set(&mut s, i, Heat::Hot, i as u64);
        }
        b.set(&mut s, 0, Heat::Hot, 0); // no change, no event
        assert_eq!(b.hot().len(), 6);
        // Demote everything scoring below 3 to warm, below 1 to cold.
        b.rescan(&mut s, Heat::Hot, |sl| {
            let h = match sl.p.score {
                0 => Heat::Cold,
                1 | 2 => Heat::Warm,
                _ => Heat::Hot,
            };
            (h, sl.p.score)
        });
        let mut hot: Vec<u32> = b.hot().to_vec();
        hot.sort();
        assert_eq!(hot, vec![3, 4, 5]);
        let mut warm: Vec<u32> = b.warm().to_vec();
        warm.sort();
        assert_eq!(warm, vec![1, 2]);
        for (list, h) in [(b.hot(), Heat::Hot), (b.warm(), Heat::Warm)] {
            for (pos, &i) in list.iter().enumerate() {
                assert_eq!(s[i as usize].p.pos as usize, pos);
                assert_eq!(s[i as usize].p.heat, h);
            }
        }
        assert_eq!(s[0].p.heat, Heat::Cold);
        let mut out = Vec::new();
        assert!(b.drain(&mut out));
        assert_eq!(out.len(), 6 + 3);
        assert_eq!(out[6].to, Heat::Cold);
        assert_eq!(out[6].key, b"a");
        assert!(b.drain(&mut out));
        assert_eq!(out.len(), 9);
    }

    #[test]
    fn queue_is_bounded() {
        let mut s = slots(2);
        let mut b = HeatBook::default();
        for _ in 0..MAX_QUEUED_CHANGES {
            b.set(&mut s, 0, Heat::Hot, 0);
            b.set(&mut s, 0, Heat::Cold, 0);
        }
        let mut out = Vec::new();
        assert!(!b.drain(&mut out));
        assert_eq!(out.len(), MAX_QUEUED_CHANGES);
        assert!(b.drain(&mut out));
    }
}
