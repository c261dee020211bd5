//! Memcached text over a byte stream: where each client request and each backend reply
//! ends.
//!
//! Owns: finding message boundaries in a TCP stream, nothing else. A request or a reply may
//! arrive split over any number of reads and several may arrive in one; both framers look
//! only at the bytes given and say "complete, this long", "not yet", or why the stream
//! cannot go on. The grammar itself stays in [`crate::proto`]: a framed request is checked
//! by [`Request::parse`](crate::proto::Request::parse), and replies are read item by item
//! with [`Response::parse`].

use crate::proto::{self, MetaStatus, Response};

/// memcached's default `-I` (largest item): 1 MiB.
pub const DEFAULT_MAX_ITEM: usize = 1 << 20;
/// Longest command line kvlb waits for (memcached allows long `get` lines; 250-byte keys,
/// a few hundred of them).
pub const MAX_LINE: usize = 64 * 1024;

/// Where the next client request in a stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFrame {
    /// A whole request: `len` bytes, its command line `line_len` of them (with the `\n`),
    /// and, for storage commands, a data block of `data_len` bytes plus its CRLF.
    Complete {
        len: usize,
        line_len: usize,
        data_len: Option<usize>,
    },
    /// More bytes are needed.
    Incomplete,
    /// A storage command whose data block is larger than the largest item: memcached
    /// answers `SERVER_ERROR object too large for cache` and swallows the block (its
    /// `data_len` bytes and CRLF after the `line_len`-byte line).
    TooLarge { line_len: usize, data_len: usize },
    /// No end of line within [`MAX_LINE`] bytes: memcached closes such a connection.
    LineTooLong,
    /// A binary-protocol request (magic 0x80), which kvlb does not proxy over TCP.
    Binary,
}

/// The position of the data-length token of a storage command (counted from the command
/// word), if `cmd` carries a data block.
fn data_len_token(cmd: &[u8]) -> Option<usize> {
    match cmd {
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => Some(4),
        b"ms" => Some(2),
        _ => None,
    }
}

/// Frames the next request at the start of `buf`.
pub fn frame_request(buf: &[u8], max_item: usize) -> RequestFrame {
    if buf.first() == Some(&proto::binary::REQUEST_MAGIC) {
        return RequestFrame::Binary;
    }
    let scan = &buf[..buf.len().min(MAX_LINE)];
    let Some(nl) = scan.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_LINE {
            RequestFrame::LineTooLong
        } else {
            RequestFrame::Incomplete
        };
    };
    let line_len = nl + 1;
    let line = &buf[..nl];
    let mut tokens = line
        .split(|&b| b == b' ' || b == b'\r')
        .filter(|t| !t.is_empty());
    let data_len = tokens
        .next()
        .and_then(data_len_token)
        .and_then(|at| tokens.nth(at - 1))
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.parse::<usize>().ok());
    match data_len {
        // A line whose length token is missing or not a number: the parser says why.
        None => RequestFrame::Complete {
            len: line_len,
            line_len,
            data_len: None,
        },
        Some(n) if n > max_item => RequestFrame::TooLarge {
            line_len,
            data_len: n,
        },
        Some(n) => {
            let len = line_len + n + 2;
            if buf.len() < len {
                RequestFrame::Incomplete
            } else {
                RequestFrame::Complete {
                    len,
                    line_len,
                    data_len: Some(n),
                }
            }
        }
    }
}

/// What ends a backend's reply to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyEnd {
    /// Its first terminal item: `END` after `VALUE`s or `STAT`s, a status line, a number,
    /// a meta reply (with its value), an error line.
    Terminal,
    /// The `MN` of an `mn` kvlb sent after a request that may not answer (`noreply`, quiet
    /// meta): everything up to it, possibly nothing, is that request's reply.
    Noop,
}

/// The length of the reply at the start of `buf` if it is whole, `None` if more bytes are
/// needed, or the parser's error if the bytes are not a memcached reply.
pub fn reply_len(buf: &[u8], end: ReplyEnd) -> Result<Option<usize>, proto::Error> {
    let mut at = 0;
    loop {
        if at == buf.len() {
            return Ok(None);
        }
        match Response::parse(&buf[at..]) {
            Ok((item, rest)) => {
                at = buf.len() - rest.len();
                let done = match end {
                    ReplyEnd::Terminal => item.is_terminal(),
                    ReplyEnd::Noop => matches!(
                        item,
                        Response::Meta {
                            status: MetaStatus::Mn,
                            ..
                        }
                    ),
                };
                if done {
                    return Ok(Some(at));
                }
            }
            Err(proto::Error::TruncatedResponse) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Frames every request of `stream`, fed in the chunks `cuts` make, as a connection
    /// does: bytes appended to a buffer, whole requests taken from its front.
    fn requests_in_chunks(stream: &[u8], cuts: &[usize]) -> Vec<Result<Vec<u8>, RequestFrame>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut from = 0;
        for c in cuts {
            buf.extend_from_slice(&stream[from..c]);
            from = c;
            loop {
                match frame_request(&buf, 4096) {
                    RequestFrame::Complete { len, .. } => {
                        out.push(Ok(buf[..len].to_vec()));
                        buf.drain(..len);
                    }
                    RequestFrame::Incomplete => break,
                    other => {
                        out.push(Err(other));
                        return out;
                    }
                }
            }
        }
        out
    }

    fn replies_in_chunks(stream: &[u8], ends: &[ReplyEnd], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut from = 0;
        for c in cuts {
            buf.extend_from_slice(&stream[from..c]);
            from = c;
            while out.len() < ends.len() {
                match reply_len(&buf, ends[out.len()]).unwrap() {
                    Some(n) => {
                        out.push(buf[..n].to_vec());
                        buf.drain(..n);
                    }
                    None => break,
                }
            }
        }
        out
    }

    #[test]
    fn requests_with_and_without_data_blocks() {
        let s =
            b"get a b\r\nset k 1 2 3\r\nabc\r\nms k 2 T0\r\nxy\r\ndelete k\nincr n 1 noreply\r\n";
        let got = requests_in_chunks(s, &[]);
        let want: Vec<Result<Vec<u8>, RequestFrame>> = [
            &b"get a b\r\n"[..],
            b"set k 1 2 3\r\nabc\r\n",
            b"ms k 2 T0\r\nxy\r\n",
            b"delete k\n",
            b"incr n 1 noreply\r\n",
        ]
        .iter()
        .map(|r| Ok(r.to_vec()))
        .collect();
        assert_eq!(got, want);
        // Every framed request parses.
        for r in got {
            proto::Request::parse(&r.unwrap()).unwrap();
        }
    }

    #[test]
    fn a_data_block_is_taken_whole_even_when_it_holds_a_newline() {
        let s = b"set k 0 0 5\r\na\r\nb\n\r\nget k\r\n";
        assert_eq!(
            frame_request(s, 100),
            RequestFrame::Complete {
                len: 20,
                line_len: 13,
                data_len: Some(5)
            }
        );
        assert_eq!(frame_request(&s[..19], 100), RequestFrame::Incomplete);
    }

    #[test]
    fn limits_and_binary() {
        assert_eq!(
            frame_request(b"set k 0 0 5000\r\n", 4096),
            RequestFrame::TooLarge {
                line_len: 16,
                data_len: 5000
            }
        );
        assert_eq!(
            frame_request(&vec![b'a'; MAX_LINE], 4096),
            RequestFrame::LineTooLong
        );
        assert_eq!(frame_request(&[0x80, 0, 0], 4096), RequestFrame::Binary);
        // A bad length is the parser's to report: the line alone is framed.
        assert_eq!(
            frame_request(b"set k 0 0 -1\r\n", 4096),
            RequestFrame::Complete {
                len: 14,
                line_len: 14,
                data_len: None
            }
        );
    }

    #[test]
    fn replies_end_at_their_terminal_item_or_at_mn() {
        let s = b"VALUE a 0 3\r\nEND\r\nEND\r\nSTORED\r\nSTAT pid 1\r\nSTAT x y\r\nEND\r\nMN\r\nSERVER_ERROR oops\r\nMN\r\nVA 2 f0\r\nhi\r\n";
        let ends = [
            ReplyEnd::Terminal,
            ReplyEnd::Terminal,
            ReplyEnd::Terminal,
            ReplyEnd::Noop,
            ReplyEnd::Noop,
            ReplyEnd::Terminal,
        ];
        let got = replies_in_chunks(s, &ends, &[]);
        let want: Vec<&[u8]> = vec![
            b"VALUE a 0 3\r\nEND\r\nEND\r\n",
            b"STORED\r\n",
            b"STAT pid 1\r\nSTAT x y\r\nEND\r\n",
            b"MN\r\n",
            b"SERVER_ERROR oops\r\nMN\r\n",
            b"VA 2 f0\r\nhi\r\n",
        ];
        assert_eq!(got, want);
        assert!(reply_len(b"BOGUS\r\n", ReplyEnd::Terminal).is_err());
    }

    fn request_strategy() -> impl Strategy<Value = Vec<u8>> {
        let key = "[a-z0-9]{1,12}";
        prop_oneof![
            proptest::collection::vec(key, 1..4)
                .prop_map(|ks| format!("get {}\r\n", ks.join(" ")).into_bytes()),
            (key, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(k, v)| {
                let mut r = format!("set {k} 0 0 {}\r\n", v.len()).into_bytes();
                r.extend_from_slice(&v);
                r.extend_from_slice(b"\r\n");
                r
            }),
            (key, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(k, v)| {
                let mut r = format!("ms {k} {} T0 q\r\n", v.len()).into_bytes();
                r.extend_from_slice(&v);
                r.extend_from_slice(b"\r\n");
                r
            }),
            key.prop_map(|k| format!("delete {k} noreply\r\n").into_bytes()),
            key.prop_map(|k| format!("mg {k} v\n").into_bytes()),
        ]
    }

    fn reply_strategy() -> impl Strategy<Value = (Vec<u8>, ReplyEnd)> {
        let key = "[a-z0-9]{1,12}";
        prop_oneof![
            proptest::collection::vec((key, proptest::collection::vec(any::<u8>(), 0..300)), 0..3)
                .prop_map(|items| {
                    let mut r = Vec::new();
                    for (k, v) in items {
                        r.extend_from_slice(format!("VALUE {k} 7 {}\r\n", v.len()).as_bytes());
                        r.extend_from_slice(&v);
                        r.extend_from_slice(b"\r\n");
                    }
                    r.extend_from_slice(b"END\r\n");
                    (r, ReplyEnd::Terminal)
                }),
            Just((b"STORED\r\n".to_vec(), ReplyEnd::Terminal)),
            Just((b"12345\r\n".to_vec(), ReplyEnd::Terminal)),
            Just((b"MN\r\n".to_vec(), ReplyEnd::Noop)),
            Just((b"HD\r\nMN\r\n".to_vec(), ReplyEnd::Noop)),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(|v| {
                let mut r = format!("VA {} f0\r\n", v.len()).into_bytes();
                r.extend_from_slice(&v);
                r.extend_from_slice(b"\r\n");
                (r, ReplyEnd::Terminal)
            }),
        ]
    }

    proptest! {
        /// However a stream of requests is cut into reads, the same requests come out.
        #[test]
        fn any_split_of_a_request_stream_frames_the_same_requests(
            reqs in proptest::collection::vec(request_strategy(), 1..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let stream: Vec<u8> = reqs.concat();
            let want: Vec<Result<Vec<u8>, RequestFrame>> = reqs.into_iter().map(Ok).collect();
            prop_assert_eq!(requests_in_chunks(&stream, &[]), want.clone());
            prop_assert_eq!(requests_in_chunks(&stream, &cuts), want);
        }

        /// However a stream of replies is cut into reads, the same replies come out.
        #[test]
        fn any_split_of_a_reply_stream_frames_the_same_replies(
            replies in proptest::collection::vec(reply_strategy(), 1..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let stream: Vec<u8> = replies.iter().flat_map(|(r, _)| r.clone()).collect();
            let ends: Vec<ReplyEnd> = replies.iter().map(|(_, e)| *e).collect();
            let want: Vec<Vec<u8>> = replies.into_iter().map(|(r, _)| r).collect();
            prop_assert_eq!(replies_in_chunks(&stream, &ends, &cuts), want);
        }

        /// Arbitrary bytes never panic either framer.
        #[test]
        fn framers_take_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = frame_request(&bytes, 256);
            let _ = reply_len(&bytes, ReplyEnd::Terminal);
            let _ = reply_len(&bytes, ReplyEnd::Noop);
        }
    }
}
