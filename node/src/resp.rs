//! RESP, the Redis protocol, for client connections: parsing requests with
//! every limit named, and encoding replies.
//!
//! A request is an array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`)
//! or an inline command (`GET k\r\n`). The parser never allocates a
//! declared length up front, refuses lengths past the limits before reading
//! their bytes, parses integers strictly (no sign tricks, no overflow), and
//! takes no nested arrays. Before a client authenticates, only a few small
//! arguments are accepted (as Redis does). A `ProtocolError` means the
//! stream can no longer be trusted: reply with it and close.
//!
//! A connection parses with a [`RequestParser`], which remembers how far it
//! got into a request that has not all arrived: each argument's header is
//! read once however many reads the request takes (linear, where starting
//! over on every read was quadratic in the arguments), and the bytes held
//! for one unfinished request are capped (`client-query-buffer-limit`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::limits;

/// Limits of one client's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespLimits {
    /// Longest bulk string (Redis's `proto-max-bulk-len`).
    pub bulk_len_max: usize,
    /// Most arguments in one request.
    pub args_max: usize,
    /// Longest inline command line.
    pub inline_len_max: usize,
    /// Before authentication: most arguments, and longest argument.
    pub unauthenticated_args_max: usize,
    pub unauthenticated_bulk_len_max: usize,
    /// Most bytes held for requests not yet whole (Redis's
    /// `client-query-buffer-limit`): past it, the client is closed.
    pub query_buffer_max: usize,
}

impl Default for RespLimits {
    fn default() -> Self {
        RespLimits {
            bulk_len_max: limits::BULK_LEN_MAX,
            args_max: limits::ARGS_MAX,
            inline_len_max: limits::INLINE_LEN_MAX,
            unauthenticated_args_max: limits::UNAUTHENTICATED_ARGS_MAX,
            unauthenticated_bulk_len_max: limits::UNAUTHENTICATED_BULK_LEN_MAX,
            query_buffer_max: limits::QUERY_BUFFER_BYTES_MAX,
        }
    }
}

/// Why a request stream was refused. The message is what Redis says in the
/// same case, after `-ERR Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(message.into()))
}

/// Takes one whole request off the front of `buf`: `Ok(None)` if it is not
/// all there yet (the bytes stay), the arguments otherwise. An empty inline
/// line yields an empty request, which callers skip. Starts from scratch
/// on every call: a connection uses a [`RequestParser`].
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &RespLimits,
    authenticated: bool,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    RequestParser::default().parse(buf, limits, authenticated)
}

/// One connection's request parser: [`parse_request`] that resumes a
/// request that had not all arrived where it stopped.
#[derive(Debug, Default)]
pub struct RequestParser {
    partial: Option<Partial>,
    /// Argument headers and inline bytes examined, for tests of linearity.
    work: u64,
}

/// How far the parser got into a request not all there yet. Positions are
/// offsets into the input buffer, which only grows at its end until the
/// request is taken off its front.
#[derive(Debug)]
enum Partial {
    Multibulk {
        count: usize,
        bulk_max: usize,
        authenticated: bool,
        /// Where the next argument's header starts.
        at: usize,
        spans: Vec<(usize, usize)>,
    },
    /// An inline line: bytes already searched for its newline.
    Inline { searched: usize },
}

impl RequestParser {
    /// Takes one whole request off the front of `buf`, as
    /// [`parse_request`]; a request held past `limits.query_buffer_max`
    /// bytes is an error.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: &RespLimits,
        authenticated: bool,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let result = if buf[0] == b'*' {
            self.parse_multibulk(buf, limits, authenticated)
        } else {
            self.parse_inline(buf, limits)
        };
        match result {
            Ok(None) if buf.len() > limits.query_buffer_max => {
                self.partial = None;
                err("query buffer limit reached (client-query-buffer-limit)")
            }
            Ok(None) => Ok(None),
            done => {
                self.partial = None;
                done
            }
        }
    }

    /// Argument headers and inline bytes examined so far.
    pub fn work(&self) -> u64 {
        self.work
    }

    fn parse_multibulk(
        &mut self,
        buf: &mut BytesMut,
        limits: &RespLimits,
        authenticated: bool,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let (count, bulk_max, authenticated, mut at, mut spans) = match self.partial.take() {
            // A request begun before `AUTH` ran keeps the limits it began
            // under.
            Some(Partial::Multibulk {
                count,
                bulk_max,
                authenticated,
                at,
                spans,
            }) => (count, bulk_max, authenticated, at, spans),
            _ => {
                self.work += 1;
                // "*<n>\r\n": n has at most 18 digits, so the line is short.
                let Some(eol) = find_crlf(buf, 1, 21) else {
                    return match buf.len() > 21 {
                        true => err("invalid multibulk length"),
                        false => Ok(None),
                    };
                };
                let count = match &buf[1..eol] {
                    b"-1" => 0,
                    digits => parse_len(digits)
                        .ok_or_else(|| ProtocolError("invalid multibulk length".into()))?,
                };
                if count > limits.args_max {
                    return err("invalid multibulk length");
                }
                if !authenticated && count > limits.unauthenticated_args_max {
                    return err("unauthenticated multibulk length");
                }
                let bulk_max = if authenticated {
                    limits.bulk_len_max
                } else {
                    limits.unauthenticated_bulk_len_max
                };
                (
                    count,
                    bulk_max,
                    authenticated,
                    eol + 2,
                    Vec::with_capacity(count.min(64)),
                )
            }
        };
        // Check the whole request is there before taking anything.
        while spans.len() < count {
            if at >= buf.len() {
                return self.wait(count, bulk_max, authenticated, at, spans);
            }
            if buf[at] != b'$' {
                return err(format!("expected '$', got '{}'", buf[at] as char));
            }
            self.work += 1;
            let Some(eol) = find_crlf(buf, at + 1, 21) else {
                return match buf.len() > at + 21 {
                    true => err("invalid bulk length"),
                    false => self.wait(count, bulk_max, authenticated, at, spans),
                };
            };
            let len = parse_len(&buf[at + 1..eol])
                .ok_or_else(|| ProtocolError("invalid bulk length".into()))?;
            if len > bulk_max {
                return err(if authenticated {
                    "invalid bulk length"
                } else {
                    "unauthenticated bulk length"
                });
            }
            let start = eol + 2;
            let Some(end) = start.checked_add(len) else {
                return err("invalid bulk length");
            };
            if buf.len() < end + 2 {
                // The header is read: resume at it, cheaply, next time.
                return self.wait(count, bulk_max, authenticated, at, spans);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return err("bulk string not terminated by CRLF");
            }
            spans.push((start, end));
            at = end + 2;
        }
        let request = buf.split_to(at).freeze();
        Ok(Some(
            spans
                .into_iter()
                .map(|(s, e)| request.slice(s..e))
                .collect(),
        ))
    }

    /// Keeps a multibulk request's progress until more bytes come.
    fn wait(
        &mut self,
        count: usize,
        bulk_max: usize,
        authenticated: bool,
        at: usize,
        spans: Vec<(usize, usize)>,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        self.partial = Some(Partial::Multibulk {
            count,
            bulk_max,
            authenticated,
            at,
            spans,
        });
        Ok(None)
    }

    fn parse_inline(
        &mut self,
        buf: &mut BytesMut,
        limits: &RespLimits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let searched = match self.partial.take() {
            Some(Partial::Inline { searched }) => searched,
            _ => 0,
        };
        let window = buf.len().min(limits.inline_len_max + 1);
        self.work += window.saturating_sub(searched) as u64;
        let found = buf[searched.min(window)..window]
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| searched + i);
        let Some(eol) = found else {
            if buf.len() > limits.inline_len_max {
                return err("too big inline request");
            }
            self.partial = Some(Partial::Inline { searched: window });
            return Ok(None);
        };
        parse_inline_line(buf, eol)
    }
}

/// The position of the first `\r\n` at or after `from`, looking no further
/// than `limit` bytes.
fn find_crlf(buf: &[u8], from: usize, limit: usize) -> Option<usize> {
    let end = buf.len().min(from.saturating_add(limit));
    buf[from..end]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

/// A non-negative decimal of at most 18 digits (no sign, no spaces).
fn parse_len(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Takes the inline request whose line ends at `eol` off `buf`.
fn parse_inline_line(buf: &mut BytesMut, eol: usize) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let line = buf.split_to(eol + 1).freeze();
    let text = line.slice(..eol).strip_suffix_cr();
    // Redis closes on what looks like HTTP or a cross-protocol attack.
    if text.starts_with(b"POST ") || text.starts_with(b"GET /") || text.starts_with(b"Host:") {
        return err("looks like HTTP: closing");
    }
    let args = text
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|a| !a.is_empty())
        .map(|a| text.slice_ref(a))
        .collect();
    Ok(Some(args))
}

trait StripCr {
    fn strip_suffix_cr(self) -> Bytes;
}

impl StripCr for Bytes {
    fn strip_suffix_cr(mut self) -> Bytes {
        if self.last() == Some(&b'\r') {
            self.truncate(self.len() - 1);
        }
        self
    }
}

/// Which protocol a connection speaks: RESP2 until it sends `HELLO 3`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// A reply. The RESP3 types ([`Reply::Map`], [`Reply::Set`],
/// [`Reply::Verbatim`], nulls) are written as Redis writes them to a RESP2
/// client: a map as a flat array of keys and values, a set as an array,
/// verbatim text as a bulk string; a null is `$-1`/`*-1` there and `_` in
/// RESP3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Bytes>),
    Array(Option<Vec<Reply>>),
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    /// Text meant for people (`INFO`, `CLIENT LIST`): RESP3's `=` type
    /// with format `txt`.
    Verbatim(String),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    pub fn encode(&self, out: &mut BytesMut, protocol: Protocol) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Reply::Simple(s) => {
                out.put_u8(b'+');
                out.put_slice(one_line(s).as_bytes());
                out.put_slice(b"\r\n");
            }
            Reply::Error(s) => {
                out.put_u8(b'-');
                out.put_slice(one_line(s).as_bytes());
                out.put_slice(b"\r\n");
            }
            Reply::Integer(i) => header(out, b':', *i),
            Reply::Bulk(None) | Reply::Array(None) if resp3 => out.put_slice(b"_\r\n"),
            Reply::Bulk(None) => out.put_slice(b"$-1\r\n"),
            Reply::Array(None) => out.put_slice(b"*-1\r\n"),
            Reply::Bulk(Some(b)) => bulk_string(out, b'$', b),
            Reply::Verbatim(text) if resp3 => {
                header(out, b'=', text.len() as i64 + 4);
                out.put_slice(b"txt:");
                out.put_slice(text.as_bytes());
                out.put_slice(b"\r\n");
            }
            Reply::Verbatim(text) => bulk_string(out, b'$', text.as_bytes()),
            Reply::Array(Some(items)) => {
                header(out, b'*', items.len() as i64);
                for item in items {
                    item.encode(out, protocol);
                }
            }
            Reply::Set(items) => {
                header(out, if resp3 { b'~' } else { b'*' }, items.len() as i64);
                for item in items {
                    item.encode(out, protocol);
                }
            }
            Reply::Map(pairs) => {
                match resp3 {
                    true => header(out, b'%', pairs.len() as i64),
                    false => header(out, b'*', 2 * pairs.len() as i64),
                }
                for (key, value) in pairs {
                    key.encode(out, protocol);
                    value.encode(out, protocol);
                }
            }
        }
    }
}

/// A type byte, a decimal and a line end: `:12\r\n`, `*3\r\n`.
fn header(out: &mut BytesMut, kind: u8, n: i64) {
    let mut digits = [0; 20];
    out.put_u8(kind);
    out.put_slice(format_i64(n, &mut digits));
    out.put_slice(b"\r\n");
}

fn bulk_string(out: &mut BytesMut, kind: u8, bytes: &[u8]) {
    header(out, kind, bytes.len() as i64);
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

/// `n` in decimal, written into the end of `buf`, without allocating.
fn format_i64(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

/// Simple strings and errors cannot hold line breaks.
fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    match s.contains(['\r', '\n']) {
        true => s.replace(['\r', '\n'], " ").into(),
        false => s.into(),
    }
}

impl From<ProtocolError> for Reply {
    fn from(e: ProtocolError) -> Reply {
        Reply::Error(format!("ERR {e}"))
    }
}

/// The body of the `resp_request` fuzz target (and of its corpus replay):
/// parses `data` as a stream of requests, authenticated and not, and checks
/// that no panic occurs, that every argument respects the limits, and that
/// parsing only ever consumes input.
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    let limits = RespLimits {
        bulk_len_max: 1 << 16,
        args_max: 1 << 10,
        ..RespLimits::default()
    };
    for authenticated in [false, true] {
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.len();
            match parse_request(&mut buf, &limits, authenticated) {
                Ok(Some(args)) => {
                    assert!(buf.len() < before, "a request consumed nothing");
                    assert!(args.len() <= limits.args_max);
                    let max = if authenticated {
                        limits.bulk_len_max
                    } else {
                        limits.unauthenticated_bulk_len_max
                    };
                    assert!(args
                        .iter()
                        .all(|a| a.len() <= max.max(limits.inline_len_max)));
                }
                Ok(None) | Err(_) => break,
            }
        }
        // The same bytes arriving in pieces parse to the same requests,
        // whatever the pieces.
        let whole = parse_all(data, &limits, authenticated);
        for piece in [1, 2, 5, 13, 64, 1 + data.len() / 3] {
            let (pieces, failed) = parse_in_pieces(data, piece, &limits, authenticated);
            assert_eq!(whole.0, pieces, "pieces of {piece} parse as the whole");
            assert_eq!(whole.1, failed, "pieces of {piece} fail as the whole");
        }
    }
}

/// Every request in `data` fed `piece` bytes at a time to one parser, and
/// whether parsing failed.
fn parse_in_pieces(
    data: &[u8],
    piece: usize,
    limits: &RespLimits,
    authenticated: bool,
) -> (Vec<Vec<Bytes>>, bool) {
    {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::new();
        let mut pieces = Vec::new();
        let mut failed = false;
        for chunk in data.chunks(piece) {
            buf.extend_from_slice(chunk);
            loop {
                match parser.parse(&mut buf, limits, authenticated) {
                    Ok(Some(args)) => pieces.push(args),
                    Ok(None) => break,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                break;
            }
        }
        (pieces, failed)
    }
}

/// Every request in `data` parsed at once, and whether parsing failed.
fn parse_all(data: &[u8], limits: &RespLimits, authenticated: bool) -> (Vec<Vec<Bytes>>, bool) {
    let mut buf = BytesMut::from(data);
    let mut out = Vec::new();
    loop {
        match parse_request(&mut buf, limits, authenticated) {
            Ok(Some(args)) => out.push(args),
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}
