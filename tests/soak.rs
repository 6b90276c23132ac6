//! The client half of `benches/soak.sh`: mixed load on a running hub for a given time, with
//! the server's descriptors, memory, held polls and timers sampled every 10 s into a CSV, and
//! at the end two checks: everything is back where it began once the load stops, and no
//! subscriber lost a message it was not told about (`missed`).
//!
//! It is an ignored test so that it reuses the suite's blocking client and JSON parser; it
//! does nothing unless the script sets `SOAK_ADDR` (the hub's address), `SOAK_PID` (its pid),
//! `SOAK_SECONDS` (how long to load it) and `SOAK_CSV` (where the samples go).
//! `SOAK_SKIP_RSS=1` leaves out the memory checks (`benches/valgrind.sh` runs the hub under
//! memcheck, whose RSS is the tool's, not the hub's).
//!
//! The load, per second and roughly: 4 publishers at ~80 messages/s each (one channel each,
//! bodies of 0..2000 bytes, some not UTF-8); 3 cursor-following subscribers per channel, one
//! of them slow enough to have messages evicted under it; `/work` jobs with bursts past the
//! queue (503 is expected); clients that abort (partial head or body then FIN or RST, a held
//! poll or a running job then RST, a pipeline then RST unread, a silent connection); and bad
//! requests, each with the status it must get.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use test_support::rng::Rng;

const CHANNELS: usize = 4;
const FOLLOWERS_PER_CHANNEL: usize = 3;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// State shared by the load threads.
struct Shared {
    addr: SocketAddr,
    /// Set when the load stops (publishers, jobs, aborters, bad requests stop at once).
    stop: AtomicBool,
    /// Highest seq acknowledged per channel, final once the publishers have stopped.
    acked: [AtomicU64; CHANNELS],
    publishers_done: AtomicBool,
    errors: Mutex<Vec<String>>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn count(&self, what: &'static str, n: u64) {
        *self.counts.lock().unwrap().entry(what).or_default() += n;
    }

    fn error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 50 {
            eprintln!("soak: ERROR {e}");
            errors.push(e);
        }
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

// ----- publishers --------------------------------------------------------------------------

fn publisher(sh: &Shared, ch: usize) {
    let mut rng = Rng::new(100 + ch as u64);
    let mut conn: Option<Client> = None;
    let mut i = 0u64;
    while !sh.stopped() {
        i += 1;
        let mut body = format!("c{ch}-{i}-").into_bytes();
        let pad = rng.below(2000) as usize;
        if i % 10 == 0 {
            body.extend((0..pad).map(|k| (k * 7 + 0x80) as u8)); // not UTF-8: data_b64
        } else {
            body.extend(std::iter::repeat(b'x').take(pad));
        }
        // Every 50th publish on a fresh connection, the rest on a keep-alive one.
        let fresh = i % 50 == 0;
        let c = if fresh {
            conn = None;
            Client::try_connect(sh.addr)
        } else {
            match conn.take() {
                Some(c) => Ok(c),
                None => Client::try_connect(sh.addr),
            }
        };
        let mut c = match c {
            Ok(c) => c,
            Err(e) => {
                sh.error(format!("publisher {ch}: connect: {e}"));
                sleep_ms(100);
                continue;
            }
        };
        let headers: &[(&str, &str)] = if fresh { &[("Connection", "close")] } else { &[] };
        let r = c.stream.write_all(&request_bytes("POST", &format!("/pub/soak-{ch}"), headers, &body));
        match r.map_err(|e| e.to_string()).and_then(|_| c.read_response().map_err(|e| e.to_string())) {
            Ok(r) if r.status == 200 => {
                let seq = r.json().get("seq").as_u64();
                let prev = sh.acked[ch].fetch_max(seq, Ordering::Relaxed);
                if seq != prev + 1 {
                    sh.error(format!("publisher {ch}: seq {seq} after {prev}"));
                }
                sh.count("published", 1);
                if !fresh {
                    conn = Some(c);
                }
            }
            Ok(r) => sh.error(format!("publisher {ch}: {} {}", r.status, r.text())),
            Err(e) => sh.error(format!("publisher {ch}: {e}")),
        }
        sleep_ms(8 + rng.below(8));
    }
}

// ----- followers ---------------------------------------------------------------------------

/// Follows `soak-{ch}` from seq 0 until the load stopped and it caught up with the last
/// acknowledged publish. Every answer is checked: its first seq is `cursor + missed + 1`, the
/// seqs are consecutive, `next` is the last one. Returns (received, missed, final cursor).
fn follower(sh: &Shared, ch: usize, idx: usize) -> (u64, u64, u64) {
    let slow = idx == 0;
    let mut rng = Rng::new(1000 + (ch * 10 + idx) as u64);
    let (mut received, mut missed, mut cursor) = (0u64, 0u64, 0u64);
    let mut conn: Option<Client> = None;
    let mut polls = 0u64;
    loop {
        let done = sh.publishers_done.load(Ordering::Relaxed);
        if done && cursor >= sh.acked[ch].load(Ordering::Relaxed) {
            break;
        }
        polls += 1;
        let mut c = match conn.take() {
            Some(c) => c,
            None => match Client::try_connect(sh.addr) {
                Ok(c) => c,
                Err(e) => {
                    sh.error(format!("follower {ch}.{idx}: connect: {e}"));
                    sleep_ms(100);
                    continue;
                }
            },
        };
        let timeout = if done { 1 } else { 1 + rng.below(5) };
        // Mostly `?since=`, sometimes the previous ETag in If-None-Match.
        let etag = format!("\"{cursor}\"");
        let raw = if polls % 7 == 0 {
            request_bytes(
                "GET",
                &format!("/sub/soak-{ch}?timeout={timeout}"),
                &[("If-None-Match", &etag)],
                b"",
            )
        } else {
            request_bytes("GET", &format!("/sub/soak-{ch}?since={cursor}&timeout={timeout}"), &[], b"")
        };
        let r = match c
            .stream
            .write_all(&raw)
            .map_err(|e| e.to_string())
            .and_then(|_| c.read_response().map_err(|e| e.to_string()))
        {
            Ok(r) => r,
            Err(e) => {
                sh.error(format!("follower {ch}.{idx}: {e}"));
                continue;
            }
        };
        match r.status {
            200 => {
                let j = r.json();
                let got = seqs(&j);
                let m = j.get("missed").as_u64();
                let next = j.get("next").as_u64();
                let want_first = cursor + m + 1;
                let consecutive = got.windows(2).all(|w| w[1] == w[0] + 1);
                if got.first() != Some(&want_first) || !consecutive || got.last() != Some(&next) {
                    sh.error(format!(
                        "follower {ch}.{idx}: cursor {cursor}, missed {m}, next {next}, seqs {got:?}"
                    ));
                }
                if j.opt("reset").is_some() {
                    sh.error(format!("follower {ch}.{idx}: unexpected reset at cursor {cursor}"));
                }
                if r.etag_seq() != format!("\"{next}\"") {
                    sh.error(format!("follower {ch}.{idx}: ETag {} for next {next}", r.etag_seq()));
                }
                received += got.len() as u64;
                missed += m;
                cursor = next;
                sh.count("polls answered 200", 1);
                sh.count("messages delivered", got.len() as u64);
            }
            304 => {
                if r.etag_seq() != etag {
                    sh.error(format!(
                        "follower {ch}.{idx}: 304 with ETag {} for cursor {cursor}",
                        r.etag_seq()
                    ));
                }
                sh.count("polls answered 304", 1);
            }
            s => sh.error(format!("follower {ch}.{idx}: {s} {}", r.text())),
        }
        // Now and then a new connection, as a browser would.
        if r.header("connection") != Some("close") && polls % 40 != 0 {
            conn = Some(c);
        }
        if slow && !done {
            // Falls behind: with --retain 200 at ~80 messages/s, some are evicted meanwhile.
            sleep_ms(if polls % 4 == 0 { 4000 } else { 200 });
        }
    }
    (received, missed, cursor)
}

// ----- /work -------------------------------------------------------------------------------

fn worker_client(sh: &Shared, id: u64) {
    let mut rng = Rng::new(5000 + id);
    while !sh.stopped() {
        // Mostly one job at a time; now and then a burst of 12, past the queue of 4.
        let n = if rng.below(20) == 0 { 12 } else { 1 };
        let hs: Vec<_> = (0..n)
            .map(|k| {
                let addr = sh.addr;
                let ms = (rng.below(30) + k) % 40;
                std::thread::spawn(move || {
                    let mut c = Client::try_connect(addr).map_err(|e| e.to_string())?;
                    let raw =
                        request_bytes("GET", &format!("/work?ms={ms}"), &[("Connection", "close")], b"");
                    c.stream.write_all(&raw).map_err(|e| e.to_string())?;
                    c.read_response().map(|r| r.status).map_err(|e| e.to_string())
                })
            })
            .collect();
        for h in hs {
            match h.join().unwrap() {
                Ok(200) => sh.count("work 200", 1),
                Ok(503) => sh.count("work 503 (queue full)", 1),
                Ok(s) => sh.error(format!("/work answered {s}")),
                Err(e) => sh.error(format!("/work: {e}")),
            }
        }
        sleep_ms(20 + rng.below(30));
    }
}

// ----- aborted clients ---------------------------------------------------------------------

fn aborter(sh: &Shared, id: u64) {
    let mut rng = Rng::new(7000 + id);
    while !sh.stopped() {
        let Ok(mut s) = TcpStream::connect(sh.addr) else {
            sh.error("aborter: connect".into());
            sleep_ms(100);
            continue;
        };
        let kind = rng.below(8);
        let _ = match kind {
            0 => s.write_all(b"GET /sub/soak-0?since=0 HT"),
            1 => {
                s.write_all(b"POST /pub/soak-abort HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
            }
            2 => s.write_all(b"GET /sub/soak-held?timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n"),
            3 => s.write_all(b"GET /work?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n"),
            4 => s.write_all(&b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200)),
            5 => s.write_all(
                b"POST /pub/soak-abort HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            ),
            _ => Ok(()), // connect and say nothing
        };
        sleep_ms(rng.below(if kind == 2 || kind == 3 { 300 } else { 50 }));
        if rng.below(2) == 0 {
            reset(s);
        } else {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        sh.count("aborted clients", 1);
        sleep_ms(20 + rng.below(40));
    }
}

// ----- bad requests ------------------------------------------------------------------------

fn bad_requests(sh: &Shared) {
    let long_header = format!("GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(20_000));
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("bad channel", b"GET /sub/no%20way HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &[400]),
        ("bad since", b"GET /sub/soak-0?since=abc HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &[400]),
        ("bad timeout", b"GET /sub/soak-0?since=0&timeout=9999 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &[400]),
        ("bad ms", b"GET /work?ms=99999 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &[400]),
        ("too big", b"POST /pub/soak-0 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n".to_vec(), &[413]),
        ("long header", long_header.into_bytes(), &[431]),
        ("garbage", b"\x16\x03\x01 hello?\r\n\r\n".to_vec(), &[400]),
        ("not found", b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &[404]),
        ("method", b"DELETE /pub/soak-0 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &[405]),
        ("smuggling", b"POST /pub/soak-0 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), &[400]),
        ("no host", b"GET /plaintext HTTP/1.1\r\n\r\n".to_vec(), &[400]),
        ("http2", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), &[505, 400]),
    ];
    let mut i = 0;
    while !sh.stopped() {
        let (name, raw, want) = &cases[i % cases.len()];
        i += 1;
        let mut c = match Client::try_connect(sh.addr) {
            Ok(c) => c,
            Err(e) => {
                sh.error(format!("bad request {name}: connect: {e}"));
                sleep_ms(100);
                continue;
            }
        };
        let r = c.stream.write_all(raw).map_err(|e| e.to_string());
        match r.and_then(|_| c.read_response().map_err(|e| e.to_string())) {
            Ok(r) if want.contains(&r.status) => sh.count("bad requests rejected", 1),
            Ok(r) => sh.error(format!("bad request {name}: {} {}", r.status, r.text())),
            Err(e) => sh.error(format!("bad request {name}: {e}")),
        }
        sleep_ms(40);
    }
}

// ----- samples -----------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sample {
    t: f64,
    fds: usize,
    rss_kib: u64,
    connections: u64,
    waiting: u64,
    timers: u64,
    channels: u64,
    retained: u64,
    published: u64,
    delivered: u64,
}

const CSV_HEAD: &str =
    "phase,t_s,fds,rss_kib,connections,waiting_polls,timers_pending,channels,retained_messages,published_total,delivered_total";

fn sample(addr: SocketAddr, pid: u32, t0: Instant) -> Sample {
    // Descriptors first: the /stats connection below is closed by the time of the next one.
    let fds = procfs::fd_count(pid).expect("read /proc/PID/fd");
    let s = stats(addr);
    let n = |k: &str| s.get(k).as_u64();
    Sample {
        t: t0.elapsed().as_secs_f64(),
        fds,
        rss_kib: procfs::rss_bytes(pid).expect("read /proc/PID/status") / 1024,
        connections: n("connections"),
        waiting: n("waiting_polls"),
        timers: n("timers_pending"),
        channels: n("channels"),
        retained: n("retained_messages"),
        published: n("published_total"),
        delivered: n("delivered_total"),
    }
}

fn csv_line(phase: &str, s: &Sample) -> String {
    format!(
        "{phase},{:.1},{},{},{},{},{},{},{},{},{}",
        s.t,
        s.fds,
        s.rss_kib,
        s.connections,
        s.waiting,
        s.timers,
        s.channels,
        s.retained,
        s.published,
        s.delivered
    )
}

/// Whether the server is idle: only the /stats connection, nothing held.
fn quiet(s: &Sample, base: &Sample) -> bool {
    s.connections == 1 && s.waiting == 0 && s.timers == base.timers && s.fds == base.fds
}

#[test]
#[ignore = "soak: run by benches/soak.sh"]
fn soak() {
    let Ok(addr) = std::env::var("SOAK_ADDR") else {
        println!("soak: SOAK_ADDR is not set; benches/soak.sh runs this");
        return;
    };
    let addr: SocketAddr = addr.parse().expect("SOAK_ADDR");
    let pid: u32 = std::env::var("SOAK_PID").expect("SOAK_PID").parse().expect("SOAK_PID");
    let seconds: f64 = std::env::var("SOAK_SECONDS").expect("SOAK_SECONDS").parse().expect("SOAK_SECONDS");
    let csv_path = std::env::var("SOAK_CSV").expect("SOAK_CSV");
    let mut csv = std::fs::File::create(&csv_path).expect("create SOAK_CSV");
    let mut row = |line: String| {
        println!("soak: {line}");
        writeln!(csv, "{line}").expect("write SOAK_CSV");
    };
    row(CSV_HEAD.to_string());

    let t0 = Instant::now();
    let base = sample(addr, pid, t0);
    row(csv_line("base", &base));
    assert!(quiet(&base, &base) && base.connections == 1, "the hub is not idle at the start: {base:?}");

    let sh = Arc::new(Shared {
        addr,
        stop: AtomicBool::new(false),
        acked: Default::default(),
        publishers_done: AtomicBool::new(false),
        errors: Mutex::new(Vec::new()),
        counts: Mutex::new(BTreeMap::new()),
    });
    let spawn = |f: Box<dyn FnOnce(&Shared) + Send>| {
        let sh = sh.clone();
        std::thread::spawn(move || f(&sh))
    };
    let publishers: Vec<_> = (0..CHANNELS).map(|ch| spawn(Box::new(move |sh| publisher(sh, ch)))).collect();
    let followers: Vec<_> = (0..CHANNELS)
        .flat_map(|ch| (0..FOLLOWERS_PER_CHANNEL).map(move |i| (ch, i)))
        .map(|(ch, i)| {
            let sh = sh.clone();
            (ch, i, std::thread::spawn(move || follower(&sh, ch, i)))
        })
        .collect();
    let mut others = vec![spawn(Box::new(bad_requests))];
    for id in 0..2 {
        others.push(spawn(Box::new(move |sh| worker_client(sh, id))));
        others.push(spawn(Box::new(move |sh| aborter(sh, id))));
    }

    // Load, sampling every 10 s.
    let mut samples = Vec::new();
    let end = t0 + Duration::from_secs_f64(seconds);
    let mut next = t0 + SAMPLE_EVERY;
    while next <= end {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let s = sample(addr, pid, t0);
        row(csv_line("load", &s));
        samples.push(s);
        next += SAMPLE_EVERY;
    }
    std::thread::sleep(end.saturating_duration_since(Instant::now()));

    // Stop: everything but the followers at once; the followers catch up, then leave.
    sh.stop.store(true, Ordering::Relaxed);
    for h in publishers {
        h.join().expect("publisher thread");
    }
    sh.publishers_done.store(true, Ordering::Relaxed);
    for h in others {
        h.join().expect("load thread");
    }
    let mut lost = Vec::new();
    let mut follower_lines = Vec::new();
    for (ch, i, h) in followers {
        let (received, missed, cursor) = h.join().expect("follower thread");
        let last = sh.acked[ch].load(Ordering::Relaxed);
        follower_lines
            .push(format!("{ch}.{i}: {received} received + {missed} missed = {cursor} (last {last})"));
        if received + missed != cursor || cursor != last {
            lost.push(format!(
                "follower {ch}.{i}: {received} received + {missed} missed, cursor {cursor}, last {last}"
            ));
        }
    }
    let stopped_at = t0.elapsed().as_secs_f64();

    // Quiesce: every count back where it began.
    let mut last = sample(addr, pid, t0);
    let settled = wait_until(Duration::from_secs(30), || {
        last = sample(addr, pid, t0);
        quiet(&last, &base)
    });
    std::thread::sleep(Duration::from_secs(1));
    let fin = sample(addr, pid, t0);
    row(csv_line("end", &fin));

    // ----- report and checks
    println!("soak: load stopped at {stopped_at:.1} s; settled {:.1} s later", fin.t - stopped_at - 1.0);
    for (k, v) in sh.counts.lock().unwrap().iter() {
        println!("soak: {k}: {v}");
    }
    for l in &follower_lines {
        println!("soak: follower {l}");
    }
    let peak_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(base.rss_kib);
    let peak_fds = samples.iter().map(|s| s.fds).max().unwrap_or(base.fds);
    let peak_conns = samples.iter().map(|s| s.connections).max().unwrap_or(0);
    println!(
        "soak: fds {} -> peak {peak_fds} -> {}; RSS {} KiB -> peak {peak_rss} KiB -> {} KiB; connections peak {peak_conns} -> {}; \
         waiting {} -> {}; timers {} -> {}",
        base.fds, fin.fds, base.rss_kib, fin.rss_kib, fin.connections, base.waiting, fin.waiting, base.timers, fin.timers
    );
    let mut failures: Vec<String> = sh.errors.lock().unwrap().clone();
    failures.extend(lost);
    if !settled || !quiet(&fin, &base) {
        failures.push(format!("not back to the start after the load: {fin:?}, start {base:?}"));
    }
    // Memory: the hub keeps retained messages (4 channels x --retain-bytes) and the buffer
    // pool keeps freed buffers, so RSS need not return to the very start; it must not grow
    // under steady load (a leak) nor stay far above the start once idle.
    const RSS_MARGIN_KIB: u64 = 16 * 1024;
    let check_rss = std::env::var_os("SOAK_SKIP_RSS").is_none();
    if check_rss && fin.rss_kib > base.rss_kib + RSS_MARGIN_KIB {
        failures.push(format!("RSS {} KiB at the end, {} KiB at the start", fin.rss_kib, base.rss_kib));
    }
    if check_rss && samples.len() >= 4 {
        // From the second sample (warmed up) to the last one under load.
        let (early, late) = (samples[1].rss_kib, samples[samples.len() - 1].rss_kib);
        if late > early + 4 * 1024 + early / 20 {
            failures.push(format!("RSS grew under steady load: {early} KiB at 20 s, {late} KiB at the end"));
        }
    }
    if failures.is_empty() {
        println!("soak: PASS ({} samples in {csv_path})", samples.len() + 2);
    } else {
        panic!("soak: FAIL\n{}", failures.join("\n"));
    }
}
