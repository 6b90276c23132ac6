//! `reactor::TimerWheel` driven by arbitrary insert / insert-repeating / cancel / advance /
//! single-poll sequences, against a `BTreeMap` model.
//!
//! The contract checked (from `reactor/src/wheel.rs`): a timer's effective deadline is its
//! deadline clamped to `[elapsed, elapsed + MAX_TICKS]` when it is filed;
//! - nothing early: a timer fires only at a `poll(now)` with its effective deadline <= now,
//!   and the wheel's clock is then exactly that deadline;
//! - nothing lost: once `poll(now)` returns `None`, no timer due at or before `now` is left;
//! - nothing after cancel: a cancelled (or fired one-shot) timer never fires, its id is
//!   stale (`cancel` gives `None`, `contains` is false);
//! - order: timers fire in non-decreasing deadline order, so each tick's set comes out
//!   together, after the previous tick's;
//! - repeating timers re-arm one period after their deadline, skipping missed periods;
//! - `len` and `next_deadline` agree with the model (the loop never sleeps past a deadline).

#![no_main]

use std::collections::BTreeMap;

use fuzz_support::Bytes;
use libfuzzer_sys::fuzz_target;
use reactor::wheel::MAX_TICKS;
use reactor::{TimerId, TimerWheel};

/// The loop's clock is ms since start: keep it far from u64 overflow (2^47 ms = 4,400 years).
const MAX_NOW: u64 = 1 << 47;
const MAX_OPS: usize = 400;

struct ModelTimer {
    id: TimerId,
    /// Effective deadline (as filed).
    deadline: u64,
    period: u64,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let mut wheel: TimerWheel<u32> = TimerWheel::new();
    // Pending timers by their data (= insertion number).
    let mut model: BTreeMap<u32, ModelTimer> = BTreeMap::new();
    let mut ids: Vec<TimerId> = Vec::new();
    let mut now: u64 = 0;
    let mut last_fired: u64 = 0;
    let mut last_elapsed: u64 = 0;

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        match op % 8 {
            // Insert, one-shot or repeating.
            0..=2 | 6 => {
                let deadline = match input.u8() % 6 {
                    0 => now + input.u8() as u64,
                    1 => now + input.u16() as u64,
                    2 => now.saturating_sub(input.u8() as u64), // in the past
                    3 => now + ((input.u16() as u64) << (input.u8() % 32)),
                    4 => wheel.elapsed() + MAX_TICKS - 1 + (input.u8() % 3) as u64, // the horizon
                    _ => input.u64(),                                               // anything
                };
                let data = ids.len() as u32;
                let (id, period) = if op % 8 == 6 {
                    let period = match input.u8() % 4 {
                        0 => input.u8() as u64 % 8, // 0 means 1
                        1 => input.u16() as u64,
                        2 => (input.u16() as u64) << 20,
                        _ => input.u64(),
                    };
                    (wheel.insert_repeating(deadline, period, data), period.max(1))
                } else {
                    (wheel.insert(deadline, data), 0)
                };
                let elapsed = wheel.elapsed();
                let effective = deadline.clamp(elapsed, elapsed + MAX_TICKS);
                model.insert(data, ModelTimer { id, deadline: effective, period });
                ids.push(id);
            }
            // Cancel any id ever issued (pending, fired or cancelled).
            3 => {
                if ids.is_empty() {
                    continue;
                }
                let data = (input.u16() as usize % ids.len()) as u32;
                let id = ids[data as usize];
                let pending = model.contains_key(&data);
                assert_eq!(wheel.contains(id), pending, "contains({data})");
                let got = wheel.cancel(id);
                assert_eq!(got, pending.then_some(data), "cancel({data})");
                model.remove(&data);
                assert!(!wheel.contains(id));
                assert_eq!(wheel.cancel(id), None, "second cancel");
            }
            // Advance the clock and drain everything due.
            4 | 5 | 7 => {
                let delta = match input.u8() % 5 {
                    0 => 0,
                    1 => input.u8() as u64,
                    2 => input.u16() as u64,
                    3 => (input.u16() as u64) << (input.u8() % 30),
                    _ => input.u64() % (MAX_TICKS + 2),
                };
                now = (now + delta).min(MAX_NOW);
                let single = op % 8 == 7;
                loop {
                    let fired = wheel.poll(now);
                    let elapsed = wheel.elapsed();
                    assert!(elapsed >= last_elapsed, "clock went back: {last_elapsed} -> {elapsed}");
                    assert!(elapsed <= now, "clock ahead of now");
                    last_elapsed = elapsed;
                    let Some((id, data)) = fired else {
                        // Nothing lost: nothing due is left.
                        assert_eq!(elapsed, now);
                        if let Some((d, t)) = model.iter().find(|(_, t)| t.deadline <= now) {
                            panic!("timer {d} due at {} still pending at {now}", t.deadline);
                        }
                        break;
                    };
                    let t = model
                        .get_mut(&data)
                        .unwrap_or_else(|| panic!("timer {data} fired but is not pending"));
                    assert_eq!(t.id, id, "fired id");
                    assert!(t.deadline <= now, "early: due {} fired at {now}", t.deadline);
                    assert_eq!(elapsed, t.deadline, "fired off its tick");
                    assert!(t.deadline >= last_fired, "out of order: {} after {last_fired}", t.deadline);
                    last_fired = t.deadline;
                    if t.period == 0 {
                        model.remove(&data);
                        assert!(!wheel.contains(id));
                    } else {
                        let behind = (now - t.deadline) / t.period;
                        let next = t.deadline.saturating_add((behind + 1).saturating_mul(t.period));
                        assert!(next > now);
                        t.deadline = next.clamp(elapsed, elapsed + MAX_TICKS);
                        assert!(wheel.contains(id));
                    }
                    if single {
                        break;
                    }
                }
            }
            _ => unreachable!(),
        }
        // Counts and the next wake-up.
        assert_eq!(wheel.len(), model.len());
        assert_eq!(wheel.is_empty(), model.is_empty());
        match (wheel.next_deadline(), model.values().map(|t| t.deadline).min()) {
            (None, None) => {}
            (Some(next), Some(earliest)) => {
                assert!(next <= earliest, "would sleep past a deadline: next {next}, due {earliest}");
                assert!(next >= wheel.elapsed(), "next deadline in the past");
            }
            (got, want) => panic!("next_deadline {got:?} with earliest pending {want:?}"),
        }
    }
});
