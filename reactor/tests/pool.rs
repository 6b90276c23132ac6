//! The worker pool, driven through a real reactor: results come back as messages, a panicking
//! job comes back as `on_panic(ticket, text)`, a full queue refuses work, and shutdown drops
//! queued jobs, lets running ones finish and joins every thread.
//!
//! Jobs that must stay busy block on a `Gate`, so "the queue is full" is a fact of the test,
//! not a matter of timing.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use reactor::{Event, Handler, Reactor, SubmitError, WorkerPool};

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
        pool.submit(t, move || Msg::Done(t, t * t)).unwrap();
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

    pool.submit(7, || panic!("boom {}", 7)).unwrap(); // String payload
    collect(&mut r, &mut h, 1);
    assert_eq!(h.got.pop(), Some(Msg::Panicked(7, "boom 7".to_string())));

    pool.submit(8, || std::panic::panic_any(42u32)).unwrap(); // neither &str nor String
    collect(&mut r, &mut h, 1);
    assert_eq!(h.got.pop(), Some(Msg::Panicked(8, "job panicked".to_string())));

    // The single worker survived both panics and still runs jobs.
    pool.submit(9, || Msg::Done(9, 1)).unwrap();
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
    pool.submit(0, move || {
        g.wait();
        Msg::Done(0, 0)
    })
    .unwrap();
    wait_for("job 0 to start", || pool.running() == 1 && pool.queued() == 0);

    // Two more fill the queue (capacity 2); the third is refused.
    for t in 1..=2u64 {
        let g = gate.clone();
        pool.submit(t, move || {
            g.wait();
            Msg::Done(t, 0)
        })
        .unwrap();
    }
    assert_eq!(pool.queued(), 2);
    assert_eq!(pool.submit(3, || Msg::Done(3, 0)), Err(SubmitError::Full));
    assert_eq!(pool.queued(), 2, "a refused job is not queued");

    gate.open();
    let mut h = Collect { got: Vec::new() };
    collect(&mut r, &mut h, 3);
    assert_eq!(h.got, vec![Msg::Done(0, 0), Msg::Done(1, 0), Msg::Done(2, 0)], "one worker: FIFO");
    // Room again.
    pool.submit(4, || Msg::Done(4, 0)).unwrap();
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
        pool.submit(t, move || {
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
        pool.submit(t, move || {
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
