//! The loop itself: one thread, one epoll instance, five phases per turn.
//!
//! The book walks through this file: `docs/01-one-turn.md` (the phases),
//! `docs/02-registration-and-tokens.md` (tokens, deregister before close) and
//! `docs/03-level-vs-edge.md` (the trigger mode).
//!
//! # One turn of the loop ([`Reactor::run_once`])
//! 1. **Wait.** Compute how long we may sleep: until the timer wheel's next deadline, rounded
//!    *up* to a whole millisecond (rounding down would turn "due in 0.4 ms" into a 0 ms timeout
//!    and spin until it is due), or forever when no timer is pending. Then `epoll_wait`. An
//!    idle server therefore sleeps in the kernel and wakes only for I/O, a due timer, a post
//!    from another thread or a signal: there is no polling interval anywhere.
//! 2. **Dispatch I/O.** For each ready source, check its token is still current (see
//!    *Tokens*), and call [`Handler::on_io`] with what is ready.
//! 3. **Signals**, in the same pass: when the self-pipe is among the ready sources, each signal
//!    number read from it goes to [`Handler::on_signal`] (see [`signals`](crate::signals)).
//! 4. **Run expired timers.** Read the clock again, advance the wheel to that millisecond and
//!    call [`Handler::on_timer`] for each timer due, one at a time, so a callback can cancel a
//!    timer due in the same tick.
//! 5. **Drain the cross-thread queue.** If the eventfd fired, take every message posted
//!    through a [`Remote`] and call [`Handler::on_message`] for each, in posting order.
//!
//! # Level-triggered, deliberately
//! Sources are registered level-triggered: `epoll_wait` reports a socket for as long as it is
//! readable (or writable), not only when it *becomes* so. The price is that a socket whose
//! output is flushed must have EPOLLOUT removed from its interest (one `epoll_ctl`), which
//! we only pay when a write was partial. The gain is robustness: a handler may read only part
//! of what is there (to be fair to other clients, or because the connection is paused by
//! backpressure) and will be told again next turn; with edge-triggered epoll, forgetting to
//! read until EAGAIN leaves a connection stuck forever, a classic bug.
//!
//! # Peer close and errors
//! Readable sources are registered with EPOLLRDHUP, so a peer's FIN is reported as
//! [`Ready::is_closed`]. A FIN is not the end of the connection: it comes with
//! [`Ready::is_readable`] (reading returns what is left, then 0), and requests sent before it
//! still deserve their answers. So on a FIN a handler keeps reading until `read` returns 0,
//! which level triggering reports on the next turns; EPOLLRDHUP earns its keep when reading is
//! *paused* (interest [`Interest::HANGUP`] alone, e.g. under backpressure), where it is the
//! only way to hear that the client left. A source that is reading sees the FIN as EPOLLIN
//! anyway.
//!
//! EPOLLHUP (both directions are shut, e.g. after an RST) and EPOLLERR are different: the
//! kernel reports them whatever the interest set, even an empty one, and a socket in that
//! state stays "ready" forever, only removing it from epoll stops the reports. Hence the
//! rules. A handler that sees [`Ready::is_error`] must deregister and close the source. One
//! that sees [`Ready::is_closed`] must make the reports stop: read on until `read` returns 0
//! (then close), or, if it is not reading, note the FIN and drop [`Interest::HANGUP`] from its
//! interest. EPOLLHUP cannot be dropped from an interest, so a source that reports it must be
//! closed.
//! The old Python server of tidings' first users (`docs/10-side-by-side.md`) spun at 100% CPU
//! on exactly this: a hung-up socket it never removed.
//!
//! # Deregister before close
//! epoll tracks the *open file description*, not the fd number (epoll(7)): a registration is
//! keyed on the (file, fd) pair and is removed automatically only when *every* descriptor of
//! that file is closed. If an fd is closed while still registered and the description lives on
//! (a `dup`, a child that inherited it across `fork`), epoll keeps reporting it under the old
//! token, and the registration can no longer be removed: `EPOLL_CTL_DEL` needs the fd number,
//! which is closed (or now names another file). A reused number does not collide with the
//! ghost (`EPOLL_CTL_ADD` of the newcomer succeeds: another file), but the ghost's events
//! still arrive with the old token. So the order is always: [`Reactor::deregister`], then
//! close (drop the [`Fd`](crate::sys::Fd)).
//!
//! # Tokens
//! A registration gets a [`Token`]: a slot in a slab plus a generation number. The slot makes
//! lookup O(1); the generation protects against this race: source A and B are both ready in
//! the same `epoll_wait` batch, A's handler closes B and registers a new source C, which
//! reuses B's slot. B's event, still in the batch, now names C's slot; the generation differs,
//! so it is recognised as stale and dropped instead of being delivered to C.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::remote::{Remote, Shared};
use crate::signals::SignalPipe;
use crate::sys;
use crate::wheel::{TimerId, TimerWheel};

/// What a source wants to be told about.
///
/// Reading includes hearing the peer's FIN (EPOLLRDHUP). A source whose reading is paused can
/// still ask for [`Interest::HANGUP`] alone, to learn that the client left. Once the FIN has
/// been seen, drop HANGUP too: level-triggered epoll reports it on every turn otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest(u32);

impl Interest {
    /// Nothing but errors and full hang-ups (EPOLLERR/EPOLLHUP are always reported).
    pub const NONE: Interest = Interest(0);
    /// The peer closed its sending side (FIN), without asking for data.
    pub const HANGUP: Interest = Interest(libc::EPOLLRDHUP as u32);
    pub const READABLE: Interest = Interest((libc::EPOLLIN | libc::EPOLLRDHUP) as u32);
    pub const WRITABLE: Interest = Interest(libc::EPOLLOUT as u32);
    pub const BOTH: Interest = Interest((libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLOUT) as u32);

    pub fn with(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }
    pub fn without(self, other: Interest) -> Interest {
        Interest(self.0 & !other.0)
    }
    pub fn is_readable(self) -> bool {
        self.0 & libc::EPOLLIN as u32 != 0
    }
    pub fn is_writable(self) -> bool {
        self.0 & libc::EPOLLOUT as u32 != 0
    }
    fn epoll_bits(self) -> u32 {
        self.0
    }
}

/// What epoll reported for a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready(u32);

impl Ready {
    pub fn is_readable(self) -> bool {
        self.0 & (libc::EPOLLIN | libc::EPOLLPRI) as u32 != 0
    }
    pub fn is_writable(self) -> bool {
        self.0 & libc::EPOLLOUT as u32 != 0
    }
    /// The peer closed its side (FIN: EPOLLRDHUP) or the connection is gone (EPOLLHUP).
    /// Data may still be readable before the end.
    pub fn is_closed(self) -> bool {
        self.0 & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0
    }
    /// The socket has a pending error (EPOLLERR), e.g. the peer sent RST.
    pub fn is_error(self) -> bool {
        self.0 & libc::EPOLLERR as u32 != 0
    }
}

/// A registration handle: slab slot + generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token {
    key: u32,
    gen: u32,
}

impl Token {
    fn to_u64(self) -> u64 {
        (self.gen as u64) << 32 | self.key as u64
    }
    fn from_u64(v: u64) -> Token {
        Token { key: v as u32, gen: (v >> 32) as u32 }
    }
    /// The slab slot (dense, reused after deregistration).
    pub fn key(self) -> usize {
        self.key as usize
    }
}

/// One readiness report delivered to [`Handler::on_io`].
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub token: Token,
    /// The value the owner gave at registration (typically the index of its own state).
    pub tag: usize,
    pub ready: Ready,
}

/// Counters the application can read (and export).
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopStats {
    /// Turns of the loop, i.e. returns from `epoll_wait`.
    pub iterations: u64,
    /// I/O events delivered to the handler.
    pub events: u64,
    pub timers_fired: u64,
    /// Turns in which the cross-thread eventfd was drained.
    pub remote_wakeups: u64,
    /// Messages delivered from other threads.
    pub remote_messages: u64,
    /// Messages posted by other threads (counted by the senders).
    pub remote_posts: u64,
    /// eventfd writes made by senders (posts minus coalesced ones).
    pub remote_eventfd_writes: u64,
    pub signals: u64,
    /// Time spent outside `epoll_wait`: dispatching I/O, timers and messages.
    pub busy_time: Duration,
    /// Sources currently registered (including the loop's own eventfd and signal pipe).
    pub sources: usize,
    /// Timers currently pending.
    pub timers_pending: usize,
}

/// The owner of the application state. The loop calls these methods; each gets the reactor
/// back so it can register sources, set timers or stop the loop.
///
/// `M` is the type of messages from other threads, `T` the payload of a timer: what the owner
/// wants back when it fires (an enum of its timer kinds, typically; `u64` by default).
pub trait Handler<M, T = u64> {
    /// A registered source is ready.
    fn on_io(&mut self, reactor: &mut Reactor<M, T>, event: Event);
    /// A timer set with [`Reactor::set_timer`] fired; `payload` is what was given then.
    fn on_timer(&mut self, _reactor: &mut Reactor<M, T>, _id: TimerId, _payload: T) {}
    /// A message posted through a [`Remote`] arrived.
    fn on_message(&mut self, _reactor: &mut Reactor<M, T>, _msg: M) {}
    /// A signal watched with [`Reactor::watch_signals`] arrived.
    fn on_signal(&mut self, _reactor: &mut Reactor<M, T>, _signo: i32) {}
}

enum SourceKind {
    User(usize),
    Waker,
    Signals,
}

struct Source {
    fd: RawFd,
    gen: u32,
    interest: Interest,
    kind: SourceKind,
}

/// The event loop. `M` is the type of message other threads can post to it, `T` the payload
/// its timers carry (given to [`Reactor::set_timer`], handed back to [`Handler::on_timer`]).
pub struct Reactor<M, T = u64> {
    epoll: sys::Fd,
    events: Vec<sys::EpollEvent>,
    sources: Slab<Source>,
    next_gen: u32,
    timers: TimerWheel<T>,
    start: Instant,
    remote: Arc<Shared<M>>,
    inbox: VecDeque<M>,
    signals: Option<SignalPipe>,
    stats: LoopStats,
    stopping: bool,
    /// The tick of the loop's last clock read (the wake-up, then the timer phase): a clock
    /// read the handlers can reuse.
    woke_tick: u64,
}

/// How many events one `epoll_wait` may return.
const EVENT_BATCH: usize = 1024;

impl<M, T: Clone> Reactor<M, T> {
    /// Creates the epoll instance and registers the cross-thread eventfd. Also sets SIGPIPE to
    /// "ignore", so writing to a socket the peer closed returns EPIPE instead of killing us.
    pub fn new() -> io::Result<Self> {
        sys::ignore_signal(libc::SIGPIPE)?;
        let mut r = Reactor {
            epoll: sys::epoll_create()?,
            events: sys::event_buffer(EVENT_BATCH),
            sources: Slab::new(),
            next_gen: 0,
            timers: TimerWheel::new(),
            start: Instant::now(),
            remote: Shared::new()?,
            inbox: VecDeque::new(),
            signals: None,
            stats: LoopStats::default(),
            stopping: false,
            woke_tick: 0,
        };
        let fd = r.remote.eventfd.raw();
        r.add_source(fd, Interest::READABLE, SourceKind::Waker)?;
        Ok(r)
    }

    /// A handle for other threads to post messages to this loop.
    pub fn remote(&self) -> Remote<M> {
        Remote::from_shared(self.remote.clone())
    }

    // ----- sources -------------------------------------------------------------------------

    /// Registers `fd` (level-triggered). `tag` comes back in
    /// every [`Event`] for this source. The caller keeps owning the fd and must
    /// [`deregister`](Self::deregister) it before closing it.
    pub fn register(&mut self, fd: RawFd, interest: Interest, tag: usize) -> io::Result<Token> {
        self.add_source(fd, interest, SourceKind::User(tag))
    }

    fn add_source(&mut self, fd: RawFd, interest: Interest, kind: SourceKind) -> io::Result<Token> {
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let entry = self.sources.vacant_entry();
        let token = Token { key: entry.key() as u32, gen };
        sys::epoll_ctl(&self.epoll, libc::EPOLL_CTL_ADD, fd, interest.epoll_bits(), token.to_u64())?;
        entry.insert(Source { fd, gen, interest, kind });
        Ok(token)
    }

    fn source(&self, token: Token) -> io::Result<&Source> {
        match self.sources.get(token.key()) {
            Some(s) if s.gen == token.gen => Ok(s),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "stale or unknown token")),
        }
    }

    /// Changes what a source is interested in. A no-op (no syscall) if nothing changes.
    pub fn reregister(&mut self, token: Token, interest: Interest) -> io::Result<()> {
        let s = self.source(token)?;
        if s.interest == interest {
            return Ok(());
        }
        sys::epoll_ctl(&self.epoll, libc::EPOLL_CTL_MOD, s.fd, interest.epoll_bits(), token.to_u64())?;
        self.sources[token.key()].interest = interest;
        Ok(())
    }

    /// Current interest of a source.
    pub fn interest(&self, token: Token) -> Option<Interest> {
        self.source(token).ok().map(|s| s.interest)
    }

    /// Removes a source from epoll. Do this *before* closing its fd (see module docs). Any
    /// event for it still queued in this turn's batch will be dropped.
    pub fn deregister(&mut self, token: Token) -> io::Result<()> {
        let fd = self.source(token)?.fd;
        self.sources.remove(token.key());
        sys::epoll_ctl(&self.epoll, libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    // ----- timers ----------------------------------------------------------------------------

    /// Milliseconds since the loop was created, rounded down: "now" as the wheel sees it.
    fn tick_now(&self) -> u64 {
        whole_ms(self.start.elapsed())
    }

    /// The first whole tick at or after `after` from now (rounded up: never early).
    fn deadline_tick(&self, after: Duration) -> u64 {
        // Saturating: `Duration + Duration` panics on overflow (e.g. `after = Duration::MAX`).
        let nanos = self.start.elapsed().saturating_add(after).as_nanos();
        nanos.div_ceil(1_000_000).min(u64::MAX as u128) as u64
    }

    /// Calls [`Handler::on_timer`] with `payload` once, no earlier than `after` from now.
    pub fn set_timer(&mut self, after: Duration, payload: T) -> TimerId {
        let deadline = self.deadline_tick(after);
        self.timers.insert(deadline, payload)
    }

    /// Calls [`Handler::on_timer`] with (a clone of) `payload` every `every` (at 1 ms
    /// granularity), first after `every`.
    pub fn set_repeating_timer(&mut self, every: Duration, payload: T) -> TimerId {
        let deadline = self.deadline_tick(every);
        let period = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        self.timers.insert_repeating(deadline, period, payload)
    }

    /// Calls [`Handler::on_timer`] with `payload` once the wheel reaches tick `deadline` (ms
    /// since the loop started, as given by [`now_ms`](Self::now_ms)).
    pub fn set_timer_at(&mut self, deadline: u64, payload: T) -> TimerId {
        self.timers.insert(deadline, payload)
    }

    /// Milliseconds since the loop started, as of the last clock read of the loop: the
    /// wake-up from `epoll_wait` during I/O dispatch, then the read before the timers run
    /// (phase 4), which messages from other threads see too. Costs no clock read, so it suits
    /// per-request bookkeeping (timestamps for timeouts, the Date header); it lags real time by
    /// the time spent in the current phase.
    pub fn now_ms(&self) -> u64 {
        self.woke_tick
    }

    /// Cancels a timer; returns false if it already fired or was cancelled (harmless).
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id).is_some()
    }

    /// How long `epoll_wait` may sleep: until the next timer work, rounded up to whole ms;
    /// `None` = no timer pending (sleep until something happens). `now`: the loop's clock if
    /// it was just read (the end of the previous turn, in [`run`](Self::run)).
    fn timer_timeout(&self, now: Option<Duration>) -> Option<Duration> {
        let deadline = self.timers.next_deadline()?;
        let due = Duration::from_millis(deadline);
        Some(due.saturating_sub(now.unwrap_or_else(|| self.start.elapsed())))
    }

    // ----- signals ---------------------------------------------------------------------------

    /// Delivers the given signals (e.g. SIGINT, SIGTERM) to [`Handler::on_signal`] through a
    /// self-pipe. Only one reactor per process may watch signals.
    pub fn watch_signals(&mut self, signals: &[i32]) -> io::Result<()> {
        if self.signals.is_some() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "this reactor already watches signals"));
        }
        let pipe = SignalPipe::install(signals)?;
        self.add_source(pipe.read_fd(), Interest::READABLE, SourceKind::Signals)?;
        self.signals = Some(pipe);
        Ok(())
    }

    // ----- running ---------------------------------------------------------------------------

    /// Asks [`run`](Self::run) to return after the current turn.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Runs turns until [`stop`](Self::stop) is called.
    pub fn run<H: Handler<M, T>>(&mut self, handler: &mut H) -> io::Result<()> {
        self.stopping = false;
        // The clock read that ends a turn also starts the next one: nothing runs in between.
        let mut now = None;
        while !self.stopping {
            now = Some(self.turn(handler, None, now)?.1);
        }
        Ok(())
    }

    /// One turn: wait (at most `max_wait`, and no longer than the next timer), dispatch I/O
    /// and signals, run due timers, drain cross-thread messages. Returns the number of I/O
    /// events delivered.
    pub fn run_once<H: Handler<M, T>>(
        &mut self,
        handler: &mut H,
        max_wait: Option<Duration>,
    ) -> io::Result<usize> {
        Ok(self.turn(handler, max_wait, None)?.0)
    }

    /// [`run_once`](Self::run_once), given the clock if it was just read; also returns the
    /// clock at the end of the turn.
    fn turn<H: Handler<M, T>>(
        &mut self,
        handler: &mut H,
        max_wait: Option<Duration>,
        now: Option<Duration>,
    ) -> io::Result<(usize, Duration)> {
        // Phase 1: wait.
        let wait = match (self.timer_timeout(now), max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout_ms = match wait {
            // Round up: a 0.3 ms wait becomes 1 ms, never 0 (which would spin until due).
            Some(d) => ceil_ms(d).min(i32::MAX as u64) as i32,
            None => -1,
        };
        let n = sys::epoll_wait(&self.epoll, &mut self.events, timeout_ms)?;
        let woke = self.start.elapsed();
        self.woke_tick = whole_ms(woke);
        self.stats.iterations += 1;

        // Phase 2: dispatch I/O.
        let mut delivered = 0;
        let mut remote_ready = false;
        for i in 0..n {
            let raw = self.events[i];
            let token = Token::from_u64(raw.u64);
            let ready = Ready(raw.events);
            let kind = match self.sources.get(token.key()) {
                Some(s) if s.gen == token.gen => match s.kind {
                    SourceKind::User(tag) => Some(tag),
                    SourceKind::Waker => {
                        remote_ready = true;
                        None
                    }
                    SourceKind::Signals => {
                        self.dispatch_signals(handler);
                        None
                    }
                },
                // Stale: the source was deregistered earlier in this batch.
                _ => None,
            };
            if let Some(tag) = kind {
                delivered += 1;
                handler.on_io(self, Event { token, tag, ready });
            }
        }
        self.stats.events += delivered as u64;

        // Phase 3: run expired timers, one at a time. The clock is read again: I/O dispatch
        // may have taken a while, and timer handlers should see the time they fire at.
        let now = self.tick_now();
        self.woke_tick = now;
        while let Some((id, payload)) = self.timers.poll(now) {
            self.stats.timers_fired += 1;
            handler.on_timer(self, id, payload);
        }

        // Phase 4: drain the cross-thread queue.
        if remote_ready {
            self.stats.remote_wakeups += 1;
            let mut inbox = std::mem::take(&mut self.inbox);
            self.remote.take_all(&mut inbox);
            while let Some(msg) = inbox.pop_front() {
                self.stats.remote_messages += 1;
                handler.on_message(self, msg);
            }
            self.inbox = inbox;
        }

        let end = self.start.elapsed();
        self.stats.busy_time += end.saturating_sub(woke);
        Ok((delivered, end))
    }

    fn dispatch_signals<H: Handler<M, T>>(&mut self, handler: &mut H) {
        let mut buf = [0u8; 32];
        let got = match &self.signals {
            Some(p) => p.read(&mut buf),
            None => 0,
        };
        for &signo in &buf[..got] {
            self.stats.signals += 1;
            handler.on_signal(self, signo as i32);
        }
    }

    /// A snapshot of the loop's counters.
    pub fn stats(&self) -> LoopStats {
        use std::sync::atomic::Ordering::Relaxed;
        LoopStats {
            remote_posts: self.remote.posts.load(Relaxed),
            remote_eventfd_writes: self.remote.eventfd_writes.load(Relaxed),
            sources: self.sources.len(),
            timers_pending: self.timers.len(),
            ..self.stats
        }
    }

    /// Number of registered sources, including the loop's own (eventfd, signal pipe).
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// Number of pending timers.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Time since the loop was created (the clock timers are measured on).
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Whole milliseconds in `d`, rounded down (without the 128-bit division of `as_millis`: this
/// runs several times per turn).
fn whole_ms(d: Duration) -> u64 {
    d.as_secs().saturating_mul(1000).saturating_add(u64::from(d.subsec_millis()))
}

/// Milliseconds in `d`, rounded up.
fn ceil_ms(d: Duration) -> u64 {
    d.as_secs().saturating_mul(1000).saturating_add(u64::from(d.subsec_nanos().div_ceil(1_000_000)))
}

impl<M, T> Drop for Reactor<M, T> {
    fn drop(&mut self) {
        // Refuse further posts; queued messages are dropped with the shared queue.
        self.remote.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_without_u128() {
        for d in [0, 1, 999_999, 1_000_000, 1_000_001, 1_999_999_999, 86_400_000_000_123] {
            let d = Duration::from_nanos(d);
            assert_eq!(whole_ms(d) as u128, d.as_millis(), "{d:?}");
            assert_eq!(ceil_ms(d) as u128, d.as_nanos().div_ceil(1_000_000), "{d:?}");
        }
        assert_eq!(ceil_ms(Duration::from_micros(300)), 1, "never 0 for a wait that is not 0");
        assert_eq!(ceil_ms(Duration::MAX), u64::MAX);
        assert_eq!(whole_ms(Duration::MAX), u64::MAX);
    }
}
