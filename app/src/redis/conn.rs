//! One connection to Redis on the loop: it connects without blocking, writes commands as they
//! come (pipelined: many in flight, their replies come back in order), reads replies, and
//! notices when Redis stops answering.
//!
//! It is a state machine ([`State`]): `Down` (a retry is due), `Connecting` (a non-blocking
//! `connect` in progress: the socket turns writable when it is done), `Handshake` (`AUTH`,
//! `SELECT`, `SCRIPT LOAD` sent first; the connection is not used until every one of them
//! is answered), `Ready`. Any failure (a refused connect, a closed socket, an error reply to
//! the handshake, a broken reply, a command unanswered for the timeout) goes back to `Down`:
//! the socket is closed and every command still waiting for its reply is handed back to the
//! caller, which answers it (a publish: 503). The caller owns the timers: it asks
//! [`RedisConn::oldest`] when the oldest command was written, and calls
//! [`RedisConn::connect`] when its retry timer fires.
//!
//! What each reply is for (`E`, the caller's type) is kept beside the command in a queue, in
//! the order the commands were written: Redis answers in that order, so the front of the
//! queue is what the next reply answers. On a subscribed connection, published messages
//! arrive in between; [`RedisConn::ready`] gives them apart ([`Incoming::Push`]).
//!
//! Every queue is bounded: at most [`MAX_IN_FLIGHT`] commands wait for a reply (past it,
//! [`RedisConn::send`] refuses), and a reply may be at most what [`ReplyLimits`] allows.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use reactor::net::Stream;
use reactor::{Event, Interest, Token};

use super::resp::{encode_command, parse_reply, Reply, ReplyLimits};

/// Commands waiting for their reply on one connection, at most.
pub const MAX_IN_FLIGHT: usize = 100_000;

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected: the caller's retry timer brings it back.
    Down,
    /// `connect` in progress.
    Connecting,
    /// Connected; this many handshake replies are still to come.
    Handshake(usize),
    Ready,
}

/// What came in.
#[derive(Debug)]
pub enum Incoming<E> {
    /// The reply to the command sent with `E`.
    Reply(E, Reply),
    /// A published message (`["message", channel, payload]`) on a subscribed connection.
    Push(Reply),
    /// The handshake is answered: the connection is ready.
    Ready,
}

/// Why the connection went down (for the log and the counters).
#[derive(Debug)]
pub enum Failure {
    Io(io::Error),
    Closed,
    Protocol(String),
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Closed => write!(f, "connection closed by Redis"),
            Failure::Protocol(e) => write!(f, "{e}"),
            Failure::Refused(e) => write!(f, "handshake refused: {e}"),
        }
    }
}

/// One connection and the replies it waits for.
pub struct RedisConn<E> {
    addr: SocketAddr,
    state: State,
    stream: Option<Stream>,
    token: Option<Token>,
    /// Bytes to write, from `written` on.
    out: Vec<u8>,
    written: usize,
    /// Bytes read and not parsed yet.
    input: Vec<u8>,
    limits: ReplyLimits,
    /// What each reply awaited is for, with the loop time (ms) its command was written.
    awaiting: VecDeque<(Option<E>, u64)>,
    /// Handshake commands, written first on every connection (their replies are `None`).
    handshake: Vec<Vec<Vec<u8>>>,
    /// A subscribed connection: published messages come between the replies.
    subscriber: bool,
}

impl<E> RedisConn<E> {
    /// A connection to `addr` (down until [`RedisConn::connect`]) that opens with the commands
    /// of `handshake` (each must answer without an error); `subscriber` if it will carry
    /// published messages.
    pub fn new(
        addr: SocketAddr,
        handshake: Vec<Vec<Vec<u8>>>,
        limits: ReplyLimits,
        subscriber: bool,
    ) -> RedisConn<E> {
        RedisConn {
            addr,
            state: State::Down,
            stream: None,
            token: None,
            out: Vec::new(),
            written: 0,
            input: Vec::new(),
            limits,
            awaiting: VecDeque::new(),
            handshake,
            subscriber,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// The fd to register with the loop, once [`RedisConn::connect`] has made a socket.
    pub fn fd(&self) -> Option<std::os::fd::RawFd> {
        self.stream.as_ref().map(Stream::fd)
    }

    /// Starts connecting. The caller registers [`RedisConn::fd`] for
    /// [`RedisConn::interest`] and hands the token to [`RedisConn::registered`].
    pub fn connect(&mut self, now_ms: u64) -> io::Result<()> {
        let stream = Stream::connect(self.addr)?;
        stream.set_nodelay()?;
        self.stream = Some(stream);
        self.state = State::Connecting;
        self.out.clear();
        self.written = 0;
        self.input.clear();
        let handshake = std::mem::take(&mut self.handshake);
        for cmd in &handshake {
            let args: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
            encode_command(&mut self.out, &args);
            self.awaiting.push_back((None, now_ms));
        }
        self.handshake = handshake;
        Ok(())
    }

    pub fn registered(&mut self, token: Token) {
        self.token = Some(token);
    }

    pub fn token(&self) -> Option<Token> {
        self.token
    }

    /// What the socket must be watched for: writable while connecting or while output waits.
    pub fn interest(&self) -> Interest {
        match self.state {
            State::Connecting => Interest::WRITABLE,
            _ if self.written < self.out.len() => Interest::READABLE.with(Interest::WRITABLE),
            _ => Interest::READABLE,
        }
    }

    /// Queues a command whose reply is for `what`. `Err(what)` back if the connection is not
    /// ready or too many commands wait.
    pub fn send(&mut self, args: &[&[u8]], what: E, now_ms: u64) -> Result<(), E> {
        if self.state != State::Ready || self.awaiting.len() >= MAX_IN_FLIGHT {
            return Err(what);
        }
        encode_command(&mut self.out, args);
        self.awaiting.push_back((Some(what), now_ms));
        Ok(())
    }

    /// Commands waiting for a reply.
    pub fn in_flight(&self) -> usize {
        self.awaiting.len()
    }

    /// When (loop ms) the oldest command was written, if one waits.
    pub fn oldest(&self) -> Option<u64> {
        self.awaiting.front().map(|(_, sent)| *sent)
    }

    /// Writes what it can. Call after [`RedisConn::send`]s and when the socket is writable.
    pub fn flush(&mut self) -> Result<(), Failure> {
        let Some(stream) = &self.stream else { return Ok(()) };
        if matches!(self.state, State::Down | State::Connecting) {
            return Ok(());
        }
        while self.written < self.out.len() {
            match stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(Failure::Closed),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        Ok(())
    }

    /// Handles a readiness event: completes the connect, writes, reads and parses. What came
    /// in is appended to `incoming`.
    pub fn ready(&mut self, ev: Event, incoming: &mut Vec<Incoming<E>>) -> Result<(), Failure> {
        let Some(stream) = &self.stream else { return Ok(()) };
        if self.state == State::Connecting {
            if let Some(e) = stream.take_error().map_err(Failure::Io)? {
                return Err(Failure::Io(e));
            }
            if !ev.ready.is_writable() && !ev.ready.is_error() {
                return Ok(());
            }
            self.state = State::Handshake(self.handshake.len());
            if self.handshake.is_empty() {
                self.state = State::Ready;
                incoming.push(Incoming::Ready);
            }
        }
        if ev.ready.is_error() {
            let e = stream.take_error().ok().flatten();
            return Err(e.map_or(Failure::Closed, Failure::Io));
        }
        self.flush()?;
        if ev.ready.is_readable() || ev.ready.is_closed() {
            self.read(incoming)?;
        }
        Ok(())
    }

    fn read(&mut self, incoming: &mut Vec<Incoming<E>>) -> Result<(), Failure> {
        let Some(stream) = &self.stream else { return Ok(()) };
        loop {
            if self.input.capacity() - self.input.len() < 16 * 1024 {
                self.input.reserve(64 * 1024);
            }
            match stream.read_into(&mut self.input) {
                Ok(0) => {
                    self.parse(incoming)?;
                    return Err(Failure::Closed);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        self.parse(incoming)
    }

    fn parse(&mut self, incoming: &mut Vec<Incoming<E>>) -> Result<(), Failure> {
        let mut used = 0;
        loop {
            let reply = match parse_reply(&self.input[used..], &self.limits) {
                Ok(Some((reply, n))) => {
                    used += n;
                    reply
                }
                Ok(None) => break,
                Err(e) => return Err(Failure::Protocol(e.to_string())),
            };
            if self.subscriber && is_push(&reply) {
                incoming.push(Incoming::Push(reply));
                continue;
            }
            let Some((what, _)) = self.awaiting.pop_front() else {
                return Err(Failure::Protocol("a reply nobody asked for".into()));
            };
            match (what, self.state) {
                (None, State::Handshake(left)) => {
                    if let Reply::Error(e) = &reply {
                        return Err(Failure::Refused(String::from_utf8_lossy(e).into_owned()));
                    }
                    if left <= 1 {
                        self.state = State::Ready;
                        incoming.push(Incoming::Ready);
                    } else {
                        self.state = State::Handshake(left - 1);
                    }
                }
                (Some(what), _) => incoming.push(Incoming::Reply(what, reply)),
                (None, _) => return Err(Failure::Protocol("a handshake reply out of place".into())),
            }
        }
        self.input.drain(..used);
        Ok(())
    }

    /// Closes the socket (the caller deregisters [`RedisConn::token`] first) and hands back
    /// what the commands still waiting were for.
    pub fn down(&mut self) -> Vec<E> {
        self.state = State::Down;
        self.stream = None;
        self.token = None;
        self.out = Vec::new();
        self.written = 0;
        self.input = Vec::new();
        self.awaiting.drain(..).filter_map(|(what, _)| what).collect()
    }
}

/// A message pushed on a subscribed connection, not a reply to a command.
fn is_push(reply: &Reply) -> bool {
    match reply {
        Reply::Array(Some(items)) => {
            matches!(items.first().and_then(Reply::as_bytes), Some(b"message")) && items.len() == 3
        }
        _ => false,
    }
}
