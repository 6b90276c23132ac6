//! Cross-thread round trip through `Remote`: another thread posts a message, the loop is
//! woken by the eventfd, its handler runs and signals back.
//!
//! How long that takes depends mostly on whether the loop thread was *asleep* in
//! `epoll_wait` when the post arrived (then the kernel must wake it, and on a VM an idle vCPU
//! must be woken too) or still busy finishing its previous turn (then `epoll_wait` returns at
//! once). So the figures come in two kinds:
//!
//! * criterion `spin` / `park`: round trips back to back. The posting thread waits for the
//!   answer spinning on an atomic (`spin`: measures the loop side) or asleep (`park`: the
//!   handler unparks it; two wake-ups per round trip). Back to back, the next post often
//!   lands before the loop is asleep again, so this is the *busy loop* figure.
//! * percentiles (printed first by `cargo bench --bench remote`): 20,000 individually timed
//!   round trips, each after a pause of `gap` us that lets the loop fall asleep: the *idle
//!   loop* figure. Beside it, the same with no reactor at all: a thread blocked in
//!   `epoll_wait` on a bare eventfd. The difference is what the reactor adds.
//! * `raw_eventfd_spin`: that bare baseline, back to back; `post_only_coalesced`: a post
//!   alone, while the loop is busy (no eventfd write).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use reactor::{sys, Event, Handler, Reactor, Remote};

enum Msg {
    Ping(u64),
    Stop,
}

struct Answer {
    done: Arc<AtomicU64>,
    /// Thread to unpark after each ping (the `park` variant).
    waiter: Option<Thread>,
}

impl Handler<Msg> for Answer {
    fn on_io(&mut self, _r: &mut Reactor<Msg>, _ev: Event) {}
    fn on_message(&mut self, r: &mut Reactor<Msg>, msg: Msg) {
        match msg {
            Msg::Ping(n) => {
                self.done.store(n, Ordering::Release);
                if let Some(t) = &self.waiter {
                    t.unpark();
                }
            }
            Msg::Stop => r.stop(),
        }
    }
}

/// Something a round trip can be made through.
trait RoundTrip {
    fn round_trip(&mut self);
}

/// A loop thread, its Remote, and the counter its handler sets.
struct Looper {
    remote: Remote<Msg>,
    done: Arc<AtomicU64>,
    seq: u64,
    park: bool,
    thread: Option<JoinHandle<()>>,
}

impl Looper {
    fn start(park: bool) -> Looper {
        let done = Arc::new(AtomicU64::new(0));
        let waiter = park.then(thread::current);
        let (tx, rx) = mpsc::channel();
        let d = done.clone();
        let thread = thread::spawn(move || {
            let mut r = Reactor::<Msg>::new().unwrap();
            tx.send(r.remote()).unwrap();
            r.run(&mut Answer { done: d, waiter }).unwrap();
        });
        Looper { remote: rx.recv().unwrap(), done, seq: 0, park, thread: Some(thread) }
    }
}

impl RoundTrip for Looper {
    fn round_trip(&mut self) {
        self.seq += 1;
        let seq = self.seq;
        if self.remote.post(Msg::Ping(seq)).is_err() {
            panic!("loop is gone");
        }
        while self.done.load(Ordering::Acquire) != seq {
            if self.park {
                thread::park();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

impl Drop for Looper {
    fn drop(&mut self) {
        let _ = self.remote.post(Msg::Stop);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// The floor: a thread blocked in `epoll_wait` on a bare eventfd, no reactor, no queue.
struct RawWaker {
    eventfd: Arc<sys::Fd>,
    posted: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawWaker {
    fn start() -> RawWaker {
        let eventfd = Arc::new(sys::eventfd().unwrap());
        let posted = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (efd, posted, done, stop) =
                (eventfd.clone(), Arc::clone(&posted), done.clone(), stop.clone());
            thread::spawn(move || {
                let ep = sys::epoll_create().unwrap();
                sys::epoll_ctl(&ep, libc::EPOLL_CTL_ADD, efd.raw(), libc::EPOLLIN as u32, 0).unwrap();
                let mut events = sys::event_buffer(8);
                while !stop.load(Ordering::Acquire) {
                    if sys::epoll_wait(&ep, &mut events, -1).unwrap() > 0 {
                        sys::eventfd_drain(efd.raw()).unwrap();
                        done.store(posted.load(Ordering::Acquire), Ordering::Release);
                    }
                }
            })
        };
        RawWaker { eventfd, posted, done, stop, thread: Some(thread) }
    }
}

impl RoundTrip for RawWaker {
    fn round_trip(&mut self) {
        let seq = self.posted.fetch_add(1, Ordering::AcqRel) + 1;
        sys::eventfd_signal(self.eventfd.raw()).unwrap();
        while self.done.load(Ordering::Acquire) != seq {
            std::hint::spin_loop();
        }
    }
}

impl Drop for RawWaker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = sys::eventfd_signal(self.eventfd.raw());
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn percentiles(name: &str, rt: &mut dyn RoundTrip, gap_us: u64) {
    for _ in 0..2_000 {
        rt.round_trip();
    }
    let gap = Duration::from_micros(gap_us);
    let mut samples: Vec<Duration> = (0..20_000)
        .map(|_| {
            let t = Instant::now();
            while t.elapsed() < gap {
                std::hint::spin_loop();
            }
            let t = Instant::now();
            rt.round_trip();
            t.elapsed()
        })
        .collect();
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{name:<22} gap {gap_us:>3} us: p50 {:>9.2?}  p90 {:>9.2?}  p99 {:>9.2?}  p99.9 {:>9.2?}",
        p(0.50),
        p(0.90),
        p(0.99),
        p(0.999)
    );
}

fn bench_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("remote_round_trip");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let mut spin = Looper::start(false);
    g.bench_function("spin", |b| b.iter(|| spin.round_trip()));
    drop(spin);
    let mut park = Looper::start(true);
    g.bench_function("park", |b| b.iter(|| park.round_trip()));
    drop(park);
    let mut raw = RawWaker::start();
    g.bench_function("raw_eventfd_spin", |b| b.iter(|| raw.round_trip()));
    drop(raw);

    // For scale: the post alone, while the loop is busy elsewhere (all but the first post of
    // a burst skip the eventfd write).
    struct Sink;
    impl Handler<u64> for Sink {
        fn on_io(&mut self, _r: &mut Reactor<u64>, _ev: Event) {}
        fn on_message(&mut self, _r: &mut Reactor<u64>, msg: u64) {
            black_box(msg);
        }
    }
    let mut r = Reactor::<u64>::new().unwrap();
    let remote = r.remote();
    g.bench_function("post_only_coalesced", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(10_000);
                let t = Instant::now();
                for i in 0..chunk {
                    let _ = black_box(remote.post(i));
                }
                timed += t.elapsed();
                left -= chunk;
                // Untimed: let the loop take the queue, so it does not grow without bound.
                r.run_once(&mut Sink, Some(Duration::ZERO)).unwrap();
            }
            timed
        })
    });
    g.finish();
}

criterion_group!(benches, bench_round_trip);

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: keep that quick.
    if std::env::args().any(|a| a == "--bench") {
        println!("round trips, each timed alone, after a pause of `gap` (20,000 samples):");
        for gap in [0, 20] {
            percentiles("reactor Remote (spin)", &mut Looper::start(false), gap);
            percentiles("bare eventfd (spin)", &mut RawWaker::start(), gap);
        }
        percentiles("reactor Remote (park)", &mut Looper::start(true), 20);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
