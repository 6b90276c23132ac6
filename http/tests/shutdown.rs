//! Graceful shutdown (`ctx.shutdown()`, here from a `Stop` message): kept responders are
//! answered through `on_shutdown`, idle connections close, answers being written finish, the
//! listener closes, and the loop returns within `Config::shutdown_timeout`.

mod common;

use std::time::Duration;

use common::{Client, Options};

#[test]
fn kept_responders_are_answered_and_the_loop_returns() {
    let mut config = common::config();
    config.shutdown_timeout = Duration::from_secs(2);
    let mut s = common::start(config);
    let mut held = Client::connect(s.addr);
    held.send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut deferred = Client::connect(s.addr);
    deferred.send("GET /defer?ms=60000 HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut idle = Client::connect(s.addr);
    assert_eq!(idle.get("/plaintext").status, 200);
    s.wait_for(Duration::from_secs(5), "1 held, 1 deferred", |x| x.held == 1 && x.deferred == 1);

    s.begin_stop();
    for c in [&mut held, &mut deferred] {
        let r = c.read_response();
        assert_eq!((r.status, r.body_str()), (503, "shutting down"));
        assert!(r.says_close(), "answers during shutdown close the connection");
        c.expect_closed(Duration::from_secs(3));
    }
    idle.expect_closed(Duration::from_secs(3));
    // Everything answered: the loop returns well before the deadline.
    let took = s.join(Duration::from_secs(5));
    assert!(took < Duration::from_millis(1500), "loop returned after {took:?}");
    // The listener is closed.
    assert!(std::net::TcpStream::connect(s.addr).is_err(), "still accepting after shutdown");
}

/// A service that does not answer its kept responders: the deadline ends the wait.
#[test]
fn unanswered_responders_end_at_the_deadline() {
    let mut config = common::config();
    config.shutdown_timeout = Duration::from_millis(800);
    let mut s = common::start_with(config, Options { answer_held_on_shutdown: false });
    let mut held = Client::connect(s.addr);
    held.send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    s.wait_for(Duration::from_secs(5), "1 held", |x| x.held == 1);
    s.begin_stop();
    let took = s.join(Duration::from_secs(5));
    assert!(took >= Duration::from_millis(700), "returned after {took:?}, before the deadline");
    assert!(took < Duration::from_secs(3), "returned after {took:?}");
    held.expect_closed(Duration::from_secs(3));
}

/// An answer being written to a slow reader when shutdown begins is finished, then closed.
#[test]
fn answers_in_flight_are_finished() {
    let mut config = common::config();
    config.shutdown_timeout = Duration::from_secs(5);
    let mut s = common::start(config);
    let mut c = Client::from_stream(common::connect_tiny(s.addr, 4096));
    let n = 2_000_000;
    c.send(format!("GET /big?n={n}&seed=5 HTTP/1.1\r\nHost: t\r\n\r\n"));
    c.read_throttled(32 * 1024);
    s.begin_stop();
    c.read_throttled(1 << 20);
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert!(r.body == common::pattern(n, 5), "answer cut or corrupted by the shutdown");
    c.expect_closed(Duration::from_secs(3));
    let took = s.join(Duration::from_secs(8));
    assert!(took < Duration::from_secs(5));
}

/// A request arriving on an open connection during shutdown is answered once, with close.
#[test]
fn request_during_shutdown_is_answered_with_close() {
    let mut config = common::config();
    config.shutdown_timeout = Duration::from_secs(2);
    let mut s = common::start(config);
    // Keep the loop in shutdown: one responder is held until the deadline.
    let mut held = Client::connect(s.addr);
    held.send("GET /defer?ms=500 HTTP/1.1\r\nHost: t\r\n\r\n");
    // This one is mid-head (not idle), so it survives the start of the shutdown.
    let mut late = Client::connect(s.addr);
    late.send("GET /plaintext HTTP/1.1\r\n");
    s.wait_for(Duration::from_secs(5), "2 connections", |x| x.connections == 2 && x.deferred == 1);
    s.begin_stop();
    std::thread::sleep(Duration::from_millis(100));
    late.send("Host: t\r\n\r\n");
    let r = late.read_response();
    assert_eq!(r.status, 200);
    assert!(r.says_close());
    late.expect_closed(Duration::from_secs(3));
    assert_eq!(held.read_response().status, 503);
    s.join(Duration::from_secs(5));
}
