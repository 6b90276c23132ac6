//! The timer wheel on its own (no reactor, no clock): ordering, cancel, repeating timers,
//! wrap-around at the 6-bit digit boundaries, far-future cascades, and a randomized run of
//! 100,000 operations checked against a `BTreeMap` model.
//!
//! What the wheel promises, and what these tests assert:
//! * `poll(now)` returns every timer whose deadline is `<= now`, and none whose deadline is
//!   later ("never early", "nothing lost");
//! * across ticks, timers come out in deadline order;
//! * *within* one tick the order is not specified (a slot is a LIFO list, and cascading
//!   reverses it again), so equal-deadline timers are compared as sets;
//! * a cancelled timer never fires, and a stale `TimerId` (fired or cancelled) is a no-op;
//! * a repeating timer fires once per `poll` drain at most, skipping missed periods;
//! * deadlines further than `MAX_TICKS` away are clamped to the horizon; deadlines in the
//!   past fire at the next `poll`.

use std::collections::{BTreeMap, HashMap};

use reactor::wheel::{LEVELS, MAX_TICKS};
use reactor::{TimerId, TimerWheel};
use test_support::rng::Rng;

/// Drains everything due at `now`.
fn drain(w: &mut TimerWheel<u64>, now: u64) -> Vec<u64> {
    let mut out = Vec::new();
    while let Some((_, d)) = w.poll(now) {
        out.push(d);
        assert!(out.len() <= 1_000_000, "poll({now}) does not terminate");
    }
    out
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// Inserts one timer per deadline (data = deadline) and checks, for every distinct deadline
/// `d` in turn, that `poll(d - 1)` fires nothing and `poll(d)` fires exactly the timers due at
/// `d`; and that `next_deadline()` never lies past the next real deadline.
fn check_exact_firing(w: &mut TimerWheel<u64>, deadlines: &[u64]) {
    let start = w.elapsed();
    for &d in deadlines {
        assert!(d >= start && d - start <= MAX_TICKS, "test bug: deadline {d} outside the horizon");
        w.insert(d, d);
    }
    let mut distinct: Vec<u64> = deadlines.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    for &d in &distinct {
        let nd = w.next_deadline().expect("timers pending but next_deadline() is None");
        assert!(nd <= d, "next_deadline {nd} is after the next due timer {d} (start {start})");
        if d > w.elapsed() {
            assert_eq!(drain(w, d - 1), Vec::<u64>::new(), "fired early at {} (start {start})", d - 1);
        }
        let expected: Vec<u64> = deadlines.iter().copied().filter(|&x| x == d).collect();
        assert_eq!(drain(w, d), expected, "wrong set at tick {d} (start {start})");
    }
    assert!(w.is_empty());
    assert_eq!(w.next_deadline(), None);
}

#[test]
fn fires_in_deadline_order() {
    let mut w = TimerWheel::new();
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    // 2,000 timers over the first 5 levels, several per tick.
    let mut expected: Vec<u64> = (0..2_000).map(|_| 1 + rng.below(1 << 24)).collect();
    for &d in &expected {
        w.insert(d, d);
    }
    expected.sort_unstable();
    // Jump straight to the end: everything comes out in one drain, in deadline order.
    let fired = drain(&mut w, 1 << 24);
    assert_eq!(fired, expected);
}

#[test]
fn poll_stepwise_never_early() {
    let mut w = TimerWheel::new();
    let deadlines = [1u64, 2, 5, 63, 64, 65, 127, 128, 4095, 4096, 4097, 262_143, 262_144, 262_145, 1 << 20];
    check_exact_firing(&mut w, &deadlines);
}

#[test]
fn equal_deadlines_fire_together() {
    let mut w = TimerWheel::new();
    // Same tick, filed on different levels (inserted at different times) and cascaded.
    for i in 0..10 {
        w.insert(5_000, i);
    }
    assert!(drain(&mut w, 4_000).is_empty());
    for i in 10..20 {
        w.insert(5_000, i);
    }
    assert!(drain(&mut w, 4_999).is_empty());
    assert_eq!(sorted(drain(&mut w, 5_000)), (0..20).collect::<Vec<u64>>());
}

#[test]
fn cancel_before_and_during_cascade() {
    let mut w = TimerWheel::new();
    let a = w.insert(10, 1);
    let b = w.insert(100_000, 2);
    let c = w.insert(100_000, 3);
    let d = w.insert(200, 4);
    assert_eq!(w.len(), 4);
    assert_eq!(w.cancel(a), Some(1));
    assert_eq!(w.cancel(a), None, "double cancel must be a no-op");
    assert!(!w.contains(a));
    assert!(drain(&mut w, 99_000).contains(&4));
    // `b` has been cascaded down at least once by now; cancel must still unlink it.
    assert_eq!(w.cancel(b), Some(2));
    assert_eq!(w.cancel(d), None, "d already fired");
    assert_eq!(drain(&mut w, 100_000), vec![3]);
    assert_eq!(w.cancel(c), None);
    assert!(w.is_empty());
    // A new timer may reuse a freed slab slot; stale ids must not reach it.
    let e = w.insert(100_010, 5);
    for stale in [a, b, c, d] {
        assert_eq!(w.cancel(stale), None);
    }
    assert!(w.contains(e));
    assert_eq!(drain(&mut w, 100_010), vec![5]);
}

#[test]
fn cancel_a_timer_due_in_the_same_tick() {
    // poll() hands timers out one at a time, so a callback can cancel one due in the same tick.
    let mut w = TimerWheel::new();
    let ids: Vec<TimerId> = (0..4).map(|i| w.insert(50, i)).collect();
    let (_, first) = w.poll(50).unwrap();
    // Cancel every other one still pending.
    let mut cancelled = 0;
    for (i, id) in ids.iter().enumerate() {
        if i as u64 != first && w.cancel(*id).is_some() {
            cancelled += 1;
        }
    }
    assert_eq!(cancelled, 3);
    assert_eq!(w.poll(50), None);
}

#[test]
fn repeating_timer_period_and_catch_up() {
    let mut w = TimerWheel::new();
    let id = w.insert_repeating(7, 7, 99);
    let mut at = Vec::new();
    for now in 0..=70 {
        while let Some((fid, _)) = w.poll(now) {
            assert_eq!(fid, id);
            at.push(now);
        }
    }
    assert_eq!(at, vec![7, 14, 21, 28, 35, 42, 49, 56, 63, 70]);
    // Falling far behind fires once, then resumes on the period grid.
    assert_eq!(drain(&mut w, 1_000), vec![99]);
    assert_eq!(w.next_deadline(), Some(1_001));
    assert!(drain(&mut w, 1_000).is_empty());
    assert_eq!(drain(&mut w, 1_001), vec![99]);
    // A long period crosses levels and still lands exactly.
    let long = w.insert_repeating(1_001 + 70_000, 70_000, 5);
    assert_eq!(w.cancel(id), Some(99));
    let mut fired_at = Vec::new();
    let mut now = 1_001;
    while fired_at.len() < 3 {
        now = w.next_deadline().unwrap();
        if !drain(&mut w, now).is_empty() {
            fired_at.push(now);
        }
    }
    assert_eq!(fired_at, vec![71_001, 141_001, 211_001]);
    assert_eq!(w.cancel(long), Some(5));
    assert!(drain(&mut w, now + 1_000_000).is_empty());
    // Period 0 is treated as 1.
    let t = w.elapsed();
    let one = w.insert_repeating(t + 1, 0, 1);
    assert!(drain(&mut w, t).is_empty());
    assert_eq!(drain(&mut w, t + 1), vec![1]);
    assert_eq!(drain(&mut w, t + 2), vec![1]);
    assert_eq!(w.cancel(one), Some(1));
}

#[test]
fn wrap_around_at_every_digit_boundary() {
    // For each boundary 64^k (including 2^36, the top level's full rotation, and beyond it),
    // start just before it and check timers on both sides fire exactly on time.
    for k in 1..=8u32 {
        let b = 1u64 << (6 * k);
        for back in [1u64, 2, 10, 63, 64, 65, 4_095, 4_097, 300_000] {
            if back >= b {
                continue;
            }
            let start = b - back;
            let mut w = TimerWheel::new();
            assert!(drain(&mut w, start).is_empty());
            assert_eq!(w.elapsed(), start);
            let mut ds = vec![start, start + 1, b - 1, b, b, b + 1, b + 63, b + 64, b + 65, b + 4_096];
            ds.extend([b + 262_143, b + (1 << 24) + 3, start + (1 << 30), start + MAX_TICKS - 1]);
            ds.extend([start + MAX_TICKS, start + MAX_TICKS]);
            check_exact_firing(&mut w, &ds);
        }
    }
}

#[test]
fn wrap_around_beyond_2_pow_36_with_long_run() {
    // Run the wheel across several full rotations of the top level with timers in flight.
    let mut w = TimerWheel::new();
    let mut now = (1u64 << 36) - 1_000;
    drain(&mut w, now);
    for round in 0..5u64 {
        let ds: Vec<u64> = [1u64, 999, 1_000, 1_001, 5_000, 1 << 35, MAX_TICKS]
            .iter()
            .map(|d| now + (d + round).min(MAX_TICKS))
            .collect();
        check_exact_firing(&mut w, &ds);
        now = w.elapsed() + (1 << 36) - 1_000 + round;
        drain(&mut w, now);
    }
}

#[test]
fn far_future_cascades_once_per_level() {
    // The loop sleeps until next_deadline(); for one far timer that must take at most one
    // wake-up per level crossed (plus the firing itself), never a polling interval.
    for d in [3_600_000u64, 86_400_000, 30 * 86_400_000, 365 * 86_400_000, MAX_TICKS] {
        let mut w = TimerWheel::new();
        w.insert(d, d);
        let mut wakeups = 0;
        loop {
            let next = w.next_deadline().expect("timer lost");
            assert!(next <= d, "next_deadline {next} after the deadline {d}");
            wakeups += 1;
            assert!(wakeups <= LEVELS + 1, "too many wake-ups for deadline {d}");
            let fired = drain(&mut w, next);
            if !fired.is_empty() {
                assert_eq!(fired, vec![d]);
                assert_eq!(next, d, "fired at {next}, deadline {d}");
                break;
            }
        }
        assert!(w.is_empty());
    }
}

#[test]
fn beyond_the_horizon_is_clamped_and_past_fires_at_once() {
    let mut w = TimerWheel::new();
    drain(&mut w, 1_000);
    w.insert(u64::MAX, 1);
    w.insert(1_000 + MAX_TICKS + 12_345, 2);
    w.insert(3, 3); // in the past
    w.insert(1_000, 4); // exactly now
    assert_eq!(sorted(drain(&mut w, 1_000)), vec![3, 4]);
    assert!(drain(&mut w, 1_000 + MAX_TICKS - 1).is_empty());
    assert_eq!(sorted(drain(&mut w, 1_000 + MAX_TICKS)), vec![1, 2]);
}

// ---------------------------------------------------------------------------------------
// Randomized: 100,000 operations against a BTreeMap model
// ---------------------------------------------------------------------------------------

struct Live {
    id: TimerId,
    deadline: u64,
    period: u64,
}

struct Model {
    /// (deadline, seq): the pending timers in firing order.
    queue: BTreeMap<(u64, u64), ()>,
    live: HashMap<u64, Live>,
}

impl Model {
    fn insert(&mut self, seq: u64, live: Live) {
        self.queue.insert((live.deadline, seq), ());
        self.live.insert(seq, live);
    }
    fn remove(&mut self, seq: u64) -> Option<Live> {
        let l = self.live.remove(&seq)?;
        self.queue.remove(&(l.deadline, seq)).expect("model out of sync");
        Some(l)
    }
}

/// A deadline somewhere useful: each wheel level, just around a digit boundary, the horizon,
/// beyond it, or in the past.
fn random_deadline(rng: &mut Rng, now: u64) -> u64 {
    match rng.below(10) {
        l @ 0..=5 => now + rng.below(1 << (6 * (l + 1))),
        6 => now + MAX_TICKS - rng.below(200),
        7 => now + MAX_TICKS + 1 + rng.below(1 << 40),
        8 => now.saturating_sub(rng.below(5_000)),
        _ => {
            let unit = 1u64 << (6 * (1 + rng.below(6)));
            let boundary = (now / unit + 1 + rng.below(2)) * unit;
            (boundary + rng.below(5)).saturating_sub(2)
        }
    }
}

/// How far time moves in one "advance" operation. `calm` phases only take small steps, so
/// timers pile up (thousands live at once); the others mix in huge jumps across levels.
fn random_step(rng: &mut Rng, calm: bool) -> u64 {
    match rng.below(if calm { 80 } else { 100 }) {
        0..=9 => 0,
        10..=49 => rng.below(64),
        50..=79 => rng.below(4_096),
        80..=94 => rng.below(1 << 20),
        95..=98 => rng.below(1 << 30),
        _ => rng.below(1 << 36),
    }
}

#[test]
fn randomized_against_btreemap_model() {
    const OPS: usize = 100_000;
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d ^ 0x1234_5678);
    let mut w: TimerWheel<u64> = TimerWheel::new();
    let mut m = Model { queue: BTreeMap::new(), live: HashMap::new() };
    // Every id ever handed out (for stale cancels), and a bag of seqs to pick victims from.
    let mut ids: Vec<TimerId> = Vec::new();
    let mut bag: Vec<u64> = Vec::new();
    let mut now = 0u64;
    let (mut fired_total, mut cancelled_total, mut stale_total, mut max_live) = (0u64, 0u64, 0u64, 0usize);

    for op in 0..OPS {
        // Phases of 10,000 operations: fill up (few, small advances), churn, and run down.
        let phase = (op / 10_000) % 3;
        let roll = rng.below(100);
        let roll = match (phase, roll) {
            // fill: 60% insert, 25% cancel, 15% (small) advance
            (0, 0..=59) => 0,
            (0, 60..=84) => 50,
            (0, _) => 99,
            // churn: the plain mix below
            (1, r) => r,
            // run down: 30% cancel, 70% advance
            (_, 0..=29) => 50,
            (_, _) => 99,
        };
        match roll {
            // Insert a one-shot timer.
            0..=44 => {
                let seq = ids.len() as u64;
                let d = random_deadline(&mut rng, now);
                let id = w.insert(d, seq);
                let deadline = d.clamp(now, now + MAX_TICKS);
                m.insert(seq, Live { id, deadline, period: 0 });
                ids.push(id);
                bag.push(seq);
            }
            // Insert a repeating timer (a few at a time only: they never leave by themselves).
            45..=47 => {
                if m.live.values().filter(|l| l.period > 0).count() < 16 {
                    let seq = ids.len() as u64;
                    let range = if rng.below(2) == 0 { 100 } else { 100_000 };
                    let period = 1 + rng.below(range);
                    let d = now + rng.below(period * 2);
                    let id = w.insert_repeating(d, period, seq);
                    m.insert(seq, Live { id, deadline: d, period });
                    ids.push(id);
                    bag.push(seq);
                }
            }
            // Cancel a random timer from the bag: live ones must be cancelled, dead ones (fired
            // or cancelled) must be a no-op. Dead picks are dropped from the bag and we try
            // again a few times, so most cancel operations hit a live timer.
            48..=74 => {
                for _ in 0..4 {
                    if bag.is_empty() {
                        break;
                    }
                    let i = rng.below(bag.len() as u64) as usize;
                    let seq = bag.swap_remove(i);
                    let got = w.cancel(ids[seq as usize]);
                    assert!(!w.contains(ids[seq as usize]));
                    if m.remove(seq).is_some() {
                        assert_eq!(got, Some(seq), "op {op}: live timer {seq} could not be cancelled");
                        cancelled_total += 1;
                        break;
                    }
                    assert_eq!(got, None, "op {op}: stale id {seq} cancelled something");
                    stale_total += 1;
                }
            }
            // Advance time and drain.
            _ => {
                now += random_step(&mut rng, phase == 0);
                let mut last_deadline = 0u64;
                let mut rearm = Vec::new();
                while let Some((id, seq)) = w.poll(now) {
                    let live = m.remove(seq).unwrap_or_else(|| {
                        panic!("op {op}: timer {seq} fired at {now} but was cancelled, already fired this drain, or never existed")
                    });
                    assert_eq!(id, live.id, "op {op}: wrong id for {seq}");
                    assert!(
                        live.deadline <= now,
                        "op {op}: {seq} due {} fired early at {now}",
                        live.deadline
                    );
                    assert!(
                        live.deadline >= last_deadline,
                        "op {op}: out of order: {seq} due {} after one due {last_deadline}",
                        live.deadline
                    );
                    last_deadline = live.deadline;
                    fired_total += 1;
                    if let Some(behind) = (now - live.deadline).checked_div(live.period) {
                        rearm.push((
                            seq,
                            Live { deadline: live.deadline + (behind + 1) * live.period, ..live },
                        ));
                    }
                }
                if let Some((&(d, seq), _)) = m.queue.iter().next() {
                    assert!(d > now, "op {op}: timer {seq} due {d} lost: not fired by poll({now})");
                }
                for (seq, live) in rearm {
                    m.insert(seq, live);
                }
                assert_eq!(w.elapsed(), now);
            }
        }
        assert_eq!(w.len(), m.live.len(), "op {op}: live count differs");
        max_live = max_live.max(w.len());
        match (w.next_deadline(), m.queue.iter().next()) {
            (None, None) => {}
            (Some(nd), Some((&(d, _), _))) => {
                assert!(nd <= d, "op {op}: next_deadline {nd} after the earliest timer {d}");
                assert!(nd >= w.elapsed(), "op {op}: next_deadline {nd} in the past ({})", w.elapsed());
            }
            (nd, first) => panic!("op {op}: next_deadline {nd:?} but model has {first:?}"),
        }
    }

    // Finally run everything out: what is left fires, in order, no later than its deadline.
    let mut last = 0;
    while let Some(nd) = w.next_deadline() {
        while let Some((_, seq)) = w.poll(nd) {
            let live = m.remove(seq).expect("unknown timer at the end");
            assert!(live.deadline <= nd && live.deadline >= last);
            last = live.deadline;
            if live.period > 0 {
                w.cancel(live.id);
            }
        }
        if let Some(&(d, seq)) = m.queue.keys().next() {
            assert!(d > nd, "timer {seq} due {d} lost at the end");
        }
    }
    assert!(m.live.is_empty());

    // The run must actually have exercised the interesting paths.
    assert!(now > 1 << 38, "time only reached {now}: no top-level wrap-around exercised");
    assert!(
        fired_total > 10_000 && cancelled_total > 5_000 && stale_total > 1_000,
        "{fired_total} {cancelled_total} {stale_total}"
    );
    assert!(max_live > 1_000, "max live {max_live}");
}

/// The worked example of `docs/04-timer-wheel.md`: timers at 5, 70 and 4,100 ms land on
/// levels 0, 1 and 2; the wheel has work at 5 (fire), 64 (cascade 70 to level 0), 70 (fire),
/// 4,096 (cascade 4,100) and 4,100 (fire), and at no other tick.
#[test]
fn the_books_worked_example() {
    let mut w = TimerWheel::new();
    w.insert(5, 'a');
    w.insert(70, 'b');
    w.insert(4_100, 'c');
    let mut work_at = Vec::new();
    let mut fired = Vec::new();
    while let Some(t) = w.next_deadline() {
        work_at.push(t);
        while let Some((_, x)) = w.poll(t) {
            fired.push((t, x));
        }
    }
    assert_eq!(work_at, vec![5, 64, 70, 4_096, 4_100]);
    assert_eq!(fired, vec![(5, 'a'), (70, 'b'), (4_100, 'c')]);
}
