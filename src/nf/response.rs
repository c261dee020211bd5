//! Backend responses: matching, learning, replication acks, probes, and the way back to the
//! client.

use std::net::SocketAddrV4;

use super::flows::{ClientPeek, Peek};
use super::{Core, DropReason, FlowKind, Learn, Opaque, Verdict};
use crate::backend::{BackendId, Health};
use crate::cache::{GetResponse, KeyHash};
use crate::clock::Instant;
use crate::flow::Token;
use crate::hotkey::{Detector, Heat};
use crate::proto::{self, MetaHead, MetaStatus, ReplyShape, Request, Response};
use crate::wire::{mc_header, FrameBuf, McHeader, Retarget, UdpFrame};

const END: &[u8] = b"END\r\n";

/// Whether a reply to one of kvlb's own meta requests answers that request: its `O` flag
/// carries `opaque` and, when `key` is given, its `k` flag (if any) names the key. Error
/// lines carry neither and fit. memcached echoes `O` on every meta reply; versions before
/// 1.6.10 or so omit flags on a miss, so a bare `EN` fits too (a miss writes nothing).
///
/// Only the first line is read: a value too large for one datagram is judged by its `VA`
/// line, like any other.
fn echoes(msg: &[u8], opaque: Opaque, key: Option<&[u8]>) -> bool {
    // Error lines (and other shapes, which `reply_fits` judges) carry no flags.
    let Some(head) = MetaHead::parse(msg) else {
        return true;
    };
    let miss = head.status == Some(MetaStatus::En);
    let key_ok = match (key, head.token(b'k')) {
        (Some(want), Some(got)) => got == want,
        _ => true,
    };
    let opaque_ok = match head.token(b'O') {
        Some(t) => {
            std::str::from_utf8(t)
                .ok()
                .and_then(|t| u32::from_str_radix(t, 16).ok())
                == Some(opaque.0)
        }
        None => miss,
    };
    key_ok && opaque_ok
}

/// The exptime a replica write gives a value whose remaining TTL `ttl` a fetch reported
/// (memcached's `t`: seconds, -1 for none). memcached reads an exptime above 30 days as
/// an absolute Unix time, so a longer remaining TTL is capped at 30 days: a replica may
/// then drop the value early (a miss), never keep it past its expiry.
fn replica_exptime(ttl: i64) -> i32 {
    const MAX_RELATIVE: i64 = 60 * 60 * 24 * 30;
    if ttl < 0 {
        0
    } else {
        // 0 would mean "never": a value fetched with under a second left gets 1.
        ttl.clamp(1, MAX_RELATIVE) as i32
    }
}

/// What the reply to a forwarded request must look like. A backend that answers after
/// kvlb gave up on a request (its flow expired) can answer with a token that kvlb has since
/// handed to another request to the same backend; the reply's shape (and, for a one-key
/// GET, its key) tells the two apart, so such a reply is dropped instead of reaching the
/// wrong client, acknowledging the wrong write or feeding a replica the wrong value.
/// Checked on a reply's first datagram. Error lines fit every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expect {
    /// `VALUE` items of this key (by its cache key hash), and `END` (a one-key `get`).
    Value(KeyHash),
    /// A reply of this shape.
    Shape(ReplyShape),
}

impl Expect {
    /// What a reply to `req` looks like (a one-key `get` asks for [`Expect::Value`]).
    pub(super) fn of(req: &Request<'_>) -> Expect {
        Expect::Shape(ReplyShape::of(req))
    }
}

impl Core {
    /// Whether `msg`, the first datagram of a reply, has the shape `expect` asks for.
    fn reply_fits(&self, expect: Expect, msg: &[u8]) -> bool {
        match expect {
            Expect::Shape(shape) => shape.fits(msg),
            Expect::Value(h) => {
                proto::is_error_line(msg)
                    || msg.starts_with(END)
                    || proto::first_value_key(msg).is_some_and(|k| self.caches.key_hash(k) == h)
            }
        }
    }

    pub(super) fn on_response<F: FrameBuf + ?Sized>(
        &mut self,
        now: Instant,
        frame: &mut F,
        u: UdpFrame,
        port_index: u16,
    ) -> Verdict {
        let from = SocketAddrV4::new(u.src_ip, u.src_port);
        let payload = u.payload(frame.bytes());
        let Ok(header) = McHeader::parse(payload) else {
            return self.drop(DropReason::Proto(proto::Error::TruncatedFrameHeader));
        };
        let token = Token {
            port_index,
            request_id: header.request_id,
        };
        let Some(backend) = self.backends.find(from) else {
            return self.drop(DropReason::UnmatchedResponse);
        };
        let Some(flow) = self.flows.peek(token, backend) else {
            self.backends.on_late_response(backend);
            return self.drop(DropReason::UnmatchedResponse);
        };
        let msg = &payload[mc_header::HEADER_LEN..];
        let last_datagram = header.count == 0 || header.sequence.saturating_add(1) >= header.count;
        let single = header.is_single_datagram();
        if header.sequence == 0 {
            let fits = match &flow {
                Peek::Client(cf) => self.reply_fits(cf.expect, msg),
                // kvlb's own meta requests: the reply must echo the request's opaque.
                Peek::Own(FlowKind::Replica { opaque, .. } | FlowKind::Fence { opaque, .. }) => {
                    self.reply_fits(Expect::Shape(ReplyShape::Meta), msg)
                        && echoes(msg, *opaque, None)
                }
                // The fetch also asked for the key back (`k`).
                Peek::Own(FlowKind::Fetch { key, opaque, .. }) => {
                    self.reply_fits(Expect::Shape(ReplyShape::Meta), msg)
                        && echoes(msg, *opaque, Some(key))
                }
                Peek::Own(FlowKind::Probe) => {
                    self.reply_fits(Expect::Shape(ReplyShape::Version), msg)
                }
                Peek::Own(FlowKind::RejoinFlush | FlowKind::Absorb { .. }) => {
                    self.reply_fits(Expect::Shape(ReplyShape::Ok), msg)
                }
                // Never stored out of line.
                Peek::Own(FlowKind::Client(_)) => false,
            };
            if !fits {
                // The request it answers is gone; the one holding its token is still owed
                // its own reply.
                return self.drop(DropReason::MismatchedResponse);
            }
        }

        if let Peek::Client(cf) = flow {
            // An error line is a whole reply, a retrieval's too: memcached sends it instead of
            // the values and their END (`SERVER_ERROR out of memory writing get response`).
            // Looked at only when nothing else completes the reply.
            let complete = last_datagram
                && (!cf.retrieval
                    || msg.ends_with(END)
                    || (header.sequence == 0 && proto::is_error_line(msg)));
            return self.client_reply(now, frame, &u, token, backend, cf, complete, single);
        }

        // Replies kvlb consumes itself: one datagram, one line (or a small meta value).
        let Some((sent, flow)) = self.flows.remove(now, token, backend) else {
            return self.drop(DropReason::UnmatchedResponse);
        };
        let latency = now.saturating_duration_since(sent);
        let error = proto::is_error_line(msg);
        let revive = match &flow.kind {
            FlowKind::Probe => !self.rejoin_flush,
            FlowKind::RejoinFlush => msg.starts_with(b"OK"),
            _ => false,
        };
        let health =
            self.backends
                .on_response(backend, payload.len(), sent, latency, error, revive);
        match flow.kind {
            FlowKind::Client(_) => unreachable!("handled above"),
            FlowKind::Replica {
                key, seq, delete, ..
            } => {
                self.stats.replication.replica_acks += 1;
                let status = MetaHead::status_of(msg);
                let stored =
                    status == Some(MetaStatus::Hd) || (delete && status == Some(MetaStatus::Nf));
                self.replica_answered(now, &key, backend, seq, stored, delete);
            }
            FlowKind::Fetch {
                key, seq, learn, ..
            } => {
                self.fetched(now, &key, seq, learn, msg);
            }
            FlowKind::Probe => {
                if self.rejoin_flush && msg.starts_with(b"VERSION") && !self.rejoining[backend] {
                    // It answers again, but it may hold values overwritten elsewhere while
                    // it was away: empty it before it serves.
                    self.rejoining[backend] = true;
                    let flush = Request::FlushAll {
                        delay: None,
                        noreply: false,
                    };
                    if !self.emit_request(now, backend, FlowKind::RejoinFlush, &flush) {
                        self.rejoining[backend] = false;
                    }
                }
            }
            FlowKind::RejoinFlush => {
                self.rejoining[backend] = false;
            }
            FlowKind::Fence { key, .. } => {
                if matches!(
                    MetaHead::status_of(msg),
                    Some(MetaStatus::Hd | MetaStatus::Nf)
                ) {
                    self.hot.unfence(&key);
                } else {
                    self.hot.fence_lost(&key);
                }
            }
            FlowKind::Absorb { flush, .. } => {
                if flush {
                    self.caches.flush_done();
                }
            }
        }
        if let Some(h) = health {
            self.apply_health(now, h);
        }
        self.stats.count_drop(DropReason::Absorbed);
        Verdict::Drop(DropReason::Absorbed)
    }

    /// A datagram of the reply to a client request: learn, strip split-get ENDs, cap, and
    /// rewrite it back to the client.
    fn client_reply<F: FrameBuf + ?Sized>(
        &mut self,
        now: Instant,
        frame: &mut F,
        u: &UdpFrame,
        token: Token,
        backend: BackendId,
        flow: ClientPeek,
        complete: bool,
        single: bool,
    ) -> Verdict {
        let ClientPeek {
            client,
            learn,
            group,
            ..
        } = flow;
        let payload = u.payload(frame.bytes());
        let msg = &payload[mc_header::HEADER_LEN..];

        // Learn the value of a hot or warm key, if no write can have overtaken the reply.
        // Flows that learn are one-key GETs, whose reply's key `on_response` already
        // checked (`Expect::Value` with the same key hash).
        if let (Some(learn), true, true) = (learn, single, complete) {
            if let Some(v) = Response::single_value(msg) {
                self.learn_value(now, learn, v.key, v.flags, v.data);
            }
        }

        let error = proto::is_error_line(msg);
        let ends_with_end = msg.ends_with(END);
        let payload_len = payload.len();
        let mut strip_end = false;
        if let Some(g) = group {
            if complete && self.groups.part_done(g) {
                strip_end = true; // other parts still to come: only the last one ends it
            }
        }
        let mut len = payload_len;
        if strip_end && ends_with_end {
            len -= END.len();
        }

        // Anti-amplification: what this client may still receive for this request.
        let allowed = match group.and_then(|g| self.groups.get_mut(g)) {
            Some(grp) => {
                let ok = grp.cap_left >= len;
                if ok {
                    grp.cap_left -= len;
                }
                ok
            }
            None => self.flows.take_cap(token, backend, len),
        };

        // A one-key GET of a hot key that missed: its absence may be cached (the flow
        // kept the key; see `Core::complete_client_flow`).
        let missed = learn.is_some() && single && complete && msg == END;
        if complete {
            self.complete_client_flow(now, token, backend, payload_len, error, missed);
            if let (Some(g), false) = (group, strip_end) {
                self.groups.release(g);
            }
        }
        if !allowed {
            return self.drop(DropReason::AmplificationGuard);
        }
        if len <= mc_header::HEADER_LEN && strip_end {
            // The part was only its END: nothing to pass on.
            self.stats.count_drop(DropReason::Absorbed);
            return Verdict::Drop(DropReason::Absorbed);
        }

        let src_mac = self.port_mac(client.in_port);
        let (vip_ip, vip_port) = (*self.vip.ip(), self.vip.port());
        let ok = match u.rewrite(frame.bytes_mut()) {
            Ok(mut w) => {
                let rid = w
                    .retarget(&Retarget {
                        src_mac,
                        dst_mac: client.mac,
                        src_ip: vip_ip,
                        dst_ip: client.ip,
                        src_port: vip_port,
                        dst_port: client.port,
                        request_id: client.request_id,
                    })
                    .is_ok();
                let shrink = if len != payload_len {
                    w.set_payload_len(len).is_ok()
                } else {
                    true
                };
                rid && shrink
            }
            Err(_) => false,
        };
        if !ok {
            return self.drop(DropReason::RewriteFailed);
        }
        if len != payload_len {
            let new_len = u.ip_end() - (payload_len - len);
            let _ = frame.set_len(new_len.max(crate::wire::MIN_FRAME_LEN));
        }
        Verdict::Out(client.in_port)
    }

    /// Offers a value to the caches (they check freshness and which layer, if any).
    fn learn_value(&mut self, now: Instant, learn: Learn, key: &[u8], flags: u32, data: &[u8]) {
        let warm_estimate = self.detector.as_ref().and_then(|d| match d.heat(key) {
            Heat::Warm => d.estimate(key).map(|e| e.estimate),
            _ => None,
        });
        let r = GetResponse {
            key,
            ring_hash: learn.ring_hash,
            ticket: learn.ticket,
            data,
            flags,
            cas: None,
        };
        self.caches.learn(learn.key_hash, &r, now, warm_estimate);
    }

    /// A client request's reply is complete: stop tracking it, account the backend.
    fn complete_client_flow(
        &mut self,
        now: Instant,
        token: Token,
        backend: BackendId,
        bytes: usize,
        error: bool,
        missed: bool,
    ) {
        let Some((sent, flow)) = self.flows.remove(now, token, backend) else {
            return;
        };
        if let FlowKind::Client(cf) = &flow.kind {
            self.client_flow_ended(cf);
            if let (true, Some(key), Some(learn)) = (missed, &cf.miss_key, cf.learn) {
                // L1 only (no warm estimate): hot keys' misses are what stays unbalanced.
                self.caches.learn_absent(
                    learn.key_hash,
                    key,
                    learn.ring_hash,
                    learn.ticket,
                    now,
                    None,
                );
            }
        }
        let latency = now.saturating_duration_since(sent);
        if let Some(h) = self
            .backends
            .on_response(flow.backend, bytes, sent, latency, error, false)
        {
            self.apply_health(now, h);
        }
    }

    /// The primary answered a replication fetch (`mg <key> v f t k O<n>`): write the value to the
    /// replicas that need it, and cache it if nothing wrote the key meanwhile.
    fn fetched(&mut self, now: Instant, key: &[u8], seq: u64, learn: Learn, msg: &[u8]) {
        let parsed = Response::parse(msg).ok().map(|(r, _)| r);
        let (found, flags, ttl, data) = match parsed {
            Some(Response::MetaValue { flags, data }) => {
                let head = MetaHead {
                    status: None,
                    flags,
                };
                (
                    true,
                    head.flag::<u32>(b'f').unwrap_or(0),
                    head.flag::<i64>(b't').unwrap_or(-1),
                    data,
                )
            }
            Some(Response::Meta {
                status: MetaStatus::En,
                ..
            }) => (false, 0, -1, &[][..]),
            _ => {
                self.hot.fetch_failed(key, seq);
                return;
            }
        };
        if !self.caches.may_learn(learn.key_hash, learn.ticket) {
            // A write to the key was sent or ended since the fetch left (also one the
            // hot-key state never saw, made before the key turned hot): the fetched value
            // may be older than it, so it is neither cached nor copied to the replicas.
            // The fetch is retried.
            self.stats.replication.stale_fetches += 1;
            self.hot.fetch_failed(key, seq);
            return;
        }
        let absent_too = self.cache_misses;
        let targets = {
            let backends = &self.backends;
            self.hot
                .fetched(key, seq, found, absent_too, &|b: BackendId| {
                    backends.get(b).is_up()
                })
        };
        if !found {
            // The key is absent: so are its replicas, once deleted there.
            if absent_too {
                self.caches.learn_absent(
                    learn.key_hash,
                    key,
                    learn.ring_hash,
                    learn.ticket,
                    now,
                    None,
                );
                for r in targets {
                    self.emit_replica_delete(now, r, key, seq);
                }
            }
            return;
        }
        self.learn_value(now, learn, key, flags, data);
        let exptime = replica_exptime(ttl);
        for r in targets {
            self.emit_replica_write(now, r, key, flags, exptime, data, seq);
        }
    }

    /// A tracked request expired unanswered.
    pub(super) fn expired(
        &mut self,
        now: Instant,
        backend: BackendId,
        sent: Instant,
        kind: FlowKind,
    ) {
        let mut timeout = true;
        match kind {
            FlowKind::Client(cf) => {
                timeout = cf.expect_reply;
                self.client_flow_ended(&cf);
                if let Some(g) = cf.group {
                    if !self.groups.part_done(g) {
                        self.finish_group(g);
                    }
                }
            }
            FlowKind::Replica {
                key, seq, delete, ..
            } => self.replica_answered(now, &key, backend, seq, false, delete),
            FlowKind::Fetch { key, seq, .. } => self.hot.fetch_failed(&key, seq),
            FlowKind::Fence { key, .. } => self.hot.fence_lost(&key),
            FlowKind::RejoinFlush => self.rejoining[backend] = false,
            FlowKind::Absorb {
                flush,
                expect_reply,
            } => {
                timeout = expect_reply;
                if flush {
                    self.caches.flush_done();
                }
            }
            FlowKind::Probe => {}
        }
        if !timeout {
            return; // nothing was owed: not outstanding, not a timeout
        }
        if let Some(Health::Down(id)) = self.backends.on_timeout(backend, sent, now) {
            self.apply_health(now, Health::Down(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{echoes, replica_exptime, Opaque};

    #[test]
    fn a_reply_to_kvlbs_own_request_must_echo_its_opaque_and_key() {
        let o = Opaque(0x1f);
        let key = Some(&b"k"[..]);
        for (msg, want) in [
            (&b"HD O1f\r\n"[..], true),
            (b"HD O20\r\n", false),
            (b"HD\r\n", false),
            (b"NF O1f\r\n", true),
            (b"VA 1 f0 t-1 kk O1f\r\nv\r\n", true),
            (b"VA 1 f0 t-1 kj O1f\r\nv\r\n", false),
            (b"VA 1 f0 t-1 kk\r\nv\r\n", false),
            // Only the first line is read: the rest of a large value may be elsewhere.
            (b"VA 9000 f0 t-1 kk O1f\r\nvvv", true),
            (b"EN kk O1f\r\n", true),
            (b"EN kk O1e\r\n", false),
            // Older memcached answers a miss with a bare EN.
            (b"EN\r\n", true),
            (b"SERVER_ERROR out of memory\r\n", true),
            // Other shapes are for `reply_fits` to judge.
            (b"O1f\r\n", true),
        ] {
            assert_eq!(
                echoes(msg, o, key),
                want,
                "{}",
                String::from_utf8_lossy(msg)
            );
        }
        assert!(echoes(b"HD O1f kzz\r\n", o, None), "no key asked for");
    }

    #[test]
    fn a_replicas_exptime_is_relative_and_never_unbounded_or_absolute() {
        assert_eq!(replica_exptime(-1), 0, "no TTL stays none");
        assert_eq!(replica_exptime(0), 1, "under a second left is not forever");
        assert_eq!(replica_exptime(300), 300);
        // Beyond 30 days memcached would read an absolute time (in 1970): capped.
        assert_eq!(replica_exptime(60 * 60 * 24 * 365), 60 * 60 * 24 * 30);
    }
}
