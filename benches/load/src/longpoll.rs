//! `tidings-load longpoll`: what N held polls cost the server, and how fast it answers them.
//!
//! Phases, each with a deadline:
//! 1. **Baseline**: read the server's RSS and `/stats` (`waiting_polls` before we start).
//! 2. **Open**: N connections (paced: at most [`OPEN_BATCH`] new connects per millisecond and
//!    [`MAX_CONNECTING`] unfinished, so the listen backlog never overflows), each sending
//!    `GET /sub/{prefix}{i}?since=0&timeout=300` on a channel nobody has published to: the
//!    server holds it. Then poll `/stats` every 20 ms until all N are waiting.
//! 3. **Idle**: nothing is sent for `--idle` seconds; the server's CPU time and loop wake-ups
//!    over the window say whether holding costs anything (it should not: no polling interval).
//!    RSS per held poll = (RSS now - RSS at baseline) / N.
//! 4. **Publish**: M publishes, to M distinct channels spread over the N, one at a time on a
//!    connection of their own, 1 ms apart. Latency = from the POST being written to the last
//!    byte of that channel's subscriber's 200 (both the publish acknowledgement and the
//!    delivery must arrive before the next publish). The publish latency alone (POST
//!    written -> its 200 read) is reported beside it.
//! 5. **Drain**: every subscriber connection is reset (RST); time until `/stats` shows the
//!    waiting polls back at the baseline: how fast the server forgets clients that vanish.

use std::time::{Duration, Instant};

use reactor::{Reactor, TimerId};

use crate::args::LongpollOpts;
use crate::client::{get_request, post_request, Client, Driver, Fail, Key, Pool};
use crate::common::{bytes, cannot_connect, ms, us, Ctl, Errors, PhaseDeadline, StatsGroup, StatsSum};
use crate::hist::Histogram;
use crate::parse::{json_u64, messages, Response};
use test_support::procfs::Cpu;

/// New connects started per millisecond while opening.
pub const OPEN_BATCH: usize = 256;
/// Connects allowed in progress at once while opening.
pub const MAX_CONNECTING: usize = 512;
/// How long one publish may take (acknowledgement and delivery) before it counts as a timeout.
/// How long to wait for the server to notice the reset clients.
const DRAIN_WAIT: Duration = Duration::from_secs(10);
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

const OPEN: u64 = 1;
const STATS_POLL: u64 = 2;
const IDLE_END: u64 = 3;
const PUB_NEXT: u64 = 4;
const DEADLINE: u64 = 5;
const PUB_TIMEOUT: u64 = 1 << 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Pub,
    Sub(usize),
}

pub struct LpConn {
    role: Role,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Baseline,
    Opening,
    Holding,
    Idle,
    IdleEnd,
    Publishing,
    Draining,
    Done,
}

struct Publish {
    k: usize,
    idx: usize,
    posted: Instant,
    acked: bool,
    delivered: Option<Instant>,
    timer: TimerId,
}

struct Lp {
    o: LongpollOpts,
    host: String,
    phase: Phase,
    stats: StatsGroup,
    publ: Ctl,
    subs: Vec<Option<Key>>,
    opened: usize,
    subs_failed: usize,
    base_waiting: u64,
    errors: Errors,
    fatal: Option<String>,
    ever_connected: bool,
    deadline: PhaseDeadline,
    rss_before: u64,
    rss_held: u64,
    rss_idle_end: u64,
    t_open: Instant,
    held_after: Duration,
    idle_t0: Instant,
    idle_len: Duration,
    cpu0: Option<Cpu>,
    cpu1: Option<Cpu>,
    wake0: Option<u64>,
    wake1: Option<u64>,
    next_k: usize,
    cur: Option<Publish>,
    hist: Histogram,
    /// POST written -> its acknowledgement read.
    ack_hist: Histogram,
    drain_t0: Instant,
    close_ns: u64,
    drain_ns: Option<u64>,
}

impl Lp {
    fn fatal(&mut self, r: &mut Reactor<()>, msg: String) {
        if self.fatal.is_none() {
            self.fatal = Some(msg);
        }
        self.phase = Phase::Done;
        r.stop();
    }

    fn stats_request(&mut self, pool: &mut Pool<LpConn>, r: &mut Reactor<()>) {
        match self.stats.read() {
            Ok(sum) => self.on_stats(pool, r, sum),
            Err(e) => self.fatal(r, e),
        }
    }

    fn sub_target(&self, i: usize) -> String {
        format!("/sub/{}{i}?since=0&timeout=300", self.o.prefix)
    }

    fn held(&self) -> usize {
        self.o.n - self.subs_failed
    }

    fn open_more(&mut self, pool: &mut Pool<LpConn>, r: &mut Reactor<()>) {
        let budget = OPEN_BATCH.min(MAX_CONNECTING.saturating_sub(pool.connecting()));
        for _ in 0..budget {
            if self.opened == self.o.n {
                break;
            }
            let i = self.opened;
            self.opened += 1;
            match pool.connect(r, LpConn { role: Role::Sub(i) }) {
                Ok(key) => {
                    self.subs[i] = Some(key);
                    let req = get_request(&self.host, &self.sub_target(i), false);
                    pool.send(r, key, &req);
                }
                Err(e) => {
                    self.errors.connect += 1;
                    self.subs_failed += 1;
                    if !self.ever_connected {
                        return self.fatal(r, cannot_connect(pool.addr(), &e));
                    }
                }
            }
        }
        if self.opened < self.o.n {
            r.set_timer(Duration::from_millis(1), OPEN);
        } else {
            self.phase = Phase::Holding;
            self.stats_request(pool, r);
        }
    }

    fn on_stats(&mut self, pool: &mut Pool<LpConn>, r: &mut Reactor<()>, sum: StatsSum) {
        let StatsSum { waiting, wakeups } = sum;
        match self.phase {
            Phase::Baseline => {
                self.base_waiting = waiting;
                self.phase = Phase::Opening;
                self.t_open = Instant::now();
                eprintln!("longpoll: opening {} polls ({} already waiting on the server)", self.o.n, waiting);
                let hold = Duration::from_secs(30) + Duration::from_millis(2 * self.o.n as u64);
                self.deadline.set(r, DEADLINE, hold, "holding every poll");
                self.open_more(pool, r);
            }
            Phase::Holding => {
                if self.held() == 0 {
                    return self.fatal(r, "no poll could be opened".into());
                }
                if waiting < self.base_waiting + self.held() as u64 {
                    r.set_timer(Duration::from_millis(20), STATS_POLL);
                    return;
                }
                self.deadline.clear(r);
                self.held_after = self.t_open.elapsed();
                eprintln!(
                    "longpoll: {} polls held after {:.2} s; idle for {:.1} s",
                    self.held(),
                    self.held_after.as_secs_f64(),
                    self.o.idle.as_secs_f64()
                );
                self.rss_held = self.o.pids.rss_bytes().unwrap_or(0);
                self.wake0 = wakeups;
                self.cpu0 = self.o.pids.cpu();
                self.idle_t0 = Instant::now();
                self.phase = Phase::Idle;
                r.set_timer(self.o.idle, IDLE_END);
            }
            Phase::IdleEnd => {
                self.deadline.clear(r);
                self.wake1 = wakeups;
                self.phase = Phase::Publishing;
                eprintln!("longpoll: publishing to {} channels, one at a time", self.o.publish);
                self.publish_next(pool, r);
            }
            Phase::Draining => {
                if waiting <= self.base_waiting {
                    self.drain_ns = Some(self.drain_t0.elapsed().as_nanos() as u64);
                    self.finish(pool, r);
                } else {
                    r.set_timer(Duration::from_millis(1), STATS_POLL);
                }
            }
            _ => {}
        }
    }

    fn publish_next(&mut self, pool: &mut Pool<LpConn>, r: &mut Reactor<()>) {
        if self.next_k >= self.o.publish {
            return self.start_drain(pool, r);
        }
        // The publisher's connect must not count in the first delivery: connect first.
        match self.publ.key.and_then(|k| pool.get(k)) {
            Some(c) if c.is_connected() => {}
            Some(_) => {
                r.set_timer(Duration::from_millis(1), PUB_NEXT);
                return;
            }
            None => {
                match pool.connect(r, LpConn { role: Role::Pub }) {
                    Ok(key) => self.publ.key = Some(key),
                    Err(e) => return self.fatal(r, cannot_connect(pool.addr(), &e)),
                }
                r.set_timer(Duration::from_millis(1), PUB_NEXT);
                return;
            }
        }
        let (n, m) = (self.o.n, self.o.publish);
        // Skip channels whose subscriber is gone (already counted as errors).
        while self.next_k < m && self.subs[self.next_k * n / m].is_none() {
            self.next_k += 1;
        }
        if self.next_k >= m {
            return self.start_drain(pool, r);
        }
        let k = self.next_k;
        self.next_k += 1;
        let idx = k * n / m;
        let body = format!("m{k}");
        let req = post_request(&self.host, &format!("/pub/{}{idx}", self.o.prefix), body.as_bytes());
        if let Err(e) = self.publ.send(pool, r, &req, 1, || LpConn { role: Role::Pub }) {
            return self.fatal(r, cannot_connect(pool.addr(), &e));
        }
        let posted = Instant::now();
        let timer = r.set_timer(PUBLISH_TIMEOUT, PUB_TIMEOUT + k as u64);
        self.cur = Some(Publish { k, idx, posted, acked: false, delivered: None, timer });
    }

    /// Both the acknowledgement and the delivery of the current publish are in: record it
    /// and schedule the next one 1 ms later.
    fn maybe_published(&mut self, r: &mut Reactor<()>) {
        let Some(p) = &self.cur else { return };
        let Some(at) = p.delivered else { return };
        if !p.acked {
            return;
        }
        self.hist.record_duration(at.duration_since(p.posted));
        r.cancel_timer(p.timer);
        self.cur = None;
        r.set_timer(Duration::from_millis(1), PUB_NEXT);
    }

    fn on_sub_response(
        &mut self,
        pool: &mut Pool<LpConn>,
        r: &mut Reactor<()>,
        key: Key,
        i: usize,
        resp: &Response<'_>,
    ) {
        let now = Instant::now();
        if let Some(p) = self.cur.as_mut().filter(|p| p.idx == i && p.delivered.is_none()) {
            p.delivered = Some(now);
            let want = format!("m{}", p.k);
            if resp.status != 200 {
                self.errors.status += 1;
            } else if !matches!(messages(resp.body).as_deref(), Ok([(1, data)]) if *data == want.as_bytes()) {
                self.errors.check += 1;
            }
            return self.maybe_published(r);
        }
        // An answer nobody published for: the hold ended early (timeout, 503, shutdown...).
        if resp.status == 200 {
            self.errors.check += 1;
        } else {
            self.errors.status += 1;
        }
        if self.phase <= Phase::Holding {
            self.subs_failed += 1;
        }
        self.subs[i] = None;
        pool.close(r, key, true);
    }

    fn on_pub_ack(&mut self, r: &mut Reactor<()>, resp: &Response<'_>) {
        let Some(p) = self.cur.as_mut() else { return };
        if resp.status != 200 {
            self.errors.status += 1;
        } else {
            // Exactly one poll waits on each channel (in a cluster, maybe on another node
            // than the one that took the publish, which counts only its own).
            let cluster = self.o.pids.0.len() > 1;
            match json_u64(resp.body, "subscribers") {
                Some(1) => {}
                Some(0) if cluster => {}
                _ => self.errors.check += 1,
            }
        }
        p.acked = true;
        self.ack_hist.record_duration(p.posted.elapsed());
        self.maybe_published(r);
    }

    fn start_drain(&mut self, pool: &mut Pool<LpConn>, r: &mut Reactor<()>) {
        self.phase = Phase::Draining;
        eprintln!("longpoll: resetting {} connections", self.held());
        self.drain_t0 = Instant::now();
        for slot in self.subs.iter_mut() {
            if let Some(key) = slot.take() {
                pool.close(r, key, true);
            }
        }
        self.close_ns = self.drain_t0.elapsed().as_nanos() as u64;
        self.deadline.set(r, DEADLINE, DRAIN_WAIT, "draining the reset polls");
        self.stats_request(pool, r);
    }

    fn finish(&mut self, pool: &mut Pool<LpConn>, r: &mut Reactor<()>) {
        self.deadline.clear(r);
        self.phase = Phase::Done;
        pool.close_all(r, true);
        r.stop();
    }
}

impl Driver<LpConn> for Lp {
    fn on_connected(&mut self, _pool: &mut Pool<LpConn>, _r: &mut Reactor<()>, _key: Key) {
        self.ever_connected = true;
    }

    fn on_response(&mut self, pool: &mut Pool<LpConn>, r: &mut Reactor<()>, key: Key, resp: &Response<'_>) {
        let Some(role) = pool.get(key).map(|c| c.data.role) else { return };
        match role {
            Role::Pub => {
                self.publ.answered();
                self.on_pub_ack(r, resp);
            }
            Role::Sub(i) => self.on_sub_response(pool, r, key, i, resp),
        }
    }

    fn on_fail(&mut self, pool: &mut Pool<LpConn>, r: &mut Reactor<()>, _key: Key, data: LpConn, fail: Fail) {
        if let Fail::Connect(e) = &fail {
            if !self.ever_connected {
                return self.fatal(r, cannot_connect(pool.addr(), e));
            }
        }
        match data.role {
            Role::Pub => {
                if self.publ.lost() > 0 {
                    self.errors.count(&fail);
                    if let Some(p) = self.cur.take() {
                        r.cancel_timer(p.timer);
                        r.set_timer(Duration::from_millis(1), PUB_NEXT);
                    }
                }
            }
            Role::Sub(i) => {
                self.subs[i] = None;
                self.errors.count(&fail);
                if self.phase <= Phase::Holding {
                    self.subs_failed += 1;
                }
            }
        }
    }

    fn on_timer(&mut self, pool: &mut Pool<LpConn>, r: &mut Reactor<()>, tag: u64) {
        match tag {
            OPEN if self.phase == Phase::Opening => self.open_more(pool, r),
            STATS_POLL => self.stats_request(pool, r),
            IDLE_END => {
                self.idle_len = self.idle_t0.elapsed();
                self.cpu1 = self.o.pids.cpu();
                self.rss_idle_end = self.o.pids.rss_bytes().unwrap_or(0);
                self.phase = Phase::IdleEnd;
                self.deadline.set(
                    r,
                    DEADLINE,
                    Duration::from_secs(10),
                    "reading /stats after the idle window",
                );
                self.stats_request(pool, r);
            }
            PUB_NEXT if self.phase == Phase::Publishing && self.cur.is_none() => self.publish_next(pool, r),
            DEADLINE if self.phase == Phase::Draining => {
                // A server that never notices its clients left (the seed's design) keeps its
                // waiters: that is a result, not a failure of the run. drain_ms stays "na".
                eprintln!(
                    "longpoll: the server still holds waiters {} s after the reset",
                    DRAIN_WAIT.as_secs()
                );
                self.deadline.fired();
                self.finish(pool, r);
            }
            DEADLINE => {
                let msg = self.deadline.fired();
                self.fatal(r, msg);
            }
            t if t >= PUB_TIMEOUT => {
                let k = (t - PUB_TIMEOUT) as usize;
                if self.cur.as_ref().is_some_and(|p| p.k == k) {
                    self.errors.timeout += 1;
                    self.cur = None;
                    r.set_timer(Duration::from_millis(1), PUB_NEXT);
                }
            }
            _ => {}
        }
    }
}

pub fn run(o: LongpollOpts) -> Result<(), String> {
    o.pids.check()?;
    let mut r = Reactor::<()>::new().map_err(|e| format!("cannot create the reactor: {e}"))?;
    let host = o.addr.to_string();
    let now = Instant::now();
    let rss_before = o.pids.rss_bytes().map_err(|e| format!("cannot read the server's RSS: {e}"))?;
    println!(
        "tidings-load longpoll: {} held polls on {} (server {}), idle {:.1} s, {} publishes",
        o.n,
        o.addr,
        o.pids.describe(),
        o.idle.as_secs_f64(),
        o.publish
    );
    let lp = Lp {
        host,
        phase: Phase::Baseline,
        stats: StatsGroup::new(o.addr, &o.pids),
        publ: Ctl::default(),
        subs: vec![None; o.n],
        opened: 0,
        subs_failed: 0,
        base_waiting: 0,
        errors: Errors::default(),
        fatal: None,
        ever_connected: false,
        deadline: PhaseDeadline::default(),
        rss_before,
        rss_held: 0,
        rss_idle_end: 0,
        t_open: now,
        held_after: Duration::ZERO,
        idle_t0: now,
        idle_len: Duration::ZERO,
        cpu0: None,
        cpu1: None,
        wake0: None,
        wake1: None,
        next_k: 0,
        cur: None,
        hist: Histogram::new(),
        ack_hist: Histogram::new(),
        drain_t0: now,
        close_ns: 0,
        drain_ns: None,
        o: o.clone(),
    };
    let mut client = Client { pool: Pool::new(o.addr), driver: lp };
    client.driver.deadline.set(&mut r, DEADLINE, Duration::from_secs(10), "the first GET /stats");
    client.driver.stats_request(&mut client.pool, &mut r);
    if let Some(f) = client.driver.fatal.take() {
        return Err(f);
    }
    r.run(&mut client).map_err(|e| format!("reactor failed: {e}"))?;
    let d = client.driver;
    if let Some(f) = d.fatal {
        return Err(f);
    }
    report(&d);
    Ok(())
}

fn report(d: &Lp) {
    let held = d.held() as u64;
    let idle_s = d.idle_len.as_secs_f64();
    let (idle_cpu_pct, idle_cpu_s) = match (d.cpu0, d.cpu1) {
        (Some(a), Some(b)) => {
            let s = a.until(b).as_secs_f64();
            (format!("{:.2}", 100.0 * s / idle_s), s)
        }
        _ => ("na".into(), 0.0),
    };
    let wakeups = match (d.wake0, d.wake1) {
        (Some(a), Some(b)) => b.saturating_sub(a).to_string(),
        _ => "na".into(),
    };
    let growth = d.rss_held as i64 - d.rss_before as i64;
    let per_poll = if held > 0 { growth / held as i64 } else { 0 };
    let h = &d.hist;
    let drain = d.drain_ns.map_or("na".to_string(), ms);
    println!(
        "  held         {held} polls in {:.2} s ({} were waiting before)",
        d.held_after.as_secs_f64(),
        d.base_waiting
    );
    println!(
        "  idle         {idle_s:.2} s: server CPU {idle_cpu_s:.2} s = {idle_cpu_pct}% of a core \
         ({} ms ticks), {wakeups} loop wake-ups",
        1000 / test_support::cpu::clock_ticks_per_second()
    );
    println!(
        "  memory       server RSS {} before, {} held, {} after the idle window: {per_poll} bytes per held poll",
        bytes(d.rss_before),
        bytes(d.rss_held),
        bytes(d.rss_idle_end)
    );
    println!(
        "  delivery     {} publishes: p50 {} us  p99 {} us  max {} us (POST written -> subscriber's 200 read)",
        h.count(),
        us(h.quantile(0.5)),
        us(h.quantile(0.99)),
        us(h.max())
    );
    let a = &d.ack_hist;
    println!(
        "  publish      p50 {} us  p99 {} us  max {} us (POST written -> its 200 read)",
        us(a.quantile(0.5)),
        us(a.quantile(0.99)),
        us(a.max())
    );
    println!(
        "  drain        {} connections reset in {} ms; /stats back to {} waiting after {drain} ms",
        held,
        ms(d.close_ns),
        d.base_waiting
    );
    println!("  errors       {} ({})", d.errors.total(), d.errors.describe());
    println!(
        "RESULT mode=longpoll n={} held={held} hold_s={:.3} idle_s={idle_s:.3} idle_cpu_pct={idle_cpu_pct} \
         idle_wakeups={wakeups} rss_before_bytes={} rss_held_bytes={} rss_per_poll_bytes={per_poll} publishes={} \
         delivery_p50_us={} delivery_p99_us={} delivery_max_us={} publish_p50_us={} publish_p99_us={} \
         close_ms={} drain_ms={drain} {}",
        d.o.n,
        d.held_after.as_secs_f64(),
        d.rss_before,
        d.rss_held,
        h.count(),
        us(h.quantile(0.5)),
        us(h.quantile(0.99)),
        us(h.max()),
        us(a.quantile(0.5)),
        us(a.quantile(0.99)),
        ms(d.close_ns),
        d.errors.result_fields()
    );
}
