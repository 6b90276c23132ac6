//! What the load generator reads about the *server* process from /proc: CPU time
//! (`/proc/PID/stat`, utime + stime, in clock ticks) and resident memory (`/proc/PID/status`,
//! VmRSS).
//!
//! CPU time comes in ticks of 1/`sysconf(_SC_CLK_TCK)` s (normally 10 ms), so a window of a
//! few seconds at full load gives a figure to well under 1%; an idle window reads 0 or 1
//! tick (the reported idle CPU% has a resolution of one tick over the window).

use std::io;
use std::time::Duration;

/// A reading of the server's CPU time.
#[derive(Clone, Copy, Debug)]
pub struct Cpu {
    pub ticks: u64,
}

impl Cpu {
    /// CPU time used between `self` and a later reading.
    pub fn until(self, later: Cpu) -> Duration {
        let ticks = later.ticks.saturating_sub(self.ticks);
        let hz = reactor::sys::clock_ticks_per_second();
        Duration::from_micros(ticks * 1_000_000 / hz)
    }
}

/// utime + stime of `pid`, from `/proc/PID/stat`.
pub fn cpu(pid: u32) -> io::Result<Cpu> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text)
        .map(|ticks| Cpu { ticks })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse /proc/{pid}/stat")))
}

/// utime (field 14) + stime (field 15). The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the *last* ')'.
fn parse_stat(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // `after` starts at field 3 (state); utime is field 14, i.e. the 12th from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of `pid` in bytes (VmRSS in `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vmrss(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no VmRSS in /proc/{pid}/status")))
}

fn parse_vmrss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_ascii_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(n * 1024),
        _ => None,
    }
}

/// Checks that `pid` names a live process we can read, with a clear message otherwise.
pub fn check(pid: u32) -> Result<(), String> {
    cpu(pid)
        .map(|_| ())
        .map_err(|e| format!("cannot read /proc/{pid}/stat ({e}): is {pid} the server's pid?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_name() {
        let line = "4242 (my (odd) srv) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    1234 567 0 0 20 0 3 0 100 1000000 500 18446744073709551615 0 0 0";
        assert_eq!(parse_stat(line), Some(1234 + 567));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn vmrss_in_bytes() {
        let status = "Name:\ttidings\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(status), Some(2048 * 1024));
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        cpu(me).unwrap();
        assert!(check(me).is_ok());
    }
}
