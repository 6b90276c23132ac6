//! I/O readiness through the reactor, on real file descriptors: Unix socketpairs, TCP on
//! 127.0.0.1 ephemeral ports, and an eventfd.
//!
//! Covered: readiness (level-triggered), interest changes, deregistration, the three ways a
//! peer can go away (shutdown, close, reset) and what the loop does afterwards (no spin), and
//! the stale-token race that the token generation protects against.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use reactor::{sys, Event, Handler, Interest, Reactor, Ready, Token};

/// Records every event.
#[derive(Default)]
struct Recorder {
    events: Vec<Event>,
}

impl Handler<()> for Recorder {
    fn on_io(&mut self, _r: &mut Reactor<()>, ev: Event) {
        self.events.push(ev);
    }
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// (server side as accepted, client side), both connected over loopback TCP.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    (server, client)
}

/// One turn that must deliver exactly one event (waiting up to 2 s for it).
fn one_event(r: &mut Reactor<()>, h: &mut Recorder) -> Event {
    h.events.clear();
    let n = r.run_once(h, Some(Duration::from_secs(2))).unwrap();
    assert_eq!(n, 1, "expected one event, got {:?}", h.events);
    assert_eq!(h.events.len(), 1);
    h.events[0]
}

/// One turn of `ms` that must deliver nothing, and must actually wait (not return at once).
fn no_event(r: &mut Reactor<()>, h: &mut Recorder, ms: u64) {
    h.events.clear();
    let t = Instant::now();
    let n = r.run_once(h, Some(Duration::from_millis(ms))).unwrap();
    assert_eq!(n, 0, "unexpected events: {:?}", h.events);
    assert!(h.events.is_empty());
    assert!(t.elapsed() >= Duration::from_millis(ms * 9 / 10), "run_once returned early: {:?}", t.elapsed());
}

#[test]
fn readable_is_level_triggered() {
    let mut r = Reactor::<()>::new().unwrap();
    let mut h = Recorder::default();
    let (mut a, mut b) = pair();
    let tok = r.register(b.as_raw_fd(), Interest::READABLE, 7).unwrap();
    no_event(&mut r, &mut h, 50);

    a.write_all(b"xy").unwrap();
    let ev = one_event(&mut r, &mut h);
    assert_eq!((ev.token, ev.tag), (tok, 7));
    assert!(ev.ready.is_readable() && !ev.ready.is_writable());
    assert!(!ev.ready.is_closed() && !ev.ready.is_error());

    // Level-triggered: read only part of it, and we are told again.
    let mut buf = [0u8; 1];
    b.read_exact(&mut buf).unwrap();
    assert!(one_event(&mut r, &mut h).ready.is_readable());
    b.read_exact(&mut buf).unwrap();
    no_event(&mut r, &mut h, 50);
    assert_eq!(r.stats().events, 2);
    r.deregister(tok).unwrap();
}

#[test]
fn interest_changes_take_effect() {
    let mut r = Reactor::<()>::new().unwrap();
    let mut h = Recorder::default();
    let (mut a, b) = pair();
    a.write_all(b"pending").unwrap();
    let tok = r.register(b.as_raw_fd(), Interest::READABLE, 1).unwrap();
    assert_eq!(r.interest(tok), Some(Interest::READABLE));

    let ev = one_event(&mut r, &mut h);
    assert!(ev.ready.is_readable() && !ev.ready.is_writable());

    // WRITABLE only: the socket is writable, and the pending data is no longer reported.
    r.reregister(tok, Interest::WRITABLE).unwrap();
    assert_eq!(r.interest(tok), Some(Interest::WRITABLE));
    let ev = one_event(&mut r, &mut h);
    assert!(ev.ready.is_writable() && !ev.ready.is_readable(), "{:?}", ev.ready);

    // NONE: paused. Data pending and buffer space free, yet nothing is reported.
    r.reregister(tok, Interest::NONE).unwrap();
    no_event(&mut r, &mut h, 60);

    // Back to READABLE: the data that was there all along is reported again.
    r.reregister(tok, Interest::READABLE).unwrap();
    let ev = one_event(&mut r, &mut h);
    assert!(ev.ready.is_readable() && !ev.ready.is_writable());

    // BOTH, and the same interest again (a no-op).
    r.reregister(tok, Interest::READABLE.with(Interest::WRITABLE)).unwrap();
    r.reregister(tok, Interest::BOTH).unwrap();
    let ev = one_event(&mut r, &mut h);
    assert!(ev.ready.is_readable() && ev.ready.is_writable());
    assert_eq!(Interest::BOTH.without(Interest::READABLE), Interest::WRITABLE);
    r.deregister(tok).unwrap();
}

#[test]
fn deregistered_source_gets_no_events() {
    let mut r = Reactor::<()>::new().unwrap();
    let mut h = Recorder::default();
    let baseline = r.source_count();
    let (mut a, b) = pair();
    let tok = r.register(b.as_raw_fd(), Interest::BOTH, 3).unwrap();
    assert_eq!(r.source_count(), baseline + 1);
    a.write_all(b"data").unwrap();
    r.deregister(tok).unwrap();
    assert_eq!(r.source_count(), baseline);
    no_event(&mut r, &mut h, 60);

    // Not even a hang-up reaches it.
    drop(a);
    no_event(&mut r, &mut h, 60);

    // The token is dead for every operation.
    assert_eq!(r.deregister(tok).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    assert_eq!(r.reregister(tok, Interest::READABLE).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    assert_eq!(r.interest(tok), None);

    // The fd can be registered again (it really left the epoll set) and is then reported.
    let tok2 = r.register(b.as_raw_fd(), Interest::READABLE, 4).unwrap();
    let ev = one_event(&mut r, &mut h);
    assert_eq!((ev.token, ev.tag), (tok2, 4));
    assert_ne!(tok, tok2);
    r.deregister(tok2).unwrap();
}

#[test]
fn eventfd_as_a_source() {
    let mut r = Reactor::<()>::new().unwrap();
    let mut h = Recorder::default();
    let efd = sys::eventfd().unwrap();
    let tok = r.register(efd.raw(), Interest::READABLE, 11).unwrap();
    no_event(&mut r, &mut h, 30);
    sys::eventfd_signal(efd.raw()).unwrap();
    sys::eventfd_signal(efd.raw()).unwrap();
    let ev = one_event(&mut r, &mut h);
    assert_eq!((ev.token, ev.tag), (tok, 11));
    assert_eq!(sys::eventfd_drain(efd.raw()).unwrap(), 2);
    no_event(&mut r, &mut h, 30);
    r.deregister(tok).unwrap();
}

#[test]
fn tcp_listener_and_stream_readiness() {
    let mut r = Reactor::<()>::new().unwrap();
    let mut h = Recorder::default();
    let listener = reactor::net::Listener::bind("127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
    let ltok = r.register(listener.fd(), Interest::READABLE, 100).unwrap();
    no_event(&mut r, &mut h, 30);

    let mut client = TcpStream::connect(listener.local_addr()).unwrap();
    let ev = one_event(&mut r, &mut h);
    assert_eq!((ev.token, ev.tag), (ltok, 100));
    let (stream, peer) = listener.accept().unwrap();
    assert_eq!(peer, Some(client.local_addr().unwrap()));
    assert_eq!(listener.accept().unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
    let stok = r.register(stream.fd(), Interest::READABLE, 101).unwrap();
    no_event(&mut r, &mut h, 30);

    client.write_all(b"ping").unwrap();
    let ev = one_event(&mut r, &mut h);
    assert_eq!((ev.token, ev.tag), (stok, 101));
    let mut buf = Vec::with_capacity(16);
    assert_eq!(stream.read_into(&mut buf).unwrap(), 4);
    assert_eq!(buf, b"ping");
    assert_eq!(stream.write(b"pong").unwrap(), 4);
    let mut back = [0u8; 4];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"pong");
    r.deregister(stok).unwrap();
    r.deregister(ltok).unwrap();
}

// ---------------------------------------------------------------------------------------
// Peer close
// ---------------------------------------------------------------------------------------

/// Owns one connection; on hang-up or error it deregisters and closes it, as the rule says.
struct Closer<S: AsRawFd> {
    conn: Option<S>,
    token: Option<Token>,
    reports: Vec<Ready>,
    socket_error: Option<std::io::Error>,
}

impl<S: AsRawFd> Handler<()> for Closer<S> {
    fn on_io(&mut self, r: &mut Reactor<()>, ev: Event) {
        assert_eq!(Some(ev.token), self.token, "event for a source we no longer own");
        self.reports.push(ev.ready);
        if ev.ready.is_closed() || ev.ready.is_error() {
            let conn = self.conn.take().unwrap();
            if ev.ready.is_error() {
                self.socket_error = sys::take_socket_error(conn.as_raw_fd()).unwrap();
            }
            // Deregister first, then close (drop).
            r.deregister(self.token.take().unwrap()).unwrap();
            drop(conn);
        }
    }
}

/// Registers `conn`, runs `kill_peer`, and checks the close is reported exactly once, that
/// the handler could close it, and that the loop then sleeps instead of spinning.
fn check_peer_close<S: AsRawFd>(conn: S, kill_peer: impl FnOnce()) -> Closer<S> {
    let mut r = Reactor::<()>::new().unwrap();
    let baseline = r.source_count();
    let token = r.register(conn.as_raw_fd(), Interest::READABLE, 0).unwrap();
    let mut h = Closer { conn: Some(conn), token: Some(token), reports: Vec::new(), socket_error: None };
    assert_eq!(r.run_once(&mut h, Some(Duration::from_millis(20))).unwrap(), 0);

    kill_peer();
    for _ in 0..10 {
        if !h.reports.is_empty() {
            break;
        }
        r.run_once(&mut h, Some(Duration::from_millis(500))).unwrap();
    }
    assert_eq!(h.reports.len(), 1, "close reported {} times: {:?}", h.reports.len(), h.reports);
    assert!(h.conn.is_none() && h.token.is_none(), "handler did not close the connection");
    assert_eq!(r.source_count(), baseline);

    // No spin: the next turn has nothing to report and sleeps for the whole 200 ms.
    let iterations = r.stats().iterations;
    let cpu = test_support::cpu::thread_cpu_time();
    let t = Instant::now();
    let n = r.run_once(&mut h, Some(Duration::from_millis(200))).unwrap();
    let waited = t.elapsed();
    assert_eq!(n, 0);
    assert!(waited >= Duration::from_millis(180), "run_once returned after {waited:?}: spinning?");
    assert_eq!(r.stats().iterations, iterations + 1);
    assert!(
        test_support::cpu::thread_cpu_time() - cpu < Duration::from_millis(100),
        "the idle turn burned CPU"
    );
    assert_eq!(h.reports.len(), 1);
    h
}

#[test]
fn peer_shutdown_is_reported_once() {
    let (server, client) = tcp_pair();
    let h = check_peer_close(server, || client.shutdown(std::net::Shutdown::Write).unwrap());
    let ready = h.reports[0];
    assert!(ready.is_closed() && !ready.is_error(), "{ready:?}");
    assert!(ready.is_readable(), "EOF is readable too: {ready:?}");
}

#[test]
fn peer_close_fin_is_reported_once() {
    let (server, client) = tcp_pair();
    let h = check_peer_close(server, move || drop(client));
    let ready = h.reports[0];
    assert!(ready.is_closed() && !ready.is_error(), "{ready:?}");
}

#[test]
fn peer_reset_is_reported_once() {
    let (server, client) = tcp_pair();
    let h = check_peer_close(server, move || {
        test_support::sockets::set_linger_zero(client.as_raw_fd()).unwrap();
        drop(client); // close() with SO_LINGER {1, 0} sends RST instead of FIN
    });
    let ready = h.reports[0];
    assert!(ready.is_error(), "RST must be reported as an error: {ready:?}");
    let err = h.socket_error.expect("SO_ERROR should hold the reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[test]
fn unix_peer_close_is_reported_once() {
    let (a, b) = pair();
    let h = check_peer_close(b, move || drop(a));
    assert!(h.reports[0].is_closed());
}

#[test]
fn hangup_is_reported_until_deregistered() {
    // Why the rule exists: a hung-up source is "ready" on every turn, whatever its interest,
    // until it leaves the epoll set. A handler that ignores it makes the loop spin.
    let mut r = Reactor::<()>::new().unwrap();
    let mut h = Recorder::default();
    let (a, b) = pair();
    let tok = r.register(b.as_raw_fd(), Interest::NONE, 5).unwrap();
    drop(a);
    let t = Instant::now();
    for _ in 0..3 {
        let ev = one_event(&mut r, &mut h);
        assert!(ev.ready.is_closed(), "{:?}", ev.ready);
    }
    assert!(t.elapsed() < Duration::from_millis(1_500));
    r.deregister(tok).unwrap();
    no_event(&mut r, &mut h, 100);
}

// ---------------------------------------------------------------------------------------
// Stale tokens
// ---------------------------------------------------------------------------------------

const TAG_A: usize = 1;
const TAG_B: usize = 2;
const TAG_C: usize = 3;

/// Two sources ready in the same batch; whichever is dispatched first closes the other and
/// registers a newcomer C in the freed slot.
struct Reuser {
    a: Option<(UnixStream, Token)>,
    b: Option<(UnixStream, Token)>,
    /// (C's local end, C's peer, C's token, the victim's token)
    c: Option<(UnixStream, UnixStream, Token, Token)>,
    seen: Vec<(usize, Token)>,
}

impl Handler<()> for Reuser {
    fn on_io(&mut self, r: &mut Reactor<()>, ev: Event) {
        self.seen.push((ev.tag, ev.token));
        if self.c.is_some() {
            return;
        }
        let (mine, victim) = match ev.tag {
            TAG_A => (&mut self.a, &mut self.b),
            TAG_B => (&mut self.b, &mut self.a),
            other => panic!("unexpected tag {other}"),
        };
        let mut buf = [0u8; 8];
        let _ = mine.as_mut().unwrap().0.read(&mut buf);
        let (victim_sock, victim_tok) = victim.take().unwrap();
        r.deregister(victim_tok).unwrap();
        drop(victim_sock);
        let (c_local, c_peer) = pair();
        let c_tok = r.register(c_local.as_raw_fd(), Interest::READABLE, TAG_C).unwrap();
        self.c = Some((c_local, c_peer, c_tok, victim_tok));
    }
}

#[test]
fn stale_event_is_not_delivered_to_a_reused_slot() {
    let mut r = Reactor::<()>::new().unwrap();
    let (a, mut a_peer) = pair();
    let (b, mut b_peer) = pair();
    let ta = r.register(a.as_raw_fd(), Interest::READABLE, TAG_A).unwrap();
    let tb = r.register(b.as_raw_fd(), Interest::READABLE, TAG_B).unwrap();
    // Both readable before the turn starts, so both are in the same epoll_wait batch.
    a_peer.write_all(b"a").unwrap();
    b_peer.write_all(b"b").unwrap();

    let mut h = Reuser { a: Some((a, ta)), b: Some((b, tb)), c: None, seen: Vec::new() };
    let n = r.run_once(&mut h, Some(Duration::from_secs(2))).unwrap();
    let (c_tok, victim_tok) = h.c.as_ref().map(|c| (c.2, c.3)).unwrap();
    // The precondition of the race: C really took the victim's slab slot.
    assert_eq!(c_tok.key(), victim_tok.key(), "slot not reused; the test does not exercise the race");
    assert_ne!(c_tok, victim_tok);
    // The victim's event was dropped, not handed to C (which is not even readable).
    assert_eq!(n, 1, "events delivered: {:?}", h.seen);
    assert_eq!(h.seen.len(), 1);
    assert!(h.seen.iter().all(|&(tag, _)| tag != TAG_C));

    // C is idle; the survivor was drained: nothing more to report.
    h.seen.clear();
    assert_eq!(r.run_once(&mut h, Some(Duration::from_millis(50))).unwrap(), 0, "{:?}", h.seen);

    // C works normally under its own token.
    let c_peer = &mut h.c.as_mut().unwrap().1;
    c_peer.write_all(b"c").unwrap();
    assert_eq!(r.run_once(&mut h, Some(Duration::from_secs(2))).unwrap(), 1);
    assert_eq!(h.seen, vec![(TAG_C, c_tok)]);
}
