//! Cross-thread wake-up: the one door through which other threads reach the loop.
//!
//! The loop is single-threaded: only its thread touches sockets, timers and application
//! state. Another thread (a worker that finished a job, a test, a signal-free shutdown) that
//! wants the loop to do something hands it a message through a [`Remote`]:
//!
//! 1. push the message on a mutex-protected queue (FIFO: messages from one sender keep their
//!    order);
//! 2. if no wake-up is pending yet, write to an eventfd that is registered with the loop's
//!    epoll, which makes `epoll_wait` return.
//!
//! The "wake-up pending" flag is what coalesces wake-ups: after the first post sets it, the
//! next 99,999 posts of a burst only push and skip the `write(2)`. The loop clears the flag
//! *before* it takes the queue, so a post that races with the drain either lands in the queue
//! the loop is about to take, or sees the flag cleared and writes the eventfd again: a post can
//! cause a spurious (empty) wake-up, but can never be left in the queue with the loop asleep.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::sys::{self, Fd};

pub(crate) struct Shared<M> {
    queue: Mutex<VecDeque<M>>,
    wake_pending: AtomicBool,
    closed: AtomicBool,
    pub(crate) eventfd: Fd,
    pub(crate) posts: AtomicU64,
    pub(crate) eventfd_writes: AtomicU64,
}

/// A handle other threads use to post messages to the loop. Cheap to clone; `Send + Sync`
/// whenever the message type is `Send`.
pub struct Remote<M> {
    shared: Arc<Shared<M>>,
}

impl<M> Clone for Remote<M> {
    fn clone(&self) -> Self {
        Remote { shared: self.shared.clone() }
    }
}

impl<M> Shared<M> {
    pub(crate) fn new() -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            wake_pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            eventfd: sys::eventfd()?,
            posts: AtomicU64::new(0),
            eventfd_writes: AtomicU64::new(0),
        }))
    }

    /// Called by the loop when the eventfd is readable: resets the counter and the flag, then
    /// moves every queued message into `into` (swapping buffers, so the lock is held briefly
    /// and no allocation happens once both buffers are warm).
    pub(crate) fn take_all(&self, into: &mut VecDeque<M>) {
        let _ = sys::eventfd_drain(self.eventfd.raw());
        // Clear the flag before taking the queue: see the module docs for why this order
        // cannot lose a wake-up.
        self.wake_pending.store(false, Ordering::SeqCst);
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *q, into);
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

impl<M> Remote<M> {
    pub(crate) fn from_shared(shared: Arc<Shared<M>>) -> Self {
        Remote { shared }
    }

    /// Hands `msg` to the loop. Returns it back if the loop no longer exists.
    pub fn post(&self, msg: M) -> Result<(), M> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(msg);
        }
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner()).push_back(msg);
        self.shared.posts.fetch_add(1, Ordering::Relaxed);
        if !self.shared.wake_pending.swap(true, Ordering::SeqCst) {
            self.shared.eventfd_writes.fetch_add(1, Ordering::Relaxed);
            // An error here would mean the eventfd is gone, i.e. the loop is being dropped.
            let _ = sys::eventfd_signal(self.shared.eventfd.raw());
        }
        Ok(())
    }

    /// Whether the loop has been dropped (posts would be refused).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }
}
