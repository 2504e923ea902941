//! The RESP request parser against good and hostile input
//! (a fault of docs/reliability.md).

use bytes::{BufMut, BytesMut};
use hotblock_node::resp::{
    parse_request, Protocol, ProtocolError, Reply, RequestParser, RespLimits,
};

fn parse_all(input: &[u8], authenticated: bool) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(args) = parse_request(&mut buf, &RespLimits::default(), authenticated)? {
        out.push(args.into_iter().map(|a| a.to_vec()).collect());
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    Ok(out)
}

fn args(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|a| a.as_bytes().to_vec()).collect()
}

#[test]
fn multibulk_and_inline_requests_pipelined() {
    let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva\r\nl\r\nPING\r\n  GET   k \r\n*0\r\n";
    let got = parse_all(input, true).unwrap();
    assert_eq!(
        got,
        vec![
            args(&["SET", "k", "va\r\nl"]),
            args(&["PING"]),
            args(&["GET", "k"]),
            vec![]
        ]
    );
}

#[test]
fn a_request_fed_byte_by_byte_waits_then_parses_once() {
    let input = b"*2\r\n$4\r\nECHO\r\n$11\r\nhello world\r\n";
    let mut buf = BytesMut::new();
    let limits = RespLimits::default();
    for (i, b) in input.iter().enumerate() {
        buf.put_u8(*b);
        let parsed = parse_request(&mut buf, &limits, true).unwrap();
        if i + 1 < input.len() {
            assert!(parsed.is_none(), "parsed early at byte {i}");
        } else {
            assert_eq!(parsed.unwrap(), vec![&b"ECHO"[..], &b"hello world"[..]]);
        }
    }
}

#[test]
fn huge_or_negative_lengths_are_refused_before_anything_is_read() {
    // Row 17: huge array counts, authenticated or not; nothing preallocated.
    for input in [
        &b"*2147483648\r\n"[..],
        b"*1000000000000000000000\r\n",
        b"*-5\r\n",
        b"*x\r\n",
    ] {
        let e = parse_all(input, true).unwrap_err();
        assert!(e.0.contains("invalid multibulk length"), "{input:?}: {e}");
    }
    let e = parse_all(b"*1000000\r\n", false).unwrap_err();
    assert!(e.0.contains("unauthenticated multibulk length"), "{e}");
    // Row 18: bulk lengths negative, past i64, past the limit.
    for input in [
        &b"*1\r\n$-5\r\n"[..],
        b"*1\r\n$9223372036854775808\r\n",
        b"*1\r\n$+5\r\nhello\r\n",
        b"*1\r\n$536870913\r\n",
    ] {
        let e = parse_all(input, true).unwrap_err();
        assert!(e.0.contains("invalid bulk length"), "{input:?}: {e}");
    }
    let e = parse_all(b"*1\r\n$20000\r\n", false).unwrap_err();
    assert!(e.0.contains("unauthenticated bulk length"), "{e}");
    // A bulk string must end with CRLF.
    assert!(parse_all(b"*1\r\n$2\r\nabc\r\n", true).is_err());
}

#[test]
fn an_inline_request_without_a_newline_is_capped() {
    // Row 19: 64 KiB without a newline.
    let mut buf = BytesMut::from(&vec![b'a'; 64 * 1024][..]);
    assert_eq!(
        parse_request(&mut buf, &RespLimits::default(), true),
        Ok(None)
    );
    buf.put_u8(b'a');
    let e = parse_request(&mut buf, &RespLimits::default(), true).unwrap_err();
    assert!(e.0.contains("too big inline request"), "{e}");
}

#[test]
fn http_on_the_resp_port_is_refused() {
    // Row 21: nothing after it runs.
    let e = parse_all(
        b"POST / HTTP/1.1\r\nHost: x\r\n\r\n*1\r\n$4\r\nPING\r\n",
        true,
    )
    .unwrap_err();
    assert!(e.0.contains("HTTP"), "{e}");
}

#[test]
fn nested_arrays_are_refused() {
    // Row 22: a request is one level deep; no recursion to exhaust.
    let nested = "*1\r\n".repeat(100_000);
    let e = parse_all(nested.as_bytes(), true).unwrap_err();
    assert!(e.0.contains("expected '$'"), "{e}");
}

#[test]
fn replies_encode_as_redis_does() {
    let mut out = BytesMut::new();
    Reply::Array(Some(vec![
        Reply::ok(),
        Reply::Error("ERR bad\r\nthing".into()),
        Reply::Integer(-3),
        Reply::Bulk(Some("hi".into())),
        Reply::Bulk(None),
        Reply::Array(None),
    ]))
    .encode(&mut out, Protocol::Resp2);
    assert_eq!(
        &out[..],
        b"*6\r\n+OK\r\n-ERR bad  thing\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n*-1\r\n"
    );
}

#[test]
fn resp3_types_encode_as_redis_does_and_fall_back_under_resp2() {
    let reply = Reply::Array(Some(vec![
        Reply::Map(vec![(
            Reply::Bulk(Some("k".into())),
            Reply::Integer(i64::MIN),
        )]),
        Reply::Set(vec![Reply::Integer(0)]),
        Reply::Verbatim("a:1".into()),
        Reply::Bulk(None),
        Reply::Array(None),
    ]));
    let mut resp3 = BytesMut::new();
    reply.encode(&mut resp3, Protocol::Resp3);
    assert_eq!(
        &resp3[..],
        &b"*5\r\n%1\r\n$1\r\nk\r\n:-9223372036854775808\r\n~1\r\n:0\r\n=7\r\ntxt:a:1\r\n_\r\n_\r\n"
            [..]
    );
    let mut resp2 = BytesMut::new();
    reply.encode(&mut resp2, Protocol::Resp2);
    assert_eq!(
        &resp2[..],
        &b"*5\r\n*2\r\n$1\r\nk\r\n:-9223372036854775808\r\n*1\r\n:0\r\n$3\r\na:1\r\n$-1\r\n*-1\r\n"
            [..]
    );
}

/// Replays the `resp_request` fuzz corpus (`fuzz/corpus/resp_request`).
#[test]
fn resp_request_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/resp_request");
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {} is missing: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        !entries.is_empty(),
        "fuzz corpus {} is empty",
        dir.display()
    );
    for path in entries {
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| hotblock_node::resp::fuzz_parse(&data));
        assert!(result.is_ok(), "{} panicked", path.display());
    }
}

/// A request of many arguments arriving a few bytes per read: each
/// argument's header is read once (before, every read re-walked every
/// argument received so far: quadratic), and it parses as the whole does.
#[test]
fn a_request_in_pieces_is_parsed_in_linear_work() {
    const ARGS: usize = 20_000;
    const PIECE: usize = 7;
    let mut input = format!("*{ARGS}\r\n").into_bytes();
    for i in 0..ARGS {
        let arg = format!("a{i}");
        input.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    let limits = RespLimits::default();
    let mut parser = RequestParser::default();
    let mut buf = BytesMut::new();
    let mut got = None;
    let pieces = input.chunks(PIECE).count();
    for chunk in input.chunks(PIECE) {
        assert!(got.is_none(), "parsed before the last piece");
        buf.put_slice(chunk);
        got = parser.parse(&mut buf, &limits, true).unwrap();
    }
    let args = got.expect("parsed once whole");
    assert_eq!(args.len(), ARGS);
    assert_eq!(&args[ARGS - 1][..], format!("a{}", ARGS - 1).as_bytes());
    assert!(buf.is_empty());
    let work = parser.work() as usize;
    assert!(
        work <= ARGS + pieces + 1,
        "{work} headers read for {ARGS} arguments"
    );

    // An inline line a byte at a time: each byte searched once.
    let mut parser = RequestParser::default();
    let mut buf = BytesMut::new();
    let line = vec![b'a'; 60_000];
    for b in &line {
        buf.put_u8(*b);
        assert_eq!(parser.parse(&mut buf, &limits, true).unwrap(), None);
    }
    assert!(parser.work() as usize <= line.len(), "{}", parser.work());
}

/// A request that keeps growing past `client-query-buffer-limit` closes
/// the client, whatever its arguments' own limits allow.
#[test]
fn a_request_past_the_query_buffer_limit_is_refused() {
    let limits = RespLimits {
        query_buffer_max: 64 * 1024,
        ..RespLimits::default()
    };
    let mut parser = RequestParser::default();
    let mut buf = BytesMut::new();
    buf.put_slice(b"*1000\r\n");
    let mut refused = None;
    for _ in 0..1000 {
        buf.put_slice(b"$1000\r\n");
        buf.put_slice(&[b'x'; 1000]);
        buf.put_slice(b"\r\n");
        match parser.parse(&mut buf, &limits, true) {
            Ok(None) => {}
            Ok(Some(_)) => panic!("a request past the limit was taken"),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("refused");
    assert!(e.0.contains("query buffer limit"), "{e}");
    assert!(buf.len() <= limits.query_buffer_max + 1010, "{}", buf.len());
}
