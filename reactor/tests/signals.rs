//! Signals through the self-pipe. In its own test binary (its own process) because only one
//! reactor per process may watch signals, and tests in one binary run in parallel threads.
//! For the same reason everything is in a single test function.

use std::time::{Duration, Instant};

use reactor::{Event, Handler, Reactor};

#[derive(Default)]
struct Signals {
    got: Vec<i32>,
}

impl Handler<()> for Signals {
    fn on_io(&mut self, _r: &mut Reactor<()>, ev: Event) {
        panic!("unexpected {ev:?}");
    }
    fn on_signal(&mut self, _r: &mut Reactor<()>, signo: i32) {
        self.got.push(signo);
    }
}

fn wait_for_signals(r: &mut Reactor<()>, h: &mut Signals, n: usize) {
    let start = Instant::now();
    while h.got.len() < n {
        assert!(start.elapsed() < Duration::from_secs(5), "signals not delivered: got {:?}", h.got);
        r.run_once(h, Some(Duration::from_millis(500))).unwrap();
    }
}

#[test]
fn watched_signals_reach_on_signal() {
    let mut r = Reactor::<()>::new().unwrap();
    let baseline = r.source_count();
    r.watch_signals(&[libc::SIGUSR1, libc::SIGUSR2]).unwrap();
    assert_eq!(r.source_count(), baseline + 1, "the pipe's read end is a source");

    // Watching twice, or from a second reactor, is refused.
    assert_eq!(r.watch_signals(&[libc::SIGUSR1]).unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    let mut other = Reactor::<()>::new().unwrap();
    assert_eq!(other.watch_signals(&[libc::SIGUSR1]).unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    drop(other);

    let mut h = Signals::default();
    test_support::process::raise_in_process(libc::SIGUSR1).unwrap();
    wait_for_signals(&mut r, &mut h, 1);
    assert_eq!(h.got, vec![libc::SIGUSR1]);
    assert_eq!(r.stats().signals, 1);

    // Raised from another thread (the kernel may run the handler on any thread).
    std::thread::spawn(|| test_support::process::raise_in_process(libc::SIGUSR2).unwrap()).join().unwrap();
    wait_for_signals(&mut r, &mut h, 2);
    assert_eq!(h.got, vec![libc::SIGUSR1, libc::SIGUSR2]);

    // Once delivered, nothing more is pending: the pipe was drained.
    let t = Instant::now();
    assert_eq!(r.run_once(&mut h, Some(Duration::from_millis(100))).unwrap(), 0);
    assert!(t.elapsed() >= Duration::from_millis(90));
    assert_eq!(h.got.len(), 2);
    assert_eq!(r.stats().signals, 2);
}
