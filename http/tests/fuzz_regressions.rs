//! Regressions found by the fuzz targets (fuzz/, see fuzz/README.md), replayed over real
//! loopback sockets. Each test sends a request in two writes with a pause between them, so
//! the server reads (and judges) the first part on its own: the bugs were verdicts that
//! depended on where a read stopped.

mod common;

use std::time::Duration;

use common::Client;

/// Long enough for the server to read the first part and answer it if it (wrongly) would.
const PAUSE: Duration = Duration::from_millis(150);

/// Sends `first`, checks the server neither answers nor closes, then sends `rest`.
fn send_split(c: &mut Client, first: &[u8], rest: &[u8]) {
    c.stream.set_nodelay(true).unwrap();
    c.send(first);
    c.expect_silence(PAUSE);
    c.send(rest);
}

/// connection: `GET / HTTP/1.7` cut before its CRLF was 400 and close (httparse refuses the
/// version as soon as its 8 bytes are in; we decided before the line was complete). A later
/// 1.x is served as 1.1 whatever the split; HTTP/2 cut the same way is 505, not 400.
#[test]
fn later_version_cut_before_the_end_of_its_line() {
    let s = common::start(common::config());
    for cut in ["GET /echo HTTP/1.7", "GET /echo HTTP/1.7\r", "GET /echo HTTP/1.", "GET /echo HTTP/1.7\r\nHo"]
    {
        let raw = "GET /echo HTTP/1.7\r\nHost: t\r\n\r\n";
        let mut c = Client::connect(s.addr);
        send_split(&mut c, cut.as_bytes(), &raw.as_bytes()[cut.len()..]);
        let r = c.read_response();
        assert_eq!(r.status, 200, "cut after {cut:?}:\n{}", r.head_masked);
        assert_eq!(r.header("x-version"), Some("1.1"));
        assert_eq!(c.get("/plaintext").status, 200, "connection unusable after {cut:?}");
    }
    for cut in ["GET / HTTP/2", "GET / HTTP/2.0"] {
        let raw = "GET / HTTP/2.0\r\nHost: t\r\n\r\n";
        let mut c = Client::connect(s.addr);
        send_split(&mut c, cut.as_bytes(), &raw.as_bytes()[cut.len()..]);
        let r = c.read_response();
        assert_eq!(r.status, 505, "cut after {cut:?}:\n{}", r.head_masked);
        c.expect_closed(Duration::from_secs(3));
    }
}

/// request_head: an empty line before the request line (which a server ignores, RFC 9112
/// §2.2, and httparse skips) turned `HTTP/1.7` into 400: the version was looked for on the
/// empty line.
#[test]
fn empty_line_before_a_later_version() {
    let s = common::start(common::config());
    let mut c = Client::connect(s.addr);
    let r = c.roundtrip("\r\nGET /echo HTTP/1.7\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.head_masked);
    assert_eq!(r.header("x-version"), Some("1.1"));
    let r = c.roundtrip("\r\n\r\nGET / HTTP/2.0\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 505, "{}", r.head_masked);
}

/// request_head: a request line of exactly `max_request_line` bytes is accepted once its head
/// is complete, but while the rest of the head was still coming its CRLF counted against the
/// limit: 414 and close, or 200, depending on where a read stopped.
#[test]
fn request_line_at_the_limit_split_after_it() {
    let mut config = common::config();
    config.limits.max_request_line = 64;
    let s = common::start(config);
    // "GET " + target + " HTTP/1.1" = 64 bytes.
    let line = format!("GET /echo?{} HTTP/1.1", "a".repeat(64 - 4 - 6 - 9));
    assert_eq!(line.len(), 64);
    for first in [format!("{line}\r"), format!("{line}\r\n"), format!("{line}\r\nHost: t\r\n")] {
        let raw = format!("{line}\r\nHost: t\r\n\r\n");
        let mut c = Client::connect(s.addr);
        send_split(&mut c, first.as_bytes(), &raw.as_bytes()[first.len()..]);
        let r = c.read_response();
        assert_eq!(r.status, 200, "split after {:?}:\n{}", &first[60..], r.head_masked);
        assert_eq!(c.get("/plaintext").status, 200);
    }
    // One byte more is 414, complete or not.
    let long = format!("GET /echo?{} HTTP/1.1\r\n", "a".repeat(64 - 4 - 6 - 9 + 1));
    let mut c = Client::connect(s.addr);
    c.send(&long);
    assert_eq!(c.read_response().status, 414);
    c.expect_closed(Duration::from_secs(3));
}

/// connection: the first fix of the version rule waited for more whenever the request line
/// ended in a space (it took the version to be what followed the *last* space): garbage
/// in the version field must still be 400 at once.
#[test]
fn garbage_version_is_rejected_without_waiting() {
    let s = common::start(common::config());
    let mut c = Client::connect(s.addr);
    c.send(b"GET / H\xa0\xa1\xfe;GET ");
    let r = c.read_response();
    assert_eq!(r.status, 400, "{}", r.head_masked);
    c.expect_closed(Duration::from_secs(3));
}
