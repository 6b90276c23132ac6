//! Cross-thread posts through `Remote`: exactly-once, per-sender order, coalesced eventfd
//! writes, posts from worker-pool jobs, and the race between a post and the loop going to
//! sleep (which must never lose a wake-up).
//!
//! Every loop here waits with a bounded `run_once` and asserts progress, so a lost wake-up
//! fails the test instead of hanging it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reactor::{Event, Handler, Reactor, WorkerPool};

/// Runs turns of at most 2 s until `done`; a turn that waits the full 2 s while messages are
/// still expected means a wake-up was lost.
fn run_until<M, H: Handler<M>>(r: &mut Reactor<M>, h: &mut H, limit: Duration, done: impl Fn(&H) -> bool) {
    let start = Instant::now();
    while !done(h) {
        assert!(start.elapsed() < limit, "no completion within {limit:?}");
        let t = Instant::now();
        r.run_once(h, Some(Duration::from_secs(2))).unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(1_900),
            "a turn slept 2 s with work pending: lost wake-up"
        );
    }
}

// ---------------------------------------------------------------------------------------

const THREADS: usize = 4;
const PER_THREAD: u64 = 100_000;

struct Ordered {
    next: [u64; THREADS],
    total: u64,
}

impl Handler<(usize, u64)> for Ordered {
    fn on_io(&mut self, _r: &mut Reactor<(usize, u64)>, ev: Event) {
        panic!("unexpected {ev:?}");
    }
    fn on_message(&mut self, _r: &mut Reactor<(usize, u64)>, (thread, seq): (usize, u64)) {
        assert_eq!(seq, self.next[thread], "thread {thread}: message out of order or duplicated");
        self.next[thread] += 1;
        self.total += 1;
    }
}

#[test]
fn many_senders_exactly_once_in_order() {
    let mut r = Reactor::<(usize, u64)>::new().unwrap();
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let remote = r.remote();
            std::thread::spawn(move || {
                for seq in 0..PER_THREAD {
                    remote.post((t, seq)).unwrap();
                }
            })
        })
        .collect();
    let mut h = Ordered { next: [0; THREADS], total: 0 };
    run_until(&mut r, &mut h, Duration::from_secs(30), |h| h.total == THREADS as u64 * PER_THREAD);
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(h.next, [PER_THREAD; THREADS]);

    // Nothing extra arrives later.
    r.run_once(&mut h, Some(Duration::from_millis(20))).unwrap();
    assert_eq!(h.total, THREADS as u64 * PER_THREAD);

    let s = r.stats();
    assert_eq!(s.remote_posts, THREADS as u64 * PER_THREAD);
    assert_eq!(s.remote_messages, THREADS as u64 * PER_THREAD);
    // A write only happens when the "wake-up pending" flag goes from clear to set, and only a
    // drain clears it: so at most one write per drain (plus the one that may be pending).
    assert!(
        s.remote_eventfd_writes <= s.remote_wakeups + 1,
        "{} eventfd writes for {} drains",
        s.remote_eventfd_writes,
        s.remote_wakeups
    );
    // And coalescing makes them far fewer than posts.
    assert!(
        s.remote_eventfd_writes * 10 <= s.remote_posts,
        "{} eventfd writes for {} posts: wake-ups not coalesced",
        s.remote_eventfd_writes,
        s.remote_posts
    );
}

// ---------------------------------------------------------------------------------------

struct Collect<M> {
    got: Vec<M>,
}

impl<M> Collect<M> {
    fn new() -> Self {
        Collect { got: Vec::new() }
    }
}

impl<M> Handler<M> for Collect<M> {
    fn on_io(&mut self, _r: &mut Reactor<M>, ev: Event) {
        panic!("unexpected {ev:?}");
    }
    fn on_message(&mut self, _r: &mut Reactor<M>, msg: M) {
        self.got.push(msg);
    }
}

#[test]
fn burst_while_the_loop_is_busy_costs_one_eventfd_write() {
    let mut r = Reactor::<u32>::new().unwrap();
    let remote = r.remote();
    // The loop is not running (think: busy in a long turn) while another thread posts.
    std::thread::spawn(move || {
        for i in 0..10_000 {
            remote.post(i).unwrap();
        }
    })
    .join()
    .unwrap();
    let mut h = Collect::new();
    r.run_once(&mut h, Some(Duration::from_secs(2))).unwrap();
    assert_eq!(h.got, (0..10_000).collect::<Vec<u32>>());
    let s = r.stats();
    assert_eq!((s.remote_posts, s.remote_eventfd_writes, s.remote_wakeups), (10_000, 1, 1));

    // The flag was cleared by the drain: the next post writes (and wakes) again.
    r.remote().post(77).unwrap();
    r.run_once(&mut h, Some(Duration::from_secs(2))).unwrap();
    assert_eq!(h.got.last(), Some(&77));
    assert_eq!(r.stats().remote_eventfd_writes, 2);
}

#[test]
fn post_after_the_loop_is_gone_is_refused() {
    let r = Reactor::<String>::new().unwrap();
    let remote = r.remote();
    assert!(!remote.is_closed());
    drop(r);
    assert!(remote.is_closed());
    assert_eq!(remote.post("late".to_string()), Err("late".to_string()));
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum Msg {
    FromInsideJob(u64),
    Result(u64),
    Panicked(u64, String),
}

fn on_panic(ticket: u64, text: String) -> Msg {
    Msg::Panicked(ticket, text)
}

#[test]
fn post_from_inside_a_worker_job() {
    let mut r = Reactor::<Msg>::new().unwrap();
    let pool = WorkerPool::new(2, 16, r.remote(), on_panic).unwrap();
    for ticket in 0..8u64 {
        let remote = r.remote();
        pool.submit(ticket, move |_| {
            remote.post(Msg::FromInsideJob(ticket)).unwrap();
            Msg::Result(ticket)
        })
        .unwrap();
    }
    let mut h = Collect::new();
    run_until(&mut r, &mut h, Duration::from_secs(10), |h| h.got.len() == 16);
    for ticket in 0..8u64 {
        let inside = h.got.iter().position(|m| *m == Msg::FromInsideJob(ticket)).expect("post from job lost");
        let result = h.got.iter().position(|m| *m == Msg::Result(ticket)).expect("job result lost");
        assert!(inside < result, "the job's own post comes before its result (same thread, FIFO)");
    }
    pool.shutdown();
}

// ---------------------------------------------------------------------------------------

struct Acker {
    acked: Arc<AtomicU64>,
    received: u64,
}

impl Handler<u64> for Acker {
    fn on_io(&mut self, _r: &mut Reactor<u64>, ev: Event) {
        panic!("unexpected {ev:?}");
    }
    fn on_message(&mut self, _r: &mut Reactor<u64>, msg: u64) {
        assert_eq!(msg, self.received);
        self.received += 1;
        self.acked.store(self.received, Ordering::SeqCst);
    }
}

#[test]
fn post_racing_with_the_loop_going_to_sleep_still_wakes_it() {
    // Ping-pong: the sender posts message i only after the loop has handled i-1, after a
    // random pause of 0 to ~150 us. So each post lands somewhere around the moment the loop
    // finishes its turn and goes back into epoll_wait: before the flag is cleared, between the
    // clear and the drain, during the wait. Each one must wake the loop.
    const ROUNDS: u64 = 2_000;
    let mut r = Reactor::<u64>::new().unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let sender = {
        let remote = r.remote();
        let acked = acked.clone();
        std::thread::spawn(move || {
            let mut x = 0x1234_5678_9abc_def1u64;
            for i in 0..ROUNDS {
                let t = Instant::now();
                while acked.load(Ordering::SeqCst) < i {
                    if t.elapsed() > Duration::from_secs(10) {
                        return; // the loop side fails the test
                    }
                    std::hint::spin_loop();
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match x % 3 {
                    0 => {}
                    1 => {
                        let until = Instant::now() + Duration::from_micros(x % 100);
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                    }
                    _ => std::thread::sleep(Duration::from_micros(x % 150)),
                }
                remote.post(i).unwrap();
            }
        })
    };
    let mut h = Acker { acked, received: 0 };
    run_until(&mut r, &mut h, Duration::from_secs(20), |h| h.received == ROUNDS);
    sender.join().unwrap();
    let s = r.stats();
    assert_eq!(s.remote_messages, ROUNDS);
    assert!(s.remote_wakeups >= ROUNDS / 2, "ping-pong should need a wake-up per round: {s:?}");
}

#[test]
fn free_running_posts_at_random_delays_all_arrive() {
    // The other half of the race: the sender does not wait for the loop, so posts land at
    // any point of a turn, including while the loop is draining the queue.
    const POSTS: u64 = 20_000;
    let mut r = Reactor::<u64>::new().unwrap();
    let remote = r.remote();
    let sender = std::thread::spawn(move || {
        let mut x = 0x0dd_ba11_cafe_f00du64;
        for i in 0..POSTS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x & 3 == 0 {
                let until = Instant::now() + Duration::from_micros(x % 20);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            } else if x % 64 == 1 {
                std::thread::sleep(Duration::from_micros(x % 200));
            }
            remote.post(i).unwrap();
        }
    });
    let mut h = Acker { acked: Arc::new(AtomicU64::new(0)), received: 0 };
    run_until(&mut r, &mut h, Duration::from_secs(20), |h| h.received == POSTS);
    sender.join().unwrap();
    assert_eq!(r.stats().remote_messages, POSTS);
}

#[test]
fn a_post_while_the_loop_takes_the_queue_still_wakes_it() {
    // Two posts per round, the second a random 0 to ~40 us after the first, then the sender
    // waits for both. The second often lands while the loop is taking the first, after the
    // eventfd was drained. If the loop cleared the wake-up flag *after* taking the queue, that
    // post would see the flag still set, skip the eventfd write, and sit in the queue while
    // the loop sleeps (docs/05-waking-the-loop.md, experiment remote-order).
    const ROUNDS: u64 = 1_000;
    let mut r = Reactor::<u64>::new().unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let sender = {
        let remote = r.remote();
        let acked = acked.clone();
        std::thread::spawn(move || {
            let mut x = 0x5eed_1234_abcd_0001u64;
            for round in 0..ROUNDS {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                remote.post(2 * round).unwrap();
                let until = Instant::now() + Duration::from_micros(x % 40);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                remote.post(2 * round + 1).unwrap();
                let t = Instant::now();
                while acked.load(Ordering::SeqCst) < 2 * round + 2 {
                    if t.elapsed() > Duration::from_secs(5) {
                        return; // the loop side fails the test
                    }
                    std::hint::spin_loop();
                }
            }
        })
    };
    let mut h = Acker { acked, received: 0 };
    run_until(&mut r, &mut h, Duration::from_secs(20), |h| h.received == 2 * ROUNDS);
    sender.join().unwrap();
}
