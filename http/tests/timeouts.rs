//! Server timeouts with short settings (300 ms): slowloris heads, stalled bodies, idle
//! keep-alive, silent connections, stalled writes; and what must *not* time out.

mod common;

use std::time::{Duration, Instant};

use common::{Client, TestServer};

const T: Duration = Duration::from_millis(300);
/// Generous upper bound for "closed after T" on a noisy machine.
const WITHIN: Duration = Duration::from_secs(3);
/// Lower bound: nothing may be cut before (nearly) its timeout.
const NOT_BEFORE: Duration = Duration::from_millis(250);

fn server() -> TestServer {
    let mut config = common::config();
    config.header_timeout = T;
    config.body_timeout = T;
    config.keepalive_timeout = T;
    common::start(config)
}

/// Reads until the server closes; returns what arrived and when (from `since`).
fn closed_after(c: &mut Client, since: Instant) -> (Vec<u8>, Duration) {
    let raw = c.read_until_closed(WITHIN);
    (raw, since.elapsed())
}

fn assert_no_conns(s: &TestServer) {
    s.wait_for(Duration::from_secs(3), "no connections", |s| s.connections == 0);
}

#[test]
fn slowloris_head_gets_408_and_close() {
    let s = server();
    let mut c = Client::connect(s.addr);
    let t0 = Instant::now();
    c.send("GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    let (raw, took) = closed_after(&mut c, t0);
    assert!(took >= NOT_BEFORE, "cut after {took:?}");
    let resps = common::parse_responses(&raw, &[]);
    assert_eq!(resps.len(), 1);
    assert_eq!(resps[0].status, 408);
    assert!(resps[0].says_close());
    assert_no_conns(&s);
    common::assert_serves(s.addr);
}

/// Progress does not extend the head deadline: it runs from the head's first byte.
#[test]
fn trickled_head_is_cut_at_the_header_timeout() {
    let s = server();
    let mut c = Client::connect(s.addr);
    c.stream.set_nodelay(true).unwrap();
    let t0 = Instant::now();
    c.send("GET /plaintext HTTP/1.1\r\nHost: t\r\n");
    let mut writer = c.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..60 {
            std::thread::sleep(Duration::from_millis(50));
            if std::io::Write::write_all(&mut writer, b"X").is_err() {
                break;
            }
        }
    });
    let (raw, took) = closed_after(&mut c, t0);
    trickle.join().unwrap();
    assert!(took >= NOT_BEFORE && took < WITHIN, "cut after {took:?}");
    let resps = common::parse_responses(&raw, &[]);
    assert_eq!(resps.iter().map(|r| r.status).collect::<Vec<_>>(), vec![408]);
    assert_no_conns(&s);
}

/// A request line that never ends: closed without an answer (nothing to answer yet).
#[test]
fn unfinished_request_line_is_closed() {
    let s = server();
    let mut c = Client::connect(s.addr);
    let t0 = Instant::now();
    c.send("GET /plain");
    let (raw, took) = closed_after(&mut c, t0);
    assert!(took >= NOT_BEFORE, "cut after {took:?}");
    assert!(raw.is_empty() || raw.starts_with(b"HTTP/1.1 408"), "{}", common::preview(&raw));
    assert_no_conns(&s);
}

#[test]
fn stalled_body_gets_408_and_close() {
    let s = server();
    let mut c = Client::connect(s.addr);
    let t0 = Instant::now();
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    let (raw, took) = closed_after(&mut c, t0);
    assert!(took >= NOT_BEFORE, "cut after {took:?}");
    let resps = common::parse_responses(&raw, &[]);
    assert_eq!(resps.iter().map(|r| r.status).collect::<Vec<_>>(), vec![408]);
    assert_no_conns(&s);

    // Chunked, stalled mid-chunk.
    let mut c = Client::connect(s.addr);
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab");
    let (raw, _) = closed_after(&mut c, Instant::now());
    assert_eq!(common::parse_responses(&raw, &[])[0].status, 408);
    common::assert_serves(s.addr);
}

/// The body deadline is "no progress for T": a slow but steady body completes.
#[test]
fn slow_but_steady_body_completes() {
    let s = server();
    let mut c = Client::connect(s.addr);
    c.stream.set_nodelay(true).unwrap();
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n");
    for b in b"abcdefgh" {
        std::thread::sleep(Duration::from_millis(100));
        c.send([*b]);
    }
    let r = c.read_response();
    assert_eq!((r.status, r.body_str()), (200, "abcdefgh"));
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let s = server();
    let mut c = Client::connect(s.addr);
    assert_eq!(c.get("/plaintext").status, 200);
    let t0 = Instant::now();
    let (raw, took) = closed_after(&mut c, t0);
    assert!(raw.is_empty(), "idle close sends nothing: {}", common::preview(&raw));
    assert!(took >= NOT_BEFORE, "closed after {took:?}");
    assert_no_conns(&s);
}

/// A busy keep-alive connection is not closed: each answer restarts the idle clock.
#[test]
fn busy_keep_alive_connection_stays_open() {
    let s = server();
    let mut c = Client::connect(s.addr);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1200) {
        assert_eq!(c.get("/plaintext").status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.query().connections, 1);
}

#[test]
fn connection_that_never_sends_is_closed() {
    let s = server();
    let t0 = Instant::now();
    let mut c = Client::connect(s.addr);
    let (raw, took) = closed_after(&mut c, t0);
    assert!(raw.is_empty());
    assert!(took >= NOT_BEFORE, "closed after {took:?}");
    assert_no_conns(&s);
    common::assert_serves(s.addr);
}

/// A kept responder is the service's wait: the server does not time it out.
#[test]
fn kept_responder_is_not_timed_out() {
    let s = server();
    let mut c = Client::connect(s.addr);
    c.send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    c.expect_silence(Duration::from_millis(900));
    assert_eq!(s.release_held(), vec![Ok(())]);
    let r = c.read_response();
    assert_eq!((r.status, r.body_str()), (200, "released"));
}

/// A client that stops reading a large answer: no write progress for T closes it.
#[test]
fn stalled_write_is_closed() {
    let s = server();
    let mut c = Client::from_stream(common::connect_tiny(s.addr, 4096));
    c.send("GET /big?n=20000000 HTTP/1.1\r\nHost: t\r\n\r\n");
    let t0 = Instant::now();
    let snap = s.wait_for(WITHIN, "the stalled connection to close", |s| {
        s.accepted_total == 1 && s.responses_with(200) == 1 && s.connections == 0
    });
    assert!(t0.elapsed() >= NOT_BEFORE, "closed after {:?}", t0.elapsed());
    assert_eq!(snap.closed_by_peer_total, 0, "closed by the server, not the client");
    drop(c);
    common::assert_serves(s.addr);
}

/// A connection's timer comes due while the loop is busy in a long turn (a slow handler on
/// another connection). The loop's clock (read when it woke up) is then behind the timer
/// wheel's: the server must still expire the connection, not re-arm the timer for a tick the
/// wheel has already reached (which fires again at once, forever, in the same turn).
#[test]
fn timer_due_during_a_long_turn_does_not_hang_the_loop() {
    let s = server();
    // A: idle, its keep-alive deadline is accept + 300 ms.
    let mut a = Client::connect(s.addr);
    s.wait_for(Duration::from_secs(2), "A accepted", |s| s.connections == 1);
    std::thread::sleep(Duration::from_millis(150));
    // B: a handler that blocks the loop across A's deadline.
    let mut b = Client::connect(s.addr);
    b.send("GET /sleep?ms=400 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = b.read_response();
    assert_eq!(r.body_str(), "slept");
    // The loop is alive and A was closed for idling.
    let (raw, _) = closed_after(&mut a, Instant::now());
    assert!(raw.is_empty());
    let snap = s.query();
    assert!(snap.connections <= 1, "{snap:?}");
}
