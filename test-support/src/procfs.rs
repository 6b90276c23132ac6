//! What a test or a bench reads about a process from `/proc`: CPU time (`/proc/PID/stat`,
//! utime + stime, in clock ticks), resident memory (`/proc/PID/status`, VmRSS), open file
//! descriptors (`/proc/PID/fd`), threads (`/proc/PID/task`) and the TCP connections a process
//! accepted on a port (`/proc/PID/fd` joined with `/proc/net/tcp`).
//!
//! CPU time comes in ticks of 1/`sysconf(_SC_CLK_TCK)` s (normally 10 ms), so a window of a
//! few seconds at full load gives a figure to well under 1%; an idle window reads 0 or 1
//! tick (a CPU figure has a resolution of one tick over its window).
//!
//! Every reader returns `io::Result`: the process may be gone; a caller that has no use for
//! the error (a test) unwraps it with a message.

use std::io;
use std::time::Duration;

use crate::cpu::clock_ticks_per_second;

/// A reading of a process's CPU time (user + system), in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub ticks: u64,
}

impl Cpu {
    /// CPU time used between `self` and a later reading.
    pub fn until(self, later: Cpu) -> Duration {
        ticks_to_duration(later.ticks.saturating_sub(self.ticks))
    }

    /// The whole CPU time of the reading, since the process started.
    pub fn total(self) -> Duration {
        ticks_to_duration(self.ticks)
    }
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_micros(ticks.saturating_mul(1_000_000) / clock_ticks_per_second())
}

/// utime + stime of `pid`, from `/proc/PID/stat`.
pub fn cpu(pid: u32) -> io::Result<Cpu> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text)
        .map(|ticks| Cpu { ticks })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse /proc/{pid}/stat")))
}

/// utime + stime of `pid` so far, as a duration.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    cpu(pid).map(Cpu::total)
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

/// Open file descriptors of another process `pid` (entries of `/proc/PID/fd`). For this
/// process use [`open_fd_count`], which leaves out the descriptor the listing itself opens.
pub fn fd_count(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Open file descriptors of this process (entries of `/proc/self/fd`, less the one the
/// listing holds while it runs), for leak checks.
pub fn open_fd_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count().saturating_sub(1))
}

/// Threads of process `pid` (entries of `/proc/PID/task`).
pub fn thread_count(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/task"))?.count())
}

/// Established IPv4 TCP connections held by process `pid` whose local port is `port`: the
/// clients it accepted on that port (its listener is not counted). Tells which of several
/// processes sharing a port (SO_REUSEPORT) took which connections.
pub fn established_on_port(pid: u32, port: u16) -> io::Result<usize> {
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        // An fd closed between the listing and the readlink is simply not counted.
        let Ok(target) = std::fs::read_link(entry?.path()) else { continue };
        let target = target.to_string_lossy();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.insert(inode.to_string());
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))?;
    Ok(parse_tcp_table(&table).filter(|(p, inode)| *p == port && inodes.contains(*inode)).count())
}

/// `(local port, inode)` of the ESTABLISHED (state `01`) rows of a `/proc/net/tcp` table.
fn parse_tcp_table(table: &str) -> impl Iterator<Item = (u16, &str)> {
    table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
        (*state == "01").then_some((port, *inode))
    })
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
        assert_eq!(parse_stat("1 (x) S 1 2"), None, "too few fields");
    }

    #[test]
    fn vmrss_in_bytes() {
        let status = "Name:\ttidings\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(status), Some(2048 * 1024));
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
        assert_eq!(parse_vmrss("VmRSS:\t 12 MB\n"), None, "an unknown unit is not guessed");
    }

    #[test]
    fn ticks_become_time() {
        let hz = clock_ticks_per_second();
        assert_eq!(Cpu { ticks: 10 }.until(Cpu { ticks: 10 + hz }), Duration::from_secs(1));
        assert_eq!(Cpu { ticks: 5 }.until(Cpu { ticks: 3 }), Duration::ZERO, "never negative");
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        cpu(me).unwrap();
        assert!(thread_count(me).unwrap() >= 1);
        assert!(open_fd_count().unwrap() >= 3, "stdin, stdout and stderr at least");
        // One more file is one more fd, and the listing's own fd is not counted. Other tests
        // of this binary open fds on other threads meanwhile, so a few tries are allowed.
        let exact = (0..100).any(|_| {
            let before = open_fd_count().unwrap();
            let f = std::fs::File::open("/proc/self/stat").unwrap();
            let with = open_fd_count().unwrap();
            drop(f);
            with == before + 1 && open_fd_count().unwrap() == before
        });
        assert!(exact, "open_fd_count never saw exactly one more fd for one more file");
    }

    #[test]
    fn tcp_rows_by_local_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 222 1 0 20 4 30 10 -1\n\
   2: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 333 1 0 20 4 30 10 -1\n";
        let rows: Vec<(u16, &str)> = parse_tcp_table(table).collect();
        assert_eq!(rows, [(8080, "222"), (54321, "333")], "the listener (0A) is left out");
    }

    #[test]
    fn our_own_accepted_connection_is_counted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        let before = established_on_port(me, port).unwrap();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        assert_eq!(established_on_port(me, port).unwrap(), before + 1);
    }

    #[test]
    fn a_missing_process_is_an_error() {
        // Above the kernel's largest pid (4,194,304), so no such process can exist.
        let pid = 4_194_305 + 7;
        assert!(cpu(pid).is_err());
        assert!(rss_bytes(pid).is_err());
        assert!(fd_count(pid).is_err());
        assert!(thread_count(pid).is_err());
        assert!(established_on_port(pid, 80).is_err());
    }
}
