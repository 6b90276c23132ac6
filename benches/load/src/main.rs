//! `tidings-load`: the project's own load generator, on the project's own reactor.
//!
//! Four modes (see [`args::USAGE`] or `tidings-load --help`):
//! * `http`: requests/s and latency percentiles of GET on N keep-alive (optionally pipelined)
//!   connections or one connection per request, with the server's CPU time per request;
//! * `longpoll`: N held polls: the server's idle CPU and RSS per held poll, publish-to-delivery
//!   latency, and how fast it forgets clients that vanish (RST);
//! * `fanout`: one publish to N subscribers of one channel, and a burst of K messages that
//!   every subscriber must receive exactly once, in order;
//! * `ws`: N WebSockets subscribed to one channel: idle CPU and RSS per socket, the
//!   delivery of one publish to all of them (p50, p99, last), and messages/s to M sockets at
//!   a steady publish rate.
//! * `sse`: N Server-Sent Events streams: idle CPU and RSS per stream, one publish's delivery
//!   to all of them, and messages/s to M streams at a steady publish rate.
//!
//! The steady-rate phase of `sse` and `ws` (a paced, pipelined publisher and the count of
//! what every subscriber read) is one piece of code: [`steady`].
//!
//! One reactor thread, no async runtime: run it pinned to a core of its own
//! (`taskset -c 1 tidings-load ...`) beside a server pinned to another.

mod args;
mod client;
mod common;
mod fanout;
mod hist;
mod http_mode;
mod longpoll;
mod parse;
mod sse;
mod steady;
mod ws;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cmd = match args::parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tidings-load: {e}");
            return ExitCode::from(2);
        }
    };
    // Thousands of sockets: take every descriptor the hard limit allows.
    let nofile = test_support::limits::raise_nofile_limit().unwrap_or(1024);
    let need = match &cmd {
        args::Command::Help => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        args::Command::Http(o) => o.connections,
        args::Command::Longpoll(o) => o.n,
        args::Command::Fanout(o) => o.n,
        args::Command::Ws(o) => o.n,
        args::Command::Sse(o) => o.n,
    };
    if (need as u64) + 64 > nofile {
        eprintln!(
            "tidings-load: {need} connections need more file descriptors than the limit allows ({nofile}; \
             raise the hard limit with `ulimit -Hn`)"
        );
        return ExitCode::from(1);
    }
    let result = match cmd {
        args::Command::Help => Ok(()),
        args::Command::Http(o) => http_mode::run(o),
        args::Command::Longpoll(o) => longpoll::run(o),
        args::Command::Fanout(o) => fanout::run(o),
        args::Command::Ws(o) => ws::run(o),
        args::Command::Sse(o) => sse::run(o),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidings-load: {e}");
            ExitCode::from(1)
        }
    }
}
