//! Client connections on the reactor: connect, write requests, read and frame responses.
//!
//! [`Pool`] owns the sockets (a slab of [`Conn`], each with the mode's own state `T`);
//! [`Client`] is the [`reactor::Handler`]: it turns readiness into calls on a [`Driver`] (one
//! per mode) — connected, a complete response, a failure, a timer — and the driver decides
//! what to send next. Everything runs on one thread; nothing blocks.
//!
//! Writes are attempted at once; only a partial write registers interest in WRITABLE (the
//! same level-triggered discipline as the server). A write error is remembered and reported
//! as [`Fail::Write`] on the next readiness report: a socket that failed a write has seen a
//! reset or a FIN, so epoll reports it readable on the next turn.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use reactor::net::Stream;
use reactor::{Event, Handler, Interest, Reactor, TimerId, Token};
use slab::Slab;

use crate::parse::{parse_response, Response};

/// A connection's slot in the pool (reused after the connection is closed).
pub type Key = usize;

/// Why a connection ended. The connection is already closed when the driver hears of it.
#[derive(Debug)]
pub enum Fail {
    /// The connect failed (refused, timed out, no route, no ephemeral port...).
    Connect(io::Error),
    /// read(2) failed (typically ECONNRESET).
    Read(io::Error),
    /// The server closed the connection; `partial` = in the middle of a response.
    Eof {
        partial: bool,
    },
    Write(io::Error),
    /// The server sent something that is not a well-framed HTTP/1.1 response.
    Parse(&'static str),
}

/// Smallest free space offered to a read; the buffer grows (doubling) past this.
const READ_CHUNK: usize = 2048;

pub struct Conn<T> {
    stream: Stream,
    token: Token,
    connected: bool,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    /// A write failed: reported as `Fail::Write` at the next readiness report.
    broken: Option<io::Error>,
    /// Distinguishes this connection from a later one in the same slot.
    serial: u64,
    /// When the connect started.
    pub opened: Instant,
    pub data: T,
}

impl<T> Conn<T> {
    pub fn is_connected(&self) -> bool {
        self.connected
    }
}

pub struct Pool<T> {
    conns: Slab<Conn<T>>,
    addr: SocketAddr,
    next_serial: u64,
    connecting: usize,
    /// Connections that completed their connect, ever.
    pub connected_total: u64,
}

impl<T> Pool<T> {
    pub fn new(addr: SocketAddr) -> Pool<T> {
        Pool { conns: Slab::new(), addr, next_serial: 0, connecting: 0, connected_total: 0 }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts a non-blocking connect. An error here is immediate (no descriptor, no port,
    /// or the kernel refused at once); otherwise the driver hears `on_connected` or
    /// `on_fail(Fail::Connect)`.
    pub fn connect(&mut self, r: &mut Reactor<()>, data: T) -> io::Result<Key> {
        let stream = Stream::connect(self.addr)?;
        stream.set_nodelay()?;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = r.register(stream.fd(), Interest::WRITABLE, key)?;
        self.next_serial += 1;
        entry.insert(Conn {
            stream,
            token,
            connected: false,
            out: Vec::new(),
            out_pos: 0,
            inbuf: Vec::new(),
            broken: None,
            serial: self.next_serial,
            opened: Instant::now(),
            data,
        });
        self.connecting += 1;
        Ok(key)
    }

    /// Queues `bytes` on connection `key` and writes as much as the socket takes now (all of
    /// it, normally). Before the connect completes the bytes wait in the connection's buffer.
    pub fn send(&mut self, r: &mut Reactor<()>, key: Key, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.broken.is_some() {
            return;
        }
        c.out.extend_from_slice(bytes);
        if c.connected {
            flush(r, c);
        }
    }

    /// Closes connection `key` and returns its state. `reset` = close with RST (SO_LINGER 0)
    /// instead of FIN: the server sees ECONNRESET/EPOLLERR at once and nothing lingers in
    /// TIME_WAIT on our side.
    pub fn close(&mut self, r: &mut Reactor<()>, key: Key, reset: bool) -> Option<T> {
        let c = self.conns.try_remove(key)?;
        if !c.connected {
            self.connecting -= 1;
        }
        if reset {
            let _ = test_support::sockets::set_linger_zero(c.stream.fd());
        }
        let _ = r.deregister(c.token);
        drop(c.stream);
        Some(c.data)
    }

    pub fn get(&self, key: Key) -> Option<&Conn<T>> {
        self.conns.get(key)
    }

    pub fn data_mut(&mut self, key: Key) -> Option<&mut T> {
        self.conns.get_mut(key).map(|c| &mut c.data)
    }

    /// Connections whose connect has not completed yet.
    pub fn connecting(&self) -> usize {
        self.connecting
    }

    /// Keys of every open connection.
    pub fn keys(&self) -> Vec<Key> {
        self.conns.iter().map(|(k, _)| k).collect()
    }

    /// Iterates over the open connections.
    pub fn iter(&self) -> impl Iterator<Item = (Key, &Conn<T>)> {
        self.conns.iter()
    }

    /// Closes every connection (with RST if `reset`).
    pub fn close_all(&mut self, r: &mut Reactor<()>, reset: bool) {
        for key in self.keys() {
            self.close(r, key, reset);
        }
    }
}

/// Writes what is queued; keeps WRITABLE interest only while something is left.
fn flush<T>(r: &mut Reactor<()>, c: &mut Conn<T>) {
    while c.out_pos < c.out.len() {
        match c.stream.write(&c.out[c.out_pos..]) {
            Ok(n) => c.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = r.reregister(c.token, Interest::BOTH);
                return;
            }
            Err(e) => {
                c.broken = Some(e);
                c.out.clear();
                c.out_pos = 0;
                return;
            }
        }
    }
    c.out.clear();
    c.out_pos = 0;
    let _ = r.reregister(c.token, Interest::READABLE);
}

/// What a load-generator mode does with its connections.
pub trait Driver<T> {
    /// The connect completed; the connection is ready for requests.
    fn on_connected(&mut self, pool: &mut Pool<T>, r: &mut Reactor<()>, key: Key);
    /// A complete response arrived. The driver may close the connection (or open others).
    fn on_response(&mut self, pool: &mut Pool<T>, r: &mut Reactor<()>, key: Key, resp: &Response<'_>);
    /// Every complete response of one read has been handed over (a good moment to send the
    /// next batch of pipelined requests). Only called if the connection is still open.
    fn on_read_done(&mut self, _pool: &mut Pool<T>, _r: &mut Reactor<()>, _key: Key) {}
    /// The connection ended (already closed and removed); `data` is its state.
    fn on_fail(&mut self, pool: &mut Pool<T>, r: &mut Reactor<()>, key: Key, data: T, fail: Fail);
    fn on_timer(&mut self, pool: &mut Pool<T>, r: &mut Reactor<()>, tag: u64);
}

/// The reactor handler: a pool of connections and the driver that uses them.
pub struct Client<T, D> {
    pub pool: Pool<T>,
    pub driver: D,
}

impl<T, D: Driver<T>> Client<T, D> {
    fn fail(&mut self, r: &mut Reactor<()>, key: Key, fail: Fail) {
        if let Some(data) = self.pool.close(r, key, true) {
            self.driver.on_fail(&mut self.pool, r, key, data, fail);
        }
    }

    fn connected(&mut self, r: &mut Reactor<()>, key: Key, ev: Event) {
        let c = &mut self.pool.conns[key];
        let err = match c.stream.take_error() {
            Ok(Some(e)) => Some(e),
            Err(e) => Some(e),
            Ok(None) if ev.ready.is_error() || (ev.ready.is_closed() && !ev.ready.is_writable()) => {
                Some(io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed while connecting"))
            }
            Ok(None) => None,
        };
        if let Some(e) = err {
            return self.fail(r, key, Fail::Connect(e));
        }
        c.connected = true;
        flush(r, c);
        self.pool.connecting -= 1;
        self.pool.connected_total += 1;
        self.driver.on_connected(&mut self.pool, r, key);
    }

    fn read(&mut self, r: &mut Reactor<()>, key: Key, ready: reactor::Ready) {
        let c = &mut self.pool.conns[key];
        let serial = c.serial;
        let mut eof = false;
        let mut error = None;
        if c.inbuf.capacity() - c.inbuf.len() < READ_CHUNK {
            c.inbuf.reserve(READ_CHUNK.max(c.inbuf.len()));
        }
        loop {
            match c.stream.read_into(&mut c.inbuf) {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // EPOLLERR with nothing to read: the error is pending on the socket.
                    // (Level-triggered, it would be reported again on every turn.)
                    if ready.is_error() {
                        error = Some(match c.stream.take_error() {
                            Ok(Some(e)) | Err(e) => e,
                            Ok(None) => io::Error::other("socket error"),
                        });
                    }
                }
                Err(e) => error = Some(e),
            }
            break;
        }
        // Hand over every complete response; the buffer is taken out of the connection so
        // the driver can use the pool meanwhile (even close this connection).
        let buf = std::mem::take(&mut c.inbuf);
        let mut pos = 0;
        while pos < buf.len() {
            match parse_response(&buf[pos..]) {
                Ok(Some(resp)) => {
                    pos += resp.len;
                    self.driver.on_response(&mut self.pool, r, key, &resp);
                    if self.pool.conns.get(key).map(|c| c.serial) != Some(serial) {
                        return; // the driver closed it
                    }
                }
                Ok(None) => break,
                Err(what) => return self.fail(r, key, Fail::Parse(what)),
            }
        }
        let c = &mut self.pool.conns[key];
        c.inbuf = buf;
        c.inbuf.drain(..pos);
        if let Some(e) = error {
            return self.fail(r, key, Fail::Read(e));
        }
        if eof {
            let partial = !c.inbuf.is_empty();
            return self.fail(r, key, Fail::Eof { partial });
        }
        if pos > 0 {
            self.driver.on_read_done(&mut self.pool, r, key);
        }
    }
}

impl<T, D: Driver<T>> Handler<()> for Client<T, D> {
    fn on_io(&mut self, r: &mut Reactor<()>, ev: Event) {
        let key = ev.tag;
        let Some(c) = self.pool.conns.get_mut(key) else { return };
        if c.token != ev.token {
            return;
        }
        if !c.connected {
            return self.connected(r, key, ev);
        }
        if let Some(e) = c.broken.take() {
            return self.fail(r, key, Fail::Write(e));
        }
        if ev.ready.is_writable() && c.out_pos < c.out.len() {
            flush(r, c);
            if let Some(e) = c.broken.take() {
                return self.fail(r, key, Fail::Write(e));
            }
        }
        if ev.ready.is_readable() || ev.ready.is_closed() || ev.ready.is_error() {
            self.read(r, key, ev.ready);
        }
    }

    fn on_timer(&mut self, r: &mut Reactor<()>, _id: TimerId, tag: u64) {
        self.driver.on_timer(&mut self.pool, r, tag);
    }
}

/// A GET request for `target` (`Connection: close` if `close`).
pub fn get_request(host: &str, target: &str, close: bool) -> Vec<u8> {
    let conn = if close { "Connection: close\r\n" } else { "" };
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{conn}\r\n").into_bytes()
}

/// A POST request with `body`.
pub fn post_request(host: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}
