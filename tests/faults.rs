//! Fault injection at the hub level, through the real `tidings` binary (a child process) and
//! real sockets: a client that reads one byte per 10 ms behind 10,000 pipelined requests, the
//! process running out of file descriptors, 15,000 held polls from another process, a `/work`
//! job that panics, and SIGTERM in the middle of publishing and following.
//!
//! What the HTTP crate's own tests already cover is not repeated here (RST and FIN in every
//! connection state, half-close, EMFILE of the bare server): these check what the hub adds on
//! top (held polls, the worker pool, cursors, the binary's graceful stop).
//!
//! The tests measure time, memory or CPU, so they run one at a time ([`serial`]).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1024 * 1024;

/// A count of `responses_total` in `/stats` (0 if that status was never answered).
fn responses(s: &Json, status: u16) -> u64 {
    s.get("responses_total").opt(&status.to_string()).map_or(0, |n| n.as_u64())
}

// ----- a slow reader behind a deep pipeline ------------------------------------------------

/// One client pipelines 10,000 `GET /plaintext` and reads the answers one byte per 10 ms
/// (with a small receive buffer, so the kernel cannot soak them up). The server must stop
/// producing answers at the connection's output cap (1 MiB) instead of buffering all of
/// them, so its memory stays bounded, and it must keep serving everyone else at full speed
/// meanwhile. Bounded to a few seconds: the slow client never reads most of its answers.
#[test]
fn slow_reader_behind_10000_pipelined_requests_costs_bounded_memory_and_no_latency() {
    let _serial = serial();
    let server = Child::spawn(&[]);
    let addr = server.addr;
    // Warm up the paths used below, so the baseline includes their one-time allocations.
    for _ in 0..50 {
        assert_eq!(get(addr, "/plaintext").status, 200);
    }
    let base_rss = server.rss();
    let base_200 = responses(&stats(addr), 200);

    const N: usize = 10_000;
    let slow = TcpStream::connect(addr).expect("connect");
    sockets::set_int_option(slow.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4096).expect("SO_RCVBUF");
    slow.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer_end = slow.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let batch = "GET /plaintext HTTP/1.1\r\nHost: slow\r\n\r\n".repeat(N);
        // The server stops reading at its output cap, so this may block until the end of
        // the test: then it fails with a timeout or a reset, which is fine.
        writer_end.write_all(batch.as_bytes()).is_ok()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let mut s = slow.try_clone().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut byte = [0u8; 1];
            while !stop.load(Ordering::Relaxed) {
                match s.read(&mut byte) {
                    Ok(1) => got.push(byte[0]),
                    Ok(_) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            got
        })
    };

    // Meanwhile another client, on a keep-alive connection and on fresh ones.
    let mut other = Client::connect(addr);
    let mut worst = Duration::ZERO;
    let mut peak_rss = base_rss;
    let mut n = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for fresh in [false, true] {
            let t0 = Instant::now();
            let r = if fresh { get(addr, "/plaintext") } else { other.get("/plaintext") };
            worst = worst.max(t0.elapsed());
            assert_eq!(r.text(), "Hello, World!");
            n += 1;
        }
        peak_rss = peak_rss.max(server.rss());
        std::thread::sleep(Duration::from_millis(20));
    }
    let answered = responses(&stats(addr), 200) - base_200 - n;
    stop.store(true, Ordering::Relaxed);
    let read = reader.join().unwrap();
    assert!(
        read.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "the slow reader got {:?}",
        String::from_utf8_lossy(&read)
    );
    let growth = peak_rss.saturating_sub(base_rss);
    println!(
        "slow reader: {} bytes read in 3 s; {answered} of {N} pipelined requests answered so far; \
         server RSS {} KiB -> peak {} KiB (+{} KiB); {n} other /plaintext requests, slowest {worst:?}",
        read.len(),
        base_rss / 1024,
        peak_rss / 1024,
        growth / 1024
    );
    assert!(growth < 8 * MIB, "server RSS grew by {} KiB for one slow reader", growth / 1024);
    assert!(worst < Duration::from_millis(200), "another client waited {worst:?} for /plaintext");

    // The slow client leaves with an RST: the server forgets it and its pending output.
    reset(slow);
    let _ = writer.join();
    drop(other);
    wait_stat(addr, "connections", 1, Duration::from_secs(5));
    assert_eq!(get(addr, "/plaintext").text(), "Hello, World!");
}

// ----- out of file descriptors -------------------------------------------------------------

/// The hub runs with RLIMIT_NOFILE 64 and gets 200 held polls: accept fails with EMFILE and
/// the rest wait in the kernel's backlog. The hub must not spin (the listener stays readable),
/// must keep serving the connections it has (a publish reaches exactly the polls it holds),
/// and must serve newcomers again once the clients leave, with nothing left behind.
#[test]
fn out_of_fds_the_hub_sleeps_keeps_its_polls_and_recovers() {
    let _serial = serial();
    const LIMIT: u64 = 64;
    let server = Child::spawn_with(&["--poll-timeout", "60"], |cmd| {
        test_support::limits::set_soft_in_child(cmd, test_support::limits::Resource::OpenFiles, LIMIT);
    });
    let addr = server.addr;
    // A keep-alive connection made first: the way in while the hub is out of descriptors.
    let mut admin = Client::connect(addr);
    assert_eq!(admin.get("/plaintext").status, 200);
    assert_eq!(admin.post("/pub/warm", b"x").status, 200);
    assert!(
        wait_until(Duration::from_secs(5), || admin.get("/stats").json().get("connections").as_u64() == 1)
    );
    let base_fds = server.fd_count();
    let base_threads = server.thread_count();

    const CLIENTS: usize = 200;
    let mut polls: Vec<Client> = (0..CLIENTS)
        .map(|_| {
            let mut c = Client::connect(addr);
            c.send_request("GET", "/sub/fds?since=0&timeout=60", &[], b"");
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let s = admin.get("/stats").json();
    let held = s.get("waiting_polls").as_u64();
    assert_eq!(s.get("connections").as_u64(), held + 1, "{s:?}");
    assert!(held > 0 && held < CLIENTS as u64, "{held} of {CLIENTS} polls held: the limit did not bite");
    // Every descriptor number below the limit is taken: the hub is out of fds. (Numbers above
    // it can only be inherited ones, such as a jobserver pipe of the test harness.)
    let below_limit = std::fs::read_dir(format!("/proc/{}/fd", server.pid))
        .expect("read /proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&fd| fd < LIMIT)
        .count();
    assert_eq!(below_limit as u64, LIMIT, "{held} polls held");

    // Out of fds with connections queued: the loop must sleep, not spin on the listener.
    let cpu0 = server.cpu_time();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = server.cpu_time() - cpu0;
    let pct = cpu.as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    println!(
        "EMFILE: {held} of {CLIENTS} polls held with {LIMIT} fds; server CPU {cpu:?} = {pct:.1}% of a core"
    );
    assert!(pct < 30.0, "the hub used {pct:.1}% of a core while out of fds");

    // The hub still serves what it holds: a publish wakes exactly the held polls.
    let p = admin.post("/pub/fds", b"still here");
    assert_eq!(p.json().get("subscribers").as_u64(), held);
    std::thread::sleep(Duration::from_millis(300));
    let mut answered = 0;
    for c in &mut polls {
        c.set_read_timeout(Duration::from_millis(1));
        if let Ok(r) = c.read_response() {
            assert_eq!(messages(&r.json()), vec![(1, b"still here".to_vec())]);
            answered += 1;
        }
    }
    assert_eq!(answered, held, "every held poll, and only those, got the message");

    // Everyone leaves (half FIN, half RST): the hub accepts the queued ones (already gone),
    // closes them, and serves newcomers again.
    for (i, c) in polls.into_iter().enumerate() {
        if i % 2 == 0 {
            c.close();
        } else {
            c.reset();
        }
    }
    let recovered = wait_until(Duration::from_secs(10), || {
        let s = admin.get("/stats").json();
        s.get("connections").as_u64() == 1 && s.get("waiting_polls").as_u64() == 0
    });
    assert!(recovered, "not back to one connection: {:?}", admin.get("/stats").json());
    let mut fresh = Client::connect(addr);
    fresh.send_request("GET", "/sub/fds?since=1&timeout=10", &[], b"");
    wait_stat(addr, "waiting_polls", 1, Duration::from_secs(5));
    assert_eq!(post(addr, "/pub/fds", b"again").json().get("subscribers").as_u64(), 1);
    assert_eq!(seqs(&fresh.read_response().unwrap().json()), vec![2]);
    drop(fresh);
    let fds_back = wait_until(Duration::from_secs(5), || server.fd_count() == base_fds);
    assert!(fds_back, "server fds: {} now, {base_fds} before", server.fd_count());
    assert_eq!(server.thread_count(), base_threads);
    assert_eq!(admin.get("/stats").json().get("waiting_polls").as_u64(), 0);
}

// ----- 15,000 held polls -------------------------------------------------------------------

/// 15,000 connections, each with a held poll, from this process to the hub in another one
/// (both with RLIMIT_NOFILE raised to the hard limit). Half are woken by publishes to their
/// 100 channels, half time out with 304 after 2 s: every one gets exactly its answer.
#[test]
fn fifteen_thousand_held_polls_are_all_answered() {
    let _serial = serial();
    let limit = raise_nofile(); // the child inherits it
    const N: usize = 15_000;
    const CHANNELS: usize = 100;
    assert!(limit >= N as u64 + 100, "RLIMIT_NOFILE hard limit {limit} is too low for {N} connections");
    let server = Child::spawn(&["--keepalive-timeout", "300"]);
    let addr = server.addr;
    let t0 = Instant::now();
    // Even: woken by a publish (long timeout). Odd: a short timeout, answered 304.
    let mut clients = Vec::with_capacity(N);
    for i in 0..N {
        let mut c = Client::connect(addr);
        let target = if i % 2 == 0 {
            format!("/sub/pub-{}?since=0&timeout=120", (i / 2) % CHANNELS)
        } else {
            format!("/sub/quiet-{}?since=0&timeout=2", (i / 2) % CHANNELS)
        };
        c.send_request("GET", &target, &[], b"");
        clients.push(c);
    }
    let connected = t0.elapsed();
    let woken = (N / 2) as u64;
    let all_held = wait_until(Duration::from_secs(60), || {
        let s = stats(addr);
        s.get("waiting_polls").as_u64() == woken && responses(&s, 304) == woken
    });
    assert!(all_held, "not all polls held / timed out: {:?}", stats(addr));
    assert_eq!(stat(addr, "connections"), N as u64 + 1);
    let rss = server.rss();
    println!(
        "{N} connections made in {connected:?}; held / timed out after {:?}; server RSS {} MiB",
        t0.elapsed(),
        rss / MIB
    );

    let t1 = Instant::now();
    for ch in 0..CHANNELS {
        let p = post(addr, &format!("/pub/pub-{ch}"), format!("to {ch}").as_bytes());
        assert_eq!(p.json().get("subscribers").as_u64(), woken / CHANNELS as u64);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response().unwrap_or_else(|e| panic!("client {i} got no answer: {e}"));
        if i % 2 == 0 {
            assert_eq!(r.status, 200, "client {i}");
            let ch = (i / 2) % CHANNELS;
            assert_eq!(messages(&r.json()), vec![(1, format!("to {ch}").into_bytes())], "client {i}");
        } else {
            assert_eq!((r.status, r.etag_seq().as_str()), (304, "\"0\""), "client {i}");
        }
    }
    println!("{} publishes woke {woken} polls, all answers read in {:?}", CHANNELS, t1.elapsed());
    let s = stats(addr);
    assert_eq!(s.get("waiting_polls").as_u64(), 0);
    assert_eq!(s.get("delivered_total").as_u64(), woken);
    assert_eq!(responses(&s, 304), woken);
    // Exactly once: nothing more on a sample of them.
    for c in clients.iter_mut().step_by(97) {
        c.expect_silence(Duration::from_millis(1)).expect("a second answer");
    }
    drop(clients);
    wait_stat(addr, "connections", 1, Duration::from_secs(30));
}

// ----- a panicking job ---------------------------------------------------------------------

/// With the test-only `TIDINGS_TEST_PANIC_MS=7`, every `/work?ms=7` job panics in its worker
/// thread: each is answered 500, and the pool keeps all its threads, so ordinary jobs still
/// run, more of them than there are workers, one after another and in parallel.
#[test]
fn a_panicking_job_is_a_500_and_the_pool_keeps_its_threads() {
    let _serial = serial();
    const WORKERS: usize = 2;
    let server = Child::spawn_with(&["--workers", &WORKERS.to_string()], |cmd| {
        cmd.env(app::service::TEST_PANIC_ENV, "7");
    });
    let addr = server.addr;
    assert_eq!(get(addr, "/work?ms=1").status, 200);
    let threads = server.thread_count();

    for round in 0..3 * WORKERS {
        let r = get(addr, "/work?ms=7");
        assert_eq!((r.status, r.text().as_str()), (500, "job failed"), "round {round}");
        let r = get(addr, "/work?ms=1");
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        assert_eq!(r.json().get("ms").as_u64(), 1);
    }
    // In parallel: as many panics as workers at once, then as many good jobs.
    for (ms, want) in [(7, 500), (1, 200), (7, 500), (20, 200)] {
        let hs: Vec<_> = (0..2 * WORKERS)
            .map(|_| std::thread::spawn(move || get(addr, &format!("/work?ms={ms}")).status))
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), want, "/work?ms={ms}");
        }
    }
    // Only exactly that duration panics.
    assert_eq!(get(addr, "/work?ms=8").status, 200);
    let s = stats(addr);
    assert_eq!((s.get("jobs_running").as_u64(), s.get("jobs_queued").as_u64()), (0, 0));
    assert_eq!(responses(&s, 500), 3 * WORKERS as u64 + 4 * WORKERS as u64);
    assert_eq!(server.thread_count(), threads, "the pool lost or gained threads");
    let log = server.stderr();
    assert!(log.contains("/work job panicked"), "{log}");
}

// ----- SIGTERM under load ------------------------------------------------------------------

/// How a subscriber's following ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    /// Its held poll was answered 304 at shutdown (with this ETag), then the hub was gone.
    Shutdown304(String),
    /// Its last poll was answered 200 during the shutdown, then the hub was gone.
    Answered,
    /// The connection closed before an answer (a poll in flight when idle connections were
    /// closed): it could not keep polling until the stop.
    Closed(String),
}

struct Follower {
    channel: usize,
    seqs: Vec<u64>,
    end: End,
}

/// Follows `/sub/term-{channel}` from seq 0 with its cursor until the hub goes away.
fn follow(addr: SocketAddr, channel: usize) -> Follower {
    let name = format!("term-{channel}");
    let mut got = Vec::new();
    let mut cursor = 0;
    let mut c = Client::connect(addr);
    let end = loop {
        let raw = request_bytes("GET", &format!("/sub/{name}?since={cursor}&timeout=30"), &[], b"");
        if let Err(e) = c.stream.write_all(&raw) {
            break End::Closed(format!("write: {e}"));
        }
        let r = match c.read_response() {
            Ok(r) => r,
            Err(e) => break End::Closed(format!("read: {e}")),
        };
        match r.status {
            200 => {
                let j = r.json();
                assert_eq!(j.get("missed").as_u64(), 0);
                got.extend(seqs(&j));
                cursor = j.get("next").as_u64();
            }
            // Within the test a 304 can only come from the shutdown (timeout=30).
            304 => assert_eq!(r.header("connection"), Some("close"), "{r:?}"),
            s => panic!("follower of {name}: unexpected {s}: {}", r.text()),
        }
        if r.header("connection") == Some("close") {
            match Client::try_connect(addr) {
                Ok(again) => c = again,
                Err(_) if r.status == 304 => break End::Shutdown304(r.etag_seq().to_string()),
                Err(_) => break End::Answered,
            }
        }
    };
    Follower { channel, seqs: got, end }
}

/// Publishes to `term-{channel}` every few ms until the hub goes away; returns every seq it
/// was answered, with the moment the answer was read.
fn publish_until_stopped(addr: SocketAddr, channel: usize, id: usize) -> Vec<(u64, Instant)> {
    let mut acked = Vec::new();
    let mut c = match Client::try_connect(addr) {
        Ok(c) => c,
        Err(_) => return acked,
    };
    for i in 0.. {
        let raw =
            request_bytes("POST", &format!("/pub/term-{channel}"), &[], format!("p{id}-{i}").as_bytes());
        if c.stream.write_all(&raw).is_err() {
            break;
        }
        let Ok(r) = c.read_response() else { break };
        let at = Instant::now();
        assert_eq!(r.status, 200, "{r:?}");
        acked.push((r.json().get("seq").as_u64(), at));
        if r.header("connection") == Some("close") {
            match Client::try_connect(addr) {
                Ok(again) => c = again,
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(5 + (id as u64 % 3) * 2));
    }
    acked
}

/// SIGTERM while 4 publishers publish to 2 channels, 6 subscribers follow them with their
/// cursors, and `/work` and `/plaintext` clients keep asking. Every publish answered 200
/// before the signal reached every subscriber that kept polling until the stop; no
/// subscriber has a hole; held polls get 304; the hub exits 0 well within its deadline.
#[test]
fn sigterm_under_mixed_load_loses_no_acknowledged_message() {
    let _serial = serial();
    const DEADLINE: Duration = Duration::from_secs(5);
    let mut server = Child::spawn(&["--workers", "2", "--retain", "100000", "--retain-bytes", "100000000"]);
    let addr = server.addr;
    const CHANNELS: usize = 2;
    // Six followers of the two busy channels (between two polls or held at the stop, as it
    // happens), and two of a channel nobody publishes to: always held, so the stop must
    // answer them 304, whatever the timing.
    const IDLE: usize = CHANNELS;
    let followers: Vec<_> = (0..8)
        .map(|i| std::thread::spawn(move || follow(addr, if i < 6 { i % CHANNELS } else { IDLE })))
        .collect();
    wait_stat(addr, "waiting_polls", 8, Duration::from_secs(5));
    let publishers: Vec<_> = (0..4)
        .map(|i| std::thread::spawn(move || (i % CHANNELS, publish_until_stopped(addr, i % CHANNELS, i))))
        .collect();
    let others_stop = Arc::new(AtomicBool::new(false));
    let other_statuses = Arc::new(Mutex::new(Vec::new()));
    let others: Vec<_> = ["/work?ms=30", "/plaintext"]
        .into_iter()
        .map(|target| {
            let (stop, statuses) = (others_stop.clone(), other_statuses.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = Client::try_connect(addr) else { break };
                    let raw = request_bytes("GET", target, &[("Connection", "close")], b"");
                    if c.stream.write_all(&raw).is_err() {
                        break;
                    }
                    match c.read_response() {
                        Ok(r) => statuses.lock().unwrap().push((target, r.status)),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));

    let t_signal = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(DEADLINE + Duration::from_secs(5)).expect("tidings did not exit");
    let took = t_signal.elapsed();
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
    assert!(took < DEADLINE, "stopped after {took:?}, the deadline is {DEADLINE:?}");
    others_stop.store(true, Ordering::Relaxed);
    for h in others {
        h.join().unwrap();
    }
    // A `/work` job not done when the stop begins is answered 503 (come back later).
    let statuses = other_statuses.lock().unwrap().clone();
    let expected =
        |&(target, status): &(&str, u16)| status == 200 || (target.starts_with("/work") && status == 503);
    assert!(statuses.iter().all(expected), "/work or /plaintext answered {statuses:?}");
    assert!(statuses.iter().filter(|(_, s)| *s == 503).count() <= 1, "{statuses:?}");

    // Per channel: the last seq acknowledged before the signal, and the last one at all.
    let mut acked_before = [0u64; CHANNELS + 1];
    let mut acked_last = [0u64; CHANNELS + 1];
    let mut acked_sets: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); CHANNELS + 1];
    for h in publishers {
        let (ch, acks) = h.join().unwrap();
        for (seq, at) in acks {
            assert!(acked_sets[ch].insert(seq), "seq {seq} of channel {ch} acknowledged twice");
            acked_last[ch] = acked_last[ch].max(seq);
            if at < t_signal {
                acked_before[ch] = acked_before[ch].max(seq);
            }
        }
    }
    for ch in 0..CHANNELS {
        assert!(acked_before[ch] > 10, "channel {ch}: only {} publishes before the signal", acked_before[ch]);
        let want: BTreeSet<u64> = (1..=acked_last[ch]).collect();
        assert_eq!(acked_sets[ch], want, "channel {ch}: every publish the hub took was acknowledged");
    }
    let (mut ended_with_304, mut idle_ended_with_304) = (0, 0);
    for (i, h) in followers.into_iter().enumerate() {
        let f = h.join().unwrap();
        let ch = f.channel;
        if ch == IDLE && matches!(f.end, End::Shutdown304(_)) {
            idle_ended_with_304 += 1;
        }
        let last = f.seqs.last().copied().unwrap_or(0);
        let want: Vec<u64> = (1..=last).collect();
        assert_eq!(f.seqs, want, "subscriber {i} (channel {ch}) has holes or duplicates");
        assert!(last <= acked_last[ch], "subscriber {i} got seq {last}, never acknowledged");
        match &f.end {
            End::Shutdown304(etag) => {
                ended_with_304 += 1;
                assert_eq!(etag, &format!("\"{last}\""), "subscriber {i}: the 304 carries its cursor");
                assert!(
                    last >= acked_before[ch],
                    "subscriber {i} (channel {ch}) stopped at {last}, but {} was acknowledged before the signal",
                    acked_before[ch]
                );
            }
            End::Answered => {
                assert!(last >= acked_before[ch], "subscriber {i} (channel {ch}) stopped at {last}");
            }
            End::Closed(why) => {
                println!("subscriber {i} (channel {ch}) at {last}: closed without an answer ({why})")
            }
        }
    }
    println!(
        "SIGTERM: acknowledged before/at all {acked_before:?}/{acked_last:?}; {ended_with_304} of 8 subscribers \
         ended with the shutdown 304; {} other answers; exit 0 after {took:?}",
        statuses.len()
    );
    assert_eq!(
        idle_ended_with_304, 2,
        "the followers of the idle channel were held at the stop: 304 for both"
    );
}

/// A poll whose request is completed after SIGTERM (its head was half sent before): the
/// shutdown has already answered the held polls, so this one must be answered 304 at once
/// too, not held until the shutdown deadline and then cut off without an answer.
#[test]
fn a_poll_completed_during_shutdown_is_answered_at_once() {
    let _serial = serial();
    let mut server = Child::spawn(&["--shutdown-timeout", "5"]);
    let addr = server.addr;
    let mut held = Client::connect(addr);
    held.send_request("GET", "/sub/late?since=0&timeout=60", &[], b"");
    let mut late = Client::connect(addr);
    late.send(b"GET /sub/late?since=0&timeout=60 HTTP/1.1\r\nHost: x\r\n");
    wait_stat(addr, "waiting_polls", 1, Duration::from_secs(5));

    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    let r = held.read_response().expect("held poll answered at shutdown");
    assert_eq!(r.status, 304);
    late.send(b"\r\n");
    late.set_read_timeout(Duration::from_secs(10));
    let r = late.read_response();
    let answered = t0.elapsed();
    let status = server.wait_exit(Duration::from_secs(10)).expect("tidings did not exit");
    let took = t0.elapsed();
    println!(
        "late poll: {:?} after {answered:?}; exit {status} after {took:?}",
        r.as_ref().map(|r| r.status)
    );
    assert_eq!(r.expect("the late poll got no answer").status, 304);
    assert!(answered < Duration::from_secs(1), "the late poll was answered after {answered:?}");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(2), "stopped after {took:?}, held by the late poll");
}

// ----- the connection limit ----------------------------------------------------------------

/// With `--max-connections 3`, a fourth client is not refused and not answered: its
/// connection waits in the kernel's backlog (the hub stops accepting) while the three are
/// served, and it is served as soon as one of them leaves.
#[test]
fn past_max_connections_newcomers_wait_in_the_backlog_until_one_leaves() {
    let _serial = serial();
    let server = Child::spawn(&["--max-connections", "3"]);
    let addr = server.addr;
    let mut three: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = Client::connect(addr);
            assert_eq!(c.get("/plaintext").status, 200);
            c
        })
        .collect();
    // The TCP handshake completes in the kernel; the hub does not accept it yet.
    let mut late = Client::connect(addr);
    late.send_request("GET", "/plaintext", &[], b"");
    late.expect_silence(Duration::from_millis(500)).expect("answered past --max-connections");
    assert_eq!(three[0].get("/stats").json().get("connections").as_u64(), 3);
    assert_eq!(three[1].get("/plaintext").status, 200, "the hub still serves the three");

    let t0 = Instant::now();
    three.pop().unwrap().close();
    let r = late.read_response().expect("served once a slot was free");
    assert_eq!(r.text(), "Hello, World!");
    assert!(t0.elapsed() < Duration::from_secs(2), "served {:?} after a slot was freed", t0.elapsed());
    assert_eq!(three[0].get("/stats").json().get("connections").as_u64(), 3);
}
