//! The client goes away (FIN or RST) in every state of a connection. Afterwards the server
//! must be exactly back where it started: no connection, the reactor's sources and timers at
//! their baseline, the process's fd count at its baseline, a kept responder told once
//! (`on_close`) and answering it a harmless `Err(Closed)`; and the loop must not spin.
//!
//! The tests in this file share process-wide measurements (fd count), so they run one at a
//! time (`common::serial`).

mod common;

use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::{Client, Snapshot, TestServer};
use http::Closed;

#[derive(Debug, Clone, Copy)]
enum How {
    /// FIN (shutdown both ways, then close).
    Fin,
    /// RST (SO_LINGER 0, then close).
    Rst,
}

fn hang_up(c: Client, how: How) {
    match how {
        How::Fin => {
            let _ = c.stream.shutdown(Shutdown::Both);
            drop(c);
        }
        How::Rst => c.reset(),
    }
}

struct Baseline {
    snap: Snapshot,
    fds: usize,
}

fn fd_count() -> usize {
    test_support::procfs::open_fd_count().unwrap()
}

fn baseline(s: &TestServer) -> Baseline {
    let snap = s.wait_for(Duration::from_secs(5), "an idle server", |x| x.connections == 0);
    Baseline { snap, fds: fd_count() }
}

/// Waits (bounded) until the server is back to `base`, then checks it stays idle: the loop
/// sleeps through 500 ms with at most a few wake-ups and little CPU.
fn assert_back_to_baseline(s: &TestServer, base: &Baseline, what: &str) -> Snapshot {
    let snap = s.wait_for(Duration::from_secs(5), what, |x| {
        x.connections == 0 && x.sources == base.snap.sources && x.timers == base.snap.timers
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let fds = fd_count();
        if fds == base.fds {
            break;
        }
        assert!(Instant::now() < deadline, "{what}: {fds} fds open, baseline {}", base.fds);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_idle(s, what);
    snap
}

/// Over 500 ms with nothing to do, the loop wakes only for our two queries.
fn assert_idle(s: &TestServer, what: &str) {
    let a = s.query();
    std::thread::sleep(Duration::from_millis(500));
    let b = s.query();
    let turns = b.iterations - a.iterations;
    let cpu = b.cpu - a.cpu;
    assert!(turns <= 5, "{what}: the loop turned {turns} times in 500 ms of idle (spinning?)");
    assert!(cpu < Duration::from_millis(50), "{what}: the loop used {cpu:?} CPU in 500 ms of idle");
}

fn connected(s: &TestServer) -> Client {
    let before = s.query().accepted_total;
    let c = Client::connect(s.addr);
    s.wait_for(Duration::from_secs(5), "the connection to be accepted", |x| x.accepted_total > before);
    c
}

/// Runs `setup` (which leaves a connection in some state), hangs up with `how`, and checks the
/// server cleans up. Returns the snapshot after cleanup.
fn scenario(name: &str, how: How, setup: impl FnOnce(&TestServer) -> Client) -> Snapshot {
    let s = common::start(common::config());
    let base = baseline(&s);
    let c = setup(&s);
    let peer_closes = s.query().closed_by_peer_total;
    hang_up(c, how);
    let what = format!("cleanup after {how:?} in state {name}");
    let snap = assert_back_to_baseline(&s, &base, &what);
    assert_eq!(snap.closed_by_peer_total, peer_closes + 1, "{what}: counted as closed by the peer");
    assert!(snap.on_close_max_per_conn <= 1, "{what}: on_close called twice for one connection");
    // And it still serves.
    common::assert_serves(s.addr);
    snap
}

fn idle_fresh(s: &TestServer) -> Client {
    connected(s)
}

fn idle_after_request(s: &TestServer) -> Client {
    let mut c = connected(s);
    assert_eq!(c.get("/plaintext").status, 200);
    c
}

fn mid_head(s: &TestServer) -> Client {
    let mut c = connected(s);
    c.send("GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Part");
    s.wait_for(Duration::from_secs(5), "nothing answered yet", |x| x.requests_total == 0);
    std::thread::sleep(Duration::from_millis(50));
    c
}

fn mid_body(s: &TestServer) -> Client {
    let mut c = connected(s);
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly part of it");
    std::thread::sleep(Duration::from_millis(50));
    c
}

fn mid_chunked_body(s: &TestServer) -> Client {
    let mut c = connected(s);
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly");
    std::thread::sleep(Duration::from_millis(50));
    c
}

fn held(s: &TestServer) -> Client {
    let mut c = connected(s);
    c.send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    s.wait_for(Duration::from_secs(5), "the responder to be kept", |x| x.held == 1);
    c
}

fn writing(s: &TestServer) -> Client {
    let mut c = Client::from_stream(common::connect_tiny(s.addr, 4096));
    c.send("GET /big?n=8000000 HTTP/1.1\r\nHost: t\r\n\r\n");
    // Some of the answer arrived: the server is in the middle of writing it.
    c.read_throttled(64 * 1024);
    std::thread::sleep(Duration::from_millis(50));
    c
}

macro_rules! both_ways {
    ($($name:ident => $setup:ident,)*) => {
        mod fin {
            $(
                #[test]
                fn $name() {
                    let _serial = super::common::serial();
                    let snap = super::scenario(stringify!($name), super::How::Fin, super::$setup);
                    assert_eq!(snap.on_close_calls, 0);
                }
            )*
        }
        mod rst {
            $(
                #[test]
                fn $name() {
                    let _serial = super::common::serial();
                    let snap = super::scenario(stringify!($name), super::How::Rst, super::$setup);
                    assert_eq!(snap.on_close_calls, 0);
                }
            )*
        }
    };
}

both_ways! {
    idle_fresh => idle_fresh,
    idle_after_request => idle_after_request,
    mid_head => mid_head,
    mid_body => mid_body,
    mid_chunked_body => mid_chunked_body,
    writing_a_big_response => writing,
}

fn kept_responder(how: How) {
    let _serial = common::serial();
    let s = common::start(common::config());
    let base = baseline(&s);
    let c = held(&s);
    hang_up(c, how);
    let snap = assert_back_to_baseline(&s, &base, &format!("cleanup after {how:?} with a kept responder"));
    assert_eq!(snap.on_close_calls, 1, "on_close exactly once");
    assert_eq!(snap.on_close_max_per_conn, 1);
    // The service still holds the responder: answering it now is a no-op.
    assert_eq!(s.release_held(), vec![Err(Closed)]);
    assert_back_to_baseline(&s, &base, "after answering a closed responder");
    assert_eq!(s.query().on_close_calls, 1, "no second on_close");
    common::assert_serves(s.addr);
}

#[test]
fn fin_while_a_kept_responder_waits() {
    kept_responder(How::Fin);
}

#[test]
fn rst_while_a_kept_responder_waits() {
    kept_responder(How::Rst);
}

/// Several kept responders on several connections, closed in different ways: one on_close
/// each, and the others unaffected.
#[test]
fn only_the_closed_connections_are_told() {
    let _serial = common::serial();
    let s = common::start(common::config());
    let clients: Vec<Client> = (0..4).map(|_| held_one(&s)).collect();
    s.wait_for(Duration::from_secs(5), "4 kept", |x| x.held == 4);
    let mut it = clients.into_iter();
    hang_up(it.next().unwrap(), How::Fin);
    hang_up(it.next().unwrap(), How::Rst);
    let snap =
        s.wait_for(Duration::from_secs(5), "2 on_close", |x| x.on_close_calls == 2 && x.connections == 2);
    assert_eq!(snap.on_close_max_per_conn, 1);
    let results = s.release_held();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 2);
    for mut c in it {
        assert_eq!(c.read_response().body_str(), "released");
    }
}

fn held_one(s: &TestServer) -> Client {
    let mut c = Client::connect(s.addr);
    c.send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    c
}

/// A client that half-closes and then stops reading a big answer: the connection legitimately
/// lives on (until the write timeout), and the loop must sleep meanwhile, not spin on the FIN.
#[test]
fn half_closed_client_not_reading_does_not_spin() {
    let _serial = common::serial();
    let s = common::start(common::config());
    let base = baseline(&s);
    let mut c = Client::from_stream(common::connect_tiny(s.addr, 4096));
    c.send("GET /big?n=8000000 HTTP/1.1\r\nHost: t\r\n\r\n");
    c.read_throttled(16 * 1024);
    c.shutdown_write();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.query().connections, 1);
    assert_idle(&s, "half-closed client not reading");
    hang_up(c, How::Rst);
    assert_back_to_baseline(&s, &base, "cleanup after the half-closed client reset");
}

/// A client that half-closes while its request is kept: the server closes (it cannot tell a
/// half-close from a client that left), tells the service once, and sleeps afterwards.
#[test]
fn half_close_while_a_kept_responder_waits() {
    let _serial = common::serial();
    let s = common::start(common::config());
    let base = baseline(&s);
    let c = held(&s);
    c.shutdown_write();
    let snap = s.wait_for(Duration::from_secs(5), "on_close", |x| x.on_close_calls == 1);
    assert_eq!(snap.on_close_max_per_conn, 1);
    drop(c);
    assert_back_to_baseline(&s, &base, "cleanup after half-close with a kept responder");
}

/// Many clients leaving at once, in all states and both ways.
#[test]
fn many_clients_leaving_at_once() {
    let _serial = common::serial();
    let s = common::start(common::config());
    let base = baseline(&s);
    let mut clients = Vec::new();
    for i in 0..60 {
        let mut c = Client::connect(s.addr);
        match i % 4 {
            0 => {}
            1 => c.send("GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Part"),
            2 => c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\npart"),
            _ => c.send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n"),
        }
        clients.push(c);
    }
    s.wait_for(Duration::from_secs(5), "all connected, 15 kept", |x| x.connections == 60 && x.held == 15);
    for (i, c) in clients.into_iter().enumerate() {
        hang_up(c, if i % 2 == 0 { How::Fin } else { How::Rst });
    }
    let snap = assert_back_to_baseline(&s, &base, "cleanup after 60 clients left");
    assert_eq!(snap.on_close_calls, 15);
    assert_eq!(snap.on_close_max_per_conn, 1);
    assert!(s.release_held().iter().all(|r| r.is_err()));
}
