//! One request's life on the client side, whatever the transport: building its bytes with
//! [`kvlb::proto`], following the items of its reply, judging the values it returns, and
//! the per-thread books that a completed, failed or timed-out request is entered in.
//!
//! Owns: request bytes, reply matching rules (classic and meta), counters. Must not: touch
//! sockets (the [`super::udp`] and [`super::tcp`] modules do) or clocks (times come in).

use hdrhistogram::Histogram;

use super::rate::Lag;
use super::validate::{self, KeyVersions, Verdict};
use super::value::{self, Stamp};
use super::workload::KeySpace;
use kvlb::proto::{Command, Keys, Meta, MetaStatus, Request, Response, Retrieval, Storage};

/// Everything the threads of one run share (read-only but for the atomics inside
/// [`KeyVersions`]).
#[derive(Debug)]
pub struct Shared {
    pub space: KeySpace,
    /// Per-key versions; `None` with `--no-validate`.
    pub versions: Option<KeyVersions>,
    pub run_id: u32,
    pub meta: bool,
    /// The largest value a SET carries on this run's transport.
    pub value_cap: u32,
}

/// GET or SET.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    #[default]
    Get,
    Set,
}

/// A requested key: its index, its acknowledged version when the request was sent, and
/// whether the reply carried it yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyRef {
    pub index: u32,
    pub acked_at_send: u32,
    pub seen: bool,
}

/// How a request ended badly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A reply that does not parse or does not fit the request.
    Protocol,
    /// `ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`.
    ServerError,
    /// A SET answered `NOT_STORED`/`EXISTS`/`NOT_FOUND` (or meta `NS`/`EX`/`NF`).
    NotStored,
    /// The request could not be sent.
    Send,
    /// Its TCP connection failed before the reply.
    Connection,
}

/// A request in flight.
#[derive(Clone, Debug, Default)]
pub struct Pending {
    pub kind: Kind,
    pub keys: Vec<KeyRef>,
    /// The version a SET writes (0 without validation).
    pub version: u32,
    /// When the request was meant to leave (open loop) or was generated (closed loop).
    pub intended_ns: u64,
    pub sent_ns: u64,
    /// Logical connection within the thread.
    pub conn: u32,
    pub server: u16,
    /// A meta multi-get (quiet `mg`s closed by `mn`).
    pub meta_multi: bool,
    pub hits: u32,
    pub stored: bool,
    pub failure: Option<Failure>,
}

impl Pending {
    /// Resets for reuse (keeps the key vector's capacity).
    pub fn reset(&mut self) {
        self.keys.clear();
        self.version = 0;
        self.hits = 0;
        self.stored = false;
        self.failure = None;
        self.meta_multi = false;
    }
}

/// Whether a reply item finished its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    More,
    Done,
}

/// Cumulative counts of one thread (or of a run, once merged).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered (successfully or with an error reply).
    pub completed: u64,
    pub gets: u64,
    /// Keys asked for by GETs.
    pub get_keys: u64,
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    pub sets_stored: u64,
    pub timeouts: u64,
    pub protocol_errors: u64,
    pub server_errors: u64,
    pub sets_not_stored: u64,
    pub send_errors: u64,
    pub connection_errors: u64,
    /// UDP reply datagrams matching no request in flight (late after a timeout, or
    /// duplicated).
    pub unmatched_replies: u64,
    /// Values returned for a key the request did not ask for.
    pub wrong_keys: u64,
    pub fresh: u64,
    pub stale: u64,
    pub corrupt: u64,
    pub foreign: u64,
    /// GETs that missed a key whose SET had been acknowledged before the GET was sent
    /// (kvbench deletes nothing: a lost write, a miss answered from a stale cache, or an
    /// eviction by a server short of memory).
    pub lost: u64,
    /// SETs drawn for a key whose previous SET was still in flight, sent as GETs instead.
    pub set_collisions: u64,
    /// SETs whose drawn value size exceeded the transport's cap.
    pub values_capped: u64,
    pub reconnects: u64,
}

impl Counters {
    /// Every failure that is not a timeout.
    pub fn errors(&self) -> u64 {
        self.protocol_errors
            + self.server_errors
            + self.sets_not_stored
            + self.send_errors
            + self.connection_errors
            + self.wrong_keys
    }

    pub fn merge(&mut self, o: &Counters) {
        macro_rules! add {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        add!(
            sent,
            completed,
            gets,
            get_keys,
            hits,
            misses,
            sets,
            sets_stored,
            timeouts,
            protocol_errors,
            server_errors,
            sets_not_stored,
            send_errors,
            connection_errors,
            unmatched_replies,
            wrong_keys,
            fresh,
            stale,
            corrupt,
            foreign,
            lost,
            set_collisions,
            values_capped,
            reconnects
        );
    }
}

/// Per-server counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServerCounters {
    pub sent: u64,
    pub completed: u64,
    pub timeouts: u64,
    pub errors: u64,
}

impl ServerCounters {
    pub fn merge(&mut self, o: &ServerCounters) {
        self.sent += o.sent;
        self.completed += o.completed;
        self.timeouts += o.timeouts;
        self.errors += o.errors;
    }
}

/// Latency histogram: nanoseconds, 1 ns to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

/// A thread's books for the current reporting interval.
#[derive(Debug)]
pub struct Books {
    pub counters: Counters,
    pub lag: Lag,
    pub hist: Histogram<u64>,
    pub servers: Vec<ServerCounters>,
    /// Requests outstanding per logical connection.
    pub outstanding: Vec<u32>,
}

impl Books {
    pub fn new(servers: usize, conns: usize) -> Books {
        Books {
            counters: Counters::default(),
            lag: Lag::default(),
            hist: new_histogram(),
            servers: vec![ServerCounters::default(); servers],
            outstanding: vec![0; conns],
        }
    }

    /// Takes the interval's counts and histogram, leaving zeros (outstanding stays).
    pub fn take_interval(&mut self) -> (Counters, Lag, Histogram<u64>, Vec<ServerCounters>) {
        let n = self.servers.len();
        (
            std::mem::take(&mut self.counters),
            std::mem::take(&mut self.lag),
            std::mem::replace(&mut self.hist, new_histogram()),
            std::mem::replace(&mut self.servers, vec![ServerCounters::default(); n]),
        )
    }

    /// A request left.
    pub fn sent(&mut self, p: &Pending) {
        self.counters.sent += 1;
        if let Some(s) = self.servers.get_mut(usize::from(p.server)) {
            s.sent += 1;
        }
        match p.kind {
            Kind::Get => {
                self.counters.gets += 1;
                self.counters.get_keys += p.keys.len() as u64;
            }
            Kind::Set => self.counters.sets += 1,
        }
    }

    /// `p` got its whole reply at `now_ns` (or failed: `p.failure`).
    pub fn complete(&mut self, p: &Pending, now_ns: u64, shared: &Shared) {
        self.release(p);
        let server = self.servers.get_mut(usize::from(p.server));
        match p.failure {
            None => {
                self.counters.completed += 1;
                if let Some(s) = server {
                    s.completed += 1;
                }
                let _ = self
                    .hist
                    .record(now_ns.saturating_sub(p.intended_ns).max(1));
                match p.kind {
                    Kind::Get => {
                        self.counters.hits += u64::from(p.hits);
                        self.counters.misses +=
                            (p.keys.len() as u64).saturating_sub(u64::from(p.hits));
                        self.counters.lost += p
                            .keys
                            .iter()
                            .filter(|k| !k.seen && k.acked_at_send > 0)
                            .count() as u64;
                    }
                    Kind::Set => {
                        if p.stored {
                            self.counters.sets_stored += 1;
                        }
                    }
                }
            }
            Some(f) => {
                if let Some(s) = server {
                    s.errors += 1;
                }
                match f {
                    Failure::Protocol => self.counters.protocol_errors += 1,
                    Failure::ServerError => self.counters.server_errors += 1,
                    Failure::NotStored => self.counters.sets_not_stored += 1,
                    Failure::Send => self.counters.send_errors += 1,
                    Failure::Connection => self.counters.connection_errors += 1,
                }
                if f == Failure::NotStored || f == Failure::ServerError {
                    // Answered, just not with success.
                    self.counters.completed += 1;
                }
            }
        }
        finish_set(p, shared);
    }

    /// `p` got no reply in time.
    pub fn timed_out(&mut self, p: &Pending, shared: &Shared) {
        self.release(p);
        self.counters.timeouts += 1;
        if let Some(s) = self.servers.get_mut(usize::from(p.server)) {
            s.timeouts += 1;
        }
        finish_set(p, shared);
    }

    /// `p` was given up without an outcome (the run ended).
    pub fn abandoned(&mut self, p: &Pending, shared: &Shared) {
        self.release(p);
        finish_set(p, shared);
    }

    fn release(&mut self, p: &Pending) {
        if let Some(o) = self.outstanding.get_mut(p.conn as usize) {
            *o = o.saturating_sub(1);
        }
    }
}

fn finish_set(p: &Pending, shared: &Shared) {
    if p.kind != Kind::Set {
        return;
    }
    if let Some(v) = &shared.versions {
        let key = p.keys.first().map_or(u32::MAX, |k| k.index);
        if p.stored && p.failure.is_none() {
            v.ack_set(key, p.version);
        } else {
            v.abort_set(key, p.version);
        }
    }
}

/// Feeds one reply item to its request; says whether the request is complete.
pub fn on_item(p: &mut Pending, item: &Response<'_>, shared: &Shared, books: &mut Books) -> Step {
    match (p.kind, item) {
        (Kind::Get, Response::Value(v)) => {
            on_value(p, v.key, v.data, shared, books);
            Step::More
        }
        (Kind::Get, Response::End) => Step::Done,
        (Kind::Get, Response::MetaValue { flags, data }) => {
            match meta_key(flags) {
                Some(key) => on_value(p, key, data, shared, books),
                None => books.counters.wrong_keys += 1,
            }
            if p.meta_multi {
                Step::More
            } else {
                Step::Done
            }
        }
        (
            Kind::Get,
            Response::Meta {
                status: MetaStatus::En,
                ..
            },
        ) => {
            if p.meta_multi {
                Step::More
            } else {
                Step::Done
            }
        }
        (
            Kind::Get,
            Response::Meta {
                status: MetaStatus::Mn,
                ..
            },
        ) if p.meta_multi => Step::Done,
        (Kind::Set, Response::Stored)
        | (
            Kind::Set,
            Response::Meta {
                status: MetaStatus::Hd,
                ..
            },
        ) => {
            p.stored = true;
            Step::Done
        }
        (Kind::Set, Response::NotStored | Response::Exists | Response::NotFound)
        | (
            Kind::Set,
            Response::Meta {
                status: MetaStatus::Ns | MetaStatus::Ex | MetaStatus::Nf,
                ..
            },
        ) => {
            p.failure = Some(Failure::NotStored);
            Step::Done
        }
        (_, Response::Error | Response::ClientError(_) | Response::ServerError(_)) => {
            p.failure = Some(Failure::ServerError);
            Step::Done
        }
        _ => {
            p.failure = Some(Failure::Protocol);
            Step::Done
        }
    }
}

/// The key a meta reply names with its `k` return flag.
fn meta_key(flags: &[u8]) -> Option<&[u8]> {
    flags
        .split(|&b| b == b' ')
        .find_map(|t| t.strip_prefix(b"k"))
        .filter(|k| !k.is_empty())
}

fn on_value(p: &mut Pending, key: &[u8], data: &[u8], shared: &Shared, books: &mut Books) {
    let Some(index) = shared.space.index_of(key) else {
        books.counters.wrong_keys += 1;
        return;
    };
    let Some(slot) = p.keys.iter_mut().find(|k| k.index == index && !k.seen) else {
        books.counters.wrong_keys += 1;
        return;
    };
    slot.seen = true;
    p.hits += 1;
    let Some(versions) = &shared.versions else {
        return;
    };
    let issued_now = versions.state(index).issued;
    let c = &mut books.counters;
    match validate::check(shared.run_id, key, data, slot.acked_at_send, issued_now) {
        Verdict::Fresh => c.fresh += 1,
        Verdict::Foreign => c.foreign += 1,
        Verdict::Stale { got, acked } => {
            c.stale += 1;
            log::debug!(
                "stale value for {}: version {got}, acknowledged {acked}",
                String::from_utf8_lossy(key)
            );
        }
        Verdict::Corrupt(why) => {
            c.corrupt += 1;
            log::debug!(
                "corrupt value for {}: {why:?}",
                String::from_utf8_lossy(key)
            );
        }
    }
}

/// Reusable buffers for building requests.
#[derive(Debug, Default)]
pub struct RequestBuilder {
    names: Vec<u8>,
    value: Vec<u8>,
}

impl RequestBuilder {
    /// Appends a GET of `keys` (indexes) to `out`; `meta_multi` says whether a meta
    /// multi-get was emitted (quiet `mg`s and `mn`).
    pub fn get(&mut self, out: &mut Vec<u8>, shared: &Shared, keys: &[KeyRef]) -> bool {
        self.names.clear();
        if shared.meta {
            let multi = keys.len() > 1;
            let mut start = 0;
            for k in keys {
                shared.space.write_name(k.index, &mut self.names);
                let name = &self.names[start..];
                Request::Meta(Meta {
                    command: Command::MetaGet,
                    key: name,
                    flags: if multi { b"v k q" } else { b"v k" },
                    data: None,
                    base64: false,
                    quiet: multi,
                })
                .emit_to(out);
                start = self.names.len();
            }
            if multi {
                Request::Meta(Meta {
                    command: Command::MetaNoop,
                    key: b"",
                    flags: b"",
                    data: None,
                    base64: false,
                    quiet: false,
                })
                .emit_to(out);
            }
            return multi;
        }
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                self.names.push(b' ');
            }
            shared.space.write_name(k.index, &mut self.names);
        }
        // Names are made of the checked prefix and digits: always valid keys.
        let parsed = if keys.len() == 1 {
            Keys::single(&self.names)
        } else {
            Keys::parse(&self.names)
        };
        if let Ok(keys) = parsed {
            Request::Retrieval(Retrieval {
                command: Command::Get,
                exptime: None,
                keys,
            })
            .emit_to(out);
        }
        false
    }

    /// Appends a SET of key `index` with a `size`-byte value of `version` to `out`.
    pub fn set(&mut self, out: &mut Vec<u8>, shared: &Shared, index: u32, version: u32, size: u32) {
        self.names.clear();
        shared.space.write_name(index, &mut self.names);
        value::encode(
            &mut self.value,
            &self.names,
            Stamp {
                run_id: shared.run_id,
                version,
            },
            size as usize,
        );
        if shared.meta {
            Request::Meta(Meta {
                command: Command::MetaSet,
                key: &self.names,
                flags: b"",
                data: Some(&self.value),
                base64: false,
                quiet: false,
            })
            .emit_to(out);
        } else {
            Request::Storage(Storage::set(&self.names, 0, 0, &self.value, false)).emit_to(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::SizeDist;
    use kvlb::proto::ResponseReader;

    fn shared(meta: bool) -> Shared {
        Shared {
            space: KeySpace::new(100, "k:", SizeDist::Fixed(4)).unwrap(),
            versions: Some(KeyVersions::new(100)),
            run_id: 77,
            meta,
            value_cap: 1000,
        }
    }

    fn feed(p: &mut Pending, msg: &[u8], sh: &Shared, books: &mut Books) -> Step {
        let mut step = Step::More;
        for item in ResponseReader::new(msg) {
            step = on_item(p, &item.unwrap(), sh, books);
            if step == Step::Done {
                break;
            }
        }
        step
    }

    fn get(keys: &[u32]) -> Pending {
        Pending {
            kind: Kind::Get,
            keys: keys
                .iter()
                .map(|&index| KeyRef {
                    index,
                    ..KeyRef::default()
                })
                .collect(),
            ..Pending::default()
        }
    }

    #[test]
    fn requests_are_memcached_text() {
        let sh = shared(false);
        let mut b = RequestBuilder::default();
        let mut out = Vec::new();
        assert!(!b.get(&mut out, &sh, &get(&[1, 22]).keys));
        assert_eq!(out, b"get k:01 k:22\r\n");
        out.clear();
        b.set(&mut out, &sh, 3, 9, 40);
        assert!(out.starts_with(b"set k:03 0 0 40\r\n0000004d00000009"));
        assert_eq!(Request::parse(&out).unwrap().key(), Some(&b"k:03"[..]));
        let sh = shared(true);
        out.clear();
        assert!(b.get(&mut out, &sh, &get(&[1, 22]).keys));
        assert_eq!(out, b"mg k:01 v k q\r\nmg k:22 v k q\r\nmn\r\n");
        out.clear();
        assert!(!b.get(&mut out, &sh, &get(&[5]).keys));
        assert_eq!(out, b"mg k:05 v k\r\n");
        out.clear();
        b.set(&mut out, &sh, 3, 9, 32);
        assert!(out.starts_with(b"ms k:03 32\r\n"));
    }

    #[test]
    fn replies_are_matched_and_judged() {
        let sh = shared(false);
        let mut books = Books::new(1, 1);
        let versions = sh.versions.as_ref().unwrap();
        // Key 1 at version 2 acknowledged.
        for _ in 0..2 {
            let v = versions.begin_set(1).unwrap();
            versions.ack_set(1, v);
        }
        let mut p = get(&[1, 2]);
        p.keys[0].acked_at_send = 2;
        let mut val = Vec::new();
        value::encode(
            &mut val,
            b"k:01",
            Stamp {
                run_id: 77,
                version: 1,
            },
            40,
        );
        let mut msg = b"VALUE k:01 0 40\r\n".to_vec();
        msg.extend_from_slice(&val);
        msg.extend_from_slice(b"\r\nVALUE k:09 0 1\r\nx\r\nEND\r\n");
        assert_eq!(feed(&mut p, &msg, &sh, &mut books), Step::Done);
        assert_eq!(books.counters.stale, 1);
        assert_eq!(books.counters.wrong_keys, 1);
        assert_eq!(p.hits, 1);
        books.complete(&p, 10, &sh);
        assert_eq!((books.counters.hits, books.counters.misses), (1, 1));
        assert_eq!(
            books.counters.lost, 0,
            "the miss was of a key never acknowledged"
        );
        // A miss of a key acknowledged stored before the GET left is lost.
        let mut p = get(&[1]);
        p.keys[0].acked_at_send = 2;
        assert_eq!(feed(&mut p, b"END\r\n", &sh, &mut books), Step::Done);
        books.complete(&p, 11, &sh);
        assert_eq!((books.counters.misses, books.counters.lost), (2, 1));

        // Meta single get: corrupt value.
        let sh = shared(true);
        let mut p = get(&[4]);
        assert_eq!(
            feed(&mut p, b"VA 3 kk:04\r\nabc\r\n", &sh, &mut books),
            Step::Done
        );
        assert_eq!(books.counters.corrupt, 1);
        let mut p = get(&[4, 5]);
        p.meta_multi = true;
        assert_eq!(feed(&mut p, b"EN\r\n", &sh, &mut books), Step::More);
        assert_eq!(feed(&mut p, b"MN\r\n", &sh, &mut books), Step::Done);

        // Sets.
        let v = sh.versions.as_ref().unwrap().begin_set(7).unwrap();
        let mut s = Pending {
            kind: Kind::Set,
            keys: vec![KeyRef {
                index: 7,
                ..KeyRef::default()
            }],
            version: v,
            ..Pending::default()
        };
        assert_eq!(feed(&mut s, b"HD\r\n", &sh, &mut books), Step::Done);
        books.complete(&s, 5, &sh);
        assert_eq!(sh.versions.as_ref().unwrap().state(7).acked, 1);
        let mut s2 = s.clone();
        s2.stored = false;
        s2.version = sh.versions.as_ref().unwrap().begin_set(7).unwrap();
        assert_eq!(
            feed(&mut s2, b"SERVER_ERROR out of memory\r\n", &sh, &mut books),
            Step::Done
        );
        assert_eq!(s2.failure, Some(Failure::ServerError));
        books.complete(&s2, 5, &sh);
        let st = sh.versions.as_ref().unwrap().state(7);
        assert_eq!((st.issued, st.acked, st.in_flight), (2, 1, false));
        let mut g = get(&[1]);
        assert_eq!(feed(&mut g, b"STORED\r\n", &sh, &mut books), Step::Done);
        assert_eq!(g.failure, Some(Failure::Protocol));
    }
}
