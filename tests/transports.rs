//! One channel, three transports: 1,000 long-poll subscribers (`GET /sub/..`, held polls that
//! re-poll with their cursor), 1,000 Server-Sent Events streams (`GET /sse/..`, read as raw
//! bytes) and 1,000 WebSockets (`GET /ws`, `tungstenite`), all on the real `tidings` binary.
//! One publish reaches every one of them exactly once; a burst of 50 reaches every one in seq
//! order, with no duplicate and no gap.
//!
//! The clients are read one after another from the test thread: every answer is small and
//! fits in the socket buffers, so the hub never waits for a reader, and a blocking read with a
//! timeout per socket keeps the test bounded (a missing message fails it, never hangs it).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::{Message, WebSocket};

const PER_TRANSPORT: usize = 1_000;
const BURST: u64 = 50;
const CHANNEL: &str = "mixed";
/// The whole test must end well within this; each phase checks it.
const BUDGET: Duration = Duration::from_secs(40);

/// A long-poll subscriber: one keep-alive connection with a held poll and its cursor.
struct LongPoll {
    client: Client,
    epoch: String,
    since: u64,
}

impl LongPoll {
    fn poll(&mut self) {
        let target = if self.epoch.is_empty() {
            format!("/sub/{CHANNEL}?timeout=60")
        } else {
            format!("/sub/{CHANNEL}?since={}&epoch={}&timeout=60", self.since, self.epoch)
        };
        self.client.send_request("GET", &target, &[], b"");
    }

    /// Reads answers (re-polling with the cursor after each) until `count` messages came;
    /// returns them.
    fn receive(&mut self, i: usize, count: usize) -> Vec<(u64, Vec<u8>)> {
        let mut got = Vec::new();
        while got.len() < count {
            let r = self.client.read_response().unwrap_or_else(|e| {
                panic!("long-poll {i}: no answer after {} of {count} messages: {e}", got.len())
            });
            assert_eq!(r.status, 200, "long-poll {i}: {r:?}");
            let j = r.json();
            let missed = j.opt("missed").map_or(0, |m| m.as_u64());
            assert!(j.opt("reset").is_none() && missed == 0, "long-poll {i}: {j:?}");
            self.epoch = j.get("epoch").as_str().to_string();
            let msgs = messages(&j);
            if let Some(&(last, _)) = msgs.last() {
                self.since = last;
            }
            got.extend(msgs);
            self.poll();
        }
        got
    }
}

/// A Server-Sent Events stream over HTTP/1.0 (raw bytes, no chunking to undo).
struct Sse {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Sse {
    fn open(addr: SocketAddr) -> Sse {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.write_all(format!("GET /sse/{CHANNEL} HTTP/1.0\r\n\r\n").as_bytes()).expect("send");
        Sse { stream, buf: Vec::new() }
    }

    /// Reads until `count` events with data came; returns `(seq, data)` of each (`id:` is
    /// `EPOCH:SEQ`). The head, `retry:` and comment lines are skipped.
    fn receive(&mut self, i: usize, count: usize) -> Vec<(u64, Vec<u8>)> {
        let mut got = Vec::new();
        // Heartbeats keep the socket busy, so its read timeout alone would never fire.
        let deadline = Instant::now() + READ_TIMEOUT;
        while got.len() < count {
            assert!(
                Instant::now() < deadline,
                "sse {i}: {} of {count} events in {READ_TIMEOUT:?}",
                got.len()
            );
            let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") else {
                let mut tmp = [0u8; 16 * 1024];
                let n = self.stream.read(&mut tmp).unwrap_or_else(|e| {
                    panic!(
                        "sse {i}: no event after {} of {count}: {e}; buffered {:?}",
                        got.len(),
                        self.text()
                    )
                });
                assert!(n > 0, "sse {i}: closed after {} of {count} events", got.len());
                self.buf.extend_from_slice(&tmp[..n]);
                continue;
            };
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block).replace('\r', "");
            if block.starts_with("HTTP/") {
                assert!(
                    block.starts_with("HTTP/1.1 200") || block.starts_with("HTTP/1.0 200"),
                    "sse {i}: {block}"
                );
                continue;
            }
            let (mut id, mut data, mut event) = (None, None::<String>, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(match data {
                        Some(d) => format!("{d}\n{v}"),
                        None => v.to_string(),
                    });
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_string());
                }
            }
            let Some(data) = data else { continue }; // retry:, heartbeat
            assert_eq!(event, None, "sse {i}: {block}");
            let id = id.unwrap_or_else(|| panic!("sse {i}: event without id: {block}"));
            let seq = id.rsplit(':').next().and_then(|s| s.parse().ok());
            let seq = seq.unwrap_or_else(|| panic!("sse {i}: bad id {id:?}"));
            got.push((seq, data.into_bytes()));
        }
        got
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

type Ws = WebSocket<TcpStream>;

fn ws_event(ws: &mut Ws, i: usize) -> Json {
    // Pings keep the socket busy, so its read timeout alone would never fire.
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "ws {i}: no event in {READ_TIMEOUT:?}");
        match ws.read() {
            Ok(Message::Text(t)) => return Json::parse(&t).unwrap_or_else(|e| panic!("ws {i}: {e:?}: {t}")),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            other => panic!("ws {i}: unexpected {other:?}"),
        }
    }
}

/// Opens a WebSocket, subscribes to the channel and waits until the hub carried it out (an
/// `unsub` of a channel never subscribed answers with an error, after the `sub`).
fn ws_subscribe(addr: SocketAddr, i: usize) -> Ws {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    // Two small frames in a row: without this, Nagle and the delayed ACK cost 40 ms each.
    s.set_nodelay(true).unwrap();
    let (mut ws, resp) = tungstenite::client(format!("ws://{addr}/ws"), s)
        .unwrap_or_else(|e| panic!("ws {i}: handshake: {e}"));
    assert_eq!(resp.status(), 101);
    ws.send(Message::Text(format!(r#"{{"op":"sub","channel":"{CHANNEL}"}}"#))).unwrap();
    ws.send(Message::Text(r#"{"op":"unsub","channel":"barrier"}"#.into())).unwrap();
    let e = ws_event(&mut ws, i);
    assert_eq!(e.get("error").as_str(), "not subscribed", "ws {i}: {e:?}");
    ws
}

fn ws_receive(ws: &mut Ws, i: usize, count: usize) -> Vec<(u64, Vec<u8>)> {
    (0..count)
        .map(|_| {
            let e = ws_event(ws, i);
            assert_eq!(e.get("channel").as_str(), CHANNEL, "ws {i}: {e:?}");
            assert!(e.opt("reset").is_none() && e.opt("missed").is_none(), "ws {i}: {e:?}");
            (e.get("seq").as_u64(), e.get("data").as_str().as_bytes().to_vec())
        })
        .collect()
}

/// Checks one subscriber's messages against the expected `(seq, data)` list: same length,
/// same order, nothing twice, nothing missing.
fn check(who: &str, got: &[(u64, Vec<u8>)], want: &[(u64, Vec<u8>)]) {
    let show = |v: &[(u64, Vec<u8>)]| v.iter().map(|(s, _)| *s).collect::<Vec<_>>();
    assert!(got == want, "{who}: got seqs {:?}, want {:?}", show(got), show(want));
}

fn within_budget(t0: Instant, phase: &str) {
    assert!(t0.elapsed() < BUDGET, "{phase}: over the {BUDGET:?} budget ({:?})", t0.elapsed());
}

#[test]
fn one_publish_and_a_burst_reach_3000_subscribers_over_three_transports_exactly_once() {
    let limit = raise_nofile(); // the child inherits it
    let clients = 3 * PER_TRANSPORT as u64 + 100;
    assert!(limit >= clients, "RLIMIT_NOFILE hard limit {limit} is too low for {clients} connections");
    let server = Child::spawn(&["--keepalive-timeout", "300"]);
    let addr = server.addr;
    let t0 = Instant::now();

    // No cursor: every subscriber waits for what is published from now on.
    let mut long_polls: Vec<LongPoll> = (0..PER_TRANSPORT)
        .map(|_| {
            let mut lp = LongPoll { client: Client::connect(addr), epoch: String::new(), since: 0 };
            lp.poll();
            lp
        })
        .collect();
    let mut sses: Vec<Sse> = (0..PER_TRANSPORT).map(|_| Sse::open(addr)).collect();
    let mut wss: Vec<Ws> = (0..PER_TRANSPORT).map(|i| ws_subscribe(addr, i)).collect();
    let n = PER_TRANSPORT as u64;
    let parked = wait_until(Duration::from_secs(20), || {
        let s = stats(addr);
        s.get("waiting_polls").as_u64() == n
            && s.get("sse_streams").as_u64() == n
            && s.get("ws_connections").as_u64() == n
    });
    assert!(parked, "not all subscribers parked after {:?}: {:?}", t0.elapsed(), stats(addr));
    let connected = t0.elapsed();
    within_budget(t0, "connecting");

    // One publish: every subscriber gets it, once.
    let p = post(addr, &format!("/pub/{CHANNEL}"), b"first");
    assert_eq!(p.status, 200, "{p:?}");
    assert_eq!(p.json().get("seq").as_u64(), 1);
    let want = vec![(1, b"first".to_vec())];
    for (i, lp) in long_polls.iter_mut().enumerate() {
        check(&format!("long-poll {i}"), &lp.receive(i, 1), &want);
    }
    for (i, s) in sses.iter_mut().enumerate() {
        check(&format!("sse {i}"), &s.receive(i, 1), &want);
    }
    for (i, ws) in wss.iter_mut().enumerate() {
        check(&format!("ws {i}"), &ws_receive(ws, i, 1), &want);
    }
    let first = t0.elapsed() - connected;
    within_budget(t0, "the first publish");
    // The long-polls re-polled with their cursor: all parked again before the burst, so the
    // burst is pushed to held polls, not only picked up from retention.
    wait_stat(addr, "waiting_polls", n, Duration::from_secs(10));

    // A burst of 50 on one keep-alive connection, as fast as possible.
    let t1 = Instant::now();
    let mut publisher = Client::connect(addr);
    for k in 1..=BURST {
        let r = publisher.post(&format!("/pub/{CHANNEL}"), format!("burst-{k}").as_bytes());
        assert_eq!((r.status, r.json().get("seq").as_u64()), (200, k + 1), "burst publish {k}: {r:?}");
    }
    let published = t1.elapsed();
    let want: Vec<(u64, Vec<u8>)> = (1..=BURST).map(|k| (k + 1, format!("burst-{k}").into_bytes())).collect();
    let count = want.len();
    for (i, lp) in long_polls.iter_mut().enumerate() {
        check(&format!("long-poll {i}"), &lp.receive(i, count), &want);
    }
    for (i, s) in sses.iter_mut().enumerate() {
        check(&format!("sse {i}"), &s.receive(i, count), &want);
    }
    for (i, ws) in wss.iter_mut().enumerate() {
        check(&format!("ws {i}"), &ws_receive(ws, i, count), &want);
    }
    within_budget(t0, "the burst");

    // Exactly once: nothing more arrives anywhere (the long-polls are parked again, with
    // nothing after their cursor).
    wait_stat(addr, "waiting_polls", n, Duration::from_secs(10));
    for s in sses.iter_mut().step_by(37) {
        s.stream.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let mut tmp = [0u8; 1024];
        match s.stream.read(&mut tmp) {
            Ok(n) => assert!(
                s.buf.is_empty() && n > 0 && tmp[..n].starts_with(b":"),
                "sse: more after the burst: {:?}",
                String::from_utf8_lossy(&tmp[..n])
            ),
            Err(e) => {
                assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
            }
        }
    }
    for (i, ws) in wss.iter_mut().enumerate().step_by(37) {
        ws.get_mut().set_nonblocking(true).unwrap();
        match ws.read() {
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(Message::Ping(_)) => {}
            other => panic!("ws {i}: more after the burst: {other:?}"),
        }
    }
    println!(
        "{} subscribers ({PER_TRANSPORT} long-poll, {PER_TRANSPORT} SSE, {PER_TRANSPORT} WebSocket) parked in {connected:?}; \
         1 publish read by all in {first:?}; {BURST} publishes in {published:?}, all read in {:?}; total {:?}",
        3 * PER_TRANSPORT,
        t1.elapsed(),
        t0.elapsed()
    );
}
