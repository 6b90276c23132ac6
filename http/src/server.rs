//! The server: the listener, accepting (and pausing on EMFILE), closing, graceful shutdown,
//! and the reactor's callbacks, which it routes to the connections, the timers and the
//! service.
//!
//! How one request goes, and where to read it:
//!
//! 1. `Server::accept_ready` (here): the listener is readable; `accept4` in a loop until
//!    EAGAIN or `ACCEPT_BATCH` (256) connections, whichever comes first (the listener is
//!    level-triggered, so the rest are reported next turn, after the connected clients are
//!    served: a flood of new ones cannot starve them); TCP_NODELAY on each socket, register
//!    it (readable), start the keep-alive clock.
//! 2. `conn_ready` ([`conn`](crate::conn)): the socket is readable; one read appends to the
//!    connection's read buffer (taken from the pool only now).
//! 3. `dispatch_buffered` ([`dispatch`](crate::dispatch)): parse as many complete requests as the
//!    buffer holds (pipelining), and call the [`Service`] for each (for at most 2 ms of a
//!    turn: a long batch goes on next turn, after the other clients).
//! 4. `settle` ([`conn`](crate::conn)): one `write` for the whole batch of answers; then
//!    the connection's next state decides its epoll interest and timer.
//! 5. The connection goes idle: buffers back to the pool, keep-alive timer running.
//!
//! Closing is one function, `Server::close`, whatever the cause: deregister from epoll,
//! cancel the connection's timer, return buffers, close the fd (by dropping the stream), and
//! only then tell the service if it held something on the connection.
//!
//! Timers are typed ([`ServerTimer`]): one per connection (its current timeout), the accept
//! retry after EMFILE, the shutdown deadline, and the service's own, which carry its payload.

use std::io;
use std::time::Duration;

use reactor::net::{ListenOptions, Listener, Stream};
use reactor::{Event, Handler, Interest, TimerId, Token};
use slab::Slab;

use crate::buffers::BufferPool;
use crate::conn::Conn;
use crate::date::DateCache;
use crate::log::log;
use crate::response::HeadCache;
use crate::service::{Ctx, Loop, ServerStats, Service, SERVICE_TAG_BIT};
use crate::{Config, Limits};

/// What a timer of the server's loop is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTimer<T> {
    /// The timeout of the connection with this slab key (checked against the timer it holds,
    /// so a timer outliving its connection does nothing).
    Conn(usize),
    /// Accepting paused on EMFILE/ENFILE: try again.
    AcceptRetry,
    /// The connection with this slab key and generation stopped dispatching its pipelined
    /// requests when the turn's budget ran out: go on (see `dispatch_buffered`).
    /// (Key and generation in 32 bits each: the timer's payload stays as small as `Conn`'s.)
    Resume(u32, u32),
    /// The graceful shutdown's deadline: close what is left and stop.
    Shutdown,
    /// The service's own timer ([`Ctx::set_timer`]).
    Service(T),
}

/// The registration tag of the listener (connections use their slab key).
const LISTENER: usize = usize::MAX;
/// How long accepting pauses after EMFILE/ENFILE before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Connections accepted per readiness event, so a flood cannot starve existing clients.
const ACCEPT_BATCH: usize = 256;

/// Everything but the service: the part a [`Ctx`] gives the service access to.
pub struct ServerState<S: Service> {
    pub(crate) config: Config,
    listener: Option<Listener>,
    listener_token: Option<Token>,
    accept_paused: bool,
    pub(crate) conns: Slab<Conn<S::Note>>,
    next_gen: u32,
    pub(crate) pool: BufferPool,
    pub(crate) date: DateCache,
    /// The end of the last head, for the next one of the same shape.
    pub(crate) heads: HeadCache,
    pub(crate) stats: ServerStats,
    /// Connections the service answered or wrote to outside their own processing: they
    /// need a flush and may have pipelined requests waiting.
    pub(crate) ready: Vec<usize>,
    /// The connection whose requests are being dispatched right now.
    pub(crate) dispatching: Option<usize>,
    pub(crate) shutdown_requested: bool,
    pub(crate) shutting_down: bool,
    pub(crate) local_addr: std::net::SocketAddr,
}

/// The HTTP server: a [`reactor::Handler`] that owns the connections and the service.
pub struct Server<S: Service> {
    pub(crate) core: ServerState<S>,
    pub(crate) service: S,
}

impl<S: Service> Server<S> {
    /// Binds the listener and registers it with `reactor`.
    pub fn bind(config: Config, service: S, reactor: &mut Loop<S>) -> io::Result<Server<S>> {
        let opts = ListenOptions { reuse_port: config.reuse_port, backlog: config.backlog };
        let listener = Listener::bind(config.addr, opts)?;
        let token = reactor.register(listener.fd(), Interest::READABLE, LISTENER)?;
        let core = ServerState {
            local_addr: listener.local_addr(),
            pool: BufferPool::new(config.read_buffer, 1024),
            date: DateCache::new(),
            heads: HeadCache::default(),
            listener: Some(listener),
            listener_token: Some(token),
            accept_paused: false,
            conns: Slab::new(),
            next_gen: 0,
            stats: ServerStats::new(),
            ready: Vec::new(),
            dispatching: None,
            shutdown_requested: false,
            shutting_down: false,
            config,
        };
        Ok(Server { core, service })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.core.local_addr
    }

    pub fn service(&self) -> &S {
        &self.service
    }

    pub fn service_mut(&mut self) -> &mut S {
        &mut self.service
    }

    pub fn stats(&self) -> &ServerStats {
        &self.core.stats
    }

    /// Runs the loop until a graceful shutdown completes (or `reactor.stop()`).
    pub fn run(&mut self, reactor: &mut Loop<S>) -> io::Result<()> {
        let mut ctx = Ctx { reactor, core: &mut self.core };
        self.service.on_start(&mut ctx);
        self.apply_service_effects(reactor);
        reactor.run(self)
    }

    // ----- accept ----------------------------------------------------------------------------

    fn accept_ready(&mut self, r: &mut Loop<S>) {
        for _ in 0..ACCEPT_BATCH {
            if self.core.conns.len() >= self.core.config.max_connections {
                // Full: leave new connections in the kernel's backlog until one closes.
                self.pause_accept(r, false);
                return;
            }
            let Some(listener) = &self.core.listener else { return };
            match listener.accept() {
                Ok((stream, _peer)) => {
                    if let Err(e) = self.add_conn(r, stream) {
                        log(format_args!("cannot register connection: {e}"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ECONNABORTED)) => continue,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    // Out of descriptors. The pending connection stays queued, so the listener
                    // stays readable: polling it now would spin at 100% CPU. Stop listening for
                    // a while instead; closing connections also resumes accepting.
                    self.pause_accept(r, true);
                    return;
                }
                Err(e) => {
                    log(format_args!("accept failed: {e}"));
                    return;
                }
            }
        }
    }

    fn pause_accept(&mut self, r: &mut Loop<S>, retry_on_timer: bool) {
        if let Some(t) = self.core.listener_token {
            if !self.core.accept_paused {
                let _ = r.reregister(t, Interest::NONE);
                self.core.accept_paused = true;
                if retry_on_timer {
                    r.set_timer(ACCEPT_RETRY, ServerTimer::AcceptRetry);
                }
            }
        }
    }

    fn resume_accept(&mut self, r: &mut Loop<S>) {
        if self.core.accept_paused {
            if let Some(t) = self.core.listener_token {
                let _ = r.reregister(t, Interest::READABLE);
            }
            self.core.accept_paused = false;
        }
    }

    fn add_conn(&mut self, r: &mut Loop<S>, stream: Stream) -> io::Result<()> {
        // Without TCP_NODELAY a small answer can wait for the ACK of the previous one, which
        // the client may delay up to 200 ms: the keep-alive stall of the old server.
        stream.set_nodelay()?;
        let entry = self.core.conns.vacant_entry();
        let key = entry.key();
        let token = r.register(stream.fd(), Interest::READABLE, key)?;
        self.core.next_gen = self.core.next_gen.wrapping_add(1);
        entry.insert(Conn::new(stream, token, self.core.next_gen, r.now_ms()));
        self.core.stats.accepted_total += 1;
        self.core.stats.connections = self.core.conns.len();
        self.core.update_timer(r, key);
        Ok(())
    }

    // ----- close -----------------------------------------------------------------------------

    /// The only way a connection ends. Deregister first, then close (see reactor docs).
    pub(crate) fn close(&mut self, r: &mut Loop<S>, key: usize, by_peer: bool) {
        let Some(mut conn) = self.core.conns.try_remove(key) else { return };
        let _ = r.deregister(conn.token);
        if let Some((id, _)) = conn.timer.take() {
            r.cancel_timer(id);
        }
        conn.out.release(&mut self.core.pool);
        if conn.rbuf.capacity() > 0 {
            self.core.pool.give(std::mem::take(&mut conn.rbuf));
        }
        if by_peer {
            self.core.stats.closed_by_peer_total += 1;
        }
        self.core.stats.connections = self.core.conns.len();
        let held = conn.phase.take_held();
        let id = conn.id(key);
        drop(conn); // closes the fd, after deregistration
        if let Some(note) = held {
            let mut ctx = Ctx { reactor: r, core: &mut self.core };
            self.service.on_close(&mut ctx, id, note);
        }
        if !self.core.shutting_down {
            self.resume_accept(r);
        }
        self.maybe_finish_shutdown(r);
    }

    // ----- after every service callback ------------------------------------------------------

    /// Applies what the service did in a callback: settles the connections it answered or
    /// wrote to outside their own processing (a flush, pipelined requests), and starts the
    /// shutdown it asked for. Runs after every callback.
    fn apply_service_effects(&mut self, r: &mut Loop<S>) {
        let mut ctx = Ctx { reactor: r, core: &mut self.core };
        self.service.after_callback(&mut ctx);
        self.revisit_ready(r);
        if self.core.shutdown_requested && !self.core.shutting_down {
            self.begin_shutdown(r);
        }
    }

    fn revisit_ready(&mut self, r: &mut Loop<S>) {
        while let Some(key) = self.core.ready.pop() {
            if let Some(conn) = self.core.conns.get_mut(key) {
                conn.in_ready = false;
            }
            self.settle(r, key);
        }
    }

    // ----- shutdown --------------------------------------------------------------------------

    fn begin_shutdown(&mut self, r: &mut Loop<S>) {
        self.core.shutting_down = true;
        if let Some(t) = self.core.listener_token.take() {
            let _ = r.deregister(t);
        }
        self.core.listener = None; // closes the listening socket
        let idle: Vec<usize> = self
            .core
            .conns
            .iter()
            .filter(|(_, c)| !c.phase.kind().held_by_service() && c.out.is_empty() && c.rbuf.is_empty())
            .map(|(k, _)| k)
            .collect();
        for key in idle {
            self.close(r, key, false);
        }
        r.set_timer(self.core.config.shutdown_timeout, ServerTimer::Shutdown);
        let mut ctx = Ctx { reactor: r, core: &mut self.core };
        self.service.on_shutdown(&mut ctx);
        self.revisit_ready(r);
        self.maybe_finish_shutdown(r);
    }

    fn maybe_finish_shutdown(&mut self, r: &mut Loop<S>) {
        if self.core.shutting_down && self.core.conns.is_empty() {
            r.stop();
        }
    }
}

impl<S: Service> Handler<S::Msg, ServerTimer<S::Timer>> for Server<S> {
    fn on_io(&mut self, r: &mut Loop<S>, ev: Event) {
        if ev.tag == LISTENER {
            self.accept_ready(r);
        } else if ev.tag & SERVICE_TAG_BIT != 0 {
            let mut ctx = Ctx { reactor: r, core: &mut self.core };
            self.service.on_io(&mut ctx, ev.tag & !SERVICE_TAG_BIT, ev);
        } else {
            self.conn_ready(r, ev.tag, ev);
        }
        self.apply_service_effects(r);
    }

    fn on_timer(&mut self, r: &mut Loop<S>, id: TimerId, timer: ServerTimer<S::Timer>) {
        match timer {
            ServerTimer::Conn(key) => self.conn_timer(r, key, id),
            ServerTimer::Resume(key, gen) => {
                let key = key as usize;
                if let Some(conn) = self.core.conns.get_mut(key).filter(|c| c.gen == gen) {
                    conn.resuming = false;
                    self.settle(r, key);
                }
            }
            ServerTimer::AcceptRetry => {
                if !self.core.shutting_down {
                    self.resume_accept(r);
                    self.accept_ready(r);
                }
            }
            ServerTimer::Shutdown => {
                let keys: Vec<usize> = self.core.conns.iter().map(|(k, _)| k).collect();
                for key in keys {
                    self.close(r, key, false);
                }
                r.stop();
            }
            ServerTimer::Service(t) => {
                let mut ctx = Ctx { reactor: r, core: &mut self.core };
                self.service.on_timer(&mut ctx, id, t);
            }
        }
        self.apply_service_effects(r);
    }

    fn on_message(&mut self, r: &mut Loop<S>, msg: S::Msg) {
        let mut ctx = Ctx { reactor: r, core: &mut self.core };
        self.service.on_message(&mut ctx, msg);
        self.apply_service_effects(r);
    }

    fn on_signal(&mut self, r: &mut Loop<S>, signo: i32) {
        let mut ctx = Ctx { reactor: r, core: &mut self.core };
        self.service.on_signal(&mut ctx, signo);
        self.apply_service_effects(r);
    }
}

impl Limits {
    /// The most bytes a connection's read buffer may hold: a full head and a full body.
    pub(crate) fn read_cap(&self) -> usize {
        // Saturating: the limits are the operator's (e.g. `--max-message` of any size).
        self.max_header_bytes.saturating_add(self.max_body_bytes).saturating_add(4096)
    }
}
