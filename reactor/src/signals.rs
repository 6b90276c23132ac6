//! Signals delivered to the loop with the self-pipe trick.
//!
//! A signal handler may run on any thread, at any instruction, and may only call
//! async-signal-safe functions: no locks, no allocation, no Rust channel. So the handler
//! does the one safe thing, `write(2)` of one byte (the signal number) to a non-blocking pipe,
//! and the pipe's read end is registered with the loop. The signal thus becomes an ordinary
//! readable event, handled in the loop's thread with full access to its state.
//!
//! Why not signalfd? It only works if the signal is blocked in *every* thread, including
//! worker threads started before it and threads started by libraries; a thread that
//! forgot to block it gets the default action (terminate). The self-pipe works whichever
//! thread the kernel picks.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::sys::{self, Fd};

/// Write end of the pipe, read by the handler. -1 when no reactor watches signals.
static PIPE_WRITE_FD: AtomicI32 = AtomicI32::new(-1);

/// The handler. It saves and restores `errno`: it interrupts the thread anywhere, possibly
/// between a failed syscall and the read of its `errno`, and its own `write` fails (EAGAIN)
/// when the pipe is full. Without the restore, that code would see our error, not its own.
extern "C" fn on_signal(signo: libc::c_int) {
    let saved = sys::errno();
    let fd = PIPE_WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // If the pipe is full, signals are already waiting to be read: dropping one is fine.
        sys::write_byte_from_signal_handler(fd, signo as u8);
    }
    sys::set_errno(saved);
}

pub(crate) struct SignalPipe {
    read: Fd,
    write: Fd,
    signals: Vec<i32>,
}

impl SignalPipe {
    pub(crate) fn install(signals: &[i32]) -> io::Result<SignalPipe> {
        let (read, write) = sys::pipe()?;
        if PIPE_WRITE_FD.compare_exchange(-1, write.raw(), Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "another reactor already watches signals",
            ));
        }
        let pipe = SignalPipe { read, write, signals: signals.to_vec() };
        for &s in signals {
            sys::set_signal_handler(s, on_signal)?;
        }
        Ok(pipe)
    }

    pub(crate) fn read_fd(&self) -> RawFd {
        self.read.raw()
    }

    /// Reads pending signal numbers into `buf`; returns how many.
    pub(crate) fn read(&self, buf: &mut [u8]) -> usize {
        sys::read(self.read.raw(), buf).unwrap_or(0)
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        // Restore default dispositions so the process can still be interrupted, then detach.
        for &s in &self.signals {
            let _ = sys::default_signal(s);
        }
        let _ = PIPE_WRITE_FD.compare_exchange(self.write.raw(), -1, Ordering::SeqCst, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handler's `write` fails here (a full pipe: EAGAIN), as it can when signals come
    /// faster than the loop reads them; the interrupted code must still see its own errno.
    #[test]
    fn the_handler_keeps_errno() {
        let (read, write) = sys::pipe().unwrap();
        while sys::write(write.raw(), &[0u8; 4096]).is_ok() {}
        assert_eq!(sys::errno(), libc::EAGAIN, "the pipe is full");
        // This test binary's only user of the handler's pipe: no reactor here.
        assert!(PIPE_WRITE_FD.compare_exchange(-1, write.raw(), Ordering::SeqCst, Ordering::SeqCst).is_ok());
        sys::set_errno(libc::EINTR);
        on_signal(libc::SIGUSR1);
        let after = sys::errno();
        PIPE_WRITE_FD.store(-1, Ordering::SeqCst);
        drop((read, write));
        assert_eq!(after, libc::EINTR, "the handler left its own errno");
    }
}
