//! Timers on the reactor: `cargo run -p tidings-reactor --example timers`
//!
//! A long-poll server is mostly timers: one per waiting client ("answer 304 Not Modified if
//! nothing arrives within 25 s"), and almost all of them are cancelled early because a message came.
//! This demo sets a few one-shot timers, cancels one, runs a repeating "heartbeat", and shows
//! that the loop sleeps between them instead of waking up on a fixed polling interval.
use std::time::Duration;

use reactor::{Event, Handler, Reactor, TimerId};

// Tags tell the handler which timer fired (the reactor gives them back untouched).
const HEARTBEAT: u64 = 0;
const CLIENT_TIMEOUT: u64 = 1;
const CANCELLED: u64 = 2;
const STOP: u64 = 3;

struct Demo {
    heartbeat: Option<TimerId>,
    beats: u32,
}

impl Handler<()> for Demo {
    // No sockets in this demo; a real server would read and write here.
    fn on_io(&mut self, _r: &mut Reactor<()>, _ev: Event) {}

    // Runs on the loop's thread, like on_io: it may touch any state without locks.
    fn on_timer(&mut self, r: &mut Reactor<()>, _id: TimerId, tag: u64) {
        let ms = r.elapsed().as_millis();
        match tag {
            HEARTBEAT => {
                self.beats += 1;
                println!("{ms:>5} ms  heartbeat #{}", self.beats);
                // A repeating timer can be cancelled from its own callback, too.
                if self.beats == 4 {
                    r.cancel_timer(self.heartbeat.take().unwrap());
                    println!("           heartbeat cancelled");
                }
            }
            CLIENT_TIMEOUT => println!("{ms:>5} ms  client timed out (a 304 would go out here)"),
            CANCELLED => unreachable!("a cancelled timer never fires"),
            _ => {
                println!("{ms:>5} ms  stop");
                r.stop(); // run() returns after this turn
            }
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut r = Reactor::<()>::new()?;

    // Deadlines are in whole milliseconds, rounded *up*: a timer never fires early, only up
    // to ~1 ms late (plus however long the current turn takes: keep handlers short).
    r.set_timer(Duration::from_millis(450), CLIENT_TIMEOUT);

    // Cancel is O(1) in the timing wheel: unlink from a slot's list. The message "arrived",
    // so this client's timeout must not fire. Cancelling a stale id is a harmless no-op.
    let early = r.set_timer(Duration::from_millis(300), CANCELLED);
    assert!(r.cancel_timer(early));
    assert!(!r.cancel_timer(early));

    // Every 200 ms (first after 200 ms). If the loop falls behind, missed beats are skipped
    // rather than fired in a burst.
    let heartbeat = Some(r.set_repeating_timer(Duration::from_millis(200), HEARTBEAT));
    r.set_timer(Duration::from_millis(1_000), STOP);

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
