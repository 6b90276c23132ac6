//! The hub's HTTP face: routes each request to the [`Hub`], the worker pool or a page.
//!
//! | route | answer |
//! |---|---|
//! | `POST /pub/{channel}` | append the body, wake the channel's waiters: `{"seq":N,"subscribers":K}` |
//! | `GET /sub/{channel}?since=S&timeout=T` | messages after S now, or hold until a publish (200) or T (304) |
//! | `GET /work?ms=M` | a CPU-heavy job on the worker pool, answered when it is done |
//! | `GET /stats`, `GET /metrics` | counters as JSON / Prometheus text |
//! | `GET /`, `GET /plaintext` | the chat demo page, `Hello, World!` |
//!
//! Access control (all off by default; see [`crate::auth`]): with `--publish-token-file`,
//! `POST /pub/..` and `GET /work` without the bearer token get 401 (after the 400/404/405 of
//! a bad path or method, before the body is used); with `--subscribe-key-file`, `GET /sub/..`
//! without a valid signed token gets 403 and the reason (before the cursor is read). `/stats`, `/metrics`, `/` and `/plaintext` stay open. With `--allow-origin`, a
//! request whose `Origin` is allowed gets the CORS headers on its answer, whenever that answer
//! is sent (a held poll's too: the grant is remembered by connection until then), and an
//! `OPTIONS` preflight from it is answered 204 on any path.
//!
//! Held polls keep their [`Responder`]; the hub answers them from `publish`, from their timer,
//! or (304) at shutdown. If the client leaves first, the server calls `on_close` with the
//! note we attached (the waiter's key + 1) and the waiter is dropped on the spot: no timer, no
//! slot and nothing written is left behind.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Body, ConnId, Ctx, Request, Responder, Response, Service};
use reactor::{Remote, SubmitError, TimerId, WorkerPool};
use slab::Slab;

use crate::auth::{cors_preflight, unix_now, Cors, Grant};
use crate::config::{parse_seconds, Options};
use crate::hub::{valid_channel_name, Hub, HubError, Poll};
use crate::json;

/// Messages from worker threads to the loop.
pub enum Msg {
    /// A `/work` job finished (or panicked: `Err(panic message)`).
    WorkDone { ticket: u64, outcome: Result<WorkOutput, String> },
}

pub struct WorkOutput {
    pub ms: u64,
    pub took: Duration,
    pub result: u64,
}

/// The tidings service.
pub struct Tidings {
    opts: Options,
    hub: Hub,
    pool: WorkerPool<Msg>,
    /// Responders of `/work` requests whose job is queued or running, keyed by ticket.
    jobs: Slab<Responder>,
    /// Set at shutdown: running jobs stop early, so the pool's threads join promptly.
    stopping: Arc<AtomicBool>,
    /// Test-only: `/work` jobs of exactly this many ms panic (see [`TEST_PANIC_ENV`]).
    panic_ms: Option<u64>,
    /// With a list of `--allow-origin`s: the allowed origin (index) of each connection whose
    /// request is not answered yet, so an answer sent later (a held poll, a `/work` job)
    /// carries the same CORS headers as one sent at once. Taken out by [`Tidings::answer`]
    /// and `on_close`.
    cors_grants: HashMap<ConnId, usize>,
}

/// Test-only fault injection, off unless this environment variable is set when the service
/// starts: `TIDINGS_TEST_PANIC_MS=<ms>` makes every `/work?ms=<ms>` job panic in its worker
/// thread, so the tests can check that a panicking job is answered 500 and that the pool
/// keeps its threads. Read once, in [`Tidings::new`]; there is no flag and no route that sets
/// it, so nothing reachable from the network can turn it on.
pub const TEST_PANIC_ENV: &str = "TIDINGS_TEST_PANIC_MS";

const PAGE: &str = include_str!("page.html");
const MAX_WORK_MS: u64 = 10_000;

fn on_job_panic(ticket: u64, message: String) -> Msg {
    Msg::WorkDone { ticket, outcome: Err(message) }
}

impl Tidings {
    /// `remote` is the loop's, for the worker pool to send results back.
    pub fn new(opts: Options, remote: Remote<Msg>) -> std::io::Result<Tidings> {
        let pool = WorkerPool::new(opts.workers, opts.work_queue, remote, on_job_panic)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let panic_ms = std::env::var(TEST_PANIC_ENV).ok().and_then(|v| v.trim().parse().ok());
        if let Some(ms) = panic_ms {
            crate::log(format_args!("{TEST_PANIC_ENV}={ms}: /work?ms={ms} jobs will panic (test only)"));
        }
        let hub = Hub::new(opts.hub);
        Ok(Tidings { hub, opts, pool, jobs: Slab::new(), stopping, panic_ms, cors_grants: HashMap::new() })
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Sends `resp` with the CORS headers its request was granted, logging it if
    /// `--access-log` is on. A closed connection is not an error.
    fn answer(&mut self, ctx: &mut Ctx<'_, Msg>, responder: Responder, resp: Response, what: &str) {
        let grant = match &self.opts.cors {
            Cors::Off => None,
            Cors::Any => Some(Grant::Any),
            Cors::Origins(_) => self.cors_grants.remove(&responder.conn()).map(Grant::Origin),
        };
        let resp = self.opts.cors.decorate(resp, grant);
        if self.opts.access_log {
            crate::log(format_args!("{what} -> {}", resp.status));
        }
        let _ = ctx.respond(responder, resp);
    }

    fn publish(&mut self, ctx: &mut Ctx<'_, Msg>, req: &Request<'_>, name: &str, responder: Responder) {
        let (seq, woken) = match self.hub.publish(name, req.body.to_vec()) {
            Ok(r) => r,
            Err(HubError::TooManyChannels) => {
                return self.answer(ctx, responder, too_many_channels(), req.target);
            }
        };
        let subscribers = woken.len();
        for w in woken {
            if let Some(t) = w.timer {
                ctx.cancel_timer(t);
            }
            let resp = Response::new(200)
                .content_type("application/json")
                .header("ETag", format_args!("\"{}\"", w.next))
                .header("Cache-Control", "no-cache")
                .body(Body::Shared(w.body));
            self.answer(ctx, w.responder, resp, "held GET /sub");
        }
        let mut body = Vec::with_capacity(40);
        body.extend_from_slice(b"{\"seq\":");
        json::push_u64(&mut body, seq);
        body.extend_from_slice(b",\"subscribers\":");
        json::push_u64(&mut body, subscribers as u64);
        body.push(b'}');
        self.answer(ctx, responder, Response::json(200, body), req.target);
    }

    fn subscribe(&mut self, ctx: &mut Ctx<'_, Msg>, req: &Request<'_>, name: &str, responder: Responder) {
        let since = match cursor(req) {
            Ok(c) => c,
            Err(what) => return self.answer(ctx, responder, bad_request(what), req.target),
        };
        let timeout = match req.query_param("timeout") {
            None => self.opts.poll_timeout,
            Some(v) => match parse_seconds(v) {
                Some(d) if d <= Duration::from_secs(300) => d,
                _ => return self.answer(ctx, responder, bad_request("invalid timeout"), req.target),
            },
        };
        match self.hub.subscribe(name, since) {
            Err(HubError::TooManyChannels) => self.answer(ctx, responder, too_many_channels(), req.target),
            Ok(Poll::Messages { body, next, .. }) => {
                let resp = Response::json(200, body)
                    .header("ETag", format_args!("\"{next}\""))
                    .header("Cache-Control", "no-cache");
                self.answer(ctx, responder, resp, req.target);
            }
            // Nothing to wait for: `timeout=0`, or the server is stopping (the held polls
            // were answered 304 at shutdown; one whose request completes later gets the same
            // at once rather than holding the stop until its deadline).
            Ok(Poll::Hold { chan, cursor }) if timeout.is_zero() || self.stopping.load(Ordering::Relaxed) => {
                self.hub.release_channel(chan);
                self.answer(ctx, responder, not_modified(cursor), req.target);
            }
            Ok(Poll::Hold { chan, cursor }) => {
                let key = self.hub.vacant_waiter_key();
                ctx.set_note(&responder, key as u64 + 1);
                let timer = ctx.set_timer(timeout, key as u64);
                self.hub.add_waiter(chan, cursor, responder, Some(timer));
            }
        }
    }

    fn work(&mut self, ctx: &mut Ctx<'_, Msg>, req: &Request<'_>, responder: Responder) {
        let ms = match req.query_param("ms").and_then(parse_u64) {
            Some(ms) if ms <= MAX_WORK_MS => ms,
            _ => return self.answer(ctx, responder, bad_request("ms must be 0..=10000"), req.target),
        };
        let entry = self.jobs.vacant_entry();
        let ticket = entry.key() as u64;
        let stopping = self.stopping.clone();
        let panics = self.panic_ms == Some(ms);
        let job = move || {
            if panics {
                panic!("{TEST_PANIC_ENV}: injected panic of /work?ms={ms}");
            }
            Msg::WorkDone { ticket, outcome: Ok(run_job(ms, &stopping)) }
        };
        match self.pool.submit(ticket, job) {
            Ok(()) => {
                entry.insert(responder);
            }
            Err(SubmitError::Full) | Err(SubmitError::ShutDown) => {
                let resp = Response::text(503, "work queue full, retry later").header("Retry-After", 1);
                self.answer(ctx, responder, resp, req.target);
            }
        }
    }

    fn stats_json(&self, ctx: &Ctx<'_, Msg>) -> Vec<u8> {
        let mut s = String::with_capacity(512);
        s.push('{');
        for (name, value) in self.counters(ctx) {
            let _ = write!(s, "\"{name}\":{value},");
        }
        s.push_str("\"responses_total\":{");
        for (i, (code, n)) in ctx.stats().responses().enumerate() {
            let _ = write!(s, "{}\"{code}\":{n}", if i > 0 { "," } else { "" });
        }
        s.push_str("}}");
        s.into_bytes()
    }

    fn metrics_text(&self, ctx: &Ctx<'_, Msg>) -> Vec<u8> {
        let mut s = String::with_capacity(2048);
        for (name, value) in self.counters(ctx) {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = write!(s, "# TYPE tidings_{name} {kind}\ntidings_{name} {value}\n");
        }
        s.push_str("# TYPE tidings_responses_total counter\n");
        for (code, n) in ctx.stats().responses() {
            let _ = writeln!(s, "tidings_responses_total{{code=\"{code}\"}} {n}");
        }
        s.into_bytes()
    }

    /// Every scalar counter, by its public name (shared by /stats and /metrics).
    fn counters(&self, ctx: &Ctx<'_, Msg>) -> [(&'static str, u64); 14] {
        let hub = self.hub.stats();
        let server = ctx.stats();
        let lp = ctx.loop_stats();
        [
            ("connections", server.connections as u64),
            ("waiting_polls", hub.waiting_polls as u64),
            ("channels", hub.channels as u64),
            ("retained_messages", hub.retained_messages as u64),
            ("retained_bytes", hub.retained_bytes as u64),
            ("published_total", hub.published_total),
            ("delivered_total", hub.delivered_total),
            ("timers_pending", lp.timers_pending as u64),
            ("loop_wakeups_total", lp.iterations),
            ("remote_wakeups_total", lp.remote_wakeups),
            ("jobs_queued", self.pool.queued() as u64),
            ("jobs_running", self.pool.running() as u64),
            ("accepted_total", server.accepted_total),
            ("closed_by_peer_total", server.closed_by_peer_total),
        ]
    }

    /// Whether the request may publish (and run `/work`): no `--publish-token-file`, or
    /// `Authorization: Bearer <the token>`.
    fn is_publisher(&self, req: &Request<'_>) -> bool {
        self.opts.publish_token.as_ref().map_or(true, |t| t.accepts(req.header("authorization")))
    }

    /// Why a subscribe to `channel` is refused (403), if it is: with `--subscribe-key-file`,
    /// its `token=` is missing, malformed, not signed for this channel, or expired.
    fn subscribe_refusal(&self, req: &Request<'_>, channel: &str) -> Option<&'static str> {
        let key = self.opts.subscribe_key.as_ref()?;
        key.verify(channel, req.query_param("token"), unix_now()).err().map(|e| e.reason())
    }

    /// Ends a held poll with 304 (timeout or shutdown).
    fn expire_waiter(&mut self, ctx: &mut Ctx<'_, Msg>, key: usize) {
        if let Some(w) = self.hub.remove_waiter(key) {
            if let Some(t) = w.timer {
                ctx.cancel_timer(t);
            }
            self.answer(ctx, w.responder, not_modified(w.cursor), "held GET /sub");
        }
    }
}

impl Service for Tidings {
    type Msg = Msg;

    fn call(&mut self, ctx: &mut Ctx<'_, Msg>, req: &Request<'_>, responder: Responder) {
        let grant = self.opts.cors.grant(req.header("origin"));
        if let Some(Grant::Origin(i)) = grant {
            self.cors_grants.insert(responder.conn(), i);
        }
        if grant.is_some() && req.method == "OPTIONS" {
            return self.answer(ctx, responder, cors_preflight(), req.target);
        }
        let get = req.method == "GET" || req.method == "HEAD";
        if let Some(name) = req.path.strip_prefix("/pub/") {
            return match channel(name) {
                Err(resp) => self.answer(ctx, responder, resp, req.target),
                Ok(_) if req.method != "POST" => {
                    self.answer(ctx, responder, method_not_allowed("POST"), req.target)
                }
                Ok(_) if !self.is_publisher(req) => self.answer(ctx, responder, unauthorized(), req.target),
                Ok(name) => self.publish(ctx, req, name, responder),
            };
        }
        if let Some(name) = req.path.strip_prefix("/sub/") {
            return match channel(name) {
                Err(resp) => self.answer(ctx, responder, resp, req.target),
                Ok(_) if !get => self.answer(ctx, responder, method_not_allowed("GET, HEAD"), req.target),
                Ok(name) => match self.subscribe_refusal(req, name) {
                    Some(reason) => self.answer(ctx, responder, Response::text(403, reason), req.target),
                    None => self.subscribe(ctx, req, name, responder),
                },
            };
        }
        let resp = match req.path {
            "/plaintext" | "/" | "/stats" | "/metrics" | "/work" if !get => method_not_allowed("GET, HEAD"),
            "/plaintext" => Response::text(200, "Hello, World!"),
            "/" => Response::new(200)
                .content_type("text/html; charset=utf-8")
                .body(Body::Static(PAGE.as_bytes())),
            "/work" if !self.is_publisher(req) => unauthorized(),
            "/work" => return self.work(ctx, req, responder),
            "/stats" => Response::json(200, self.stats_json(ctx)).header("Cache-Control", "no-cache"),
            "/metrics" => Response::new(200)
                .content_type("text/plain; version=0.0.4; charset=utf-8")
                .body(Body::Bytes(self.metrics_text(ctx))),
            _ => Response::text(404, "not found"),
        };
        self.answer(ctx, responder, resp, req.target);
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, Msg>, conn: ConnId, note: u64) {
        self.cors_grants.remove(&conn);
        // A held poll's client left: drop its waiter and timer now, write nothing.
        let Some(key) = (note as usize).checked_sub(1) else { return };
        if self.hub.waiter(key).is_some_and(|w| w.responder.conn() == conn) {
            if let Some(w) = self.hub.remove_waiter(key) {
                if let Some(t) = w.timer {
                    ctx.cancel_timer(t);
                }
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg>, id: TimerId, tag: u64) {
        let key = tag as usize;
        if self.hub.waiter(key).is_some_and(|w| w.timer == Some(id)) {
            self.expire_waiter(ctx, key);
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Msg>, msg: Msg) {
        let Msg::WorkDone { ticket, outcome } = msg;
        let Some(responder) = self.jobs.try_remove(ticket as usize) else { return };
        let resp = match outcome {
            Ok(w) => {
                let body = format!(
                    "{{\"ms\":{},\"took_ms\":{:.3},\"result\":\"{:016x}\"}}",
                    w.ms,
                    w.took.as_secs_f64() * 1000.0,
                    w.result
                );
                Response::json(200, body.into_bytes())
            }
            Err(panic) => {
                crate::log(format_args!("/work job panicked: {panic}"));
                Response::text(500, "job failed")
            }
        };
        // If the client left meanwhile, this is a quiet no-op.
        self.answer(ctx, responder, resp, "GET /work");
    }

    fn on_shutdown(&mut self, ctx: &mut Ctx<'_, Msg>) {
        self.stopping.store(true, Ordering::Relaxed);
        // Held polls get 304 so their clients re-poll (elsewhere, or after the restart).
        for key in self.hub.waiter_keys() {
            self.expire_waiter(ctx, key);
        }
    }
}

/// The CPU-heavy job: an iterated 64-bit mix for about `ms` milliseconds (less if `stop` is
/// set: the server is shutting down and nobody will read the result).
pub fn run_job(ms: u64, stop: &AtomicBool) -> WorkOutput {
    let start = Instant::now();
    let budget = Duration::from_millis(ms);
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ ms;
    loop {
        for _ in 0..4096 {
            h ^= h >> 33;
            h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
            h ^= h >> 29;
        }
        if start.elapsed() >= budget || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    WorkOutput { ms, took: start.elapsed(), result: h }
}

/// Validates the channel segment of a `/pub/..` or `/sub/..` path.
fn channel(name: &str) -> Result<&str, Response> {
    if name.contains('/') {
        return Err(Response::text(404, "not found"));
    }
    if !valid_channel_name(name) {
        return Err(bad_request("invalid channel name: 1..128 bytes of [A-Za-z0-9._:-]"));
    }
    Ok(name)
}

/// The cursor from `?since=S` or, failing that, `If-None-Match: "S"`.
fn cursor(req: &Request<'_>) -> Result<Option<u64>, &'static str> {
    if let Some(v) = req.query_param("since") {
        return parse_u64(v).map(Some).ok_or("invalid since");
    }
    let Some(raw) = req.header("if-none-match") else { return Ok(None) };
    let v = std::str::from_utf8(raw).map_err(|_| "invalid If-None-Match")?.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .and_then(parse_u64)
        .map(Some)
        .ok_or("invalid If-None-Match")
}

/// A plain decimal u64 (digits only).
fn parse_u64(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn bad_request(what: &'static str) -> Response {
    Response::text(400, what)
}

fn not_modified(cursor: u64) -> Response {
    Response::new(304).header("ETag", format_args!("\"{cursor}\"")).header("Cache-Control", "no-cache")
}

fn too_many_channels() -> Response {
    Response::text(503, "too many channels").header("Retry-After", 1)
}

fn unauthorized() -> Response {
    Response::text(401, "missing or wrong token: send Authorization: Bearer <token>")
        .header("WWW-Authenticate", "Bearer")
}

fn method_not_allowed(allow: &'static str) -> Response {
    Response::text(405, "method not allowed").header("Allow", allow)
}
