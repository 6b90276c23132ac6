//! The server: from `accept` to the written response, in the order it happens.
//!
//! Read this file top to bottom to follow one request:
//!
//! 1. [`Server::accept_ready`]: the listener is readable; `accept4` in a loop until EAGAIN,
//!    TCP_NODELAY on each socket, register it (readable), start the keep-alive clock.
//! 2. [`Server::conn_ready`]: the socket is readable; [`Server::read`] appends to the
//!    connection's read buffer (taken from the pool only now).
//! 3. [`Server::process`]: parse as many complete requests as the buffer holds (pipelining),
//!    for each one call the [`Service`], whose [`Responder`] appends the answer to the output.
//!    A responder the service *keeps* stops the parsing: later requests wait their turn.
//! 4. [`Server::flush`]: one `write` for the whole batch of answers; if the socket cannot take
//!    it all, ask for EPOLLOUT and continue when writable.
//! 5. The connection goes idle: buffers back to the pool, keep-alive timer running.
//!
//! Closing is one function, [`Server::close`], whatever the cause: deregister from epoll,
//! cancel the connection's timer, tell the service if it kept a responder, return buffers,
//! and only then close the fd (by dropping the stream).

use std::io::{self, Write as _};
use std::time::Duration;

use reactor::net::{ListenOptions, Listener, Stream};
use reactor::{Event, Handler, Interest, LoopStats, Reactor, Remote, TimerId, Token};
use slab::Slab;

use crate::body::{ChunkedDecoder, TrailerBudget};
use crate::buffers::{BufferPool, Output};
use crate::date::DateCache;
use crate::request::{self, BodyKind, Framing, HttpError, KeptHead, Request};
use crate::response::{self, Body, HeadContext, Response};
use crate::{Config, Limits};

/// Identifies a connection across its life (slab key + generation, so a reused slot is not
/// mistaken for the old connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    key: u32,
    gen: u32,
}

/// The right to answer one request. Not `Clone`: a request is answered once. Keep it to
/// answer later (from a timer, a message, a worker result); if the connection closes
/// meanwhile, [`Ctx::respond`] returns `Err(Closed)` and nothing is written.
#[derive(Debug)]
pub struct Responder {
    conn: ConnId,
    seq: u32,
}

impl Responder {
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

/// The connection of a responder is gone (or the request was already answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// The application: what to do with each request, and with the events it set up.
pub trait Service {
    /// The type of messages other threads (e.g. worker-pool jobs) post to the loop.
    type Msg: Send + 'static;

    /// A request arrived. Answer it through `ctx.respond(responder, ..)`, now or later.
    fn call(&mut self, ctx: &mut Ctx<'_, Self::Msg>, req: &Request<'_>, responder: Responder);

    /// The connection of a responder you kept closed before you answered it. `note` is what
    /// you gave [`Ctx::set_note`] (0 if nothing). Drop whatever waits for it.
    fn on_close(&mut self, _ctx: &mut Ctx<'_, Self::Msg>, _conn: ConnId, _note: u64) {}

    /// A timer set with [`Ctx::set_timer`] fired.
    fn on_timer(&mut self, _ctx: &mut Ctx<'_, Self::Msg>, _id: TimerId, _tag: u64) {}

    /// A message from another thread arrived.
    fn on_message(&mut self, _ctx: &mut Ctx<'_, Self::Msg>, _msg: Self::Msg) {}

    /// A watched signal arrived. By default SIGINT/SIGTERM start a graceful shutdown.
    fn on_signal(&mut self, ctx: &mut Ctx<'_, Self::Msg>, signo: i32) {
        if signo == libc::SIGINT || signo == libc::SIGTERM {
            ctx.shutdown();
        }
    }

    /// Graceful shutdown began: answer every responder you keep (e.g. 304 to held polls).
    fn on_shutdown(&mut self, _ctx: &mut Ctx<'_, Self::Msg>) {}
}

/// Server counters.
#[derive(Debug, Clone)]
pub struct ServerStats {
    pub connections: usize,
    pub accepted_total: u64,
    /// Connections ended by the client: FIN, RST, HUP, EPIPE.
    pub closed_by_peer_total: u64,
    pub requests_total: u64,
    /// Request heads run through the parser (a head is parsed once, however many reads its
    /// body takes; an `HTTP/1.2`..`1.9` head twice, the second time as 1.1).
    pub heads_parsed_total: u64,
    responses: Vec<u64>,
}

impl ServerStats {
    fn new() -> ServerStats {
        ServerStats {
            connections: 0,
            accepted_total: 0,
            closed_by_peer_total: 0,
            requests_total: 0,
            heads_parsed_total: 0,
            responses: vec![0; 600],
        }
    }

    /// (status, count) for every status answered at least once, in status order.
    pub fn responses(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.responses.iter().enumerate().filter(|(_, &n)| n > 0).map(|(s, &n)| (s as u16, n))
    }
}

/// The request a connection is answering now (or whose responder the service keeps).
#[derive(Debug, Clone, Copy)]
struct Current {
    seq: u32,
    keep_alive: bool,
    is_head: bool,
    http10: bool,
    note: u64,
}

/// A request whose head is parsed but whose body is still arriving. Its head stays at the
/// start of the read buffer, and is not parsed again: `head` says where its parts are.
struct PendingBody {
    head: KeptHead,
    body: BodyProgress,
}

/// How far a pending body has come.
enum BodyProgress {
    /// `Content-Length` bytes: complete once the buffer holds them after the head.
    Length(usize),
    /// Chunked: the raw bytes decoded so far are removed from the buffer, so decoding always
    /// resumes right after the head.
    Chunked { decoder: ChunkedDecoder, decoded: Vec<u8> },
}

/// What the connection is waiting for, which decides its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Nothing buffered, nothing pending: keep-alive idle.
    Idle,
    /// Part of a head is buffered.
    Head,
    /// Part of a body is buffered.
    Body,
    /// The service kept a responder: no server timeout (the service owns the wait).
    Service,
    /// Output is pending and the socket is full.
    Write,
    /// The answer is out, the write side is shut, waiting for the client's FIN.
    Linger,
}

struct Conn {
    stream: Stream,
    token: Token,
    gen: u32,
    /// Unparsed input. Empty (no allocation) while idle.
    rbuf: Vec<u8>,
    out: Output,
    pending: Option<PendingBody>,
    current: Option<Current>,
    seq: u32,
    /// The client sent FIN (or we read 0).
    peer_eof: bool,
    /// epoll reported the client's FIN while reading was paused: input may still wait in
    /// the kernel before it, so this is not yet the end of the input (see [`Server::read`]).
    fin_seen: bool,
    /// Close once the output is written.
    close_after_flush: bool,
    /// Write side shut, discarding input until FIN or the linger timeout.
    lingering: bool,
    /// Loop time (ms) the current wait began: accept/last answer (idle), first head byte
    /// (head), last body bytes (body), last write progress (write).
    since: u64,
    wait: Wait,
    timer: Option<(TimerId, u64)>,
}

/// Timer tags with the top bit set belong to the server; the rest to the service.
const SERVER_TAG: u64 = 1 << 63;
const TAG_ACCEPT_RETRY: u64 = SERVER_TAG | (1 << 62);
const TAG_SHUTDOWN: u64 = SERVER_TAG | (1 << 61);
/// The registration tag of the listener (connections use their slab key).
const LISTENER: usize = usize::MAX;
/// How long accepting pauses after EMFILE/ENFILE before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// How long a closing connection waits for the client's FIN after its last answer.
const LINGER: u64 = 2_000;
/// Connections accepted per readiness event, so a flood cannot starve existing clients.
const ACCEPT_BATCH: usize = 256;

/// Everything but the service: the part a [`Ctx`] gives the service access to.
pub struct Core {
    config: Config,
    listener: Option<Listener>,
    listener_token: Option<Token>,
    accept_paused: bool,
    conns: Slab<Conn>,
    next_gen: u32,
    pool: BufferPool,
    date: DateCache,
    stats: ServerStats,
    /// Connections whose kept responder was answered outside their own processing: they
    /// need a flush and may have pipelined requests waiting.
    ready: Vec<usize>,
    /// The connection whose requests are being dispatched right now.
    dispatching: Option<usize>,
    shutdown_requested: bool,
    shutting_down: bool,
    local_addr: std::net::SocketAddr,
}

/// What a service callback can do: answer, set timers, reach other threads, read counters.
pub struct Ctx<'a, M> {
    reactor: &'a mut Reactor<M>,
    core: &'a mut Core,
}

impl<M> Ctx<'_, M> {
    /// Answers the request of `responder`. If it is the connection's current request the
    /// answer joins the output batch; a late answer is flushed at the end of this callback.
    /// `Err(Closed)` (nothing written) if the connection is gone: a harmless no-op.
    pub fn respond(&mut self, responder: Responder, response: Response) -> Result<(), Closed> {
        let key = responder.conn.key as usize;
        let conn = match self.core.conns.get_mut(key) {
            Some(c) if c.gen == responder.conn.gen => c,
            _ => return Err(Closed),
        };
        match conn.current {
            Some(cur) if cur.seq == responder.seq => {}
            _ => return Err(Closed),
        }
        let now = self.reactor.now_ms();
        self.core.write_response(key, response, now);
        if self.core.dispatching != Some(key) {
            // A late answer (a held poll woken by a publish, a job's result): write it now.
            // Its head sits in a pooled buffer that goes back to the pool at once, so a
            // publish that wakes 10,000 polls reuses one buffer instead of holding 10,000. A
            // write error is left for the flush after this callback, which closes.
            let _ = self.core.write_out(key, now);
            self.core.ready.push(key);
        }
        Ok(())
    }

    /// Whether the responder's connection is still open and waiting for this answer.
    pub fn is_waiting(&self, responder: &Responder) -> bool {
        match self.core.conns.get(responder.conn.key as usize) {
            Some(c) if c.gen == responder.conn.gen => c.current.is_some_and(|cur| cur.seq == responder.seq),
            _ => false,
        }
    }

    /// Attaches `note` to the kept responder of `conn`, handed back in
    /// [`Service::on_close`]. Cleared when the responder is answered.
    pub fn set_note(&mut self, responder: &Responder, note: u64) {
        if let Some(c) = self.core.conns.get_mut(responder.conn.key as usize) {
            if c.gen == responder.conn.gen {
                if let Some(cur) = c.current.as_mut() {
                    cur.note = note;
                }
            }
        }
    }

    /// Calls [`Service::on_timer`] with `tag` (below 2^63) once, no earlier than `after`.
    pub fn set_timer(&mut self, after: Duration, tag: u64) -> TimerId {
        debug_assert!(tag & SERVER_TAG == 0, "timer tags with the top bit set are the server's");
        self.reactor.set_timer(after, tag & !SERVER_TAG)
    }

    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.reactor.cancel_timer(id)
    }

    /// A handle for other threads (e.g. a worker pool) to post messages to the loop.
    pub fn remote(&self) -> Remote<M> {
        self.reactor.remote()
    }

    pub fn stats(&self) -> &ServerStats {
        &self.core.stats
    }

    pub fn loop_stats(&self) -> LoopStats {
        self.reactor.stats()
    }

    /// Loop time in ms (as of the last wake-up).
    pub fn now_ms(&self) -> u64 {
        self.reactor.now_ms()
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.core.local_addr
    }

    pub fn is_shutting_down(&self) -> bool {
        self.core.shutting_down || self.core.shutdown_requested
    }

    /// Starts a graceful shutdown (after this callback): stop accepting, close idle
    /// connections, let [`Service::on_shutdown`] answer kept responders, finish in-flight
    /// answers, and stop the loop when every connection is gone or the deadline
    /// (`Config::shutdown_timeout`) passes.
    pub fn shutdown(&mut self) {
        self.core.shutdown_requested = true;
    }
}

/// The HTTP server: a [`reactor::Handler`] that owns the connections and the service.
pub struct Server<S: Service> {
    core: Core,
    service: S,
}

impl<S: Service> Server<S> {
    /// Binds the listener and registers it with `reactor`.
    pub fn bind(config: Config, service: S, reactor: &mut Reactor<S::Msg>) -> io::Result<Server<S>> {
        let opts = ListenOptions { reuse_port: config.reuse_port, backlog: config.backlog };
        let listener = Listener::bind(config.addr, opts)?;
        let token = reactor.register(listener.fd(), Interest::READABLE, LISTENER)?;
        let core = Core {
            local_addr: listener.local_addr(),
            pool: BufferPool::new(config.read_buffer, 1024),
            date: DateCache::new(),
            listener: Some(listener),
            listener_token: Some(token),
            accept_paused: false,
            conns: Slab::new(),
            next_gen: 0,
            stats: ServerStats::new(),
            ready: Vec::new(),
            dispatching: None,
            shutdown_requested: false,
            shutting_down: false,
            config,
        };
        Ok(Server { core, service })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.core.local_addr
    }

    pub fn service(&self) -> &S {
        &self.service
    }

    pub fn service_mut(&mut self) -> &mut S {
        &mut self.service
    }

    pub fn stats(&self) -> &ServerStats {
        &self.core.stats
    }

    /// Runs the loop until a graceful shutdown completes (or `reactor.stop()`).
    pub fn run(&mut self, reactor: &mut Reactor<S::Msg>) -> io::Result<()> {
        reactor.run(self)
    }

    // ----- 1. accept -------------------------------------------------------------------------

    fn accept_ready(&mut self, r: &mut Reactor<S::Msg>) {
        for _ in 0..ACCEPT_BATCH {
            if self.core.conns.len() >= self.core.config.max_connections {
                // Full: leave new connections in the kernel's backlog until one closes.
                self.pause_accept(r, false);
                return;
            }
            let Some(listener) = &self.core.listener else { return };
            match listener.accept() {
                Ok((stream, _peer)) => {
                    if let Err(e) = self.add_conn(r, stream) {
                        log(format_args!("cannot register connection: {e}"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ECONNABORTED)) => continue,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    // Out of descriptors. The pending connection stays queued, so the listener
                    // stays readable: polling it now would spin at 100% CPU. Stop listening for
                    // a while instead; closing connections also resumes accepting.
                    self.pause_accept(r, true);
                    return;
                }
                Err(e) => {
                    log(format_args!("accept failed: {e}"));
                    return;
                }
            }
        }
    }

    fn pause_accept(&mut self, r: &mut Reactor<S::Msg>, retry_on_timer: bool) {
        if let Some(t) = self.core.listener_token {
            if !self.core.accept_paused {
                let _ = r.reregister(t, Interest::NONE);
                self.core.accept_paused = true;
                if retry_on_timer {
                    r.set_timer(ACCEPT_RETRY, TAG_ACCEPT_RETRY);
                }
            }
        }
    }

    fn resume_accept(&mut self, r: &mut Reactor<S::Msg>) {
        if self.core.accept_paused {
            if let Some(t) = self.core.listener_token {
                let _ = r.reregister(t, Interest::READABLE);
            }
            self.core.accept_paused = false;
        }
    }

    fn add_conn(&mut self, r: &mut Reactor<S::Msg>, stream: Stream) -> io::Result<()> {
        // Without TCP_NODELAY a small answer can wait for the ACK of the previous one, which
        // the client may delay up to 200 ms: the keep-alive stall of the old server.
        stream.set_nodelay()?;
        let entry = self.core.conns.vacant_entry();
        let key = entry.key();
        let token = r.register(stream.fd(), Interest::READABLE, key)?;
        self.core.next_gen = self.core.next_gen.wrapping_add(1);
        entry.insert(Conn {
            stream,
            token,
            gen: self.core.next_gen,
            rbuf: Vec::new(),
            out: Output::default(),
            pending: None,
            current: None,
            seq: 0,
            peer_eof: false,
            fin_seen: false,
            close_after_flush: false,
            lingering: false,
            since: r.now_ms(),
            wait: Wait::Idle,
            timer: None,
        });
        self.core.stats.accepted_total += 1;
        self.core.stats.connections = self.core.conns.len();
        self.core.update_timer(r, key);
        Ok(())
    }

    // ----- 2. read ---------------------------------------------------------------------------

    fn conn_ready(&mut self, r: &mut Reactor<S::Msg>, key: usize, ev: Event) {
        if ev.ready.is_error() {
            // RST or another socket error: nothing more can be written or read.
            self.close(r, key, true);
            return;
        }
        if ev.ready.is_writable() && !self.flush(r, key) {
            return;
        }
        if ev.ready.is_readable() || ev.ready.is_closed() {
            self.read(r, key, ev.ready.is_closed());
        }
        self.after_io(r, key);
    }

    /// One read into the connection's buffer (level-triggered: if more is waiting, epoll
    /// says so again next turn). `hangup` = epoll reported the peer's FIN.
    fn read(&mut self, r: &mut Reactor<S::Msg>, key: usize, hangup: bool) {
        let core = &mut self.core;
        let Some(conn) = core.conns.get_mut(key) else { return };
        if conn.peer_eof {
            return;
        }
        let cap = core.config.limits.read_cap();
        let paused = !r.interest(conn.token).is_some_and(|i| i.is_readable());
        if paused || conn.rbuf.len() >= cap {
            // Reading is paused (backpressure, full buffer) and the client sent FIN. Requests
            // may still wait unread in the kernel before it: taking the FIN for the end of the
            // input would lose their answers, and closing with them unread sends an RST that
            // cuts the answers in flight. So only note it: `after_io` stops asking for the
            // hang-up (level-triggered epoll would report it every turn) and reading resumes
            // when the pause ends, finding the rest of the input and then the end. A client
            // that hangs up on a kept responder is dropped at once, as when reading.
            if hangup {
                if conn.current.is_some() {
                    conn.peer_eof = true;
                } else {
                    conn.fin_seen = true;
                }
            }
            return;
        }
        if conn.rbuf.capacity() == 0 {
            conn.rbuf = core.pool.take();
        }
        conn.rbuf.reserve(core.config.read_buffer.min(cap - conn.rbuf.len()));
        let was_empty = conn.rbuf.is_empty();
        match conn.stream.read_into(&mut conn.rbuf) {
            Ok(0) => conn.peer_eof = true,
            Ok(_) => {
                if conn.lingering {
                    conn.rbuf.clear(); // Discard: we already answered and are closing.
                } else if was_empty || conn.wait == Wait::Body {
                    // A new request's first byte, or body progress: restart that clock.
                    conn.since = r.now_ms();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.close(r, key, true),
        }
    }

    // ----- 3. parse and dispatch -------------------------------------------------------------

    /// Parses and dispatches every complete request in the buffer, in order, until the
    /// buffer runs dry, a responder is kept, or the output is over its cap (backpressure).
    fn process(&mut self, r: &mut Reactor<S::Msg>, key: usize) {
        let Some(conn) = self.core.conns.get_mut(key) else { return };
        // The buffer leaves the connection while requests borrow from it; `at` walks through
        // the pipelined requests and the consumed prefix is dropped once, at the end.
        let mut buf = std::mem::take(&mut conn.rbuf);
        let mut at = 0;
        loop {
            let Some(conn) = self.core.conns.get(key) else {
                self.core.pool.give(buf);
                return;
            };
            if conn.current.is_some()
                || conn.close_after_flush
                || conn.lingering
                || at == buf.len()
                || conn.out.len() > self.core.config.limits.max_output_bytes
            {
                break;
            }
            match self.next_request(r, key, &mut buf, at) {
                Some(n) => at += n,
                None => break,
            }
        }
        buf.drain(..at);
        match self.core.conns.get_mut(key) {
            Some(conn) => conn.rbuf = buf,
            None => self.core.pool.give(buf),
        }
    }

    /// Handles the request at `buf[at..]`. Returns the bytes it used, or `None` if it is
    /// incomplete (or the connection must stop reading requests).
    fn next_request(
        &mut self,
        r: &mut Reactor<S::Msg>,
        key: usize,
        buf: &mut Vec<u8>,
        at: usize,
    ) -> Option<usize> {
        if let Some(pending) = self.core.conns[key].pending.take() {
            return self.continue_body(r, key, buf, at, pending);
        }
        let limits = self.core.config.limits;
        let mut headers = request::header_storage();
        self.core.stats.heads_parsed_total += 1;
        let (mut req, framing) = match request::parse(&buf[at..], &mut headers, &limits) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return None,
            Err(e) if e == request::RETRY_AS_HTTP11 => {
                // HTTP/1.2..1.9: served as 1.1 (rare path: patch the line, parse again).
                request::downgrade_minor_version(&mut buf[at..]);
                return self.next_request(r, key, buf, at);
            }
            Err(e) => {
                let is_head = request::names_head_method(&buf[at..]);
                return self.core.reject(r, key, e, is_head);
            }
        };
        let head_len = framing.head_len;
        let body_end = match framing.body {
            BodyKind::None => head_len,
            BodyKind::Length(n) => {
                if buf.len() - at < head_len + n {
                    let head = KeptHead::new(&buf[at..], &req, framing);
                    self.core.await_body(key, PendingBody { head, body: BodyProgress::Length(n) });
                    return None;
                }
                req.body = &buf[at + head_len..at + head_len + n];
                head_len + n
            }
            BodyKind::Chunked => {
                // Trailer fields are header fields arriving late: they get what the head left.
                let budget = TrailerBudget {
                    bytes: limits.max_header_bytes.saturating_sub(head_len),
                    fields: limits.max_headers.saturating_sub(req.headers.len()),
                };
                let mut decoder = ChunkedDecoder::new(budget);
                let mut decoded = Vec::new();
                let used = match decoder.decode(&buf[at + head_len..], &mut decoded, limits.max_body_bytes) {
                    Ok(used) => used,
                    Err(e) => return self.core.reject(r, key, e, framing.is_head),
                };
                if !decoder.is_done() {
                    let head = KeptHead::new(&buf[at..], &req, framing);
                    buf.drain(at + head_len..at + head_len + used);
                    let body = BodyProgress::Chunked { decoder, decoded };
                    self.core.await_body(key, PendingBody { head, body });
                    return None;
                }
                let body_end = head_len + used;
                self.dispatch(r, key, &Request { body: &decoded, ..req }, framing);
                return Some(body_end);
            }
        };
        self.dispatch(r, key, &req, framing);
        Some(body_end)
    }

    /// More input for a request whose head was parsed earlier (`pending`): if its body is
    /// now complete, rebuild the request from the kept positions and dispatch it.
    fn continue_body(
        &mut self,
        r: &mut Reactor<S::Msg>,
        key: usize,
        buf: &mut Vec<u8>,
        at: usize,
        mut pending: PendingBody,
    ) -> Option<usize> {
        let framing = pending.head.framing;
        let head_len = framing.head_len;
        let max_body = self.core.config.limits.max_body_bytes;
        let body_end = match &mut pending.body {
            BodyProgress::Length(n) => {
                if buf.len() - at < head_len + *n {
                    self.core.conns[key].pending = Some(pending);
                    return None;
                }
                head_len + *n
            }
            BodyProgress::Chunked { decoder, decoded } => {
                let used = match decoder.decode(&buf[at + head_len..], decoded, max_body) {
                    Ok(used) => used,
                    Err(e) => return self.core.reject(r, key, e, framing.is_head),
                };
                if !decoder.is_done() {
                    buf.drain(at + head_len..at + head_len + used);
                    self.core.conns[key].pending = Some(pending);
                    return None;
                }
                head_len + used
            }
        };
        let raw = &buf[at..];
        let headers = pending.head.headers(raw);
        let body = match &pending.body {
            BodyProgress::Length(_) => &raw[head_len..body_end],
            BodyProgress::Chunked { decoded, .. } => decoded.as_slice(),
        };
        let req = pending.head.request(raw, &headers, body);
        self.dispatch(r, key, &req, framing);
        Some(body_end)
    }

    /// Calls the service for one complete request.
    fn dispatch(&mut self, r: &mut Reactor<S::Msg>, key: usize, req: &Request<'_>, framing: Framing) {
        let core = &mut self.core;
        let conn = &mut core.conns[key];
        conn.seq = conn.seq.wrapping_add(1);
        let max = core.config.max_requests_per_connection;
        let last_allowed = max > 0 && conn.seq >= max;
        let keep_alive = framing.keep_alive && !last_allowed && !core.shutting_down;
        conn.current = Some(Current {
            seq: conn.seq,
            keep_alive,
            is_head: framing.is_head,
            http10: req.version_minor == 0,
            note: 0,
        });
        conn.wait = Wait::Service;
        core.stats.requests_total += 1;
        let responder = Responder { conn: ConnId { key: key as u32, gen: conn.gen }, seq: conn.seq };
        core.dispatching = Some(key);
        let mut ctx = Ctx { reactor: r, core };
        self.service.call(&mut ctx, req, responder);
        self.core.dispatching = None;
    }

    // ----- 4. write --------------------------------------------------------------------------

    /// Writes pending output until done or the socket is full. Returns false if the
    /// connection was closed (write error: the peer is gone).
    fn flush(&mut self, r: &mut Reactor<S::Msg>, key: usize) -> bool {
        if !self.core.conns.contains(key) {
            return false;
        }
        if self.core.write_out(key, r.now_ms()).is_err() {
            // EPIPE / ECONNRESET: the client is gone.
            self.close(r, key, true);
            return false;
        }
        true
    }

    /// After reading or writing: dispatch what is complete, write the answers, then decide
    /// what the connection waits for next (interest and timer), or close it.
    fn after_io(&mut self, r: &mut Reactor<S::Msg>, key: usize) {
        let cap = self.core.config.limits.max_output_bytes;
        loop {
            self.process(r, key);
            let capped = self.core.conns.get(key).is_some_and(|c| c.out.len() > cap);
            if !self.flush(r, key) {
                return;
            }
            // Parsing stopped at the output cap and this flush made room: parse on now. No
            // event would bring us back (the pipelined requests are already read, and with
            // the output written there is no EPOLLOUT to wait for), so they would stall.
            let Some(conn) = self.core.conns.get(key) else { return };
            if !(capped && conn.out.len() <= cap && !conn.rbuf.is_empty()) {
                break;
            }
        }
        let core = &mut self.core;
        let Some(conn) = core.conns.get_mut(key) else { return };

        if conn.peer_eof {
            // The client sent FIN. Answers already produced were just flushed; a kept
            // responder can no longer be delivered to a client that hung up.
            // Otherwise keep writing: requests still buffered behind the output cap are
            // answered as it drains (a half-closed client still reads), then we close.
            if conn.current.is_some() || conn.out.is_empty() || conn.lingering {
                let by_peer = !conn.lingering;
                self.close(r, key, by_peer);
                return;
            }
        }
        if conn.close_after_flush && conn.out.is_empty() {
            if conn.rbuf.is_empty() && conn.pending.is_none() {
                self.close(r, key, false);
                return;
            }
            // Unread input: closing now would send RST and might destroy the answer in
            // flight. Shut our side and discard input until the client's FIN (or a timeout).
            let _ = conn.stream.shutdown_write();
            conn.lingering = true;
            conn.close_after_flush = false;
            conn.rbuf.clear();
            conn.pending = None;
            conn.since = r.now_ms();
        }

        // Give buffers back while nothing is buffered: idle connections hold no memory.
        if conn.rbuf.is_empty() && conn.rbuf.capacity() > 0 {
            core.pool.give(std::mem::take(&mut conn.rbuf));
        }
        let limits = &core.config.limits;
        let backpressure = conn.out.len() > limits.max_output_bytes;
        let buffer_full = conn.rbuf.len() >= limits.read_cap();
        let mut interest = Interest::NONE;
        if conn.peer_eof {
            // FIN seen: asking for reads or hang-ups now would report it again every turn.
        } else if backpressure || buffer_full || conn.close_after_flush {
            // Paused: only a hang-up matters, and once seen it need not be asked for again.
            interest = if conn.fin_seen { Interest::NONE } else { Interest::HANGUP };
        } else {
            interest = Interest::READABLE;
        }
        if !conn.out.is_empty() {
            interest = interest.with(Interest::WRITABLE);
        }
        let _ = r.reregister(conn.token, interest);

        let wait = if conn.lingering {
            Wait::Linger
        } else if !conn.out.is_empty() {
            Wait::Write
        } else if conn.current.is_some() {
            Wait::Service
        } else if conn.pending.is_some() {
            Wait::Body
        } else if !conn.rbuf.is_empty() {
            Wait::Head
        } else {
            Wait::Idle
        };
        if wait == Wait::Idle && core.shutting_down {
            // Its last answer is out: close it now, as idle connections were when the
            // shutdown began, instead of holding the shutdown until its deadline.
            self.close(r, key, false);
            return;
        }
        if wait != conn.wait {
            if wait == Wait::Idle || wait == Wait::Write {
                conn.since = r.now_ms();
            }
            conn.wait = wait;
        }
        if wait == Wait::Head || wait == Wait::Body {
            // Part of a request is here, the rest is coming. A client with Nagle on may hold
            // the rest until we ACK this part, and our kernel would delay that ACK by up to
            // 40 ms: acknowledge now (the Nagle + delayed-ACK stall of the old server).
            let _ = conn.stream.set_quickack();
        }
        core.update_timer(r, key);
    }

    // ----- 5. close --------------------------------------------------------------------------

    /// The only way a connection ends. Deregister first, then close (see reactor docs).
    fn close(&mut self, r: &mut Reactor<S::Msg>, key: usize, by_peer: bool) {
        let Some(mut conn) = self.core.conns.try_remove(key) else { return };
        let _ = r.deregister(conn.token);
        if let Some((id, _)) = conn.timer.take() {
            r.cancel_timer(id);
        }
        conn.out.release(&mut self.core.pool);
        if conn.rbuf.capacity() > 0 {
            self.core.pool.give(std::mem::take(&mut conn.rbuf));
        }
        if by_peer {
            self.core.stats.closed_by_peer_total += 1;
        }
        self.core.stats.connections = self.core.conns.len();
        let kept = conn.current.take();
        let id = ConnId { key: key as u32, gen: conn.gen };
        drop(conn); // closes the fd, after deregistration
        if let Some(cur) = kept {
            let mut ctx = Ctx { reactor: r, core: &mut self.core };
            self.service.on_close(&mut ctx, id, cur.note);
        }
        if !self.core.shutting_down {
            self.resume_accept(r);
        }
        self.maybe_finish_shutdown(r);
    }

    // ----- after every service callback ------------------------------------------------------

    /// Flushes connections answered late and continues their pipelined requests; starts a
    /// requested shutdown.
    fn after_callback(&mut self, r: &mut Reactor<S::Msg>) {
        while let Some(key) = self.core.ready.pop() {
            self.after_io(r, key);
        }
        if self.core.shutdown_requested && !self.core.shutting_down {
            self.begin_shutdown(r);
        }
    }

    fn begin_shutdown(&mut self, r: &mut Reactor<S::Msg>) {
        self.core.shutting_down = true;
        if let Some(t) = self.core.listener_token.take() {
            let _ = r.deregister(t);
        }
        self.core.listener = None; // closes the listening socket
        let idle: Vec<usize> = self
            .core
            .conns
            .iter()
            .filter(|(_, c)| c.current.is_none() && c.out.is_empty() && c.rbuf.is_empty())
            .map(|(k, _)| k)
            .collect();
        for key in idle {
            self.close(r, key, false);
        }
        r.set_timer(self.core.config.shutdown_timeout, TAG_SHUTDOWN);
        let mut ctx = Ctx { reactor: r, core: &mut self.core };
        self.service.on_shutdown(&mut ctx);
        while let Some(key) = self.core.ready.pop() {
            self.after_io(r, key);
        }
        self.maybe_finish_shutdown(r);
    }

    fn maybe_finish_shutdown(&mut self, r: &mut Reactor<S::Msg>) {
        if self.core.shutting_down && self.core.conns.is_empty() {
            r.stop();
        }
    }

    fn conn_timer(&mut self, r: &mut Reactor<S::Msg>, key: usize, id: TimerId) {
        let Some(conn) = self.core.conns.get_mut(key) else { return };
        let Some((armed, due)) = conn.timer else { return };
        if armed != id {
            return;
        }
        conn.timer = None;
        // The wheel fired this timer, so its tick has come, even when the loop's clock (read
        // when it woke up) is behind because this turn ran long. Judging by that clock alone
        // would re-arm the timer for a tick the wheel has already reached: it would fire again
        // at once, in the same turn, forever.
        let now = r.now_ms().max(due);
        match self.core.deadline(key) {
            Some(d) if d <= now => self.expire(r, key),
            _ => self.core.update_timer(r, key),
        }
    }

    /// A connection's wait timed out.
    fn expire(&mut self, r: &mut Reactor<S::Msg>, key: usize) {
        let conn = &mut self.core.conns[key];
        let request_line_seen = conn.rbuf.contains(&b'\n');
        match conn.wait {
            Wait::Head if request_line_seen => {
                let e = HttpError::new(408, "request timeout", true);
                let is_head = request::names_head_method(&conn.rbuf);
                self.core.reject(r, key, e, is_head);
                conn_forget_input(&mut self.core.conns[key]);
                self.after_io(r, key);
            }
            Wait::Body => {
                let e = HttpError::new(408, "request body timeout", true);
                let is_head = conn.pending.as_ref().is_some_and(|p| p.head.framing.is_head);
                self.core.reject(r, key, e, is_head);
                conn_forget_input(&mut self.core.conns[key]);
                self.after_io(r, key);
            }
            _ => self.close(r, key, false),
        }
    }
}

/// One line on stderr, `tidings: ` first. Unlike `eprintln!`, which panics when stderr is a
/// pipe nobody reads any more (EPIPE: SIGPIPE is ignored), a failed write is dropped: a log
/// line is never worth the loop. The app logs through it too (`--access-log`, job panics).
pub fn log(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "tidings: {args}");
}

fn conn_forget_input(conn: &mut Conn) {
    conn.rbuf.clear();
    conn.pending = None;
}

impl Core {
    /// Writes the connection's pending output until done or the socket is full (then the
    /// rest is parked: see [`Output::park`]). `Err` if the peer is gone.
    fn write_out(&mut self, key: usize, now_ms: u64) -> io::Result<()> {
        let conn = &mut self.conns[key];
        while !conn.out.is_empty() {
            match conn.out.write_to(&conn.stream, &mut self.pool) {
                Ok(_) => conn.since = now_ms,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.out.park(&mut self.pool);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Serialises `resp` as the answer to the connection's current request: the head into
    /// the output buffer, a static body copied after it, a large owned body queued as is.
    fn write_response(&mut self, key: usize, resp: Response, now_ms: u64) {
        let conn = &mut self.conns[key];
        let Some(cur) = conn.current.take() else { return };
        let keep_alive = cur.keep_alive && !resp.close && !self.shutting_down;
        let connection = match (keep_alive, cur.http10) {
            (false, _) => Some(false),
            (true, true) => Some(true),
            (true, false) => None,
        };
        let head = HeadContext { date: self.date.get(now_ms), connection };
        let out = conn.out.tail(&mut self.pool);
        let before = out.len();
        response::write_head(out, &resp, &head);
        let with_body = !cur.is_head && !response::is_bodiless(resp.status);
        if let (true, Body::Static(b)) = (with_body, &resp.body) {
            out.extend_from_slice(b);
        }
        let written = out.len() - before;
        conn.out.commit(written);
        match (with_body, resp.body) {
            (true, Body::Bytes(b)) => conn.out.push_owned(&mut self.pool, b),
            (true, Body::Shared(b)) => conn.out.push_shared(&mut self.pool, &b),
            _ => {}
        }
        if !keep_alive {
            conn.close_after_flush = true;
        }
        conn.wait = Wait::Write;
        if let Some(slot) = self.stats.responses.get_mut(resp.status as usize) {
            *slot += 1;
        }
    }

    /// Answers a request the server itself rejects. Returns `None` (stop parsing) when the
    /// connection must close after the answer, else the bytes to skip. `is_head`: the
    /// request is a HEAD, so the answer is a head without its body (as any answer to HEAD).
    fn reject<M>(&mut self, r: &mut Reactor<M>, key: usize, e: HttpError, is_head: bool) -> Option<usize> {
        let conn = &mut self.conns[key];
        conn.seq = conn.seq.wrapping_add(1);
        conn.current = Some(Current { seq: conn.seq, keep_alive: !e.close, is_head, http10: false, note: 0 });
        conn.pending = None;
        self.write_response(key, Response::text(e.status, e.message), r.now_ms());
        if e.close {
            self.conns[key].close_after_flush = true;
            None
        } else {
            // Framing is sound (no body): skip exactly this head.
            Some(e.skip)
        }
    }

    /// Parks a request whose body is still arriving, the first time its head is parsed
    /// (answering `Expect: 100-continue`: this happens once per request).
    fn await_body(&mut self, key: usize, pending: PendingBody) {
        let conn = &mut self.conns[key];
        if pending.head.framing.expect_continue {
            // The client waits for this before sending the body (RFC 9110 §10.1.1).
            conn.out.push_copy(&mut self.pool, b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        conn.pending = Some(pending);
    }

    /// When the connection's current wait times out (ms of loop time), if it can.
    fn deadline(&self, key: usize) -> Option<u64> {
        let conn = &self.conns[key];
        let c = &self.config;
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        let timeout = match conn.wait {
            Wait::Idle => ms(c.keepalive_timeout),
            Wait::Head => ms(c.header_timeout),
            Wait::Body | Wait::Write => ms(c.body_timeout),
            Wait::Linger => LINGER,
            Wait::Service => return None,
        };
        Some(conn.since.saturating_add(timeout))
    }

    /// Keeps one timer per connection, armed at or before its deadline. Lazy: when the
    /// deadline moves later (the usual case, e.g. each keep-alive request), the armed timer is
    /// left alone and re-armed when it fires; only an earlier deadline re-arms now. So a busy
    /// keep-alive connection costs no timer operations per request.
    fn update_timer<M>(&mut self, r: &mut Reactor<M>, key: usize) {
        let Some(deadline) = self.deadline(key) else { return };
        let conn = &mut self.conns[key];
        if let Some((id, due)) = conn.timer {
            if due <= deadline {
                return;
            }
            r.cancel_timer(id);
        }
        let id = r.set_timer_at(deadline, SERVER_TAG | key as u64);
        conn.timer = Some((id, deadline));
    }
}

impl<S: Service> Handler<S::Msg> for Server<S> {
    fn on_io(&mut self, r: &mut Reactor<S::Msg>, ev: Event) {
        if ev.tag == LISTENER {
            self.accept_ready(r);
        } else {
            self.conn_ready(r, ev.tag, ev);
        }
        self.after_callback(r);
    }

    fn on_timer(&mut self, r: &mut Reactor<S::Msg>, id: TimerId, tag: u64) {
        match tag {
            TAG_ACCEPT_RETRY => {
                if !self.core.shutting_down {
                    self.resume_accept(r);
                    self.accept_ready(r);
                }
            }
            TAG_SHUTDOWN => {
                let keys: Vec<usize> = self.core.conns.iter().map(|(k, _)| k).collect();
                for key in keys {
                    self.close(r, key, false);
                }
                r.stop();
            }
            t if t & SERVER_TAG != 0 => self.conn_timer(r, (t & !SERVER_TAG) as usize, id),
            t => {
                let mut ctx = Ctx { reactor: r, core: &mut self.core };
                self.service.on_timer(&mut ctx, id, t);
            }
        }
        self.after_callback(r);
    }

    fn on_message(&mut self, r: &mut Reactor<S::Msg>, msg: S::Msg) {
        let mut ctx = Ctx { reactor: r, core: &mut self.core };
        self.service.on_message(&mut ctx, msg);
        self.after_callback(r);
    }

    fn on_signal(&mut self, r: &mut Reactor<S::Msg>, signo: i32) {
        let mut ctx = Ctx { reactor: r, core: &mut self.core };
        self.service.on_signal(&mut ctx, signo);
        self.after_callback(r);
    }
}

impl Limits {
    /// The most bytes a connection's read buffer may hold: a full head and a full body.
    pub(crate) fn read_cap(&self) -> usize {
        // Saturating: the limits are the operator's (e.g. `--max-message` of any size).
        self.max_header_bytes.saturating_add(self.max_body_bytes).saturating_add(4096)
    }
}
