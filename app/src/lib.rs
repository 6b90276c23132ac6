//! # tidings: a long-poll message hub
//!
//! Publishers `POST /pub/{channel}`; subscribers `GET /sub/{channel}?since=S` and are either
//! answered at once (messages after S are retained) or held until the next publish. Built on
//! the tidings HTTP server and reactor, one reactor thread, a worker pool for `/work`.
//!
//! - [`hub`]: channels, retention, cursors, waiters: the model, with no I/O and no JSON.
//! - [`render`]: every body the app writes (the answers of `/sub`, `/pub`, `/stats`,
//!   `/metrics`, `/work`), from what the hub and the service describe.
//! - [`service`]: the HTTP routes on top of them.
//! - [`ws`]: `GET /ws`, the channels over WebSocket, and its frame codec.
//! - [`sse`]: `GET /sse/{channel}`, the same channels and cursors as Server-Sent Events.
//! - [`auth`]: access control: the publish token, signed subscribe tokens, CORS.
//! - [`config`]: command-line flags.
//! - [`metrics`]: the delivery-latency histogram per transport.
//! - [`dashboard`]: `GET /dashboard`, a live picture of the loop fed by a stream of `/stats`.
//! - [`json`]: the low-level JSON writers (strings, numbers, base64) [`render`] uses.
//! - [`redis`]: the Redis client of cluster mode (so far the RESP wire format).

// Every `unsafe` block of the project is in `reactor::sys` (RELIABILITY.md lists them).
#![forbid(unsafe_code)]

pub mod auth;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod hub;
pub mod json;
pub mod metrics;
pub mod redis;
pub mod render;
pub mod service;
pub mod sse;
pub mod ws;

use std::io;

use reactor::Reactor;

pub use config::{parse_args, Command, Options, USAGE};
pub use service::Tidings;

/// One line on stderr that never panics (see [`http::log()`]): with `--access-log` on, a
/// closed log pipe must not turn every request into a panic of the loop.
pub use http::log;

/// Runs the hub until SIGINT/SIGTERM (graceful stop) or an I/O error of the loop itself.
/// `on_ready` is called with the bound address once the server listens.
pub fn run(opts: Options, on_ready: impl FnOnce(std::net::SocketAddr)) -> io::Result<()> {
    let mut reactor = Reactor::new()?;
    reactor.watch_signals(&[libc::SIGINT, libc::SIGTERM])?;
    let service = Tidings::new(opts.clone(), reactor.remote())?;
    let mut server = http::Server::bind(opts.http_config(), service, &mut reactor)?;
    on_ready(server.local_addr());
    server.run(&mut reactor)
}
