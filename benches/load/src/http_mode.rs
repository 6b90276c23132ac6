//! `tidings-load http`: a closed-loop HTTP load like wrk's, on our reactor.
//!
//! Each of the N connections keeps `--pipeline` requests in flight: when a read has brought
//! complete responses, it writes as many new requests as were answered, in one write. With
//! `--conn-per-request`, each connection sends one request with `Connection: close`, and a
//! new connection replaces it as soon as the response is read (its latency then counts from
//! the start of the connect).
//!
//! Like wrk, this is a closed loop: a slow response delays the next request on its
//! connection, so latency percentiles describe the requests that were sent, not a fixed
//! arrival rate (no coordinated-omission correction).

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use reactor::Reactor;

use crate::args::HttpOpts;
use crate::client::{get_request, Client, Driver, Fail, Key, Pool};
use crate::common::{cannot_connect, us, Errors};
use crate::hist::Histogram;
use crate::parse::Response;
use test_support::procfs::Cpu;

const TICK: u64 = 1;
const WARMUP_END: u64 = 2;
const END: u64 = 3;
/// Housekeeping period: retry failed connects, look for timed-out requests (every 10 ticks).
const TICK_EVERY: Duration = Duration::from_millis(10);

pub struct HttpConn {
    /// Write times of the requests in flight, oldest first.
    inflight: VecDeque<Instant>,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Phase {
    Warmup,
    Measure,
    Done,
}

struct HttpDriver {
    o: HttpOpts,
    req: Vec<u8>,
    batch: Vec<u8>,
    phase: Phase,
    hist: Histogram,
    /// Responses in the measured window.
    done: u64,
    errors: Errors,
    /// Connects to retry at the next tick (after a connect failure: no hot retry loop).
    retry_connects: usize,
    ever_connected: bool,
    fatal: Option<String>,
    ticks: u64,
    /// Connections opened / closed by the server in the measured window.
    opened: u64,
    server_closes: u64,
    t_start: Option<Instant>,
    t_end: Option<Instant>,
    cpu_start: Option<Cpu>,
    cpu_end: Option<Cpu>,
    scratch: Vec<Key>,
}

impl HttpDriver {
    fn open(&mut self, pool: &mut Pool<HttpConn>, r: &mut Reactor<()>) {
        if self.phase == Phase::Done {
            return;
        }
        match pool.connect(r, HttpConn { inflight: VecDeque::with_capacity(self.o.pipeline) }) {
            Ok(_) => {
                if self.phase == Phase::Measure {
                    self.opened += 1;
                }
            }
            Err(e) => self.connect_failed(r, e),
        }
    }

    fn connect_failed(&mut self, r: &mut Reactor<()>, e: io::Error) {
        if !self.ever_connected && self.fatal.is_none() {
            self.fatal = Some(cannot_connect(self.o.addr, &e));
            r.stop();
            return;
        }
        self.errors.connect += 1;
        self.retry_connects += 1;
    }

    /// Tops connection `key` up to the pipeline depth, in one write.
    fn fill(&mut self, pool: &mut Pool<HttpConn>, r: &mut Reactor<()>, key: Key) {
        if self.phase == Phase::Done {
            return;
        }
        let Some(c) = pool.data_mut(key) else { return };
        let missing = self.o.pipeline.saturating_sub(c.inflight.len());
        if missing == 0 {
            return;
        }
        let now = Instant::now();
        self.batch.clear();
        for _ in 0..missing {
            self.batch.extend_from_slice(&self.req);
            c.inflight.push_back(now);
        }
        pool.send(r, key, &self.batch);
    }

    fn start_measure(&mut self) {
        self.phase = Phase::Measure;
        self.hist.clear();
        self.done = 0;
        self.errors = Errors::default();
        self.opened = 0;
        self.server_closes = 0;
        self.cpu_start = self.o.pids.cpu();
        self.t_start = Some(Instant::now());
    }

    fn end(&mut self, pool: &mut Pool<HttpConn>, r: &mut Reactor<()>) {
        self.t_end = Some(Instant::now());
        self.cpu_end = self.o.pids.cpu();
        self.phase = Phase::Done;
        pool.close_all(r, true);
        r.stop();
    }

    /// Closes (RST) connections whose oldest request, or whose connect, is older than the
    /// timeout, and replaces them.
    fn expire(&mut self, pool: &mut Pool<HttpConn>, r: &mut Reactor<()>) {
        let now = Instant::now();
        let limit = self.o.timeout;
        self.scratch.clear();
        for (key, c) in pool.iter() {
            let since = if c.is_connected() { c.data.inflight.front().copied() } else { Some(c.opened) };
            if since.is_some_and(|t| now.duration_since(t) > limit) {
                self.scratch.push(key);
            }
        }
        let expired = std::mem::take(&mut self.scratch);
        for &key in &expired {
            pool.close(r, key, true);
            self.errors.timeout += 1;
            self.open(pool, r);
        }
        self.scratch = expired;
    }
}

impl Driver<HttpConn> for HttpDriver {
    fn on_connected(&mut self, pool: &mut Pool<HttpConn>, r: &mut Reactor<()>, key: Key) {
        self.ever_connected = true;
        self.fill(pool, r, key);
    }

    fn on_response(&mut self, pool: &mut Pool<HttpConn>, r: &mut Reactor<()>, key: Key, resp: &Response<'_>) {
        let now = Instant::now();
        let Some(conn) = pool.get(key) else { return };
        let opened = conn.opened;
        let sent = pool.data_mut(key).and_then(|c| c.inflight.pop_front());
        if self.phase == Phase::Measure {
            if let Some(sent) = sent {
                let from = if self.o.conn_per_request { opened } else { sent };
                self.hist.record_duration(now.duration_since(from));
            }
            self.done += 1;
            if !(200..300).contains(&resp.status) {
                self.errors.status += 1;
            }
        }
        if self.o.conn_per_request || resp.close {
            if resp.close && !self.o.conn_per_request && self.phase == Phase::Measure {
                self.server_closes += 1;
            }
            pool.close(r, key, false);
            self.open(pool, r);
        }
    }

    fn on_read_done(&mut self, pool: &mut Pool<HttpConn>, r: &mut Reactor<()>, key: Key) {
        if !self.o.conn_per_request {
            self.fill(pool, r, key);
        }
    }

    fn on_fail(
        &mut self,
        pool: &mut Pool<HttpConn>,
        r: &mut Reactor<()>,
        _key: Key,
        data: HttpConn,
        fail: Fail,
    ) {
        match fail {
            Fail::Connect(e) => return self.connect_failed(r, e),
            // The server closed a keep-alive connection between requests: not an error.
            Fail::Eof { partial: false } if data.inflight.is_empty() => {
                if self.phase == Phase::Measure {
                    self.server_closes += 1;
                }
            }
            ref f => self.errors.count(f),
        }
        self.open(pool, r);
    }

    fn on_timer(&mut self, pool: &mut Pool<HttpConn>, r: &mut Reactor<()>, tag: u64) {
        match tag {
            TICK => {
                for _ in 0..std::mem::take(&mut self.retry_connects) {
                    self.open(pool, r);
                }
                self.ticks += 1;
                if self.ticks == 10 {
                    self.ticks = 0;
                    self.expire(pool, r);
                }
            }
            WARMUP_END => self.start_measure(),
            END => self.end(pool, r),
            _ => {}
        }
    }
}

pub fn run(o: HttpOpts) -> Result<(), String> {
    let mut r = Reactor::<()>::new().map_err(|e| format!("cannot create the reactor: {e}"))?;
    o.pids.check()?;
    let mode = if o.conn_per_request {
        "a new connection per request".to_string()
    } else if o.pipeline > 1 {
        format!("keep-alive, pipeline {}", o.pipeline)
    } else {
        "keep-alive".to_string()
    };
    println!(
        "tidings-load http: {} connections ({mode}), {:.1} s after {:.1} s of warm-up -> http://{}{}",
        o.connections,
        o.duration.as_secs_f64(),
        o.warmup.as_secs_f64(),
        o.addr,
        o.path
    );
    let driver = HttpDriver {
        req: get_request(&o.host, &o.path, o.conn_per_request),
        batch: Vec::new(),
        phase: Phase::Warmup,
        hist: Histogram::new(),
        done: 0,
        errors: Errors::default(),
        retry_connects: 0,
        ever_connected: false,
        fatal: None,
        ticks: 0,
        opened: 0,
        server_closes: 0,
        t_start: None,
        t_end: None,
        cpu_start: None,
        cpu_end: None,
        scratch: Vec::new(),
        o: o.clone(),
    };
    let mut client = Client { pool: Pool::new(o.addr), driver };
    for _ in 0..o.connections {
        client.driver.open(&mut client.pool, &mut r);
    }
    if let Some(f) = client.driver.fatal.take() {
        return Err(f);
    }
    r.set_repeating_timer(TICK_EVERY, TICK);
    if o.warmup.is_zero() {
        client.driver.start_measure();
        r.set_timer(o.duration, END);
    } else {
        r.set_timer(o.warmup, WARMUP_END);
        r.set_timer(o.warmup + o.duration, END);
    }
    r.run(&mut client).map_err(|e| format!("reactor failed: {e}"))?;
    let d = client.driver;
    if let Some(f) = d.fatal {
        return Err(f);
    }
    report(&o, &d);
    Ok(())
}

fn report(o: &HttpOpts, d: &HttpDriver) {
    let (Some(t0), Some(t1)) = (d.t_start, d.t_end) else { return };
    let secs = t1.duration_since(t0).as_secs_f64();
    let rps = d.done as f64 / secs;
    let h = &d.hist;
    let q = |q: f64| us(h.quantile(q));
    println!("  requests     {} in {secs:.3} s = {rps:.0} requests/s", d.done);
    println!(
        "  latency (us) min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
        us(h.min()),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        us(h.max()),
        us(h.mean() as u64)
    );
    println!("  errors       {} ({})", d.errors.total(), d.errors.describe());
    println!(
        "  connections  {} opened, {} closed by the server during the window",
        d.opened, d.server_closes
    );
    let mut cpu_fields = String::from("server_cpu_pct=na server_cpu_us_per_req=na");
    match (o.pids.is_empty(), d.cpu_start, d.cpu_end) {
        (true, _, _) => {}
        (false, Some(a), Some(b)) => {
            let cpu = a.until(b).as_secs_f64();
            let pct = 100.0 * cpu / secs;
            let per_req = if d.done > 0 { cpu * 1e6 / d.done as f64 } else { 0.0 };
            println!(
                "  server CPU   {}: {cpu:.2} s over {secs:.2} s = {pct:.1}% of a core; \
                 {per_req:.3} us per request (ticks of {} ms)",
                o.pids.describe(),
                1000 / test_support::cpu::clock_ticks_per_second()
            );
            cpu_fields = format!("server_cpu_pct={pct:.1} server_cpu_us_per_req={per_req:.3}");
        }
        (false, _, _) => {
            println!("  server CPU   {}: could not be read at the start or end", o.pids.describe())
        }
    }
    println!(
        "RESULT mode=http conns={} pipeline={} conn_per_request={} duration_s={secs:.3} requests={} rps={rps:.0} \
         p50_us={} p90_us={} p99_us={} p999_us={} max_us={} mean_us={} {cpu_fields} {}",
        o.connections,
        o.pipeline,
        o.conn_per_request as u8,
        d.done,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        us(h.max()),
        us(h.mean() as u64),
        d.errors.result_fields()
    );
}
