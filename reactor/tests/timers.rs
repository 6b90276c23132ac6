//! Timers through the reactor, against the real clock: never early, cancellation (also of a
//! timer due in the same tick), repeating timers, and an idle loop that sleeps until its
//! only timer instead of polling.
//!
//! Bounds on lateness are generous (the machine may be busy); bounds on earliness are exact:
//! a timer set for `d` must never run before `d` has passed, measured with `Instant`.

use std::time::{Duration, Instant};

use reactor::{Event, Handler, Reactor, TimerId};

#[derive(Default)]
struct Timers {
    /// (tag, when it fired)
    fired: Vec<(u64, Instant)>,
    /// Timers to cancel when a given tag fires: (tag that fires, id to cancel).
    cancel_on: Vec<(u64, TimerId)>,
    cancel_results: Vec<bool>,
    /// Cancel this repeating timer from its own callback after this many firings.
    stop_repeating: Option<(TimerId, usize)>,
}

impl Handler<()> for Timers {
    fn on_io(&mut self, _r: &mut Reactor<()>, ev: Event) {
        panic!("no I/O sources registered, got {ev:?}");
    }
    fn on_timer(&mut self, r: &mut Reactor<()>, id: TimerId, tag: u64) {
        self.fired.push((tag, Instant::now()));
        for &(on, victim) in &self.cancel_on {
            if on == tag {
                self.cancel_results.push(r.cancel_timer(victim));
            }
        }
        if let Some((rid, n)) = self.stop_repeating {
            if rid == id && self.fired.len() == n {
                assert!(r.cancel_timer(id), "a repeating timer can cancel itself");
            }
        }
    }
}

/// Runs turns until `done(h)` or `limit` has passed (then panics).
fn run_until(r: &mut Reactor<()>, h: &mut Timers, limit: Duration, done: impl Fn(&Timers) -> bool) {
    let t = Instant::now();
    while !done(h) {
        assert!(t.elapsed() < limit, "timed out; fired so far: {:?}", h.fired.len());
        r.run_once(h, Some(Duration::from_millis(100))).unwrap();
    }
}

#[test]
fn timers_never_fire_early_and_fire_in_order() {
    let mut r = Reactor::<()>::new().unwrap();
    let mut h = Timers::default();
    let delays_us = [0u64, 300, 1_000, 1_500, 3_000, 10_000, 25_000, 50_000, 64_000, 100_000, 150_000];
    let mut set_at = Vec::new();
    for (tag, &us) in delays_us.iter().enumerate() {
        set_at.push(Instant::now());
        r.set_timer(Duration::from_micros(us), tag as u64);
    }
    assert_eq!(r.timer_count(), delays_us.len());
    run_until(&mut r, &mut h, Duration::from_secs(5), |h| h.fired.len() == delays_us.len());

    for &(tag, at) in &h.fired {
        let waited = at - set_at[tag as usize];
        let asked = Duration::from_micros(delays_us[tag as usize]);
        assert!(waited >= asked, "timer {tag} fired early: after {waited:?}, asked {asked:?}");
        assert!(waited < asked + Duration::from_secs(1), "timer {tag} very late: {waited:?}");
    }
    // Timers due in the same 1 ms tick come out in no particular order; from the fourth timer
    // on (1.5 ms, 3 ms, ...) the delays are more than a tick apart, so the order is strict.
    let order: Vec<u64> = h.fired.iter().map(|&(t, _)| t).filter(|&t| t >= 3).collect();
    assert_eq!(order, (3..delays_us.len() as u64).collect::<Vec<_>>());
    assert_eq!(r.timer_count(), 0);
    assert_eq!(r.stats().timers_fired, delays_us.len() as u64);
}

#[test]
fn cancelled_timers_do_not_fire() {
    let mut r = Reactor::<()>::new().unwrap();
    let mut h = Timers::default();
    let a = r.set_timer(Duration::from_millis(30), 1);
    let b = r.set_timer(Duration::from_millis(60), 2);
    let c = r.set_timer(Duration::from_millis(60), 3);
    r.set_timer(Duration::from_millis(150), 4);
    assert!(r.cancel_timer(a));
    assert!(!r.cancel_timer(a), "second cancel is a no-op");
    // Whichever of b/c fires first cancels the other (same tick or the next: either way it
    // has not fired yet).
    h.cancel_on = vec![(2, c), (3, b)];
    run_until(&mut r, &mut h, Duration::from_secs(5), |h| h.fired.iter().any(|&(t, _)| t == 4));
    let tags: Vec<u64> = h.fired.iter().map(|&(t, _)| t).collect();
    assert!(tags == [2, 4] || tags == [3, 4], "fired: {tags:?}");
    assert_eq!(h.cancel_results, vec![true]);
    assert!(!r.cancel_timer(b) && !r.cancel_timer(c), "cancelling a fired/cancelled timer is a no-op");
    assert_eq!(r.timer_count(), 0);
}

#[test]
fn repeating_timer_fires_on_period_until_cancelled() {
    let mut r = Reactor::<()>::new().unwrap();
    let mut h = Timers::default();
    let period = Duration::from_millis(20);
    let set = Instant::now();
    let id = r.set_repeating_timer(period, 9);
    h.stop_repeating = Some((id, 5));
    run_until(&mut r, &mut h, Duration::from_secs(5), |h| h.fired.len() == 5);
    for (k, &(tag, at)) in h.fired.iter().enumerate() {
        assert_eq!(tag, 9);
        let min = period * (k as u32 + 1);
        assert!(at - set >= min, "firing #{} after {:?}, before {min:?}", k + 1, at - set);
    }
    // Cancelled from its own callback: nothing more.
    assert!(!r.cancel_timer(id));
    assert_eq!(r.timer_count(), 0);
    let until = Instant::now() + Duration::from_millis(100);
    while Instant::now() < until {
        r.run_once(&mut h, Some(Duration::from_millis(20))).unwrap();
    }
    assert_eq!(h.fired.len(), 5);
    assert_eq!(r.stats().timers_fired, 5);
}

#[test]
fn idle_loop_sleeps_until_its_timer() {
    let mut r = Reactor::<()>::new().unwrap();
    let mut h = Timers::default();
    let set = Instant::now();
    r.set_timer(Duration::from_millis(300), 1);
    let iterations = r.stats().iterations;
    let cpu = test_support::cpu::thread_cpu_time();
    let mut turns = 0;
    while h.fired.is_empty() {
        turns += 1;
        assert!(turns <= 20, "the loop keeps waking up: spinning or polling");
        r.run_once(&mut h, None).unwrap();
    }
    let waited = h.fired[0].1 - set;
    assert!(waited >= Duration::from_millis(300), "fired early: {waited:?}");
    let turns = r.stats().iterations - iterations;
    // One wake-up per wheel level crossed at most (a 300 ms timer: one cascade, then it fires).
    assert!(turns <= 5, "{turns} turns for one timer");
    assert!(
        test_support::cpu::thread_cpu_time() - cpu < Duration::from_millis(50),
        "the idle loop burned CPU"
    );
}

#[test]
fn max_wait_bounds_the_sleep_without_firing_timers() {
    let mut r = Reactor::<()>::new().unwrap();
    let mut h = Timers::default();
    r.set_timer(Duration::from_secs(10), 1);
    let t = Instant::now();
    assert_eq!(r.run_once(&mut h, Some(Duration::from_millis(50))).unwrap(), 0);
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(45) && waited < Duration::from_secs(5), "{waited:?}");
    assert!(h.fired.is_empty());
    assert_eq!(r.timer_count(), 1);
}
