//! Connection buffers: taken when there are bytes to hold, given back when there are none.
//!
//! An idle keep-alive connection or one parked on a long-poll holds no buffer at all: its
//! read buffer and output buffer go back to a shared [`BufferPool`] as soon as they are empty,
//! and come back from the pool (already allocated) when the next bytes arrive. That keeps the
//! user-space cost of a waiting client to the connection struct itself (a few hundred bytes),
//! while a busy connection reuses warm buffers instead of allocating per request.
//!
//! [`Output`] is a connection's pending output: a byte buffer for heads and small bodies,
//! followed by a queue of large bodies that are written with `writev` straight from where the
//! application built them, never copied. A large *shared* body (one answer fanned out to many
//! subscribers) is queued by reference: ten thousand connections that have not read it yet
//! hold one copy of it between them, plus their own heads.
//!
//! When the socket is full, [`Output::park`] moves the few pending bytes of a pooled buffer
//! into a buffer of their own size: a client that stops reading then pins its unsent bytes,
//! not a whole pool buffer.

use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use reactor::net::Stream;

/// Owned bodies at least this large are queued as they are instead of copied into the buffer.
const QUEUE_THRESHOLD: usize = 16 * 1024;
/// Shared bodies at least this large are queued by reference. Smaller ones are copied: a
/// copy that size costs less than the extra `writev` entry, and no more memory than the head.
const SHARE_THRESHOLD: usize = 512;

/// A body waiting in the queue: owned by this connection, or shared with others.
enum Queued {
    Owned(Vec<u8>),
    Shared(Rc<[u8]>),
}

impl Queued {
    fn bytes(&self) -> &[u8] {
        match self {
            Queued::Owned(v) => v,
            Queued::Shared(b) => b,
        }
    }
}

/// A free list of byte buffers of one nominal size.
pub struct BufferPool {
    free: Vec<Vec<u8>>,
    size: usize,
    max_free: usize,
}

impl BufferPool {
    pub fn new(size: usize, max_free: usize) -> BufferPool {
        BufferPool { free: Vec::new(), size, max_free }
    }

    /// An empty buffer with at least `size` bytes of capacity.
    pub fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Returns a buffer. Oversized ones (grown for a big body) are freed instead of kept.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() >= self.size && buf.capacity() <= 4 * self.size && self.free.len() < self.max_free {
            buf.clear();
            self.free.push(buf);
        }
    }
}

/// A piece of a stream's body: bytes to copy, or bytes shared with other streams (queued by
/// reference when large).
#[derive(Clone, Copy)]
pub(crate) enum Piece<'a> {
    Copied(&'a [u8]),
    Shared(&'a Rc<[u8]>),
}

impl Piece<'_> {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Piece::Copied(b) => b,
            Piece::Shared(b) => b,
        }
    }

    /// Appends the piece to `out`.
    pub(crate) fn push(self, out: &mut Output, pool: &mut BufferPool) {
        match self {
            Piece::Copied(b) => out.push_copy(pool, b),
            Piece::Shared(b) => out.push_shared(pool, b),
        }
    }
}

/// Pending output of one connection, in order: `buf[off..]`, then each queued body.
#[derive(Default)]
pub struct Output {
    buf: Vec<u8>,
    off: usize,
    queued: VecDeque<Queued>,
    queued_off: usize,
    len: usize,
}

impl Output {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer to append small output to (taken from `pool` if the connection holds none).
    /// Call [`Output::commit`] after appending.
    pub fn tail(&mut self, pool: &mut BufferPool) -> &mut Vec<u8> {
        if !self.queued.is_empty() {
            // Small output behind a queued body goes after it, in an owned buffer of its own.
            if !matches!(self.queued.back(), Some(Queued::Owned(_))) {
                self.queued.push_back(Queued::Owned(Vec::new()));
            }
            if let Some(Queued::Owned(last)) = self.queued.back_mut() {
                return last;
            }
        }
        if self.buf.capacity() == 0 {
            self.buf = pool.take();
        }
        &mut self.buf
    }

    /// Records that `n` bytes were appended through [`Output::tail`].
    pub fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// Appends `bytes` by copying (small data).
    pub fn push_copy(&mut self, pool: &mut BufferPool, bytes: &[u8]) {
        self.tail(pool).extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends an owned body: copied if small, queued as-is if large.
    pub fn push_owned(&mut self, pool: &mut BufferPool, bytes: Vec<u8>) {
        if bytes.len() < QUEUE_THRESHOLD {
            self.push_copy(pool, &bytes);
        } else {
            self.len += bytes.len();
            self.queued.push_back(Queued::Owned(bytes));
        }
    }

    /// Appends a body shared with other connections: copied if small, else queued by
    /// reference (one more count on the same bytes, however many connections send them).
    pub fn push_shared(&mut self, pool: &mut BufferPool, bytes: &Rc<[u8]>) {
        if bytes.len() < SHARE_THRESHOLD {
            self.push_copy(pool, bytes);
        } else {
            self.len += bytes.len();
            self.queued.push_back(Queued::Shared(bytes.clone()));
        }
    }

    /// The socket is full and bytes remain: if they sit in a pooled buffer much larger than
    /// they are, move them to an exact-size buffer and give the pooled one back. A client that
    /// never reads then costs its unsent bytes, not a pool buffer (16 KiB by default).
    pub fn park(&mut self, pool: &mut BufferPool) {
        let pending = self.buf.len() - self.off;
        if self.buf.capacity() >= pool.size && pending <= self.buf.capacity() / 4 {
            let small = self.buf[self.off..].to_vec();
            pool.give(std::mem::replace(&mut self.buf, small));
            self.off = 0;
        }
    }

    /// Writes as much as the socket takes, with one `write` (or one `writev` when large bodies
    /// are queued) per call. Returns bytes written; `WouldBlock` when the socket is full.
    pub fn write_to(&mut self, stream: &Stream, pool: &mut BufferPool) -> io::Result<usize> {
        let n = if self.queued.is_empty() {
            stream.write(&self.buf[self.off..])?
        } else {
            let mut parts: [&[u8]; 16] = [&[]; 16];
            parts[0] = &self.buf[self.off..];
            let mut count = 1;
            for (i, q) in self.queued.iter().take(parts.len() - 1).enumerate() {
                let q = q.bytes();
                parts[count] = if i == 0 { &q[self.queued_off..] } else { q };
                count += 1;
            }
            stream.writev(&parts[..count])?
        };
        self.advance(n, pool);
        Ok(n)
    }

    fn advance(&mut self, mut n: usize, pool: &mut BufferPool) {
        self.len -= n;
        let in_buf = (self.buf.len() - self.off).min(n);
        self.off += in_buf;
        n -= in_buf;
        if self.off == self.buf.len() && self.off > 0 {
            self.buf.clear();
            self.off = 0;
        }
        while n > 0 {
            let Some(front) = self.queued.front() else { break };
            let left = front.bytes().len() - self.queued_off;
            if n >= left {
                n -= left;
                self.queued.pop_front();
                self.queued_off = 0;
            } else {
                self.queued_off += n;
                n = 0;
            }
        }
        if self.len == 0 {
            self.release(pool);
        }
    }

    /// Gives the buffer back to the pool (when nothing is pending, or the connection closes).
    pub fn release(&mut self, pool: &mut BufferPool) {
        if self.buf.capacity() > 0 {
            pool.give(std::mem::take(&mut self.buf));
        }
        self.off = 0;
        // Drop the queue's allocation too (`clear` would keep it): idle connections hold none.
        self.queued = VecDeque::new();
        self.queued_off = 0;
        self.len = 0;
    }
}
