//! The flow records: what the core remembers about each outstanding request, packed so
//! that a single-key client request (the request path's common case) costs one 64-byte
//! cache line, table bookkeeping included.
//!
//! Owns: the packing of [`Flow`]s into the [`FlowTable`] and the out-of-line store for
//! what is rare (multi-get groups, hot-key writes, several written keys, kvlb's own
//! requests). Must not: decide anything; the core reads and writes flows through
//! [`Flows`] only.
//!
//! # Layout
//! A [`Packed`] record is 48 bytes: the client's addresses (18 bytes), the request's one
//! key hash (a one-key GET's expected reply key, the hash it learns under, or the one key
//! it writes: the same key), its read ticket and ring hash when it learns, its reply byte
//! cap, flags, and the index of its out-of-line extra (0: none). The table adds the send
//! time, a generation and the backend id: 62 bytes, one cache line (asserted below).
//! Before, a flow was a 144-byte enum in a 168-byte slot, copied whole on every insert
//! and expiry.
#![forbid(unsafe_code)]

use std::time::Duration;

use super::response::Expect;
use super::{Client, ClientFlow, Flow, FlowKind, GroupRef, Learn, PortId, Writes};
use crate::backend::BackendId;
use crate::cache::{KeyHash, ReadTicket};
use crate::clock::Instant;
use crate::flow::{slot_size, FlowError, FlowTable, Token};
use crate::wire::VlanTag;

/// The shape a reply must have (see [`Expect`]), without [`Expect::Value`]'s key hash
/// (kept once in [`Packed::key_hash`]). A `repr(u8)` enum, so `Option<Packed>` needs no
/// tag of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Shape {
    Value,
    Values,
    Stored,
    Deleted,
    Number,
    Touched,
    Version,
    Ok,
    Stats,
    Meta,
    Any,
    /// kvlb's own request (its whole [`FlowKind`] is out of line).
    Own,
}

const RETRIEVAL: u8 = 1;
const EXPECT_REPLY: u8 = 1 << 1;
const LEARN: u8 = 1 << 2;
/// Writes = One(key_hash).
const WRITES_ONE: u8 = 1 << 3;
const VLAN: u8 = 1 << 4;
/// The VLAN tag is 802.1ad (TPID 0x88a8), else 802.1Q (0x8100): the only two the
/// Ethernet parser accepts.
const VLAN_AD: u8 = 1 << 5;
const TPID_AD: u16 = 0x88a8;
const TPID_Q: u16 = 0x8100;

/// One outstanding request, packed (see the module doc).
#[derive(Debug)]
pub(super) struct Packed {
    key_hash: u64,
    ticket: u64,
    ring_hash: u32,
    cap_left: u32,
    /// 1 + index into [`Flows::extras`]; 0: none.
    extra: u32,
    ip: [u8; 4],
    mac: [u8; 6],
    port: u16,
    request_id: u16,
    in_port: u16,
    vlan_tci: u16,
    flags: u8,
    shape: Shape,
}

/// What does not fit a [`Packed`] record.
#[derive(Debug)]
enum Extra {
    /// A client request with a group, a hot-key write, several (or all) written keys, or
    /// a written key other than its one key hash.
    Client {
        writes: Writes,
        hot_write: Option<Box<[u8]>>,
        miss_key: Option<Box<[u8]>>,
        group: Option<GroupRef>,
    },
    /// One of kvlb's own requests.
    Own(FlowKind),
}

/// A live client flow as [`Flows::peek`] sees it (no owned parts).
#[derive(Clone, Copy, Debug)]
pub(super) struct ClientPeek {
    pub client: Client,
    pub retrieval: bool,
    pub expect: Expect,
    pub learn: Option<Learn>,
    pub group: Option<GroupRef>,
}

/// A live flow as [`Flows::peek`] sees it.
#[derive(Debug)]
pub(super) enum Peek<'a> {
    Client(ClientPeek),
    Own(&'a FlowKind),
}

// The whole point: one cache line per single-key client request.
const _: () = assert!(size_of::<Packed>() <= 48);
const _: () = assert!(slot_size::<Packed, u16>() <= 64);

/// The flow table and the out-of-line store of its rare parts.
#[derive(Debug)]
pub(super) struct Flows {
    table: FlowTable<Packed, u16>,
    extras: Vec<Option<Extra>>,
    free_extras: Vec<u32>,
}

fn backend_key(b: BackendId) -> u16 {
    // Config validation bounds the backend count far below 65536.
    debug_assert!(b <= usize::from(u16::MAX));
    b as u16
}

impl Flows {
    pub fn new(capacity: usize, source_ports: u16, timeout: Duration) -> Flows {
        Flows {
            table: FlowTable::new(capacity, source_ports, timeout),
            extras: Vec::new(),
            free_extras: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Loads the table slots the next `n` inserts will take (see
    /// [`FlowTable::touch_next`]).
    #[inline]
    pub fn touch_next(&self, n: usize) {
        self.table.touch_next(n);
    }

    /// The earliest deadline of a live flow.
    #[allow(dead_code)]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.table.next_deadline()
    }

    fn store(&mut self, e: Extra) -> u32 {
        match self.free_extras.pop() {
            Some(i) => {
                self.extras[i as usize] = Some(e);
                i + 1
            }
            None => {
                self.extras.push(Some(e));
                self.extras.len() as u32
            }
        }
    }

    fn take_extra(&mut self, ix: u32) -> Option<Extra> {
        if ix == 0 {
            return None;
        }
        let e = self.extras.get_mut(ix as usize - 1)?.take();
        self.free_extras.push(ix - 1);
        e
    }

    fn extra(&self, ix: u32) -> Option<&Extra> {
        if ix == 0 {
            return None;
        }
        self.extras.get(ix as usize - 1)?.as_ref()
    }

    /// Records `flow` sent at `now`; the flow back when the table is full.
    // The flow comes back by value so the caller can undo what it noted for it; boxing
    // it would allocate per refused request, exactly when the table is full.
    #[allow(clippy::result_large_err)]
    pub fn insert(&mut self, now: Instant, flow: Flow) -> Result<Token, Flow> {
        let backend = flow.backend;
        let packed = self.pack(flow.kind);
        match self.table.insert(now, backend_key(backend), packed) {
            Ok(t) => Ok(t),
            Err((FlowError::Full, p)) => Err(Flow {
                backend,
                kind: self.unpack(p),
            }),
        }
    }

    /// The live flow `token` names, if it went to `backend`.
    #[inline]
    pub fn peek(&self, token: Token, backend: BackendId) -> Option<Peek<'_>> {
        let p = self.table.get(token, backend_key(backend))?;
        if p.shape == Shape::Own {
            return match self.extra(p.extra)? {
                Extra::Own(kind) => Some(Peek::Own(kind)),
                Extra::Client { .. } => None,
            };
        }
        let group = match self.extra(p.extra) {
            Some(Extra::Client { group, .. }) => *group,
            _ => None,
        };
        Some(Peek::Client(ClientPeek {
            client: client_of(p),
            retrieval: p.flags & RETRIEVAL != 0,
            expect: expect_of(p),
            learn: learn_of(p),
            group,
        }))
    }

    /// Takes `len` bytes from a live client flow's reply cap; false (nothing taken) when
    /// fewer are left or the flow is gone.
    pub fn take_cap(&mut self, token: Token, backend: BackendId, len: usize) -> bool {
        match self.table.get_mut(token, backend_key(backend)) {
            Some(p) if p.shape != Shape::Own && p.cap_left as usize >= len => {
                if p.cap_left != u32::MAX {
                    p.cap_left -= len as u32;
                }
                true
            }
            _ => false,
        }
    }

    /// Removes the flow `token` names (if it went to `backend`): its send time and itself.
    pub fn remove(
        &mut self,
        now: Instant,
        token: Token,
        backend: BackendId,
    ) -> Option<(Instant, Flow)> {
        let (sent, p) = self.table.remove(now, token, backend_key(backend))?;
        Some((
            sent,
            Flow {
                backend,
                kind: self.unpack(p),
            },
        ))
    }

    /// One flow whose deadline passed (see [`FlowTable::pop_expired`]).
    pub fn pop_expired(&mut self, now: Instant) -> Option<(Instant, Flow)> {
        let (_, backend, sent, p) = self.table.pop_expired(now)?;
        Some((
            sent,
            Flow {
                backend: usize::from(backend),
                kind: self.unpack(p),
            },
        ))
    }

    fn pack(&mut self, kind: FlowKind) -> Packed {
        let cf = match kind {
            FlowKind::Client(cf) => cf,
            own => {
                let extra = self.store(Extra::Own(own));
                return Packed {
                    key_hash: 0,
                    ticket: 0,
                    ring_hash: 0,
                    cap_left: 0,
                    extra,
                    ip: [0; 4],
                    mac: [0; 6],
                    port: 0,
                    request_id: 0,
                    in_port: 0,
                    vlan_tci: 0,
                    flags: 0,
                    shape: Shape::Own,
                };
            }
        };
        let ClientFlow {
            client,
            retrieval,
            expect_reply,
            learn,
            writes,
            hot_write,
            miss_key,
            group,
            cap_left,
            expect,
        } = cf;
        let mut flags = 0;
        if retrieval {
            flags |= RETRIEVAL;
        }
        if expect_reply {
            flags |= EXPECT_REPLY;
        }
        // The one key hash: the expected reply's key, the learned key, or the written key.
        let mut key_hash: Option<KeyHash> = None;
        let mut claim = |h: KeyHash| match key_hash {
            None => {
                key_hash = Some(h);
                true
            }
            Some(k) => k == h,
        };
        let (shape, expect_ok) = match expect {
            Expect::Value(h) => (Shape::Value, claim(h)),
            Expect::Values => (Shape::Values, true),
            Expect::Stored => (Shape::Stored, true),
            Expect::Deleted => (Shape::Deleted, true),
            Expect::Number => (Shape::Number, true),
            Expect::Touched => (Shape::Touched, true),
            Expect::Version => (Shape::Version, true),
            Expect::Ok => (Shape::Ok, true),
            Expect::Stats => (Shape::Stats, true),
            Expect::Meta => (Shape::Meta, true),
            Expect::Any => (Shape::Any, true),
        };
        debug_assert!(expect_ok, "the first claim always succeeds");
        let (ticket, ring_hash) = match learn {
            Some(l) if claim(l.key_hash) => {
                flags |= LEARN;
                (l.ticket.to_raw(), l.ring_hash)
            }
            // A learn under another hash than the reply's key is never made (a GET learns
            // the key it asks for); drop the learning, never the safety.
            _ => (0, 0),
        };
        let writes = match writes {
            Writes::One(h) if claim(h) => {
                flags |= WRITES_ONE;
                Writes::None
            }
            w => w,
        };
        let extra = if writes != Writes::None
            || hot_write.is_some()
            || miss_key.is_some()
            || group.is_some()
        {
            self.store(Extra::Client {
                writes,
                hot_write,
                miss_key,
                group,
            })
        } else {
            0
        };
        let vlan_tci = match client.vlan {
            Some(v) => {
                debug_assert!(v.tpid == TPID_Q || v.tpid == TPID_AD);
                flags |= VLAN;
                if v.tpid == TPID_AD {
                    flags |= VLAN_AD;
                }
                v.tci
            }
            None => 0,
        };
        Packed {
            key_hash: key_hash.map_or(0, KeyHash::raw),
            ticket,
            ring_hash,
            cap_left: u32::try_from(cap_left).unwrap_or(u32::MAX),
            extra,
            ip: client.ip.octets(),
            mac: client.mac,
            port: client.port,
            request_id: client.request_id,
            in_port: client.in_port.into(),
            vlan_tci,
            flags,
            shape,
        }
    }

    fn unpack(&mut self, p: Packed) -> FlowKind {
        let extra = self.take_extra(p.extra);
        if p.shape == Shape::Own {
            return match extra {
                Some(Extra::Own(kind)) => kind,
                // Cannot happen: an own flow always has its kind stored.
                _ => FlowKind::Probe,
            };
        }
        let (mut writes, hot_write, miss_key, group) = match extra {
            Some(Extra::Client {
                writes,
                hot_write,
                miss_key,
                group,
            }) => (writes, hot_write, miss_key, group),
            _ => (Writes::None, None, None, None),
        };
        if p.flags & WRITES_ONE != 0 {
            writes = Writes::One(KeyHash::from_raw(p.key_hash));
        }
        FlowKind::Client(ClientFlow {
            client: client_of(&p),
            retrieval: p.flags & RETRIEVAL != 0,
            expect_reply: p.flags & EXPECT_REPLY != 0,
            learn: learn_of(&p),
            writes,
            hot_write,
            miss_key,
            group,
            cap_left: if p.cap_left == u32::MAX {
                usize::MAX
            } else {
                p.cap_left as usize
            },
            expect: expect_of(&p),
        })
    }
}

fn client_of(p: &Packed) -> Client {
    Client {
        mac: p.mac,
        vlan: (p.flags & VLAN != 0).then_some(VlanTag {
            tpid: if p.flags & VLAN_AD != 0 {
                TPID_AD
            } else {
                TPID_Q
            },
            tci: p.vlan_tci,
        }),
        ip: p.ip.into(),
        port: p.port,
        request_id: p.request_id,
        in_port: PortId(p.in_port),
    }
}

fn learn_of(p: &Packed) -> Option<Learn> {
    (p.flags & LEARN != 0).then(|| Learn {
        ticket: ReadTicket::from_raw(p.ticket),
        key_hash: KeyHash::from_raw(p.key_hash),
        ring_hash: p.ring_hash,
    })
}

fn expect_of(p: &Packed) -> Expect {
    match p.shape {
        Shape::Value => Expect::Value(KeyHash::from_raw(p.key_hash)),
        Shape::Values => Expect::Values,
        Shape::Stored => Expect::Stored,
        Shape::Deleted => Expect::Deleted,
        Shape::Number => Expect::Number,
        Shape::Touched => Expect::Touched,
        Shape::Version => Expect::Version,
        Shape::Ok => Expect::Ok,
        Shape::Stats => Expect::Stats,
        Shape::Meta => Expect::Meta,
        Shape::Any | Shape::Own => Expect::Any,
    }
}
