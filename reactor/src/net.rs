//! TCP sockets for servers built on the reactor: a non-blocking listener and accepted streams.
//!
//! These are thin owners around [`sys`] calls. They do not register themselves anywhere:
//! the owner registers `fd()` with the [`Reactor`](crate::Reactor) and must deregister it
//! before dropping the socket (dropping closes the fd).

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::sys::{self, Fd};

/// Options for [`Listener::bind`].
#[derive(Clone, Copy, Debug)]
pub struct ListenOptions {
    /// SO_REUSEPORT: several sockets (one per reactor thread or process) may bind the same
    /// port, and the kernel spreads incoming connections between them.
    pub reuse_port: bool,
    /// Length of the queue of connections the kernel completes before we accept them.
    pub backlog: i32,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions { reuse_port: false, backlog: 1024 }
    }
}

/// A listening TCP socket (non-blocking, close-on-exec, SO_REUSEADDR).
#[derive(Debug)]
pub struct Listener {
    fd: Fd,
    addr: SocketAddr,
}

impl Listener {
    pub fn bind(addr: SocketAddr, opts: ListenOptions) -> io::Result<Listener> {
        let fd = sys::tcp_listen(&addr, opts.reuse_port, opts.backlog)?;
        let addr = sys::local_addr(fd.raw())?;
        Ok(Listener { fd, addr })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn fd(&self) -> RawFd {
        self.fd.raw()
    }

    /// Accepts one pending connection. `WouldBlock` when the queue is empty; EMFILE/ENFILE
    /// when out of descriptors (the connection stays queued: see the HTTP server for how it
    /// avoids spinning on that).
    pub fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        let (fd, peer) = sys::accept(self.fd.raw())?;
        Ok((Stream { fd }, peer))
    }
}

/// A connected, non-blocking TCP stream.
#[derive(Debug)]
pub struct Stream {
    fd: Fd,
}

impl Stream {
    /// Starts connecting to `addr` without blocking: register the stream for WRITABLE; when
    /// it is writable, [`take_error`](Self::take_error) says whether the connect succeeded.
    pub fn connect(addr: SocketAddr) -> io::Result<Stream> {
        Ok(Stream { fd: sys::tcp_connect(&addr)? })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.raw()
    }

    /// Appends what is available to `buf`, up to its spare capacity. `Ok(0)` = end of stream.
    pub fn read_into(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        sys::read_into_spare(self.fd.raw(), buf)
    }

    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        sys::write(self.fd.raw(), buf)
    }

    /// One `writev` of several buffers (at most 64 per call): how a batch of responses leaves
    /// in a single syscall without being copied together first.
    pub fn writev(&self, bufs: &[&[u8]]) -> io::Result<usize> {
        sys::writev(self.fd.raw(), bufs)
    }

    /// TCP_NODELAY: see `sys::set_nodelay` for the Nagle + delayed-ACK stall it prevents.
    pub fn set_nodelay(&self) -> io::Result<()> {
        sys::set_nodelay(self.fd.raw())
    }

    /// TCP_QUICKACK: acknowledge what was received right away. See `sys::set_quickack`.
    pub fn set_quickack(&self) -> io::Result<()> {
        sys::set_quickack(self.fd.raw())
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        sys::shutdown_write(self.fd.raw())
    }

    /// The pending socket error, if any (after EPOLLERR: usually ECONNRESET).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        sys::take_socket_error(self.fd.raw())
    }
}
