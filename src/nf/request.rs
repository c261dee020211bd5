//! Client requests: admission, parsing, detection, cache hits, routing and forwarding.

use std::net::SocketAddrV4;

use super::hot::Readers;
use super::response::Expect;
use super::{
    Client, ClientFlow, Core, Dest, DropReason, Flow, FlowKind, GroupRef, Learn, MetaFlags, Opaque,
    PortId, Verdict, Writes,
};
use crate::backend::BackendId;
use crate::cache::KeyHash;
use crate::clock::Instant;
use crate::config::CachePolicy;
use crate::flow::Token;
use crate::hotkey::{Detector, Heat};
use crate::proto::{
    self, Command, Keys, ReplyShape, Request, Response, Retrieval, Value, MAX_KEY_LEN,
};
use crate::wire::{ethernet, FrameBuf, McHeader, Retarget, UdpEndpoints, UdpFrame};

/// A key copied out of the frame (≤ 250 bytes), so the frame can be rewritten while the
/// key is still needed.
#[derive(Clone, Copy)]
pub(super) struct KeyBuf {
    len: u8,
    bytes: [u8; MAX_KEY_LEN],
}

impl KeyBuf {
    pub fn new(key: &[u8]) -> KeyBuf {
        let mut k = KeyBuf {
            len: 0,
            bytes: [0; MAX_KEY_LEN],
        };
        let n = key.len().min(MAX_KEY_LEN);
        k.bytes[..n].copy_from_slice(&key[..n]);
        k.len = n as u8;
        k
    }

    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Where a key parsed out of a frame lies in it, so that the frame need not stay borrowed
/// (nor the key be copied) between the decision and its execution.
#[derive(Clone, Copy)]
pub(super) struct KeySpan {
    /// The key's address; turned into an offset against the frame it came from.
    addr: usize,
    len: usize,
}

impl KeySpan {
    fn of(key: &[u8]) -> KeySpan {
        KeySpan {
            addr: key.as_ptr() as usize,
            len: key.len(),
        }
    }

    /// The key's range in `frame`, which must be the buffer it was parsed from (else
    /// `None`).
    fn range_in(self, frame: &[u8]) -> Option<std::ops::Range<usize>> {
        let start = self.addr.checked_sub(frame.as_ptr() as usize)?;
        let end = start.checked_add(self.len)?;
        (end <= frame.len()).then_some(start..end)
    }
}

/// What to do with a request, decided while the request (borrowing the frame) is parsed.
// A short-lived value on the stack; boxing the key would cost an allocation per GET.
#[allow(clippy::large_enum_variant)]
enum Action {
    Drop(DropReason),
    /// A plain single-key `get`: serve from cache, or route for reading. The key is not
    /// copied: `key` says where it lies in the frame.
    Get {
        key: KeySpan,
        heat: Heat,
    },
    /// Send to `backend` (tracked in the flow table; `expect_reply` false for noreply and
    /// quiet requests).
    Forward {
        backend: BackendId,
        retrieval: bool,
        hot_write: Option<Box<[u8]>>,
        expect_reply: bool,
        writes: Writes,
    },
    /// Handled by emitted frames (multi-key get split, broadcasts); the frame is consumed.
    Consumed,
    /// Answered by kvlb in place (a fenced key's absence).
    Answer(Response<'static>),
}

/// Which `stats` variants end with END (the others answer one line).
fn stats_is_listing(args: &[u8]) -> bool {
    let first = args.split(|&b| b == b' ').find(|a| !a.is_empty());
    !matches!(first, Some(b"reset") | Some(b"detail"))
}

impl Core {
    pub(super) fn on_request<F: FrameBuf + ?Sized>(
        &mut self,
        now: Instant,
        in_port: PortId,
        frame: &mut F,
        u: UdpFrame,
        get_hash: Option<KeyHash>,
    ) -> Verdict {
        if let Err(r) = self.guard.admit(u.src_ip, now) {
            return self.drop(match r {
                super::guard::Refusal::NotAllowed => DropReason::AclDenied,
                super::guard::Refusal::RateLimited => DropReason::RateLimited,
            });
        }
        let mut client = Client {
            mac: u.eth.src,
            vlan: u.eth.vlan,
            ip: u.src_ip,
            port: u.src_port,
            request_id: 0,
            in_port,
        };
        let mut expect = Expect::Shape(ReplyShape::Any);
        let action = {
            let payload = u.payload(frame.bytes());
            match proto::parse_datagram(payload) {
                Err(e) => Action::Drop(DropReason::Proto(e)),
                Ok((header, req)) => {
                    client.request_id = header.request_id;
                    expect = Expect::of(&req);
                    self.plan(now, &client, &req, get_hash)
                }
            }
        };
        match action {
            Action::Drop(r) => self.drop(r),
            Action::Consumed => {
                // Not an error: the reply goes out as emitted frames.
                self.stats.count_drop(DropReason::Absorbed);
                Verdict::Drop(DropReason::Absorbed)
            }
            Action::Get { key, heat } => self.get_one(now, frame, &u, client, key, heat, get_hash),
            // Leaves from kvlb's MAC, as every reply kvlb writes does.
            Action::Answer(reply) => match proto::write_reply(frame, &u, &[reply]) {
                Ok(_) => self.own_reply(frame, &client),
                Err(_) => self.drop(DropReason::RewriteFailed),
            },
            Action::Forward {
                backend,
                retrieval,
                hot_write,
                expect_reply,
                writes,
            } => {
                let kind = FlowKind::Client(ClientFlow {
                    client,
                    retrieval,
                    expect_reply,
                    learn: None,
                    writes,
                    hot_write,
                    miss_key: None,
                    group: None,
                    cap_left: self.guard.reply_cap(client.ip),
                    expect,
                });
                self.forward(now, frame, &u, backend, kind)
            }
        }
    }

    /// Decides what to do with a parsed request; counts it, feeds the detector, applies
    /// write invalidation and replica copies (which need the request's bytes). `get_hash`
    /// is the key hash stage 1 computed for a plain one-key `get` (the request's only key).
    fn plan(
        &mut self,
        now: Instant,
        client: &Client,
        req: &Request<'_>,
        get_hash: Option<KeyHash>,
    ) -> Action {
        match req {
            Request::Retrieval(r) => {
                self.stats.requests.reads += 1;
                self.stats.requests.read_keys += r.keys.len() as u64;
                let mut heat = Heat::Cold;
                if let Some(d) = self.detector.as_mut() {
                    match get_hash {
                        // One hash for the detector and every table after it.
                        Some(h) => heat = d.observe_hashed(r.keys.first(), h, 1),
                        None => {
                            for k in r.keys.iter() {
                                heat = d.observe(k, 1);
                            }
                        }
                    }
                }
                if r.exptime.is_some() {
                    // gat/gats change the exptime: a write for the caches and replicas. A
                    // one-key request's flow reports its hot key's write done when it ends
                    // (`hot_write`); a split one's parts do not track hot writes, so those
                    // count as unacknowledged writes (replication waits out the settle
                    // time), not as pending ones nothing would ever release.
                    let answered = r.keys.len() == 1;
                    for k in r.keys.iter() {
                        self.note_write(now, k, false, answered);
                    }
                }
                if r.keys.len() > 1 {
                    return self.multi_get(now, client, r);
                }
                let key = r.keys.first();
                if r.command == Command::Get {
                    return Action::Get {
                        key: KeySpan::of(key),
                        heat,
                    };
                }
                // gets/gat/gats: cas uniques are per server, so only the primary answers.
                let writes = if r.exptime.is_some() {
                    Writes::One(self.caches.key_hash(key))
                } else {
                    Writes::None
                };
                let hot_write = (r.exptime.is_some() && self.hot.contains(key)).then(|| key.into());
                self.route_primary(key, true, hot_write, true, writes, Some(Response::End))
            }
            Request::Storage(s) => {
                self.stats.requests.writes += 1;
                if let Some(d) = self.detector.as_mut() {
                    d.observe(s.key, 1);
                }
                let broadcast = s.command == Command::Set;
                let plan = self.note_write(now, s.key, broadcast, !s.noreply);
                if let Some(plan) = &plan {
                    // Copies to the replicas always ask for a reply: readiness needs it.
                    for &r in &plan.copies {
                        self.emit_replica_write(
                            now, r, s.key, s.flags, s.exptime, s.data, plan.seq,
                        );
                    }
                }
                let hot_write = (plan.is_some() && !s.noreply).then(|| s.key.into());
                let writes = Writes::One(self.caches.key_hash(s.key));
                // append/prepend build on the current value; the others replace it whole.
                let if_fenced = matches!(s.command, Command::Append | Command::Prepend)
                    .then_some(Response::NotStored);
                self.route_primary(s.key, false, hot_write, !s.noreply, writes, if_fenced)
            }
            Request::Delete { key, noreply }
            | Request::Arithmetic { key, noreply, .. }
            | Request::Touch { key, noreply, .. } => {
                self.stats.requests.writes += 1;
                if let Some(d) = self.detector.as_mut() {
                    d.observe(key, 1);
                }
                let plan = self.note_write(now, key, false, !noreply);
                let hot_write = (plan.is_some() && !noreply).then(|| (*key).into());
                let writes = Writes::One(self.caches.key_hash(key));
                // incr/decr build on the current value; delete and touch reveal none of it.
                let if_fenced =
                    matches!(req, Request::Arithmetic { .. }).then_some(Response::NotFound);
                self.route_primary(key, false, hot_write, !noreply, writes, if_fenced)
            }
            Request::Meta(m) => {
                let mut buf = [0u8; MAX_KEY_LEN];
                let key = m.routing_key(&mut buf);
                if key.is_empty() {
                    // mn (no-op): any live backend answers it.
                    self.stats.requests.other += 1;
                    return self.route_any(false);
                }
                let key = KeyBuf::new(key);
                let key = key.as_slice();
                if let Some(d) = self.detector.as_mut() {
                    d.observe(key, 1);
                }
                if req.mutates() {
                    self.stats.requests.writes += 1;
                    let plan = self.note_write(now, key, false, !m.quiet);
                    let hot_write = (plan.is_some() && !m.quiet).then(|| key.into());
                    // Quiet meta writes may stay silent on success.
                    let writes = Writes::One(self.caches.key_hash(key));
                    self.route_primary(key, false, hot_write, !m.quiet, writes, None)
                } else {
                    self.stats.requests.reads += 1;
                    self.stats.requests.read_keys += 1;
                    self.route_primary(key, false, None, !m.quiet, Writes::None, None)
                }
            }
            Request::Binary(b) => {
                if b.key.is_empty() {
                    self.stats.requests.other += 1;
                    return self.route_any(false);
                }
                if let Some(d) = self.detector.as_mut() {
                    d.observe(b.key, 1);
                }
                let writes = if b.mutates() {
                    self.stats.requests.writes += 1;
                    self.note_write(now, b.key, false, false);
                    Writes::One(self.caches.key_hash(b.key))
                } else {
                    self.stats.requests.reads += 1;
                    self.stats.requests.read_keys += 1;
                    Writes::None
                };
                // Binary quiet opcodes may not answer: a missing reply is no timeout.
                self.route_primary(b.key, false, None, false, writes, None)
            }
            Request::Version => {
                self.stats.requests.other += 1;
                self.route_any(false)
            }
            Request::Stats { args } => {
                self.stats.requests.other += 1;
                self.route_any(stats_is_listing(args))
            }
            Request::Verbosity { noreply, .. } => {
                self.stats.requests.other += 1;
                self.broadcast(now, req, !noreply)
            }
            Request::FlushAll { noreply, .. } => {
                self.stats.requests.writes += 1;
                // Everything may change: nothing learned before this may be served, and
                // every replica copy is gone.
                let keys: Vec<Box<[u8]>> = self.hot.keys().map(Box::from).collect();
                for k in keys {
                    self.hot.on_write(&k, false, false, now);
                }
                self.broadcast(now, req, !noreply)
            }
            Request::Quit => {
                self.stats.requests.other += 1;
                Action::Drop(DropReason::Quit)
            }
        }
    }

    /// A write of `key` is on its way: drop it from the caches and stamp it (replies in
    /// flight are not learned; the caller reports the write done when its flow ends), and
    /// advance its replication state.
    fn note_write(
        &mut self,
        now: Instant,
        key: &[u8],
        broadcast: bool,
        answered: bool,
    ) -> Option<super::hot::WritePlan> {
        let h = self.caches.key_hash(key);
        self.caches.write_sent(h, key);
        self.hot.on_write(key, broadcast, answered, now)
    }

    /// Routes a request to the key's primary. `if_fenced` is what a request that returns
    /// the key's value or builds on it (`gets`/`gat`/`gats`, `incr`/`decr`,
    /// `append`/`prepend`) answers while the key is fenced: its new primary may still hold an
    /// old copy, so until the fence lands the key is absent to it, as it is to a `get` (see
    /// [`super::hot`]). Requests that replace the value or only touch the item go ahead.
    /// (Meta and binary requests are not answered so.)
    fn route_primary(
        &mut self,
        key: &[u8],
        retrieval: bool,
        hot_write: Option<Box<[u8]>>,
        expect_reply: bool,
        writes: Writes,
        if_fenced: Option<Response<'static>>,
    ) -> Action {
        let hot = self.hot.get(key).map(|h| (h.is_fenced(), h.primary()));
        let fenced = if_fenced.is_some()
            && match hot {
                Some((fenced, _)) => fenced,
                None => self.hot.is_cooling_fenced(key),
            };
        let primary = match hot {
            _ if fenced => {
                // Nothing leaves: the request's writes end here.
                self.writes_done(&writes);
                if let Some(k) = &hot_write {
                    self.hot.primary_write_done(k);
                }
                return match (if_fenced, expect_reply) {
                    (Some(reply), true) => Action::Answer(reply),
                    _ => Action::Consumed,
                };
            }
            Some((_, primary)) => Some(primary),
            None => {
                let rh = self.ring_hash(key);
                self.primary_for(rh)
            }
        };
        if let (Some(backend), false, false) = (primary, self.all_up, writes == Writes::None) {
            self.note_displaced(key, backend);
        }
        match primary {
            Some(backend) => Action::Forward {
                backend,
                retrieval,
                hot_write,
                expect_reply,
                writes,
            },
            None => {
                self.writes_done(&writes);
                Action::Drop(DropReason::NoBackend)
            }
        }
    }

    /// A write of `key` goes to `to`. If that is not the key's ketama server (which is
    /// down), remember it: when the owner rejoins, the copy left on `to` is deleted, or it
    /// would be read again, stale, the next time the owner fails.
    fn note_displaced(&mut self, key: &[u8], to: BackendId) {
        let rh = self.ring_hash(key);
        let owner = self.ring.server_for_hash(rh);
        if owner == Some(to) {
            return;
        }
        if self.displaced.len() >= super::MAX_DISPLACED && !self.displaced.contains_key(key) {
            if self.stats.replication.displaced_overflow == 0 {
                log::warn!(
                    "more than {} keys written away from a down backend: copies beyond \
                     that are not cleaned up when it rejoins",
                    super::MAX_DISPLACED
                );
            }
            self.stats.replication.displaced_overflow += 1;
            return;
        }
        self.displaced.insert(key.into(), to);
    }

    /// Reports a request's writes done to the caches (its flow ended, or it never left).
    pub(super) fn writes_done(&mut self, writes: &Writes) {
        match writes {
            Writes::None => {}
            Writes::One(h) => self.caches.write_done(*h),
            Writes::Many(hs) => {
                for h in hs.iter() {
                    self.caches.write_done(*h);
                }
            }
            Writes::All => self.caches.flush_done(),
        }
    }

    /// Keyless commands: the first live backend answers.
    fn route_any(&mut self, retrieval: bool) -> Action {
        match (0..self.backends.len()).find(|&b| self.backends.get(b).is_up()) {
            Some(backend) => Action::Forward {
                backend,
                retrieval,
                hot_write: None,
                expect_reply: true,
                writes: Writes::None,
            },
            None => Action::Drop(DropReason::NoBackend),
        }
    }

    /// flush_all / verbosity: to every live backend; the client gets the first one's reply.
    fn broadcast(&mut self, now: Instant, req: &Request<'_>, answered: bool) -> Action {
        let live: Vec<BackendId> = (0..self.backends.len())
            .filter(|&b| self.backends.get(b).is_up())
            .collect();
        let Some((&first, rest)) = live.split_first() else {
            return Action::Drop(DropReason::NoBackend);
        };
        let flush = matches!(req, Request::FlushAll { .. });
        for &b in rest {
            // Every copy of a flush is a write to every key until its flow ends; quiet
            // copies are still tracked (they expire without counting as timeouts).
            if flush {
                self.caches.flush_sent();
            }
            let kind = FlowKind::Absorb {
                flush,
                expect_reply: answered,
            };
            if !self.emit_request(now, b, kind, req) && flush {
                self.caches.flush_done();
            }
        }
        if flush {
            self.caches.flush_sent();
        }
        Action::Forward {
            backend: first,
            retrieval: false,
            hot_write: None,
            expect_reply: answered,
            writes: if flush { Writes::All } else { Writes::None },
        }
    }

    /// A plain single-key get: cache hit in place, fenced miss, or a read routed to the
    /// primary or a ready replica (learning the value if the key is hot or warm).
    fn get_one<F: FrameBuf + ?Sized>(
        &mut self,
        now: Instant,
        frame: &mut F,
        u: &UdpFrame,
        client: Client,
        key: KeySpan,
        heat: Heat,
        staged_hash: Option<KeyHash>,
    ) -> Verdict {
        let Some(range) = key.range_in(frame.bytes()) else {
            // Cannot happen: the parser's keys are slices of the frame.
            return self.drop(DropReason::RewriteFailed);
        };
        let k = &frame.bytes()[range.clone()];
        // Hashed once, in stage 1, from the same bytes by the same parser fast path.
        let h = staged_hash.unwrap_or_else(|| self.caches.key_hash(k));
        debug_assert_eq!(h, self.caches.key_hash(k));
        // The hot-key view (`view`, valid if `is_hot`) and the ring hash, each looked up at
        // most once, and only when a decision needs them (a cache hit needs neither).
        let mut view = Readers::EMPTY;
        let mut is_hot = false;
        let mut ring_hash = None;
        // Under the balance policy a hot or warm key is read from a server with room first;
        // the cache answers only when every server that could is at or above the mean.
        let balance_to =
            if self.hotkeys && heat != Heat::Cold && self.cache_policy == CachePolicy::Balance {
                is_hot = self.hot.read_view(k, h, &mut view);
                let rh = self.ring_memo.hash(h.raw(), k);
                ring_hash = Some(rh);
                self.underloaded_reader(is_hot.then_some(&view), rh)
            } else {
                None
            };
        if self.hotkeys && balance_to.is_none() {
            if let Some(hit) = self.caches.lookup(h, k, now) {
                if hit.value.is_absent() {
                    // A cached miss: END, as the key's server would answer.
                    return self.answer_miss(frame, u, &client);
                }
                // The reply is written over the frame the key lies in: copy the key out.
                let key = KeyBuf::new(k);
                let value = Value {
                    key: key.as_slice(),
                    flags: hit.value.flags(),
                    cas: None,
                    data: hit.value.data(),
                };
                // VALUE line + data + END, plus the frame header.
                if value.buffer_len() + 5 + 8 > self.guard.reply_cap(client.ip) {
                    return self.drop(DropReason::AmplificationGuard);
                }
                if proto::write_hit_reply(frame, u, &value).is_ok() {
                    return self.own_reply(frame, &client);
                }
                // Refused before it wrote anything (the reply does not fit): forward.
            }
        }
        let hash = match ring_hash {
            Some(rh) => rh,
            None => {
                let Some(k) = frame.bytes().get(range.clone()) else {
                    return self.drop(DropReason::RewriteFailed);
                };
                if self.hotkeys {
                    is_hot = self.hot.read_view(k, h, &mut view);
                }
                self.ring_memo.hash(h.raw(), k)
            }
        };
        let readers = is_hot.then_some(&view);
        if balance_to.is_none() && readers.is_some_and(|r| r.is_fenced()) {
            // The key's new primary may hold an old copy until the fence lands: a miss is
            // never stale.
            return self.answer_miss(frame, u, &client);
        }
        let chosen = match balance_to {
            Some(b) => {
                self.stats.replication.balance_reads += 1;
                Some(b)
            }
            None => self.pick_read_server(readers, hash),
        };
        let Some(backend) = chosen else {
            return self.drop(DropReason::NoBackend);
        };
        let learn = (self.hotkeys && heat != Heat::Cold).then(|| Learn {
            ticket: self.caches.read_sent(h),
            key_hash: h,
            ring_hash: hash,
        });
        // Keep the key only while its hot-key entry waits for a value (after a write, or
        // when it turned hot): an END reply names no key.
        let miss_key = match (learn, self.cache_misses, frame.bytes().get(range)) {
            (Some(_), true, Some(k)) if self.caches.claim_miss_probe(h, k) => Some(Box::from(k)),
            _ => None,
        };
        let kind = FlowKind::Client(ClientFlow {
            client,
            retrieval: true,
            expect_reply: true,
            learn,
            writes: Writes::None,
            hot_write: None,
            miss_key,
            group: None,
            cap_left: self.guard.reply_cap(client.ip),
            expect: Expect::Value(h),
        });
        self.forward(now, frame, u, backend, kind)
    }

    /// A reply kvlb wrote over `client`'s request frame leaves from kvlb's MAC on the
    /// client's port, as forwarded replies do. Writing the reply swaps the request's MACs,
    /// and the request's destination MAC need not be kvlb's (a broadcast, or whatever the
    /// previous hop of a service chain wrote).
    fn own_reply<F: FrameBuf + ?Sized>(&mut self, frame: &mut F, client: &Client) -> Verdict {
        let mac = self.port_mac(client.in_port);
        match ethernet::Frame::new_checked(frame.bytes_mut()) {
            Ok(mut eth) => {
                eth.set_src_addr(mac);
                Verdict::Out(client.in_port)
            }
            // Cannot happen: the reply was just written, a whole frame.
            Err(_) => self.drop(DropReason::RewriteFailed),
        }
    }

    /// Rewrites the client's frame toward `backend`, tracking it as `kind`. If it cannot
    /// leave, the request's writes are reported done (they never happened).
    pub(super) fn forward<F: FrameBuf + ?Sized>(
        &mut self,
        now: Instant,
        frame: &mut F,
        u: &UdpFrame,
        backend: BackendId,
        kind: FlowKind,
    ) -> Verdict {
        let addr = self.backends.get(backend).addr();
        let expect_reply = match &kind {
            FlowKind::Client(cf) => cf.expect_reply,
            _ => true,
        };
        let Some(mac) = self.backend_macs[backend] else {
            self.abandon(kind);
            return self.drop(DropReason::NoNeighbor);
        };
        let token = match self.flows.insert(now, Flow { backend, kind }) {
            Ok(t) => t,
            Err(flow) => {
                self.abandon(flow.kind);
                return self.drop(DropReason::FlowTableFull);
            }
        };
        let src_mac = self.port_mac(self.server_port);
        let ok = match u.rewrite(frame.bytes_mut()) {
            Ok(mut w) => w
                .retarget(&Retarget {
                    src_mac,
                    dst_mac: mac,
                    src_ip: self.local_ip,
                    dst_ip: *addr.ip(),
                    src_port: self.source_ports[usize::from(token.port_index)],
                    dst_port: addr.port(),
                    request_id: token.request_id,
                })
                .is_ok(),
            Err(_) => false,
        };
        if !ok {
            if let Some((_, flow)) = self.flows.remove(now, token, backend) {
                self.abandon(flow.kind);
            }
            return self.drop(DropReason::RewriteFailed);
        }
        self.backends.on_sent(backend, u.ip_end(), expect_reply);
        Verdict::Out(self.server_port)
    }

    /// A request that will not leave after all: undo what was noted for it.
    fn abandon(&mut self, kind: FlowKind) {
        if let FlowKind::Client(cf) = kind {
            self.client_flow_ended(&cf);
        }
    }

    /// A client flow ended (answered, expired, or never sent): its writes are done, its
    /// hot-key write is no longer pending, and its key's miss probe is released. The one
    /// place every end of a client request goes through.
    pub(super) fn client_flow_ended(&mut self, cf: &ClientFlow) {
        self.writes_done(&cf.writes);
        if let Some(key) = &cf.hot_write {
            self.hot.primary_write_done(key);
        }
        if let (Some(key), Some(learn)) = (&cf.miss_key, cf.learn) {
            self.caches.end_miss_probe(learn.key_hash, key);
        }
    }

    /// Answers a one-key GET in place with `END` (a cached absence, a fenced key).
    fn answer_miss<F: FrameBuf + ?Sized>(
        &mut self,
        frame: &mut F,
        u: &UdpFrame,
        client: &Client,
    ) -> Verdict {
        match proto::write_reply(frame, u, &[Response::End]) {
            Ok(_) => self.own_reply(frame, client),
            Err(_) => self.drop(DropReason::RewriteFailed),
        }
    }

    /// Splits a multi-key get: hits answered from the caches, the rest grouped per server,
    /// one sub-request each; the reply ends with the last part's END.
    fn multi_get(&mut self, now: Instant, client: &Client, r: &Retrieval<'_>) -> Action {
        let cacheable = r.command == Command::Get && self.hotkeys;
        let writes = r.exptime.is_some();
        let cap = self.guard.reply_cap(client.ip);
        let mut hits: Vec<Vec<u8>> = Vec::new();
        // Per server: its keys (space-separated) and, for gat/gats, their cache hashes.
        let mut groups: Vec<(BackendId, Vec<u8>, Vec<KeyHash>)> = Vec::new();
        for key in r.keys.iter() {
            let h = self.caches.key_hash(key);
            if cacheable {
                if let Some(hit) = self.caches.lookup(h, key, now) {
                    if hit.value.is_absent() {
                        continue; // a cached miss: no VALUE for this key
                    }
                    let mut msg = Vec::with_capacity(key.len() + hit.value.data().len() + 32);
                    Response::Value(Value {
                        key,
                        flags: hit.value.flags(),
                        cas: None,
                        data: hit.value.data(),
                    })
                    .emit_to(&mut msg);
                    hits.push(msg);
                    continue;
                }
            }
            let rh = self.ring_memo.hash(h.raw(), key);
            let mut view = Readers::EMPTY;
            let readers = self.hot.read_view(key, h, &mut view).then_some(&view);
            if readers.is_some_and(|r| r.is_fenced()) {
                if writes {
                    self.caches.write_done(h);
                }
                continue; // answered as a miss
            }
            let backend = if r.command == Command::Get {
                self.pick_read_server(readers, rh)
            } else {
                self.primary_for(rh)
            };
            let Some(backend) = backend else {
                if writes {
                    self.caches.write_done(h);
                }
                continue; // no backend: a miss
            };
            match groups.iter_mut().find(|(b, _, _)| *b == backend) {
                Some((_, keys, hashes)) => {
                    keys.push(b' ');
                    keys.extend_from_slice(key);
                    if writes {
                        hashes.push(h);
                    }
                }
                None => groups.push((backend, key.to_vec(), if writes { vec![h] } else { vec![] })),
            }
        }
        let g = self.groups.open(*client, groups.len() as u16, cap);
        let endpoints = self.client_endpoints(client);
        for msg in hits {
            self.emit_to_client(&endpoints, client, &msg, g);
        }
        let n_groups = groups.len();
        for (backend, keys, hashes) in groups {
            let part_writes = match hashes.len() {
                0 => Writes::None,
                1 => Writes::One(hashes[0]),
                _ => Writes::Many(hashes.into_boxed_slice()),
            };
            let sent = match Keys::parse(&keys) {
                Ok(keys) => {
                    let sub = Request::Retrieval(Retrieval {
                        command: r.command,
                        exptime: r.exptime,
                        keys,
                    });
                    let kind = FlowKind::Client(ClientFlow {
                        client: *client,
                        retrieval: true,
                        expect_reply: true,
                        learn: None,
                        writes: part_writes.clone(),
                        hot_write: None,
                        miss_key: None,
                        group: Some(g),
                        cap_left: cap,
                        expect: Expect::Shape(ReplyShape::Values),
                    });
                    self.emit_request(now, backend, kind, &sub)
                }
                Err(_) => false,
            };
            if !sent {
                self.writes_done(&part_writes);
                if !self.groups.part_done(g) {
                    self.finish_group(g);
                }
            }
        }
        if n_groups == 0 {
            self.finish_group(g);
        }
        Action::Consumed
    }

    /// Ends a split get whose parts are all done without a final END from a backend.
    pub(super) fn finish_group(&mut self, g: GroupRef) {
        let Some(grp) = self.groups.get_mut(g) else {
            return;
        };
        let client = grp.client;
        let endpoints = self.client_endpoints(&client);
        self.emit_to_client(&endpoints, &client, b"END\r\n", g);
        self.groups.release(g);
    }

    /// Addresses of a reply to `client` from the VIP.
    pub(super) fn client_endpoints(&self, client: &Client) -> UdpEndpoints {
        UdpEndpoints {
            src_mac: self.port_mac(client.in_port),
            dst_mac: client.mac,
            vlan: client.vlan,
            inner_vlan: None,
            src_ip: *self.vip.ip(),
            dst_ip: client.ip,
            src_port: self.vip.port(),
            dst_port: client.port,
            ttl: 64,
        }
    }

    /// Emits one reply message to a split get's client, within its byte cap.
    fn emit_to_client(&mut self, ep: &UdpEndpoints, client: &Client, msg: &[u8], g: GroupRef) {
        let len = msg.len() + 8;
        match self.groups.get_mut(g) {
            Some(grp) if grp.cap_left >= len => grp.cap_left -= len,
            Some(_) => {
                self.stats.count_drop(DropReason::AmplificationGuard);
                return;
            }
            None => return,
        }
        let ident = self.next_ip_ident();
        let header = McHeader::single(client.request_id);
        self.outbox.emit(Dest::Port(client.in_port), |buf| {
            ep.emit_message(buf, ident, header, msg).map_err(|_| ())
        });
    }

    /// Addresses of a request kvlb sends to `backend` from source port `token`.
    fn backend_endpoints(&self, backend: BackendId, token: Token) -> Option<UdpEndpoints> {
        let addr: SocketAddrV4 = self.backends.get(backend).addr();
        let mac = self.backend_macs[backend]?;
        Some(UdpEndpoints {
            src_mac: self.port_mac(self.server_port),
            dst_mac: mac,
            vlan: None,
            inner_vlan: None,
            src_ip: self.local_ip,
            dst_ip: *addr.ip(),
            src_port: self.source_ports[usize::from(token.port_index)],
            dst_port: addr.port(),
            ttl: 64,
        })
    }

    /// Emits `req` to `backend`, tracked as `kind`. Returns false (nothing sent, nothing
    /// tracked) if the backend's MAC is unknown, the flow table is full or the request
    /// does not fit a datagram.
    pub(super) fn emit_request(
        &mut self,
        now: Instant,
        backend: BackendId,
        kind: FlowKind,
        req: &Request<'_>,
    ) -> bool {
        if self.backend_macs[backend].is_none() {
            return false;
        }
        let answered = !matches!(
            kind,
            FlowKind::Absorb {
                expect_reply: false,
                ..
            }
        );
        let Ok(token) = self.flows.insert(now, Flow { backend, kind }) else {
            self.stats.count_drop(DropReason::FlowTableFull);
            return false;
        };
        let Some(ep) = self.backend_endpoints(backend, token) else {
            self.flows.remove(now, token, backend);
            return false;
        };
        let ident = self.next_ip_ident();
        let sent = self.outbox.emit(Dest::Port(self.server_port), |buf| {
            proto::emit_request_frame(buf, &ep, ident, token.request_id, req).map_err(|_| ())
        });
        if sent {
            self.backends
                .on_sent(backend, req.buffer_len() + 8, answered);
        } else {
            self.flows.remove(now, token, backend);
        }
        sent
    }

    /// Writes a hot key's value to replica `to` as a meta set carrying a fresh
    /// [`Opaque`] (`ms <key> <len> F<flags> T<exptime> O<opaque>`, the same semantics as
    /// `set`, exptime included), tracked for its acknowledgement; a copy that cannot
    /// leave counts as not acknowledged.
    pub(super) fn emit_replica_write(
        &mut self,
        now: Instant,
        to: BackendId,
        key: &[u8],
        flags: u32,
        exptime: i32,
        data: &[u8],
        seq: u64,
    ) {
        let sent = self.emit_own_meta(
            now,
            to,
            Command::MetaSet,
            key,
            format_args!("F{flags} T{exptime}"),
            Some(data),
            |opaque| FlowKind::Replica {
                key: key.into(),
                seq,
                opaque,
                delete: false,
            },
        );
        if sent {
            self.stats.replication.replica_writes += 1;
        } else {
            self.replica_answered(now, key, to, seq, false, false);
        }
    }

    /// Replicates a hot key's absence to replica `to`: `md <key> O<opaque>`, tracked for
    /// its acknowledgement like a replica write (see [`super::hot::HotKeys::fetched`]).
    pub(super) fn emit_replica_delete(
        &mut self,
        now: Instant,
        to: BackendId,
        key: &[u8],
        seq: u64,
    ) {
        let sent = self.emit_own_meta(
            now,
            to,
            Command::MetaDelete,
            key,
            format_args!(""),
            None,
            |opaque| FlowKind::Replica {
                key: key.into(),
                seq,
                opaque,
                delete: true,
            },
        );
        if sent {
            self.stats.replication.replica_writes += 1;
        } else {
            self.replica_answered(now, key, to, seq, false, true);
        }
    }

    /// Deletes `key` on `primary` before it may serve the key (see [`super::hot`]), with
    /// `md <key> O<opaque>`. If it cannot be sent now, the next replication round sends
    /// it; until then reads of the key are answered as misses.
    pub(super) fn emit_fence(&mut self, now: Instant, key: &[u8], primary: BackendId) {
        let sent = self.emit_own_meta(
            now,
            primary,
            Command::MetaDelete,
            key,
            format_args!(""),
            None,
            |opaque| FlowKind::Fence {
                key: key.into(),
                opaque,
            },
        );
        if !sent {
            self.hot.fence_lost(key);
        }
    }

    /// Emits one of kvlb's own meta requests to `to` (`<command> <key> [<len>] <args>
    /// O<n>`, `data` after it for `ms`) with a fresh [`Opaque`] n, tracked as `kind(n)`;
    /// its reply must echo n. Returns whether it left (see [`Core::emit_request`]).
    pub(super) fn emit_own_meta(
        &mut self,
        now: Instant,
        to: BackendId,
        command: Command,
        key: &[u8],
        args: std::fmt::Arguments<'_>,
        data: Option<&[u8]>,
        kind: impl FnOnce(Opaque) -> FlowKind,
    ) -> bool {
        let opaque = self.next_opaque();
        let flags = MetaFlags::new(args, opaque);
        let req = Request::Meta(proto::Meta {
            command,
            key,
            flags: flags.as_bytes(),
            data,
            base64: false,
            quiet: false,
        });
        self.emit_request(now, to, kind(opaque), &req)
    }
}

#[cfg(test)]
mod tests {
    use super::KeySpan;

    #[test]
    fn a_key_span_finds_its_key_only_in_the_frame_it_came_from() {
        let frame = b"....get some-key\r\n".to_vec();
        let key = &frame[8..16];
        let span = KeySpan::of(key);
        assert_eq!(span.range_in(&frame), Some(8..16));
        assert_eq!(&frame[span.range_in(&frame).unwrap()], b"some-key");
        // Another buffer (before or after it in memory), or one too short: no range.
        let other = frame.clone();
        assert_eq!(span.range_in(&other[..4]), None);
        assert_eq!(span.range_in(&frame[..10]), None);
    }
}
