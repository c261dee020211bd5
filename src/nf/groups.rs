//! Multi-key gets split over several servers: one record per split request, shared by its
//! parts' flows, so the client gets one reply ending in one `END` whichever part answers
//! last. A room of the core: slots recycled through a free list, each handed out under a
//! generation, so a part that outlives its group (an expired flow answered late) finds
//! nothing instead of another request's group.

use super::Client;

/// A handle on a split get's record: valid while the record lives and is not reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct GroupRef {
    index: u32,
    generation: u32,
}

/// A split get in flight.
#[derive(Debug)]
pub(super) struct Group {
    pub client: Client,
    generation: u32,
    /// Parts not answered (or expired) yet.
    pub pending: u16,
    /// Reply bytes still allowed to the client (anti-amplification), over all parts.
    pub cap_left: usize,
    live: bool,
}

/// The split gets in flight.
#[derive(Debug, Default)]
pub(super) struct Groups {
    slots: Vec<Group>,
    free: Vec<u32>,
}

impl Groups {
    /// Starts a split get for `client` with `pending` parts and `cap` reply bytes.
    pub fn open(&mut self, client: Client, pending: u16, cap: usize) -> GroupRef {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Group {
                    client,
                    generation: 0,
                    pending: 0,
                    cap_left: 0,
                    live: false,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let g = &mut self.slots[index as usize];
        g.client = client;
        g.generation = g.generation.wrapping_add(1);
        g.pending = pending;
        g.cap_left = cap;
        g.live = true;
        GroupRef {
            index,
            generation: g.generation,
        }
    }

    /// The live group `g` names (`None` once it was released, even if its slot is reused).
    pub fn get_mut(&mut self, g: GroupRef) -> Option<&mut Group> {
        self.slots
            .get_mut(g.index as usize)
            .filter(|x| x.live && x.generation == g.generation)
    }

    /// One part of `g` finished (answered or expired). Returns true if parts remain.
    pub fn part_done(&mut self, g: GroupRef) -> bool {
        match self.get_mut(g) {
            Some(grp) => {
                grp.pending = grp.pending.saturating_sub(1);
                grp.pending > 0
            }
            None => false,
        }
    }

    /// Ends `g`; its slot may be reused (a no-op if it already ended).
    pub fn release(&mut self, g: GroupRef) {
        if let Some(grp) = self.get_mut(g) {
            grp.live = false;
            self.free.push(g.index);
        }
    }

    /// Split gets in flight.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::nf::PortId;

    fn client(port: u16) -> Client {
        Client {
            mac: [2, 0, 0, 0, 0, 1],
            vlan: None,
            ip: Ipv4Addr::new(10, 0, 0, 9),
            port,
            request_id: 7,
            in_port: PortId(0),
        }
    }

    #[test]
    fn a_released_group_is_not_found_through_an_old_handle_after_reuse() {
        let mut groups = Groups::default();
        let a = groups.open(client(1), 2, 1400);
        assert!(groups.part_done(a), "one of two parts left");
        assert!(!groups.part_done(a), "the last part");
        groups.release(a);
        assert_eq!(groups.live(), 0);
        let b = groups.open(client(2), 1, 100);
        assert_ne!(a, b, "same slot, new generation");
        assert!(
            groups.get_mut(a).is_none(),
            "a late part of the old group finds nothing"
        );
        assert!(!groups.part_done(a));
        groups.release(a);
        assert_eq!(
            groups.get_mut(b).map(|g| g.client.port),
            Some(2),
            "b is untouched"
        );
        assert_eq!(groups.live(), 1);
    }
}
