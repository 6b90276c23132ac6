//! Streaming responses and protocol upgrades, through real sockets: the test service's
//! `/stream` (a streaming 200 the test writes to through the loop) and `/upgrade` (101, then a
//! line protocol that answers each line upper-cased).
//!
//! What must hold: chunks arrive as they are written (chunked for HTTP/1.1, raw until the
//! close for HTTP/1.0); ending a stream ends the connection cleanly, without answering what was
//! pipelined behind it; a client leaving mid-stream is noticed at once (one `on_close`, with
//! the stream's note; later writes are `Err(Closed)`); a client that never reads makes writes
//! `Slow` and is dropped after the write timeout, with nothing left behind; an upgraded
//! connection gets every byte sent after its request, including those that came with it; a
//! backlog written as the socket drains (`send_shared`, then the next piece on `on_drained`)
//! arrives whole and in order, whether the kernel takes it at once or the client reads slowly.

mod common;

use std::time::Duration;

use common::*;
use http::{Closed, Config, Flow, Limits};

const WAIT: Duration = Duration::from_secs(5);

fn stream_head(c: &mut Client) -> String {
    String::from_utf8(c.read_until(b"\r\n\r\n")).unwrap()
}

#[test]
fn chunks_arrive_as_written_and_end_closes() {
    let s = start(config());
    let mut c = Client::connect(s.addr);
    c.send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = stream_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nTransfer-Encoding: chunked\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: close\r\n"), "the connection ends with the stream: {head}");
    assert!(!head.contains("Content-Length"), "{head}");
    s.wait_for(WAIT, "the stream", |x| x.streams_started == 1);

    assert_eq!(s.push(b"data: one\n\n"), vec![Ok(Flow::Ready)]);
    assert_eq!(c.read_until(b"\n\n\r\n"), b"b\r\ndata: one\n\n\r\n");
    assert_eq!(s.push(b""), vec![Ok(Flow::Ready)], "an empty write is not the last chunk");
    assert_eq!(s.push(&[b'x'; 300]), vec![Ok(Flow::Ready)]);
    let mut want = b"12c\r\n".to_vec();
    want.extend_from_slice(&[b'x'; 300]);
    want.extend_from_slice(b"\r\n");
    assert_eq!(c.read_until(b"x\r\n"), want);

    assert_eq!(s.end_streams(), vec![Ok(())]);
    assert_eq!(c.read_until_closed(WAIT), b"0\r\n\r\n");
    let snap = s.wait_for(WAIT, "the close", |x| x.connections == 0);
    assert_eq!(snap.on_close_calls, 0, "a stream the service ended is not reported closed");
    assert_eq!(s.push(b"late"), Vec::<Result<Flow, Closed>>::new(), "the stream is gone");
}

#[test]
fn http10_stream_is_delimited_by_the_close() {
    let s = start(config());
    let mut c = Client::connect(s.addr);
    c.send("GET /stream HTTP/1.0\r\n\r\n");
    let head = stream_head(&mut c);
    assert!(!head.contains("Transfer-Encoding") && !head.contains("Content-Length"), "{head}");
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    s.wait_for(WAIT, "the stream", |x| x.streams_started == 1);
    assert_eq!(s.push(b"raw bytes"), vec![Ok(Flow::Ready)]);
    assert_eq!(c.read_until(b"bytes"), b"raw bytes");
    assert_eq!(s.end_streams(), vec![Ok(())]);
    assert_eq!(c.read_until_closed(WAIT), b"");
}

#[test]
fn requests_pipelined_behind_a_stream_are_not_answered() {
    let s = start(config());
    let mut c = Client::connect(s.addr);
    c.send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
    stream_head(&mut c);
    s.wait_for(WAIT, "the stream", |x| x.streams_started == 1);
    assert_eq!(s.push(b"a"), vec![Ok(Flow::Ready)]);
    assert_eq!(s.end_streams(), vec![Ok(())]);
    // The chunk, the last chunk, then the end: no answer to /plaintext, and no RST cutting the
    // stream's tail (the unread request makes the server linger instead).
    assert_eq!(c.read_until_closed(WAIT), b"1\r\na\r\n0\r\n\r\n");
    let snap = s.wait_for(WAIT, "the close", |x| x.connections == 0);
    assert_eq!(snap.requests_total, 1);
}

#[test]
fn client_leaving_mid_stream_is_noticed_at_once() {
    let s = start(config());
    let mut c = Client::connect(s.addr);
    c.send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    stream_head(&mut c);
    s.wait_for(WAIT, "the stream", |x| x.streams_started == 1);
    assert_eq!(s.push(b"hello"), vec![Ok(Flow::Ready)]);
    c.read_until(b"hello\r\n");
    drop(c); // FIN, without anything written
    let snap = s.wait_for(WAIT, "the close", |x| x.connections == 0);
    assert_eq!(snap.on_close_calls, 1);
    assert_eq!(snap.streams_closed, 1, "on_close hands back the stream's note");
    assert_eq!(snap.closed_by_peer_total, 1);
    assert_eq!(s.push(b"late"), vec![Err(Closed)], "writing to a closed stream is Err(Closed)");
    assert_eq!(s.end_streams(), vec![Err(Closed)]);
    assert_eq!(s.query().on_close_calls, 1, "no second on_close");
}

#[test]
fn client_that_never_reads_is_slow_then_dropped() {
    let limits = Limits { max_output_bytes: 64 * 1024, ..Limits::default() };
    let s = start(Config { limits, body_timeout: Duration::from_millis(500), ..config() });
    // A small receive buffer, never read: the server's output piles up.
    let mut c = Client::from_stream(connect_tiny(s.addr, 4096));
    c.send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    s.wait_for(WAIT, "the stream", |x| x.streams_started == 1);
    let chunk = vec![b'z'; 32 * 1024];
    let mut pushes = 0;
    let flow = loop {
        pushes += 1;
        let flows = s.push(&chunk);
        assert_eq!(flows.len(), 1);
        match flows[0] {
            Ok(Flow::Ready) if pushes < 1000 => continue,
            other => break other,
        }
    };
    assert_eq!(flow, Ok(Flow::Slow), "writes say Slow once the client lags (after {pushes} pushes)");
    // No write progress for the body timeout: dropped, and the service hears of it.
    let snap = s.wait_for(WAIT, "the drop", |x| x.connections == 0);
    assert_eq!(snap.streams_closed, 1);
    assert_eq!(snap.on_close_max_per_conn, 1);
    assert_eq!(snap.timers, 0, "nothing left behind");
    drop(c);
}

#[test]
fn upgrade_hands_over_the_bytes_including_those_sent_with_the_request() {
    let s = start(config());
    let mut c = Client::connect(s.addr);
    // The first line travels in the same write as the request.
    c.send("GET /upgrade HTTP/1.1\r\nHost: t\r\nUpgrade: lines\r\nConnection: upgrade\r\n\r\nhello\n");
    let head = c.read_any();
    assert_eq!(head.status, 101);
    assert_eq!(head.header("upgrade"), Some("lines"));
    assert_eq!(head.header("content-length"), None);
    assert_eq!(c.read_until(b"\n"), b"HELLO\n");
    c.send("one\ntw");
    assert_eq!(c.read_until(b"\n"), b"ONE\n");
    c.send("o\n");
    assert_eq!(c.read_until(b"\n"), b"TWO\n");
    // Not HTTP any more: a request line is just a line.
    c.send("GET /plaintext HTTP/1.1\n");
    assert_eq!(c.read_until(b"\n"), b"GET /PLAINTEXT HTTP/1.1\n");
    c.send("quit\n");
    assert_eq!(c.read_until_closed(WAIT), b"bye\n");
    let snap = s.wait_for(WAIT, "the close", |x| x.connections == 0);
    assert_eq!(snap.on_close_calls, 0, "the service ended it");
    assert_eq!(snap.requests_total, 1);
}

#[test]
fn upgraded_client_leaving_is_reported_once() {
    let s = start(config());
    let mut c = Client::connect(s.addr);
    c.send("GET /upgrade HTTP/1.1\r\nHost: t\r\nUpgrade: lines\r\nConnection: upgrade\r\n\r\n");
    assert_eq!(c.read_any().status, 101);
    c.send("ping\n");
    assert_eq!(c.read_until(b"\n"), b"PING\n");
    drop(c);
    let snap = s.wait_for(WAIT, "the close", |x| x.connections == 0);
    assert_eq!((snap.on_close_calls, snap.streams_closed), (1, 1));
    assert_eq!(snap.timers, 0);
    // A request without the Upgrade header is a plain 404 on the same route.
    let mut c = Client::connect(s.addr);
    assert_eq!(c.get("/upgrade").status, 404);
}

/// The body of a chunked stream read until the server closes, de-chunked (it must end with
/// the last chunk).
fn dechunk(c: &mut Client) -> Vec<u8> {
    let raw = c.read_until_closed(Duration::from_secs(30));
    assert!(raw.ends_with(b"\r\n0\r\n\r\n"), "the last chunk ends the stream");
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let eol = at + find(&raw[at..], b"\r\n").expect("chunk size line");
        let len = usize::from_str_radix(std::str::from_utf8(&raw[at..eol]).unwrap(), 16).unwrap();
        if len == 0 {
            return body;
        }
        body.extend_from_slice(&raw[eol + 2..eol + 2 + len]);
        at = eol + 2 + len + 2;
    }
}

fn backlog(parts: usize, size: usize) -> Vec<u8> {
    (0..parts).flat_map(|i| pattern(size, (i % 4) as u8)).collect()
}

#[test]
fn small_backlog_written_from_call_goes_on_when_the_flush_drains_it() {
    // Pieces written inside `call` are flushed after it: the kernel takes them at once, no
    // EPOLLOUT ever comes, and the service must still hear that the stream drained.
    let s = start(config());
    let mut c = Client::connect(s.addr);
    c.send("GET /backlog?parts=5&size=10 HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = stream_head(&mut c);
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    assert_eq!(dechunk(&mut c), backlog(5, 10));
    let snap = s.wait_for(WAIT, "the backlog", |x| x.backlogs_done == 1);
    // One: after it, the pieces are written outside `call` and the kernel takes each at once.
    assert_eq!(snap.drained_calls, 1);
}

#[test]
fn large_backlog_to_a_slow_reader_is_fed_as_it_drains_by_shared_pieces() {
    let limits = Limits { max_output_bytes: 64 * 1024, ..Limits::default() };
    let s = start(Config { limits, ..config() });
    let mut c = Client::from_stream(connect_tiny(s.addr, 16384));
    c.send("GET /backlog?parts=128&size=65536 HTTP/1.1\r\nHost: t\r\n\r\n");
    stream_head(&mut c);
    // 8 MiB cannot all sit in the socket buffers (at most 4 MiB to send, 16 KiB to
    // receive): a client that stops reading stops the feed, which waits for each drain.
    c.read_throttled(256 * 1024);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.query().backlogs_done, 0, "fed as the client reads, not all at once");
    let body = dechunk(&mut c);
    assert_eq!(body.len(), 128 * 65536);
    assert!(body == backlog(128, 65536), "every piece whole and in order");
    let snap = s.wait_for(WAIT, "the backlog", |x| x.backlogs_done == 1 && x.connections == 0);
    assert!(snap.drained_calls >= 2, "drains: {}", snap.drained_calls);
}
