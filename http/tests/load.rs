//! Load-shaped tests: out of file descriptors (EMFILE, in a child process), many sequential
//! requests from a Nagle client, many concurrent keep-alive connections. They measure time
//! and CPU, so they run one at a time (`common::serial`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Client;

// ----- EMFILE ------------------------------------------------------------------------------

const EMFILE_CHILD_ENV: &str = "TIDINGS_HTTP_EMFILE_CHILD";
const EMFILE_LIMIT: u64 = 64;

/// The server role of [`emfile_does_not_spin_and_recovers`], run in a child process (the fd
/// limit is per process). Does nothing unless the parent set the environment variable.
#[test]
fn emfile_server_child() {
    if std::env::var_os(EMFILE_CHILD_ENV).is_none() {
        return;
    }
    test_support::limits::set_nofile_soft_limit(EMFILE_LIMIT).unwrap();
    let server = common::start(common::config());
    println!("EMFILE-ADDR {}", server.addr);
    std::io::stdout().flush().unwrap();
    // Serve until the parent closes our stdin (or a minute passes, so we never linger).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(60));
    drop(server);
}

/// Kills the child if the test fails half-way.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server runs with a limit of 64 fds and gets 200 connections: accept fails with EMFILE
/// while the kernel keeps the rest queued. The server must neither spin (the listener stays
/// readable) nor stop accepting for good: once clients leave, it serves again.
#[test]
fn emfile_does_not_spin_and_recovers() {
    let _serial = common::serial();
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args(["--exact", "emfile_server_child", "--nocapture", "--test-threads=1"])
        .env(EMFILE_CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let pid = child.0.id();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("child exited before printing its address").unwrap();
        // The harness prints "test emfile_server_child ... " on the same line.
        if let Some(i) = line.find("EMFILE-ADDR ") {
            break line[i + "EMFILE-ADDR ".len()..].trim().parse().unwrap();
        }
    };

    // More connections than the server has fds; each sends a request.
    let mut clients: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = common::connect(addr);
            s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // Some are served (the server works up to its limit), not all (it is out of fds).
    let mut served = 0;
    for s in &mut clients {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        if matches!(s.read(&mut buf), Ok(n) if n > 0) {
            served += 1;
        }
    }
    assert!(served > 0, "the server answered no one");
    assert!(served < clients.len(), "all {served} served: the fd limit did not bite");

    // Out of fds with connections pending: the loop must sleep, not spin on the listener.
    let cpu0 = test_support::procfs::cpu_time(pid).unwrap();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = test_support::procfs::cpu_time(pid).unwrap() - cpu0;
    let wall = t0.elapsed();
    eprintln!("EMFILE: {served} of {} served; server CPU {cpu:?} over {wall:?}", clients.len());
    assert!(cpu.as_secs_f64() < 0.3 * wall.as_secs_f64(), "server used {cpu:?} CPU in {wall:?} at EMFILE");

    // Clients leave: the server accepts again and serves a newcomer.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Client::from_stream(common::connect(addr));
        c.stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.send("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
        let mut buf = Vec::new();
        let mut tmp = [0u8; 1024];
        while common::find(&buf, b"Hello, World!").is_none() {
            match c.stream.read(&mut tmp) {
                Ok(n) if n > 0 => buf.extend_from_slice(&tmp[..n]),
                _ => break,
            }
        }
        if common::find(&buf, b"Hello, World!").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "not serving again 10 s after the clients left");
    }

    // Stop the child: close its stdin, it stops its server and exits successfully.
    drop(child.0.stdin.take());
    let t = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "child failed: {status}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "child did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ----- Nagle + delayed ACK ------------------------------------------------------------------

/// 2,000 requests one after another on one keep-alive connection, each sent as head and body
/// in two writes by a client with Nagle on (the default). The body waits for the ACK of the
/// head; if the server's kernel delays that ACK (it does, ~40 ms on Linux, once the exchange
/// looks interactive), every request stalls.
#[test]
fn sequential_requests_from_nagle_client_do_not_stall() {
    let _serial = common::serial();
    let s = common::start(common::config());
    let mut c = Client::connect(s.addr);
    assert!(!c.stream.nodelay().unwrap(), "the client must keep Nagle on");
    let n = 2000;
    let budget = Duration::from_secs(20);
    let started = Instant::now();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!("{:05}", i);
        let t = Instant::now();
        c.stream
            .write_all(
                format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len())
                    .as_bytes(),
            )
            .unwrap();
        c.stream.write_all(body.as_bytes()).unwrap();
        let r = c.read_response();
        times.push(t.elapsed());
        assert_eq!(r.body_str(), body);
        assert!(
            started.elapsed() < budget,
            "{} requests took {budget:?}; the last ones took {:?}",
            i + 1,
            &times[times.len().saturating_sub(3)..]
        );
    }
    let total = started.elapsed();
    times.sort();
    let (p50, p99, max) = (times[n / 2], times[n * 99 / 100], times[n - 1]);
    eprintln!(
        "{n} sequential requests (Nagle client): total {total:?}, p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    // A delayed-ACK stall hits every request, so the median shows it; p99 and max allow for a
    // noisy machine.
    assert!(p50 < Duration::from_millis(10), "median {p50:?}: requests stall");
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    assert!(max < Duration::from_millis(200), "max {max:?}");
}

/// The same with TCP_NODELAY on the client, as a reference: must be fast today.
#[test]
fn sequential_requests_from_nodelay_client_are_fast() {
    let _serial = common::serial();
    let s = common::start(common::config());
    let mut c = Client::connect(s.addr);
    c.stream.set_nodelay(true).unwrap();
    let n = 2000;
    let mut times = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let body = format!("{:05}", i);
        let t = Instant::now();
        c.send(format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len()));
        c.send(&body);
        assert_eq!(c.read_response().body_str(), body);
        times.push(t.elapsed());
        assert!(started.elapsed() < Duration::from_secs(20), "too slow after {} requests", i + 1);
    }
    times.sort();
    let (p50, p99, max) = (times[n / 2], times[n * 99 / 100], times[n - 1]);
    eprintln!(
        "{n} sequential requests (nodelay client): total {:?}, p50 {p50:?}, p99 {p99:?}, max {max:?}",
        started.elapsed()
    );
    assert!(p50 < Duration::from_millis(10), "median {p50:?}");
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    assert!(max < Duration::from_millis(200), "max {max:?}");
}

// ----- many connections ---------------------------------------------------------------------

/// 5,000 keep-alive connections open at once, each sends a request and gets its answer, and
/// all stay open.
#[test]
fn five_thousand_concurrent_keep_alive_connections() {
    let _serial = common::serial();
    let limit = test_support::limits::raise_nofile_limit().unwrap();
    let n = 5000;
    assert!(limit >= 2 * n as u64 + 100, "RLIMIT_NOFILE hard limit {limit} too low for {n} connections");
    let mut config = common::config();
    config.backlog = 4096;
    let s = common::start(config);
    let started = Instant::now();
    let mut clients: Vec<Client> = (0..n).map(|_| Client::connect(s.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\n{i:06}"));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response();
        assert_eq!((r.status, r.body_str()), (200, format!("{i:06}").as_str()), "connection {i}");
        assert!(!r.says_close());
    }
    let snap = s.wait_for(Duration::from_secs(10), "5,000 connections", |x| x.connections == n);
    assert_eq!(snap.requests_total, n as u64);
    eprintln!("{n} connections served in {:?}", started.elapsed());
    // A second round on the same connections.
    for c in clients.iter_mut().step_by(7) {
        assert_eq!(c.get("/plaintext").status, 200);
    }
    // The server closes them (graceful stop closes idle connections), then the clients go.
    let took = s.stop();
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    for c in &mut clients {
        c.expect_closed(Duration::from_secs(5));
    }
}
