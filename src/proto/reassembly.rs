//! Reassembly of memcached UDP replies that span several datagrams.
//!
//! Memcached (1.6) answers over UDP in *messages*, one per response object, each split into
//! datagrams of at most 1392 message bytes that carry `sequence` 0..`count` and the same
//! request id. A multi-get is answered with one message per key, all with the same request
//! id and each numbered from 0: the hits' `VALUE` items, an empty message (count 0) for a
//! missed key, and `END` tagged onto the last message. A reply is therefore whole when the
//! message that holds its terminal item (`END`, a status line, a number...) has arrived and
//! no other message is half-received.
//!
//! Known limit: a message of the same reply that arrives entirely *after* the terminal one
//! (reordering across messages) is not waited for; memcached sends messages in order.

use std::ops::Range;

use super::response::Response;
use super::Error;
use crate::wire::McHeader;

/// Whether a reply is whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// More datagrams are needed.
    Incomplete,
    /// The reply is whole: read it with [`Reassembler::message`].
    Complete,
}

#[derive(Clone, Debug)]
struct Partial {
    count: u16,
    /// (sequence, bytes in the arena), in arrival order.
    parts: Vec<(u16, Range<usize>)>,
}

impl Partial {
    fn has(&self, seq: u16) -> bool {
        self.parts.iter().any(|(s, _)| *s == seq)
    }
}

/// Collects the datagrams of one reply (one request id). Owns its buffers; reuse it with
/// [`clear`](Self::clear) to keep their capacity.
#[derive(Clone, Debug)]
pub struct Reassembler {
    request_id: Option<u16>,
    max_bytes: usize,
    /// Datagram payloads of half-received messages.
    arena: Vec<u8>,
    open: Vec<Partial>,
    /// Whole non-terminal messages, in completion order, then (once complete) the
    /// terminal one.
    out: Vec<u8>,
    /// The message holding the terminal item, once it is whole.
    terminal: Vec<u8>,
    has_terminal: bool,
    complete: bool,
    scratch: Vec<u8>,
}

impl Reassembler {
    /// A reassembler that refuses replies over `max_bytes` ([`Error::ResponseTooLarge`]).
    pub fn new(max_bytes: usize) -> Reassembler {
        Reassembler {
            request_id: None,
            max_bytes,
            arena: Vec::new(),
            open: Vec::new(),
            out: Vec::new(),
            terminal: Vec::new(),
            has_terminal: false,
            complete: false,
            scratch: Vec::new(),
        }
    }

    /// Forgets everything (keeps allocated capacity).
    pub fn clear(&mut self) {
        self.request_id = None;
        self.arena.clear();
        self.open.clear();
        self.out.clear();
        self.terminal.clear();
        self.has_terminal = false;
        self.complete = false;
    }

    /// The request id of the datagrams pushed so far.
    pub fn request_id(&self) -> Option<u16> {
        self.request_id
    }

    /// Whether the reply is whole. (The core acts on [`Progress`]; the tests and the fuzz
    /// target check the reassembler's own state with this.)
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The reply so far: whole messages in order, the terminal one last once
    /// [`Progress::Complete`]. Read it with [`ResponseReader`](super::ResponseReader).
    pub fn message(&self) -> &[u8] {
        &self.out
    }

    /// Adds one datagram: its frame header and the message bytes after it.
    ///
    /// Errors: [`Error::RequestIdMismatch`] (another reply's datagram),
    /// [`Error::BadSequence`] (sequence ≥ count, or a datagram after the reply was
    /// complete), [`Error::ResponseTooLarge`], and response parse errors when a whole
    /// message is malformed. The reassembler is unchanged by a refused datagram.
    pub fn push(&mut self, header: McHeader, payload: &[u8]) -> Result<Progress, Error> {
        match self.request_id {
            Some(id) if id != header.request_id => return Err(Error::RequestIdMismatch),
            _ => {}
        }
        if self.complete {
            return Err(Error::BadSequence);
        }
        if header.count == 0 {
            // An empty message (a missed key of a multi-get).
            if !payload.is_empty() {
                return Err(Error::BadSequence);
            }
            self.request_id = Some(header.request_id);
            return Ok(Progress::Incomplete);
        }
        if header.sequence >= header.count {
            return Err(Error::BadSequence);
        }
        if self.arena.len() + self.out.len() + self.terminal.len() + payload.len() > self.max_bytes
        {
            return Err(Error::ResponseTooLarge);
        }
        if header.count == 1 {
            self.finish_message_from(payload, None)?;
        } else {
            let slot = self
                .open
                .iter()
                .position(|p| p.count == header.count && !p.has(header.sequence));
            let received = match slot {
                Some(i) => self.open[i].parts.len() + 1,
                None => 1,
            };
            if received < usize::from(header.count) {
                let start = self.arena.len();
                self.arena.extend_from_slice(payload);
                let part = (header.sequence, start..self.arena.len());
                match slot {
                    Some(i) => self.open[i].parts.push(part),
                    None => self.open.push(Partial {
                        count: header.count,
                        parts: vec![part],
                    }),
                }
            } else {
                // The last datagram of a message: assemble it in sequence order.
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.clear();
                let mut parts: Vec<(u16, Range<usize>)> = match slot {
                    Some(i) => self.open[i].parts.clone(),
                    None => Vec::new(),
                };
                parts.push((header.sequence, usize::MAX..usize::MAX));
                parts.sort_by_key(|(s, _)| *s);
                for (_, r) in &parts {
                    if r.start == usize::MAX {
                        scratch.extend_from_slice(payload);
                    } else {
                        scratch.extend_from_slice(&self.arena[r.clone()]);
                    }
                }
                let res = self.finish_message_from(&scratch, slot);
                self.scratch = scratch;
                res?;
            }
        }
        self.request_id = Some(header.request_id);
        if self.complete {
            Ok(Progress::Complete)
        } else {
            Ok(Progress::Incomplete)
        }
    }

    /// Files one whole message: validates it, then appends it (a terminal message waits
    /// in `terminal` until no other message is half-received) and closes its partial.
    fn finish_message_from(&mut self, msg: &[u8], slot: Option<usize>) -> Result<(), Error> {
        let terminal = check_message(msg)?;
        if terminal {
            if self.has_terminal {
                // Two terminal messages in one reply: not memcached's framing.
                return Err(Error::BadSequence);
            }
            self.terminal.clear();
            self.terminal.extend_from_slice(msg);
            self.has_terminal = true;
        } else {
            self.out.extend_from_slice(msg);
        }
        if let Some(i) = slot {
            self.open.remove(i);
        }
        if self.open.is_empty() {
            self.arena.clear();
            if self.has_terminal {
                self.out.extend_from_slice(&self.terminal);
                self.complete = true;
            }
        }
        Ok(())
    }
}

/// Checks that `msg` is a sequence of whole items; returns whether its last is terminal.
fn check_message(msg: &[u8]) -> Result<bool, Error> {
    let mut rest = msg;
    while !rest.is_empty() {
        let (item, after) = Response::parse(rest).map_err(|e| match e {
            // A whole message cannot end in the middle of an item.
            Error::TruncatedResponse => Error::BadResponse,
            e => e,
        })?;
        if item.is_terminal() {
            return if after.is_empty() {
                Ok(true)
            } else {
                Err(Error::TrailingData)
            };
        }
        rest = after;
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Response, ResponseReader, Value};

    fn h(rid: u16, seq: u16, count: u16) -> McHeader {
        McHeader {
            request_id: rid,
            sequence: seq,
            count,
            reserved: 0,
        }
    }

    fn values(r: &Reassembler) -> Vec<Response<'_>> {
        ResponseReader::new(r.message())
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn single_datagram() {
        let mut r = Reassembler::new(1 << 20);
        let p = r
            .push(h(7, 0, 1), b"VALUE a 5 3\r\nabc\r\nEND\r\n")
            .unwrap();
        assert_eq!(p, Progress::Complete);
        assert!(r.is_complete());
        assert_eq!(r.request_id(), Some(7));
        assert_eq!(r.message(), b"VALUE a 5 3\r\nabc\r\nEND\r\n");
        assert_eq!(r.push(h(7, 0, 1), b"END\r\n"), Err(Error::BadSequence));
    }

    /// What memcached 1.6.18 sent for `get nope a nope2` (captured on loopback).
    #[test]
    fn memcached_multiget_one_message_per_key() {
        let mut r = Reassembler::new(1 << 20);
        assert_eq!(r.push(h(1, 0, 0), b""), Ok(Progress::Incomplete));
        assert_eq!(
            r.push(h(1, 0, 1), b"VALUE a 5 3\r\nabc\r\n"),
            Ok(Progress::Incomplete)
        );
        assert_eq!(r.push(h(1, 0, 1), b"END\r\n"), Ok(Progress::Complete));
        assert_eq!(
            values(&r),
            [
                Response::Value(Value {
                    key: b"a",
                    flags: 5,
                    cas: None,
                    data: b"abc"
                }),
                Response::End
            ]
        );
    }

    #[test]
    fn multi_datagram_message_out_of_order() {
        let data = vec![b'z'; 3000];
        let mut msg = b"VALUE big 0 3000\r\n".to_vec();
        msg.extend_from_slice(&data);
        msg.extend_from_slice(b"\r\nEND\r\n");
        let chunks: Vec<&[u8]> = msg.chunks(1392).collect();
        assert_eq!(chunks.len(), 3);
        for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0]] {
            let mut r = Reassembler::new(1 << 20);
            for (n, &i) in order.iter().enumerate() {
                let p = r.push(h(9, i as u16, 3), chunks[i]).unwrap();
                let want = if n == 2 {
                    Progress::Complete
                } else {
                    Progress::Incomplete
                };
                assert_eq!(p, want, "order {order:?}");
            }
            assert_eq!(r.message(), &msg[..]);
            r.clear();
            assert!(!r.is_complete());
            assert_eq!(r.message(), b"");
        }
    }

    #[test]
    fn terminal_message_waits_for_half_received_ones() {
        let mut first = b"VALUE a 0 2000\r\n".to_vec();
        first.extend_from_slice(&[b'a'; 2000]);
        first.extend_from_slice(b"\r\n");
        let (p0, p1) = first.split_at(1392);
        let mut r = Reassembler::new(1 << 20);
        assert_eq!(r.push(h(3, 0, 2), p0), Ok(Progress::Incomplete));
        // The last key's message (with END) overtakes the second half of the first.
        assert_eq!(
            r.push(h(3, 0, 1), b"VALUE b 0 1\r\nb\r\nEND\r\n"),
            Ok(Progress::Incomplete)
        );
        assert_eq!(r.push(h(3, 1, 2), p1), Ok(Progress::Complete));
        let items = values(&r);
        assert_eq!(items.len(), 3);
        assert!(matches!(items[0], Response::Value(v) if v.key == b"a" && v.data.len() == 2000));
        assert!(matches!(items[1], Response::Value(v) if v.key == b"b"));
        assert_eq!(items[2], Response::End);
    }

    #[test]
    fn refusals_leave_state_alone() {
        let mut r = Reassembler::new(64);
        assert_eq!(
            r.push(h(1, 0, 2), b"VALUE a 0 1\r\n"),
            Ok(Progress::Incomplete)
        );
        assert_eq!(
            r.push(h(2, 1, 2), b"a\r\nEND\r\n"),
            Err(Error::RequestIdMismatch)
        );
        assert_eq!(r.push(h(1, 2, 2), b"a\r\nEND\r\n"), Err(Error::BadSequence));
        assert_eq!(r.push(h(1, 0, 0), b"x"), Err(Error::BadSequence));
        assert_eq!(
            r.push(h(1, 0, 1), &[b'x'; 64]),
            Err(Error::ResponseTooLarge)
        );
        assert_eq!(r.push(h(1, 0, 1), b"BOGUS\r\n"), Err(Error::BadResponse));
        assert_eq!(
            r.push(h(1, 0, 1), b"VALUE a 0 5\r\nab"),
            Err(Error::BadResponse)
        );
        assert_eq!(
            r.push(h(1, 0, 1), b"END\r\nEND\r\n"),
            Err(Error::TrailingData)
        );
        assert_eq!(r.push(h(1, 1, 2), b"a\r\nEND\r\n"), Ok(Progress::Complete));
        assert_eq!(r.message(), b"VALUE a 0 1\r\na\r\nEND\r\n");
    }

    #[test]
    fn two_terminal_messages_are_refused() {
        let mut r = Reassembler::new(1 << 20);
        assert_eq!(
            r.push(h(1, 0, 2), b"VALUE a 0 1\r\n"),
            Ok(Progress::Incomplete)
        );
        assert_eq!(r.push(h(1, 0, 1), b"END\r\n"), Ok(Progress::Incomplete));
        assert_eq!(r.push(h(1, 0, 1), b"END\r\n"), Err(Error::BadSequence));
    }
}
