//! Timer structures under a long-poll workload: the reactor's `TimerWheel` beside a
//! `BinaryHeap` with lazy cancellation and a `BTreeMap`, at 10k, 100k and 1M live timers.
//!
//! Three benchmarks, each in a steady state (the number of live timers stays at N):
//! * `insert_cancel`: time stands still; one iteration inserts a timer due in 10-30 s and
//!   cancels a random live one. Cost of one insert + one cancel.
//! * `expire`: no cancellations; time moves on, every timer fires and is replaced by a new
//!   one 10-30 s out. Cost per fired timer (one pop/fire + one insert).
//! * `long_poll`: the hub's pattern. Every iteration inserts a timer due in 10-30 s; 90% of
//!   them are cancelled early (after ~3 s on average: a message arrived), 10% expire. Time
//!   moves on so that N timers are live. Cost per inserted timer, all work included.
//!
//! The heap cancels lazily: `cancel` bumps a generation (O(1)) and the stale entry (a
//! tombstone) is skipped when it reaches the top. Tombstones are purged by rebuilding the heap
//! when they outnumber live entries, so memory stays bounded; that cost is included.
//!
//! Run: `cargo bench --bench timer_wheel` (about a minute and a half).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use reactor::{TimerId, TimerWheel};
use test_support::rng::Rng;

/// A long-poll deadline: 10 to 30 s after `now` (1 tick = 1 ms).
fn deadline(rng: &mut Rng, now: u64) -> u64 {
    now + 10_000 + rng.below(20_000)
}

/// What the three structures have in common, as the benchmark uses them.
trait Timers {
    type Id: Copy;
    fn with_capacity(n: usize) -> Self;
    fn insert(&mut self, deadline: u64, data: u64) -> Self::Id;
    fn cancel(&mut self, id: Self::Id) -> bool;
    /// Next timer due at or before `now`, if any.
    fn poll(&mut self, now: u64) -> Option<u64>;
    fn live(&self) -> usize;
}

impl Timers for TimerWheel<u64> {
    type Id = TimerId;
    fn with_capacity(n: usize) -> Self {
        TimerWheel::with_capacity(n)
    }
    fn insert(&mut self, deadline: u64, data: u64) -> TimerId {
        TimerWheel::insert(self, deadline, data)
    }
    fn cancel(&mut self, id: TimerId) -> bool {
        TimerWheel::cancel(self, id).is_some()
    }
    fn poll(&mut self, now: u64) -> Option<u64> {
        TimerWheel::poll(self, now).map(|(_, d)| d)
    }
    fn live(&self) -> usize {
        self.len()
    }
}

/// Binary heap + generation vector: (slot, generation) ids, lazy cancel.
struct Heap {
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Current generation of each slot; an entry whose generation differs is a tombstone.
    gens: Vec<u32>,
    data: Vec<u64>,
    free: Vec<u32>,
    live: usize,
}

impl Heap {
    fn purge(&mut self) {
        let gens = &self.gens;
        let mut v = std::mem::take(&mut self.heap).into_vec();
        v.retain(|Reverse((_, slot, gen))| gens[*slot as usize] == *gen);
        self.heap = BinaryHeap::from(v);
    }
    fn release(&mut self, slot: u32) {
        self.gens[slot as usize] = self.gens[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.live -= 1;
    }
}

impl Timers for Heap {
    type Id = (u32, u32);
    fn with_capacity(n: usize) -> Self {
        Heap {
            heap: BinaryHeap::with_capacity(2 * n),
            gens: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            free: Vec::new(),
            live: 0,
        }
    }
    fn insert(&mut self, deadline: u64, data: u64) -> (u32, u32) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.data[s as usize] = data;
                s
            }
            None => {
                self.gens.push(0);
                self.data.push(data);
                (self.gens.len() - 1) as u32
            }
        };
        let gen = self.gens[slot as usize];
        self.heap.push(Reverse((deadline, slot, gen)));
        self.live += 1;
        (slot, gen)
    }
    fn cancel(&mut self, (slot, gen): (u32, u32)) -> bool {
        if self.gens[slot as usize] != gen {
            return false;
        }
        self.release(slot);
        if self.heap.len() > 2 * self.live + 1024 {
            self.purge();
        }
        true
    }
    fn poll(&mut self, now: u64) -> Option<u64> {
        while let Some(&Reverse((deadline, slot, gen))) = self.heap.peek() {
            if deadline > now {
                return None;
            }
            self.heap.pop();
            if self.gens[slot as usize] == gen {
                self.release(slot);
                return Some(self.data[slot as usize]);
            }
        }
        None
    }
    fn live(&self) -> usize {
        self.live
    }
}

/// BTreeMap keyed by (deadline, sequence number).
struct BTree {
    map: BTreeMap<(u64, u64), u64>,
    seq: u64,
}

impl Timers for BTree {
    type Id = (u64, u64);
    fn with_capacity(_: usize) -> Self {
        BTree { map: BTreeMap::new(), seq: 0 }
    }
    fn insert(&mut self, deadline: u64, data: u64) -> (u64, u64) {
        self.seq += 1;
        self.map.insert((deadline, self.seq), data);
        (deadline, self.seq)
    }
    fn cancel(&mut self, id: (u64, u64)) -> bool {
        self.map.remove(&id).is_some()
    }
    fn poll(&mut self, now: u64) -> Option<u64> {
        match self.map.first_key_value() {
            Some((&(d, _), _)) if d <= now => self.map.pop_first().map(|(_, v)| v),
            _ => None,
        }
    }
    fn live(&self) -> usize {
        self.map.len()
    }
}

// ---------------------------------------------------------------------------------------
// Workloads. Each keeps its state between criterion's calls, so a 1M-timer structure is
// built once per benchmark, not once per sample.
// ---------------------------------------------------------------------------------------

/// N live timers with random 10-30 s deadlines; `ids` lets us cancel a random one.
struct Frozen<T: Timers> {
    t: T,
    ids: Vec<T::Id>,
    rng: Rng,
}

impl<T: Timers> Frozen<T> {
    fn new(n: usize) -> Self {
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let mut t = T::with_capacity(n);
        let ids = (0..n as u64).map(|i| t.insert(deadline(&mut rng, 0), i)).collect();
        Frozen { t, ids, rng }
    }
    /// `iters` times: insert one, cancel a random live one.
    fn insert_cancel(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for i in 0..iters {
            let id = self.t.insert(deadline(&mut self.rng, 0), i);
            let j = self.rng.below(self.ids.len() as u64) as usize;
            let victim = std::mem::replace(&mut self.ids[j], id);
            black_box(self.t.cancel(victim));
        }
        start.elapsed()
    }
}

/// No cancellations: time advances, each fired timer is replaced by a new one.
struct Expiring<T: Timers> {
    t: T,
    now: u64,
    rng: Rng,
}

impl<T: Timers> Expiring<T> {
    fn new(n: usize) -> Self {
        let mut rng = Rng::new(0x1234_5678_9abc_def1);
        let mut t = T::with_capacity(n);
        // Spread the deadlines as in the steady state: uniform over the next 30 s.
        for i in 0..n as u64 {
            t.insert(1 + rng.below(30_000), i);
        }
        Expiring { t, now: 0, rng }
    }
    /// Fires `iters` timers (advancing time tick by tick), replacing each.
    fn expire(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        let mut fired = 0;
        while fired < iters {
            self.now += 1;
            while let Some(d) = self.t.poll(self.now) {
                black_box(d);
                self.t.insert(deadline(&mut self.rng, self.now), d);
                fired += 1;
            }
        }
        start.elapsed()
    }
}

/// The hub's pattern. `pending` holds the ids of timers that will be cancelled: each insert
/// goes to a random slot (90% of the time), cancelling the timer it displaces; the other 10%
/// are never cancelled and expire. With K = 30% of N slots, a cancelled timer lives ~3 s.
struct LongPoll<T: Timers> {
    t: T,
    pending: Vec<Option<T::Id>>,
    now: u64,
    /// Inserts per tick, in 1/1024 (fixed point), chosen so that about N timers are live.
    per_tick_1024: u64,
    acc: u64,
    rng: Rng,
    seq: u64,
}

impl<T: Timers> LongPoll<T> {
    fn new(n: usize) -> Self {
        let mut rng = Rng::new(0x0dd_ba11_cafe_f00d);
        let mut t = T::with_capacity(n);
        let k = n * 3 / 10;
        // Live = K cancellable + (10% of inserts x 20 s average life) => rate = 0.7 N / 2000.
        let per_tick_1024 = (n as u64 * 7 * 1024 / 20_000).max(1);
        // Pre-fill close to the steady state so no long warm-up is needed.
        let pending = (0..k as u64).map(|i| Some(t.insert(deadline(&mut rng, 0), i))).collect();
        for i in 0..(n - k) as u64 {
            t.insert(1 + rng.below(30_000), i);
        }
        LongPoll { t, pending, now: 0, per_tick_1024, acc: 0, rng, seq: 0 }
    }
    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            self.seq += 1;
            let id = self.t.insert(deadline(&mut self.rng, self.now), self.seq);
            if self.rng.below(10) != 0 {
                let j = self.rng.below(self.pending.len() as u64) as usize;
                if let Some(victim) = self.pending[j].replace(id) {
                    black_box(self.t.cancel(victim));
                }
            }
            self.acc += 1024;
            while self.acc >= self.per_tick_1024 {
                self.acc -= self.per_tick_1024;
                self.now += 1;
                while let Some(d) = self.t.poll(self.now) {
                    black_box(d);
                }
            }
        }
        start.elapsed()
    }
}

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];

fn bench_insert_cancel(c: &mut Criterion) {
    let mut g = c.benchmark_group("insert_cancel");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    for n in SIZES {
        let mut w = Frozen::<TimerWheel<u64>>::new(n);
        g.bench_function(BenchmarkId::new("wheel", n), |b| b.iter_custom(|i| w.insert_cancel(i)));
        drop(w);
        let mut h = Frozen::<Heap>::new(n);
        g.bench_function(BenchmarkId::new("heap", n), |b| b.iter_custom(|i| h.insert_cancel(i)));
        drop(h);
        let mut t = Frozen::<BTree>::new(n);
        g.bench_function(BenchmarkId::new("btree", n), |b| b.iter_custom(|i| t.insert_cancel(i)));
    }
    g.finish();
}

fn bench_expire(c: &mut Criterion) {
    let mut g = c.benchmark_group("expire");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    for n in SIZES {
        let mut w = Expiring::<TimerWheel<u64>>::new(n);
        g.bench_function(BenchmarkId::new("wheel", n), |b| b.iter_custom(|i| w.expire(i)));
        drop(w);
        let mut h = Expiring::<Heap>::new(n);
        g.bench_function(BenchmarkId::new("heap", n), |b| b.iter_custom(|i| h.expire(i)));
        drop(h);
        let mut t = Expiring::<BTree>::new(n);
        g.bench_function(BenchmarkId::new("btree", n), |b| b.iter_custom(|i| t.expire(i)));
    }
    g.finish();
}

fn bench_long_poll(c: &mut Criterion) {
    let mut g = c.benchmark_group("long_poll");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    for n in SIZES {
        let mut w = LongPoll::<TimerWheel<u64>>::new(n);
        g.bench_function(BenchmarkId::new("wheel", n), |b| b.iter_custom(|i| w.run(i)));
        eprintln!("  (wheel: {} live timers at the end)", w.t.live());
        drop(w);
        let mut h = LongPoll::<Heap>::new(n);
        g.bench_function(BenchmarkId::new("heap", n), |b| b.iter_custom(|i| h.run(i)));
        eprintln!("  (heap: {} live timers, {} entries with tombstones)", h.t.live(), h.t.heap.len());
        drop(h);
        let mut t = LongPoll::<BTree>::new(n);
        g.bench_function(BenchmarkId::new("btree", n), |b| b.iter_custom(|i| t.run(i)));
        eprintln!("  (btree: {} live timers at the end)", t.t.live());
    }
    g.finish();
}

criterion_group!(benches, bench_insert_cancel, bench_expire, bench_long_poll);
criterion_main!(benches);
