//! One byte bounced over a Unix socketpair, through the reactor and with raw blocking
//! `read`/`write`, to show what one turn of the loop costs on top of the I/O itself.
//!
//! * `same_thread/reactor`: both ends registered with one loop. A round trip is two turns:
//!   each is one `epoll_wait` returning one event, a `read` and a `write` in the handler.
//! * `same_thread/raw`: the same four syscalls (`write`, `read`, `write`, `read`) with no loop.
//!   (reactor - raw) / 2 = the loop's cost per event: one `epoll_wait` plus dispatch.
//! * `two_threads/reactor`: a loop thread echoes; the bench thread writes and blocks in
//!   `read`. Includes two cross-thread wake-ups per round trip, as a real client sees.
//! * `two_threads/raw`: the same with a plain thread doing blocking `read`/`write`.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use reactor::{Event, Handler, Interest, Reactor};

const X: usize = 0;
const Y: usize = 1;

/// Same thread: the ball goes x -> y -> x; `left` round trips still to do.
struct Bounce {
    x: UnixStream,
    y: UnixStream,
    left: u64,
}

impl Handler<()> for Bounce {
    fn on_io(&mut self, _r: &mut Reactor<()>, ev: Event) {
        let mut b = [0u8; 1];
        if ev.tag == Y {
            self.y.read_exact(&mut b).unwrap();
            self.y.write_all(&b).unwrap();
        } else {
            self.x.read_exact(&mut b).unwrap();
            self.left -= 1;
            if self.left > 0 {
                self.x.write_all(&b).unwrap();
            }
        }
    }
}

fn bench_same_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("pingpong_same_thread");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));

    let (x, y) = UnixStream::pair().unwrap();
    x.set_nonblocking(true).unwrap();
    y.set_nonblocking(true).unwrap();
    let mut r = Reactor::<()>::new().unwrap();
    r.register(x.as_raw_fd(), Interest::READABLE, X).unwrap();
    r.register(y.as_raw_fd(), Interest::READABLE, Y).unwrap();
    let mut h = Bounce { x, y, left: 0 };
    g.bench_function("reactor", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            h.left = iters;
            h.x.write_all(b"!").unwrap();
            while h.left > 0 {
                r.run_once(&mut h, None).unwrap();
            }
            t.elapsed()
        })
    });

    let (mut x, mut y) = UnixStream::pair().unwrap();
    g.bench_function("raw", |b| {
        let mut buf = [0u8; 1];
        b.iter(|| {
            x.write_all(b"!").unwrap();
            y.read_exact(&mut buf).unwrap();
            y.write_all(&buf).unwrap();
            x.read_exact(&mut buf).unwrap();
        })
    });
    g.finish();
}

/// The loop thread's handler: echo every byte; stop when the peer hangs up.
struct Echo {
    y: UnixStream,
}

impl Handler<()> for Echo {
    fn on_io(&mut self, r: &mut Reactor<()>, ev: Event) {
        let mut b = [0u8; 64];
        match self.y.read(&mut b) {
            Ok(0) => {
                r.deregister(ev.token).unwrap();
                r.stop();
            }
            Ok(n) => self.y.write_all(&b[..n]).unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
}

fn reactor_echo(y: UnixStream) -> JoinHandle<()> {
    thread::spawn(move || {
        y.set_nonblocking(true).unwrap();
        let mut r = Reactor::<()>::new().unwrap();
        r.register(y.as_raw_fd(), Interest::READABLE, 0).unwrap();
        r.run(&mut Echo { y }).unwrap();
    })
}

fn raw_echo(mut y: UnixStream) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut b = [0u8; 64];
        loop {
            match y.read(&mut b).unwrap() {
                0 => return,
                n => y.write_all(&b[..n]).unwrap(),
            }
        }
    })
}

fn bench_two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("pingpong_two_threads");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for (name, start) in [("reactor", reactor_echo as fn(UnixStream) -> JoinHandle<()>), ("raw", raw_echo)] {
        let (mut x, y) = UnixStream::pair().unwrap();
        let echo = start(y);
        let mut buf = [0u8; 1];
        g.bench_function(name, |b| {
            b.iter(|| {
                x.write_all(b"!").unwrap();
                x.read_exact(&mut buf).unwrap();
            })
        });
        drop(x);
        echo.join().unwrap();
    }
    g.finish();
}

criterion_group!(benches, bench_same_thread, bench_two_threads);
criterion_main!(benches);
