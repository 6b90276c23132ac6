//! Timers on the reactor: `cargo run -p tidings-reactor --example timers`
//!
//! A long-poll server is mostly timers: one per waiting client ("answer 304 Not Modified if
//! nothing arrives within 25 s"), and almost all of them are cancelled early because a message came.
//! This demo sets a few one-shot timers, cancels one, runs a repeating "heartbeat", and shows
//! that the loop sleeps between them instead of waking up on a fixed polling interval.
use std::time::Duration;

use reactor::{Event, Handler, Reactor, TimerId};

// A timer's payload tells the handler which timer fired (the reactor gives it back
// untouched). Any `Clone` type: here an enum, so a match covers every kind.
#[derive(Clone, Copy, Debug)]
enum Timer {
    Heartbeat,
    ClientTimeout,
    Cancelled,
    Stop,
}

struct Demo {
    heartbeat: Option<TimerId>,
    beats: u32,
}

impl Handler<(), Timer> for Demo {
    // No sockets in this demo; a real server would read and write here.
    fn on_io(&mut self, _r: &mut Reactor<(), Timer>, _ev: Event) {}

    // Runs on the loop's thread, like on_io: it may touch any state without locks.
    fn on_timer(&mut self, r: &mut Reactor<(), Timer>, _id: TimerId, timer: Timer) {
        let ms = r.elapsed().as_millis();
        match timer {
            Timer::Heartbeat => {
                self.beats += 1;
                println!("{ms:>5} ms  heartbeat #{}", self.beats);
                // A repeating timer can be cancelled from its own callback, too.
                if self.beats == 4 {
                    r.cancel_timer(self.heartbeat.take().unwrap());
                    println!("           heartbeat cancelled");
                }
            }
            Timer::ClientTimeout => println!("{ms:>5} ms  client timed out (a 304 would go out here)"),
            Timer::Cancelled => unreachable!("a cancelled timer never fires"),
            Timer::Stop => {
                println!("{ms:>5} ms  stop");
                r.stop(); // run() returns after this turn
            }
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut r = Reactor::<(), Timer>::new()?;

    // Deadlines are in whole milliseconds, rounded *up*: a timer never fires early, only up
    // to ~1 ms late (plus however long the current turn takes: keep handlers short).
    r.set_timer(Duration::from_millis(450), Timer::ClientTimeout);

    // Cancel is O(1) in the timing wheel: unlink from a slot's list. The message "arrived",
    // so this client's timeout must not fire. Cancelling a stale id is a harmless no-op.
    let early = r.set_timer(Duration::from_millis(300), Timer::Cancelled);
    assert!(r.cancel_timer(early));
    assert!(!r.cancel_timer(early));

    // Every 200 ms (first after 200 ms). If the loop falls behind, missed beats are skipped
    // rather than fired in a burst.
    let heartbeat = Some(r.set_repeating_timer(Duration::from_millis(200), Timer::Heartbeat));
    r.set_timer(Duration::from_millis(1_000), Timer::Stop);

    let mut demo = Demo { heartbeat, beats: 0 };
    r.run(&mut demo)?;

    // Each turn of the loop is one return from epoll_wait. With no sockets, the loop only
    // woke for timer work: a handful of turns for a whole second, not one per millisecond.
    // (A timer far away may cost an extra wake-up per wheel level it crosses: the wheel
    // cascades it to a finer level, then sleeps again.)
    let s = r.stats();
    println!("{} turns, {} timers fired, {} still pending", s.iterations, s.timers_fired, s.timers_pending);
    Ok(())
}
