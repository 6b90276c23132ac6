//! A TCP echo server in one thread: `cargo run -p tidings-reactor --example echo [port]`
//! (port from the argument, else $ECHO_PORT, else 7000). Try it with `nc 127.0.0.1 7000`.
//!
//! Chapter 0 of the book (`docs/00-smallest-server.md`) lists what a bare epoll loop gets
//! wrong; this example does each of those things the right way, in about a hundred lines.
//! `reactor/tests/echo_emfile.rs` runs it out of file descriptors.
use std::io::ErrorKind::WouldBlock;
use std::time::Duration;

use reactor::net::{ListenOptions, Listener, Stream};
use reactor::{Event, Handler, Interest, Reactor, TimerId, Token};
use slab::Slab;

/// Tag of the listening socket; connections use their slab key as tag.
const LISTENER: usize = usize::MAX;
/// Connections accepted per readiness report, so a flood of new clients cannot starve the
/// ones already connected (level-triggered: the rest are reported again next turn).
const ACCEPT_BATCH: usize = 64;
/// How long accepting pauses when the process is out of file descriptors.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

struct Conn {
    stream: Stream,
    token: Token,
    /// Bytes read but not yet written back (the peer is not reading fast enough).
    unsent: Vec<u8>,
}

pub struct Echo {
    listener: Listener,
    listener_token: Token,
    conns: Slab<Conn>,
    /// Set while accepting is paused after EMFILE: the timer that resumes it.
    accept_retry: Option<TimerId>,
}

impl Echo {
    /// Registers `listener` with `r` and returns the server, ready for [`Reactor::run`].
    pub fn new(r: &mut Reactor<()>, listener: Listener) -> std::io::Result<Echo> {
        let listener_token = r.register(listener.fd(), Interest::READABLE, LISTENER)?;
        Ok(Echo { listener, listener_token, conns: Slab::new(), accept_retry: None })
    }

    /// Connections currently open.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn accept_ready(&mut self, r: &mut Reactor<()>) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, _peer)) => {
                    let entry = self.conns.vacant_entry();
                    // READABLE includes EPOLLRDHUP: we hear the peer's FIN even with nothing to read.
                    let token = r.register(stream.fd(), Interest::READABLE, entry.key()).unwrap();
                    entry.insert(Conn { stream, token, unsent: Vec::new() });
                }
                Err(e) if e.kind() == WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Out of descriptors. The connection stays in the kernel's queue, so the
                    // listener stays readable: returning now would be called again at once,
                    // forever (100% CPU). Stop listening, and try again after a pause; a
                    // connection that closes meanwhile resumes accepting at once.
                    r.reregister(self.listener_token, Interest::NONE).unwrap();
                    self.accept_retry = Some(r.set_timer(ACCEPT_RETRY, 0));
                    return;
                }
                // ECONNABORTED (the client left while queued) and the like: try the next one.
                Err(_) => {}
            }
        }
    }

    fn resume_accept(&mut self, r: &mut Reactor<()>) {
        if let Some(timer) = self.accept_retry.take() {
            r.cancel_timer(timer); // harmless if it is the timer that just fired
            r.reregister(self.listener_token, Interest::READABLE).unwrap();
        }
    }

    /// The one way a connection ends: deregister first, *then* close. epoll tracks the open
    /// file, not the fd number, so closing first could leave a ghost registration behind.
    fn close(&mut self, r: &mut Reactor<()>, key: usize) {
        let conn = self.conns.remove(key);
        r.deregister(conn.token).unwrap();
        drop(conn.stream); // closes the fd
        self.resume_accept(r); // a descriptor is free again
    }
}

impl Handler<()> for Echo {
    fn on_io(&mut self, r: &mut Reactor<()>, ev: Event) {
        if ev.tag == LISTENER {
            return self.accept_ready(r);
        }
        let key = ev.tag;
        // EPOLLERR (e.g. the peer sent RST) is reported whatever our interest: drop the client.
        if ev.ready.is_error() {
            return self.close(r, key);
        }
        let conn = &mut self.conns[key];
        // A FIN (is_closed) comes with is_readable: we read what is left, a few KiB per
        // turn to be fair to other clients (level-triggered: we will be told again), until
        // read() returns 0. Closing on the FIN itself could drop data still unread.
        if ev.ready.is_readable() {
            conn.unsent.reserve(4096);
            match conn.stream.read_into(&mut conn.unsent) {
                Ok(0) => return self.close(r, key), // end of stream: the peer closed
                Ok(_) => {}
                Err(e) if e.kind() == WouldBlock => {}
                Err(_) => return self.close(r, key),
            }
        }
        // Write back what we can. A socket is almost always writable, so we only ask epoll
        // about writability (EPOLLOUT) while output is stuck, or it would wake us every turn.
        match conn.stream.write(&conn.unsent) {
            Ok(n) => drop(conn.unsent.drain(..n)),
            Err(e) if e.kind() == WouldBlock => {}
            Err(_) => return self.close(r, key),
        }
        // Backpressure: while the peer is not reading our output, stop reading its input.
        let want = if conn.unsent.is_empty() { Interest::READABLE } else { Interest::WRITABLE };
        r.reregister(conn.token, want).unwrap(); // no syscall if the interest is unchanged
    }

    /// The only timer: the end of an EMFILE pause.
    fn on_timer(&mut self, r: &mut Reactor<()>, _id: TimerId, _tag: u64) {
        self.resume_accept(r);
    }
}

#[allow(dead_code)] // the test that includes this file runs `Echo` without `main`
fn main() -> std::io::Result<()> {
    let port = std::env::args().nth(1).or_else(|| std::env::var("ECHO_PORT").ok());
    let port: u16 = match port.map(|p| p.parse()) {
        None => 7000,
        Some(Ok(p)) => p,
        Some(Err(_)) => {
            eprintln!("echo: the port must be a number from 0 to 65535");
            std::process::exit(2);
        }
    };
    let listener = Listener::bind(([127, 0, 0, 1], port).into(), ListenOptions::default())?;
    println!("echo server on {}", listener.local_addr());
    let mut r = Reactor::<()>::new()?; // also ignores SIGPIPE: a write to a closed peer is EPIPE
    let mut echo = Echo::new(&mut r, listener)?;
    r.run(&mut echo) // sleeps in epoll_wait until a socket is ready
}
