//! Connection buffers: taken when there are bytes to hold, given back when there are none.
//!
//! An idle keep-alive connection or one parked on a long-poll holds no buffer at all: its
//! read buffer and output buffer go back to a shared [`BufferPool`] as soon as they are empty,
//! and come back from the pool (already allocated) when the next bytes arrive. That keeps the
//! user-space cost of a waiting client to the connection struct itself (a few hundred bytes),
//! while a busy connection reuses warm buffers instead of allocating per request.
//!
//! [`Output`] is a connection's pending output: a byte buffer for heads and small bodies,
//! followed by a queue of large owned bodies that are written with `writev` straight from
//! where the application built them, never copied.

use std::collections::VecDeque;
use std::io;

use reactor::net::Stream;

/// Bodies at least this large are queued as they are instead of copied into the buffer.
const QUEUE_THRESHOLD: usize = 16 * 1024;

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

    pub fn free_buffers(&self) -> usize {
        self.free.len()
    }
}

/// Pending output of one connection, in order: `buf[off..]`, then each queued body.
#[derive(Default)]
pub struct Output {
    buf: Vec<u8>,
    off: usize,
    queued: VecDeque<Vec<u8>>,
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
        if let Some(last) = self.queued.back_mut() {
            return last;
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
            self.queued.push_back(bytes);
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
            let left = front.len() - self.queued_off;
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
        self.queued.clear();
        self.queued_off = 0;
        self.len = 0;
    }
}
