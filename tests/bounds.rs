//! Memory bounds of the hub under hostile input, through the real binary (its RSS read from
//! `/proc/PID/status`) or an in-process server: a publisher filling channels, an answer that
//! would amplify a 43-byte request, a fan-out to clients that do not read, and the TTL.
//!
//! The tests measure memory, so they run one at a time ([`serial`]).

mod common;

use std::io::Read as _;
use std::time::{Duration, Instant};

use common::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// A publisher sends 96 MiB of 64 KiB messages over 1,500 channels to a hub bounded at
/// 16 MiB. `retained_bytes` never passes the bound, the oldest messages go first (of any
/// channel), and the RSS stops growing: the last 64 MiB sent add (almost) nothing.
#[test]
fn a_publisher_filling_channels_stops_growing_at_the_bound() {
    let _serial = serial();
    let bound = 16 * MIB;
    let server = Child::spawn(&["--max-retained-bytes", &bound.to_string()]);
    let addr = server.addr;
    let start_rss = server.rss();
    let body = vec![b'm'; 64 * 1024];
    let mut c = Client::connect(addr);
    let mut rss_at = Vec::new();
    for i in 0..1536u64 {
        let r = c.post(&format!("/pub/fill-{}", i % 1500), &body);
        assert_eq!(r.status, 200, "publish {i}: {}", r.text());
        if (i + 1) % 512 == 0 {
            let s = stats(addr);
            let retained = s.get("retained_bytes").as_u64();
            assert!(retained <= bound, "retained_bytes {retained} > {bound}");
            rss_at.push(server.rss());
        }
    }
    let s = stats(addr);
    let kept = s.get("retained_messages").as_u64();
    // 16 MiB hold 255 messages of 64 KiB + 64 B: the newest 255 of the 1,536.
    assert_eq!(kept, bound / (64 * KIB + app::hub::MESSAGE_OVERHEAD as u64));
    assert_eq!(s.get("evicted_total").as_u64(), 1536 - kept);
    // The oldest went first: a channel published to early has nothing left, a late one has.
    let r = get(addr, "/sub/fill-100?since=0&timeout=0");
    assert_eq!(r.status, 304, "fill-100 (published to once, early) has nothing left");
    let j = get(addr, "/sub/fill-1499?since=0&timeout=0").json();
    assert_eq!(seqs(&j), vec![1]);
    println!(
        "RSS: start {} KiB, after 32/64/96 MiB sent: {:?} KiB",
        start_rss / KIB,
        rss_at.iter().map(|r| r / KIB).collect::<Vec<_>>()
    );
    let grown = rss_at[2].saturating_sub(rss_at[0]);
    assert!(grown < 4 * MIB, "RSS still grew by {} KiB after the bound was reached", grown / KIB);
    // The bound plus the allocator's slack and the buffers, not what was sent.
    assert!(rss_at[2] < start_rss + bound + 16 * MIB, "RSS {} KiB", rss_at[2] / KIB);
}

/// A 43-byte `GET /sub/x?since=0` on a channel of 100 messages of 64 KiB of control bytes
/// used to pin about 7 MiB of `\u00XX` escapes. Now each message is sent as base64 (its
/// escaped form is more than 4/3 of its size), each answer stays within --max-answer-bytes,
/// and following `next` still delivers every message exactly once.
#[test]
fn answers_are_bounded_and_control_bytes_go_as_base64() {
    // Channels keep 8 MiB here, so all 100 messages are retained.
    let addr = start(hub_opts(|h| h.retain_bytes = 8 << 20));
    let body = vec![1u8; 64 * 1024];
    let mut c = Client::connect(addr);
    for _ in 0..100 {
        assert_eq!(c.post("/pub/ctl", &body).status, 200);
    }
    let mut cursor = 0;
    let mut got = 0;
    while cursor < 100 {
        let r = c.get(&format!("/sub/ctl?since={cursor}&timeout=0"));
        assert!(r.body.len() <= 1024 * 1024, "answer of {} bytes", r.body.len());
        let j = r.json();
        let msgs = j.get("messages").as_array();
        assert!(!msgs.is_empty() && msgs.len() < 100, "{} messages in one answer", msgs.len());
        for m in msgs {
            assert!(m.opt("data").is_none(), "control bytes as a JSON string");
            assert_eq!(base64_decode(m.get("data_b64").as_str()), body);
            got += 1;
            assert_eq!(m.get("seq").as_u64(), got);
        }
        cursor = j.get("next").as_u64();
    }
    assert_eq!(got, 100);
    // Text whose escapes stay within 4/3 is still a JSON string.
    assert_eq!(c.post("/pub/txt", "a \"quoted\" word".as_bytes()).status, 200);
    let j = c.get("/sub/txt?since=0&timeout=0").json();
    assert_eq!(j.get("messages").as_array()[0].get("data").as_str(), "a \"quoted\" word");
}

/// 10,000 held polls whose clients advertise a 4 KiB receive window and do not read: one
/// 64 KiB message wakes them all. The answer body is built once and every connection's output
/// refers to it, so the server's RSS grows by about one body plus 10,000 heads, not 10,000
/// bodies (640 MiB). Then every client reads its answer: each gets the whole body, once.
#[test]
fn ten_thousand_unread_answers_hold_one_body() {
    let _serial = serial();
    let limit = raise_nofile();
    const N: usize = 10_000;
    assert!(limit >= N as u64 + 100, "RLIMIT_NOFILE hard limit {limit} is too low for {N} connections");
    let server = Child::spawn(&["--keepalive-timeout", "300", "--body-timeout", "300"]);
    let addr = server.addr;
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        let s = connect_with_small_window(addr);
        let mut c = Client::from_stream(s);
        c.send_request("GET", "/sub/big?timeout=120", &[], b"");
        clients.push(c);
    }
    wait_stat(addr, "waiting_polls", N as u64, Duration::from_secs(60));
    let before = server.rss();
    let body: Vec<u8> = (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let t0 = Instant::now();
    let p = post(addr, "/pub/big", &body);
    assert_eq!(p.json().get("subscribers").as_u64(), N as u64);
    wait_stat(addr, "waiting_polls", 0, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    let after = server.rss();
    let grown = after.saturating_sub(before);
    println!(
        "{N} unread answers of 64 KiB: RSS {} -> {} KiB (+{} KiB, {} B per connection), published in {:?}",
        before / KIB,
        after / KIB,
        grown / KIB,
        grown / N as u64,
        t0.elapsed()
    );
    assert!(grown < 24 * MIB, "RSS grew by {} KiB: the body is not shared", grown / KIB);
    // The first answer is checked in full; every other must be the same bytes (parsing
    // 10,000 JSON bodies of 64 KiB would make the test slow for nothing).
    let mut first: Option<Vec<u8>> = None;
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response().unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(r.status, 200, "client {i}");
        match &first {
            None => {
                assert_eq!(messages(&r.json()), vec![(1, body.clone())], "client {i}");
                first = Some(r.body);
            }
            Some(want) => assert!(r.body == *want, "client {i}: another answer"),
        }
    }
    for c in clients.iter_mut().step_by(101) {
        c.expect_silence(Duration::from_millis(1)).expect("a second answer");
    }
}

/// A TCP connection whose receive buffer is 4 KiB (set before connecting, so the window it
/// advertises stays small): the server's answers stay in the server.
fn connect_with_small_window(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let shape = sockets::Shape { recv_buffer: Some(4096), ..Default::default() };
    sockets::connect_shaped(addr, shape).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// With `--message-ttl`, an idle hub forgets everything: retained messages expire (from
/// the one TTL timer, with nobody asking), empty channels are dropped, and the loop goes
/// back to sleep (no timer left, no wake-ups).
#[test]
fn messages_expire_and_an_idle_hub_returns_to_empty() {
    let addr = start(hub_opts(|h| h.message_ttl_ms = 300));
    let mut c = Client::connect(addr);
    for i in 0..50 {
        assert_eq!(c.post(&format!("/pub/ttl-{i}"), b"soon gone").status, 200);
    }
    assert_eq!(stat(addr, "channels"), 50);
    wait_stat(addr, "channels", 0, Duration::from_secs(5));
    let s = stats(addr);
    assert_eq!(s.get("retained_messages").as_u64(), 0);
    assert_eq!(s.get("retained_bytes").as_u64(), 0);
    assert_eq!(s.get("evicted_total").as_u64(), 50);
    // No TTL timer is left: only the connections' keep-alive timers.
    assert!(s.get("timers_pending").as_u64() <= 2, "{s:?}");
    let wakeups = s.get("loop_wakeups_total").as_u64();
    std::thread::sleep(Duration::from_millis(500));
    let later = stat(addr, "loop_wakeups_total");
    // The asking itself wakes it a few times (a close, an accept, a read): a spin would be
    // thousands.
    assert!(later <= wakeups + 6, "idle loop woke {} times", later - wakeups);
    let mut buf = [0u8; 1];
    c.stream.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    assert!(c.stream.read(&mut buf).is_err(), "nothing unasked for");
}
