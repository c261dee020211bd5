//! Memcached's protocol as kvlb speaks it over UDP: the complete ASCII request grammar
//! (plus recognition of meta and binary requests), response parsing and emitting,
//! multi-datagram reply reassembly, and whole memcached frames built on [`crate::wire`].
//!
//! Owns: the text grammar, memcached's limits (keys ≤ 250 bytes without spaces or control
//! characters, data blocks of exactly the declared size, numbers that fit their types, one
//! request per datagram), and the bytes memcached 1.6 puts in its replies. Must not: decide
//! where a request goes, keep per-flow state (the [`Reassembler`] is owned by its caller),
//! or allocate on the request/hit path.
//!
//! # The contract
//!
//! Untrusted bytes go in; a value or an [`Error`] comes out. Nothing here panics or reads
//! out of bounds on any input (fuzzed: `fuzz/fuzz_targets/`). Parsed values borrow from
//! the input (keys, data blocks), so parsing never allocates. Every value type emits back
//! to bytes that parse to the same value.
//!
//! # What the core uses
//!
//! Requests, per datagram:
//! - [`parse_datagram`]: memcached frame header + exactly one [`Request`]. A request with
//!   datagram count ≠ 1 is refused ([`Error::SplitRequest`]), as memcached drops it.
//! - [`Request::command`], [`Request::key`] (routing key), [`Request::keys`] (every key of a
//!   multi-get, no allocation), [`Request::noreply`], [`Request::mutates`]; the variants
//!   carry flags/exptime/bytes/cas and the data block (`Storage`), meta flags (`Meta`, with
//!   [`Meta::routing_key`] for base64 keys) and binary opcode/key (`Binary`).
//!
//! Responses from backends:
//! - [`ResponseReader`]: the items of one message ([`Response::Value`] with key, flags, cas
//!   and data; `End`; status lines; numbers; meta and binary replies), and
//!   [`ResponseReader::status`]: whether the message is a whole reply.
//! - A datagram with count 1 whose message is [`MessageStatus::Complete`] is the whole
//!   reply; anything else goes through a [`Reassembler`] (sequence numbers, several
//!   datagrams per message, and memcached 1.6's one-message-per-key multi-get).
//!
//! Frames:
//! - [`write_hit_reply`]: turns a GET request frame into memcached's reply for a cached item
//!   in the same [`FrameBuf`](crate::wire::FrameBuf), byte-identical to memcached 1.6
//!   (frame header: the request's id, sequence 0, count 1). Only replies that fit one
//!   datagram ([`UDP_DATA_SIZE`] message bytes) are written; larger ones fail with
//!   [`Error::ReplyTooLarge`], frame untouched (forward the GET instead).
//! - [`write_reply`]: any single-datagram message (e.g. `END` for a miss) the same way.
//! - [`emit_request_frame`] (kvlb's own requests: replica writes, fetches, fences, probes)
//!   and [`emit_request_frame_vec`] (the same into a `Vec`, for tests and tools).
//!
//! [`Error::name`] is the stable stats key of every refusal.

pub mod binary;
mod frames;
mod reassembly;
mod request;
mod response;
mod text;

pub use binary::BinaryResponse;
pub use frames::{
    emit_request_frame, emit_request_frame_vec, parse_datagram, write_hit_reply, write_reply,
    UDP_DATA_SIZE,
};
pub use reassembly::{Progress, Reassembler};
pub(crate) use request::simple_get;
pub use request::{Binary, Command, KeyIter, Keys, Meta, Request, Retrieval, Storage};
pub use response::{
    first_value_key, is_error_line, MessageStatus, MetaHead, MetaStatus, ReplyShape, Response,
    ResponseReader, Value,
};
pub use text::{
    base64_decode, check_key, parse_i32, parse_u32, parse_u64, CountSink, Sink, SliceSink,
    MAX_KEY_LEN,
};

use crate::wire;

/// Why a request, response or frame was refused. Small and `Copy`; [`name`](Error::name) is
/// the stable stats key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame-level error (from [`crate::wire`]).
    #[error(transparent)]
    Wire(#[from] wire::Error),
    /// A UDP payload shorter than the 8-byte frame header.
    #[error("truncated memcached frame header")]
    TruncatedFrameHeader,
    /// A request whose frame header says it spans several datagrams (count ≠ 1).
    #[error("request split over several datagrams")]
    SplitRequest,
    /// Nothing after the frame header (or a blank command line).
    #[error("empty request")]
    EmptyRequest,
    /// A command line without its `\n`, or a binary request shorter than its header says.
    #[error("truncated request")]
    TruncatedRequest,
    /// Bytes that are not memcached text at all.
    #[error("garbage")]
    Garbage,
    /// A well-formed word that is not a memcached command.
    #[error("unknown command")]
    UnknownCommand,
    /// Wrong number of arguments, a missing key, a bad `noreply`/hold time or meta flag.
    #[error("bad command line format")]
    BadFormat,
    /// A key over 250 bytes.
    #[error("key too long")]
    KeyTooLong,
    /// A key with control characters (or an undecodable base64 meta key).
    #[error("illegal key")]
    IllegalKey,
    /// A number that is not decimal or does not fit its type.
    #[error("bad number")]
    BadNumber,
    /// A data block whose length does not match the declared size (or lacks its CRLF).
    #[error("data length does not match the declared size")]
    BadDataLength,
    /// Bytes after the request (a second request in the datagram) or after a reply's
    /// terminal item.
    #[error("trailing data")]
    TrailingData,
    /// A binary header whose key and extras lengths exceed the body.
    #[error("bad binary header")]
    BadBinary,
    /// A response line that is not memcached's.
    #[error("bad response")]
    BadResponse,
    /// A response item cut off at the end of the message.
    #[error("truncated response")]
    TruncatedResponse,
    /// A datagram whose sequence number does not fit the reply being reassembled.
    #[error("bad datagram sequence")]
    BadSequence,
    /// A datagram of another reply pushed into a reassembler.
    #[error("request id mismatch")]
    RequestIdMismatch,
    /// A reply over the reassembler's limit.
    #[error("response too large")]
    ResponseTooLarge,
    /// The output buffer cannot hold what is being emitted.
    #[error("no room in the buffer")]
    NoRoom,
    /// A reply that does not fit one datagram (memcached would split it).
    #[error("reply larger than one datagram")]
    ReplyTooLarge,
}

impl Error {
    /// Every variant except [`Error::Wire`] (whose names are [`wire::Error::ALL`]'s).
    pub const ALL: &'static [Error] = &[
        Error::TruncatedFrameHeader,
        Error::SplitRequest,
        Error::EmptyRequest,
        Error::TruncatedRequest,
        Error::Garbage,
        Error::UnknownCommand,
        Error::BadFormat,
        Error::KeyTooLong,
        Error::IllegalKey,
        Error::BadNumber,
        Error::BadDataLength,
        Error::TrailingData,
        Error::BadBinary,
        Error::BadResponse,
        Error::TruncatedResponse,
        Error::BadSequence,
        Error::RequestIdMismatch,
        Error::ResponseTooLarge,
        Error::NoRoom,
        Error::ReplyTooLarge,
    ];

    /// Stable snake_case name for stats.
    pub const fn name(self) -> &'static str {
        match self {
            Error::Wire(e) => e.name(),
            Error::TruncatedFrameHeader => "truncated_frame_header",
            Error::SplitRequest => "split_request",
            Error::EmptyRequest => "empty_request",
            Error::TruncatedRequest => "truncated_request",
            Error::Garbage => "garbage",
            Error::UnknownCommand => "unknown_command",
            Error::BadFormat => "bad_command_format",
            Error::KeyTooLong => "key_too_long",
            Error::IllegalKey => "illegal_key",
            Error::BadNumber => "bad_number",
            Error::BadDataLength => "bad_data_length",
            Error::TrailingData => "trailing_data",
            Error::BadBinary => "bad_binary_header",
            Error::BadResponse => "bad_response",
            Error::TruncatedResponse => "truncated_response",
            Error::BadSequence => "bad_sequence",
            Error::RequestIdMismatch => "request_id_mismatch",
            Error::ResponseTooLarge => "response_too_large",
            Error::NoRoom => "no_room",
            Error::ReplyTooLarge => "reply_too_large",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for e in Error::ALL {
            let n = e.name();
            assert!(seen.insert(n), "duplicate {n}");
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
        }
        // Wire names may coincide only where the meaning does.
        for w in wire::Error::ALL {
            let n = Error::Wire(*w).name();
            assert!(!seen.contains(n) || n == "truncated_frame_header", "{n}");
        }
        assert!(size_of::<Error>() <= 2);
    }
}
