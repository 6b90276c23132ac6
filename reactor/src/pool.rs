//! A worker pool for blocking or CPU-heavy jobs, so they never run on the loop's thread.
//!
//! The loop calls [`WorkerPool::submit`], which only pushes the job on a bounded queue and
//! returns at once. A worker thread runs it and posts the result back through the loop's
//! [`Remote`]; the loop then sees it as an ordinary message, in its own thread, where it may
//! touch sockets and state. If the job panics, the panic is caught and the pool posts the
//! message built by `on_panic(ticket, text)` instead, so the loop can answer the client
//! (the old server's blocking handler froze every client; a panicking one would have killed
//! the worker).
//!
//! The queue is bounded: when `capacity` jobs are already waiting, `submit` returns
//! [`SubmitError::Full`] rather than blocking the loop or growing memory without bound. The
//! caller decides what that means (the hub answers 503 with Retry-After).
//!
//! A job nobody waits for any more (its client left) must not hold a thread or a queue slot:
//! [`WorkerPool::cancel`] takes a queued job out of the queue (it never runs, and no message
//! comes back for it), or raises the [`StopSignal`] a running job was handed, so that it
//! returns early (its message still comes back). A job that never looks at its signal runs to
//! its end: stopping is cooperative, a thread cannot be killed safely.
//!
//! Workers run at a lower scheduling priority than the loop ([`WORKER_NICE`]): when every core
//! is busy with jobs, the kernel still gives the loop's thread the CPU first, so short requests
//! keep their latency. Each worker sets it for itself when it starts; if the kernel refuses, one
//! line goes to stderr and the workers run at the loop's priority.
//!
//! Shutdown: jobs not yet started are dropped, running jobs are told to stop (their signal is
//! raised) and finish, and every thread is joined.

use std::collections::VecDeque;
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;

use crate::remote::Remote;
use crate::sys;

type Job<M> = Box<dyn FnOnce(&StopSignal) -> M + Send>;

/// The nice value every worker thread gives itself (the loop's thread keeps the process's,
/// normally 0): on a machine whose cores are all busy with jobs, the loop still gets the CPU
/// first. 10 is the usual "background work" step of `nice(1)`.
pub const WORKER_NICE: i32 = 10;

/// Why a job was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue already holds `capacity` waiting jobs.
    Full,
    /// The pool is shutting down.
    ShutDown,
}

/// What [`WorkerPool::cancel`] found for a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The job was waiting in the queue and is removed: it will never run, and no message
    /// will come back for it.
    Dequeued,
    /// The job is running and its [`StopSignal`] is raised: it returns early if it looks at
    /// the signal, and its message (or `on_panic`'s) still comes back.
    Signalled,
    /// No queued or running job has this ticket: it is done (its message is on its way or
    /// already delivered), or it never existed.
    NotFound,
}

/// Handed to a running job: raised when its result is no longer wanted (its client left, or
/// the pool is shutting down). A long job checks it now and then and returns early.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    pub fn new() -> StopSignal {
        StopSignal::default()
    }

    /// Whether the job should stop.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn raise(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct Queue<M> {
    jobs: VecDeque<(u64, Job<M>)>,
    /// Jobs being run, with the signal each was handed (at most one per thread).
    running: Vec<(u64, StopSignal)>,
    /// Workers blocked waiting for a job: that many queued jobs are about to start, so they
    /// do not count as "waiting" against the capacity.
    idle: usize,
    shutting_down: bool,
}

struct Shared<M> {
    queue: Mutex<Queue<M>>,
    job_ready: Condvar,
    capacity: usize,
    running: AtomicUsize,
    remote: Remote<M>,
    on_panic: fn(u64, String) -> M,
}

/// N threads running jobs whose results go back to the loop as messages of type `M`.
pub struct WorkerPool<M: Send + 'static> {
    shared: Arc<Shared<M>>,
    threads: Vec<JoinHandle<()>>,
}

impl<M: Send + 'static> WorkerPool<M> {
    /// Starts `threads` workers (at least 1) with room for `capacity` waiting jobs. If a
    /// thread cannot be started, the ones already started are told to stop and let go (not joined), and the
    /// error says which thread failed.
    pub fn new(
        threads: usize,
        capacity: usize,
        remote: Remote<M>,
        on_panic: fn(u64, String) -> M,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                // Grown on demand: a huge `capacity` (e.g. `--work-queue` 10^12) must not be
                // allocated up front (that would abort, or panic with "capacity overflow").
                jobs: VecDeque::with_capacity(capacity.min(1024)),
                running: Vec::new(),
                idle: 0,
                shutting_down: false,
            }),
            job_ready: Condvar::new(),
            capacity,
            running: AtomicUsize::new(0),
            remote,
            on_panic,
        });
        let total = threads.max(1);
        let mut pool = WorkerPool { shared, threads: Vec::with_capacity(total.min(1024)) };
        for i in 0..total {
            let shared = pool.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tidings-worker-{i}"))
                .spawn(move || worker(&shared));
            match spawned {
                Ok(t) => pool.threads.push(t),
                // The threads already started are told to stop and let go, not joined: this
                // happens when memory or threads run out, where a started thread may itself
                // be stuck (std's out-of-memory path can deadlock in a thread that runs out
                // while reporting it), and the caller is about to exit with the error.
                Err(e) => {
                    pool.stop_and_detach();
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("cannot start worker thread {} of {total}: {e}", i + 1),
                    ));
                }
            }
        }
        Ok(pool)
    }

    /// Queues `job`; its result (or `on_panic(ticket, ..)`) is posted to the loop when done.
    /// The job is handed a [`StopSignal`], raised by [`cancel`](Self::cancel) with the same
    /// ticket or by shutdown. Never blocks.
    pub fn submit<F>(&self, ticket: u64, job: F) -> Result<(), SubmitError>
    where
        F: FnOnce(&StopSignal) -> M + Send + 'static,
    {
        let mut q = lock(&self.shared.queue);
        if q.shutting_down {
            return Err(SubmitError::ShutDown);
        }
        // Capacity counts jobs that wait for a thread, not the ones an idle thread is about
        // to take: with capacity 0, a job is still accepted while a worker is free.
        if q.jobs.len() >= self.shared.capacity.saturating_add(q.idle) {
            return Err(SubmitError::Full);
        }
        q.jobs.push_back((ticket, Box::new(job)));
        drop(q);
        self.shared.job_ready.notify_one();
        Ok(())
    }

    /// The job of `ticket` is no longer wanted: removed from the queue if it waits there (the
    /// first one with that ticket), told to stop if it runs. Never blocks for longer than a
    /// scan of the queue.
    pub fn cancel(&self, ticket: u64) -> Cancelled {
        let mut q = lock(&self.shared.queue);
        if let Some(at) = q.jobs.iter().position(|(t, _)| *t == ticket) {
            let removed = q.jobs.remove(at);
            drop(q);
            drop(removed); // the job's closure is dropped outside the lock
            return Cancelled::Dequeued;
        }
        match q.running.iter().find(|(t, _)| *t == ticket) {
            Some((_, stop)) => {
                stop.raise();
                Cancelled::Signalled
            }
            None => Cancelled::NotFound,
        }
    }

    /// Jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        let q = lock(&self.shared.queue);
        q.jobs.len().saturating_sub(q.idle)
    }

    /// Jobs being run right now.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::Relaxed)
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Drops the jobs not yet started, tells running ones to stop and lets them finish,
    /// joins every thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.signal_stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Tells every thread to stop and drops their handles without waiting for them.
    fn stop_and_detach(&mut self) {
        self.signal_stop();
        self.threads.clear();
    }

    /// Marks the pool shutting down, drops the queued jobs, raises the running ones' stop
    /// signals and wakes every idle thread (so each returns from `worker`).
    fn signal_stop(&mut self) {
        let dropped = {
            let mut q = lock(&self.shared.queue);
            q.shutting_down = true;
            for (_, stop) in &q.running {
                stop.raise();
            }
            std::mem::take(&mut q.jobs)
        };
        drop(dropped); // outside the lock: a job's captured state may take time to drop
        self.shared.job_ready.notify_all();
    }
}

impl<M: Send + 'static> Drop for WorkerPool<M> {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A job panicking never holds this lock (jobs run outside it), so poisoning cannot come
    // from user code; recover the guard anyway rather than propagating a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lowers the calling worker's priority to [`WORKER_NICE`]; the first failure of the process
/// is reported once on stderr (written without `eprintln!`, which panics on a closed stderr).
fn lower_priority() {
    static REPORTED: Once = Once::new();
    if let Err(e) = sys::set_thread_nice(WORKER_NICE) {
        REPORTED.call_once(|| {
            let _ = writeln!(
                std::io::stderr().lock(),
                "tidings: worker threads keep the loop's priority (setting nice {WORKER_NICE} failed: {e})"
            );
        });
    }
}

fn worker<M: Send + 'static>(shared: &Shared<M>) {
    lower_priority();
    loop {
        let (ticket, job, stop) = {
            let mut q = lock(&shared.queue);
            loop {
                if q.shutting_down {
                    return;
                }
                if let Some((ticket, job)) = q.jobs.pop_front() {
                    let stop = StopSignal::new();
                    q.running.push((ticket, stop.clone()));
                    break (ticket, job, stop);
                }
                q.idle += 1;
                q = shared.job_ready.wait(q).unwrap_or_else(|p| p.into_inner());
                q.idle -= 1;
            }
        };
        shared.running.fetch_add(1, Ordering::Relaxed);
        let msg = match catch_unwind(AssertUnwindSafe(|| job(&stop))) {
            Ok(msg) => msg,
            Err(payload) => {
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "job panicked".to_string());
                (shared.on_panic)(ticket, text)
            }
        };
        {
            let mut q = lock(&shared.queue);
            if let Some(at) = q.running.iter().position(|(_, s)| Arc::ptr_eq(&s.0, &stop.0)) {
                q.running.swap_remove(at);
            }
        }
        shared.running.fetch_sub(1, Ordering::Relaxed);
        // If the loop is gone the result has nobody to go to; drop it.
        let _ = shared.remote.post(msg);
    }
}
