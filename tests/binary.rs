//! The `tidings` binary itself: --help, flag errors (exit code 2, one line naming the flag),
//! every flag accepted, and a graceful stop on SIGTERM/SIGINT (held polls get 304, exit 0).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const FLAGS: [&str; 23] = [
    "--listen",
    "--poll-timeout",
    "--max-message",
    "--max-batch",
    "--retain",
    "--retain-bytes",
    "--max-retained-bytes",
    "--message-ttl",
    "--max-answer-bytes",
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
    "--sse-heartbeat",
    "--max-stream-backlog",
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
        (&["--workers", "1025"], "--workers"),
        (&["--work-queue", "many"], "--work-queue"),
        (&["--work-queue", "1000001"], "--work-queue"),
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
    assert_eq!((r.status, r.etag_seq().as_str()), (304, "\"5\""));
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
    assert_eq!((r.status, r.etag_seq().as_str()), (304, "\"0\""));
    let r = cursor.read_response().expect("held poll answered at shutdown");
    assert_eq!((r.status, r.etag_seq().as_str()), (304, "\"2\""));
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
/// of 10^6 (2^64-1, accepted before the flag had a bound, was preallocated: "capacity
/// overflow" panic at start), a message and head limit of 2^64-1 (the read buffer cap is
/// their sum), retention and answer limits of 2^64-1 (the limits' consistency check adds to
/// them), a TTL of a year.
#[test]
fn limits_at_their_maximum_do_not_panic() {
    let max = u64::MAX.to_string();
    let server = Child::spawn(&[
        "--work-queue",
        "1000000",
        "--max-message",
        &max,
        "--max-header-bytes",
        &max,
        "--retain-bytes",
        &max,
        "--max-retained-bytes",
        &max,
        "--max-answer-bytes",
        &max,
        "--message-ttl",
        "31536000",
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
    test_support::process::kill(child.0.id(), libc::SIGTERM).expect("SIGTERM to our child");
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

/// Every flag that takes a number, with values beyond its range, malformed, huge or negative:
/// each is refused with exit 2 and one line naming the flag, never a panic (`--workers
/// 100000` used to abort in thread start-up: "failed to set up alternative stack guard page").
#[test]
fn extreme_values_of_every_numeric_flag_exit_2_with_one_line() {
    const NUMERIC: [(&str, &[&str]); 24] = [
        ("--poll-timeout", &["301", "31622401"]),
        ("--max-message", &[]),
        ("--max-batch", &["0"]),
        ("--retain", &["0"]),
        ("--retain-bytes", &["0", "65599"]),
        ("--max-retained-bytes", &["0", "1048575"]),
        ("--message-ttl", &["31622401"]),
        ("--max-answer-bytes", &["0", "87769"]),
        ("--max-channels", &["0"]),
        ("--workers", &["1025", "100000", "18446744073709551615"]),
        ("--work-queue", &["1000001", "18446744073709551615"]),
        ("--max-header-bytes", &["255"]),
        ("--max-headers", &["0"]),
        ("--header-timeout", &["0", "31622401"]),
        ("--body-timeout", &["0", "31622401"]),
        ("--keepalive-timeout", &["0", "31622401"]),
        ("--max-connections", &["0"]),
        ("--max-requests-per-connection", &["4294967296", "18446744073709551615"]),
        ("--shutdown-timeout", &["31622401"]),
        ("--ws-max-channels", &["0"]),
        ("--ws-max-message", &["124", "1073741825"]),
        ("--ws-ping", &["0", "31622401"]),
        ("--sse-heartbeat", &["0", "31622401"]),
        ("--max-stream-backlog", &["0"]),
    ];
    const ANY: [&str; 12] = [
        "-1",
        "18446744073709551616",
        "340282366920938463463374607431768211456",
        "99999999999999999999999999999999999999999999",
        "1e99",
        "0x10",
        "NaN",
        "inf",
        "1.5.5",
        "",
        " 1",
        "\u{0660}", // ARABIC-INDIC DIGIT ZERO: a digit to Unicode, not to us
    ];
    for (flag, own) in NUMERIC {
        for v in own.iter().chain(ANY.iter()) {
            let out = run(&["--listen", "127.0.0.1:0", flag, v], Duration::from_secs(20));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked"), "{flag} {v:?}: {stderr}");
            assert_eq!(out.status.code(), Some(2), "{flag} {v:?}: {stderr}");
            let text = stderr.trim_end_matches('\n');
            assert!(
                !text.contains('\n') && text.contains(flag),
                "{flag} {v:?}: not one line naming it: {stderr:?}"
            );
        }
    }
}

/// Every numeric flag at the top of its range at once: the hub starts (1,024 workers), serves,
/// and stops on SIGTERM with exit 0, without a panic.
#[test]
fn every_numeric_flag_at_its_maximum_starts_and_serves() {
    let max = u64::MAX.to_string();
    let year = (366 * 86_400).to_string();
    let mut server = Child::spawn(&[
        "--poll-timeout",
        "300",
        "--max-message",
        &max,
        "--max-batch",
        &max,
        "--retain",
        &max,
        "--retain-bytes",
        &max,
        "--max-retained-bytes",
        &max,
        "--message-ttl",
        &year,
        "--max-answer-bytes",
        &max,
        "--max-channels",
        &max,
        "--workers",
        "1024",
        "--work-queue",
        "1000000",
        "--max-header-bytes",
        &max,
        "--header-timeout",
        &year,
        "--body-timeout",
        &year,
        "--keepalive-timeout",
        &year,
        "--max-connections",
        &max,
        "--max-requests-per-connection",
        &u32::MAX.to_string(),
        "--shutdown-timeout",
        &year,
        "--ws-max-channels",
        &max,
        "--ws-max-message",
        "1073741824",
        "--ws-ping",
        &year,
        "--sse-heartbeat",
        &year,
        "--max-stream-backlog",
        &max,
    ]);
    let addr = server.addr;
    assert!(
        wait_until(Duration::from_secs(5), || server.stderr().contains("1024 workers")),
        "{}",
        server.stderr()
    );
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/plaintext").text(), "Hello, World!");
    assert_eq!(c.post("/pub/m", b"x").json().get("seq").as_u64(), 1);
    assert_eq!(seqs(&c.get("/sub/m?since=0").json()), vec![1]);
    assert_eq!(c.get("/work?ms=1").status, 200);
    drop(c);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(20)).expect("tidings did not stop");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}

/// The nice value (field 19 of `/proc/PID/task/TID/stat`) of every thread of `pid`, by name.
fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let Ok(stat) = std::fs::read_to_string(entry.expect("task").path().join("stat")) else { continue };
        let (open, close) = (stat.find('(').unwrap(), stat.rfind(')').unwrap());
        let name = stat[open + 1..close].to_string();
        let nice = stat[close + 2..].split(' ').nth(19 - 3).unwrap().parse().unwrap();
        let tid: u32 = stat[..open].trim().parse().unwrap();
        out.push((if tid == pid { "main".to_string() } else { name }, nice));
    }
    out
}

/// Worker threads run at nice 10, the loop's (main) thread at the nice it was started with.
#[test]
fn workers_run_at_nice_10_and_the_loop_at_0() {
    let server = Child::spawn(&["--workers", "3"]);
    assert_eq!(get(server.addr, "/work?ms=1").status, 200);
    let threads = thread_nices(server.pid);
    // Thread names are cut to 15 bytes by the kernel: "tidings-worker-".
    let workers: Vec<i64> =
        threads.iter().filter(|(n, _)| n.starts_with("tidings-worker")).map(|(_, nice)| *nice).collect();
    assert_eq!(workers, vec![10; 3], "{threads:?}");
    let main = threads.iter().find(|(n, _)| n == "main").expect("main thread").1;
    assert_eq!(main, 0, "{threads:?}");
    assert!(!server.stderr().contains("keep the loop's priority"), "{}", server.stderr());
}

/// `--workers 0`: no worker thread is started and `/work` is 404.
#[test]
fn workers_0_starts_no_thread() {
    let server = Child::spawn(&["--workers", "0"]);
    let said = || server.stderr().contains("no workers: /work is off");
    assert!(wait_until(Duration::from_secs(5), said), "{}", server.stderr());
    assert_eq!(get(server.addr, "/work?ms=1").status, 404);
    let threads = thread_nices(server.pid);
    assert_eq!(threads.len(), 1, "{threads:?}");
}

/// Worker threads that cannot be started (here: a 100 MB address space, far less than 1,024
/// thread stacks need) end the start with one line naming the failed thread and exit 1, not a
/// panic; the threads already started are joined.
#[test]
fn a_worker_thread_that_cannot_start_is_one_line_and_exit_1() {
    use test_support::limits::{set_soft_in_child, Resource};
    let mut cmd = Command::new(tidings_bin());
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "1024"]).stdin(Stdio::null());
    set_soft_in_child(&mut cmd, Resource::AddressSpace, 100_000_000);
    let out = cmd.output().expect("run tidings");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot start worker thread") && stderr.contains("of 1024"), "{stderr}");
}

/// SIGTERM while one `/work` job runs and another waits for the thread: both are answered 503
/// with Retry-After (a job not done is not answered as if it were), the running one as soon as
/// it has stopped, not after its 10 s; the hub exits 0.
#[test]
fn jobs_not_done_at_the_stop_are_answered_503() {
    let mut server = Child::spawn(&["--workers", "1"]);
    let addr = server.addr;
    let mut running = Client::connect(addr);
    running.send_request("GET", "/work?ms=10000", &[], b"");
    wait_stat(addr, "jobs_running", 1, Duration::from_secs(5));
    let mut queued = Client::connect(addr);
    queued.send_request("GET", "/work?ms=10000", &[], b"");
    wait_stat(addr, "jobs_queued", 1, Duration::from_secs(5));

    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    for c in [&mut queued, &mut running] {
        let r = c.read_response().expect("answered at the stop");
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "answered after {:?}", t0.elapsed());
    let status = server.wait_exit(Duration::from_secs(10)).expect("tidings did not exit");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
}
