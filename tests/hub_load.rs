//! The hub under load: a thousand waiters woken by one publish, a burst with re-polling
//! clients, the CPU cost of thousands of idle polls, cleanup after clients vanish, and fast
//! requests while the worker pool is busy.
//!
//! These tests measure time or CPU, so they run one at a time ([`serial`]).

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn one_publish_wakes_1000_waiters_exactly_once() {
    let _serial = serial();
    raise_nofile();
    let addr = start(opts());
    const N: usize = 1000;
    let mut subs = Vec::with_capacity(N);
    for _ in 0..N {
        let mut c = Client::connect(addr);
        c.send_request("GET", "/sub/crowd?since=0&timeout=60", &[], b"");
        subs.push(c);
    }
    wait_stat(addr, "waiting_polls", N as u64, Duration::from_secs(20));

    let t0 = Instant::now();
    let p = post(addr, "/pub/crowd", b"to everyone");
    assert_eq!(p.status, 200);
    assert_eq!(p.json(), Json::parse(&format!(r#"{{"seq":1,"subscribers":{N}}}"#)).unwrap());
    for s in &mut subs {
        let r = s.read_response().expect("every waiter gets an answer");
        assert_eq!(r.status, 200);
        assert_eq!(r.etag_seq(), "\"1\"");
        assert_eq!(messages(&r.json()), vec![(1, b"to everyone".to_vec())]);
    }
    println!("1000 waiters woken and answered in {:?}", t0.elapsed());

    // Exactly once: nothing more arrives on any of them.
    std::thread::sleep(Duration::from_millis(300));
    for (i, s) in subs.iter_mut().enumerate() {
        if let Err(extra) = s.expect_silence(Duration::from_millis(1)) {
            panic!("waiter {i} got more than one answer: {extra:?}");
        }
    }
    let s = stats(addr);
    assert_eq!(s.get("waiting_polls").as_u64(), 0);
    assert_eq!(s.get("delivered_total").as_u64(), N as u64);
    assert_eq!(s.get("published_total").as_u64(), 1);
    // Only the 1000 subscribers and this request are connected; no waiter is left to wake.
    assert_eq!(s.get("connections").as_u64(), N as u64 + 1);
    assert_eq!(post(addr, "/pub/crowd", b"again").json().get("subscribers").as_u64(), 0);
}

#[test]
fn burst_of_50_reaches_20_repolling_clients_in_order() {
    let _serial = serial();
    let addr = start(opts());
    const CLIENTS: usize = 20;
    const MESSAGES: u64 = 50;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut got: Vec<(u64, Vec<u8>)> = Vec::new();
                let mut cursor = 0;
                let mut polls = 0;
                let deadline = Instant::now() + Duration::from_secs(30);
                while got.len() < MESSAGES as usize {
                    assert!(Instant::now() < deadline, "stuck at {} messages", got.len());
                    let r = c.get(&format!("/sub/burst?since={cursor}&timeout=10"));
                    polls += 1;
                    match r.status {
                        200 => {
                            let j = r.json();
                            assert_eq!(j.get("missed").as_u64(), 0);
                            got.extend(messages(&j));
                            cursor = j.get("next").as_u64();
                            assert_eq!(r.etag_seq(), format!("\"{cursor}\""));
                        }
                        304 => assert_eq!(r.etag_seq(), format!("\"{cursor}\"")),
                        s => panic!("unexpected status {s}: {}", r.text()),
                    }
                }
                (got, polls)
            })
        })
        .collect();
    wait_stat(addr, "waiting_polls", CLIENTS as u64, Duration::from_secs(10));

    let t0 = Instant::now();
    let mut publisher = Client::connect(addr);
    for i in 1..=MESSAGES {
        let r = publisher.post("/pub/burst", format!("msg-{i}").as_bytes());
        assert_eq!(r.json().get("seq").as_u64(), i);
    }
    let want: Vec<(u64, Vec<u8>)> = (1..=MESSAGES).map(|i| (i, format!("msg-{i}").into_bytes())).collect();
    let mut polls = Vec::new();
    for h in clients {
        let (got, n) = h.join().expect("client thread");
        assert_eq!(got, want, "every message once, in order");
        polls.push(n);
    }
    println!(
        "burst of {MESSAGES} to {CLIENTS} re-polling clients in {:?}, polls per client {polls:?}",
        t0.elapsed()
    );
    assert_eq!(stat(addr, "delivered_total"), MESSAGES * CLIENTS as u64);
}

#[test]
fn idle_held_polls_cost_no_cpu() {
    let _serial = serial();
    raise_nofile(); // the child inherits it
    let server = Child::spawn(&["--poll-timeout", "300", "--keepalive-timeout", "300"]);
    let addr = server.addr;
    const N: usize = 5000;
    const CHANNELS: usize = 50;
    let t0 = Instant::now();
    let mut subs = Vec::with_capacity(N);
    for i in 0..N {
        let mut c = Client::connect(addr);
        c.send_request("GET", &format!("/sub/idle-{}", i % CHANNELS), &[], b"");
        subs.push(c);
    }
    wait_stat(addr, "waiting_polls", N as u64, Duration::from_secs(30));
    println!("{N} polls held after {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_millis(300));

    let wakeups_before = stat(addr, "loop_wakeups_total");
    let cpu_before = server.cpu_time();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let cpu = server.cpu_time() - cpu_before;
    let wall = start.elapsed();
    let wakeups = stat(addr, "loop_wakeups_total") - wakeups_before;
    let pct = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    println!(
        "{N} idle held polls: server CPU {:?} over {:?} = {pct:.2}% of a core; {wakeups} loop wake-ups \
         (including the two /stats requests)",
        cpu, wall
    );
    assert!(pct < 5.0, "idle polls cost {pct:.2}% of a core");
    assert!(wakeups < 200, "{wakeups} loop wake-ups while idle");

    // All still held, and a publish wakes exactly one channel's share.
    assert_eq!(stat(addr, "waiting_polls"), N as u64);
    let p = post(addr, "/pub/idle-0", b"hi");
    assert_eq!(p.json().get("subscribers").as_u64(), (N / CHANNELS) as u64);
    for s in subs.iter_mut().step_by(CHANNELS) {
        let r = s.read_response().unwrap();
        assert_eq!(seqs(&r.json()), vec![1]);
    }
    assert_eq!(stat(addr, "waiting_polls"), (N - N / CHANNELS) as u64);
}

#[test]
fn vanished_clients_leave_nothing_behind() {
    let _serial = serial();
    let server = Child::spawn(&["--workers", "2"]);
    let addr = server.addr;
    // Warm up every path used below.
    assert_eq!(get(addr, "/plaintext").status, 200);
    assert_eq!(post(addr, "/pub/kept", b"x").status, 200);
    assert_eq!(get(addr, "/work?ms=0").status, 200);
    let idle = |s: &Json| s.get("connections").as_u64() == 1 && s.get("waiting_polls").as_u64() == 0;
    assert!(wait_until(Duration::from_secs(5), || idle(&stats(addr))));
    let base = stats(addr);
    let base_timers = base.get("timers_pending").as_u64();
    let mut base_fds = 0;
    assert!(wait_until(Duration::from_secs(5), || {
        let n = server.fd_count();
        std::mem::replace(&mut base_fds, n) == n
    }));

    const POLLS: usize = 40;
    const JOBS: usize = 4;
    let mut polls = Vec::new();
    for i in 0..POLLS {
        let mut c = Client::connect(addr);
        // Half with a cursor and a timeout, half relying on the defaults.
        let target = if i % 2 == 0 { "/sub/gone?since=0&timeout=60" } else { "/sub/gone" };
        c.send_request("GET", target, &[], b"");
        polls.push(c);
    }
    let mut jobs = Vec::new();
    for _ in 0..JOBS {
        let mut c = Client::connect(addr);
        c.send_request("GET", "/work?ms=400", &[], b"");
        jobs.push(c);
    }
    wait_stat(addr, "waiting_polls", POLLS as u64, Duration::from_secs(5));
    wait_stat(addr, "jobs_running", 2, Duration::from_secs(5));
    let busy = stats(addr);
    assert_eq!(busy.get("jobs_queued").as_u64(), 2);
    assert_eq!(busy.get("connections").as_u64(), (POLLS + JOBS + 1) as u64);
    assert!(busy.get("timers_pending").as_u64() >= base_timers + POLLS as u64);
    assert_eq!(busy.get("channels").as_u64(), base.get("channels").as_u64() + 1);

    // Everyone leaves: half with FIN, half with RST.
    for (i, c) in polls.into_iter().chain(jobs).enumerate() {
        if i % 2 == 0 {
            c.close();
        } else {
            c.reset();
        }
    }
    let mut last = None;
    let clean = wait_until(Duration::from_secs(10), || {
        let s = stats(addr);
        let ok = idle(&s)
            && s.get("timers_pending").as_u64() == base_timers
            && s.get("jobs_running").as_u64() == 0
            && s.get("jobs_queued").as_u64() == 0;
        last = Some(s);
        ok
    });
    let last = last.unwrap();
    assert!(clean, "left behind: {last:?} (baseline timers_pending {base_timers})");
    assert_eq!(last.get("channels").as_u64(), base.get("channels").as_u64(), "the waiters' channel is gone");
    assert!(
        last.get("closed_by_peer_total").as_u64()
            >= base.get("closed_by_peer_total").as_u64() + (POLLS + JOBS) as u64
    );
    let fds_back = wait_until(Duration::from_secs(5), || server.fd_count() == base_fds);
    assert!(fds_back, "server fds: {} now, {base_fds} before", server.fd_count());

    // Still serving, and nobody is left waiting on the channel.
    assert_eq!(post(addr, "/pub/gone", b"late").json().get("subscribers").as_u64(), 0);
    assert_eq!(get(addr, "/work?ms=1").status, 200);
    let log = server.stderr();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn fast_requests_stay_fast_while_work_runs() {
    let _serial = serial();
    let addr = start(app::Options { workers: 3, ..opts() });
    let jobs: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let r = get(addr, "/work?ms=1500");
                (r, t0.elapsed())
            })
        })
        .collect();
    wait_stat(addr, "jobs_running", 3, Duration::from_secs(5));

    let mut c = Client::connect(addr);
    let mut worst = Duration::ZERO;
    let mut n = 0;
    let until = Instant::now() + Duration::from_millis(1000);
    while Instant::now() < until {
        for fresh in [false, true] {
            let t0 = Instant::now();
            let r = if fresh { get(addr, "/plaintext") } else { c.get("/plaintext") };
            let took = t0.elapsed();
            assert_eq!(r.text(), "Hello, World!");
            worst = worst.max(took);
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let running = stat(addr, "jobs_running");
    println!("{n} /plaintext requests during 3 x /work?ms=1500: slowest {worst:?}");
    assert!(running >= 1, "the jobs should still be running");
    assert!(worst < Duration::from_millis(200), "a /plaintext took {worst:?}");
    for h in jobs {
        let (r, took) = h.join().unwrap();
        assert_eq!(r.status, 200);
        assert!(r.json().get("took_ms").as_f64() >= 1500.0);
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
}
