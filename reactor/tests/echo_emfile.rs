//! The echo example (`reactor/examples/echo.rs`) run out of file descriptors: it must not spin
//! on a listener it cannot serve, and it must serve the waiting clients once descriptors are
//! free again. Its own test binary: it lowers the whole process's RLIMIT_NOFILE.

#[path = "../examples/echo.rs"]
#[allow(dead_code)]
mod echo;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reactor::net::{ListenOptions, Listener};
use reactor::Reactor;
use test_support::{limits, procfs};

#[test]
fn echo_survives_running_out_of_descriptors() {
    let mut r = Reactor::<()>::new().unwrap();
    let listener = Listener::bind(([127, 0, 0, 1], 0).into(), ListenOptions::default()).unwrap();
    let addr = listener.local_addr();
    let mut server = echo::Echo::new(&mut r, listener).unwrap();

    // Room for 20 more descriptors in this process: 15 clients leave the server 5.
    let (soft, _hard) = limits::nofile_limit().unwrap();
    let open = procfs::fd_count(std::process::id()).unwrap() as u64;
    limits::set_nofile_soft_limit(open + 20).unwrap();
    // connect() completes in the kernel's backlog: no accept needed.
    let mut clients: Vec<TcpStream> = (0..15).map(|_| TcpStream::connect(addr).unwrap()).collect();

    let turns_before = r.stats().iterations;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        r.run_once(&mut server, Some(Duration::from_millis(50))).unwrap();
    }
    let turns = r.stats().iterations - turns_before;
    let accepted = server.connections();
    println!("{accepted} accepted, {turns} turns in 500 ms");
    assert!(accepted > 0 && accepted < 15, "precondition: the server ran out of fds ({accepted} accepted)");
    // Paused: a retry every 100 ms and a 50 ms max_wait make about 20 turns in 500 ms.
    // Spinning on the readable listener makes tens of thousands.
    assert!(turns <= 100, "{turns} turns in 500 ms: the loop spins on a listener it cannot serve");

    // Free descriptors: the first clients (the accepted ones) leave. The last client, still
    // in the backlog until now, must be accepted and echoed.
    clients.drain(..accepted);
    let last = clients.last_mut().unwrap();
    last.write_all(b"ping").unwrap();
    last.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let t = Instant::now();
    while got.len() < 4 {
        assert!(t.elapsed() < Duration::from_secs(5), "no echo once descriptors were free: {got:?}");
        r.run_once(&mut server, Some(Duration::from_millis(20))).unwrap();
        let mut buf = [0u8; 16];
        match last.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("client read: {e}"),
        }
    }
    assert_eq!(got, b"ping");
    drop(clients);
    limits::set_nofile_soft_limit(soft).unwrap();
}
