//! A connection: its states, and the steps that move it from one to the next (read, parse,
//! dispatch, flush, close).
//!
//! # State
//! A connection's state is two enums and two facts about its buffers:
//! - `ReadSide`: `Open`; `FinNoted` (epoll reported the client's FIN while reading was paused:
//!   requests may still wait in the kernel before it, so it is not yet the end of the input);
//!   `Eof` (we read the end, or the client hung up on something the service holds).
//! - `Phase`: what the connection is doing with requests (below);
//! - whether output is pending, and whether it is over `max_output_bytes` (backpressure);
//! - whether the read buffer is full (a head and a body at their limits).
//!
//! Which epoll interest and which timeout the connection has are pure functions of that state:
//! `interest` and `clock`, tested as a table at the end of this file. After every event,
//! `Server::settle` moves the phase on (Closing to Linger or closed, Idle/Head from the
//! buffer) and applies both; nothing else decides them.
//!
//! ```text
//!                 accept
//!                   |
//!                   v        first byte            head parsed, body to come
//!   +---------->  Idle  --------------->  Head  ---------------------------->  Body
//!   |               |  \________________    |  <------- more requests -------    |
//!   |  keep-alive   |    whole request  \   |  whole request                     | body complete
//!   |  answer       v                    v  v                                    v
//!   +--------------------------------  Service (the service holds the responder)  <
//!                                       |        |                 |
//!               respond_stream()        |        | upgrade()       | closing answer,
//!           +---------------------------+        v                 | or a request the
//!           v                                 Upgraded             | server rejects
//!       Streaming  --- end() --+              (bytes to on_data)   |
//!                              |                 | end()            |
//!                              v                 v                  v
//!                            Closing  (answer written? unread input? ) ---> closed
//!                              |  unread input: shut our side, discard input
//!                              v
//!                            Linger  --- client FIN or 2 s --->  closed
//! ```
//! Any state ends in `closed` on an error, a hang-up (RST, or FIN while the service holds the
//! connection), a timeout, or the shutdown deadline; [`Service::on_close`] is called then if
//! the service held a responder or an open stream. Output may be pending in every phase: a
//! pipelined batch's answers are written while the next head arrives; while it cannot be
//! written the connection's clock is the write timeout.
//!
//! # Why each rule
//! - *FIN while paused* (backpressure, full buffer, closing answer): only noted (`FinNoted`),
//!   and HANGUP is no longer asked for, as level-triggered epoll would report it every turn;
//!   reading resumes after the pause and finds the rest of the input, then the end.
//! - *Linger*: closing a socket with unread input sends RST, which can destroy the answer still
//!   in flight; so after a closing answer with input left, shut our side and read until FIN.
//! - *Lazy connection timer*: one timer per connection, re-armed only when the deadline moves
//!   earlier (`ServerState::update_timer`): a busy keep-alive connection costs no timer operation.
//! - *Late answers written at once* (`ServerState::answered_late`): a publish that wakes 10,000
//!   polls reuses one pooled buffer instead of holding 10,000.
//! - *QUICKACK* while a head or body is partly here: a client with Nagle on may hold the rest
//!   until we ACK, and the kernel would delay that ACK by up to 40 ms.
//! - *Streaming* reads only to notice the client's close (HANGUP): requests pipelined behind a
//!   stream are not processed, the connection closes when the stream ends.
//!
//! [`Service::on_close`]: crate::Service::on_close

use std::io;

use reactor::net::Stream;
use reactor::{Event, Interest, TimerId, Token};

use crate::body::ChunkedDecoder;
use crate::buffers::{Output, Piece};
use crate::request::{self, HttpError, KeptHead};
use crate::server::{Server, ServerState};
use crate::service::{ConnId, Ctx, Flow, Loop, Service, StreamId};

/// How a connection's input side stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadSide {
    Open,
    /// FIN reported while reading was paused: not yet the end of the input.
    FinNoted,
    /// The end of the input was read (or the client hung up on the service).
    Eof,
}

/// What a connection is doing with requests.
pub(crate) enum Phase<N> {
    /// Nothing buffered, nothing pending: keep-alive.
    Idle,
    /// Part of a head is buffered.
    Head,
    /// A head is parsed, its body is arriving.
    Body(Box<PendingBody>),
    /// The service holds the responder of a request.
    Service(HeldRequest<N>),
    /// The service writes the body of a streaming response.
    Streaming(StreamState<N>),
    /// The service owns the connection's bytes (after a 101).
    Upgraded(StreamState<N>),
    /// The last answer is given: close once it is written.
    Closing,
    /// Our side is shut; discarding input until the client's FIN (or the linger timeout).
    Linger,
}

/// [`Phase`] without its data: what [`interest`] and [`clock`] look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PhaseKind {
    Idle,
    Head,
    Body,
    Service,
    Streaming,
    Upgraded,
    Closing,
    Linger,
}

impl<N> Phase<N> {
    pub(crate) fn kind(&self) -> PhaseKind {
        match self {
            Phase::Idle => PhaseKind::Idle,
            Phase::Head => PhaseKind::Head,
            Phase::Body(_) => PhaseKind::Body,
            Phase::Service(_) => PhaseKind::Service,
            Phase::Streaming(_) => PhaseKind::Streaming,
            Phase::Upgraded(_) => PhaseKind::Upgraded,
            Phase::Closing => PhaseKind::Closing,
            Phase::Linger => PhaseKind::Linger,
        }
    }

    /// The note of what the service holds on this connection, if it holds anything.
    pub(crate) fn take_held(&mut self) -> Option<Option<N>> {
        match self {
            Phase::Service(cur) => Some(cur.note.take()),
            Phase::Streaming(st) | Phase::Upgraded(st) => Some(st.note.take()),
            _ => None,
        }
    }
}

impl PhaseKind {
    /// The service holds something on the connection: a client's FIN ends it at once.
    pub(crate) fn held_by_service(self) -> bool {
        matches!(self, PhaseKind::Service | PhaseKind::Streaming | PhaseKind::Upgraded)
    }
}

/// Which timeout runs, and so what the connection waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    /// `keepalive_timeout` since accept or the last answer.
    KeepAlive,
    /// `header_timeout` since the head's first byte.
    Header,
    /// `body_timeout` since the last body bytes.
    Body,
    /// `body_timeout` since the last write progress.
    Write,
    /// [`LINGER`] since our side was shut.
    Linger,
    /// No server timeout: the service owns the wait.
    None,
}

/// How long a closing connection waits for the client's FIN after its last answer (ms).
pub(crate) const LINGER: u64 = 2_000;

/// The epoll interest of a connection in this state.
pub(crate) fn interest(read: ReadSide, phase: PhaseKind, out: OutputState, input_full: bool) -> Interest {
    let paused = out == OutputState::OverCap
        || input_full
        || matches!(phase, PhaseKind::Closing | PhaseKind::Streaming);
    let reading = match read {
        // FIN seen: asking for reads or hang-ups now would report it again every turn.
        ReadSide::Eof => Interest::NONE,
        // Paused: only a hang-up matters, and once seen it need not be asked for again.
        ReadSide::FinNoted if paused => Interest::NONE,
        ReadSide::Open if paused => Interest::HANGUP,
        _ => Interest::READABLE,
    };
    match out {
        OutputState::Empty => reading,
        _ => reading.with(Interest::WRITABLE),
    }
}

/// The timeout of a connection in this phase.
pub(crate) fn clock(phase: PhaseKind, out: OutputState) -> Clock {
    match phase {
        PhaseKind::Linger => Clock::Linger,
        _ if out != OutputState::Empty => Clock::Write,
        PhaseKind::Service | PhaseKind::Streaming | PhaseKind::Upgraded => Clock::None,
        PhaseKind::Body => Clock::Body,
        PhaseKind::Head => Clock::Header,
        PhaseKind::Idle => Clock::KeepAlive,
        // Passing: with its output written, a closing connection closes or lingers at once.
        PhaseKind::Closing => Clock::Write,
    }
}

/// A connection's unsent output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputState {
    Empty,
    Pending,
    /// Over `max_output_bytes`: reading stops until the client reads.
    OverCap,
}

/// The request a connection is answering now (the service holds its responder).
pub(crate) struct HeldRequest<N> {
    pub(crate) seq: u32,
    pub(crate) keep_alive: bool,
    pub(crate) is_head: bool,
    pub(crate) http10: bool,
    pub(crate) note: Option<N>,
}

/// An open stream: the body of a streaming response, or an upgraded connection.
pub(crate) struct StreamState<N> {
    pub(crate) seq: u32,
    pub(crate) coding: Coding,
    pub(crate) note: Option<N>,
}

/// How a stream's writes go on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// HTTP/1.1 chunked transfer coding.
    Chunked,
    /// As they are (HTTP/1.0, delimited by the close; upgraded connections).
    Raw,
    /// Not at all: the answer to a HEAD request has no body.
    Discard,
}

/// A request whose head is parsed but whose body is still arriving. Its head stays at the
/// start of the read buffer, and is not parsed again: `head` says where its parts are.
pub(crate) struct PendingBody {
    pub(crate) head: KeptHead,
    pub(crate) body: BodyProgress,
}

/// How far a pending body has come.
pub(crate) enum BodyProgress {
    /// `Content-Length` bytes: complete once the buffer holds them after the head.
    Length(usize),
    /// Chunked: the raw bytes decoded so far are removed from the buffer, so decoding always
    /// resumes right after the head.
    Chunked { decoder: ChunkedDecoder, decoded: Vec<u8> },
}

pub(crate) struct Conn<N> {
    pub(crate) stream: Stream,
    pub(crate) token: Token,
    pub(crate) gen: u32,
    /// Unparsed input. Empty (no allocation) while idle.
    pub(crate) rbuf: Vec<u8>,
    pub(crate) out: Output,
    pub(crate) read: ReadSide,
    pub(crate) phase: Phase<N>,
    /// Requests dispatched so far (a responder's and a stream's identity on this connection).
    pub(crate) seq: u32,
    /// Loop time (ms) the current clock started: accept/last answer (keep-alive), first head
    /// byte (header), last body bytes (body), last write progress (write).
    pub(crate) since: u64,
    pub(crate) clock: Clock,
    pub(crate) timer: Option<(TimerId, u64)>,
    /// Already in the server's list of connections to revisit after this callback.
    pub(crate) in_ready: bool,
    /// Dispatching stopped at the turn's budget with requests left in `rbuf`: a timer brings
    /// it back next turn (so a FIN seen meanwhile must not close it yet).
    pub(crate) resuming: bool,
}

impl<N> Conn<N> {
    pub(crate) fn new(stream: Stream, token: Token, gen: u32, now_ms: u64) -> Conn<N> {
        Conn {
            stream,
            token,
            gen,
            rbuf: Vec::new(),
            out: Output::default(),
            read: ReadSide::Open,
            phase: Phase::Idle,
            seq: 0,
            since: now_ms,
            clock: Clock::KeepAlive,
            timer: None,
            in_ready: false,
            resuming: false,
        }
    }

    fn output_state(&self, cap: usize) -> OutputState {
        match self.out.len() {
            0 => OutputState::Empty,
            n if n > cap => OutputState::OverCap,
            _ => OutputState::Pending,
        }
    }

    pub(crate) fn id(&self, key: usize) -> ConnId {
        ConnId { key: key as u32, gen: self.gen }
    }
}

impl<S: Service> Server<S> {
    /// The socket is ready: write, read, then move the state on.
    pub(crate) fn conn_ready(&mut self, r: &mut Loop<S>, key: usize, ev: Event) {
        if ev.ready.is_error() {
            // RST or another socket error: nothing more can be written or read.
            self.close(r, key, true);
            return;
        }
        if ev.ready.is_writable() {
            if !self.flush(r, key) {
                return;
            }
            // A stream that was backed up has drained: the service may write more (a
            // subscriber catching up on a backlog is fed as fast as it reads, no faster).
            if let Some(stream) = self.core.drained_stream(key) {
                let mut ctx = Ctx { reactor: r, core: &mut self.core };
                self.service.on_drained(&mut ctx, stream);
            }
        }
        if ev.ready.is_readable() || ev.ready.is_closed() {
            self.read(r, key, ev.ready.is_closed());
        }
        self.settle(r, key);
    }

    /// One read into the connection's buffer (level-triggered: if more is waiting, epoll
    /// says so again next turn). `hangup` = epoll reported the peer's FIN.
    fn read(&mut self, r: &mut Loop<S>, key: usize, hangup: bool) {
        let core = &mut self.core;
        let Some(conn) = core.conns.get_mut(key) else { return };
        if conn.read == ReadSide::Eof {
            return;
        }
        let cap = core.config.limits.read_cap();
        let paused = !r.interest(conn.token).is_some_and(|i| i.is_readable());
        if paused || conn.rbuf.len() >= cap {
            // Reading is paused and the client sent FIN. Requests may still wait unread in the
            // kernel before it: taking the FIN for the end of the input would lose their
            // answers, and closing with them unread sends an RST that cuts the answers in
            // flight. So only note it (see the module docs). A client that hangs up on what
            // the service holds (a kept responder, a stream) is dropped at once.
            if hangup {
                conn.read =
                    if conn.phase.kind().held_by_service() { ReadSide::Eof } else { ReadSide::FinNoted };
            }
            return;
        }
        if conn.rbuf.capacity() == 0 {
            conn.rbuf = core.pool.take();
        }
        conn.rbuf.reserve(core.config.read_buffer.min(cap - conn.rbuf.len()));
        let was_empty = conn.rbuf.is_empty();
        match conn.stream.read_into(&mut conn.rbuf) {
            Ok(0) => conn.read = ReadSide::Eof,
            Ok(_) => {
                if let Phase::Linger = conn.phase {
                    conn.rbuf.clear(); // Discard: we already answered and are closing.
                } else if was_empty || conn.clock == Clock::Body {
                    // A new request's first byte, or body progress: restart that clock.
                    conn.since = r.now_ms();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.close(r, key, true),
        }
    }

    /// Writes pending output until done or the socket is full. Returns false if the
    /// connection was closed (write error: the peer is gone).
    fn flush(&mut self, r: &mut Loop<S>, key: usize) -> bool {
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

    /// Settles the connection after an event: dispatches what is complete, writes the
    /// answers, then moves the phase on and applies its interest and timer (or closes it).
    pub(crate) fn settle(&mut self, r: &mut Loop<S>, key: usize) {
        let cap = self.core.config.limits.max_output_bytes;
        loop {
            self.dispatch_buffered(r, key);
            let capped = self.core.conns.get(key).is_some_and(|c| c.out.len() > cap);
            // A stream written to during a callback on its own connection (e.g. the first
            // part of a backlog, from `call`) has its output flushed here, not at once: if
            // this flush writes it all, no EPOLLOUT will come, so the service hears of the
            // drain now (else from `conn_ready` when the socket has room again).
            let stream_output = self.core.conns.get(key).is_some_and(|c| {
                matches!(c.phase, Phase::Streaming(_) | Phase::Upgraded(_)) && !c.out.is_empty()
            });
            if !self.flush(r, key) {
                return;
            }
            if stream_output {
                if let Some(stream) = self.core.drained_stream(key) {
                    let mut ctx = Ctx { reactor: r, core: &mut self.core };
                    self.service.on_drained(&mut ctx, stream);
                }
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

        if conn.read == ReadSide::Eof {
            // The client sent FIN. Answers already produced were just flushed; what the
            // service holds can no longer be delivered to a client that hung up.
            // Otherwise keep writing: requests still buffered behind the output cap are
            // answered as it drains (a half-closed client still reads), then we close.
            let lingering = matches!(conn.phase, Phase::Linger);
            let answered = conn.out.is_empty() && !conn.resuming;
            if conn.phase.kind().held_by_service() || answered || lingering {
                self.close(r, key, !lingering);
                return;
            }
        }
        match conn.phase {
            Phase::Closing if conn.out.is_empty() => {
                if conn.rbuf.is_empty() {
                    self.close(r, key, false);
                    return;
                }
                // Unread input: closing now would send RST and might destroy the answer in
                // flight. Shut our side and discard input until the client's FIN (or a timeout).
                let _ = conn.stream.shutdown_write();
                conn.phase = Phase::Linger;
                conn.rbuf.clear();
                conn.since = r.now_ms();
            }
            Phase::Idle | Phase::Head => {
                conn.phase = if conn.rbuf.is_empty() { Phase::Idle } else { Phase::Head };
            }
            _ => {}
        }

        // Give buffers back while nothing is buffered: idle connections hold none.
        if conn.rbuf.is_empty() && conn.rbuf.capacity() > 0 {
            core.pool.give(std::mem::take(&mut conn.rbuf));
        }
        let out = conn.output_state(cap);
        let phase = conn.phase.kind();
        let input_full = conn.rbuf.len() >= core.config.limits.read_cap();
        let _ = r.reregister(conn.token, interest(conn.read, phase, out, input_full));

        let clock = clock(phase, out);
        if clock == Clock::KeepAlive && core.shutting_down {
            // Its last answer is out: close it now, as idle connections were when the
            // shutdown began, instead of holding the shutdown until its deadline.
            self.close(r, key, false);
            return;
        }
        if clock != conn.clock {
            if clock == Clock::KeepAlive || clock == Clock::Write {
                conn.since = r.now_ms();
            }
            conn.clock = clock;
        }
        if clock == Clock::Header || clock == Clock::Body {
            // Part of a request is here, the rest is coming. A client with Nagle on may hold the
            // rest until we ACK this part: acknowledge now (see the module docs).
            let _ = conn.stream.set_quickack();
        }
        core.update_timer(r, key);
    }

    /// The connection's timer fired: its wait timed out, or its deadline moved later.
    pub(crate) fn conn_timer(&mut self, r: &mut Loop<S>, key: usize, id: TimerId) {
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
    fn expire(&mut self, r: &mut Loop<S>, key: usize) {
        let conn = &mut self.core.conns[key];
        let request_line_seen = conn.rbuf.contains(&b'\n');
        match conn.clock {
            Clock::Header if request_line_seen => {
                let e = HttpError::new(408, "request timeout", true);
                let is_head = request::names_head_method(&conn.rbuf);
                self.core.reject(r, key, e, is_head);
                self.core.conns[key].rbuf.clear();
                self.settle(r, key);
            }
            Clock::Body => {
                let is_head = match &conn.phase {
                    Phase::Body(p) => p.head.framing.is_head,
                    _ => false,
                };
                let e = HttpError::new(408, "request body timeout", true);
                self.core.reject(r, key, e, is_head);
                self.core.conns[key].rbuf.clear();
                self.settle(r, key);
            }
            _ => self.close(r, key, false),
        }
    }
}

impl<S: Service> ServerState<S> {
    /// Writes the connection's pending output until done or the socket is full (then the
    /// rest is parked: see [`Output::park`]). `Err` if the peer is gone.
    pub(crate) fn write_out(&mut self, key: usize, now_ms: u64) -> io::Result<()> {
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

    /// After the service answered or wrote outside the connection's own processing (a held
    /// poll woken by a publish, a job's result, a stream's next chunk): write it now, and
    /// revisit the connection after the callback (a flush may remain, pipelined requests may
    /// wait). Its head sits in a pooled buffer that goes back to the pool at once, so a
    /// publish that wakes 10,000 polls reuses one buffer instead of holding 10,000. A write
    /// error is left for the flush after the callback, which closes.
    pub(crate) fn answered_late(&mut self, key: usize, now_ms: u64) {
        if self.dispatching == Some(key) {
            return;
        }
        let _ = self.write_out(key, now_ms);
        let conn = &mut self.conns[key];
        if !conn.in_ready {
            conn.in_ready = true;
            self.ready.push(key);
        }
    }

    /// Writes one piece of an open stream. Queued whole; `Slow` past the output cap.
    pub(crate) fn write_stream(&mut self, key: usize, piece: Piece<'_>) -> Flow {
        let conn = &mut self.conns[key];
        let coding = match &conn.phase {
            Phase::Streaming(st) | Phase::Upgraded(st) => st.coding,
            _ => return Flow::Ready,
        };
        let len = piece.bytes().len();
        match coding {
            Coding::Discard => {}
            // An empty chunk would end the body: there is nothing to write.
            Coding::Raw | Coding::Chunked if len == 0 => {}
            Coding::Raw => piece.push(&mut conn.out, &mut self.pool),
            Coding::Chunked => {
                let out = conn.out.tail(&mut self.pool);
                let before = out.len();
                push_hex(out, len);
                out.extend_from_slice(b"\r\n");
                let n = out.len() - before;
                conn.out.commit(n);
                piece.push(&mut conn.out, &mut self.pool);
                conn.out.push_copy(&mut self.pool, b"\r\n");
            }
        }
        if conn.out.len() > self.config.limits.max_output_bytes {
            Flow::Slow
        } else {
            Flow::Ready
        }
    }

    /// The open stream of connection `key` if its output has just drained (for
    /// [`Service::on_drained`](crate::Service::on_drained)).
    pub(crate) fn drained_stream(&self, key: usize) -> Option<StreamId> {
        let conn = self.conns.get(key)?;
        match &conn.phase {
            Phase::Streaming(st) | Phase::Upgraded(st) if conn.out.is_empty() => {
                Some(StreamId { conn: conn.id(key), seq: st.seq })
            }
            _ => None,
        }
    }

    /// Ends an open stream: the last chunk, then the connection closes once it is written.
    pub(crate) fn end_stream(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if let Phase::Streaming(StreamState { coding: Coding::Chunked, .. }) = conn.phase {
            conn.out.push_copy(&mut self.pool, b"0\r\n\r\n");
        }
        conn.phase = Phase::Closing;
    }

    /// When the connection's current wait times out (ms of loop time), if it can.
    pub(crate) fn deadline(&self, key: usize) -> Option<u64> {
        let conn = &self.conns[key];
        let c = &self.config;
        let ms = |d: std::time::Duration| d.as_millis().min(u64::MAX as u128) as u64;
        let timeout = match conn.clock {
            Clock::KeepAlive => ms(c.keepalive_timeout),
            Clock::Header => ms(c.header_timeout),
            Clock::Body | Clock::Write => ms(c.body_timeout),
            Clock::Linger => LINGER,
            Clock::None => return None,
        };
        Some(conn.since.saturating_add(timeout))
    }

    /// Keeps one timer per connection, armed at or before its deadline. Lazy: when the
    /// deadline moves later (the usual case, e.g. each keep-alive request), the armed timer is
    /// left alone and re-armed when it fires; only an earlier deadline re-arms now. So a busy
    /// keep-alive connection costs no timer operations per request.
    pub(crate) fn update_timer(&mut self, r: &mut Loop<S>, key: usize) {
        let Some(deadline) = self.deadline(key) else { return };
        let conn = &mut self.conns[key];
        if let Some((id, due)) = conn.timer {
            if due <= deadline {
                return;
            }
            r.cancel_timer(id);
        }
        let id = r.set_timer_at(deadline, crate::server::ServerTimer::Conn(key));
        conn.timer = Some((id, deadline));
    }
}

/// Appends `n` in lower-case hex (a chunk size).
fn push_hex(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutputState::{Empty, OverCap, Pending};
    use PhaseKind::*;

    const R: Interest = Interest::READABLE;
    const H: Interest = Interest::HANGUP;
    const N: Interest = Interest::NONE;

    /// The whole map from state to (interest, clock): every phase, with and without output,
    /// over the cap, a full buffer, FIN noted, end of input.
    #[test]
    fn state_table() {
        let w = |i: Interest| i.with(Interest::WRITABLE);
        #[rustfmt::skip]
        let rows: &[(ReadSide, PhaseKind, OutputState, bool, Interest, Clock)] = &[
            // read side           phase      output   full   interest  clock
            (ReadSide::Open,     Idle,      Empty,   false, R,        Clock::KeepAlive),
            (ReadSide::Open,     Head,      Empty,   false, R,        Clock::Header),
            (ReadSide::Open,     Head,      Empty,   true,  H,        Clock::Header),
            (ReadSide::Open,     Body,      Empty,   false, R,        Clock::Body),
            (ReadSide::Open,     Body,      Empty,   true,  H,        Clock::Body),
            (ReadSide::Open,     Service,   Empty,   false, R,        Clock::None),
            (ReadSide::Open,     Streaming, Empty,   false, H,        Clock::None),
            (ReadSide::Open,     Upgraded,  Empty,   false, R,        Clock::None),
            (ReadSide::Open,     Closing,   Empty,   false, H,        Clock::Write),
            (ReadSide::Open,     Linger,    Empty,   false, R,        Clock::Linger),
            // output pending: the write clock, except lingering (its output is out)
            (ReadSide::Open,     Idle,      Pending, false, w(R),     Clock::Write),
            (ReadSide::Open,     Head,      Pending, false, w(R),     Clock::Write),
            (ReadSide::Open,     Service,   Pending, false, w(R),     Clock::Write),
            (ReadSide::Open,     Streaming, Pending, false, w(H),     Clock::Write),
            (ReadSide::Open,     Upgraded,  Pending, false, w(R),     Clock::Write),
            (ReadSide::Open,     Closing,   Pending, false, w(H),     Clock::Write),
            // backpressure: reading pauses, only a hang-up is asked for
            (ReadSide::Open,     Idle,      OverCap, false, w(H),     Clock::Write),
            (ReadSide::Open,     Upgraded,  OverCap, false, w(H),     Clock::Write),
            (ReadSide::Open,     Streaming, OverCap, false, w(H),     Clock::Write),
            // FIN noted while paused: not even the hang-up (it would be reported every turn)
            (ReadSide::FinNoted, Idle,      OverCap, false, w(N),     Clock::Write),
            (ReadSide::FinNoted, Head,      Empty,   true,  N,        Clock::Header),
            (ReadSide::FinNoted, Closing,   Pending, false, w(N),     Clock::Write),
            // ... and once the pause ends, reading resumes to find the rest, then the end
            (ReadSide::FinNoted, Idle,      Empty,   false, R,        Clock::KeepAlive),
            (ReadSide::FinNoted, Head,      Pending, false, w(R),     Clock::Write),
            // end of input: nothing to read; what is pending is still written
            (ReadSide::Eof,      Idle,      Pending, false, w(N),     Clock::Write),
            (ReadSide::Eof,      Head,      OverCap, false, w(N),     Clock::Write),
            (ReadSide::Eof,      Closing,   Pending, false, w(N),     Clock::Write),
            (ReadSide::Eof,      Linger,    Empty,   false, N,        Clock::Linger),
        ];
        for &(read, phase, out, full, want_interest, want_clock) in rows {
            let row = format!("{read:?} {phase:?} {out:?} full={full}");
            assert_eq!(interest(read, phase, out, full), want_interest, "interest of {row}");
            assert_eq!(clock(phase, out), want_clock, "clock of {row}");
        }
    }

    #[test]
    fn chunk_sizes_in_hex() {
        let mut out = Vec::new();
        for n in [0, 9, 10, 255, 4096, 0x12ab] {
            push_hex(&mut out, n);
            out.push(b' ');
        }
        assert_eq!(out, b"0 9 a ff 1000 12ab ");
    }
}
