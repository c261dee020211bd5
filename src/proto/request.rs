//! Memcached requests: the complete ASCII protocol, meta commands, and recognition of
//! binary-protocol requests. Parsing is zero-copy (keys and data are sub-slices of the
//! input) and allocation-free; emitting writes the canonical form into a [`Sink`].

use std::fmt;

use super::binary;
use super::text::{
    base64_decode, check_key, parse_i32, parse_u32, parse_u64, split_line, CountSink, Sink,
    SliceSink, Tokens, MAX_KEY_LEN,
};
use super::Error;

/// Every request kind kvlb recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Get,
    Gets,
    Gat,
    Gats,
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
    Delete,
    Incr,
    Decr,
    Touch,
    Version,
    Verbosity,
    Stats,
    FlushAll,
    Quit,
    /// `mg`
    MetaGet,
    /// `ms`
    MetaSet,
    /// `md`
    MetaDelete,
    /// `ma`
    MetaArithmetic,
    /// `mn`
    MetaNoop,
    /// `me`
    MetaDebug,
    /// A binary-protocol request (magic 0x80); see [`Binary::opcode`].
    Binary,
}

impl Command {
    /// Every command, for stats tables and tests.
    pub const ALL: &'static [Command] = &[
        Command::Get,
        Command::Gets,
        Command::Gat,
        Command::Gats,
        Command::Set,
        Command::Add,
        Command::Replace,
        Command::Append,
        Command::Prepend,
        Command::Cas,
        Command::Delete,
        Command::Incr,
        Command::Decr,
        Command::Touch,
        Command::Version,
        Command::Verbosity,
        Command::Stats,
        Command::FlushAll,
        Command::Quit,
        Command::MetaGet,
        Command::MetaSet,
        Command::MetaDelete,
        Command::MetaArithmetic,
        Command::MetaNoop,
        Command::MetaDebug,
        Command::Binary,
    ];

    /// The command word as sent (stable; `binary` for binary-protocol requests).
    pub const fn name(self) -> &'static str {
        match self {
            Command::Get => "get",
            Command::Gets => "gets",
            Command::Gat => "gat",
            Command::Gats => "gats",
            Command::Set => "set",
            Command::Add => "add",
            Command::Replace => "replace",
            Command::Append => "append",
            Command::Prepend => "prepend",
            Command::Cas => "cas",
            Command::Delete => "delete",
            Command::Incr => "incr",
            Command::Decr => "decr",
            Command::Touch => "touch",
            Command::Version => "version",
            Command::Verbosity => "verbosity",
            Command::Stats => "stats",
            Command::FlushAll => "flush_all",
            Command::Quit => "quit",
            Command::MetaGet => "mg",
            Command::MetaSet => "ms",
            Command::MetaDelete => "md",
            Command::MetaArithmetic => "ma",
            Command::MetaNoop => "mn",
            Command::MetaDebug => "me",
            Command::Binary => "binary",
        }
    }

    fn from_word(word: &[u8]) -> Option<Command> {
        Some(match word {
            b"get" => Command::Get,
            b"gets" => Command::Gets,
            b"gat" => Command::Gat,
            b"gats" => Command::Gats,
            b"set" => Command::Set,
            b"add" => Command::Add,
            b"replace" => Command::Replace,
            b"append" => Command::Append,
            b"prepend" => Command::Prepend,
            b"cas" => Command::Cas,
            b"delete" => Command::Delete,
            b"incr" => Command::Incr,
            b"decr" => Command::Decr,
            b"touch" => Command::Touch,
            b"version" => Command::Version,
            b"verbosity" => Command::Verbosity,
            b"stats" => Command::Stats,
            b"flush_all" => Command::FlushAll,
            b"quit" => Command::Quit,
            b"mg" => Command::MetaGet,
            b"ms" => Command::MetaSet,
            b"md" => Command::MetaDelete,
            b"ma" => Command::MetaArithmetic,
            b"mn" => Command::MetaNoop,
            b"me" => Command::MetaDebug,
            _ => return None,
        })
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The keys of a retrieval command, validated, iterated without allocating.
#[derive(Clone, Copy)]
pub struct Keys<'a> {
    /// Keys separated by one or more spaces, no leading or trailing space.
    raw: &'a [u8],
    count: u16,
}

impl<'a> Keys<'a> {
    /// One key.
    pub fn single(key: &'a [u8]) -> Result<Keys<'a>, Error> {
        check_key(key)?;
        Ok(Keys { raw: key, count: 1 })
    }

    /// Space-separated keys, as they follow `get` on the command line. At least one.
    pub fn parse(raw: &'a [u8]) -> Result<Keys<'a>, Error> {
        let mut count = 0u32;
        for key in Tokens::new(raw) {
            check_key(key)?;
            count += 1;
        }
        if count == 0 {
            return Err(Error::BadFormat);
        }
        let start = raw.iter().position(|&b| b != b' ').unwrap_or(0);
        let end = raw
            .iter()
            .rposition(|&b| b != b' ')
            .map_or(start, |e| e + 1);
        Ok(Keys {
            raw: &raw[start..end],
            // A datagram holds fewer than 32768 two-byte keys.
            count: u16::try_from(count).map_err(|_| Error::BadFormat)?,
        })
    }

    /// How many keys (≥ 1).
    #[inline]
    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// The first key (the only one for a single-key request).
    #[inline]
    pub fn first(&self) -> &'a [u8] {
        if self.count == 1 {
            return self.raw;
        }
        self.iter().next().unwrap_or(self.raw)
    }

    /// The keys in request order.
    #[inline]
    pub fn iter(&self) -> KeyIter<'a> {
        KeyIter {
            tokens: Tokens::new(self.raw),
        }
    }
}

impl PartialEq for Keys<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.iter().eq(other.iter())
    }
}

impl Eq for Keys<'_> {}

impl fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|k| String::from_utf8_lossy(k)))
            .finish()
    }
}

impl<'a> IntoIterator for Keys<'a> {
    type Item = &'a [u8];
    type IntoIter = KeyIter<'a>;
    fn into_iter(self) -> KeyIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Keys`] (or over the single key of other requests).
#[derive(Clone, Debug)]
pub struct KeyIter<'a> {
    tokens: Tokens<'a>,
}

impl<'a> Iterator for KeyIter<'a> {
    type Item = &'a [u8];
    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        self.tokens.next()
    }
}

/// get/gets/gat/gats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retrieval<'a> {
    /// [`Command::Get`], [`Command::Gets`], [`Command::Gat`] or [`Command::Gats`].
    pub command: Command,
    /// The new exptime of gat/gats; `None` for get/gets.
    pub exptime: Option<i32>,
    pub keys: Keys<'a>,
}

/// set/add/replace/append/prepend/cas with their data block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Storage<'a> {
    /// One of the six storage commands.
    pub command: Command,
    pub key: &'a [u8],
    pub flags: u32,
    pub exptime: i32,
    /// The compare-and-swap unique of `cas` (`None` for the others).
    pub cas: Option<u64>,
    pub noreply: bool,
    /// The data block (its length is the declared `<bytes>`), without the trailing CRLF.
    pub data: &'a [u8],
}

impl<'a> Storage<'a> {
    /// A `set` (what kvlb sends to replicas).
    pub fn set(key: &'a [u8], flags: u32, exptime: i32, data: &'a [u8], noreply: bool) -> Self {
        Storage {
            command: Command::Set,
            key,
            flags,
            exptime,
            cas: None,
            noreply,
            data,
        }
    }
}

/// A meta command (`mg`, `ms`, `md`, `ma`, `mn`, `me`), recognised and routed by key; its
/// flags are kept as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta<'a> {
    /// One of the meta commands.
    pub command: Command,
    /// The key as sent (base64 when [`base64`](Self::base64)); empty for `mn`.
    pub key: &'a [u8],
    /// The flag tokens after the key (and after the data length for `ms`), as sent.
    pub flags: &'a [u8],
    /// `ms`'s data block, without the trailing CRLF.
    pub data: Option<&'a [u8]>,
    /// The `b` flag: the key is base64-encoded.
    pub base64: bool,
    /// The `q` flag: quiet mode (memcached omits the common-case reply).
    pub quiet: bool,
}

impl Meta<'_> {
    /// The key to route by: the key itself, or its base64 decoding (into `buf`) with the
    /// `b` flag. The parser already checked that it decodes.
    pub fn routing_key<'b>(&'b self, buf: &'b mut [u8; MAX_KEY_LEN]) -> &'b [u8] {
        if !self.base64 {
            return self.key;
        }
        match base64_decode(self.key, buf) {
            Some(n) => &buf[..n],
            None => self.key,
        }
    }
}

/// A binary-protocol request (24-byte header, magic 0x80), recognised and routed by key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binary<'a> {
    pub opcode: u8,
    pub data_type: u8,
    pub vbucket: u16,
    pub opaque: u32,
    pub cas: u64,
    pub extras: &'a [u8],
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl Binary<'_> {
    /// Whether this opcode changes the item (anything but the get/getk/gat family is
    /// treated as changing it except noop, version and stat).
    pub fn mutates(&self) -> bool {
        !matches!(
            self.opcode,
            binary::op::GET
                | binary::op::GETQ
                | binary::op::GETK
                | binary::op::GETKQ
                | binary::op::NOOP
                | binary::op::VERSION
                | binary::op::STAT
        )
    }
}

/// One parsed memcached request. Borrowed slices point into the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Retrieval(Retrieval<'a>),
    Storage(Storage<'a>),
    Delete {
        key: &'a [u8],
        noreply: bool,
    },
    /// incr/decr.
    Arithmetic {
        /// [`Command::Incr`] or [`Command::Decr`].
        command: Command,
        key: &'a [u8],
        delta: u64,
        noreply: bool,
    },
    Touch {
        key: &'a [u8],
        exptime: i32,
        noreply: bool,
    },
    Version,
    Verbosity {
        level: u32,
        noreply: bool,
    },
    /// `stats [args]`: the arguments as sent (possibly empty).
    Stats {
        args: &'a [u8],
    },
    FlushAll {
        delay: Option<i32>,
        noreply: bool,
    },
    Quit,
    Meta(Meta<'a>),
    Binary(Binary<'a>),
}

impl<'a> Request<'a> {
    /// Parses one request that must fill `msg` exactly (the datagram after its frame
    /// header): memcached over UDP carries one request per datagram.
    ///
    /// Binary requests (first byte 0x80) are recognised by their header. ASCII command
    /// lines end in `\n` or `\r\n`; data blocks must be exactly the declared size followed
    /// by `\r\n`. Keys are 1–250 bytes without spaces or control characters; numbers must
    /// fit their types (flags u32, exptime i32, bytes ≤ 2³¹−3, cas/delta u64).
    #[inline]
    pub fn parse(msg: &'a [u8]) -> Result<Request<'a>, Error> {
        // The hot path, inlined into the caller: a single-key get.
        if let Some(keys) = simple_get(msg) {
            return Ok(Request::Retrieval(Retrieval {
                command: Command::Get,
                exptime: None,
                keys,
            }));
        }
        Self::parse_general(msg)
    }

    #[inline(never)]
    fn parse_general(msg: &'a [u8]) -> Result<Request<'a>, Error> {
        match msg.first() {
            None => return Err(Error::EmptyRequest),
            Some(&binary::REQUEST_MAGIC) => return parse_binary(msg),
            Some(_) => {}
        }
        let Some((line, rest)) = split_line(msg) else {
            return Err(
                if msg
                    .iter()
                    .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\r')
                {
                    Error::TruncatedRequest
                } else {
                    Error::Garbage
                },
            );
        };
        let mut tokens = Tokens::new(line);
        let word = tokens.next().ok_or(Error::EmptyRequest)?;
        let Some(command) = Command::from_word(word) else {
            return Err(if word.iter().all(|b| b.is_ascii_graphic()) {
                Error::UnknownCommand
            } else {
                Error::Garbage
            });
        };
        let (req, rest) = match command {
            Command::Get | Command::Gets => (
                Request::Retrieval(Retrieval {
                    command,
                    exptime: None,
                    keys: Keys::parse(tokens.remainder())?,
                }),
                rest,
            ),
            Command::Gat | Command::Gats => {
                let exptime = parse_i32(tokens.next().ok_or(Error::BadFormat)?)?;
                let keys = Keys::parse(tokens.remainder())?;
                (
                    Request::Retrieval(Retrieval {
                        command,
                        exptime: Some(exptime),
                        keys,
                    }),
                    rest,
                )
            }
            Command::Set
            | Command::Add
            | Command::Replace
            | Command::Append
            | Command::Prepend
            | Command::Cas => parse_storage(command, tokens, rest)?,
            Command::Delete => (parse_delete(tokens)?, rest),
            Command::Incr | Command::Decr => {
                let n = tokens.left();
                if n != 2 && n != 3 {
                    return Err(Error::BadFormat);
                }
                let key = key_token(tokens.next())?;
                let delta = parse_u64(tokens.next().ok_or(Error::BadFormat)?)?;
                (
                    Request::Arithmetic {
                        command,
                        key,
                        delta,
                        noreply: noreply_token(tokens.next()),
                    },
                    rest,
                )
            }
            Command::Touch => {
                let n = tokens.left();
                if n != 2 && n != 3 {
                    return Err(Error::BadFormat);
                }
                let key = key_token(tokens.next())?;
                let exptime = parse_i32(tokens.next().ok_or(Error::BadFormat)?)?;
                (
                    Request::Touch {
                        key,
                        exptime,
                        noreply: noreply_token(tokens.next()),
                    },
                    rest,
                )
            }
            // Memcached ignores anything after these words.
            Command::Version => (Request::Version, rest),
            Command::Quit => (Request::Quit, rest),
            Command::Verbosity => {
                let n = tokens.left();
                if n != 1 && n != 2 {
                    return Err(Error::BadFormat);
                }
                let level = parse_u32(tokens.next().ok_or(Error::BadFormat)?)?;
                (
                    Request::Verbosity {
                        level,
                        noreply: noreply_token(tokens.next()),
                    },
                    rest,
                )
            }
            Command::Stats => (
                Request::Stats {
                    args: trim_end(tokens.remainder()),
                },
                rest,
            ),
            Command::FlushAll => (parse_flush_all(tokens)?, rest),
            Command::MetaGet
            | Command::MetaSet
            | Command::MetaDelete
            | Command::MetaArithmetic
            | Command::MetaNoop
            | Command::MetaDebug => parse_meta(command, tokens, rest)?,
            Command::Binary => return Err(Error::UnknownCommand),
        };
        if !rest.is_empty() {
            return Err(Error::TrailingData);
        }
        Ok(req)
    }

    /// What kind of request this is.
    #[inline]
    pub fn command(&self) -> Command {
        match self {
            Request::Retrieval(r) => r.command,
            Request::Storage(s) => s.command,
            Request::Delete { .. } => Command::Delete,
            Request::Arithmetic { command, .. } => *command,
            Request::Touch { .. } => Command::Touch,
            Request::Version => Command::Version,
            Request::Verbosity { .. } => Command::Verbosity,
            Request::Stats { .. } => Command::Stats,
            Request::FlushAll { .. } => Command::FlushAll,
            Request::Quit => Command::Quit,
            Request::Meta(m) => m.command,
            Request::Binary(_) => Command::Binary,
        }
    }

    /// The key to route by: the first key of a retrieval, the key of other keyed commands
    /// (a meta command's key as sent: see [`Meta::routing_key`] for base64 keys); `None`
    /// for keyless commands.
    #[inline]
    pub fn key(&self) -> Option<&'a [u8]> {
        match self {
            Request::Retrieval(r) => Some(r.keys.first()),
            Request::Storage(s) => Some(s.key),
            Request::Delete { key, .. }
            | Request::Arithmetic { key, .. }
            | Request::Touch { key, .. } => Some(key),
            Request::Meta(m) if !m.key.is_empty() => Some(m.key),
            Request::Binary(b) if !b.key.is_empty() => Some(b.key),
            _ => None,
        }
    }

    /// Every key of the request, in order (one for keyed commands, none for the others).
    pub fn keys(&self) -> KeyIter<'a> {
        match self {
            Request::Retrieval(r) => r.keys.iter(),
            _ => KeyIter {
                tokens: Tokens::new(self.key().unwrap_or(b"")),
            },
        }
    }

    /// Whether the client asked for no reply at all (ASCII `noreply`). Meta `q` and binary
    /// quiet opcodes only suppress some replies and are not counted here.
    #[inline]
    pub fn noreply(&self) -> bool {
        match self {
            Request::Storage(s) => s.noreply,
            Request::Delete { noreply, .. }
            | Request::Arithmetic { noreply, .. }
            | Request::Touch { noreply, .. }
            | Request::Verbosity { noreply, .. }
            | Request::FlushAll { noreply, .. } => *noreply,
            _ => false,
        }
    }

    /// Whether the request may change the stored item(s) of its key(s): caches must treat
    /// it as a write. gat/gats count (they change the exptime); so do meta get with the `T`
    /// (touch), `N` (vivify) or `E` flag, and every binary opcode but the get family, noop,
    /// version and stat. flush_all changes everything and counts too.
    pub fn mutates(&self) -> bool {
        match self {
            Request::Retrieval(r) => r.exptime.is_some(),
            Request::Storage(_)
            | Request::Delete { .. }
            | Request::Arithmetic { .. }
            | Request::Touch { .. }
            | Request::FlushAll { .. } => true,
            Request::Version
            | Request::Verbosity { .. }
            | Request::Stats { .. }
            | Request::Quit => false,
            Request::Meta(m) => match m.command {
                Command::MetaGet => {
                    Tokens::new(m.flags).any(|f| matches!(f.first(), Some(b'T' | b'N' | b'E')))
                }
                Command::MetaNoop | Command::MetaDebug => false,
                _ => true,
            },
            Request::Binary(b) => b.mutates(),
        }
    }

    /// Writes the request in canonical form (single spaces, `\r\n`).
    pub fn emit_to<S: Sink + ?Sized>(&self, s: &mut S) {
        match self {
            Request::Retrieval(r) => {
                s.put(r.command.name().as_bytes());
                if let Some(e) = r.exptime {
                    s.put(b" ");
                    s.put_i64(i64::from(e));
                }
                for k in r.keys.iter() {
                    s.put(b" ");
                    s.put(k);
                }
                s.put(b"\r\n");
            }
            Request::Storage(st) => {
                s.put(st.command.name().as_bytes());
                s.put(b" ");
                s.put(st.key);
                s.put(b" ");
                s.put_u64(u64::from(st.flags));
                s.put(b" ");
                s.put_i64(i64::from(st.exptime));
                s.put(b" ");
                s.put_u64(st.data.len() as u64);
                if st.command == Command::Cas {
                    s.put(b" ");
                    s.put_u64(st.cas.unwrap_or(0));
                }
                if st.noreply {
                    s.put(b" noreply");
                }
                s.put(b"\r\n");
                s.put(st.data);
                s.put(b"\r\n");
            }
            Request::Delete { key, noreply } => {
                s.put(b"delete ");
                s.put(key);
                put_noreply(s, *noreply);
            }
            Request::Arithmetic {
                command,
                key,
                delta,
                noreply,
            } => {
                s.put(command.name().as_bytes());
                s.put(b" ");
                s.put(key);
                s.put(b" ");
                s.put_u64(*delta);
                put_noreply(s, *noreply);
            }
            Request::Touch {
                key,
                exptime,
                noreply,
            } => {
                s.put(b"touch ");
                s.put(key);
                s.put(b" ");
                s.put_i64(i64::from(*exptime));
                put_noreply(s, *noreply);
            }
            Request::Version => s.put(b"version\r\n"),
            Request::Verbosity { level, noreply } => {
                s.put(b"verbosity ");
                s.put_u64(u64::from(*level));
                put_noreply(s, *noreply);
            }
            Request::Stats { args } => {
                s.put(b"stats");
                if !args.is_empty() {
                    s.put(b" ");
                    s.put(args);
                }
                s.put(b"\r\n");
            }
            Request::FlushAll { delay, noreply } => {
                s.put(b"flush_all");
                if let Some(d) = delay {
                    s.put(b" ");
                    s.put_i64(i64::from(*d));
                }
                put_noreply(s, *noreply);
            }
            Request::Quit => s.put(b"quit\r\n"),
            Request::Meta(m) => {
                s.put(m.command.name().as_bytes());
                if !m.key.is_empty() {
                    s.put(b" ");
                    s.put(m.key);
                }
                if let Some(data) = m.data {
                    s.put(b" ");
                    s.put_u64(data.len() as u64);
                }
                if !m.flags.is_empty() {
                    s.put(b" ");
                    s.put(m.flags);
                }
                s.put(b"\r\n");
                if let Some(data) = m.data {
                    s.put(data);
                    s.put(b"\r\n");
                }
            }
            Request::Binary(b) => binary::emit_request(b, s),
        }
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        let mut c = CountSink::default();
        self.emit_to(&mut c);
        c.0
    }

    /// Writes the request at the start of `buf` and returns its length
    /// ([`Error::NoRoom`] if it does not fit; `buf` content is unspecified then).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut s = SliceSink::new(buf);
        self.emit_to(&mut s);
        s.finish()
    }

    /// The request as bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.buffer_len());
        self.emit_to(&mut v);
        v
    }
}

/// The key of `get <key>\r\n` with one valid key, scanning the bytes once; `None` sends
/// the input down the general path (which also produces the precise error).
#[inline(always)]
pub(crate) fn simple_get(msg: &[u8]) -> Option<Keys<'_>> {
    let rest = msg.strip_prefix(b"get ")?;
    let (key, tail) = rest.split_at(key_end(rest));
    if key.is_empty() || key.len() > MAX_KEY_LEN || !(tail == b"\r\n" || tail == b"\n") {
        return None;
    }
    Some(Keys { raw: key, count: 1 })
}

/// Index of the first byte that cannot be in a key (≤ 0x20 or 0x7f), or `s.len()`.
///
/// Eight bytes at a time (SWAR): for each byte lane, `(x - 0x21) & !x & 0x80` flags bytes
/// below 0x21 and the same test on `x ^ 0x7f` against 1 flags 0x7f. Borrows only carry
/// toward higher lanes, so the lowest flagged lane (little-endian: the first byte) is
/// exact. A key scan byte by byte cost more than the rest of the GET parse.
#[inline]
pub(crate) fn key_end(s: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn flags(x: u64) -> u64 {
        let below = x.wrapping_sub(ONES * 0x21) & !x;
        let y = x ^ (ONES * 0x7f);
        let del = y.wrapping_sub(ONES) & !y;
        (below | del) & HIGH
    }
    let mut i = 0;
    while let Some(chunk) = s.get(i..i + 8) {
        let x = u64::from_le_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        let m = flags(x);
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    if s.len() >= 8 {
        // The last word, overlapping bytes already known to be key bytes (which cannot be
        // flagged: nothing below them borrows).
        let at = s.len() - 8;
        let c = &s[at..];
        let x = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let m = flags(x);
        return if m != 0 {
            at + (m.trailing_zeros() / 8) as usize
        } else {
            s.len()
        };
    }
    while i < s.len() && s[i] > b' ' && s[i] != 0x7f {
        i += 1;
    }
    i
}

#[inline]
fn key_token(tok: Option<&[u8]>) -> Result<&[u8], Error> {
    let key = tok.ok_or(Error::BadFormat)?;
    check_key(key)?;
    Ok(key)
}

/// Memcached's `set_noreply_maybe`: the optional last token means noreply only if it is
/// the word `noreply`; anything else there is ignored.
#[inline]
fn noreply_token(tok: Option<&[u8]>) -> bool {
    tok == Some(b"noreply")
}

fn put_noreply<S: Sink + ?Sized>(s: &mut S, noreply: bool) {
    if noreply {
        s.put(b" noreply");
    }
    s.put(b"\r\n");
}

fn trim_end(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|&c| c != b' ').map_or(0, |e| e + 1);
    &b[..end]
}

/// Splits the data block of `bytes` declared bytes off `rest`: it must be followed by
/// `\r\n`. Returns the data and what follows.
fn data_block(rest: &[u8], bytes: usize) -> Result<(&[u8], &[u8]), Error> {
    let end = bytes.checked_add(2).ok_or(Error::BadDataLength)?;
    if rest.len() < end || &rest[bytes..end] != b"\r\n" {
        return Err(Error::BadDataLength);
    }
    Ok((&rest[..bytes], &rest[end..]))
}

/// Memcached refuses data lengths above `INT_MAX - 2`.
const MAX_DATA_LEN: u32 = i32::MAX as u32 - 2;

fn parse_storage<'a>(
    command: Command,
    mut tokens: Tokens<'a>,
    rest: &'a [u8],
) -> Result<(Request<'a>, &'a [u8]), Error> {
    let fixed = if command == Command::Cas { 5 } else { 4 };
    let n = tokens.left();
    if n != fixed && n != fixed + 1 {
        return Err(Error::BadFormat);
    }
    let key = key_token(tokens.next())?;
    let mut num = || tokens.next().ok_or(Error::BadFormat);
    let flags = parse_u32(num()?)?;
    let exptime = parse_i32(num()?)?;
    let bytes = parse_u32(num()?)?;
    if bytes > MAX_DATA_LEN {
        return Err(Error::BadNumber);
    }
    let cas = if command == Command::Cas {
        Some(parse_u64(num()?)?)
    } else {
        None
    };
    let noreply = noreply_token(tokens.next());
    let (data, rest) = data_block(rest, bytes as usize)?;
    Ok((
        Request::Storage(Storage {
            command,
            key,
            flags,
            exptime,
            cas,
            noreply,
            data,
        }),
        rest,
    ))
}

/// `delete <key> [0] [noreply]`: the legacy hold time is accepted only as `0`, as in
/// memcached's `process_delete_command`.
fn parse_delete(mut tokens: Tokens<'_>) -> Result<Request<'_>, Error> {
    let n = tokens.left();
    let key = key_token(tokens.next())?;
    let (a, b) = (tokens.next(), tokens.next());
    let noreply = match (n, a, b) {
        (1, _, _) => false,
        (2, Some(b"0"), _) => false,
        (2, Some(b"noreply"), _) => true,
        (3, Some(b"0"), Some(b"noreply")) => true,
        _ => return Err(Error::BadFormat),
    };
    Ok(Request::Delete { key, noreply })
}

/// `flush_all [delay] [noreply]`.
fn parse_flush_all(tokens: Tokens<'_>) -> Result<Request<'_>, Error> {
    let mut args: [&[u8]; 2] = [b""; 2];
    let mut n = 0;
    for t in tokens {
        if n == 2 {
            return Err(Error::BadFormat);
        }
        args[n] = t;
        n += 1;
    }
    let noreply = n > 0 && args[n - 1] == b"noreply";
    let delay_tokens = if noreply { n - 1 } else { n };
    // With two tokens and no noreply, memcached ignores the second.
    let delay = if delay_tokens == 0 {
        None
    } else {
        Some(parse_i32(args[0])?)
    };
    Ok(Request::FlushAll { delay, noreply })
}

fn parse_meta<'a>(
    command: Command,
    mut tokens: Tokens<'a>,
    rest: &'a [u8],
) -> Result<(Request<'a>, &'a [u8]), Error> {
    let key: &[u8] = if command == Command::MetaNoop {
        b""
    } else {
        key_token(tokens.next())?
    };
    let data_len = if command == Command::MetaSet {
        let n = parse_u32(tokens.next().ok_or(Error::BadFormat)?)?;
        if n > MAX_DATA_LEN {
            return Err(Error::BadNumber);
        }
        Some(n as usize)
    } else {
        None
    };
    let flags = trim_end(tokens.remainder());
    let (mut base64, mut quiet) = (false, false);
    let mut seen = 0u128;
    for flag in Tokens::new(flags) {
        let first = flag[0];
        if !flag.iter().all(|b| b.is_ascii_graphic()) || !first.is_ascii_alphabetic() {
            return Err(Error::BadFormat);
        }
        // memcached: "CLIENT_ERROR duplicate flag".
        let bit = 1u128 << first;
        if seen & bit != 0 {
            return Err(Error::BadFormat);
        }
        seen |= bit;
        match first {
            b'b' => base64 = true,
            b'q' => quiet = true,
            _ => {}
        }
    }
    if base64 {
        let mut buf = [0u8; MAX_KEY_LEN];
        if key.is_empty() || base64_decode(key, &mut buf).is_none() {
            return Err(Error::IllegalKey);
        }
    }
    let (data, rest) = match data_len {
        Some(n) => {
            let (d, r) = data_block(rest, n)?;
            (Some(d), r)
        }
        None => (None, rest),
    };
    Ok((
        Request::Meta(Meta {
            command,
            key,
            flags,
            data,
            base64,
            quiet,
        }),
        rest,
    ))
}

fn parse_binary(msg: &[u8]) -> Result<Request<'_>, Error> {
    let h = binary::Header::parse(msg)?;
    let body = &msg[binary::HEADER_LEN..];
    let total = h.body_len as usize;
    if body.len() < total {
        return Err(Error::TruncatedRequest);
    }
    if body.len() > total {
        return Err(Error::TrailingData);
    }
    let ext = usize::from(h.extras_len);
    let keylen = usize::from(h.key_len);
    if ext + keylen > total {
        return Err(Error::BadBinary);
    }
    if keylen > MAX_KEY_LEN {
        return Err(Error::KeyTooLong);
    }
    Ok(Request::Binary(Binary {
        opcode: h.opcode,
        data_type: h.data_type,
        vbucket: h.vbucket_or_status,
        opaque: h.opaque,
        cas: h.cas,
        extras: &body[..ext],
        key: &body[ext..ext + keylen],
        value: &body[ext + keylen..total],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Result<Request<'_>, Error> {
        Request::parse(s)
    }

    fn roundtrip(s: &[u8]) {
        let r = parse(s).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(s)));
        let bytes = r.to_vec();
        assert_eq!(bytes.len(), r.buffer_len());
        assert_eq!(parse(&bytes).unwrap(), r);
    }

    #[test]
    fn key_end_matches_bytewise_scan() {
        let naive = |s: &[u8]| {
            s.iter()
                .position(|&b| b <= b' ' || b == 0x7f)
                .unwrap_or(s.len())
        };
        let mut buf = [b'k'; 40];
        for len in 0..buf.len() {
            for at in 0..=len {
                for delim in [0u8, b'\t', b'\r', b' ', 0x7f, b'!', 0x80, 0xff, 0x20, 0x21] {
                    buf.fill(b'k');
                    if at < len {
                        buf[at] = delim;
                        // A second delimiter later must not hide the first.
                        if at + 3 < len {
                            buf[at + 3] = b' ';
                        }
                    }
                    assert_eq!(
                        key_end(&buf[..len]),
                        naive(&buf[..len]),
                        "{len} {at} {delim}"
                    );
                }
            }
        }
        // High bytes (UTF-8) are key bytes.
        assert_eq!(key_end("ключ-ключ-ключ\r\n".as_bytes()), 26);
    }

    #[test]
    fn get_fast_and_slow_paths_agree() {
        let fast = parse(b"get foo\r\n").unwrap();
        assert_eq!(fast.command(), Command::Get);
        assert_eq!(fast.key(), Some(&b"foo"[..]));
        assert_eq!(parse(b"get  foo \r\n").unwrap(), fast);
        assert_eq!(parse(b"get foo\n").unwrap(), fast);
        assert!(!fast.mutates());
        assert!(!fast.noreply());
    }

    #[test]
    fn multi_get() {
        let r = parse(b"gets a bb  ccc\r\n").unwrap();
        let Request::Retrieval(ret) = r else { panic!() };
        assert_eq!(ret.command, Command::Gets);
        assert_eq!(ret.keys.len(), 3);
        let keys: Vec<&[u8]> = r.keys().collect();
        assert_eq!(keys, [&b"a"[..], b"bb", b"ccc"]);
        assert_eq!(r.key(), Some(&b"a"[..]));
        assert_eq!(r.to_vec(), b"gets a bb ccc\r\n");
        let r = parse(b"gat 100 a b\r\n").unwrap();
        let Request::Retrieval(ret) = r else { panic!() };
        assert_eq!(ret.exptime, Some(100));
        assert_eq!(ret.keys.len(), 2);
        assert!(r.mutates());
        roundtrip(b"gats -1 x\r\n");
    }

    #[test]
    fn retrieval_errors() {
        assert_eq!(parse(b"get\r\n"), Err(Error::BadFormat));
        assert_eq!(parse(b"get \r\n"), Err(Error::BadFormat));
        assert_eq!(parse(b"gat a b\r\n"), Err(Error::BadNumber));
        assert_eq!(parse(b"gat 10\r\n"), Err(Error::BadFormat));
        let long = [b"get ".as_slice(), &[b'k'; 251], b"\r\n"].concat();
        assert_eq!(parse(&long), Err(Error::KeyTooLong));
        let ok = [b"get ".as_slice(), &[b'k'; 250], b"\r\n"].concat();
        assert!(parse(&ok).is_ok());
        // Control characters are key bytes, as in memcached (memaslap sends them); CR and
        // NUL are not.
        let keys = |m: &[u8]| match parse(m) {
            Ok(Request::Retrieval(r)) => r.keys.iter().map(<[u8]>::to_vec).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(keys(b"get a\x01b\r\n"), [b"a\x01b".to_vec()]);
        assert_eq!(keys(b"get a\tb\r\n"), [b"a\tb".to_vec()]);
        assert_eq!(keys(b"get a b\x7f\r\n"), [b"a".to_vec(), b"b\x7f".to_vec()]);
        assert_eq!(parse(b"get a\rb\r\n"), Err(Error::IllegalKey));
        assert_eq!(parse(b"get a\0b\r\n"), Err(Error::IllegalKey));
        assert_eq!(parse(b"get a"), Err(Error::TruncatedRequest));
        assert_eq!(parse(b"get a\r\nget b\r\n"), Err(Error::TrailingData));
    }

    #[test]
    fn storage() {
        let r = parse(b"set foo 5 100 3\r\nbar\r\n").unwrap();
        assert_eq!(
            r,
            Request::Storage(Storage {
                command: Command::Set,
                key: b"foo",
                flags: 5,
                exptime: 100,
                cas: None,
                noreply: false,
                data: b"bar",
            })
        );
        assert!(r.mutates());
        let r = parse(b"cas foo 0 0 3 77 noreply\r\nbar\r\n").unwrap();
        let Request::Storage(s) = r else { panic!() };
        assert_eq!(s.cas, Some(77));
        assert!(r.noreply());
        for s in [
            &b"set k 0 0 0\r\n\r\n"[..],
            b"add k 4294967295 -1 2 noreply\r\nab\r\n",
            b"replace k 1 2 2\r\n\r\n\r\n",
            b"append k 0 0 1\r\nx\r\n",
            b"prepend k 0 0 1\r\nx\r\n",
            b"cas k 0 0 1 18446744073709551615\r\nx\r\n",
        ] {
            roundtrip(s);
        }
        // Data may contain anything, CRLF included.
        let r = parse(b"set k 0 0 4\r\n\r\n\r\n\r\n").unwrap();
        let Request::Storage(s) = r else { panic!() };
        assert_eq!(s.data, b"\r\n\r\n");
        // An unknown word in the noreply position is ignored, as memcached does.
        let Request::Storage(s) = parse(b"set k 0 0 1 junk\r\nx\r\n").unwrap() else {
            panic!()
        };
        assert!(!s.noreply);
    }

    #[test]
    fn storage_errors() {
        assert_eq!(parse(b"set k 0 0\r\nx\r\n"), Err(Error::BadFormat));
        assert_eq!(
            parse(b"set k 0 0 1 noreply x\r\nx\r\n"),
            Err(Error::BadFormat)
        );
        assert_eq!(parse(b"cas k 0 0 1\r\nx\r\n"), Err(Error::BadFormat));
        assert_eq!(parse(b"set k 0 0 2\r\nx\r\n"), Err(Error::BadDataLength));
        assert_eq!(parse(b"set k 0 0 1\r\nxy\r\n"), Err(Error::BadDataLength));
        assert_eq!(parse(b"set k 0 0 1\r\nx"), Err(Error::BadDataLength));
        assert_eq!(
            parse(b"set k 0 0 1\r\nx\r\nget a\r\n"),
            Err(Error::TrailingData)
        );
        assert_eq!(parse(b"set k 0 0 1\r\nx\n"), Err(Error::BadDataLength));
        assert_eq!(
            parse(b"set k 4294967296 0 1\r\nx\r\n"),
            Err(Error::BadNumber)
        );
        assert_eq!(
            parse(b"set k 0 2147483648 1\r\nx\r\n"),
            Err(Error::BadNumber)
        );
        assert_eq!(parse(b"set k 0 0 -1\r\nx\r\n"), Err(Error::BadNumber));
        assert_eq!(
            parse(b"set k 0 0 2147483646\r\nx\r\n"),
            Err(Error::BadNumber)
        );
        assert_eq!(
            parse(b"set k 0 0 2147483645\r\nx\r\n"),
            Err(Error::BadDataLength)
        );
        assert_eq!(parse(b"cas k 0 0 1 -5\r\nx\r\n"), Err(Error::BadNumber));
        assert_eq!(parse(b"set k\x00 0 0 1\r\nx\r\n"), Err(Error::IllegalKey));
    }

    #[test]
    fn other_commands() {
        assert_eq!(
            parse(b"delete k\r\n"),
            Ok(Request::Delete {
                key: b"k",
                noreply: false
            })
        );
        assert_eq!(
            parse(b"delete k 0 noreply\r\n"),
            Ok(Request::Delete {
                key: b"k",
                noreply: true
            })
        );
        assert!(parse(b"delete k noreply\r\n").unwrap().noreply());
        assert!(!parse(b"delete k 0\r\n").unwrap().noreply());
        assert_eq!(parse(b"delete k 5\r\n"), Err(Error::BadFormat));
        assert_eq!(parse(b"delete\r\n"), Err(Error::BadFormat));
        assert_eq!(parse(b"delete k 0 noreply x\r\n"), Err(Error::BadFormat));

        assert_eq!(
            parse(b"incr k 18446744073709551615\r\n"),
            Ok(Request::Arithmetic {
                command: Command::Incr,
                key: b"k",
                delta: u64::MAX,
                noreply: false
            })
        );
        assert_eq!(parse(b"decr k -1\r\n"), Err(Error::BadNumber));
        assert_eq!(parse(b"incr k\r\n"), Err(Error::BadFormat));
        assert_eq!(
            parse(b"touch k -1 noreply\r\n"),
            Ok(Request::Touch {
                key: b"k",
                exptime: -1,
                noreply: true
            })
        );
        assert_eq!(parse(b"version\r\n"), Ok(Request::Version));
        assert_eq!(parse(b"quit\r\n"), Ok(Request::Quit));
        assert_eq!(
            parse(b"verbosity 1 noreply\r\n"),
            Ok(Request::Verbosity {
                level: 1,
                noreply: true
            })
        );
        assert_eq!(parse(b"verbosity x\r\n"), Err(Error::BadNumber));
        assert_eq!(parse(b"stats\r\n"), Ok(Request::Stats { args: b"" }));
        assert_eq!(
            parse(b"stats  slabs \r\n"),
            Ok(Request::Stats { args: b"slabs" })
        );
        assert_eq!(
            parse(b"flush_all\r\n"),
            Ok(Request::FlushAll {
                delay: None,
                noreply: false
            })
        );
        assert_eq!(
            parse(b"flush_all noreply\r\n"),
            Ok(Request::FlushAll {
                delay: None,
                noreply: true
            })
        );
        assert_eq!(
            parse(b"flush_all 10 noreply\r\n"),
            Ok(Request::FlushAll {
                delay: Some(10),
                noreply: true
            })
        );
        assert_eq!(parse(b"flush_all x\r\n"), Err(Error::BadNumber));
        assert_eq!(parse(b"flush_all 1 2 3\r\n"), Err(Error::BadFormat));
        for s in [
            &b"delete k noreply\r\n"[..],
            b"incr k 1 noreply\r\n",
            b"decr k 0\r\n",
            b"touch k 5\r\n",
            b"verbosity 0\r\n",
            b"stats items\r\n",
            b"flush_all -5\r\n",
            b"version\r\n",
            b"quit\r\n",
        ] {
            roundtrip(s);
        }
    }

    #[test]
    fn unknown_and_garbage() {
        assert_eq!(parse(b""), Err(Error::EmptyRequest));
        assert_eq!(parse(b"\r\n"), Err(Error::EmptyRequest));
        assert_eq!(parse(b"   \r\n"), Err(Error::EmptyRequest));
        assert_eq!(parse(b"bogus\r\n"), Err(Error::UnknownCommand));
        assert_eq!(parse(b"GET a\r\n"), Err(Error::UnknownCommand));
        assert_eq!(parse(b"\x00\x01\x02\r\n"), Err(Error::Garbage));
        assert_eq!(parse(b"\xff\xfe"), Err(Error::Garbage));
        assert_eq!(parse(b"get foo"), Err(Error::TruncatedRequest));
    }

    #[test]
    fn meta() {
        let r = parse(b"mg foo v f t\r\n").unwrap();
        assert_eq!(r.command(), Command::MetaGet);
        assert_eq!(r.key(), Some(&b"foo"[..]));
        let Request::Meta(m) = r else { panic!() };
        assert_eq!(m.flags, b"v f t");
        assert!(!r.mutates());
        assert!(parse(b"mg foo v T30\r\n").unwrap().mutates());
        let r = parse(b"ms foo 3 T0 q\r\nbar\r\n").unwrap();
        let Request::Meta(m) = r else { panic!() };
        assert_eq!(m.data, Some(&b"bar"[..]));
        assert!(m.quiet);
        assert!(r.mutates());
        assert_eq!(parse(b"mn\r\n").unwrap().key(), None);
        let r = parse(b"md Zm9v b q\r\n").unwrap();
        let Request::Meta(m) = r else { panic!() };
        assert!(m.base64);
        let mut buf = [0u8; MAX_KEY_LEN];
        assert_eq!(m.routing_key(&mut buf), b"foo");
        assert_eq!(
            parse(b"ma k\r\n").unwrap().command(),
            Command::MetaArithmetic
        );
        assert_eq!(parse(b"me k\r\n").unwrap().command(), Command::MetaDebug);
        for s in [
            &b"mg foo v f t\r\n"[..],
            b"ms foo 3 T0 q\r\nbar\r\n",
            b"ms foo 0\r\n\r\n",
            b"md Zm9v b q\r\n",
            b"mn\r\n",
            b"ma k N0 J13\r\n",
        ] {
            roundtrip(s);
        }
        assert_eq!(parse(b"mg\r\n"), Err(Error::BadFormat));
        assert_eq!(parse(b"mg foo v v\r\n"), Err(Error::BadFormat));
        assert_eq!(parse(b"mg foo 1\r\n"), Err(Error::BadFormat));
        assert_eq!(parse(b"mg Zm9 b\r\n"), Err(Error::IllegalKey));
        assert_eq!(parse(b"ms foo\r\nbar\r\n"), Err(Error::BadFormat));
        assert_eq!(parse(b"ms foo 4\r\nbar\r\n"), Err(Error::BadDataLength));
        assert_eq!(parse(b"mx foo\r\n"), Err(Error::UnknownCommand));
    }

    #[test]
    fn binary() {
        // GETK "foo": magic, opcode 0x0c, keylen 3, extlen 0, body 3, opaque 0xdeadbeef.
        let mut msg = vec![
            0x80, 0x0c, 0, 3, 0, 0, 0, 0, 0, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef,
        ];
        msg.extend_from_slice(&[0; 8]);
        msg.extend_from_slice(b"foo");
        let r = parse(&msg).unwrap();
        assert_eq!(r.command(), Command::Binary);
        assert_eq!(r.key(), Some(&b"foo"[..]));
        assert!(!r.mutates());
        let Request::Binary(b) = r else { panic!() };
        assert_eq!(b.opcode, 0x0c);
        assert_eq!(b.opaque, 0xdeadbeef);
        assert_eq!(r.to_vec(), msg);
        // SET with 8 bytes of extras and a value.
        let mut set = vec![0x80, 0x01, 0, 1, 8, 0, 0, 0, 0, 0, 0, 11, 0, 0, 0, 0];
        set.extend_from_slice(&[0; 8]);
        set.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
        set.extend_from_slice(b"kvv");
        let r = parse(&set).unwrap();
        let Request::Binary(b) = r else { panic!() };
        assert_eq!(b.key, b"k");
        assert_eq!(b.value, b"vv");
        assert!(r.mutates());
        roundtrip(&set);
        // Lengths that do not add up.
        assert_eq!(parse(&msg[..20]), Err(Error::TruncatedRequest));
        assert_eq!(parse(&msg[..26]), Err(Error::TruncatedRequest));
        let mut long = msg.clone();
        long.push(0);
        assert_eq!(parse(&long), Err(Error::TrailingData));
        let mut bad = msg.clone();
        bad[3] = 4;
        assert_eq!(parse(&bad), Err(Error::BadBinary));
        // Never parsed as ASCII, even if it looks like text after the magic.
        let mut fake = b"\x80get foo\r\n".to_vec();
        fake.resize(30, b' ');
        assert!(matches!(
            parse(&fake),
            Err(Error::BadBinary | Error::TruncatedRequest | Error::TrailingData)
        ));
    }

    #[test]
    fn emit_into_slices() {
        let r = parse(b"set foo 5 100 3 noreply\r\nbar\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = r.emit(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"set foo 5 100 3 noreply\r\nbar\r\n");
        assert_eq!(r.emit(&mut buf[..n - 1]), Err(Error::NoRoom));
    }

    #[test]
    fn command_names() {
        let mut seen = std::collections::HashSet::new();
        for c in Command::ALL {
            assert!(seen.insert(c.name()));
            if *c != Command::Binary {
                assert_eq!(Command::from_word(c.name().as_bytes()), Some(*c));
            }
        }
    }
}
