//! The `tidings` binary itself: --help, flag errors (exit code 2, one line naming the flag),
//! every flag accepted, and a graceful stop on SIGTERM/SIGINT (held polls get 304, exit 0).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs the binary with `args` and returns its output; kills it if it runs for more than
/// `limit` (a bad flag that was accepted would start a server and never exit).
fn run(args: &[&str], limit: Duration) -> Output {
    let child = Command::new(tidings_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tidings");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let out = rx.recv().unwrap().expect("wait");
            panic!("tidings {args:?} did not exit; stderr: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

const FLAGS: [&str; 18] = [
    "--listen",
    "--poll-timeout",
    "--max-message",
    "--max-batch",
    "--retain",
    "--retain-bytes",
    "--max-channels",
    "--workers",
    "--work-queue",
    "--max-header-bytes",
    "--max-headers",
    "--header-timeout",
    "--body-timeout",
    "--keepalive-timeout",
    "--max-connections",
    "--max-requests-per-connection",
    "--access-log",
    "--help",
];

#[test]
fn help_lists_every_flag_and_exits_0() {
    let out = run(&["--help"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0));
    let usage = String::from_utf8(out.stdout).unwrap();
    for flag in FLAGS {
        assert!(usage.contains(flag), "--help does not mention {flag}:\n{usage}");
    }
}

#[test]
fn bad_flags_exit_2_with_one_line_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "--bogus"),
        (&["--bogus", "1"], "--bogus"),
        (&["--listen", "nowhere"], "--listen"),
        (&["--listen"], "--listen"),
        (&["--poll-timeout", "301"], "--poll-timeout"),
        (&["--poll-timeout", "abc"], "--poll-timeout"),
        (&["--poll-timeout=-1"], "--poll-timeout"),
        (&["--max-message", "lots"], "--max-message"),
        (&["--max-batch", "0"], "--max-batch"),
        (&["--retain", "x"], "--retain"),
        (&["--retain-bytes", "-5"], "--retain-bytes"),
        (&["--max-channels", "1.5"], "--max-channels"),
        (&["--workers", "0"], "--workers"),
        (&["--work-queue", "many"], "--work-queue"),
        (&["--max-header-bytes", "x"], "--max-header-bytes"),
        (&["--max-headers", "0"], "--max-headers"),
        (&["--header-timeout", "0"], "--header-timeout"),
        (&["--body-timeout", "soon"], "--body-timeout"),
        (&["--keepalive-timeout", ""], "--keepalive-timeout"),
        (&["--max-connections", "0"], "--max-connections"),
        (&["--max-requests-per-connection", "-1"], "--max-requests-per-connection"),
        (&["--retain"], "--retain"),
        (&["stray"], "stray"),
    ];
    for (args, flag) in cases {
        // An ephemeral port first, so a wrongly accepted flag cannot grab a real port.
        let mut all = vec!["--listen", "127.0.0.1:0"];
        if *flag == "--listen" {
            all.clear();
        }
        all.extend_from_slice(args);
        let out = run(&all, Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: stderr {stderr}");
        let text = stderr.trim_end_matches('\n');
        assert!(!text.is_empty() && !text.contains('\n'), "{args:?}: not one line: {stderr:?}");
        assert!(text.contains(flag), "{args:?}: error does not name {flag}: {text}");
        assert!(out.stdout.is_empty(), "{args:?}: printed to stdout");
    }
}

#[test]
fn every_flag_is_accepted_and_applied() {
    let server = Child::spawn(&[
        "--poll-timeout",
        "0.3",
        "--max-message",
        "8",
        "--max-batch",
        "2",
        "--retain",
        "3",
        "--retain-bytes=1000",
        "--max-channels",
        "2",
        "--workers",
        "1",
        "--work-queue",
        "4",
        "--max-header-bytes",
        "4096",
        "--max-headers",
        "5",
        "--header-timeout",
        "5",
        "--body-timeout",
        "5",
        "--keepalive-timeout",
        "5",
        "--max-connections",
        "100",
        "--max-requests-per-connection",
        "100",
        "--access-log",
    ]);
    let addr = server.addr;
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/plaintext").text(), "Hello, World!");
    // --max-message 8
    assert_eq!(c.post("/pub/f", b"12345678").status, 200);
    assert_eq!(post(addr, "/pub/f", b"123456789").status, 413);
    for i in 2..=5 {
        assert_eq!(c.post("/pub/f", b"m").json().get("seq").as_u64(), i);
    }
    // --retain 3, --max-batch 2
    let j = c.get("/sub/f?since=0").json();
    assert_eq!((seqs(&j), j.get("missed").as_u64()), (vec![3, 4], 2));
    // --poll-timeout 0.3: the default hold.
    let t0 = Instant::now();
    let r = c.get("/sub/f?since=5");
    assert_eq!((r.status, r.etag()), (304, "\"5\""));
    assert!(t0.elapsed() >= Duration::from_millis(250) && t0.elapsed() < Duration::from_secs(5));
    // --max-headers 5 (Client sends Host, and Content-Length with a body)
    let four = [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")];
    assert_eq!(c.get_with("/plaintext", &four).status, 200);
    assert_eq!(
        Client::connect(addr).get_with("/plaintext", &[four.as_slice(), &[("e", "5")]].concat()).status,
        431
    );
    // --max-channels 2
    assert_eq!(c.post("/pub/g", b"m").status, 200);
    assert_eq!(c.post("/pub/h", b"m").status, 503);
    // --access-log: one line per request on stderr.
    assert!(
        wait_until(Duration::from_secs(2), || server.stderr().contains("/plaintext")),
        "{}",
        server.stderr()
    );
}

#[test]
fn sigterm_stops_gracefully_answering_held_polls_with_304() {
    graceful_stop(libc::SIGTERM);
}

#[test]
fn sigint_stops_gracefully_too() {
    graceful_stop(libc::SIGINT);
}

fn graceful_stop(signo: i32) {
    let mut server = Child::spawn(&["--poll-timeout", "60"]);
    let addr = server.addr;
    post(addr, "/pub/s", b"one");
    post(addr, "/pub/s", b"two");
    // Held: no cursor on a new channel, a cursor on `s`, and an idle keep-alive connection.
    let mut fresh = Client::connect(addr);
    fresh.send_request("GET", "/sub/brand-new", &[], b"");
    let mut cursor = Client::connect(addr);
    cursor.send_request("GET", "/sub/s?since=2&timeout=120", &[], b"");
    let mut idle = Client::connect(addr);
    assert_eq!(idle.get("/plaintext").status, 200);
    wait_stat(addr, "waiting_polls", 2, Duration::from_secs(5));

    let t0 = Instant::now();
    server.signal(signo);
    let r = fresh.read_response().expect("held poll answered at shutdown");
    assert_eq!((r.status, r.etag()), (304, "\"0\""));
    let r = cursor.read_response().expect("held poll answered at shutdown");
    assert_eq!((r.status, r.etag()), (304, "\"2\""));
    assert!(t0.elapsed() < Duration::from_secs(3), "answered after {:?}", t0.elapsed());
    assert!(idle.is_closed_by_server(Duration::from_secs(5)), "idle connection not closed");
    let status = server.wait_exit(Duration::from_secs(10)).expect("tidings did not exit");
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
    assert!(t0.elapsed() < Duration::from_secs(5), "stopped after {:?}", t0.elapsed());
    // The port is closed.
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
}

/// An argument that is not UTF-8 is a usage error (exit 2, one line), not a panic
/// (`std::env::args()` panics on one).
#[test]
fn a_non_utf8_argument_exits_2() {
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(tidings_bin())
        .args(["--listen", "127.0.0.1:0", "--retain"])
        .arg(std::ffi::OsStr::from_bytes(b"\xff5"))
        .stdin(Stdio::null())
        .output()
        .expect("run tidings");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// Limits at the top of their range are accepted and do not overflow anything: a work queue
/// of 2^64-1 (was preallocated: "capacity overflow" panic at start), a message and head limit
/// of 2^64-1 (the read buffer cap is their sum).
#[test]
fn limits_at_their_maximum_do_not_panic() {
    let max = u64::MAX.to_string();
    let server = Child::spawn(&[
        "--work-queue",
        &max,
        "--max-message",
        &max,
        "--max-header-bytes",
        &max,
        "--max-headers",
        &max,
    ]);
    let addr = server.addr;
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/plaintext").text(), "Hello, World!");
    // More fields than the inline slots: the spill is sized by the head, not by the limit.
    let many: Vec<(String, String)> = (0..300).map(|i| (format!("x-{i}"), "v".to_string())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(c.get_with("/plaintext", &many).status, 200);
    assert_eq!(c.post("/pub/big", &vec![b'x'; 200_000]).json().get("seq").as_u64(), 1);
    assert_eq!(c.get("/work?ms=1").status, 200);
    assert_eq!(c.get("/sub/big?since=0").json().get("next").as_u64(), 1);
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}

/// stderr is a pipe whose reader went away (a log collector that died, `tidings | head`):
/// every later log line fails with EPIPE. With `--access-log` that is every request, and a
/// panicking `/work` job logs too: the hub must go on serving and still stop with exit 0.
/// (`eprintln!` panics on such a write error; the hub's logging drops the line instead.)
#[test]
fn a_closed_stderr_pipe_does_not_stop_the_hub() {
    use std::io::{BufRead, BufReader};
    /// Kills the child if the test fails half-way.
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new(tidings_bin())
        .args(["--listen", "127.0.0.1:0", "--access-log", "--workers", "1"])
        .env(app::service::TEST_PANIC_ENV, "7")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tidings");
    let pipe = child.stderr.take().expect("stderr pipe");
    let mut child = Guard(child);
    let mut lines = BufReader::new(pipe).lines();
    let addr = loop {
        let line = lines.next().expect("tidings did not start").expect("read stderr");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().expect("listening address");
        }
    };
    drop(lines); // closes the read end: every later write to stderr fails with EPIPE
    let mut c = Client::connect(addr);
    for _ in 0..3 {
        assert_eq!(c.get("/plaintext").text(), "Hello, World!");
    }
    assert_eq!(c.get("/work?ms=7").status, 500); // logs "/work job panicked"
    assert_eq!(c.post("/pub/x", b"m").status, 200);
    assert_eq!(get(addr, "/plaintext").status, 200);
    drop(c);
    // SAFETY: plain kill(2) on our own child's pid, not reaped yet.
    assert_eq!(unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("try_wait") {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            panic!("tidings did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status}");
}
