//! A TCP echo server in one thread: `cargo run -p tidings-reactor --example echo [port]`
//! (port from the argument, else $ECHO_PORT, else 7000). Try it with `nc 127.0.0.1 7000`.
use std::io::ErrorKind::WouldBlock;

use reactor::net::{ListenOptions, Listener, Stream};
use reactor::{Event, Handler, Interest, Reactor, Token};
use slab::Slab;

/// Tag of the listening socket; connections use their slab key as tag.
const LISTENER: usize = usize::MAX;

struct Conn {
    stream: Stream,
    token: Token,
    /// Bytes read but not yet written back (the peer is not reading fast enough).
    unsent: Vec<u8>,
}

struct Echo {
    listener: Listener,
    conns: Slab<Conn>,
}

impl Echo {
    /// The one way a connection ends: deregister first, *then* close. epoll tracks the open
    /// file, not the fd number, so closing first could leave a ghost registration behind.
    fn close(&mut self, r: &mut Reactor<()>, key: usize) {
        let conn = self.conns.remove(key);
        r.deregister(conn.token).unwrap();
        drop(conn.stream); // closes the fd
    }
}

impl Handler<()> for Echo {
    fn on_io(&mut self, r: &mut Reactor<()>, ev: Event) {
        if ev.tag == LISTENER {
            // Level-triggered: if we stopped early the listener would simply be reported again
            // next turn. We accept until WouldBlock anyway: fewer turns under a burst.
            while let Ok((stream, _peer)) = self.listener.accept() {
                let entry = self.conns.vacant_entry();
                // READABLE includes EPOLLRDHUP: we hear the peer's FIN even with nothing to read.
                let token = r.register(stream.fd(), Interest::READABLE, entry.key()).unwrap();
                entry.insert(Conn { stream, token, unsent: Vec::new() });
            }
            return;
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
}

fn main() -> std::io::Result<()> {
    let port = std::env::args().nth(1).or_else(|| std::env::var("ECHO_PORT").ok());
    let port: u16 = port.map_or(7000, |p| p.parse().expect("port must be a number"));
    let listener = Listener::bind(([127, 0, 0, 1], port).into(), ListenOptions::default())?;
    println!("echo server on {}", listener.local_addr());
    let mut r = Reactor::<()>::new()?; // also ignores SIGPIPE: a write to a closed peer is EPIPE
    r.register(listener.fd(), Interest::READABLE, LISTENER)?;
    r.run(&mut Echo { listener, conns: Slab::new() }) // sleeps in epoll_wait until a socket is ready
}
