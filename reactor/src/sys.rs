//! The thin syscall layer: every `unsafe` block of the project lives in this file.
//!
//! Each function wraps exactly one system call (or one tightly related pair), turns
//! `-1 + errno` into `io::Error`, and says in a `// SAFETY:` line why the call is sound.
//! Nothing here knows about events, timers or HTTP; the rest of the reactor and the
//! HTTP crate are written in safe Rust on top of these wrappers, the way mio's
//! `sys/unix` sits under mio.
//!
//! Only what the product calls is here. Probes that only tests and benches want (CPU clocks,
//! `/proc` readers, fd counts, resource limits, SO_LINGER 0 to send RST, signals to a pid)
//! live in the `test-support` crate, which is no dependency of the product.
//!
//! File descriptors are owned by [`Fd`], which closes on drop, so an fd is closed
//! exactly once. Callers that register an fd with epoll must deregister it *before*
//! dropping the `Fd` (see the `event_loop` module docs for why).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

/// Turns a libc return value into `io::Result`, reading `errno` on -1.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// An owned file descriptor: closed exactly once, when dropped.
#[derive(Debug)]
pub struct Fd(RawFd);

impl Fd {
    pub fn raw(&self) -> RawFd {
        self.0
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor (constructed from a fresh syscall result or given
        // to us by a caller that gave up ownership) and close it only here, once.
        // The result is ignored: on Linux the fd is released even when close reports EINTR.
        unsafe {
            libc::close(self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// epoll
// ---------------------------------------------------------------------------------------

pub use libc::epoll_event as EpollEvent;

pub fn epoll_create() -> io::Result<Fd> {
    // SAFETY: plain syscall with a flag argument; returns a new fd or -1.
    let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    Ok(Fd(fd))
}

/// `epoll_ctl(op, fd, {events, data})`. For `EPOLL_CTL_DEL` the event is ignored.
pub fn epoll_ctl(epfd: &Fd, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is a valid, initialised epoll_event living for the duration of the call;
    // the kernel copies it and keeps no pointer.
    cvt(unsafe { libc::epoll_ctl(epfd.raw(), op, fd, &mut ev) })?;
    Ok(())
}

/// Waits for events, filling `buf` from its start. Returns how many entries are valid.
/// `timeout_ms < 0` waits forever. EINTR (a signal arrived) is reported as 0 events.
pub fn epoll_wait(epfd: &Fd, buf: &mut [EpollEvent], timeout_ms: i32) -> io::Result<usize> {
    let cap = buf.len().min(i32::MAX as usize) as libc::c_int;
    // SAFETY: `buf` is a valid writable slice of `cap` epoll_event structs; the kernel writes
    // at most `cap` entries and returns how many.
    let n = unsafe { libc::epoll_wait(epfd.raw(), buf.as_mut_ptr(), cap, timeout_ms) };
    match cvt(n) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// A zeroed event buffer of `n` entries.
pub fn event_buffer(n: usize) -> Vec<EpollEvent> {
    vec![libc::epoll_event { events: 0, u64: 0 }; n]
}

// ---------------------------------------------------------------------------------------
// eventfd, pipes, read/write
// ---------------------------------------------------------------------------------------

pub fn eventfd() -> io::Result<Fd> {
    // SAFETY: plain syscall; returns a new fd or -1.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    Ok(Fd(fd))
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> io::Result<(Fd, Fd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    Ok((Fd(fds[0]), Fd(fds[1])))
}

pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    cvt_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// Reads into the spare capacity of `buf` (after its current length) and grows its length
/// by the number of bytes read. Avoids zero-filling buffers before every read.
pub(crate) fn read_into_spare(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is valid for writes of `spare.len()` bytes; the kernel writes at most
    // that many and tells us how many.
    let n = cvt_size(unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) })?;
    // SAFETY: the kernel initialised exactly `n <= spare.len()` bytes after the old length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

pub(crate) fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    cvt_size(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })
}

/// Gathers several buffers into one `writev`: the first 64 of them (a stack array; Linux's
/// `IOV_MAX` is 1024). The caller sees a short write and calls again for the rest.
pub(crate) fn writev(fd: RawFd, bufs: &[&[u8]]) -> io::Result<usize> {
    let mut iov: [MaybeUninit<libc::iovec>; 64] = [MaybeUninit::uninit(); 64];
    let n = bufs.len().min(iov.len());
    for (slot, b) in iov.iter_mut().zip(&bufs[..n]) {
        slot.write(libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: b.len() });
    }
    // SAFETY: the first `n` iovecs are initialised and point into live slices borrowed for
    // the duration of the call; writev only reads through them.
    cvt_size(unsafe { libc::writev(fd, iov.as_ptr().cast(), n as libc::c_int) })
}

/// `write(2)` of a u64 counter to an eventfd (adds 1 to the counter).
pub fn eventfd_signal(fd: RawFd) -> io::Result<()> {
    match write(fd, &1u64.to_ne_bytes()) {
        Ok(_) => Ok(()),
        // The counter is saturated: the loop is already due to wake up, which is all we want.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// Resets an eventfd's counter to 0 (one read of 8 bytes). Returns the counter's value.
pub fn eventfd_drain(fd: RawFd) -> io::Result<u64> {
    let mut b = [0u8; 8];
    match read(fd, &mut b) {
        Ok(_) => Ok(u64::from_ne_bytes(b)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------
// Signals (self-pipe trick)
// ---------------------------------------------------------------------------------------

/// Installs `handler` for `signo` with SA_RESTART (so blocking calls elsewhere are resumed).
pub(crate) fn set_signal_handler(signo: libc::c_int, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; we then set the
    // handler pointer to an `extern "C" fn(c_int)`, which matches sa_handler's ABI.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        cvt(libc::sigaction(signo, &sa, std::ptr::null_mut()))?;
    }
    Ok(())
}

/// Sets `signo` to be ignored (used for SIGPIPE: a write to a closed socket then returns
/// EPIPE instead of killing the process).
pub(crate) fn ignore_signal(signo: libc::c_int) -> io::Result<()> {
    // SAFETY: SIG_IGN is a valid disposition for any catchable signal.
    let prev = unsafe { libc::signal(signo, libc::SIG_IGN) };
    if prev == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Restores the default disposition of `signo`.
pub(crate) fn default_signal(signo: libc::c_int) -> io::Result<()> {
    // SAFETY: SIG_DFL is a valid disposition for any signal.
    let prev = unsafe { libc::signal(signo, libc::SIG_DFL) };
    if prev == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// This thread's `errno`. Async-signal-safe (a signal handler saves it with this).
pub(crate) fn errno() -> libc::c_int {
    // SAFETY: __errno_location returns a valid pointer to the calling thread's errno, for
    // as long as the thread lives.
    unsafe { *libc::__errno_location() }
}

/// Sets this thread's `errno` (a signal handler restores it with this).
pub(crate) fn set_errno(value: libc::c_int) {
    // SAFETY: as in `errno`: a valid pointer to the calling thread's own errno.
    unsafe { *libc::__errno_location() = value }
}

/// Raw `write(2)` usable from a signal handler (async-signal-safe: no allocation, no locks).
pub(crate) fn write_byte_from_signal_handler(fd: RawFd, byte: u8) {
    // SAFETY: writes one byte from a stack variable; write(2) is async-signal-safe.
    unsafe {
        libc::write(fd, (&byte as *const u8).cast(), 1);
    }
}

// ---------------------------------------------------------------------------------------
// TCP sockets
// ---------------------------------------------------------------------------------------

fn setsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int with its exact size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and sized for a c_int option.
    cvt(unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut libc::c_int).cast(), &mut len) })?;
    Ok(value)
}

/// Disables Nagle's algorithm: small responses leave at once instead of waiting for the ACK
/// of the previous segment (which the client may delay by up to 200 ms: the keep-alive stall).
pub(crate) fn set_nodelay(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Asks the kernel to send a pending ACK now instead of delaying it (up to 40 ms on Linux).
/// Not sticky: the kernel may return to delayed ACKs later, so it is set when it matters.
pub(crate) fn set_quickack(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1)
}

/// Pending socket error (SO_ERROR), cleared by the read.
pub fn take_socket_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let e = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
    Ok(if e == 0 { None } else { Some(io::Error::from_raw_os_error(e)) })
}

fn sockaddr_from(addr: &std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; we fill the family-specific fields below.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        std::net::SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn sockaddr_to(storage: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(std::net::SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(std::net::SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

/// socket + SO_REUSEADDR (+ SO_REUSEPORT) + bind + listen, non-blocking and close-on-exec.
pub(crate) fn tcp_listen(addr: &std::net::SocketAddr, reuse_port: bool, backlog: i32) -> io::Result<Fd> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain syscall creating a new socket fd.
    let fd = Fd(cvt(unsafe {
        libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
    })?);
    setsockopt_int(fd.raw(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuse_port {
        setsockopt_int(fd.raw(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    let (storage, len) = sockaddr_from(addr);
    // SAFETY: `storage` holds a valid sockaddr of length `len`.
    cvt(unsafe { libc::bind(fd.raw(), (&storage as *const libc::sockaddr_storage).cast(), len) })?;
    // SAFETY: plain syscall on a bound socket we own.
    cvt(unsafe { libc::listen(fd.raw(), backlog) })?;
    Ok(fd)
}

/// The address a socket is bound to (to learn the ephemeral port after binding port 0).
pub(crate) fn local_addr(fd: RawFd) -> io::Result<std::net::SocketAddr> {
    // SAFETY: zeroed storage is valid; the kernel fills at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are live and describe the buffer's real size.
    cvt(unsafe { libc::getsockname(fd, (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len) })?;
    sockaddr_to(&storage).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown address family"))
}

/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC: the new socket is born non-blocking, with no
/// window in which a fork+exec could inherit it.
pub(crate) fn accept(listener: RawFd) -> io::Result<(Fd, Option<std::net::SocketAddr>)> {
    // SAFETY: zeroed storage is valid; the kernel fills at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are live and describe the buffer's real size.
    let fd = cvt(unsafe {
        libc::accept4(
            listener,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    Ok((Fd(fd), sockaddr_to(&storage)))
}

/// Starts a non-blocking TCP connect. The socket is returned at once; the connection is
/// established when it becomes writable (then check [`take_socket_error`]).
pub(crate) fn tcp_connect(addr: &std::net::SocketAddr) -> io::Result<Fd> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain syscall creating a new socket fd.
    let fd = Fd(cvt(unsafe {
        libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
    })?);
    let (storage, len) = sockaddr_from(addr);
    // SAFETY: `storage` holds a valid sockaddr of length `len`.
    let ret = unsafe { libc::connect(fd.raw(), (&storage as *const libc::sockaddr_storage).cast(), len) };
    if ret == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(fd)
}

/// shutdown(2) of the write side (sends FIN once queued data has left).
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall on an fd the caller owns.
    cvt(unsafe { libc::shutdown(fd, libc::SHUT_WR) })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Thread priority
// ---------------------------------------------------------------------------------------

/// Sets the nice value of the calling thread (not the whole process) to `nice`:
/// `setpriority(PRIO_PROCESS, gettid(), nice)`. On Linux a thread id given to PRIO_PROCESS
/// names that one thread, so the loop's thread keeps its priority while a worker lowers its
/// own. Raising a priority (a lower value than the current one) needs privileges: EACCES.
pub(crate) fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid takes no arguments and cannot fail; setpriority takes three integers,
    // reads no memory of ours and changes only the scheduling priority of this thread.
    cvt(unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) })?;
    Ok(())
}
