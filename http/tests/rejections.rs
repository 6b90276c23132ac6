//! The protocol rules, over real sockets: every rejection with its status (and whether the
//! connection closes after it), and the server still serving afterwards; versions, HEAD,
//! 100-continue, Date/Content-Length on every answer, and when connections close.

mod common;

use std::time::Duration;

use common::{assert_serves, rejected, Client};

const CLOSE_WITHIN: Duration = Duration::from_secs(3);

#[test]
fn content_length_and_transfer_encoding_is_400_and_close() {
    let s = common::start(common::config());
    rejected(
        s.addr,
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        true,
    );
    // Order does not matter.
    rejected(
        s.addr,
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        400,
        true,
    );
}

#[test]
fn differing_content_lengths_are_400_and_close() {
    let s = common::start(common::config());
    rejected(
        s.addr,
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
        true,
    );
    rejected(s.addr, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!", 400, true);
    rejected(s.addr, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello", 400, true);
    rejected(
        s.addr,
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n",
        400,
        true,
    );
    // Identical duplicates are one length.
    let mut c = Client::connect(s.addr);
    let r =
        c.roundtrip("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!((r.status, r.body_str()), (200, "hello"));
}

#[test]
fn transfer_codings_other_than_chunked_are_501() {
    let s = common::start(common::config());
    rejected(s.addr, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501, true);
    rejected(
        s.addr,
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        true,
    );
    rejected(
        s.addr,
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        501,
        true,
    );
}

#[test]
fn bad_chunk_sizes_are_400_and_close() {
    let s = common::start(common::config());
    let head = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
        // 16 hex digits: more than fit (overflow).
        "1000000000000000\r\n",
        "ffffffffffffffffff\r\n",
    ] {
        rejected(s.addr, format!("{head}{body}"), 400, true);
    }
}

#[test]
fn obs_fold_and_bare_cr_are_400_and_close() {
    let s = common::start(common::config());
    rejected(s.addr, "GET /plaintext HTTP/1.1\r\nHost: t\r\nX-A: a\r\n  folded\r\n\r\n", 400, true);
    rejected(s.addr, "GET /plaintext HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tfolded\r\n\r\n", 400, true);
    rejected(s.addr, "GET /plaintext HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n", 400, true);
    rejected(s.addr, "GET /plain\rtext HTTP/1.1\r\nHost: t\r\n\r\n", 400, true);
}

#[test]
fn host_header_must_appear_once_in_http11() {
    let s = common::start(common::config());
    // No body: framing is sound, so the connection stays usable.
    rejected(s.addr, "GET /plaintext HTTP/1.1\r\n\r\n", 400, false);
    rejected(s.addr, "GET /plaintext HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, false);
    // With a body it closes.
    rejected(s.addr, "POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 400, true);
    // HTTP/1.0 needs none.
    let mut c = Client::connect(s.addr);
    let r = c.roundtrip("GET /plaintext HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
}

#[test]
fn head_over_16k_is_431() {
    let s = common::start(common::config());
    let big = "a".repeat(17 * 1024);
    rejected(s.addr, format!("GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n"), 431, true);
    // The same head, never finished: the size alone decides.
    rejected(s.addr, format!("GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Big: {big}"), 431, true);
    // Just under the limit is fine.
    let ok = "a".repeat(15 * 1024);
    let mut c = Client::connect(s.addr);
    assert_eq!(c.roundtrip(format!("GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Big: {ok}\r\n\r\n")).status, 200);
}

#[test]
fn more_than_100_headers_is_431() {
    let s = common::start(common::config());
    let headers: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    rejected(s.addr, format!("GET /plaintext HTTP/1.1\r\nHost: t\r\n{headers}\r\n"), 431, true);
    // 99 + Host = 100 is fine.
    let headers: String = (0..99).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut c = Client::connect(s.addr);
    assert_eq!(c.roundtrip(format!("GET /plaintext HTTP/1.1\r\nHost: t\r\n{headers}\r\n")).status, 200);
}

#[test]
fn request_line_over_8k_is_414() {
    let s = common::start(common::config());
    let long = "a".repeat(9 * 1024);
    rejected(s.addr, format!("GET /{long} HTTP/1.1\r\nHost: t\r\n\r\n"), 414, true);
    // Unfinished: the length alone decides.
    rejected(s.addr, format!("GET /{long}"), 414, true);
}

#[test]
fn body_over_max_body_bytes_is_413_then_close() {
    let mut config = common::config();
    config.limits.max_body_bytes = 1024;
    let s = common::start(config);
    let body = "x".repeat(2000);
    rejected(
        s.addr,
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n{body}"),
        413,
        true,
    );
    // Announced but not sent: answered at once, without waiting for the body.
    rejected(s.addr, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n", 413, true);
    // Chunked: the decoded size counts.
    let chunked = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{body}\r\n0\r\n\r\n"
    );
    rejected(s.addr, chunked, 413, true);
    // At the limit is fine.
    let body = "y".repeat(1024);
    let mut c = Client::connect(s.addr);
    let r = c.roundtrip(format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n{body}"));
    assert_eq!((r.status, r.body.len()), (200, 1024));
}

#[test]
fn http2_request_line_is_505() {
    let s = common::start(common::config());
    rejected(s.addr, "GET /plaintext HTTP/2.0\r\nHost: t\r\n\r\n", 505, true);
    rejected(s.addr, "GET /plaintext HTTP/3.0\r\nHost: t\r\n\r\n", 505, true);
}

#[test]
fn http2_preface_is_505_or_close() {
    let s = common::start(common::config());
    let mut c = Client::connect(s.addr);
    c.send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let raw = c.read_until_closed(CLOSE_WITHIN);
    if !raw.is_empty() {
        let resps = common::parse_responses(&raw, &[]);
        assert_eq!(resps.len(), 1);
        assert_eq!(resps[0].status, 505);
    }
    assert_serves(s.addr);
}

#[test]
fn http12_is_served_as_http11() {
    let s = common::start(common::config());
    let mut c = Client::connect(s.addr);
    let r = c.roundtrip("GET /echo HTTP/1.2\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.version, "HTTP/1.1");
    assert_eq!(r.header("x-version"), Some("1.1"));
    assert!(!r.says_close(), "1.x keeps alive like 1.1");
    let r = c.roundtrip("GET /plaintext HTTP/1.9\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    // 1.x also needs a Host, like 1.1.
    assert_eq!(c.roundtrip("GET /plaintext HTTP/1.2\r\n\r\n").status, 400);
}

#[test]
fn head_has_content_length_but_no_body() {
    let s = common::start(common::config());
    let mut c = Client::connect(s.addr);
    // Pipelined behind each HEAD answer: if a body followed it, the next answer would not
    // start where the client expects.
    c.send(
        "HEAD /plaintext HTTP/1.1\r\nHost: t\r\n\r\n\
         HEAD /big?n=100000 HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let r = c.read_head_response();
    assert_eq!((r.status, r.header("content-length")), (200, Some("13")));
    let r = c.read_head_response();
    assert_eq!((r.status, r.header("content-length")), (200, Some("100000")));
    let r = c.read_response();
    assert_eq!(r.body_str(), "Hello, World!");
    c.expect_silence(Duration::from_millis(100));
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let s = common::start(common::config());
    let mut c = Client::connect(s.addr);
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    // The body is not sent yet: the interim answer must come on its own.
    let interim = c.read_any();
    assert_eq!(interim.status, 100);
    assert_eq!(interim.head_masked, "HTTP/1.1 100 Continue\r\n\r\n");
    c.send("hello");
    let r = c.read_response();
    assert_eq!((r.status, r.body_str()), (200, "hello"));
    // Chunked too, and only once even if the body trickles in.
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(c.read_any().status, 100);
    c.send("3\r\nabc\r\n");
    std::thread::sleep(Duration::from_millis(20));
    c.send("2\r\nde\r\n0\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, r.body_str()), (200, "abcde"));
}

#[test]
fn every_final_answer_has_date_and_content_length_unless_204_304() {
    let s = common::start(common::config());
    let mut c = Client::connect(s.addr);
    // The client checks Date and Content-Length on every answer it parses; these add the
    // statuses that must *not* carry Content-Length.
    for code in [200, 201, 204, 301, 304, 404, 500] {
        let r = c.get(&format!("/status?code={code}"));
        assert_eq!(r.status, code);
        assert!(r.header("date").is_some());
        let bodiless = code == 204 || code == 304;
        assert_eq!(r.header("content-length").is_none(), bodiless, "code {code}:\n{}", r.head_masked);
    }
    assert_eq!(c.get("/nowhere").status, 404);
    // Server-made rejections too.
    let mut c = Client::connect(s.addr);
    let r = c.roundtrip("GET / HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(r.header("date").is_some() && r.header("content-length").is_some());
}

#[test]
fn http10_closes_unless_keep_alive() {
    let s = common::start(common::config());
    let mut c = Client::connect(s.addr);
    let r = c.roundtrip("GET /plaintext HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.says_close());
    c.expect_closed(CLOSE_WITHIN);

    let mut c = Client::connect(s.addr);
    for _ in 0..3 {
        let r = c.roundtrip("GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection").map(str::to_ascii_lowercase).as_deref(), Some("keep-alive"));
    }
    let r = c.roundtrip("GET /plaintext HTTP/1.0\r\n\r\n");
    assert!(r.says_close());
    c.expect_closed(CLOSE_WITHIN);
}

#[test]
fn connection_close_is_honoured() {
    let s = common::start(common::config());
    let mut c = Client::connect(s.addr);
    assert!(!c.get("/plaintext").says_close());
    let r = c.roundtrip("GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.says_close());
    c.expect_closed(CLOSE_WITHIN);
    // Pipelined requests after the one saying close are not answered.
    let mut c = Client::connect(s.addr);
    c.send(
        "GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, close\r\n\r\n\
         GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert!(c.read_response().says_close());
    c.expect_closed(CLOSE_WITHIN);
    // The service asking to close.
    let mut c = Client::connect(s.addr);
    let r = c.get("/close");
    assert!(r.says_close());
    c.expect_closed(CLOSE_WITHIN);
}

#[test]
fn max_requests_per_connection_is_honoured() {
    let mut config = common::config();
    config.max_requests_per_connection = 3;
    let s = common::start(config);
    let mut c = Client::connect(s.addr);
    assert!(!c.get("/plaintext").says_close());
    assert!(!c.get("/plaintext").says_close());
    assert!(c.get("/plaintext").says_close(), "the 3rd answer is the last");
    c.expect_closed(CLOSE_WITHIN);
    // Pipelined: 5 sent, 3 answered.
    let mut c = Client::connect(s.addr);
    c.send("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n".repeat(5));
    let raw = c.read_until_closed(CLOSE_WITHIN);
    let resps = common::parse_responses(&raw, &[]);
    assert_eq!(resps.len(), 3);
    assert!(resps[2].says_close());
}

#[test]
fn rejections_are_counted() {
    let s = common::start(common::config());
    rejected(s.addr, "GET / HTTP/2.0\r\n\r\n", 505, true);
    rejected(s.addr, "GET / HTTP/1.1\r\n\r\n", 400, false);
    let snap = s.query();
    assert_eq!(snap.responses_with(505), 1);
    assert_eq!(snap.responses_with(400), 1);
}
