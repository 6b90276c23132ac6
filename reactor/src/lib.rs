//! # tidings-reactor: a single-threaded epoll event loop you can read in one sitting
//!
//! This crate is the bottom layer of tidings. It knows nothing of HTTP: it turns the kernel's
//! readiness notifications, the passing of time, messages from other threads and Unix signals
//! into calls on one [`Handler`], the single owner of all application state.
//!
//! | module | what it is | why it is here |
//! |---|---|---|
//! | [`sys`] | one function per syscall, the only `unsafe` code | keeps the rest safe and readable |
//! | [`event_loop`] | [`Reactor`]: epoll, tokens, the phases of a turn | the loop itself |
//! | [`wheel`] | [`TimerWheel`]: hierarchical timing wheel | O(1) timers, no polling interval |
//! | [`remote`] | [`Remote`]: eventfd + queue | the only way other threads reach the loop |
//! | [`pool`] | [`WorkerPool`]: threads for blocking jobs | slow work never stalls the loop |
//! | [`signals`] | self-pipe for SIGINT/SIGTERM | graceful stop, handled in the loop |
//! | [`net`] | listening/accepted TCP sockets | what a server needs, over `sys` |
//!
//! Start with the [`event_loop`] module docs: they walk through one turn of the loop. The
//! book in `docs/` (start at `docs/README.md`) explains each module with diagrams and
//! experiments.
//!
//! ```no_run
//! use reactor::{Reactor, Handler, Event};
//! // A timer's payload is any `Clone` type: here, which timer it is.
//! #[derive(Clone)]
//! enum Timer { Stop }
//! struct App;
//! impl Handler<(), Timer> for App {
//!     fn on_io(&mut self, _r: &mut Reactor<(), Timer>, _ev: Event) {}
//!     fn on_timer(&mut self, r: &mut Reactor<(), Timer>, _id: reactor::TimerId, t: Timer) {
//!         match t { Timer::Stop => r.stop() }
//!     }
//! }
//! let mut r = Reactor::<(), Timer>::new().unwrap();
//! r.set_timer(std::time::Duration::from_millis(10), Timer::Stop);
//! r.run(&mut App).unwrap();
//! ```

// `unsafe` is refused everywhere but in `sys`, the one module of syscall wrappers.
#![deny(unsafe_code)]

pub mod event_loop;
pub mod net;
pub mod pool;
pub mod remote;
pub mod signals;
#[allow(unsafe_code)]
pub mod sys;
pub mod wheel;

pub use event_loop::{Event, Handler, Interest, LoopStats, Reactor, Ready, Token};
pub use pool::{Cancelled, StopSignal, SubmitError, WorkerPool};
pub use remote::Remote;
pub use wheel::{TimerId, TimerWheel};
