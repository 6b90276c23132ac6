//! The Redis client of cluster mode: tidings nodes that share their channels through Redis.
//!
//! - [`resp`]: RESP2, the wire format, as pure functions with no I/O: [`resp::parse_reply`]
//!   reads one reply from the front of a buffer (or says "incomplete", or "broken stream"), and
//!   [`resp::encode_command`] writes a command. The connection code on the reactor builds on it.

pub mod conn;
pub mod resp;
