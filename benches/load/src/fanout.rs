//! `tidings-load fanout`: one channel, N subscribers; how long one publish takes to reach them
//! all, and whether a burst reaches every one of them exactly once, in order.
//!
//! Phases, each with a deadline:
//! 1. **Setup**: `/stats` (the waiting polls before we start) and `GET /sub/NAME?timeout=0`,
//!    whose 304 carries the channel's current seq S in its ETag (`"EPOCH:S"` from tidings,
//!    `"S"` from the Tornado peers; the subscribers then poll with `since=S` alone, which the
//!    hub accepts with its rules of before epochs).
//! 2. **Open**: N connections hold `GET /sub/NAME?since=S&timeout=300` (paced like longpoll);
//!    `/stats` is polled until all N wait.
//! 3. **Fan-out**: one publish (data `m{S+1}`). Each subscriber's delay runs from the POST
//!    being written to its 200 fully read; the report gives the last one (the fan-out time)
//!    and the median. Every answer must carry exactly message S+1.
//! 4. **Burst** (`--burst K`): every subscriber re-polls with `since=next`; once all wait
//!    again, K publishes are written back to back (one write, pipelined). Each subscriber
//!    re-polls with its cursor after every answer until it has seq S+1+K. Every message must
//!    arrive exactly once, in order, with the data it was published with, and `missed` must
//!    stay 0 (with K above the server's `--retain`, old messages are evicted before slow
//!    subscribers read them and `missed` says so: that is reported as violations).

use std::time::{Duration, Instant};

use reactor::Reactor;

use crate::args::FanoutOpts;
use crate::client::{get_request, post_request, Client, Driver, Fail, Key, Pool};
use crate::common::{cannot_connect, describe_fail, ms, Ctl, Errors, PhaseDeadline, StatsGroup};
use crate::hist::Histogram;
use crate::longpoll::{MAX_CONNECTING, OPEN_BATCH};
use crate::parse::{etag_u64, json_u64, messages, Response};
use test_support::procfs::Cpu;

const OPEN: u64 = 1;
const STATS_POLL: u64 = 2;
const DEADLINE: u64 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Pub,
    Sub,
}

pub struct FanConn {
    role: Role,
    /// The subscriber's cursor: the last seq it has received.
    cursor: u64,
    done: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Setup,
    Opening,
    Holding,
    Fan,
    Rehold,
    Burst,
    Done,
}

struct Fan {
    o: FanoutOpts,
    host: String,
    phase: Phase,
    stats: StatsGroup,
    publ: Ctl,
    base_waiting: Option<u64>,
    start_seq: Option<u64>,
    opened: usize,
    failed: usize,
    errors: Errors,
    fatal: Option<String>,
    ever_connected: bool,
    deadline: PhaseDeadline,
    t_open: Instant,
    held_after: Duration,
    // fan-out
    fan_posted: Instant,
    fan_hist: Histogram,
    fan_got: usize,
    fan_subscribers: Option<u64>,
    // burst
    burst_posted: Instant,
    burst_done: usize,
    burst_last: Duration,
    burst_polls: u64,
    pub_acks: usize,
    violations: u64,
    missed: u64,
    cpu0: Option<Cpu>,
    cpu1: Option<Cpu>,
    fan_cpu0: Option<Cpu>,
    fan_cpu1: Option<Cpu>,
}

impl Fan {
    fn fatal(&mut self, r: &mut Reactor<()>, msg: String) {
        if self.fatal.is_none() {
            self.fatal = Some(msg);
        }
        self.phase = Phase::Done;
        r.stop();
    }

    fn alive(&self) -> usize {
        self.o.n - self.failed
    }

    fn last_seq(&self) -> u64 {
        self.start_seq.unwrap_or(0) + 1 + self.o.burst as u64
    }

    fn stats_request(&mut self, pool: &mut Pool<FanConn>, r: &mut Reactor<()>) {
        match self.stats.read() {
            Ok(sum) => self.on_stats(pool, r, sum.waiting),
            Err(e) => self.fatal(r, e),
        }
    }

    fn publish(
        &mut self,
        pool: &mut Pool<FanConn>,
        r: &mut Reactor<()>,
        seqs: std::ops::RangeInclusive<u64>,
    ) {
        let path = format!("/pub/{}", self.o.channel);
        let mut batch = Vec::new();
        let count = seqs.clone().count();
        for seq in seqs {
            batch.extend_from_slice(&post_request(&self.host, &path, format!("m{seq}").as_bytes()));
        }
        if let Err(e) =
            self.publ.send(pool, r, &batch, count, || FanConn { role: Role::Pub, cursor: 0, done: false })
        {
            self.fatal(r, cannot_connect(pool.addr(), &e));
        }
    }

    fn poll(&self, pool: &mut Pool<FanConn>, r: &mut Reactor<()>, key: Key, since: u64) {
        let target = format!("/sub/{}?since={since}&timeout=300", self.o.channel);
        pool.send(r, key, &get_request(&self.host, &target, false));
    }

    fn setup_done(&mut self, pool: &mut Pool<FanConn>, r: &mut Reactor<()>) {
        let (Some(base), Some(seq)) = (self.base_waiting, self.start_seq) else { return };
        self.phase = Phase::Opening;
        self.t_open = Instant::now();
        eprintln!(
            "fanout: opening {} subscribers on channel {:?} at seq {seq} ({base} polls already waiting)",
            self.o.n, self.o.channel
        );
        let hold = Duration::from_secs(30) + Duration::from_millis(2 * self.o.n as u64);
        self.deadline.set(r, DEADLINE, hold, "holding every subscriber");
        self.open_more(pool, r);
    }

    fn open_more(&mut self, pool: &mut Pool<FanConn>, r: &mut Reactor<()>) {
        let since = self.start_seq.unwrap_or(0);
        let budget = OPEN_BATCH.min(MAX_CONNECTING.saturating_sub(pool.connecting()));
        for _ in 0..budget {
            if self.opened == self.o.n {
                break;
            }
            self.opened += 1;
            match pool.connect(r, FanConn { role: Role::Sub, cursor: since, done: false }) {
                Ok(key) => self.poll(pool, r, key, since),
                Err(e) => {
                    self.errors.connect += 1;
                    self.failed += 1;
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

    fn on_stats(&mut self, pool: &mut Pool<FanConn>, r: &mut Reactor<()>, waiting: u64) {
        match self.phase {
            Phase::Setup => {
                self.base_waiting = Some(waiting);
                self.setup_done(pool, r);
            }
            Phase::Holding | Phase::Rehold => {
                if self.alive() == 0 {
                    return self.fatal(r, "no subscriber could be opened".into());
                }
                if waiting < self.base_waiting.unwrap_or(0) + self.alive() as u64 {
                    r.set_timer(Duration::from_millis(20), STATS_POLL);
                    return;
                }
                if self.phase == Phase::Holding {
                    self.held_after = self.t_open.elapsed();
                    eprintln!(
                        "fanout: {} subscribers held after {:.2} s; publishing one message",
                        self.alive(),
                        self.held_after.as_secs_f64()
                    );
                    self.phase = Phase::Fan;
                    self.deadline.set(r, DEADLINE, Duration::from_secs(30), "the fan-out");
                    let seq = self.start_seq.unwrap_or(0) + 1;
                    self.fan_cpu0 = self.o.pids.cpu();
                    self.publish(pool, r, seq..=seq);
                    self.fan_posted = Instant::now();
                } else {
                    eprintln!(
                        "fanout: {} subscribers re-polled; publishing {} messages",
                        self.alive(),
                        self.o.burst
                    );
                    self.phase = Phase::Burst;
                    let budget = Duration::from_secs(60)
                        + Duration::from_micros(self.o.n as u64 * self.o.burst as u64);
                    self.deadline.set(r, DEADLINE, budget, "the burst");
                    let first = self.start_seq.unwrap_or(0) + 2;
                    self.cpu0 = self.o.pids.cpu();
                    self.publish(pool, r, first..=self.last_seq());
                    self.burst_posted = Instant::now();
                }
            }
            _ => {}
        }
    }

    fn on_sub_response(
        &mut self,
        pool: &mut Pool<FanConn>,
        r: &mut Reactor<()>,
        key: Key,
        resp: &Response<'_>,
    ) {
        let now = Instant::now();
        let Some(sub) = pool.data_mut(key) else { return };
        if sub.done || !matches!(self.phase, Phase::Fan | Phase::Burst) {
            // Answered before anything was published (or after it was complete).
            self.violations += 1;
            self.errors.check += 1;
            self.failed += 1;
            pool.close(r, key, true);
            return self.check_complete(pool, r);
        }
        if resp.status != 200 {
            self.errors.status += 1;
            if resp.status == 304 {
                let since = sub.cursor;
                return self.poll(pool, r, key, since); // hold timed out: poll again
            }
            self.failed += 1;
            pool.close(r, key, true);
            return self.check_complete(pool, r);
        }
        let msgs = match messages(resp.body) {
            Ok(m) => m,
            Err(_) => {
                self.errors.parse += 1;
                self.failed += 1;
                pool.close(r, key, true);
                return self.check_complete(pool, r);
            }
        };
        // Every message exactly once, in order, with its own data.
        let mut bad = 0;
        for (seq, data) in &msgs {
            if *seq != sub.cursor + 1 || *data != format!("m{seq}").as_bytes() {
                bad += 1;
            }
            sub.cursor = sub.cursor.max(*seq);
        }
        let missed = json_u64(resp.body, "missed").unwrap_or(0);
        if missed > 0 {
            bad += 1;
            self.missed += missed;
        }
        if msgs.is_empty() || json_u64(resp.body, "next") != Some(sub.cursor) {
            bad += 1;
        }
        self.violations += bad;
        self.errors.check += bad;
        let cursor = sub.cursor;
        let last = self.last_seq();
        if self.phase == Phase::Fan {
            self.fan_hist.record_duration(now.duration_since(self.fan_posted));
            self.fan_got += 1;
            if self.o.burst == 0 {
                sub.done = true;
            }
        } else {
            self.burst_polls += 1;
            if cursor >= last {
                sub.done = true;
                self.burst_done += 1;
                self.burst_last = self.burst_last.max(now.duration_since(self.burst_posted));
            } else {
                self.poll(pool, r, key, cursor);
            }
        }
        self.check_complete(pool, r);
    }

    /// Moves on when every live subscriber has what the phase publishes (and, for the burst,
    /// every publish has been acknowledged).
    fn check_complete(&mut self, pool: &mut Pool<FanConn>, r: &mut Reactor<()>) {
        match self.phase {
            Phase::Fan if self.fan_got >= self.alive() && self.fan_subscribers.is_some() => {
                self.fan_cpu1 = self.o.pids.cpu();
                eprintln!(
                    "fanout: all {} subscribers had it after {} ms",
                    self.fan_got,
                    ms(self.fan_hist.max())
                );
                if self.o.burst == 0 {
                    return self.finish(pool, r);
                }
                self.phase = Phase::Rehold;
                self.deadline.set(r, DEADLINE, Duration::from_secs(30), "re-holding every subscriber");
                let keys: Vec<Key> =
                    pool.iter().filter(|(_, c)| c.data.role == Role::Sub).map(|(k, _)| k).collect();
                for key in keys {
                    let since = pool.get(key).map_or(0, |c| c.data.cursor);
                    self.poll(pool, r, key, since);
                }
                self.stats_request(pool, r);
            }
            Phase::Burst if self.burst_done >= self.alive() && self.pub_acks > self.o.burst => {
                self.cpu1 = self.o.pids.cpu();
                self.finish(pool, r);
            }
            _ => {}
        }
    }

    fn on_pub_ack(&mut self, pool: &mut Pool<FanConn>, r: &mut Reactor<()>, resp: &Response<'_>) {
        if self.phase == Phase::Setup {
            // The answer to GET /sub/NAME?timeout=0: 304 with the current seq in its ETag.
            let seq = match resp.status {
                304 => resp.etag.and_then(etag_u64),
                _ => None,
            };
            let Some(seq) = seq else {
                let msg = format!(
                    "GET /sub/{}?timeout=0 answered {} without an ETag \"S\" or \"EPOCH:S\": is this a tidings server?",
                    self.o.channel, resp.status
                );
                return self.fatal(r, msg);
            };
            self.start_seq = Some(seq);
            return self.setup_done(pool, r);
        }
        self.pub_acks += 1;
        if resp.status != 200 {
            self.errors.status += 1;
        } else {
            let want = self.start_seq.unwrap_or(0) + self.pub_acks as u64;
            if json_u64(resp.body, "seq") != Some(want) {
                // Somebody else publishes on this channel too: the checks cannot hold.
                self.violations += 1;
                self.errors.check += 1;
            }
            if self.pub_acks == 1 {
                self.fan_subscribers = json_u64(resp.body, "subscribers");
            }
        }
        if self.pub_acks == 1 && self.fan_subscribers.is_none() {
            self.fan_subscribers = Some(0);
        }
        self.check_complete(pool, r);
    }

    fn finish(&mut self, pool: &mut Pool<FanConn>, r: &mut Reactor<()>) {
        self.deadline.clear(r);
        self.phase = Phase::Done;
        pool.close_all(r, true);
        r.stop();
    }
}

impl Driver<FanConn> for Fan {
    fn on_connected(&mut self, _pool: &mut Pool<FanConn>, _r: &mut Reactor<()>, _key: Key) {
        self.ever_connected = true;
    }

    fn on_response(&mut self, pool: &mut Pool<FanConn>, r: &mut Reactor<()>, key: Key, resp: &Response<'_>) {
        let Some(role) = pool.get(key).map(|c| c.data.role) else { return };
        match role {
            Role::Pub => {
                self.publ.answered();
                self.on_pub_ack(pool, r, resp);
            }
            Role::Sub => self.on_sub_response(pool, r, key, resp),
        }
    }

    fn on_fail(
        &mut self,
        pool: &mut Pool<FanConn>,
        r: &mut Reactor<()>,
        _key: Key,
        data: FanConn,
        fail: Fail,
    ) {
        if let Fail::Connect(e) = &fail {
            if !self.ever_connected {
                return self.fatal(r, cannot_connect(pool.addr(), e));
            }
        }
        match data.role {
            Role::Pub => {
                let lost = self.publ.lost();
                if lost > 0 {
                    self.fatal(r, format!("the publisher connection failed: {}", describe_fail(&fail)));
                }
            }
            Role::Sub => {
                self.errors.count(&fail);
                if !data.done {
                    self.failed += 1;
                    self.check_complete(pool, r);
                }
            }
        }
    }

    fn on_timer(&mut self, pool: &mut Pool<FanConn>, r: &mut Reactor<()>, tag: u64) {
        match tag {
            OPEN if self.phase == Phase::Opening => self.open_more(pool, r),
            STATS_POLL => self.stats_request(pool, r),
            DEADLINE => {
                let msg = self.deadline.fired();
                if self.phase == Phase::Burst {
                    // Report what arrived: the missing deliveries are the finding.
                    eprintln!("fanout: {msg}");
                    self.errors.timeout += 1;
                    self.cpu1 = self.o.pids.cpu();
                    return self.finish(pool, r);
                }
                self.fatal(r, msg);
            }
            _ => {}
        }
    }
}

pub fn run(o: FanoutOpts) -> Result<(), String> {
    o.pids.check()?;
    let mut r = Reactor::<()>::new().map_err(|e| format!("cannot create the reactor: {e}"))?;
    let host = o.addr.to_string();
    let now = Instant::now();
    println!(
        "tidings-load fanout: {} subscribers on channel {:?} at {}, burst {}",
        o.n, o.channel, o.addr, o.burst
    );
    let fan = Fan {
        host,
        phase: Phase::Setup,
        stats: StatsGroup::new(o.addr, &o.pids),
        publ: Ctl::default(),
        base_waiting: None,
        start_seq: None,
        opened: 0,
        failed: 0,
        errors: Errors::default(),
        fatal: None,
        ever_connected: false,
        deadline: PhaseDeadline::default(),
        t_open: now,
        held_after: Duration::ZERO,
        fan_posted: now,
        fan_hist: Histogram::new(),
        fan_got: 0,
        fan_subscribers: None,
        burst_posted: now,
        burst_done: 0,
        burst_last: Duration::ZERO,
        burst_polls: 0,
        pub_acks: 0,
        violations: 0,
        missed: 0,
        cpu0: None,
        cpu1: None,
        fan_cpu0: None,
        fan_cpu1: None,
        o: o.clone(),
    };
    let mut client = Client { pool: Pool::new(o.addr), driver: fan };
    let d = &mut client.driver;
    d.deadline.set(&mut r, DEADLINE, Duration::from_secs(10), "the setup requests");
    d.stats_request(&mut client.pool, &mut r);
    let cursor_req = get_request(&d.host, &format!("/sub/{}?timeout=0", o.channel), false);
    let sent = d.publ.send(&mut client.pool, &mut r, &cursor_req, 1, || FanConn {
        role: Role::Pub,
        cursor: 0,
        done: false,
    });
    if let Err(e) = sent {
        return Err(cannot_connect(o.addr, &e));
    }
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

fn report(d: &Fan) {
    let h = &d.fan_hist;
    let alive = d.alive();
    let fan_ms = ms(h.max());
    let p50_ms = ms(h.quantile(0.5));
    let p99_ms = ms(h.quantile(0.99));
    let subscribers = d.fan_subscribers.map_or("na".into(), |s| s.to_string());
    println!(
        "  held         {alive} subscribers in {:.2} s ({} were waiting before)",
        d.held_after.as_secs_f64(),
        d.base_waiting.unwrap_or(0)
    );
    println!(
        "  fan-out      1 publish reached {} subscribers (server said {subscribers}): last after {fan_ms} ms, \
         median {p50_ms} ms, p99 {p99_ms} ms",
        d.fan_got,
    );
    let mut fan_cpu = String::from("fanout_server_cpu_ms=na");
    if let (Some(a), Some(b)) = (d.fan_cpu0, d.fan_cpu1) {
        let s = a.until(b).as_secs_f64() * 1e3;
        println!("  server CPU   {s:.0} ms during the fan-out (10 ms ticks)");
        fan_cpu = format!("fanout_server_cpu_ms={s:.0}");
    }
    let mut burst_fields = format!("burst={}", d.o.burst);
    if d.o.burst > 0 {
        let ok = d.violations == 0 && d.errors.total() == 0 && d.burst_done == alive && alive == d.o.n;
        let burst_ms = ms(d.burst_last.as_nanos() as u64);
        println!(
            "  burst        {} messages: {}/{alive} subscribers got all of them, last after {burst_ms} ms, \
             {} re-polls answered; {} violations, missed {} -> {}",
            d.o.burst,
            d.burst_done,
            d.burst_polls,
            d.violations,
            d.missed,
            if ok { "OK" } else { "NOT OK" }
        );
        let deliveries = d.o.burst as u64 * d.burst_done as u64;
        let mut cpu = String::from("burst_server_cpu_ms=na burst_server_cpu_us_per_delivery=na");
        if let (Some(a), Some(b)) = (d.cpu0, d.cpu1) {
            let s = a.until(b).as_secs_f64();
            let per = if deliveries > 0 { s * 1e6 / deliveries as f64 } else { 0.0 };
            println!("  server CPU   {:.0} ms during the burst: {per:.3} us per delivered message", s * 1e3);
            cpu = format!("burst_server_cpu_ms={:.0} burst_server_cpu_us_per_delivery={per:.3}", s * 1e3);
        }
        burst_fields = format!(
            "burst={} burst_ms={burst_ms} burst_ok={ok} burst_polls={} violations={} missed={} {cpu}",
            d.o.burst, d.burst_polls, d.violations, d.missed
        );
    }
    println!("  errors       {} ({})", d.errors.total(), d.errors.describe());
    println!(
        "RESULT mode=fanout n={} held={alive} fanout_ms={fan_ms} fanout_p50_ms={p50_ms} fanout_p99_ms={p99_ms} \
         fanout_subscribers={subscribers} delivered={} {fan_cpu} \
         {burst_fields} {}",
        d.o.n,
        d.fan_got,
        d.errors.result_fields()
    );
}
