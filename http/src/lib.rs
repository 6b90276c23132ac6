//! # tidings-http: an HTTP/1.1 server on the tidings reactor
//!
//! Strict enough to face the internet, fast enough to be a baseline. One concern per module:
//!
//! | module | what it does |
//! |---|---|
//! | [`service`] | the API: [`Service`], [`Ctx`], [`Responder`], streams ([`StreamId`], [`Flow`]), [`Closed`] |
//! | [`server`] | the listener, accept (and its EMFILE pause), close, graceful shutdown, timers |
//! | [`conn`] | a connection's states and transitions (the diagram is there), interest and timeouts |
//! | [`dispatch`] | from the read buffer to the service (pipelining) and the answers into the output |
//! | [`request`] | head parsing (httparse) and our framing / anti-smuggling rules |
//! | [`body`] | incremental chunked decoding, strict chunk-extension and trailer grammar |
//! | [`response`] | [`Response`] and its serialisation (Date, Content-Length, Connection) |
//! | [`buffers`] | pooled buffers, so idle connections hold none; batched output |
//! | [`date`] | the Date header, formatted once per second, following the wall clock |
//! | [`mod@log`] | one line on stderr, never a panic |
//!
//! What the old Python server got wrong (`docs/10-side-by-side.md` introduces it) and how this
//! one avoids it:
//! - a client hanging up mid-request spun the loop: peer close (FIN, RST, HUP) is detected in
//!   every state, the fd leaves epoll *before* it is closed, its timer is cancelled, and a late
//!   answer to it is a no-op returning [`Closed`];
//! - keep-alive stalled 200 ms on Nagle + delayed ACK: TCP_NODELAY on every socket, and one
//!   `write` per batch of answers;
//! - slow handlers blocked everyone: a [`Responder`] can be kept and answered later, from a
//!   timer or a worker-pool result arriving through the reactor's `Remote`.

// Every `unsafe` block of the project is in `reactor::sys` (RELIABILITY.md lists them).
#![forbid(unsafe_code)]

pub mod body;
pub mod buffers;
pub mod conn;
pub mod date;
pub mod dispatch;
pub mod log;
pub mod request;
pub mod response;
pub mod server;
pub mod service;

use std::net::SocketAddr;
use std::time::Duration;

pub use log::log;
pub use request::{HttpError, Request};
pub use response::{Body, Response};
pub use server::{Server, ServerTimer};
pub use service::{
    Closed, ConnId, Ctx, Flow, Loop, Responder, ServerStats, Service, StreamId, SERVICE_TAG_LIMIT,
};

/// Size limits. Each has a clear answer when exceeded (see [`request`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest request head (request line + headers): 431 beyond. A chunked body's trailer
    /// fields count toward it too.
    pub max_header_bytes: usize,
    /// Most header fields in a request, trailer fields included: 431 beyond. Up to
    /// [`request::INLINE_HEADERS`] (the default) costs no allocation.
    pub max_headers: usize,
    /// Longest request line: 414 beyond.
    pub max_request_line: usize,
    /// Largest request body: 413 beyond (then close, without reading it).
    pub max_body_bytes: usize,
    /// Unsent output above which a connection stops being read (backpressure), until the
    /// client has read enough of it.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: request::INLINE_HEADERS,
            max_request_line: 8 * 1024,
            max_body_bytes: 1024 * 1024,
            max_output_bytes: 1024 * 1024,
        }
    }
}

/// Server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    /// SO_REUSEPORT, so several reactors (threads or processes) can share the port.
    pub reuse_port: bool,
    pub backlog: i32,
    pub limits: Limits,
    /// From a request's first byte to the end of its head (slowloris defence).
    pub header_timeout: Duration,
    /// Longest time without body bytes while a body is expected (and without write progress
    /// while output is pending).
    pub body_timeout: Duration,
    /// From accept, or the end of the last answer, to the next request's first byte.
    pub keepalive_timeout: Duration,
    /// Past this many open connections, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Close a connection after this many requests (0 = unlimited).
    pub max_requests_per_connection: u32,
    /// Graceful shutdown waits at most this long for in-flight answers.
    pub shutdown_timeout: Duration,
    /// Size of pooled read/output buffers.
    pub read_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            reuse_port: false,
            backlog: 1024,
            limits: Limits::default(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 100_000,
            max_requests_per_connection: 0,
            shutdown_timeout: Duration::from_secs(5),
            read_buffer: 16 * 1024,
        }
    }
}
