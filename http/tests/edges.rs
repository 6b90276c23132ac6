//! The strict edges of HTTP/1.1, over real sockets: HTTP/1.0 with Transfer-Encoding, the
//! chunk-extension grammar and its 1 KiB bound, trailer fields parsed as header fields and
//! counted toward the head limits, error answers to HEAD without a body, `Expect` in HTTP/1.0,
//! the header count limit, and a request head parsed once however its body trickles in.

mod common;

use std::time::Duration;

use common::{rejected, Client};
use http::{Config, Limits};

const CLOSE_WITHIN: Duration = Duration::from_secs(3);

/// A chunked POST to `/echo` whose body (chunks and trailers) is `body`.
fn chunked(body: &str) -> String {
    format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
}

fn with_limits(limits: Limits) -> Config {
    Config { limits, ..common::config() }
}

/// `n` header fields in all: Host and `n - 1` others.
fn get_with_fields(n: usize) -> String {
    let fields: String = (1..n).map(|i| format!("X-{i}: v\r\n")).collect();
    format!("GET /plaintext HTTP/1.1\r\nHost: t\r\n{fields}\r\n")
}

#[test]
fn http10_with_transfer_encoding_is_400_and_close() {
    let s = common::start(common::config());
    rejected(
        s.addr,
        "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
        true,
    );
    rejected(
        s.addr,
        "POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
        400,
        true,
    );
    rejected(s.addr, "GET /plaintext HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n", 400, true);
    // The same body in HTTP/1.1 is served.
    let mut c = Client::connect(s.addr);
    assert_eq!(c.roundtrip(chunked("5\r\nhello\r\n0\r\n\r\n")).body_str(), "hello");
}

#[test]
fn chunk_extensions_follow_the_grammar() {
    let s = common::start(common::config());
    let mut c = Client::connect(s.addr);
    for body in [
        "5;a\r\nhello\r\n0\r\n\r\n",
        "5;a=b;c\r\nhello\r\n0;z=\"\"\r\n\r\n",
        "5 ; a = b ;\tc=\"x \\\" ;y\"\r\nhello\r\n0\r\n\r\n",
        "2;n=1\r\nhe\r\n3;n=2\r\nllo\r\n0\r\n\r\n",
    ] {
        let r = c.roundtrip(chunked(body));
        assert_eq!((r.status, r.body_str()), (200, "hello"), "{body:?}");
    }
    for bad in [
        "5 \r\nhello\r\n0\r\n\r\n",         // whitespace without an extension
        "5;\r\nhello\r\n0\r\n\r\n",         // no name
        "5;a \r\nhello\r\n0\r\n\r\n",       // whitespace before CRLF
        "5;a=\r\nhello\r\n0\r\n\r\n",       // no value
        "5;a=b c\r\nhello\r\n0\r\n\r\n",    // two tokens
        "5;a=\"b\r\nhello\r\n0\r\n\r\n",    // unterminated quoted string
        "5;a=\"b\"c\r\nhello\r\n0\r\n\r\n", // token right after the quote
        "5;a@b\r\nhello\r\n0\r\n\r\n",      // not a token
        "5;a=b\rhello\r\n0\r\n\r\n",        // bare CR
        "5\r\nhello\r\n0;a=\u{7f}\r\n\r\n", // in the last chunk too
    ] {
        rejected(s.addr, chunked(bad), 400, true);
    }
}

#[test]
fn chunk_size_line_is_bounded_at_1k() {
    let s = common::start(common::config());
    // `5;a=bbb...`: 4 + k bytes before the CRLF.
    let line = |len: usize| format!("5;a={}\r\nhello\r\n0\r\n\r\n", "b".repeat(len - 4));
    let mut c = Client::connect(s.addr);
    assert_eq!(c.roundtrip(chunked(&line(1024))).body_str(), "hello");
    rejected(s.addr, chunked(&line(1025)), 400, true);
    // A long extension fed slowly is cut at the bound, not read on.
    let mut c = Client::connect(s.addr);
    c.send(chunked(&format!("5;a={}", "b".repeat(4000))));
    let r = c.read_response();
    assert_eq!(r.status, 400);
    c.shutdown_write();
    c.expect_closed(CLOSE_WITHIN);
}

#[test]
fn trailers_are_header_fields_within_the_head_limits() {
    let s =
        common::start(with_limits(Limits { max_headers: 10, max_header_bytes: 1024, ..Limits::default() }));
    let mut c = Client::connect(s.addr);
    let r = c.roundtrip(chunked("5\r\nhello\r\n0\r\nX-A: 1\r\nX-B:2 \r\nX-C:\r\n\r\n"));
    assert_eq!((r.status, r.body_str()), (200, "hello"));
    for bad in [
        "0\r\nX-A 1\r\n\r\n",             // no colon
        "0\r\nX-A : 1\r\n\r\n",           // whitespace before the colon
        "0\r\n: 1\r\n\r\n",               // no name
        "0\r\nX-A: 1\r\n folded\r\n\r\n", // obs-fold
        "0\r\nX(A): 1\r\n\r\n",           // not a token
        "0\r\nX-A: 1\nX-B: 2\r\n\r\n",    // bare LF
        "0\r\nX-A: a\u{1}b\r\n\r\n",      // control character
    ] {
        rejected(s.addr, chunked(bad), 400, true);
    }
    // Fields: the head has 2 (Host, Transfer-Encoding), so 8 trailer fields fit, 9 do not.
    let fields = |n: usize| (0..n).map(|i| format!("T{i}: v\r\n")).collect::<String>();
    assert_eq!(c.roundtrip(chunked(&format!("0\r\n{}\r\n", fields(8)))).status, 200);
    rejected(s.addr, chunked(&format!("0\r\n{}\r\n", fields(9))), 431, true);
    // Bytes: the head and the trailer field lines (CRLFs included) within 1024.
    let head_len = chunked("").len();
    let field_line = |len: usize| format!("X: {}\r\n", "v".repeat(len - 5));
    let fit = 1024 - head_len;
    assert_eq!(c.roundtrip(chunked(&format!("0\r\n{}\r\n", field_line(fit)))).status, 200);
    rejected(s.addr, chunked(&format!("0\r\n{}\r\n", field_line(fit + 1))), 431, true);
}

#[test]
fn error_answers_to_head_have_no_body() {
    let config = Config {
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        ..common::config()
    };
    let s = common::start(config);
    // Kept open (no Host): the next answer must start right after the head.
    let mut c = Client::connect(s.addr);
    c.send("HEAD /plaintext HTTP/1.1\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 400);
    // The head says how long the body would have been.
    assert!(r.header("content-length").is_some_and(|n| n != "0"), "{}", r.head_masked);
    assert_eq!(c.read_response().body_str(), "Hello, World!");
    // Closing rejections, decided before the head parses, after, and in the body.
    let too_many: String = (0..120).map(|i| format!("X-{i}: v\r\n")).collect();
    for (raw, status) in [
        ("HEAD / HTTP/2.0\r\nHost: t\r\n\r\n".to_string(), 505),
        (format!("HEAD / HTTP/1.1\r\nHost: t\r\n{too_many}\r\n"), 431),
        ("HEAD / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_string(), 400),
        ("HEAD / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(), 400),
        ("HEAD / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_string(), 400),
        ("HEAD / HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nabc".to_string(), 408),
        ("HEAD / HTTP/1.1\r\nHost: t\r\n".to_string(), 408),
    ] {
        let mut c = Client::connect(s.addr);
        c.send(&raw);
        let r = c.read_head_response();
        assert_eq!(r.status, status, "{raw:?}");
        assert!(r.says_close(), "{raw:?}: {}", r.head_masked);
        c.shutdown_write();
        // Nothing after the head: no body bytes.
        c.expect_closed(CLOSE_WITHIN);
    }
}

#[test]
fn expect_100_continue_is_ignored_in_http10() {
    let s = common::start(common::config());
    let mut c = Client::connect(s.addr);
    c.send(
        "POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    c.expect_silence(Duration::from_millis(300));
    c.send("hello");
    let r = c.read_response();
    assert_eq!((r.status, r.body_str()), (200, "hello"));
    // The same in HTTP/1.1 gets its interim answer.
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(c.read_any().status, 100);
    c.send("hello");
    assert_eq!(c.read_response().body_str(), "hello");
}

#[test]
fn header_count_limit_is_configurable_and_per_request() {
    let s = common::start(with_limits(Limits { max_headers: 10, ..Limits::default() }));
    let mut c = Client::connect(s.addr);
    // Counted per request, not per connection.
    for _ in 0..5 {
        assert_eq!(c.roundtrip(get_with_fields(10)).status, 200);
    }
    rejected(s.addr, get_with_fields(11), 431, true);
    // Above the 100 inline slots.
    let s = common::start(with_limits(Limits { max_headers: 500, ..Limits::default() }));
    let mut c = Client::connect(s.addr);
    for _ in 0..3 {
        assert_eq!(c.roundtrip(get_with_fields(500)).status, 200);
    }
    rejected(s.addr, get_with_fields(501), 431, true);
}

/// A body sent one byte per write behind a head near the 16 KiB limit: the head is parsed
/// once per request, not once per read (which cost head size x reads).
#[test]
fn a_head_is_parsed_once_however_many_reads_its_body_takes() {
    let s = common::start(common::config());
    let pad = "p".repeat(15 * 1024);
    let body = "0123456789".repeat(4);
    let mut c = Client::connect(s.addr);
    c.stream.set_nodelay(true).unwrap();
    let before = s.query();
    let trickle = |c: &mut Client, bytes: &[u8]| {
        for &b in bytes {
            c.send([b]);
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    c.send(format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nX-Pad: {pad}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    trickle(&mut c, body.as_bytes());
    assert_eq!(c.read_response().body_str(), body);
    c.send(format!("POST /echo HTTP/1.1\r\nHost: t\r\nX-Pad: {pad}\r\nTransfer-Encoding: chunked\r\n\r\n"));
    let chunks: String = body.chars().map(|ch| format!("1;i=x\r\n{ch}\r\n")).collect();
    trickle(&mut c, format!("{chunks}0\r\nX-T: done\r\n\r\n").as_bytes());
    assert_eq!(c.read_response().body_str(), body);
    let after = s.query();
    // The premise: the bodies came in many reads (each read is a loop turn).
    let turns = after.iterations - before.iterations;
    assert!(turns > 40, "only {turns} loop turns: the bodies did not trickle");
    assert_eq!(after.requests_total - before.requests_total, 2);
    assert_eq!(after.heads_parsed_total - before.heads_parsed_total, 2, "{turns} loop turns");
}
