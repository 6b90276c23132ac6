//! The service API: what an application implements ([`Service`]) and what its callbacks can
//! do ([`Ctx`]).
//!
//! A request comes with a [`Responder`], the right to answer it once. The service answers at
//! once or keeps the responder and answers later (from a timer, a message, a worker's result).
//! Instead of a complete answer it can also:
//! - **stream**: [`Ctx::respond_stream`] writes the head now and gives a [`StreamId`]; each
//!   [`Ctx::send`] writes one piece of body (a chunk for HTTP/1.1, raw bytes until the close for
//!   HTTP/1.0), [`Ctx::end`] ends it (and the connection: requests pipelined behind a stream
//!   are not answered). [`Ctx::send`] says [`Flow::Slow`] once the unsent output passes
//!   [`Limits::max_output_bytes`](crate::Limits), so a service can drop a client that does not
//!   read instead of buffering for it without bound;
//! - **upgrade**: [`Ctx::upgrade`] writes a `101 Switching Protocols` head and hands the
//!   connection's bytes to the service: [`Service::on_data`] gets what arrives (starting with
//!   anything the client sent after the request), [`Ctx::send`] writes raw bytes, [`Ctx::end`]
//!   closes once they are written.
//!
//! - **own sockets**: [`Ctx::register`] puts a socket the service opened itself (e.g. a
//!   client connection to a database) on the same loop; its readiness comes to
//!   [`Service::on_io`] with the tag the service gave. The service owns such a socket whole:
//!   its reads, writes, interest and close ([`Ctx::deregister`] before closing it).
//!
//! For HTTP connections the server keeps the socket in every case: its epoll interest,
//! timeouts, backpressure, and the close. Whenever a connection closes while the service still holds something on it (a
//! kept responder, a stream or an upgraded connection it has not ended), the service hears it
//! once, through [`Service::on_close`], with the note it attached ([`Ctx::set_note`]).

use std::rc::Rc;
use std::time::Duration;

use std::os::fd::RawFd;

use reactor::{Event, Interest, LoopStats, Reactor, Remote, TimerId, Token};

use crate::buffers::Piece;
use crate::conn::{Coding, Phase, StreamState};
use crate::request::Request;
use crate::response::{BodyLength, Response};
use crate::server::{ServerState, ServerTimer};

/// Identifies a connection across its life (slab key + generation, so a reused slot is not
/// mistaken for the old connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(crate) key: u32,
    pub(crate) gen: u32,
}

/// The right to answer one request. Not `Clone`: a request is answered once. Keep it to
/// answer later (from a timer, a message, a worker result); if the connection closes
/// meanwhile, [`Ctx::respond`] returns `Err(Closed)` and nothing is written.
#[derive(Debug)]
pub struct Responder {
    pub(crate) conn: ConnId,
    pub(crate) seq: u32,
}

impl Responder {
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

/// An open stream to a client: the body of a streaming response, or the bytes of an upgraded
/// connection. Copy: it names the stream, it is not the right to anything; writing to a stream
/// that ended or whose connection closed is `Err(Closed)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub(crate) conn: ConnId,
    pub(crate) seq: u32,
}

impl StreamId {
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

/// The connection of a responder or stream is gone (or the request was already answered, or
/// the stream ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// How a write to a stream went: it is always queued; `Slow` says the client has not read
/// [`Limits::max_output_bytes`](crate::Limits) of it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Ready,
    /// The unsent output passed the limit: stop writing, or [`Ctx::end`] the stream.
    Slow,
}

/// The server's loop: its messages are the service's, its timers the server's
/// ([`ServerTimer`]), which carry the service's own.
pub type Loop<S> = Reactor<<S as Service>::Msg, ServerTimer<<S as Service>::Timer>>;

/// The application: what to do with each request, and with the events it set up.
pub trait Service: Sized {
    /// The type of messages other threads (e.g. worker-pool jobs) post to the loop.
    type Msg: Send + 'static;
    /// What the service attaches to a kept responder or an open stream ([`Ctx::set_note`]),
    /// handed back by [`Service::on_close`] if the connection closes first.
    type Note;
    /// What the service's timers carry ([`Ctx::set_timer`], [`Service::on_timer`]).
    type Timer: Clone;

    /// The loop is about to run (before the first request): open the service's own sockets,
    /// set its first timers.
    fn on_start(&mut self, _ctx: &mut Ctx<'_, Self>) {}

    /// A request arrived. Answer it through `ctx.respond(responder, ..)`, now or later.
    fn call(&mut self, ctx: &mut Ctx<'_, Self>, req: &Request<'_>, responder: Responder);

    /// The connection of a responder you kept (or of a stream you did not end) closed first.
    /// `note` is what you gave [`Ctx::set_note`]. Drop whatever waits for it.
    fn on_close(&mut self, _ctx: &mut Ctx<'_, Self>, _conn: ConnId, _note: Option<Self::Note>) {}

    /// Bytes arrived on an upgraded connection (see [`Ctx::upgrade`]).
    fn on_data(&mut self, _ctx: &mut Ctx<'_, Self>, _stream: StreamId, _data: &[u8]) {}

    /// An open stream whose output had backed up (the socket was full) has written all of
    /// it: a good time to send more (e.g. the next part of a backlog).
    fn on_drained(&mut self, _ctx: &mut Ctx<'_, Self>, _stream: StreamId) {}

    /// A timer set with [`Ctx::set_timer`] fired.
    fn on_timer(&mut self, _ctx: &mut Ctx<'_, Self>, _id: TimerId, _timer: Self::Timer) {}

    /// The server is done with one event of the loop (a readiness, a timer, a message), with
    /// every request it read dispatched: work the service gathered over several calls (e.g.
    /// the publishes of one pipelined batch) can be done once, now, before the answers are
    /// written.
    fn after_callback(&mut self, _ctx: &mut Ctx<'_, Self>) {}

    /// A socket the service registered itself ([`Ctx::register`]) is ready; `tag` is the one
    /// it gave.
    fn on_io(&mut self, _ctx: &mut Ctx<'_, Self>, _tag: usize, _event: Event) {}

    /// A message from another thread arrived.
    fn on_message(&mut self, _ctx: &mut Ctx<'_, Self>, _msg: Self::Msg) {}

    /// A watched signal arrived. By default SIGINT/SIGTERM start a graceful shutdown.
    fn on_signal(&mut self, ctx: &mut Ctx<'_, Self>, signo: i32) {
        if signo == libc::SIGINT || signo == libc::SIGTERM {
            ctx.shutdown();
        }
    }

    /// Graceful shutdown began: answer every responder you keep (e.g. 304 to held polls) and
    /// end your streams.
    fn on_shutdown(&mut self, _ctx: &mut Ctx<'_, Self>) {}
}

/// Registration tags of the service's own sockets carry this bit, so the server tells them
/// from its connections (slab keys) and its listener.
pub(crate) const SERVICE_TAG_BIT: usize = 1 << (usize::BITS - 2);
/// Tags a service may give [`Ctx::register`]: below this.
pub const SERVICE_TAG_LIMIT: usize = SERVICE_TAG_BIT - 1;

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
    pub(crate) responses: Vec<u64>,
}

impl ServerStats {
    pub(crate) fn new() -> ServerStats {
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

/// What a service callback can do: answer, stream, set timers, reach other threads, read
/// counters.
pub struct Ctx<'a, S: Service> {
    pub(crate) reactor: &'a mut Loop<S>,
    pub(crate) core: &'a mut ServerState<S>,
}

impl<S: Service> Ctx<'_, S> {
    /// Answers the request of `responder`. If it is the connection's current request the
    /// answer joins the output batch; a late answer is written at once.
    /// `Err(Closed)` (nothing written) if the connection is gone: a harmless no-op.
    pub fn respond(&mut self, responder: Responder, response: Response) -> Result<(), Closed> {
        let key = self.core.answering(responder.conn, responder.seq).ok_or(Closed)?;
        let now = self.reactor.now_ms();
        self.core.write_response(key, response, now);
        self.core.answered_late(key, now);
        Ok(())
    }

    /// Answers with `response`'s status and headers, and keeps the body open: write it with
    /// [`Ctx::send`], finish it with [`Ctx::end`]. The response's own body, if any, is sent
    /// first. The connection closes after the stream (the head says so).
    pub fn respond_stream(&mut self, responder: Responder, response: Response) -> Result<StreamId, Closed> {
        let key = self.core.answering(responder.conn, responder.seq).ok_or(Closed)?;
        let now = self.reactor.now_ms();
        self.core.start_stream(key, response, now, false);
        self.core.answered_late(key, now);
        Ok(StreamId { conn: responder.conn, seq: responder.seq })
    }

    /// Accepts a protocol upgrade: writes `response` (give it status 101 and the `Upgrade` and
    /// `Connection: upgrade` headers) and from then on the connection's bytes are the
    /// service's: [`Service::on_data`] receives them, [`Ctx::send`] writes, [`Ctx::end`] closes.
    pub fn upgrade(&mut self, responder: Responder, response: Response) -> Result<StreamId, Closed> {
        let key = self.core.answering(responder.conn, responder.seq).ok_or(Closed)?;
        let now = self.reactor.now_ms();
        self.core.start_stream(key, response, now, true);
        self.core.answered_late(key, now);
        Ok(StreamId { conn: responder.conn, seq: responder.seq })
    }

    /// Writes `bytes` to an open stream (one chunk of a streaming response; raw bytes on an
    /// upgraded connection). Queued whole; [`Flow::Slow`] once the client lags behind.
    pub fn send(&mut self, stream: &StreamId, bytes: &[u8]) -> Result<Flow, Closed> {
        self.send_piece(stream, Piece::Copied(bytes))
    }

    /// Like [`Ctx::send`], for bytes shared with other streams (one event fanned out to many
    /// subscribers): large ones are queued by reference, not copied.
    pub fn send_shared(&mut self, stream: &StreamId, bytes: &Rc<[u8]>) -> Result<Flow, Closed> {
        self.send_piece(stream, Piece::Shared(bytes))
    }

    fn send_piece(&mut self, stream: &StreamId, piece: Piece<'_>) -> Result<Flow, Closed> {
        let key = self.core.stream(stream).ok_or(Closed)?;
        let now = self.reactor.now_ms();
        let flow = self.core.write_stream(key, piece);
        self.core.answered_late(key, now);
        Ok(flow)
    }

    /// Ends a stream: the last chunk of a streaming response, then the connection closes once
    /// its output is written (an upgraded connection likewise). [`Service::on_close`] is not
    /// called for it.
    pub fn end(&mut self, stream: StreamId) -> Result<(), Closed> {
        let key = self.core.stream(&stream).ok_or(Closed)?;
        let now = self.reactor.now_ms();
        self.core.end_stream(key);
        self.core.answered_late(key, now);
        Ok(())
    }

    /// Unsent bytes of an open stream's connection; `None` if the stream is closed.
    pub fn pending(&self, stream: &StreamId) -> Option<usize> {
        let key = self.core.stream(stream)?;
        Some(self.core.conns[key].out.len())
    }

    /// Whether the responder's connection is still open and waiting for this answer.
    pub fn is_waiting(&self, responder: &Responder) -> bool {
        self.core.answering(responder.conn, responder.seq).is_some()
    }

    /// Attaches `note` to the kept responder of `conn`, handed back in
    /// [`Service::on_close`]. Dropped when the responder is answered; carried over to the
    /// stream if it is answered with [`Ctx::respond_stream`] or [`Ctx::upgrade`].
    pub fn set_note(&mut self, responder: &Responder, note: S::Note) {
        if let Some(key) = self.core.answering(responder.conn, responder.seq) {
            if let Phase::Service(cur) = &mut self.core.conns[key].phase {
                cur.note = Some(note);
            }
        }
    }

    /// Attaches `note` to an open stream, handed back in [`Service::on_close`].
    pub fn set_stream_note(&mut self, stream: &StreamId, note: S::Note) {
        if let Some(key) = self.core.stream(stream) {
            if let Phase::Streaming(st) | Phase::Upgraded(st) = &mut self.core.conns[key].phase {
                st.note = Some(note);
            }
        }
    }

    /// Calls [`Service::on_timer`] with `timer` once, no earlier than `after`.
    pub fn set_timer(&mut self, after: Duration, timer: S::Timer) -> TimerId {
        self.reactor.set_timer(after, ServerTimer::Service(timer))
    }

    /// Calls [`Service::on_timer`] with (a clone of) `timer` every `every`, first after
    /// `every`, until [`Ctx::cancel_timer`].
    pub fn set_repeating_timer(&mut self, every: Duration, timer: S::Timer) -> TimerId {
        self.reactor.set_repeating_timer(every, ServerTimer::Service(timer))
    }

    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.reactor.cancel_timer(id)
    }

    /// Watches a socket of the service's own (level-triggered): its readiness comes to
    /// [`Service::on_io`] with `tag` (below [`SERVICE_TAG_LIMIT`]). Deregister it before
    /// closing it.
    pub fn register(&mut self, fd: RawFd, interest: Interest, tag: usize) -> std::io::Result<Token> {
        if tag >= SERVICE_TAG_LIMIT {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "service tag too large"));
        }
        self.reactor.register(fd, interest, SERVICE_TAG_BIT | tag)
    }

    /// Changes what a socket of [`Ctx::register`] is watched for.
    pub fn reregister(&mut self, token: Token, interest: Interest) -> std::io::Result<()> {
        self.reactor.reregister(token, interest)
    }

    /// Stops watching a socket of [`Ctx::register`] (before it is closed).
    pub fn deregister(&mut self, token: Token) -> std::io::Result<()> {
        self.reactor.deregister(token)
    }

    /// A handle for other threads (e.g. a worker pool) to post messages to the loop.
    pub fn remote(&self) -> Remote<S::Msg> {
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

impl<S: Service> crate::server::ServerState<S> {
    /// The key of `conn` if it is open and its service holds the responder `seq`.
    pub(crate) fn answering(&self, conn: ConnId, seq: u32) -> Option<usize> {
        match self.conns.get(conn.key as usize) {
            Some(c) if c.gen == conn.gen && matches!(&c.phase, Phase::Service(cur) if cur.seq == seq) => {
                Some(conn.key as usize)
            }
            _ => None,
        }
    }

    /// The key of the stream's connection if the stream is open.
    pub(crate) fn stream(&self, stream: &StreamId) -> Option<usize> {
        let key = stream.conn.key as usize;
        match self.conns.get(key) {
            Some(c) if c.gen == stream.conn.gen => match &c.phase {
                Phase::Streaming(st) | Phase::Upgraded(st) if st.seq == stream.seq => Some(key),
                _ => None,
            },
            _ => None,
        }
    }

    /// Starts a streaming response (`upgrade`: a 101 that hands the bytes to the service).
    fn start_stream(&mut self, key: usize, resp: Response, now_ms: u64, upgrade: bool) {
        let conn = &mut self.conns[key];
        let Phase::Service(cur) = std::mem::replace(&mut conn.phase, Phase::Closing) else { return };
        let coding = match (upgrade, cur.is_head, cur.http10) {
            (true, ..) => Coding::Raw,
            (false, true, _) => Coding::Discard,
            (false, false, true) => Coding::Raw,
            (false, false, false) => Coding::Chunked,
        };
        let (length, connection) = match (upgrade, cur.http10) {
            (true, _) => (BodyLength::UntilClose, None),
            (false, true) => (BodyLength::UntilClose, Some(false)),
            (false, false) => (BodyLength::Chunked, Some(false)),
        };
        let first = resp.body.as_bytes().to_vec();
        self.write_head_only(key, &resp, now_ms, length, connection);
        let st = StreamState { seq: cur.seq, coding, note: cur.note };
        self.conns[key].phase = if upgrade { Phase::Upgraded(st) } else { Phase::Streaming(st) };
        if !first.is_empty() && !upgrade {
            self.write_stream(key, Piece::Copied(&first));
        }
    }
}
