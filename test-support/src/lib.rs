//! # tidings-test-support: the one copy of what the tests, benches, fuzz targets and load
//! generator share
//!
//! Not product code: nothing in `reactor`, `http` or `app` depends on this crate (it is a
//! dev-dependency of the suite, `http` and `reactor`, a dependency of the load generator, a
//! path dependency of the fuzz crate). It exists so that
//!
//! * `reactor::sys` holds only the syscalls the product makes: probes that only a test or a
//!   bench wants (CPU clocks, fd counts, resource limits, SO_LINGER 0) live here, and
//! * each helper the test code repeated (the `/proc` readers, the strict JSON reader, the
//!   RST helper, base64, a deterministic generator) exists once, tested once.
//!
//! Like `reactor::sys`, this crate may use `unsafe` (for libc calls std does not offer);
//! every block carries a `// SAFETY:` comment.
//!
//! | module | what it is |
//! |---|---|
//! | [`procfs`] | CPU time, RSS, open fds and threads of a process, from `/proc` |
//! | [`cpu`] | CPU clocks of this thread (`clock_gettime`) and the tick length of `/proc` |
//! | [`limits`] | resource limits: this process's fd limit, a limit set in a child before exec |
//! | [`sockets`] | client sockets shaped before connect, int options, close with RST |
//! | [`process`] | signals to a process |
//! | [`redis`] | a real `redis-server` on a free port: stop, continue, kill, restart empty, inspect |
//! | [`json`] | a strict JSON reader (RFC 8259) for the hub's answers |
//! | [`base64`] | strict base64 decoding (`data_b64` of the hub's answers) |
//! | [`rng`] | xorshift64*: reproducible randomness without a dependency |

pub mod base64;
pub mod cpu;
pub mod json;
pub mod limits;
pub mod process;
pub mod procfs;
pub mod redis;
pub mod rng;
pub mod sockets;

pub use json::Json;
