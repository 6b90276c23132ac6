//! The hub's HTTP face: routes each request to the [`Hub`], the worker pool or a page.
//!
//! | route | answer |
//! |---|---|
//! | `POST /pub/{channel}` | append the body, wake the channel's waiters: `{"seq":N,"subscribers":K}` |
//! | `GET /sub/{channel}?since=S&epoch=E&timeout=T` | messages after S now, or hold until a publish (200) or T (304) |
//! | `GET /ws` | WebSocket: JSON commands `sub`/`unsub`/`pub` and events on the same channels (see [`crate::ws`]) |
//! | `GET /sse/{channel}?since=S&epoch=E` | a `text/event-stream` of the messages after S, then of every publish (see [`crate::sse`]) |
//! | `GET /work?ms=M` | a CPU-heavy job on the worker pool, answered when it is done (404 with `--workers 0`) |
//! | `GET /stats`, `GET /metrics` | counters as JSON / Prometheus text |
//! | `GET /dashboard`, `GET /dashboard/stream` | a live picture of the loop, fed by `/stats` once a second (see [`crate::dashboard`]) |
//! | `GET /`, `GET /plaintext` | the chat demo page, `Hello, World!` |
//!
//! Every answer about a channel says where the client stands as `ETag: "EPOCH:SEQ"` (and
//! `epoch`, `next` in the JSON); the client sends it back as `If-None-Match` or as
//! `?since=SEQ&epoch=EPOCH`. A bare `"SEQ"` or a `since` without `epoch` still works, with the
//! rules of before epochs (see [`crate::hub`]).
//!
//! Access control (all off by default; see [`crate::auth`]): with `--publish-token-file`,
//! `POST /pub/..` and `GET /work` without the bearer token get 401 (after the 400/404/405 of
//! a bad path or method, before the body is used); with `--subscribe-key-file`, `GET /sub/..`
//! and `GET /sse/..` without a valid signed token get 403 and the reason (before the cursor is read). `/stats`, `/metrics`, `/dashboard`, `/` and `/plaintext` stay open. With `--allow-origin`, a
//! request whose `Origin` is allowed gets the CORS headers on its answer, whenever that answer
//! is sent (a held poll's too: the grant is remembered by connection until then), and an
//! `OPTIONS` preflight from it is answered 204 on any path.
//!
//! Held polls keep their [`Responder`]; the hub answers them from `publish`, from their timer,
//! or (304) at shutdown. `/work` keeps its responder until the job's result comes back from
//! the pool. If the client leaves first, the server calls `on_close` with the note we attached
//! (a [`Note`]: which waiter, or which job) and what waited for that client is let go on the
//! spot: a waiter is dropped with its timer; a queued job is taken out of the queue, a running
//! one is told to stop, so a client that left ties up no thread and no queue slot (its worker is
//! free within a few ms; `jobs_cancelled_total` counts them).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use http::{Body, ConnId, Ctx, Request, Responder, Response, Service, StreamId};
use reactor::{Cancelled, Remote, StopSignal, SubmitError, TimerId, WorkerPool};
use slab::Slab;

use crate::auth::{cors_preflight, unix_now, Cors, Grant};
use crate::cluster::{Cluster, ClusterEvent, PublishFailed, Publisher, RedisTimer};
use crate::config::{parse_seconds, Options};
use crate::dashboard::{self, Feeds};
use crate::hub::{self, valid_channel_name, Appended, Cursor, Hub, HubError, Poll};
use crate::metrics::{DeliveryLatency, Transport};
use crate::render::{self, Answer};
use crate::sse;
use crate::ws;

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

/// A `/work` job the pool has, by its ticket (its key in [`Tidings::jobs`]).
enum Job {
    /// Queued or running; its client waits for the answer.
    Waiting(Responder),
    /// Running when the server began to stop: told to stop, and answered 503 when it has
    /// (its result is not what was asked for).
    CutShort(Responder),
    /// Its client left while it ran (or just as it finished): it was told to stop, and its
    /// result, still to come back, is dropped. The ticket stays taken until then, so a new
    /// job cannot receive the old one's result.
    Abandoned,
}

/// What a kept responder waits for, as the note given to `ctx.set_note` (and handed back to
/// `on_close`): a held poll (its waiter's key) or a job (its ticket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    Waiter(usize),
    Job(u64),
    /// A `/dashboard/stream` feed (its key in the [`Feeds`]).
    Dashboard(usize),
    /// An open WebSocket, by its key in [`ws::Sockets`].
    Ws(usize),
    /// An SSE stream (its key in [`crate::sse::Streams`]).
    Sse(usize),
}

/// What a timer of the service is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The timeout of the held poll with this waiter key.
    Waiter(usize),
    /// The TTL timer: evict messages past `--message-ttl`.
    Ttl,
    /// Every second while a `/dashboard/stream` is open: send a snapshot.
    Dashboard,
    /// The `--ws-ping` tick of a WebSocket (by socket key).
    WsPing(usize),
    /// Go on with a WebSocket's backlog if its output has drained meanwhile.
    WsResume(usize),
    /// The heartbeat of the SSE stream with this key.
    SseHeartbeat(usize),
    /// Cluster mode: a connection's deadline or retry, or the tick (see [`crate::cluster`]).
    Redis(RedisTimer),
}

/// What the hub parks for a held poll: the connection to answer, and the timer of its
/// timeout (tagged with the waiter's key).
pub struct HeldPoll {
    pub responder: Responder,
    pub timer: TimerId,
}

/// What the hub parks per waiting subscriber: a held poll, or a WebSocket subscription.
pub enum Parked {
    Poll(HeldPoll),
    Ws(ws::WsSub),
    /// An SSE stream ([`crate::hub::Wakes::Every`]): its key in [`crate::sse::Streams`].
    Sse(usize),
}

impl Parked {
    fn poll(&self) -> Option<&HeldPoll> {
        match self {
            Parked::Poll(p) => Some(p),
            Parked::Ws(_) => None,
            Parked::Sse(_) => None,
        }
    }
}

/// The tidings service.
pub struct Tidings {
    opts: Options,
    hub: Hub<Parked>,
    /// Open `GET /sse/..` streams.
    sse: sse::Streams,
    /// `None` with `--workers 0`: `/work` is off (404) and no thread is started.
    pool: Option<WorkerPool<Msg>>,
    /// `/work` jobs the pool has (queued, running, or abandoned and not yet back), by ticket.
    jobs: Slab<Job>,
    /// Jobs taken out of the queue or told to stop because their client left.
    jobs_cancelled_total: u64,
    /// Set at shutdown: new polls are not held, new jobs are refused.
    stopping: bool,
    /// Test-only: `/work` jobs of exactly this many ms panic (see [`TEST_PANIC_ENV`]).
    panic_ms: Option<u64>,
    /// The one timer that evicts messages past `--message-ttl`, armed for the oldest one.
    ttl_timer: Option<TimerId>,
    /// With a list of `--allow-origin`s: the allowed origin (index) of each connection whose
    /// request is not answered yet, so an answer sent later (a held poll, a `/work` job)
    /// carries the same CORS headers as one sent at once. Taken out by [`Tidings::answer`]
    /// and `on_close`.
    cors_grants: HashMap<ConnId, usize>,
    /// Delivery latency per transport (`tidings_delivery_seconds`).
    pub(crate) latency: DeliveryLatency,
    /// The open `/dashboard/stream` feeds, and their repeating timer (armed while any is open).
    feeds: Feeds,
    dashboard_timer: Option<TimerId>,
    /// Open WebSockets (`GET /ws`).
    ws: ws::Sockets,
    /// `--redis`: the cluster engine; the hub is then a mirror of Redis.
    cluster: Option<Cluster>,
    /// Cluster mode: how many subscribers the last notification of each channel reached here,
    /// for the answer to a publish whose notification came back before its reply.
    reached: Reached,
    /// Channels published to in this event whose streams are still to be woken, with when
    /// the first publish was accepted (see `defer_stream_wake`).
    stream_wakes: Vec<(Box<str>, Instant)>,
    /// Peeks (`timeout=0`) parked until their channel loads (waiter key, its timer): answered
    /// 304 once it has loaded, if the load did not answer them with messages.
    peeks: Vec<(usize, TimerId)>,
}

/// Test-only fault injection, off unless this environment variable is set when the service
/// starts: `TIDINGS_TEST_PANIC_MS=<ms>` makes every `/work?ms=<ms>` job panic in its worker
/// thread, so the tests can check that a panicking job is answered 500 and that the pool
/// keeps its threads. Read once, in [`Tidings::new`]; there is no flag and no route that sets
/// it, so nothing reachable from the network can turn it on.
pub const TEST_PANIC_ENV: &str = "TIDINGS_TEST_PANIC_MS";

const PAGE: &str = include_str!("page.html");
const MAX_WORK_MS: u64 = 10_000;

fn panicked_job(ticket: u64, message: String) -> Msg {
    Msg::WorkDone { ticket, outcome: Err(message) }
}

impl Tidings {
    /// `remote` is the loop's, for the worker pool to send results back.
    pub fn new(opts: Options, remote: Remote<Msg>) -> std::io::Result<Tidings> {
        opts.check().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let pool = match opts.workers {
            0 => None,
            n => Some(WorkerPool::new(n, opts.work_queue, remote, panicked_job)?),
        };
        let panic_ms = std::env::var(TEST_PANIC_ENV).ok().and_then(|v| v.trim().parse().ok());
        if let Some(ms) = panic_ms {
            crate::log(format_args!("{TEST_PANIC_ENV}={ms}: /work?ms={ms} jobs will panic (test only)"));
        }
        let (hub, cluster) = match &opts.redis {
            None => (Hub::new(opts.hub), None),
            Some(r) => {
                let cluster =
                    Cluster::new(r.clone(), opts.hub.retain, opts.hub.message_ttl_ms, opts.max_message);
                (Hub::mirror(opts.hub), Some(cluster))
            }
        };
        let ws = ws::Sockets::new(opts.ws, opts.subscribe_key.clone(), opts.max_message);
        let sse = sse::Streams::new(sse::Settings {
            heartbeat: opts.sse_heartbeat,
            max_backlog: opts.max_stream_backlog,
        });
        Ok(Tidings {
            ws,
            hub,
            opts,
            pool,
            jobs: Slab::new(),
            jobs_cancelled_total: 0,
            stopping: false,
            panic_ms,
            ttl_timer: None,
            cors_grants: HashMap::new(),
            latency: DeliveryLatency::default(),
            feeds: Feeds::default(),
            dashboard_timer: None,
            sse,
            cluster,
            peeks: Vec::new(),
            reached: Reached::default(),
            stream_wakes: Vec::new(),
        })
    }

    pub fn hub(&self) -> &Hub<Parked> {
        &self.hub
    }

    /// Sends `resp` with the CORS headers its request was granted, logging it if
    /// `--access-log` is on. A closed connection is not an error.
    fn answer(&mut self, ctx: &mut Ctx<'_, Tidings>, responder: Responder, resp: Response, what: &str) {
        let resp = self.with_cors(responder.conn(), resp);
        if self.opts.access_log {
            crate::log(format_args!("{what} -> {}", resp.status));
        }
        let _ = ctx.respond(responder, resp);
    }

    /// `resp` with the CORS headers the request on `conn` was granted (taking the grant).
    fn with_cors(&mut self, conn: ConnId, resp: Response) -> Response {
        let grant = match &self.opts.cors {
            Cors::Off => None,
            Cors::Any => Some(Grant::Any),
            Cors::Origins(_) => self.cors_grants.remove(&conn).map(Grant::Origin),
        };
        // Without CORS there is nothing to add: no pass through `decorate` and back.
        if grant.is_none() && matches!(self.opts.cors, Cors::Off) {
            resp
        } else {
            self.opts.cors.decorate(resp, grant)
        }
    }

    fn publish(&mut self, ctx: &mut Ctx<'_, Tidings>, req: &Request<'_>, name: &str, responder: Responder) {
        if let Some(cluster) = self.cluster.as_mut() {
            // Redis assigns the seq; the fan-out comes back as its notification.
            let from = Publisher::Http { responder, target: req.target.into() };
            cluster.publish(ctx, name, req.body, from);
            return self.cluster_events(ctx);
        }
        // Delivery latency starts here: one clock read per publish, one per delivery group.
        let accepted = Instant::now();
        let published = match self.hub.publish_for_polls(name, req.body.to_vec(), ctx.now_ms()) {
            Ok(r) => r,
            Err(HubError::TooManyChannels) => {
                return self.answer(ctx, responder, too_many_channels(), req.target);
            }
            Err(HubError::TooLarge) => {
                let resp = Response::text(413, "message larger than the retention limits");
                return self.answer(ctx, responder, resp, req.target);
            }
        };
        // Held polls are answered now; the streams (left waiting) once this event's whole
        // batch of requests is done (`after_callback`).
        let streams = self.hub.waiting_on(name);
        let (seq, subscribers) = (published.seq, published.subscribers() + streams);
        self.fan_out(ctx, name, published, accepted);
        self.defer_stream_wake(name, streams, accepted);
        let body = render::published(seq, subscribers);
        self.answer(ctx, responder, Response::json(200, body), req.target);
    }

    /// Notes that the streams of `name` have news, to be delivered once per channel at the
    /// end of this event (see [`Hub::publish_for_polls`]): a pipelined batch of publishes
    /// then costs each stream one write, not one per publish.
    fn defer_stream_wake(&mut self, name: &str, streams: usize, accepted: Instant) {
        if streams > 0 && !self.stream_wakes.iter().any(|(n, _)| **n == *name) {
            self.stream_wakes.push((name.into(), accepted));
        }
    }

    /// Delivers what the streams of the channels published to in this event have not had.
    fn wake_streams(&mut self, ctx: &mut Ctx<'_, Tidings>) {
        for (name, accepted) in std::mem::take(&mut self.stream_wakes) {
            if let Some(published) = self.hub.wake_streams(&name) {
                self.fan_out(ctx, &name, published, accepted);
            }
        }
    }

    /// Delivers a publish to everyone it reached: one body per group (per distinct cursor)
    /// and transport, its bytes shared by every subscriber of it.
    fn fan_out(
        &mut self,
        ctx: &mut Ctx<'_, Tidings>,
        name: &str,
        published: hub::Published<Parked>,
        accepted: Instant,
    ) {
        for d in published.deliveries {
            let woken = d.waiters.len() as u64;
            if woken > 0 {
                let answer = render::messages(name, &d.batch, self.hub.messages(&d.batch));
                for w in d.waiters {
                    if let Parked::Poll(w) = w {
                        ctx.cancel_timer(w.timer);
                        self.answer(ctx, w.responder, messages_response(&answer), "held GET /sub");
                    }
                }
                // A late answer is written at once: every one of the group is with the kernel now.
                self.latency.record_n(Transport::LongPoll, accepted.elapsed(), woken);
            }
            if d.streams.is_empty() {
                continue;
            }
            // Streams of both kinds: each kind's bytes are rendered once for the group.
            let (ws_keys, sse_keys): (Vec<usize>, Vec<usize>) =
                d.streams.iter().partition(|&&k| matches!(self.hub.waiter(k), Some(Parked::Ws(_))));
            if !ws_keys.is_empty() {
                self.ws.deliver(ctx, &self.hub, name, &d.batch, &ws_keys);
                self.latency.record_n(Transport::Ws, accepted.elapsed(), ws_keys.len() as u64);
            }
            if !sse_keys.is_empty() {
                let events: Rc<[u8]> = sse::render(&d.batch, self.hub.messages(&d.batch)).into();
                self.sse.deliver(ctx, &mut self.hub, &sse_keys, &events);
                self.latency.record_n(Transport::Sse, accepted.elapsed(), sse_keys.len() as u64);
            }
        }
        self.ws.drop_slow(ctx, &mut self.hub);
        self.arm_ttl_timer(ctx);
    }

    /// `GET /ws`: the WebSocket handshake (see [`ws`]).
    fn websocket(&mut self, ctx: &mut Ctx<'_, Tidings>, req: &Request<'_>, responder: Responder) {
        if req.method != "GET" {
            return self.answer(ctx, responder, method_not_allowed("GET"), req.target);
        }
        let resp = match ws::handshake(req) {
            Ok(resp) => resp,
            Err(resp) => return self.answer(ctx, responder, resp, req.target),
        };
        let bearer = req.query_param("publish_token").map(|t| format!("Bearer {t}"));
        let publish = match &self.opts.publish_token {
            Some(t)
                if !t.accepts(req.header("authorization"))
                    && !t.accepts(bearer.as_deref().map(str::as_bytes)) =>
            {
                ws::PublishRight::Refused
            }
            _ => ws::PublishRight::Granted,
        };
        self.cors_grants.remove(&responder.conn());
        if self.opts.access_log {
            crate::log(format_args!("{} -> 101", req.target));
        }
        self.ws.open(ctx, req, responder, resp, publish);
    }

    /// Carries out what a WebSocket sent, its `pub` commands through the publish path.
    fn websocket_data(&mut self, ctx: &mut Ctx<'_, Tidings>, key: usize) {
        while let Some(p) = self.ws.next_publish(ctx, &mut self.hub, key) {
            if let Some(cluster) = self.cluster.as_mut() {
                cluster.publish(ctx, &p.channel, &p.data, Publisher::Ws(p.socket));
                continue;
            }
            let accepted = Instant::now();
            match self.hub.publish_for_polls(&p.channel, p.data, ctx.now_ms()) {
                Ok(published) => {
                    let streams = self.hub.waiting_on(&p.channel);
                    self.fan_out(ctx, &p.channel, published, accepted);
                    self.defer_stream_wake(&p.channel, streams, accepted);
                }
                Err(HubError::TooManyChannels) => {
                    self.ws.error(ctx, p.socket, "too many channels", Some("pub"));
                }
                Err(HubError::TooLarge) => {
                    self.ws.error(ctx, p.socket, "message larger than the retention limits", Some("pub"));
                }
            }
        }
    }

    fn subscribe(&mut self, ctx: &mut Ctx<'_, Tidings>, req: &Request<'_>, name: &str, responder: Responder) {
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
        match self.hub.subscribe(name, since, ctx.now_ms()) {
            Poll::Messages(batch) => {
                let answer = render::messages(name, &batch, self.hub.messages(&batch));
                self.answer(ctx, responder, messages_response(&answer), req.target);
            }
            // A peek (`timeout=0`) at a channel a cluster node does not hold yet waits for
            // its read from Redis (at most the Redis timeout and a second), then is answered.
            Poll::Hold(hold)
                if timeout.is_zero()
                    && !self.stopping
                    && self.hub.is_mirror()
                    && hold.asked_while_loading() =>
            {
                let wait =
                    self.opts.redis.as_ref().map_or(Duration::ZERO, |r| r.timeout) + Duration::from_secs(1);
                let key = self.hub.add_waiter(hold, |key| {
                    ctx.set_note(&responder, Note::Waiter(key));
                    Parked::Poll(HeldPoll { timer: ctx.set_timer(wait, Timer::Waiter(key)), responder })
                });
                if let Some(w) = self.hub.waiter(key).and_then(Parked::poll) {
                    let timer = w.timer;
                    // Entries of peeks answered by their timer (Redis down) go here, so the
                    // list stays within twice the peeks still waiting.
                    if self.peeks.len() >= 64 && self.peeks.len() >= 2 * self.hub.stats().waiting_polls {
                        let hub = &self.hub;
                        self.peeks.retain(|&(k, t)| {
                            hub.waiter(k).and_then(Parked::poll).is_some_and(|w| w.timer == t)
                        });
                    }
                    self.peeks.push((key, timer));
                }
            }
            // Nothing to wait for: `timeout=0`, or the server is stopping (the held polls
            // were answered 304 at shutdown; one whose request completes later gets the same
            // at once rather than holding the stop until its deadline).
            Poll::Hold(hold) if timeout.is_zero() || self.stopping => {
                self.hub.release_channel(hold.chan);
                self.answer(ctx, responder, not_modified(hold.epoch, hold.cursor), req.target);
            }
            Poll::Hold(hold) => {
                self.hub.add_waiter(hold, |key| {
                    ctx.set_note(&responder, Note::Waiter(key));
                    Parked::Poll(HeldPoll { timer: ctx.set_timer(timeout, Timer::Waiter(key)), responder })
                });
            }
        }
    }

    /// `GET /sse/{channel}`: the stream's head and `retry:`, then the backlog after its
    /// cursor, then every publish (see [`crate::sse`]).
    fn open_sse(&mut self, ctx: &mut Ctx<'_, Tidings>, req: &Request<'_>, name: &str, responder: Responder) {
        let cursor = match sse::cursor(req) {
            Ok(c) => c,
            Err(what) => return self.answer(ctx, responder, bad_request(what), req.target),
        };
        if self.stopping {
            return self.answer(ctx, responder, shutting_down(), req.target);
        }
        if req.method == "HEAD" {
            return self.answer(ctx, responder, sse::head(), req.target);
        }
        let head = self.with_cors(responder.conn(), sse::head().body(Body::Static(sse::RETRY)));
        if self.opts.access_log {
            crate::log(format_args!("{} -> 200 (stream)", req.target));
        }
        let Ok(stream) = ctx.respond_stream(responder, head) else { return };
        self.sse.start(ctx, &mut self.hub, stream, name, cursor);
    }

    fn work(&mut self, ctx: &mut Ctx<'_, Tidings>, req: &Request<'_>, responder: Responder) {
        let ms = match req.query_param("ms").and_then(parse_u64) {
            Some(ms) if ms <= MAX_WORK_MS => ms,
            _ => return self.answer(ctx, responder, bad_request("ms must be 0..=10000"), req.target),
        };
        let Some(pool) = self.pool.as_ref() else {
            return self.answer(ctx, responder, Response::text(404, "not found"), req.target);
        };
        if self.stopping {
            return self.answer(ctx, responder, shutting_down(), req.target);
        }
        let entry = self.jobs.vacant_entry();
        let ticket = entry.key() as u64;
        let panics = self.panic_ms == Some(ms);
        let job = move |stop: &StopSignal| {
            if panics {
                panic!("{TEST_PANIC_ENV}: injected panic of /work?ms={ms}");
            }
            Msg::WorkDone { ticket, outcome: Ok(run_job(ms, stop)) }
        };
        match pool.submit(ticket, job) {
            Ok(()) => {
                ctx.set_note(&responder, Note::Job(ticket));
                entry.insert(Job::Waiting(responder));
            }
            Err(SubmitError::Full) | Err(SubmitError::ShutDown) => {
                let resp = Response::text(503, "work queue full, retry later").header("Retry-After", 1);
                self.answer(ctx, responder, resp, req.target);
            }
        }
    }

    /// The client of job `ticket` left (its connection `conn` closed): take the job out of
    /// the queue, or tell it to stop if it runs; nothing is written.
    fn abandon_job(&mut self, conn: ConnId, ticket: u64) {
        let key = ticket as usize;
        let (Some(pool), Some(Job::Waiting(responder))) = (self.pool.as_ref(), self.jobs.get(key)) else {
            return;
        };
        if responder.conn() != conn {
            return;
        }
        match pool.cancel(ticket) {
            // It never runs and no result comes back: the ticket is free at once.
            Cancelled::Dequeued => {
                self.jobs.remove(key);
                self.jobs_cancelled_total += 1;
            }
            // It stops within a few ms; its result comes back and is dropped then.
            Cancelled::Signalled => {
                self.jobs[key] = Job::Abandoned;
                self.jobs_cancelled_total += 1;
            }
            // It has just finished: its result is on its way, and is dropped when it comes.
            Cancelled::NotFound => self.jobs[key] = Job::Abandoned,
        }
    }

    /// Every scalar counter, by its public name (shared by /stats and /metrics).
    fn counters(&self, ctx: &Ctx<'_, Tidings>) -> [(&'static str, u64); 25] {
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
            ("evicted_total", hub.evicted_total),
            ("timers_pending", lp.timers_pending as u64),
            ("loop_wakeups_total", lp.iterations),
            ("remote_wakeups_total", lp.remote_wakeups),
            ("jobs_queued", self.pool.as_ref().map_or(0, |p| p.queued()) as u64),
            ("jobs_running", self.pool.as_ref().map_or(0, |p| p.running()) as u64),
            ("jobs_cancelled_total", self.jobs_cancelled_total),
            ("accepted_total", server.accepted_total),
            ("closed_by_peer_total", server.closed_by_peer_total),
            ("dashboard_streams", self.feeds.len() as u64),
            ("ws_connections", self.ws.open_count() as u64),
            ("ws_dropped_slow_total", self.ws.dropped_slow_total),
            ("sse_streams", self.sse.len() as u64),
            ("streams_dropped_slow_total", self.sse.dropped_slow_total),
            ("redis_connected", self.cluster.as_ref().map_or(0, |c| c.is_connected() as u64)),
            ("redis_channels", self.cluster.as_ref().map_or(0, |c| c.subscribed() as u64)),
            ("redis_reconnects_total", self.cluster.as_ref().map_or(0, |c| c.stats.reconnects_total)),
            ("redis_timeouts_total", self.cluster.as_ref().map_or(0, |c| c.stats.timeouts_total)),
        ]
    }

    /// The `/stats` body: what `/stats` answers and every dashboard snapshot carries.
    fn stats_body(&self, ctx: &Ctx<'_, Tidings>) -> Vec<u8> {
        render::stats(&self.counters(ctx), &self.latency, ctx.stats().responses())
    }

    /// `GET /dashboard/stream`: a `text/event-stream` of `/stats` snapshots, one at once and
    /// one a second (see [`crate::dashboard`]).
    fn dashboard_feed(&mut self, ctx: &mut Ctx<'_, Tidings>, req: &Request<'_>, responder: Responder) {
        if self.stopping {
            return self.answer(ctx, responder, shutting_down(), req.target);
        }
        if self.feeds.is_full() {
            let resp = Response::text(503, "too many dashboard streams").header("Retry-After", 1);
            return self.answer(ctx, responder, resp, req.target);
        }
        let head = Response::new(200)
            .content_type("text/event-stream")
            .header("Cache-Control", "no-cache")
            .header("X-Accel-Buffering", "no");
        let Ok(stream) = ctx.respond_stream(responder, head) else { return };
        let key = self.feeds.add(stream);
        ctx.set_stream_note(&stream, Note::Dashboard(key));
        let first = Feeds::greeting(&self.stats_body(ctx));
        let _ = ctx.send(&stream, &first);
        if self.dashboard_timer.is_none() {
            self.dashboard_timer = Some(ctx.set_repeating_timer(dashboard::PERIOD, Timer::Dashboard));
        }
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
    fn expire_waiter(&mut self, ctx: &mut Ctx<'_, Tidings>, key: usize) {
        if self.hub.waiter(key).and_then(Parked::poll).is_none() {
            return;
        }
        if let Some(hub::Removed { payload: Parked::Poll(w), cursor, epoch }) = self.hub.remove_waiter(key) {
            ctx.cancel_timer(w.timer);
            self.answer(ctx, w.responder, not_modified(epoch, cursor), "held GET /sub");
        }
    }

    /// Keeps the TTL timer armed for the oldest retained message, if there is a TTL and a
    /// message. One timer for the whole hub: when it fires, the expired messages go (oldest
    /// first, no scan) and it is armed again for the next one.
    fn arm_ttl_timer(&mut self, ctx: &mut Ctx<'_, Tidings>) {
        if self.ttl_timer.is_some() {
            return;
        }
        let now = ctx.now_ms();
        if let Some(due) = self.hub.expire(now) {
            self.ttl_timer = Some(ctx.set_timer(Duration::from_millis(due.saturating_sub(now)), Timer::Ttl));
        }
    }
}

/// Cluster mode: what Redis said, and what the mirror asks of Redis.
impl Tidings {
    /// Channels subscribed to that the mirror does not hold yet: ask the cluster for them,
    /// then act on what the cluster has to say. Runs after every callback that may subscribe
    /// or hear from Redis.
    ///
    /// Without `--redis` this is one test: the cluster's work is out of line, so the plaintext
    /// path does not pay for it (it cost 17 instructions per request when it was not).
    #[inline]
    fn settle_cluster(&mut self, ctx: &mut Ctx<'_, Tidings>) {
        if self.cluster.is_some() {
            self.settle_cluster_now(ctx);
        }
    }

    #[inline(never)]
    fn settle_cluster_now(&mut self, ctx: &mut Ctx<'_, Tidings>) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        for name in self.hub.take_wanted() {
            cluster.want(ctx, &name);
        }
        self.cluster_events(ctx);
    }

    fn cluster_events(&mut self, ctx: &mut Ctx<'_, Tidings>) {
        loop {
            let Some(cluster) = self.cluster.as_mut() else { return };
            let events = cluster.take_events();
            if events.is_empty() {
                return;
            }
            for event in events {
                self.cluster_event(ctx, event);
            }
        }
    }

    fn cluster_event(&mut self, ctx: &mut Ctx<'_, Tidings>, event: ClusterEvent) {
        match event {
            ClusterEvent::Published { channel, from, outcome } => match (from, outcome) {
                (Publisher::Http { responder, target }, Ok((_, seq))) => {
                    // The subscribers of this node it reached (or, if its notification has not
                    // come back yet, will reach); the other nodes' are not known here.
                    let reached =
                        self.reached.of(&channel, seq).unwrap_or_else(|| self.hub.waiting_on(&channel));
                    let body = render::published(seq, reached);
                    self.answer(ctx, responder, Response::json(200, body), &target);
                }
                (Publisher::Http { responder, target }, Err(why)) => {
                    let text = match why {
                        PublishFailed::Unavailable => "redis unavailable, retry later",
                        PublishFailed::Refused => "redis refused the publish, retry later",
                    };
                    let resp = Response::text(503, text).header("Retry-After", 1);
                    self.answer(ctx, responder, resp, &target);
                }
                (Publisher::Ws(_), Ok(_)) => {}
                (Publisher::Ws(socket), Err(_)) => {
                    self.ws.error(ctx, socket, "redis unavailable, retry later", Some("pub"));
                }
            },
            ClusterEvent::Loaded { channel, epoch, last_seq, messages } => {
                let accepted = Instant::now();
                if let Some(published) = self.hub.load(&channel, epoch, last_seq, messages, ctx.now_ms()) {
                    self.fan_out(ctx, &channel, published, accepted);
                }
                self.answer_peeks(ctx);
            }
            ClusterEvent::Notified { channel, notes } => {
                // Latency in cluster mode runs from the notification's arrival.
                let accepted = Instant::now();
                let first = notes.first().map_or(0, |n| n.1);
                let Appended { published, gap } = self.hub.append(&channel, notes, ctx.now_ms());
                if let Some(published) = published {
                    self.reached.note(&channel, first..=published.seq, published.subscribers());
                    self.fan_out(ctx, &channel, published, accepted);
                }
                if gap {
                    if let Some(cluster) = self.cluster.as_mut() {
                        cluster.reload(ctx, &channel);
                    }
                }
            }
        }
    }

    /// Peeks whose channel has loaded and that are still parked (nothing newer): 304.
    fn answer_peeks(&mut self, ctx: &mut Ctx<'_, Tidings>) {
        let peeks = std::mem::take(&mut self.peeks);
        for (key, timer) in peeks {
            let same = self.hub.waiter(key).and_then(Parked::poll).is_some_and(|w| w.timer == timer);
            if same && self.hub.is_loading(key) {
                self.peeks.push((key, timer));
            } else if same {
                self.expire_waiter(ctx, key);
            }
        }
    }

    /// The cluster's tick: ping, and forget the channels it stopped following.
    fn cluster_tick(&mut self, ctx: &mut Ctx<'_, Tidings>) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        let hub = &self.hub;
        for name in cluster.on_tick(ctx, |name| hub.waiting_on(name) > 0) {
            self.hub.forget(&name);
        }
    }
}

impl Service for Tidings {
    type Msg = Msg;
    type Note = Note;
    type Timer = Timer;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Tidings>) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.start(ctx);
        }
    }

    fn on_io(&mut self, ctx: &mut Ctx<'_, Tidings>, tag: usize, event: reactor::Event) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.on_io(ctx, tag, event);
        }
        self.settle_cluster(ctx);
    }

    fn call(&mut self, ctx: &mut Ctx<'_, Tidings>, req: &Request<'_>, responder: Responder) {
        self.route(ctx, req, responder);
        self.settle_cluster(ctx);
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, Tidings>, conn: ConnId, note: Option<Note>) {
        self.closed(ctx, conn, note);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Tidings>, id: TimerId, timer: Timer) {
        self.timer(ctx, id, timer);
        self.settle_cluster(ctx);
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_, Tidings>, stream: StreamId, data: &[u8]) {
        if let Some(key) = self.ws.on_data(stream, data) {
            self.websocket_data(ctx, key);
        }
        self.settle_cluster(ctx);
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_, Tidings>, stream: StreamId) {
        self.ws.on_drained(ctx, &mut self.hub, stream);
        self.sse.drained(ctx, &mut self.hub, stream);
        self.settle_cluster(ctx);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Tidings>, msg: Msg) {
        self.message(ctx, msg);
    }

    #[inline]
    fn after_callback(&mut self, ctx: &mut Ctx<'_, Tidings>) {
        if !self.stream_wakes.is_empty() {
            self.wake_streams(ctx);
        }
    }

    fn on_shutdown(&mut self, ctx: &mut Ctx<'_, Tidings>) {
        self.shutdown(ctx);
    }
}

/// The callbacks' bodies.
impl Tidings {
    fn route(&mut self, ctx: &mut Ctx<'_, Tidings>, req: &Request<'_>, responder: Responder) {
        let grant = self.opts.cors.grant(req.header("origin"));
        if let Some(Grant::Origin(i)) = grant {
            self.cors_grants.insert(responder.conn(), i);
        }
        if grant.is_some() && req.method == "OPTIONS" {
            return self.answer(ctx, responder, cors_preflight(), req.target);
        }
        let get = req.method == "GET" || req.method == "HEAD";
        if let Some(name) = req.path.strip_prefix("/sse/") {
            return match channel(name) {
                Err(resp) => self.answer(ctx, responder, resp, req.target),
                Ok(_) if !get => self.answer(ctx, responder, method_not_allowed("GET, HEAD"), req.target),
                Ok(name) => match self.subscribe_refusal(req, name) {
                    Some(reason) => self.answer(ctx, responder, Response::text(403, reason), req.target),
                    None => self.open_sse(ctx, req, name, responder),
                },
            };
        }
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
        if req.path == "/ws" {
            return self.websocket(ctx, req, responder);
        }
        let resp = match req.path {
            // `--workers 0`: the route does not exist.
            "/work" if self.pool.is_none() => Response::text(404, "not found"),
            "/plaintext" | "/" | "/stats" | "/metrics" | "/work" | "/dashboard" | "/dashboard/stream"
                if !get =>
            {
                method_not_allowed("GET, HEAD")
            }
            "/plaintext" => Response::text(200, "Hello, World!"),
            "/" => Response::new(200)
                .content_type("text/html; charset=utf-8")
                .body(Body::Static(PAGE.as_bytes())),
            "/dashboard" => Response::new(200)
                .content_type("text/html; charset=utf-8")
                .body(Body::Static(dashboard::PAGE.as_bytes())),
            "/dashboard/stream" => return self.dashboard_feed(ctx, req, responder),
            "/work" if !self.is_publisher(req) => unauthorized(),
            "/work" => return self.work(ctx, req, responder),
            "/stats" => Response::json(200, self.stats_body(ctx)).header("Cache-Control", "no-cache"),
            "/metrics" => Response::new(200).content_type("text/plain; version=0.0.4; charset=utf-8").body(
                Body::Bytes(render::metrics(&self.counters(ctx), &self.latency, ctx.stats().responses())),
            ),
            _ => Response::text(404, "not found"),
        };
        self.answer(ctx, responder, resp, req.target);
    }

    fn closed(&mut self, ctx: &mut Ctx<'_, Tidings>, conn: ConnId, note: Option<Note>) {
        self.cors_grants.remove(&conn);
        let key = match note {
            None => return,
            Some(Note::Job(ticket)) => return self.abandon_job(conn, ticket),
            Some(Note::Dashboard(key)) => return self.feeds.remove(key, conn),
            Some(Note::Ws(key)) => return self.ws.on_close(ctx, &mut self.hub, conn, key),
            Some(Note::Sse(key)) => return self.sse.closed(ctx, &mut self.hub, conn, key),
            Some(Note::Waiter(key)) => key,
        };
        // A held poll's client left: drop its waiter and timer now, write nothing.
        if self.hub.waiter(key).and_then(Parked::poll).is_some_and(|w| w.responder.conn() == conn) {
            if let Some(hub::Removed { payload: Parked::Poll(w), .. }) = self.hub.remove_waiter(key) {
                ctx.cancel_timer(w.timer);
            }
        }
    }

    fn timer(&mut self, ctx: &mut Ctx<'_, Tidings>, id: TimerId, timer: Timer) {
        let key = match timer {
            Timer::Redis(RedisTimer::Tick) => return self.cluster_tick(ctx),
            Timer::Redis(t) => {
                if let Some(cluster) = self.cluster.as_mut() {
                    cluster.on_timer(ctx, id, t);
                }
                return;
            }
            Timer::Ttl => {
                if self.ttl_timer == Some(id) {
                    self.ttl_timer = None;
                    self.arm_ttl_timer(ctx);
                }
                return;
            }
            Timer::Dashboard => {
                if self.dashboard_timer == Some(id) {
                    let snapshot = self.stats_body(ctx);
                    self.feeds.broadcast(ctx, &snapshot);
                    if self.feeds.is_empty() {
                        ctx.cancel_timer(id);
                        self.dashboard_timer = None;
                    }
                }
                return;
            }
            Timer::WsPing(key) => return self.ws.on_ping_timer(ctx, &mut self.hub, key, id),
            Timer::WsResume(key) => {
                self.ws.on_resume_timer(ctx, &mut self.hub, key);
                return self.ws.drop_slow(ctx, &mut self.hub);
            }
            Timer::SseHeartbeat(key) => {
                return self.sse.heartbeat(ctx, &mut self.hub, id, key);
            }
            Timer::Waiter(key) => key,
        };
        if self.hub.waiter(key).and_then(Parked::poll).is_some_and(|w| w.timer == id) {
            self.expire_waiter(ctx, key);
        }
    }

    fn message(&mut self, ctx: &mut Ctx<'_, Tidings>, msg: Msg) {
        let Msg::WorkDone { ticket, outcome } = msg;
        let responder = match self.jobs.try_remove(ticket as usize) {
            Some(Job::Waiting(responder)) => responder,
            Some(Job::CutShort(responder)) => {
                return self.answer(ctx, responder, shutting_down(), "GET /work")
            }
            // An abandoned job's result has nobody to go to.
            Some(Job::Abandoned) | None => return,
        };
        let resp = match outcome {
            Ok(w) => Response::json(200, render::work_done(w.ms, w.took, w.result)),
            Err(panic) => {
                crate::log(format_args!("/work job panicked: {panic}"));
                Response::text(500, "job failed")
            }
        };
        // If the client left meanwhile, this is a quiet no-op.
        self.answer(ctx, responder, resp, "GET /work");
    }

    fn shutdown(&mut self, ctx: &mut Ctx<'_, Tidings>) {
        self.stopping = true;
        // Dashboard feeds end (their EventSource reconnects to the next server).
        self.feeds.end_all(ctx);
        if let Some(id) = self.dashboard_timer.take() {
            ctx.cancel_timer(id);
        }
        // WebSockets get close 1001 (going away).
        self.ws.shutdown(ctx, &mut self.hub);
        // Held polls get 304 so their clients re-poll (elsewhere, or after the restart).
        for key in self.hub.waiter_keys() {
            self.expire_waiter(ctx, key);
        }
        // SSE streams end; EventSource reconnects by itself with its Last-Event-ID.
        self.sse.end_all(ctx, &mut self.hub);
        // Jobs not done get 503 (retry after the restart): queued ones now, running ones
        // once they have stopped (within a few ms), so the pool's threads join promptly. A
        // job that has just finished gets its real answer.
        let waiting: Vec<usize> =
            self.jobs.iter().filter(|(_, j)| matches!(j, Job::Waiting(_))).map(|(k, _)| k).collect();
        for key in waiting {
            let Some(pool) = self.pool.as_ref() else { return };
            match pool.cancel(key as u64) {
                Cancelled::Dequeued => {
                    if let Some(Job::Waiting(responder)) = self.jobs.try_remove(key) {
                        self.answer(ctx, responder, shutting_down(), "GET /work");
                    }
                }
                Cancelled::Signalled => {
                    if let Some(job) = self.jobs.get_mut(key) {
                        if let Job::Waiting(responder) = std::mem::replace(job, Job::Abandoned) {
                            *job = Job::CutShort(responder);
                        }
                    }
                }
                Cancelled::NotFound => {}
            }
        }
    }
}

/// Cluster mode: per channel, the seqs of the last notifications this node delivered (one,
/// or a burst woken together) and how many of its subscribers they reached. Bounded: forgotten wholesale past [`Reached::MAX`]
/// channels (an answer then falls back to the subscribers waiting now).
#[derive(Default)]
struct Reached {
    last: HashMap<Box<str>, (std::ops::RangeInclusive<u64>, usize)>,
}

impl Reached {
    const MAX: usize = 4096;

    fn note(&mut self, channel: &str, seqs: std::ops::RangeInclusive<u64>, subscribers: usize) {
        if self.last.len() >= Reached::MAX && !self.last.contains_key(channel) {
            self.last.clear();
        }
        self.last.insert(channel.into(), (seqs, subscribers));
    }

    /// The subscribers publish `seq` reached, if it was among the last delivered.
    fn of(&self, channel: &str, seq: u64) -> Option<usize> {
        self.last.get(channel).filter(|(seqs, _)| seqs.contains(&seq)).map(|(_, n)| *n)
    }
}

/// The CPU-heavy job: an iterated 64-bit mix for about `ms` milliseconds (less if `stop` is
/// raised: its client left, or the server is shutting down). The signal is looked at every
/// 4096 rounds (tens of microseconds), so a stopped job frees its thread within a few ms.
pub fn run_job(ms: u64, stop: &StopSignal) -> WorkOutput {
    let start = Instant::now();
    let budget = Duration::from_millis(ms);
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ ms;
    loop {
        for _ in 0..4096 {
            h ^= h >> 33;
            h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
            h ^= h >> 29;
        }
        if start.elapsed() >= budget || stop.is_raised() {
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

/// The cursor from `?since=S[&epoch=E]` or, failing that, `If-None-Match: "E:S"` (or `"S"`).
fn cursor(req: &Request<'_>) -> Result<Option<Cursor>, &'static str> {
    if let Some(v) = req.query_param("since") {
        let since = parse_u64(v).ok_or("invalid since")?;
        let epoch = match req.query_param("epoch") {
            None => None,
            Some(e) => Some(parse_epoch(e).ok_or("invalid epoch: 8 hex digits")?),
        };
        return Ok(Some(Cursor { since, epoch }));
    }
    let Some(raw) = req.header("if-none-match") else { return Ok(None) };
    let v = std::str::from_utf8(raw).map_err(|_| "invalid If-None-Match")?.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let tag = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or("invalid If-None-Match")?;
    let (epoch, since) = match tag.split_once(':') {
        Some((e, s)) => (Some(parse_epoch(e).ok_or("invalid If-None-Match")?), s),
        None => (None, tag),
    };
    let since = parse_u64(since).ok_or("invalid If-None-Match")?;
    Ok(Some(Cursor { since, epoch }))
}

/// A 200 with messages (or an empty reset). The body and the header lines are shared, not
/// copied, when the same answer goes to many subscribers.
fn messages_response(a: &Answer) -> Response {
    Response::new(200)
        .content_type("application/json")
        .shared_headers(a.headers.clone())
        .body(Body::Shared(a.body.clone()))
}

/// An epoch as the client sends it back: exactly 8 hex digits, either case (written by
/// [`render::format_epoch`]).
pub(crate) fn parse_epoch(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// A plain decimal u64 (digits only).
pub(crate) fn parse_u64(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn bad_request(what: &'static str) -> Response {
    Response::text(400, what)
}

fn not_modified(epoch: u32, cursor: u64) -> Response {
    Response::new(304).header("ETag", render::etag(epoch, cursor)).header("Cache-Control", "no-cache")
}

fn shutting_down() -> Response {
    Response::text(503, "shutting down, retry later").header("Retry-After", 1)
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
