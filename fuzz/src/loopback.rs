//! A real [`Server`] on a real [`Reactor`](reactor::Reactor), driven in this thread, with a client socket over
//! TCP loopback. The server runs only when we turn its loop (`run_once` with a zero wait), so a
//! fuzz input plays out deterministically enough: write a chunk, turn until nothing happens,
//! read what came back, repeat; then close the client and check the server let go of
//! everything (connection, timers, epoll registrations).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use http::{Config, Loop, Server, Service};
use test_support::sockets::{connect_shaped, set_linger_zero, Shape};

/// How long the server gets to let go of a connection the client closed. Generous: a
/// loaded machine may deschedule us; a real leak never ends.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);
/// Turns without progress after which the server counts as idle.
const IDLE_TURNS: u32 = 3;
/// Turns in one settle beyond which the server is spinning (an event reported forever).
const MAX_TURNS: u32 = 20_000;

pub struct Loopback<S: Service> {
    pub reactor: Loop<S>,
    pub server: Server<S>,
    addr: SocketAddr,
    /// Registered sources with no connection open (the listener, the loop's eventfd).
    baseline_sources: usize,
    /// Clients connected and not finished yet.
    open_clients: usize,
}

/// How the client ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// `shutdown(SHUT_WR)`, then read until the server closes (EOF or RST).
    Fin,
    /// SO_LINGER 0: close with RST.
    Reset,
    /// Just close the socket (FIN, or RST if answers are left unread).
    Drop,
}

/// A client connection and everything it received.
pub struct Client {
    stream: TcpStream,
    pub received: Vec<u8>,
    /// Read 0: the server closed its side.
    pub eof: bool,
    /// A read failed (ECONNRESET): the server reset the connection.
    pub reset: bool,
    /// A write failed (EPIPE, ECONNRESET): the server is gone; what it sent before may
    /// still be waiting to be read.
    pub write_broken: bool,
}

impl Client {
    /// Reads whatever is available without blocking. Returns whether anything came.
    pub fn read_available(&mut self) -> bool {
        let mut got = false;
        let mut buf = [0u8; 16 * 1024];
        while !self.eof && !self.reset {
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.received.extend_from_slice(&buf[..n]);
                    got = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.reset = true,
            }
        }
        got
    }

    /// Writes as much of `data` as the socket takes now. `None` if the connection is broken.
    fn write_some(&mut self, data: &[u8]) -> Option<usize> {
        match self.stream.write(data) {
            Ok(n) => Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                Some(0)
            }
            Err(_) => {
                self.write_broken = true;
                None
            }
        }
    }
}

impl<S: Service> Loopback<S> {
    /// Binds `service` on 127.0.0.1 (ephemeral port) with `config`'s limits and timeouts.
    pub fn new(mut config: Config, reactor: Loop<S>, service: S) -> Self {
        let mut reactor = reactor;
        config.addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = Server::bind(config, service, &mut reactor).expect("bind");
        let addr = server.local_addr();
        let baseline_sources = reactor.source_count();
        Loopback { reactor, server, addr, baseline_sources, open_clients: 0 }
    }

    /// One loop turn that does not sleep. Returns the I/O events delivered.
    pub fn turn(&mut self) -> usize {
        self.reactor.run_once(&mut self.server, Some(Duration::ZERO)).expect("run_once")
    }

    /// Opens a client connection (optionally with a small receive buffer, so the server's
    /// writes fill up and it must wait for EPOLLOUT) and lets the server accept it.
    pub fn connect(&mut self, small_rcvbuf: bool) -> Client {
        let stream = connect(self.addr, small_rcvbuf).expect("connect");
        stream.set_nonblocking(true).unwrap();
        stream.set_nodelay(true).unwrap();
        let before = self.server.stats().accepted_total;
        let start = Instant::now();
        while self.server.stats().accepted_total == before {
            self.turn();
            assert!(start.elapsed() < CLOSE_DEADLINE, "server never accepted the connection");
        }
        self.open_clients += 1;
        Client { stream, received: Vec::new(), eof: false, reset: false, write_broken: false }
    }

    /// Turns the loop until the server has nothing left to do (and, with `read`, the client
    /// has read everything sent to it). Panics if the server never goes idle.
    pub fn settle(&mut self, client: &mut Client, read: bool) {
        let mut idle = 0;
        let mut turns = 0;
        while idle < IDLE_TURNS {
            let events = self.turn();
            let got = read && client.read_available();
            if events == 0 && !got {
                idle += 1;
            } else {
                idle = 0;
            }
            turns += 1;
            assert!(turns < MAX_TURNS, "the server never goes idle: an event is reported forever");
        }
    }

    /// Sends `data`, turning the loop (and reading if the socket is full) until it is all out.
    pub fn send(&mut self, client: &mut Client, data: &[u8], read: bool) {
        let mut off = 0;
        let mut stuck = 0;
        while off < data.len() {
            let Some(n) = client.write_some(&data[off..]) else { break };
            off += n;
            if n == 0 {
                // Socket full: the server is not reading (backpressure on its output). Read
                // its answers so it can go on; it must not stall for good.
                let events = self.turn();
                let got = client.read_available();
                if client.eof || client.reset || client.write_broken {
                    break;
                }
                stuck = if events == 0 && !got { stuck + 1 } else { 0 };
                assert!(stuck < MAX_TURNS, "stalled: the server neither reads nor writes");
            } else {
                stuck = 0;
            }
        }
        self.settle(client, read);
    }

    /// Closes the client as `mode` says, then checks that the server let go of its connection
    /// (and of its epoll registration).
    /// Returns the bytes received and whether the stream is complete (a clean EOF after FIN).
    pub fn finish(&mut self, mut client: Client, mode: CloseMode) -> (Vec<u8>, bool) {
        let mut complete = false;
        match mode {
            CloseMode::Fin => {
                let _ = client.stream.shutdown(Shutdown::Write);
                let start = Instant::now();
                while !client.eof && !client.reset {
                    self.turn();
                    client.read_available();
                    assert!(
                        start.elapsed() < CLOSE_DEADLINE,
                        "the server kept the connection open after the client's FIN"
                    );
                }
                complete = client.eof && !client.reset;
            }
            CloseMode::Reset => {
                let _ = set_linger_zero(client.stream.as_raw_fd());
            }
            CloseMode::Drop => {}
        }
        let Client { stream, received, .. } = client;
        drop(stream);
        // The other clients' connections may stay; this one must go.
        self.open_clients -= 1;
        let start = Instant::now();
        while self.server.stats().connections > self.open_clients {
            self.turn();
            assert!(
                start.elapsed() < CLOSE_DEADLINE,
                "the server still holds {} connection(s) after the client closed ({} other clients open)",
                self.server.stats().connections,
                self.open_clients
            );
        }
        // Let the loop finish anything the close started (e.g. a service's cleanup message).
        for _ in 0..IDLE_TURNS {
            self.turn();
        }
        assert_eq!(
            self.reactor.source_count(),
            self.baseline_sources + self.server.stats().connections,
            "epoll registrations leaked"
        );
        (received, complete)
    }

    /// Timers pending in the loop (0 once every connection is gone and the service holds none).
    pub fn timers(&self) -> usize {
        self.reactor.timer_count()
    }
}

/// A blocking client connection. SO_RCVBUF must be set before connect to shrink the window
/// the client advertises; `connect_shaped` also finishes a connect a signal interrupted
/// (libFuzzer's timeout alarm).
fn connect(addr: SocketAddr, small_rcvbuf: bool) -> io::Result<TcpStream> {
    let shape = Shape { recv_buffer: small_rcvbuf.then_some(2048), ..Shape::default() };
    connect_shaped(addr, shape)
}
