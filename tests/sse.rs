//! `GET /sse/{channel}` (Server-Sent Events) end to end, through real sockets.
//!
//! - Python's standard library reads the raw stream (`tests/sse/raw_client.py`): the head,
//!   `retry:`, multi-line and binary messages, heartbeats, a reconnect with `Last-Event-ID`
//!   that gets exactly what was published meanwhile. python3 is part of the machine's base: if
//!   it is missing the test fails and says so.
//! - A reader that never reads is dropped once its unsent output passes
//!   `--max-stream-backlog` (and counted); a reader beside it gets everything.
//! - A reader catching up on a backlog many times `--max-stream-backlog` is fed as it reads,
//!   never dropped.
//! - The cursor: `since` with a stale epoch gives `event: reset` first; no cursor gives only
//!   what is published after; a bad `Last-Event-ID` is a 400; shutdown ends the streams.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// One event of a stream (comments and `retry:` are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    event: Option<String>,
    id: Option<String>,
    data: String,
}

/// An SSE stream read over HTTP/1.0 (raw bytes until the close, no chunking to undo).
struct SseReader {
    stream: TcpStream,
    buf: Vec<u8>,
    head: String,
}

impl SseReader {
    fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> SseReader {
        let mut stream = TcpStream::connect(addr).expect("connect");
        SseReader::send(&mut stream, target, headers);
        let mut r = SseReader { stream, buf: Vec::new(), head: String::new() };
        let end = loop {
            if let Some(i) = r.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(r.fill() > 0, "closed before the head");
        };
        r.head = String::from_utf8(r.buf.drain(..end + 4).collect()).expect("head");
        r
    }

    fn send(stream: &mut TcpStream, target: &str, headers: &[(&str, &str)]) {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut req = format!("GET {target} HTTP/1.0\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).expect("send");
    }

    fn status(&self) -> u16 {
        self.head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 16 * 1024];
        let n =
            self.stream.read(&mut tmp).unwrap_or_else(|e| panic!("read: {e}; buffered {:?}", self.text()));
        self.buf.extend_from_slice(&tmp[..n]);
        n
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// The next event with data.
    fn event(&mut self) -> Event {
        loop {
            let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") else {
                assert!(self.fill() > 0, "the stream ended; buffered {:?}", self.text());
                continue;
            };
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let block = String::from_utf8(block).expect("UTF-8 events");
            let mut ev = Event { event: None, id: None, data: String::new() };
            let mut lines = 0;
            for line in block.lines() {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match name {
                    "data" => {
                        if lines > 0 {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(value);
                        lines += 1;
                    }
                    "event" => ev.event = Some(value.to_string()),
                    "id" => ev.id = Some(value.to_string()),
                    _ => {}
                }
            }
            if lines > 0 {
                return ev;
            }
        }
    }

    /// Reads until the server closes; what came.
    fn rest(&mut self) -> String {
        while self.fill() > 0 {}
        self.text()
    }
}

fn sse_opts(heartbeat_ms: u64, backlog: usize) -> app::Options {
    let mut o = opts();
    o.sse_heartbeat = Duration::from_millis(heartbeat_ms);
    o.max_stream_backlog = backlog;
    o
}

#[test]
fn python_reads_the_raw_stream_heartbeats_lines_and_resumes_by_last_event_id() {
    let addr = start(sse_opts(200, 1 << 20));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sse/raw_client.py");
    let out = match Command::new("python3").arg(&script).arg(addr.to_string()).arg("py").output() {
        Ok(out) => out,
        Err(e) => panic!(
            "python3 could not be run ({e}): this test needs Python 3 (standard library only) on \
             PATH; it is part of the machine's base, install it (e.g. apt-get install python3)"
        ),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "raw_client.py failed ({}):\n{stderr}{stdout}", out.status);
    assert!(stdout.contains("raw_client.py: ok"), "{stdout}");
    assert_eq!(stat(addr, "sse_streams"), 0, "both streams are gone with their clients");
}

#[test]
fn a_reader_that_never_reads_is_dropped_and_the_others_get_everything() {
    let addr = start(sse_opts(60_000, 64 * 1024));
    let mut good = SseReader::open(addr, "/sse/slow", &[]);
    assert_eq!(good.status(), 200, "{}", good.head);
    // A small receive buffer, never read.
    let shape = sockets::Shape { recv_buffer: Some(4096), ..Default::default() };
    let mut stuck = sockets::connect_shaped(addr, shape).expect("connect");
    SseReader::send(&mut stuck, "/sse/slow", &[]);
    wait_stat(addr, "sse_streams", 2, Duration::from_secs(5));

    // Publish until the stuck one's output passes the limit (the kernel's buffers take the
    // first part of it; 64 MB would be far past them).
    let msg = vec![b'x'; 16 * 1024];
    let mut sent = 0u32;
    while stat(addr, "streams_dropped_slow_total") == 0 {
        assert!(sent < 4000, "a reader that never reads was not dropped after {sent} messages");
        let mut m = format!("{sent:05}").into_bytes();
        m.extend_from_slice(&msg);
        assert_eq!(post(addr, "/pub/slow", &m).status, 200);
        // The good reader keeps up, in order.
        let ev = good.event();
        assert_eq!(&ev.data[..5], format!("{sent:05}"), "message {sent}");
        sent += 1;
    }
    assert_eq!(stat(addr, "streams_dropped_slow_total"), 1, "dropped once");
    assert_eq!(stat(addr, "sse_streams"), 1, "the good one stays");
    assert!(post(addr, "/pub/slow", b"after").json().opt("subscribers").and_then(|v| v.u64()) == Some(1));
    assert_eq!(good.event().data, "after");
    let metrics = get(addr, "/metrics").text();
    assert!(metrics.contains("tidings_streams_dropped_slow_total 1\n"), "{metrics}");
    assert!(metrics.contains("tidings_sse_streams 1\n"), "{metrics}");
}

#[test]
fn a_backlog_far_over_the_stream_limit_is_fed_as_the_reader_reads() {
    let mut o = sse_opts(60_000, 16 * 1024);
    o.hub.retain_bytes = 8 << 20;
    let addr = start(o);
    let n = 300;
    for i in 0..n {
        let m = format!("{i:04}{}", "y".repeat(8 * 1024));
        assert_eq!(post(addr, "/pub/big", m.as_bytes()).status, 200);
    }
    // 2.4 MB of backlog, 150 times the limit: a reader from the start is never dropped.
    let mut r = SseReader::open(addr, "/sse/big?since=0", &[]);
    for i in 0..n {
        let ev = r.event();
        assert_eq!(&ev.data[..4], format!("{i:04}"), "in order");
        assert_eq!(ev.id.as_deref().map(|id| id.ends_with(&format!(":{}", i + 1))), Some(true));
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(20)); // a slowish reader
        }
    }
    assert_eq!(stat(addr, "streams_dropped_slow_total"), 0);
    // Caught up, then live.
    post(addr, "/pub/big", b"live");
    assert_eq!(r.event().data, "live");
}

#[test]
fn cursors_resets_and_errors() {
    let addr = start(sse_opts(60_000, 1 << 20));
    let first = post(addr, "/pub/cur", b"a").json();
    assert_eq!(first.opt("seq").and_then(|v| v.u64()), Some(1));
    post(addr, "/pub/cur", b"b");
    // No cursor: only what is published after the request.
    let mut fresh = SseReader::open(addr, "/sse/cur", &[]);
    for h in ["Content-Type: text/event-stream", "Cache-Control: no-cache", "X-Accel-Buffering: no"] {
        assert!(fresh.head.contains(h), "{h}: {}", fresh.head);
    }
    while fresh.buf.len() < b"retry: 2000\n\n".len() {
        assert!(fresh.fill() > 0, "closed");
    }
    assert!(fresh.buf.starts_with(b"retry: 2000\n\n"), "{:?}", fresh.text());
    wait_stat(addr, "sse_streams", 1, Duration::from_secs(5));
    post(addr, "/pub/cur", b"c");
    let c = fresh.event();
    assert_eq!(c.data, "c");
    let epoch = c.id.as_deref().and_then(|id| id.split_once(':')).map(|(e, _)| e.to_string()).unwrap();
    // The query's cursor wins over Last-Event-ID.
    let mut q = SseReader::open(addr, "/sse/cur?since=1", &[("Last-Event-ID", &format!("{epoch}:2"))]);
    assert_eq!(q.event().data, "b");
    // A stale epoch: event: reset first, then everything retained.
    let stale = if epoch == "00000000" { "00000001" } else { "00000000" };
    let mut r = SseReader::open(addr, &format!("/sse/cur?since=3&epoch={stale}"), &[]);
    let reset = r.event();
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.data, epoch);
    assert_eq!(reset.id, Some(format!("{epoch}:0")));
    assert_eq!([r.event().data, r.event().data, r.event().data], ["a", "b", "c"]);
    // Errors are plain answers.
    for (target, headers, status) in [
        ("/sse/cur", vec![("Last-Event-ID", "nonsense")], 400),
        ("/sse/cur?since=x", vec![], 400),
        ("/sse/bad%20name", vec![], 400),
        ("/sse/a/b", vec![], 404),
    ] {
        let resp = get_with_headers(addr, target, &headers);
        assert_eq!(resp.status, status, "{target}");
    }
    assert_eq!(once(addr, "POST", "/sse/cur", b"").status, 405);
}

fn get_with_headers(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Resp {
    Client::connect(addr).get_with(target, headers)
}

#[test]
fn shutdown_ends_the_streams() {
    let mut child = Child::spawn(&["--sse-heartbeat", "30"]);
    let addr = child.addr;
    let mut r = SseReader::open(addr, "/sse/bye", &[]);
    wait_stat(addr, "sse_streams", 1, Duration::from_secs(5));
    child.signal(libc::SIGTERM);
    let rest = r.rest();
    assert!(rest.starts_with("retry: 2000\n\n"), "{rest:?}");
    assert!(child.wait_exit(Duration::from_secs(5)).is_some_and(|s| s.success()));
}
