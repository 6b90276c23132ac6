//! What `tests/cluster.rs` and `tests/cluster_faults.rs` share: nodes (real `tidings`
//! processes in cluster mode on one real `redis-server`) and one subscriber type per transport
//! that turns whatever arrives into the same list of [`Got`] events, so a test can say "each
//! of them got seqs 1..6 exactly once, in order, in one epoch" whatever the transport.
//!
//! Every read is bounded by a deadline (heartbeats and pings keep a stream busy, so a socket's
//! read timeout alone would never fire): a missing message fails the test, never hangs it.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;
pub use test_support::redis::RedisServer;
use tungstenite::{Message, WebSocket};

/// `--redis-timeout` of every node: short, so an outage is seen within a second.
pub const REDIS_TIMEOUT: &str = "0.5";
/// How long a node may take to connect (or reconnect) to Redis: the backoff is capped at 2 s.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// How long a subscriber may take to get what it is waiting for.
pub const RECEIVE_LIMIT: Duration = Duration::from_secs(10);

// ----- nodes -------------------------------------------------------------------------------

/// A `tidings --redis URL --redis-timeout 0.5 EXTRA..` on an ephemeral port, once its
/// `/stats` says it is connected to Redis.
pub fn node(redis: &RedisServer, extra: &[&str]) -> Child {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str(), "--redis-timeout", REDIS_TIMEOUT];
    args.extend_from_slice(extra);
    let n = Child::spawn(&args);
    wait_connected(&n, 1);
    n
}

/// `count` nodes on one Redis.
pub fn nodes(redis: &RedisServer, count: usize) -> Vec<Child> {
    (0..count).map(|_| node(redis, &[])).collect()
}

/// Waits until the node's `/stats` `redis_connected` is `want` (1 or 0).
pub fn wait_connected(n: &Child, want: u64) {
    wait_stat(n.addr, "redis_connected", want, CONNECT_LIMIT);
}

/// `POST /pub/{channel}` on `addr`, which must succeed; returns the seq it was given.
pub fn publish(addr: SocketAddr, channel: &str, body: &str) -> u64 {
    let r = post(addr, &format!("/pub/{channel}"), body.as_bytes());
    assert_eq!(r.status, 200, "publish {body:?} on {addr}: {r:?}");
    r.json().get("seq").as_u64()
}

/// The channel's epoch as `addr` sees it (an immediate `/sub` from seq 0).
pub fn epoch_of(addr: SocketAddr, channel: &str) -> String {
    let r = get(addr, &format!("/sub/{channel}?since=0&timeout=0"));
    assert!(r.status == 200 || r.status == 304, "{r:?}");
    r.etag_parts().0
}

/// Checks the 503 a publish gets while Redis is unavailable.
pub fn assert_unavailable(r: &Resp, what: &str) {
    assert_eq!(r.status, 503, "{what}: {r:?}");
    assert!(r.header("retry-after").is_some(), "{what}: no Retry-After: {r:?}");
    assert_eq!(r.text(), "redis unavailable, retry later", "{what}");
}

// ----- what subscribers get ----------------------------------------------------------------

/// One thing a subscriber was told, whatever its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Message {
        seq: u64,
        epoch: String,
        data: String,
    },
    /// The cursor was of another life of the channel; `epoch` is the new one.
    Reset {
        epoch: String,
    },
    Missed(u64),
}

/// A subscriber of one channel on one of the three transports.
pub trait Subscriber: Send {
    fn name(&self) -> &str;
    /// What arrives next (at least one event), waiting at most `limit`; panics if nothing
    /// does, or if the connection ends.
    fn next(&mut self, limit: Duration) -> Vec<Got>;
}

/// Reads until `count` messages came (resets and `missed` are kept in the list, in order),
/// within `limit` in all.
pub fn receive(sub: &mut dyn Subscriber, count: usize, limit: Duration) -> Vec<Got> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while message_count(&got) < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{}: {} of {count} messages in {limit:?}: {got:?}",
            sub.name(),
            message_count(&got)
        );
        got.extend(sub.next(left));
    }
    got
}

/// Reads until an event for which `last` holds came (it is the last of the list), within
/// `limit`: for a subscriber that reads across an outage, where the number of messages is
/// not known in advance.
pub fn receive_until(sub: &mut dyn Subscriber, last: impl Fn(&Got) -> bool, limit: Duration) -> Vec<Got> {
    let deadline = Instant::now() + limit;
    let mut got: Vec<Got> = Vec::new();
    loop {
        if let Some(i) = got.iter().position(&last) {
            assert_eq!(i + 1, got.len(), "{}: events after the last one expected: {got:?}", sub.name());
            return got;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{}: the last event did not come in {limit:?}: {got:?}", sub.name());
        got.extend(sub.next(left));
    }
}

pub fn message_count(got: &[Got]) -> usize {
    got.iter().filter(|g| matches!(g, Got::Message { .. })).count()
}

/// The seqs of the messages, in the order they came.
pub fn seqs_of(got: &[Got]) -> Vec<u64> {
    got.iter()
        .filter_map(|g| match g {
            Got::Message { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

pub fn reset_count(got: &[Got]) -> usize {
    got.iter().filter(|g| matches!(g, Got::Reset { .. })).count()
}

/// Asserts that `got` is exactly the messages `want` (`(seq, data)`, in this order), all of
/// epoch `epoch`, with no reset and no `missed` among them.
pub fn assert_exactly(who: &str, got: &[Got], want: &[(u64, String)], epoch: &str) {
    let expected: Vec<Got> = want
        .iter()
        .map(|(seq, data)| Got::Message { seq: *seq, epoch: epoch.to_string(), data: data.clone() })
        .collect();
    assert!(
        got == expected,
        "{who}: got {got:?}\nwant seqs {:?} of epoch {epoch}",
        want.iter().map(|(s, _)| *s).collect::<Vec<_>>()
    );
}

/// True for the errors a read with a timeout gives when nothing came in time (or a signal
/// interrupted it: a stopped and continued process sees EINTR).
fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

/// Short socket read timeout of the stream readers, so their loops can look at the deadline.
const TICK: Duration = Duration::from_millis(100);

// ----- long-poll ---------------------------------------------------------------------------

/// A long-poll subscriber: one keep-alive connection with a held `GET /sub` that re-polls
/// with its cursor (`next` and `epoch` of each answer) as soon as an answer came.
pub struct LongPoll {
    name: String,
    client: Client,
    channel: String,
    pub since: Option<u64>,
    pub epoch: Option<String>,
    /// `timeout=` of each poll, seconds.
    hold: u64,
}

impl LongPoll {
    /// Opens a connection to `addr` and sends the first poll with the given cursor.
    pub fn open(
        name: &str,
        addr: SocketAddr,
        channel: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> LongPoll {
        LongPoll::open_holding(name, addr, channel, since, epoch, 30)
    }

    /// Like [`LongPoll::open`], each poll held at most `hold` seconds (then `304`, and it
    /// polls again with the same cursor).
    pub fn open_holding(
        name: &str,
        addr: SocketAddr,
        channel: &str,
        since: Option<u64>,
        epoch: Option<&str>,
        hold: u64,
    ) -> LongPoll {
        let mut lp = LongPoll {
            name: name.to_string(),
            client: Client::connect(addr),
            channel: channel.to_string(),
            since,
            epoch: epoch.map(str::to_string),
            hold,
        };
        lp.poll();
        lp
    }

    /// The cursor's query string (`since=S&epoch=E`, as far as known).
    pub fn target(&self) -> String {
        let mut t = format!("/sub/{}?timeout={}", self.channel, self.hold);
        if let Some(s) = self.since {
            t.push_str(&format!("&since={s}"));
        }
        if let Some(e) = &self.epoch {
            t.push_str(&format!("&epoch={e}"));
        }
        t
    }

    fn poll(&mut self) {
        let target = self.target();
        self.client.send_request("GET", &target, &[], b"");
    }

    /// Goes on with the same cursor on another node (its own node died: the poll it held
    /// there is lost, and nothing else).
    pub fn move_to(&mut self, addr: SocketAddr) {
        self.client = Client::connect(addr);
        self.poll();
    }
}

impl Subscriber for LongPoll {
    fn name(&self) -> &str {
        &self.name
    }

    fn next(&mut self, limit: Duration) -> Vec<Got> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            self.client.set_read_timeout(left);
            let r = self.client.read_response().unwrap_or_else(|e| {
                panic!("{}: no answer to {} in {limit:?}: {e}", self.name, self.target())
            });
            match r.status {
                304 => {
                    // The poll's own timeout: same cursor again.
                    if let (Some(s), Some(e)) = (self.since, &self.epoch) {
                        assert_eq!(r.etag(), format!("\"{e}:{s}\""), "{}: 304 {r:?}", self.name);
                    }
                    self.poll();
                    continue;
                }
                200 => {}
                _ => panic!("{}: {} answered {r:?}", self.name, self.target()),
            }
            let j = r.json();
            let epoch = j.get("epoch").as_str().to_string();
            let mut got = Vec::new();
            if j.opt("reset").is_some_and(|v| v.as_bool()) {
                got.push(Got::Reset { epoch: epoch.clone() });
            }
            let missed = j.opt("missed").map_or(0, |m| m.as_u64());
            if missed > 0 {
                got.push(Got::Missed(missed));
            }
            for (seq, data) in messages(&j) {
                got.push(Got::Message {
                    seq,
                    epoch: epoch.clone(),
                    data: String::from_utf8_lossy(&data).into(),
                });
            }
            self.since = Some(j.get("next").as_u64());
            self.epoch = Some(epoch);
            self.poll();
            if !got.is_empty() {
                return got;
            }
        }
    }
}

// ----- Server-Sent Events ------------------------------------------------------------------

/// A `GET /sse/{channel}` stream read over HTTP/1.0 as raw bytes (no chunking to undo); it
/// remembers the last `id:` to reconnect with `Last-Event-ID`.
pub struct Sse {
    name: String,
    channel: String,
    stream: TcpStream,
    buf: Vec<u8>,
    pub last_id: Option<String>,
}

impl Sse {
    /// Opens `GET /sse/{channel}{query}` with `headers` and waits for its `200` head.
    pub fn open(name: &str, addr: SocketAddr, channel: &str, query: &str, headers: &[(&str, &str)]) -> Sse {
        let stream = Sse::connect(addr, &format!("/sse/{channel}{query}"), headers);
        let mut s = Sse {
            name: name.to_string(),
            channel: channel.to_string(),
            stream,
            buf: Vec::new(),
            last_id: None,
        };
        s.read_head();
        s
    }

    fn connect(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> TcpStream {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TICK)).unwrap();
        let mut req = format!("GET {target} HTTP/1.0\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).expect("send");
        stream
    }

    fn read_head(&mut self) {
        let deadline = Instant::now() + RECEIVE_LIMIT;
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(Instant::now() < deadline, "{}: no head in {RECEIVE_LIMIT:?}", self.name);
            assert!(self.fill(), "{}: closed before the head; buffered {:?}", self.name, self.text());
        };
        let head: Vec<u8> = self.buf.drain(..end + 4).collect();
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "{}: {head}",
            self.name
        );
    }

    /// Reconnects to `addr` with `Last-Event-ID: <the last id seen>` (a browser's EventSource
    /// does the same after its connection dropped).
    pub fn reopen(&mut self, addr: SocketAddr) {
        let id = self.last_id.clone().unwrap_or_else(|| panic!("{}: no id to resume from", self.name));
        self.stream = Sse::connect(addr, &format!("/sse/{}", self.channel), &[("Last-Event-ID", &id)]);
        self.buf.clear();
        self.read_head();
    }

    /// One read; false at EOF. A timeout reads nothing and is not an EOF.
    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(e) if is_timeout(&e) => true,
            Err(e) => panic!("{}: read: {e}; buffered {:?}", self.name, self.text()),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// The next complete event block, if one is buffered.
    fn parse_block(&mut self) -> Option<Option<Got>> {
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let block: Vec<u8> = self.buf.drain(..end + 2).collect();
        let block = String::from_utf8_lossy(&block).replace('\r', "");
        let (mut id, mut data, mut event) = (None::<String>, None::<String>, None::<String>);
        for line in block.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "id" => id = Some(value),
                "event" => event = Some(value),
                "data" => data = Some(data.map_or(value.clone(), |d| format!("{d}\n{value}"))),
                _ => {} // retry:, a `: hb` comment
            }
        }
        let data = data?; // no data: not an event (retry:, heartbeat)
        if let Some(id) = &id {
            self.last_id = Some(id.clone());
        }
        let name = &self.name;
        Some(Some(match event.as_deref() {
            None | Some("b64") => {
                let id = id.unwrap_or_else(|| panic!("{name}: message without id: {block}"));
                let (epoch, seq) =
                    id.split_once(':').unwrap_or_else(|| panic!("{name}: id {id:?} not EPOCH:SEQ"));
                let seq = seq.parse().unwrap_or_else(|_| panic!("{name}: id {id:?} not EPOCH:SEQ"));
                Got::Message { seq, epoch: epoch.to_string(), data }
            }
            Some("reset") => Got::Reset { epoch: data },
            Some("missed") => Got::Missed(data.parse().unwrap_or_else(|_| panic!("{name}: {block}"))),
            Some(other) => panic!("{name}: unexpected event {other:?}: {block}"),
        }))
    }
}

impl Subscriber for Sse {
    fn name(&self) -> &str {
        &self.name
    }

    fn next(&mut self, limit: Duration) -> Vec<Got> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            while let Some(block) = self.parse_block() {
                got.extend(block);
            }
            if !got.is_empty() {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no event in {limit:?}; buffered {:?}",
                self.name,
                self.text()
            );
            assert!(self.fill(), "{}: the stream ended; buffered {:?}", self.name, self.text());
        }
    }
}

// ----- WebSocket ---------------------------------------------------------------------------

/// A `GET /ws` subscribed to one channel (`tungstenite`).
pub struct Ws {
    name: String,
    ws: WebSocket<TcpStream>,
    /// Events that came while [`Ws::open`] waited for its subscription to be confirmed.
    early: Vec<Got>,
}

impl Ws {
    /// Connects, sends `{"op":"sub",..}` with the cursor and waits until the node carried it
    /// out (an `unsub` of a channel never subscribed is answered with an error, after the sub).
    pub fn open(name: &str, addr: SocketAddr, channel: &str, since: Option<u64>, epoch: Option<&str>) -> Ws {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        let (ws, resp) = tungstenite::client(format!("ws://{addr}/ws"), s)
            .unwrap_or_else(|e| panic!("{name}: handshake: {e}"));
        assert_eq!(resp.status(), 101);
        let mut w = Ws { name: name.to_string(), ws, early: Vec::new() };
        w.ws.get_mut().set_read_timeout(Some(TICK)).unwrap();
        let mut sub = format!(r#"{{"op":"sub","channel":"{channel}""#);
        if let Some(s) = since {
            sub.push_str(&format!(r#","since":{s}"#));
        }
        if let Some(e) = epoch {
            sub.push_str(&format!(r#","epoch":"{e}""#));
        }
        sub.push('}');
        w.send(&sub);
        w.send(r#"{"op":"unsub","channel":"barrier"}"#);
        // Retained messages after the cursor may come before the barrier's answer (or after
        // it, when the node reads the channel from Redis first): they are kept for `next`.
        let deadline = Instant::now() + RECEIVE_LIMIT;
        loop {
            let e = w.read_json(deadline);
            if e.opt("op").is_some() {
                assert_eq!(e.get("error").as_str(), "not subscribed", "{name}: {e:?}");
                break;
            }
            let got = w.interpret(&e);
            w.early.push(got);
        }
        w
    }

    /// An event of the channel as a [`Got`]; an error event fails the test.
    fn interpret(&self, e: &Json) -> Got {
        let name = &self.name;
        assert!(e.opt("error").is_none(), "{name}: {e:?}");
        if e.opt("reset").is_some_and(|r| r.as_bool()) {
            Got::Reset { epoch: e.get("epoch").as_str().to_string() }
        } else if let Some(m) = e.opt("missed") {
            Got::Missed(m.as_u64())
        } else {
            let data = match e.opt("data") {
                Some(d) => d.as_str().to_string(),
                None => String::from_utf8_lossy(&base64_decode(e.get("data_b64").as_str())).into_owned(),
            };
            Got::Message { seq: e.get("seq").as_u64(), epoch: e.get("epoch").as_str().to_string(), data }
        }
    }

    fn send(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_string())).unwrap_or_else(|e| panic!("{}: send: {e}", self.name));
    }

    fn read_json(&mut self, deadline: Instant) -> Json {
        loop {
            assert!(Instant::now() < deadline, "{}: no event in time", self.name);
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Json::parse(&t).unwrap_or_else(|e| panic!("{}: {e:?}: {t}", self.name))
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => continue,
                other => panic!("{}: unexpected {other:?}", self.name),
            }
        }
    }
}

impl Subscriber for Ws {
    fn name(&self) -> &str {
        &self.name
    }

    fn next(&mut self, limit: Duration) -> Vec<Got> {
        if !self.early.is_empty() {
            return std::mem::take(&mut self.early);
        }
        let e = self.read_json(Instant::now() + limit);
        vec![self.interpret(&e)]
    }
}
