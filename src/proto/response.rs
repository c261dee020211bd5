//! Memcached responses: a zero-copy reader over one message (what follows the frame
//! header, or a reassembled multi-datagram message) and emitters that write exactly what
//! memcached 1.6 writes.

use super::binary::{BinaryResponse, RESPONSE_MAGIC};
use super::request::Request;
use super::text::{
    check_key, parse_u32, parse_u64, split_line, CountSink, Sink, SliceSink, Tokens,
};
use super::Error;

/// One `VALUE` item of a retrieval reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Value<'a> {
    pub key: &'a [u8],
    pub flags: u32,
    /// Present in replies to gets/gats.
    pub cas: Option<u64>,
    /// The data block (its length is the `<bytes>` field), without the trailing CRLF.
    pub data: &'a [u8],
}

impl Value<'_> {
    /// Bytes of the `VALUE` line, data and CRLF.
    pub fn buffer_len(&self) -> usize {
        let mut c = CountSink::default();
        self.emit_to(&mut c);
        c.0
    }

    /// Writes `VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n` (memcached's
    /// `make_ascii_get_suffix` layout).
    #[inline]
    pub fn emit_to<S: Sink + ?Sized>(&self, s: &mut S) {
        s.put(b"VALUE ");
        s.put(self.key);
        s.put(b" ");
        s.put_u64(u64::from(self.flags));
        s.put(b" ");
        s.put_u64(self.data.len() as u64);
        if let Some(cas) = self.cas {
            s.put(b" ");
            s.put_u64(cas);
        }
        s.put(b"\r\n");
        s.put(self.data);
        s.put(b"\r\n");
    }
}

/// Status words of meta responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetaStatus {
    /// `HD`: success, no value.
    Hd,
    /// `EN`: miss.
    En,
    /// `NF`: not found.
    Nf,
    /// `NS`: not stored.
    Ns,
    /// `EX`: exists (cas mismatch).
    Ex,
    /// `MN`: end of a pipeline (reply to `mn`).
    Mn,
}

impl MetaStatus {
    fn from_word(word: &[u8]) -> Option<MetaStatus> {
        Some(match word {
            b"HD" => MetaStatus::Hd,
            b"EN" => MetaStatus::En,
            b"NF" => MetaStatus::Nf,
            b"NS" => MetaStatus::Ns,
            b"EX" => MetaStatus::Ex,
            b"MN" => MetaStatus::Mn,
            _ => return None,
        })
    }

    fn word(self) -> &'static [u8] {
        match self {
            MetaStatus::Hd => b"HD",
            MetaStatus::En => b"EN",
            MetaStatus::Nf => b"NF",
            MetaStatus::Ns => b"NS",
            MetaStatus::Ex => b"EX",
            MetaStatus::Mn => b"MN",
        }
    }
}

/// One item of a memcached response message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response<'a> {
    Value(Value<'a>),
    /// `END`: the end of a retrieval or stats reply.
    End,
    Stored,
    NotStored,
    Exists,
    NotFound,
    Deleted,
    Touched,
    /// `OK` (flush_all, verbosity).
    Ok,
    /// `RESET` (stats reset).
    Reset,
    /// The new value after incr/decr.
    Number(u64),
    /// `VERSION <version>`.
    Version(&'a [u8]),
    /// `STAT <name> <value>` (value may be empty or contain spaces).
    Stat {
        name: &'a [u8],
        value: &'a [u8],
    },
    /// `ERROR`: unknown command.
    Error,
    /// `CLIENT_ERROR <message>`.
    ClientError(&'a [u8]),
    /// `SERVER_ERROR <message>`.
    ServerError(&'a [u8]),
    /// A meta status line with its return flags.
    Meta {
        status: MetaStatus,
        flags: &'a [u8],
    },
    /// `VA <size> <flags>*` and its data block.
    MetaValue {
        flags: &'a [u8],
        data: &'a [u8],
    },
    /// `ME <key> <key=value>*` (meta debug), the text after `ME `.
    MetaDebug(&'a [u8]),
    Binary(BinaryResponse<'a>),
}

/// `s` split at its first space: the first word, and the rest (empty if none).
fn first_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(sp) => (&s[..sp], &s[sp + 1..]),
        None => (s, &s[s.len()..]),
    }
}

/// The first line of a meta reply, read without its data block (which may continue in
/// later datagrams): enough to judge whom the reply answers and how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaHead<'a> {
    /// The status word; `None` for a value (`VA`).
    pub status: Option<MetaStatus>,
    /// The flag tokens (after `VA`'s size).
    pub flags: &'a [u8],
}

impl<'a> MetaHead<'a> {
    /// The head of `msg` if its first line is a meta reply (`VA` or a status word).
    pub fn parse(msg: &'a [u8]) -> Option<MetaHead<'a>> {
        let line = split_line(msg).map_or(msg, |(line, _)| line);
        let (word, args) = first_word(line);
        if word == b"VA" {
            let (_, flags) = first_word(args);
            return Some(MetaHead {
                status: None,
                flags,
            });
        }
        MetaStatus::from_word(word).map(|status| MetaHead {
            status: Some(status),
            flags: args,
        })
    }

    /// The status word of `msg`'s meta reply line (`None` for a value or another shape).
    pub fn status_of(msg: &'a [u8]) -> Option<MetaStatus> {
        MetaHead::parse(msg).and_then(|h| h.status)
    }

    /// The text of flag `name` (such as `f123`, `t-1`, `kfoo`, `O1f`) after its letter.
    pub fn token(&self, name: u8) -> Option<&'a [u8]> {
        self.flags
            .split(|&b| b == b' ')
            .find(|t| t.first() == Some(&name))
            .map(|t| &t[1..])
    }

    /// The value of a numeric flag such as `f123` or `t-1` (`None` if absent or not a
    /// number of type `T`).
    pub fn flag<T: std::str::FromStr>(&self, name: u8) -> Option<T> {
        self.token(name)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|s| s.parse().ok())
    }
}

/// Whether a reply message starts with an error line (`ERROR`, `CLIENT_ERROR ...`,
/// `SERVER_ERROR ...`), which may answer any request.
pub fn is_error_line(msg: &[u8]) -> bool {
    msg.starts_with(b"SERVER_ERROR")
        || msg.starts_with(b"CLIENT_ERROR")
        || msg.starts_with(b"ERROR")
}

/// The key of the `VALUE` item `msg` starts with, read from its first line only (the data
/// may continue in later datagrams); `None` if `msg` does not start with `VALUE `.
pub fn first_value_key(msg: &[u8]) -> Option<&[u8]> {
    let rest = msg.strip_prefix(b"VALUE ")?;
    Some(rest.split(|&b| b == b' ').next().unwrap_or_default())
}

/// What the reply to a request looks like, judged on the reply's first datagram: which
/// first lines can answer it. Error lines fit every shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyShape {
    /// `VALUE` items and `END` (retrievals).
    Values,
    /// `STORED`, `NOT_STORED`, `EXISTS` or `NOT_FOUND`.
    Stored,
    /// `DELETED` or `NOT_FOUND`.
    Deleted,
    /// A number or `NOT_FOUND` (incr/decr).
    Number,
    /// `TOUCHED` or `NOT_FOUND`.
    Touched,
    /// `VERSION ...`.
    Version,
    /// `OK` (flush_all, verbosity).
    Ok,
    /// `STAT` lines and `END`, or `RESET`.
    Stats,
    /// A meta status line (`HD`, `VA`, `EN`, `NS`, `EX`, `NF`, `MN`, `ME`).
    Meta,
    /// Anything (quit, the binary protocol).
    Any,
}

impl ReplyShape {
    /// The shape of the reply to `req`.
    pub fn of(req: &Request<'_>) -> ReplyShape {
        match req {
            Request::Retrieval(_) => ReplyShape::Values,
            Request::Storage(_) => ReplyShape::Stored,
            Request::Delete { .. } => ReplyShape::Deleted,
            Request::Arithmetic { .. } => ReplyShape::Number,
            Request::Touch { .. } => ReplyShape::Touched,
            Request::Version => ReplyShape::Version,
            Request::Verbosity { .. } | Request::FlushAll { .. } => ReplyShape::Ok,
            Request::Stats { .. } => ReplyShape::Stats,
            Request::Meta(_) => ReplyShape::Meta,
            Request::Quit | Request::Binary(_) => ReplyShape::Any,
        }
    }

    /// Whether `msg`, the first datagram of a reply, has this shape.
    pub fn fits(self, msg: &[u8]) -> bool {
        if is_error_line(msg) {
            return true;
        }
        let starts = |p: &[u8]| msg.starts_with(p);
        match self {
            ReplyShape::Any => true,
            ReplyShape::Values => starts(b"VALUE ") || starts(b"END\r\n"),
            ReplyShape::Stored => {
                starts(b"STORED\r\n")
                    || starts(b"NOT_STORED\r\n")
                    || starts(b"EXISTS\r\n")
                    || starts(b"NOT_FOUND\r\n")
            }
            ReplyShape::Deleted => starts(b"DELETED\r\n") || starts(b"NOT_FOUND\r\n"),
            ReplyShape::Number => {
                msg.first().is_some_and(u8::is_ascii_digit) || starts(b"NOT_FOUND\r\n")
            }
            ReplyShape::Touched => starts(b"TOUCHED\r\n") || starts(b"NOT_FOUND\r\n"),
            ReplyShape::Version => starts(b"VERSION "),
            ReplyShape::Ok => starts(b"OK\r\n"),
            ReplyShape::Stats => starts(b"STAT ") || starts(b"END\r\n") || starts(b"RESET\r\n"),
            ReplyShape::Meta => {
                [b"HD", b"VA", b"EN", b"NS", b"EX", b"NF", b"MN", b"ME"]
                    .iter()
                    .any(|code| msg.starts_with(*code))
                    && matches!(msg.get(2), Some(b' ' | b'\r' | b'\n'))
            }
        }
    }
}

impl<'a> Response<'a> {
    /// The item of a one-value reply `VALUE ... END` that is whole in `msg` (exactly one
    /// value and nothing after `END`); `None` for any other reply.
    pub fn single_value(msg: &'a [u8]) -> Option<Value<'a>> {
        let (first, rest) = Response::parse(msg).ok()?;
        let Response::Value(v) = first else {
            return None;
        };
        let (second, rest) = Response::parse(rest).ok()?;
        (second == Response::End && rest.is_empty()).then_some(v)
    }

    /// Whether this item ends a reply: everything but `VALUE` and `STAT` items (which
    /// `END` closes). With one request per datagram, a message that ends in a terminal
    /// item is a whole reply.
    #[inline]
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Response::Value(_) | Response::Stat { .. })
    }

    /// Parses one item at the start of `bytes`; returns it and what follows.
    /// [`Error::TruncatedResponse`] when the item is cut off (it may continue in the next
    /// datagram), [`Error::BadResponse`] / [`Error::BadDataLength`] / number and key
    /// errors when it is malformed.
    pub fn parse(bytes: &'a [u8]) -> Result<(Response<'a>, &'a [u8]), Error> {
        if bytes.first() == Some(&RESPONSE_MAGIC) {
            let (b, rest) = BinaryResponse::parse(bytes)?;
            return Ok((Response::Binary(b), rest));
        }
        let (line, rest) = split_line(bytes).ok_or(Error::TruncatedResponse)?;
        let (word, args) = first_word(line);
        let simple = |r: Response<'a>| {
            if args.is_empty() {
                Ok((r, rest))
            } else {
                Err(Error::BadResponse)
            }
        };
        match word {
            b"VALUE" => {
                let mut t = Tokens::new(args);
                let key = t.next().ok_or(Error::BadResponse)?;
                check_key(key)?;
                let flags = parse_u32(t.next().ok_or(Error::BadResponse)?)?;
                let len = parse_u32(t.next().ok_or(Error::BadResponse)?)? as usize;
                let cas = t.next().map(parse_u64).transpose()?;
                if t.next().is_some() {
                    return Err(Error::BadResponse);
                }
                let (data, rest) = data_block(rest, len)?;
                Ok((
                    Response::Value(Value {
                        key,
                        flags,
                        cas,
                        data,
                    }),
                    rest,
                ))
            }
            b"END" => simple(Response::End),
            b"STORED" => simple(Response::Stored),
            b"NOT_STORED" => simple(Response::NotStored),
            b"EXISTS" => simple(Response::Exists),
            b"NOT_FOUND" => simple(Response::NotFound),
            b"DELETED" => simple(Response::Deleted),
            b"TOUCHED" => simple(Response::Touched),
            b"OK" => simple(Response::Ok),
            b"RESET" => simple(Response::Reset),
            b"ERROR" => simple(Response::Error),
            b"VERSION" => Ok((Response::Version(args), rest)),
            b"CLIENT_ERROR" => Ok((Response::ClientError(args), rest)),
            b"SERVER_ERROR" => Ok((Response::ServerError(args), rest)),
            b"STAT" => {
                let (name, value) = first_word(args);
                if name.is_empty() {
                    return Err(Error::BadResponse);
                }
                Ok((Response::Stat { name, value }, rest))
            }
            b"VA" => {
                let (size, flags) = first_word(args);
                let len = parse_u32(size)? as usize;
                let (data, rest) = data_block(rest, len)?;
                Ok((Response::MetaValue { flags, data }, rest))
            }
            b"ME" => Ok((Response::MetaDebug(args), rest)),
            w if !w.is_empty() && w.iter().all(u8::is_ascii_digit) && args.is_empty() => {
                Ok((Response::Number(parse_u64(w)?), rest))
            }
            // Meta status words last: `VALUE`/`END`, the common replies, are matched first.
            w => match MetaStatus::from_word(w) {
                Some(status) => Ok((
                    Response::Meta {
                        status,
                        flags: args,
                    },
                    rest,
                )),
                None => Err(Error::BadResponse),
            },
        }
    }

    /// Writes the item as memcached does.
    pub fn emit_to<S: Sink + ?Sized>(&self, s: &mut S) {
        let line = |s: &mut S, word: &[u8], args: &[u8]| {
            s.put(word);
            if !args.is_empty() {
                s.put(b" ");
                s.put(args);
            }
            s.put(b"\r\n");
        };
        match self {
            Response::Value(v) => v.emit_to(s),
            Response::End => s.put(b"END\r\n"),
            Response::Stored => s.put(b"STORED\r\n"),
            Response::NotStored => s.put(b"NOT_STORED\r\n"),
            Response::Exists => s.put(b"EXISTS\r\n"),
            Response::NotFound => s.put(b"NOT_FOUND\r\n"),
            Response::Deleted => s.put(b"DELETED\r\n"),
            Response::Touched => s.put(b"TOUCHED\r\n"),
            Response::Ok => s.put(b"OK\r\n"),
            Response::Reset => s.put(b"RESET\r\n"),
            Response::Number(n) => {
                s.put_u64(*n);
                s.put(b"\r\n");
            }
            Response::Version(v) => {
                s.put(b"VERSION ");
                s.put(v);
                s.put(b"\r\n");
            }
            Response::Stat { name, value } => {
                s.put(b"STAT ");
                s.put(name);
                s.put(b" ");
                s.put(value);
                s.put(b"\r\n");
            }
            Response::Error => s.put(b"ERROR\r\n"),
            Response::ClientError(m) => {
                s.put(b"CLIENT_ERROR ");
                s.put(m);
                s.put(b"\r\n");
            }
            Response::ServerError(m) => {
                s.put(b"SERVER_ERROR ");
                s.put(m);
                s.put(b"\r\n");
            }
            Response::Meta { status, flags } => line(s, status.word(), flags),
            Response::MetaValue { flags, data } => {
                s.put(b"VA ");
                s.put_u64(data.len() as u64);
                if !flags.is_empty() {
                    s.put(b" ");
                    s.put(flags);
                }
                s.put(b"\r\n");
                s.put(data);
                s.put(b"\r\n");
            }
            Response::MetaDebug(m) => line(s, b"ME", m),
            Response::Binary(b) => b.emit(s),
        }
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        let mut c = CountSink::default();
        self.emit_to(&mut c);
        c.0
    }

    /// Writes the item at the start of `buf`; returns its length ([`Error::NoRoom`]).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut s = SliceSink::new(buf);
        self.emit_to(&mut s);
        s.finish()
    }
}

fn data_block(rest: &[u8], len: usize) -> Result<(&[u8], &[u8]), Error> {
    let end = len + 2;
    if rest.len() < end {
        return Err(Error::TruncatedResponse);
    }
    if &rest[len..end] != b"\r\n" {
        return Err(Error::BadDataLength);
    }
    Ok((&rest[..len], &rest[end..]))
}

/// Reads the items of one response message, zero-copy. Stops after the first error.
#[derive(Clone, Debug)]
pub struct ResponseReader<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// How far a message got (see [`ResponseReader::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageStatus {
    /// Ends with a terminal item (`END`, a status line, a number...): the reply is whole.
    Complete,
    /// Well-formed so far but not finished: `VALUE`/`STAT` items without `END`, nothing at
    /// all, or an item cut off at the end (it continues in a later datagram).
    Incomplete,
}

impl<'a> ResponseReader<'a> {
    pub fn new(msg: &'a [u8]) -> Self {
        ResponseReader {
            rest: msg,
            failed: false,
        }
    }

    /// Scans a whole message: [`MessageStatus::Complete`] if its last item is terminal and
    /// nothing follows it, [`MessageStatus::Incomplete`] if it may continue, an error if
    /// it is malformed (including bytes after a terminal item).
    pub fn status(msg: &'a [u8]) -> Result<MessageStatus, Error> {
        let mut rest = msg;
        while !rest.is_empty() {
            match Response::parse(rest) {
                Ok((item, after)) => {
                    if item.is_terminal() {
                        return if after.is_empty() {
                            Ok(MessageStatus::Complete)
                        } else {
                            Err(Error::TrailingData)
                        };
                    }
                    rest = after;
                }
                Err(Error::TruncatedResponse) => return Ok(MessageStatus::Incomplete),
                Err(e) => return Err(e),
            }
        }
        Ok(MessageStatus::Incomplete)
    }
}

impl<'a> Iterator for ResponseReader<'a> {
    type Item = Result<Response<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match Response::parse(self.rest) {
            Ok((item, rest)) => {
                self.rest = rest;
                Some(Ok(item))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_flags_are_read_by_their_letter() {
        let head = MetaHead::parse(b"VA 3 f12 t-1 kfoo O1f\r\nabc\r\n").unwrap();
        assert_eq!(head.token(b'k'), Some(&b"foo"[..]));
        assert_eq!(head.token(b'O'), Some(&b"1f"[..]));
        assert_eq!(head.flag::<u32>(b'f'), Some(12));
        assert_eq!(head.flag::<i64>(b't'), Some(-1));
        assert_eq!(head.flag::<u32>(b't'), None, "-1 is no u32");
        assert_eq!(head.token(b'q'), None);
        assert_eq!(MetaHead::status_of(b"EN\r\n"), Some(MetaStatus::En));
        assert_eq!(MetaHead::status_of(b"VA 1\r\nx\r\n"), None);
        assert_eq!(MetaHead::status_of(b"STORED\r\n"), None);
    }

    #[test]
    fn reply_shapes_accept_their_first_lines_and_errors() {
        use ReplyShape::*;
        let cases: [(ReplyShape, &[u8], bool); 16] = [
            (Values, b"VALUE k 0 1\r\nx\r\nEND\r\n", true),
            (Values, b"END\r\n", true),
            (Values, b"STORED\r\n", false),
            (Stored, b"NOT_STORED\r\n", true),
            (Stored, b"DELETED\r\n", false),
            (Deleted, b"NOT_FOUND\r\n", true),
            (Number, b"42\r\n", true),
            (Number, b"VALUE k 0 1\r\n", false),
            (Touched, b"TOUCHED\r\n", true),
            (Version, b"VERSION 1.6.21\r\n", true),
            (Ok, b"OK\r\n", true),
            (Stats, b"STAT pid 1\r\nEND\r\n", true),
            (Meta, b"HD\r\n", true),
            (Meta, b"HDX\r\n", false),
            (Any, b"whatever", true),
            (Stored, b"SERVER_ERROR out of memory\r\n", true),
        ];
        for (shape, msg, fits) in cases {
            assert_eq!(
                shape.fits(msg),
                fits,
                "{shape:?} {:?}",
                String::from_utf8_lossy(msg)
            );
        }
        assert!(is_error_line(b"ERROR\r\n") && is_error_line(b"CLIENT_ERROR bad\r\n"));
        assert!(!is_error_line(b"END\r\n"));
    }

    #[test]
    fn the_first_value_key_and_a_single_value() {
        assert_eq!(first_value_key(b"VALUE key 0 1\r\nx"), Some(&b"key"[..]));
        assert_eq!(first_value_key(b"END\r\n"), None);
        let v = Response::single_value(b"VALUE k 5 2\r\nab\r\nEND\r\n").unwrap();
        assert_eq!((v.key, v.flags, v.data), (&b"k"[..], 5, &b"ab"[..]));
        assert_eq!(
            Response::single_value(b"VALUE k 5 2\r\nab\r\n"),
            None,
            "no END"
        );
        let two = b"VALUE a 0 1\r\nx\r\nVALUE b 0 1\r\ny\r\nEND\r\n";
        assert_eq!(Response::single_value(two), None);
        assert_eq!(Response::single_value(b"END\r\n"), None);
    }

    #[test]
    fn a_meta_head_is_read_from_the_first_line_alone() {
        let head = |m: &'static [u8]| MetaHead::parse(m);
        assert_eq!(
            head(b"VA 9000 f1 kk O1f\r\npart of a larger value"),
            Some(MetaHead {
                status: None,
                flags: b"f1 kk O1f"
            })
        );
        assert_eq!(
            head(b"EN\r\n"),
            Some(MetaHead {
                status: Some(MetaStatus::En),
                flags: b""
            })
        );
        assert_eq!(head(b"HD O2\r\n").map(|h| h.flags), Some(&b"O2"[..]));
        assert_eq!(head(b"STORED\r\n"), None);
        assert_eq!(head(b"SERVER_ERROR out of memory\r\n"), None);
    }

    fn items(msg: &[u8]) -> Vec<Result<Response<'_>, Error>> {
        ResponseReader::new(msg).collect()
    }

    #[test]
    fn values_and_end() {
        let msg = b"VALUE a 5 3\r\nabc\r\nVALUE b 0 2 99\r\nxy\r\nEND\r\n";
        let got = items(msg);
        assert_eq!(
            got,
            vec![
                Ok(Response::Value(Value {
                    key: b"a",
                    flags: 5,
                    cas: None,
                    data: b"abc"
                })),
                Ok(Response::Value(Value {
                    key: b"b",
                    flags: 0,
                    cas: Some(99),
                    data: b"xy"
                })),
                Ok(Response::End),
            ]
        );
        assert_eq!(ResponseReader::status(msg), Ok(MessageStatus::Complete));
        let mut out = Vec::new();
        for r in got {
            r.unwrap().emit_to(&mut out);
        }
        assert_eq!(out, msg);
    }

    #[test]
    fn statuses() {
        for (line, want) in [
            (&b"STORED\r\n"[..], Response::Stored),
            (b"NOT_STORED\r\n", Response::NotStored),
            (b"EXISTS\r\n", Response::Exists),
            (b"NOT_FOUND\r\n", Response::NotFound),
            (b"DELETED\r\n", Response::Deleted),
            (b"TOUCHED\r\n", Response::Touched),
            (b"OK\r\n", Response::Ok),
            (b"RESET\r\n", Response::Reset),
            (b"ERROR\r\n", Response::Error),
            (b"42\r\n", Response::Number(42)),
            (b"VERSION 1.6.18\r\n", Response::Version(b"1.6.18")),
            (
                b"CLIENT_ERROR bad command line format\r\n",
                Response::ClientError(b"bad command line format"),
            ),
            (
                b"SERVER_ERROR out of memory\r\n",
                Response::ServerError(b"out of memory"),
            ),
            (
                b"HD c123 k\r\n",
                Response::Meta {
                    status: MetaStatus::Hd,
                    flags: b"c123 k",
                },
            ),
            (
                b"EN\r\n",
                Response::Meta {
                    status: MetaStatus::En,
                    flags: b"",
                },
            ),
            (
                b"VA 3 f0\r\nabc\r\n",
                Response::MetaValue {
                    flags: b"f0",
                    data: b"abc",
                },
            ),
            (
                b"ME foo exp=-1 la=1\r\n",
                Response::MetaDebug(b"foo exp=-1 la=1"),
            ),
        ] {
            let (r, rest) = Response::parse(line).unwrap();
            assert_eq!(r, want, "{:?}", String::from_utf8_lossy(line));
            assert!(rest.is_empty());
            assert!(r.is_terminal());
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(&mut out).unwrap();
            assert_eq!(out, line);
            assert_eq!(ResponseReader::status(line), Ok(MessageStatus::Complete));
        }
    }

    #[test]
    fn stats() {
        let msg = b"STAT pid 123\r\nSTAT version 1.6.18\r\nSTAT empty \r\nEND\r\n";
        let got: Vec<_> = items(msg).into_iter().map(Result::unwrap).collect();
        assert_eq!(
            got[0],
            Response::Stat {
                name: b"pid",
                value: b"123"
            }
        );
        assert!(!got[0].is_terminal());
        assert_eq!(got.len(), 4);
        assert_eq!(
            ResponseReader::status(&msg[..30]),
            Ok(MessageStatus::Incomplete)
        );
    }

    #[test]
    fn incomplete_and_malformed() {
        let msg = b"VALUE a 5 3\r\nabc\r\nEND\r\n";
        for cut in 0..msg.len() {
            assert_eq!(
                ResponseReader::status(&msg[..cut]),
                Ok(MessageStatus::Incomplete),
                "cut {cut}"
            );
        }
        assert_eq!(
            ResponseReader::status(b"VALUE a 5 3\r\nabcd\r\nEND\r\n"),
            Err(Error::BadDataLength)
        );
        assert_eq!(
            ResponseReader::status(b"END\r\nEND\r\n"),
            Err(Error::TrailingData)
        );
        assert_eq!(ResponseReader::status(b"WHAT\r\n"), Err(Error::BadResponse));
        assert_eq!(
            ResponseReader::status(b"END x\r\n"),
            Err(Error::BadResponse)
        );
        assert_eq!(
            ResponseReader::status(b"VALUE a x 3\r\nabc\r\n"),
            Err(Error::BadNumber)
        );
        assert_eq!(
            ResponseReader::status(b"VALUE a 1 1 1 1\r\na\r\n"),
            Err(Error::BadResponse)
        );
        assert_eq!(
            ResponseReader::status(b"99999999999999999999999\r\n"),
            Err(Error::BadNumber)
        );
        let mut r = ResponseReader::new(b"BAD\r\nEND\r\n");
        assert_eq!(r.next(), Some(Err(Error::BadResponse)));
        assert_eq!(r.next(), None);
    }
}
