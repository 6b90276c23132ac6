//! Signals to a process: a test stops the `tidings` binary with SIGTERM, kills a child that
//! overran its time, or sends this process the signals the reactor watches.

use std::io;

/// `kill(pid, signo)`: sends `signo` to process `pid` (a child of ours, not reaped yet: once
/// reaped its pid may name another process).
pub fn kill(pid: u32, signo: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill takes two integers and reads no memory of ours.
    if unsafe { libc::kill(pid, signo) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signo` to this process (whichever thread does not block it takes it).
pub fn raise_in_process(signo: libc::c_int) -> io::Result<()> {
    kill(std::process::id(), signo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_reaches_a_child_and_reports_a_bad_pid() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        kill(child.id(), libc::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        // Above the kernel's largest pid: ESRCH.
        assert_eq!(kill(4_194_305 + 7, 0).unwrap_err().raw_os_error(), Some(libc::ESRCH));
        assert!(kill(u32::MAX, 0).is_err());
    }
}
