//! The server's log: one line on stderr per event worth telling an operator.

use std::io::{self, Write as _};

/// One line on stderr, `tidings: ` first. Unlike `eprintln!`, which panics when stderr is a
/// pipe nobody reads any more (EPIPE: SIGPIPE is ignored), a failed write is dropped: a log
/// line is never worth the loop. The app logs through it too (`--access-log`, job panics).
pub fn log(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "tidings: {args}");
}
