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
//! Shutdown: jobs not yet started are dropped, jobs already running finish, and every thread
//! is joined.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::remote::Remote;

type Job<M> = Box<dyn FnOnce() -> M + Send>;

/// Why a job was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue already holds `capacity` waiting jobs.
    Full,
    /// The pool is shutting down.
    ShutDown,
}

struct Queue<M> {
    jobs: VecDeque<(u64, Job<M>)>,
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
    /// Starts `threads` workers (at least 1) with room for `capacity` waiting jobs.
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
                idle: 0,
                shutting_down: false,
            }),
            job_ready: Condvar::new(),
            capacity,
            running: AtomicUsize::new(0),
            remote,
            on_panic,
        });
        let mut pool = WorkerPool { shared, threads: Vec::new() };
        for i in 0..threads.max(1) {
            let shared = pool.shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("tidings-worker-{i}"))
                .spawn(move || worker(&shared))?;
            pool.threads.push(t);
        }
        Ok(pool)
    }

    /// Queues `job`; its result (or `on_panic(ticket, ..)`) is posted to the loop when done.
    /// Never blocks.
    pub fn submit<F>(&self, ticket: u64, job: F) -> Result<(), SubmitError>
    where
        F: FnOnce() -> M + Send + 'static,
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

    /// Drops the jobs not yet started, lets running ones finish, joins every thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        {
            let mut q = lock(&self.shared.queue);
            q.shutting_down = true;
            q.jobs.clear();
        }
        self.shared.job_ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
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

fn worker<M: Send + 'static>(shared: &Shared<M>) {
    loop {
        let (ticket, job) = {
            let mut q = lock(&shared.queue);
            loop {
                if q.shutting_down {
                    return;
                }
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                q.idle += 1;
                q = shared.job_ready.wait(q).unwrap_or_else(|p| p.into_inner());
                q.idle -= 1;
            }
        };
        shared.running.fetch_add(1, Ordering::Relaxed);
        let msg = match catch_unwind(AssertUnwindSafe(job)) {
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
        shared.running.fetch_sub(1, Ordering::Relaxed);
        // If the loop is gone the result has nobody to go to; drop it.
        let _ = shared.remote.post(msg);
    }
}
