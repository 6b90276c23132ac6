//! Shared by the HTTP integration tests: a test [`Service`] running on its own thread behind
//! a real listener on 127.0.0.1 (ephemeral port), a way to query its counters and stop it
//! through the reactor's `Remote`, and a small strict HTTP/1.1 client.
//!
//! Routes of the test service:
//!
//! | route | answer |
//! |---|---|
//! | `/plaintext` | 200 `Hello, World!` |
//! | `/echo` | 200, the request body; `X-Method`, `X-Echo` (the request's `X-Echo`), `X-Version` |
//! | `/defer?ms=N` | keeps the responder, answers 200 `deferred N` from a timer after N ms |
//! | `/hold` | keeps the responder until [`Msg::Release`], shutdown (503) or close |
//! | `/big?n=N&seed=S` | 200 with N bytes of [`pattern`]`(N, S)` |
//! | `/status?code=N` | N with an empty body |
//! | `/close` | 200 `bye`, asking the server to close |
//! | `/sleep?ms=N` | blocks the loop for N ms (a slow handler), then 200 `slept` |
//! | `/stream` | a streaming 200 (`text/event-stream`): [`Msg::Push`] writes to it, [`Msg::EndStreams`] ends it |
//! | `/backlog?parts=N&size=S` | a streaming 200 of N pieces of S bytes (piece i is [`pattern`]`(S, i % 4)`, four `Rc`s sent with `send_shared`), written as the socket drains: a piece, the next at once if the kernel took it all, else on `on_drained` |
//! | `/upgrade` | with `Upgrade: lines`, 101 and a line protocol: each line comes back upper-cased, `quit` ends it with `bye` |
//! | anything else | 404 |
//!
//! Every final response read by [`Client`] is checked for a `Date` header and for
//! `Content-Length` (unless 1xx/204/304): those rules hold for every test that reads answers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::{
    Body, Closed, Config, ConnId, Ctx, Flow, Request, Responder, Response, Server, Service, StreamId,
};
use reactor::{Reactor, Remote, TimerId};

// ----- the test service ----------------------------------------------------------------------

/// Messages the tests post to the server's loop.
pub enum Msg {
    /// Start a graceful shutdown (`ctx.shutdown()`).
    Stop,
    /// Report the counters.
    Query(mpsc::Sender<Snapshot>),
    /// Answer every responder `/hold` kept (200 `released`), including those whose connection
    /// has closed since, and report what each `respond` returned.
    Release(mpsc::Sender<Vec<Result<(), Closed>>>),
    /// Write these bytes to every open `/stream` and report what each `send` returned.
    Push(Vec<u8>, mpsc::Sender<Vec<Result<Flow, Closed>>>),
    /// End every `/stream` and report what each `end` returned.
    EndStreams(mpsc::Sender<Vec<Result<(), Closed>>>),
}

/// The server's counters as seen from inside its loop.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub connections: usize,
    pub accepted_total: u64,
    pub closed_by_peer_total: u64,
    pub requests_total: u64,
    /// Request heads run through the parser.
    pub heads_parsed_total: u64,
    pub responses: Vec<(u16, u64)>,
    /// Sources registered with the reactor (listener, eventfd, connections).
    pub sources: usize,
    /// Timers pending in the reactor.
    pub timers: usize,
    /// Loop turns so far.
    pub iterations: u64,
    /// CPU time of the server thread so far.
    pub cpu: Duration,
    /// Responders `/hold` keeps (answered ones are removed; closed ones stay until released).
    pub held: usize,
    /// Responders `/defer` keeps.
    pub deferred: usize,
    pub on_close_calls: u64,
    /// The most `on_close` calls any one connection got (must be 1 at most).
    pub on_close_max_per_conn: u32,
    pub on_shutdown_calls: u64,
    /// `/stream`s and `/upgrade`s started (ended or closed ones stay counted).
    pub streams_started: u64,
    /// `on_close` calls that handed back a stream's note (a stream or upgrade the client left).
    pub streams_closed: u64,
    /// `on_drained` calls.
    pub drained_calls: u64,
    /// `/backlog` streams that wrote all their pieces.
    pub backlogs_done: u64,
}

impl Snapshot {
    pub fn responses_with(&self, status: u16) -> u64 {
        self.responses.iter().find(|(s, _)| *s == status).map(|&(_, n)| n).unwrap_or(0)
    }
}

/// Behaviour switches of the test service.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Answer kept `/hold` responders with 503 in `on_shutdown` (else leave them to the
    /// shutdown deadline).
    pub answer_held_on_shutdown: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { answer_held_on_shutdown: true }
    }
}

pub struct TestService {
    opts: Options,
    deferred: HashMap<u64, (Responder, u64)>,
    next_tag: u64,
    held: Vec<Responder>,
    on_close: HashMap<ConnId, u32>,
    on_close_calls: u64,
    on_shutdown_calls: u64,
    streams: Vec<StreamId>,
    /// Partial lines of upgraded connections.
    lines: HashMap<StreamId, Vec<u8>>,
    streams_started: u64,
    streams_closed: u64,
    /// `/backlog` streams still writing.
    backlogs: HashMap<StreamId, Backlog>,
    drained_calls: u64,
    backlogs_done: u64,
}

/// A `/backlog` stream: its pieces, how many it writes and how many are written.
struct Backlog {
    pieces: Vec<Rc<[u8]>>,
    parts: usize,
    written: usize,
}

/// The note of a stream (held responders' notes count up from 1).
const STREAM_NOTE: u64 = u64::MAX;

impl TestService {
    pub fn new(opts: Options) -> TestService {
        TestService {
            opts,
            deferred: HashMap::new(),
            next_tag: 1,
            held: Vec::new(),
            on_close: HashMap::new(),
            on_close_calls: 0,
            on_shutdown_calls: 0,
            streams: Vec::new(),
            lines: HashMap::new(),
            streams_started: 0,
            streams_closed: 0,
            backlogs: HashMap::new(),
            drained_calls: 0,
            backlogs_done: 0,
        }
    }

    /// Writes the next pieces of a `/backlog` while the kernel takes them whole.
    fn feed_backlog(&mut self, ctx: &mut Ctx<'_, TestService>, stream: StreamId) {
        while let Some(Backlog { pieces, parts, written }) = self.backlogs.get_mut(&stream) {
            if *written == *parts {
                self.backlogs.remove(&stream);
                self.backlogs_done += 1;
                let _ = ctx.end(stream);
                return;
            }
            if ctx.send_shared(&stream, &pieces[*written % pieces.len()]).is_err() {
                self.backlogs.remove(&stream);
                return;
            }
            *written += 1;
            if ctx.pending(&stream) != Some(0) {
                return;
            }
        }
    }

    fn snapshot(&self, ctx: &Ctx<'_, TestService>) -> Snapshot {
        let stats = ctx.stats();
        let loop_stats = ctx.loop_stats();
        Snapshot {
            connections: stats.connections,
            accepted_total: stats.accepted_total,
            closed_by_peer_total: stats.closed_by_peer_total,
            requests_total: stats.requests_total,
            heads_parsed_total: stats.heads_parsed_total,
            responses: stats.responses().collect(),
            sources: loop_stats.sources,
            timers: loop_stats.timers_pending,
            iterations: loop_stats.iterations,
            cpu: test_support::cpu::thread_cpu_time(),
            held: self.held.len(),
            deferred: self.deferred.len(),
            on_close_calls: self.on_close_calls,
            on_close_max_per_conn: self.on_close.values().copied().max().unwrap_or(0),
            on_shutdown_calls: self.on_shutdown_calls,
            streams_started: self.streams_started,
            streams_closed: self.streams_closed,
            drained_calls: self.drained_calls,
            backlogs_done: self.backlogs_done,
        }
    }
}

/// `n` bytes that make a misplaced, lost or duplicated byte visible: a block of a prime
/// length (so its period lines up with no buffer size) repeated, cheap to build even in debug
/// builds (a slow handler would distort the timing tests).
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    const BLOCK: usize = 65_521;
    let block: Vec<u8> =
        (0..BLOCK.min(n)).map(|i| ((i * 7 + seed as usize + (i >> 8)) % 251) as u8).collect();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let take = (n - out.len()).min(block.len());
        out.extend_from_slice(&block[..take]);
    }
    out
}

fn param<T: std::str::FromStr>(req: &Request<'_>, name: &str, default: T) -> T {
    req.query_param(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Service for TestService {
    type Msg = Msg;
    type Note = u64;
    type Timer = u64;

    fn call(&mut self, ctx: &mut Ctx<'_, TestService>, req: &Request<'_>, responder: Responder) {
        let resp = match req.path {
            "/plaintext" => Response::text(200, "Hello, World!"),
            "/echo" => {
                let echo = req.header("x-echo").map(|v| String::from_utf8_lossy(v).into_owned());
                let mut r = Response::new(200)
                    .content_type("application/octet-stream")
                    .header("X-Method", req.method)
                    .header("X-Version", format!("1.{}", req.version_minor));
                if let Some(e) = echo {
                    r = r.header("X-Echo", e);
                }
                r.body(Body::Bytes(req.body.to_vec()))
            }
            "/defer" => {
                let ms: u64 = param(req, "ms", 10);
                let tag = self.next_tag;
                self.next_tag += 1;
                ctx.set_timer(Duration::from_millis(ms), tag);
                self.deferred.insert(tag, (responder, ms));
                return;
            }
            "/hold" => {
                ctx.set_note(&responder, self.next_tag);
                self.next_tag += 1;
                self.held.push(responder);
                return;
            }
            "/big" => {
                let n: usize = param(req, "n", 1 << 20);
                let seed: u8 = param(req, "seed", 0);
                Response::new(200)
                    .content_type("application/octet-stream")
                    .body(Body::Bytes(pattern(n, seed)))
            }
            "/status" => Response::new(param(req, "code", 200)),
            "/close" => Response::text(200, "bye").close(),
            "/sleep" => {
                std::thread::sleep(Duration::from_millis(param(req, "ms", 10)));
                Response::text(200, "slept")
            }
            "/stream" => {
                let head = Response::new(200).content_type("text/event-stream");
                if let Ok(stream) = ctx.respond_stream(responder, head) {
                    ctx.set_stream_note(&stream, STREAM_NOTE);
                    self.streams.push(stream);
                    self.streams_started += 1;
                }
                return;
            }
            "/backlog" => {
                let parts: usize = param(req, "parts", 1);
                let size: usize = param(req, "size", 1);
                let pieces = (0..4).map(|i| Rc::from(pattern(size, i))).collect();
                if let Ok(stream) = ctx.respond_stream(responder, Response::new(200)) {
                    ctx.set_stream_note(&stream, STREAM_NOTE);
                    self.backlogs.insert(stream, Backlog { pieces, parts, written: 0 });
                    self.feed_backlog(ctx, stream);
                }
                return;
            }
            "/upgrade" if req.header("upgrade") == Some(b"lines") => {
                let head = Response::new(101).header("Upgrade", "lines").header("Connection", "upgrade");
                if let Ok(stream) = ctx.upgrade(responder, head) {
                    ctx.set_stream_note(&stream, STREAM_NOTE);
                    self.streams_started += 1;
                }
                return;
            }
            _ => Response::text(404, "not found"),
        };
        let _ = ctx.respond(responder, resp);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_, TestService>, conn: ConnId, note: Option<u64>) {
        self.on_close_calls += 1;
        if note == Some(STREAM_NOTE) {
            self.streams_closed += 1;
        }
        *self.on_close.entry(conn).or_insert(0) += 1;
        // Deferred answers of a closed connection are dropped when their timer fires (their
        // `respond` returns Err(Closed)); held ones stay until released, to test exactly that.
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, TestService>, _id: TimerId, tag: u64) {
        if let Some((responder, ms)) = self.deferred.remove(&tag) {
            let body = format!("deferred {ms}").into_bytes();
            let _ =
                ctx.respond(responder, Response::new(200).content_type("text/plain").body(Body::Bytes(body)));
        }
    }

    /// The line protocol of `/upgrade`: each complete line back upper-cased; `quit` ends.
    fn on_data(&mut self, ctx: &mut Ctx<'_, TestService>, stream: StreamId, data: &[u8]) {
        let partial = self.lines.entry(stream).or_default();
        partial.extend_from_slice(data);
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            if line == b"quit\n" || line == b"quit\r\n" {
                let _ = ctx.send(&stream, b"bye\n");
                let _ = ctx.end(stream);
                self.lines.remove(&stream);
                return;
            }
            let _ = ctx.send(&stream, &line.to_ascii_uppercase());
        }
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_, TestService>, stream: StreamId) {
        self.drained_calls += 1;
        self.feed_backlog(ctx, stream);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, TestService>, msg: Msg) {
        match msg {
            Msg::Push(bytes, tx) => {
                let _ = tx.send(self.streams.iter().map(|s| ctx.send(s, &bytes)).collect());
            }
            Msg::EndStreams(tx) => {
                let _ = tx.send(self.streams.drain(..).map(|s| ctx.end(s)).collect());
            }
            Msg::Stop => ctx.shutdown(),
            Msg::Query(tx) => {
                let _ = tx.send(self.snapshot(ctx));
            }
            Msg::Release(tx) => {
                let results = self
                    .held
                    .drain(..)
                    .map(|r| ctx.respond(r, Response::text(200, "released")))
                    .collect::<Vec<_>>();
                let _ = tx.send(results);
            }
        }
    }

    fn on_shutdown(&mut self, ctx: &mut Ctx<'_, TestService>) {
        self.on_shutdown_calls += 1;
        if self.opts.answer_held_on_shutdown {
            for r in self.held.drain(..) {
                let _ = ctx.respond(r, Response::text(503, "shutting down"));
            }
            for (_, (r, _)) in self.deferred.drain() {
                let _ = ctx.respond(r, Response::text(503, "shutting down"));
            }
        }
    }
}

// ----- the server thread ---------------------------------------------------------------------

/// A test configuration: ephemeral port on 127.0.0.1, a short shutdown deadline.
pub fn config() -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        shutdown_timeout: Duration::from_secs(1),
        ..Default::default()
    }
}

/// A server running on its own thread. Dropping it stops it (gracefully, bounded wait).
pub struct TestServer {
    pub addr: SocketAddr,
    remote: Remote<Msg>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

pub fn start(config: Config) -> TestServer {
    start_with(config, Options::default())
}

pub fn start_with(config: Config, opts: Options) -> TestServer {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("http-test-server".into())
        .spawn(move || {
            let mut reactor = Reactor::new()?;
            let mut server = Server::bind(config, TestService::new(opts), &mut reactor)?;
            tx.send((server.local_addr(), reactor.remote())).unwrap();
            server.run(&mut reactor)
        })
        .unwrap();
    let (addr, remote) = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(x) => x,
        Err(_) => panic!("server did not start: {:?}", thread.join()),
    };
    TestServer { addr, remote, thread: Some(thread) }
}

impl TestServer {
    pub fn remote(&self) -> Remote<Msg> {
        self.remote.clone()
    }

    pub fn query(&self) -> Snapshot {
        let (tx, rx) = mpsc::channel();
        if self.remote.post(Msg::Query(tx)).is_err() {
            panic!("server loop is gone");
        }
        rx.recv_timeout(Duration::from_secs(10)).expect("server did not answer a query within 10 s")
    }

    /// Polls the counters until `pred` holds; panics with the last snapshot after `within`.
    pub fn wait_for(&self, within: Duration, what: &str, pred: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = Instant::now() + within;
        loop {
            let s = self.query();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out after {within:?} waiting for {what}; last snapshot: {s:#?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Answers every held responder; the result of each `respond`.
    pub fn release_held(&self) -> Vec<Result<(), Closed>> {
        let (tx, rx) = mpsc::channel();
        if self.remote.post(Msg::Release(tx)).is_err() {
            panic!("server loop is gone");
        }
        rx.recv_timeout(Duration::from_secs(10)).expect("no answer to Release")
    }

    /// Writes `bytes` to every open `/stream`; what each `send` returned.
    pub fn push(&self, bytes: &[u8]) -> Vec<Result<Flow, Closed>> {
        let (tx, rx) = mpsc::channel();
        if self.remote.post(Msg::Push(bytes.to_vec(), tx)).is_err() {
            panic!("server loop is gone");
        }
        rx.recv_timeout(Duration::from_secs(10)).expect("no answer to Push")
    }

    /// Ends every open `/stream`; what each `end` returned.
    pub fn end_streams(&self) -> Vec<Result<(), Closed>> {
        let (tx, rx) = mpsc::channel();
        if self.remote.post(Msg::EndStreams(tx)).is_err() {
            panic!("server loop is gone");
        }
        rx.recv_timeout(Duration::from_secs(10)).expect("no answer to EndStreams")
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_stop(&self) {
        let _ = self.remote.post(Msg::Stop);
    }

    /// Waits for the loop to return (panics after `within`); how long it took.
    pub fn join(&mut self, within: Duration) -> Duration {
        let started = Instant::now();
        let thread = self.thread.take().expect("already joined");
        while !thread.is_finished() {
            if started.elapsed() > within {
                panic!("server loop still running {within:?} after the stop request");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = started.elapsed();
        match thread.join() {
            Ok(Ok(())) => took,
            Ok(Err(e)) => panic!("server loop failed: {e}"),
            Err(_) => panic!("server thread panicked"),
        }
    }

    /// Graceful stop; waits for the loop to return.
    pub fn stop(mut self) -> Duration {
        self.begin_stop();
        self.join(Duration::from_secs(10))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.remote.post(Msg::Stop);
            // Bounded: never hang a failing test on a stuck server.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let r = thread.join();
                if !std::thread::panicking() {
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => panic!("server loop failed: {e}"),
                        Err(_) => panic!("server thread panicked"),
                    }
                }
            }
        }
    }
}

// ----- the client ------------------------------------------------------------------------------

/// How long a client waits for any read before the test fails (instead of hanging).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    s
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The head as received, with the Date value masked (so answers can be compared).
    pub head_masked: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count()
    }

    pub fn says_close(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is not UTF-8")
    }
}

/// Replaces the 29-byte value of each `Date:` header by `X`s.
pub fn mask_dates(raw: &[u8]) -> Vec<u8> {
    let mut out = raw.to_vec();
    let needle = b"\r\nDate: ";
    let mut i = 0;
    while let Some(p) = find(&out[i..], needle) {
        let start = i + p + needle.len();
        let end = (start + 29).min(out.len());
        for b in &mut out[start..end] {
            *b = b'X';
        }
        i = end;
    }
    out
}

/// At most 300 bytes of `bytes`, lossily decoded, with the total length.
pub fn preview(bytes: &[u8]) -> String {
    let cut = bytes.len().min(300);
    let more = if bytes.len() > cut { "..." } else { "" };
    format!("{} bytes: {:?}{more}", bytes.len(), String::from_utf8_lossy(&bytes[..cut]))
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one response head from the start of `buf`: its length and the response without
/// its body, or `None` if the head is incomplete.
fn parse_head(buf: &[u8]) -> Option<(usize, Resp)> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&buf[..end]).expect("response head is not UTF-8");
    let mut lines = text[..end - 4].split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("").to_string();
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let reason = parts.next().unwrap_or("").to_string();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or_else(|| panic!("bad header line {l:?}"));
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let head_masked = String::from_utf8(mask_dates(&buf[..end])).unwrap();
    Some((end, Resp { version, status, reason, headers, body: Vec::new(), head_masked }))
}

/// The checks every final answer must pass: HTTP/1.1, a well-formed Date, Content-Length
/// unless the status forbids a body. Returns the body length the head announces.
fn check_final(head: &str, status: u16, headers: &[(String, String)], is_head_request: bool) -> usize {
    let get = |name: &str| headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).collect::<Vec<_>>();
    let dates = get("date");
    assert_eq!(dates.len(), 1, "every answer carries exactly one Date:\n{head}");
    let d = &dates[0].1;
    assert!(d.len() == 29 && d.ends_with(" GMT") && d.as_bytes()[3] == b',', "malformed Date {d:?}:\n{head}");
    let lengths = get("content-length");
    let bodiless = status == 204 || status == 304 || (100..200).contains(&status);
    if bodiless {
        assert!(lengths.is_empty(), "{status} must not carry Content-Length:\n{head}");
        return 0;
    }
    assert_eq!(lengths.len(), 1, "every {status} answer carries one Content-Length:\n{head}");
    assert!(get("transfer-encoding").is_empty(), "no Transfer-Encoding expected:\n{head}");
    let n: usize = lengths[0].1.parse().unwrap_or_else(|_| panic!("bad Content-Length:\n{head}"));
    if is_head_request {
        0
    } else {
        n
    }
}

/// Splits a byte stream of responses into responses (checking each). `head_requests[i]` says
/// whether the i-th answer is to a HEAD request (no body follows its head). Panics on trailing
/// garbage or an incomplete response.
pub fn parse_responses(mut raw: &[u8], head_requests: &[bool]) -> Vec<Resp> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let is_head = head_requests.get(out.len()).copied().unwrap_or(false);
        let (len, resp) = parse_one(raw, is_head)
            .unwrap_or_else(|| panic!("incomplete response in stream: {:?}", preview(raw)));
        out.push(resp);
        raw = &raw[len..];
    }
    out
}

/// One response (interim or final) from the start of `buf`, if complete.
fn parse_one(buf: &[u8], is_head: bool) -> Option<(usize, Resp)> {
    let (head_len, mut resp) = parse_head(buf)?;
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    assert_eq!(resp.version, "HTTP/1.1", "answers are HTTP/1.1:\n{head}");
    let body_len = if (100..200).contains(&resp.status) {
        0
    } else {
        check_final(&head, resp.status, &resp.headers, is_head)
    };
    if buf.len() < head_len + body_len {
        return None;
    }
    resp.body = buf[head_len..head_len + body_len].to_vec();
    Some((head_len + body_len, resp))
}

/// A client connection with a buffer for what was read past the last response.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client { stream: connect(addr), buf: Vec::new() }
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        Client { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).expect("write to server");
    }

    /// Reads more bytes into the buffer; panics on timeout, EOF or error.
    fn fill(&mut self, what: &str) {
        let mut tmp = [0u8; 64 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => panic!("connection closed while waiting for {what}; buffered: {:?}", preview(&self.buf)),
            Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            Err(e) => panic!("read while waiting for {what}: {e}; buffered: {:?}", preview(&self.buf)),
        }
    }

    fn read_one(&mut self, is_head: bool) -> Resp {
        loop {
            if let Some((len, resp)) = parse_one(&self.buf, is_head) {
                self.buf.drain(..len);
                return resp;
            }
            self.fill("a response");
        }
    }

    /// Reads at least `bytes` into the buffer slowly: 4 KiB reads, a 20 ms pause every
    /// 128 KiB, so the server's writes keep hitting a full socket.
    pub fn read_throttled(&mut self, bytes: usize) {
        let mut tmp = [0u8; 4096];
        let mut since_pause = 0;
        let started = Instant::now();
        while self.buf.len() < bytes {
            match self.stream.read(&mut tmp) {
                Ok(0) => panic!("closed after {} bytes of a throttled read", self.buf.len()),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    since_pause += n;
                    if since_pause >= 128 * 1024 {
                        since_pause = 0;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                Err(e) => panic!("throttled read after {} bytes: {e}", self.buf.len()),
            }
            assert!(started.elapsed() < Duration::from_secs(30), "throttled read too slow");
        }
    }

    /// Reads until `needle` arrives; returns everything up to and including it (raw: for
    /// streams and upgraded connections, which are not a series of responses).
    pub fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = find(&self.buf, needle) {
                return self.buf.drain(..at + needle.len()).collect();
            }
            self.fill("a stream's bytes");
        }
    }

    /// Reads one final response (skipping nothing: a 1xx here fails the test).
    pub fn read_response(&mut self) -> Resp {
        let r = self.read_one(false);
        assert!(r.status >= 200, "unexpected interim response {}", r.status);
        r
    }

    /// Reads the response to a HEAD request (no body after the head).
    pub fn read_head_response(&mut self) -> Resp {
        self.read_one(true)
    }

    /// Reads one response, interim (1xx) or final.
    pub fn read_any(&mut self) -> Resp {
        self.read_one(false)
    }

    /// Sends a request and reads its answer.
    pub fn roundtrip(&mut self, req: impl AsRef<[u8]>) -> Resp {
        self.send(req);
        self.read_response()
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.roundtrip(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"))
    }

    /// Asserts the server closes the connection within `within` without sending anything more
    /// (FIN or RST both count).
    pub fn expect_closed(&mut self, within: Duration) {
        assert!(self.buf.is_empty(), "unread bytes before close: {:?}", preview(&self.buf));
        let rest = self.read_until_closed(within);
        assert!(rest.is_empty(), "bytes after the last expected answer: {:?}", preview(&rest));
    }

    /// Reads everything until the server closes (FIN or RST); panics if it does not within
    /// `within`. Returns the bytes (including any buffered ones).
    pub fn read_until_closed(&mut self, within: Duration) -> Vec<u8> {
        let deadline = Instant::now() + within;
        let mut out = std::mem::take(&mut self.buf);
        let mut tmp = [0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("connection not closed within {within:?}; got {:?}", preview(&out));
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut tmp) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    panic!("connection not closed within {within:?}; got {:?}", preview(&out))
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        self.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        out
    }

    /// Asserts the server neither answers nor closes for `for_`.
    pub fn expect_silence(&mut self, for_: Duration) {
        self.stream.set_read_timeout(Some(for_)).unwrap();
        let mut tmp = [0u8; 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => panic!("server closed the connection"),
            Ok(n) => panic!("unexpected bytes: {:?}", preview(&tmp[..n])),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
        self.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    }

    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }

    /// Closes with RST instead of FIN.
    pub fn reset(self) {
        test_support::sockets::reset(self.stream);
    }
}

/// Sends `raw` on a fresh connection, expects one answer with `status`; then either the
/// connection closes (within 3 s), or (`closes == false`) it still answers a request. Finally
/// a new connection is served.
pub fn rejected(addr: SocketAddr, raw: impl AsRef<[u8]>, status: u16, closes: bool) {
    let mut c = Client::connect(addr);
    c.send(raw);
    let r = c.read_response();
    assert_eq!(r.status, status, "wrong status; head:\n{}", r.head_masked);
    if closes {
        assert!(r.says_close(), "a closing rejection says Connection: close:\n{}", r.head_masked);
        c.expect_closed(Duration::from_secs(3));
    } else {
        assert!(!r.says_close(), "{status} should keep the connection:\n{}", r.head_masked);
        assert_eq!(c.get("/plaintext").status, 200, "connection unusable after {status}");
    }
    assert_serves(addr);
}

/// Asserts a fresh connection gets `/plaintext` answered.
pub fn assert_serves(addr: SocketAddr) {
    let mut c = Client::connect(addr);
    let r = c.get("/plaintext");
    assert_eq!((r.status, r.body_str()), (200, "Hello, World!"), "server no longer serves");
}

/// A client socket with tiny buffers, set before `connect` so they shape the connection from
/// its first segment: SO_RCVBUF/SO_SNDBUF of `buffer` bytes (the kernel doubles them) and an
/// MSS of 1,000 bytes. (Without the small MSS, loopback's 64 KiB MSS against a 4 KiB window
/// makes the sender wait for the persist timer between segments: correct, but crawling.)
pub fn connect_tiny(addr: SocketAddr, buffer: i32) -> TcpStream {
    let shape = test_support::sockets::Shape {
        recv_buffer: Some(buffer),
        send_buffer: Some(buffer),
        max_segment: Some(1000),
    };
    let stream =
        test_support::sockets::connect_shaped(addr, shape).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

/// Serialises the tests of one test binary that must not overlap (process-wide fd counts,
/// CPU-time measurements, timing). A failed test must not poison the others.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}
