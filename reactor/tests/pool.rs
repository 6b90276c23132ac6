//! The worker pool, driven through a real reactor: results come back as messages, a panicking
//! job comes back as `on_panic(ticket, text)`, a full queue refuses work, `cancel` takes a
//! queued job out and raises a running one's stop signal, workers run at nice 10, and shutdown
//! drops queued jobs, tells running ones to stop, lets them finish and joins every thread.
//!
//! Jobs that must stay busy block on a `Gate`, so "the queue is full" is a fact of the test,
//! not a matter of timing.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use reactor::{Cancelled, Event, Handler, Reactor, SubmitError, WorkerPool};

#[derive(Debug, PartialEq)]
enum Msg {
    Done(u64, u64),
    Panicked(u64, String),
}

fn on_panic(ticket: u64, text: String) -> Msg {
    Msg::Panicked(ticket, text)
}

struct Collect {
    got: Vec<Msg>,
}

impl Handler<Msg> for Collect {
    fn on_io(&mut self, _r: &mut Reactor<Msg>, ev: Event) {
        panic!("unexpected {ev:?}");
    }
    fn on_message(&mut self, _r: &mut Reactor<Msg>, msg: Msg) {
        self.got.push(msg);
    }
}

fn collect(r: &mut Reactor<Msg>, h: &mut Collect, n: usize) {
    let start = Instant::now();
    while h.got.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "only {} of {n} results: {:?}",
            h.got.len(),
            h.got
        );
        r.run_once(h, Some(Duration::from_millis(500))).unwrap();
    }
}

/// A door jobs wait at until the test opens it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn results_come_back_to_the_loop() {
    let mut r = Reactor::<Msg>::new().unwrap();
    let pool = WorkerPool::new(2, 100, r.remote(), on_panic).unwrap();
    assert_eq!(pool.threads(), 2);
    for t in 0..50u64 {
        pool.submit(t, move |_| Msg::Done(t, t * t)).unwrap();
    }
    let mut h = Collect { got: Vec::new() };
    collect(&mut r, &mut h, 50);
    let mut got: Vec<(u64, u64)> = h
        .got
        .iter()
        .map(|m| match m {
            Msg::Done(t, v) => (*t, *v),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..50).map(|t| (t, t * t)).collect::<Vec<_>>());
    pool.shutdown();
}

#[test]
fn a_panicking_job_comes_back_as_on_panic() {
    let mut r = Reactor::<Msg>::new().unwrap();
    let pool = WorkerPool::new(1, 10, r.remote(), on_panic).unwrap();
    let mut h = Collect { got: Vec::new() };

    pool.submit(7, |_| panic!("boom {}", 7)).unwrap(); // String payload
    collect(&mut r, &mut h, 1);
    assert_eq!(h.got.pop(), Some(Msg::Panicked(7, "boom 7".to_string())));

    pool.submit(8, |_| std::panic::panic_any(42u32)).unwrap(); // neither &str nor String
    collect(&mut r, &mut h, 1);
    assert_eq!(h.got.pop(), Some(Msg::Panicked(8, "job panicked".to_string())));

    // The single worker survived both panics and still runs jobs.
    pool.submit(9, |_| Msg::Done(9, 1)).unwrap();
    collect(&mut r, &mut h, 1);
    assert_eq!(h.got.pop(), Some(Msg::Done(9, 1)));
    assert_eq!(pool.running(), 0);
    pool.shutdown();
}

#[test]
fn a_full_queue_refuses_work() {
    let mut r = Reactor::<Msg>::new().unwrap();
    let pool = WorkerPool::new(1, 2, r.remote(), on_panic).unwrap();
    let gate = Arc::new(Gate::default());

    // The only worker takes job 0 and blocks in it.
    let g = gate.clone();
    pool.submit(0, move |_| {
        g.wait();
        Msg::Done(0, 0)
    })
    .unwrap();
    wait_for("job 0 to start", || pool.running() == 1 && pool.queued() == 0);

    // Two more fill the queue (capacity 2); the third is refused.
    for t in 1..=2u64 {
        let g = gate.clone();
        pool.submit(t, move |_| {
            g.wait();
            Msg::Done(t, 0)
        })
        .unwrap();
    }
    assert_eq!(pool.queued(), 2);
    assert_eq!(pool.submit(3, |_| Msg::Done(3, 0)), Err(SubmitError::Full));
    assert_eq!(pool.queued(), 2, "a refused job is not queued");

    gate.open();
    let mut h = Collect { got: Vec::new() };
    collect(&mut r, &mut h, 3);
    assert_eq!(h.got, vec![Msg::Done(0, 0), Msg::Done(1, 0), Msg::Done(2, 0)], "one worker: FIFO");
    // Room again.
    pool.submit(4, |_| Msg::Done(4, 0)).unwrap();
    collect(&mut r, &mut h, 4);
    pool.shutdown();
}

// ---------------------------------------------------------------------------------------

/// Counts threads that have exited: a thread-local whose destructor runs at thread exit.
struct ExitMarker(Arc<AtomicUsize>);

impl Drop for ExitMarker {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static MARKER: RefCell<Option<ExitMarker>> = const { RefCell::new(None) };
}

/// Counts drops of a queued job's closure (that is, of the job itself).
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn shutdown_drops_queued_jobs_finishes_running_ones_and_joins_threads() {
    let mut r = Reactor::<Msg>::new().unwrap();
    let pool = WorkerPool::new(2, 10, r.remote(), on_panic).unwrap();
    let exited = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Barrier::new(3));
    let gate = Arc::new(Gate::default());

    // Two jobs, one per worker (the barrier proves both run at once, so on two threads).
    for t in 0..2u64 {
        let (exited, started, gate) = (exited.clone(), started.clone(), gate.clone());
        pool.submit(t, move |_| {
            MARKER.with(|m| *m.borrow_mut() = Some(ExitMarker(exited)));
            started.wait();
            gate.wait();
            Msg::Done(t, 1)
        })
        .unwrap();
    }
    started.wait();

    // Three more wait in the queue; they must be dropped without running.
    let ran = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    for t in 10..13u64 {
        let ran = ran.clone();
        let token = DropCount(dropped.clone());
        pool.submit(t, move |_| {
            let _keep = &token;
            ran.fetch_add(1, Ordering::SeqCst);
            Msg::Done(t, 0)
        })
        .unwrap();
    }
    assert_eq!(pool.queued(), 3);

    // Open the gate only once shutdown has cleared the queue, so the workers, free again,
    // cannot pick up the queued jobs first.
    let opener = {
        let (gate, dropped) = (gate.clone(), dropped.clone());
        std::thread::spawn(move || {
            wait_for("shutdown to drop the queued jobs", || dropped.load(Ordering::SeqCst) == 3);
            gate.open();
        })
    };
    pool.shutdown(); // returns only once both workers are joined
    opener.join().unwrap();

    assert_eq!(exited.load(Ordering::SeqCst), 2, "both worker threads have exited");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "queued jobs must not run after shutdown");
    assert_eq!(dropped.load(Ordering::SeqCst), 3);
    assert_eq!(Arc::strong_count(&gate), 1, "running jobs' closures were released");
    assert_eq!(Arc::strong_count(&started), 1);

    // The running jobs finished and their results were posted.
    let mut h = Collect { got: Vec::new() };
    collect(&mut r, &mut h, 2);
    h.got.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(h.got, vec![Msg::Done(0, 1), Msg::Done(1, 1)]);
}

// ---------------------------------------------------------------------------------------

#[test]
fn cancel_removes_a_queued_job_and_stops_a_running_one() {
    let mut r = Reactor::<Msg>::new().unwrap();
    let pool = WorkerPool::new(1, 10, r.remote(), on_panic).unwrap();
    let mut h = Collect { got: Vec::new() };

    // Job 0 runs until it is told to stop (or 10 s, so a broken cancel fails, not hangs).
    pool.submit(0, |stop| {
        let start = Instant::now();
        while !stop.is_raised() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        Msg::Done(0, stop.is_raised() as u64)
    })
    .unwrap();
    wait_for("job 0 to start", || pool.running() == 1 && pool.queued() == 0);

    // Job 1 waits behind it; cancelled, it is dropped without running.
    let ran = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    {
        let (ran, token) = (ran.clone(), DropCount(dropped.clone()));
        pool.submit(1, move |_| {
            let _keep = &token;
            ran.fetch_add(1, Ordering::SeqCst);
            Msg::Done(1, 0)
        })
        .unwrap();
    }
    assert_eq!(pool.queued(), 1);
    assert_eq!(pool.cancel(1), Cancelled::Dequeued);
    assert_eq!((pool.queued(), dropped.load(Ordering::SeqCst)), (0, 1), "the queued job is gone");
    assert_eq!(pool.cancel(1), Cancelled::NotFound);
    assert_eq!(pool.cancel(99), Cancelled::NotFound);

    // The running job sees its signal and returns; its message still comes back.
    let t0 = Instant::now();
    assert_eq!(pool.cancel(0), Cancelled::Signalled);
    collect(&mut r, &mut h, 1);
    assert_eq!(h.got.pop(), Some(Msg::Done(0, 1)), "job 0 stopped because of the signal");
    assert!(t0.elapsed() < Duration::from_secs(2), "stopped after {:?}", t0.elapsed());
    wait_for("the worker to be free", || pool.running() == 0);
    assert_eq!(pool.cancel(0), Cancelled::NotFound, "a finished job cannot be cancelled");

    // The worker takes new jobs; the cancelled one never ran.
    pool.submit(2, |stop| Msg::Done(2, stop.is_raised() as u64)).unwrap();
    collect(&mut r, &mut h, 1);
    assert_eq!(h.got.pop(), Some(Msg::Done(2, 0)), "a new job starts with its signal down");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    pool.shutdown();
}

#[test]
fn shutdown_raises_the_signal_of_running_jobs() {
    let mut r = Reactor::<Msg>::new().unwrap();
    let pool = WorkerPool::new(1, 10, r.remote(), on_panic).unwrap();
    pool.submit(5, |stop| {
        let start = Instant::now();
        while !stop.is_raised() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        Msg::Done(5, stop.is_raised() as u64)
    })
    .unwrap();
    wait_for("job 5 to start", || pool.running() == 1);
    let t0 = Instant::now();
    pool.shutdown();
    assert!(t0.elapsed() < Duration::from_secs(2), "shutdown took {:?}", t0.elapsed());
    let mut h = Collect { got: Vec::new() };
    collect(&mut r, &mut h, 1);
    assert_eq!(h.got, vec![Msg::Done(5, 1)]);
}

/// The nice value (field 19 of /proc/thread-self/stat) of the calling thread.
fn thread_nice() -> i64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(19 - 3).unwrap().parse().unwrap()
}

#[test]
fn workers_run_at_a_lower_priority_than_the_thread_that_started_them() {
    let before = thread_nice();
    assert!(before < reactor::pool::WORKER_NICE as i64, "this test needs to start below nice 10");
    let mut r = Reactor::<Msg>::new().unwrap();
    let pool = WorkerPool::new(2, 10, r.remote(), on_panic).unwrap();
    for t in 0..4u64 {
        pool.submit(t, |_| Msg::Done(0, thread_nice() as u64)).unwrap();
    }
    let mut h = Collect { got: Vec::new() };
    collect(&mut r, &mut h, 4);
    assert!(h.got.iter().all(|m| *m == Msg::Done(0, 10)), "{:?}", h.got);
    assert_eq!(thread_nice(), before, "the calling thread keeps its priority");
    pool.shutdown();
}
