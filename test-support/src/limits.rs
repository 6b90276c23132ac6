//! Resource limits. Tests raise this process's fd limit (thousands of client sockets), run a
//! server under a small one (EMFILE), or start a child under a limit (a small address space,
//! 64 fds) to see the product fail cleanly.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A resource [`set_soft_in_child`] can limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// RLIMIT_NOFILE: open file descriptors.
    OpenFiles,
    /// RLIMIT_AS: bytes of address space (thread stacks count).
    AddressSpace,
}

impl Resource {
    fn raw(self) -> libc::__rlimit_resource_t {
        match self {
            Resource::OpenFiles => libc::RLIMIT_NOFILE,
            Resource::AddressSpace => libc::RLIMIT_AS,
        }
    }
}

fn get(resource: Resource) -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a live rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(resource.raw(), &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r.rlim_cur, r.rlim_max))
}

fn set(resource: Resource, soft: u64, hard: u64) -> io::Result<()> {
    let r = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: `r` is a valid rlimit, only read by the kernel.
    if unsafe { libc::setrlimit(resource.raw(), &r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// (soft, hard) RLIMIT_NOFILE of this process.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    get(Resource::OpenFiles)
}

/// Sets this process's soft fd limit to `soft`, keeping the hard limit (a server run under a
/// small limit; children inherit it).
pub fn set_nofile_soft_limit(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile_limit()?;
    set(Resource::OpenFiles, soft, hard)
}

/// Raises this process's soft fd limit to its hard limit (children inherit it); returns the
/// new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let (_, hard) = nofile_limit()?;
    set(Resource::OpenFiles, hard, hard)?;
    Ok(hard)
}

/// Makes `cmd` start its child with the soft limit of `resource` at `soft` (the hard limit is
/// kept), set in the forked child just before exec; this process's own limits do not change.
pub fn set_soft_in_child(cmd: &mut Command, resource: Resource, soft: u64) {
    let raw = resource.raw();
    // SAFETY: the closure runs in the forked child before exec and calls only getrlimit and
    // setrlimit on a stack value, both async-signal-safe; it allocates nothing and takes no
    // lock (`last_os_error` only reads errno).
    unsafe {
        cmd.pre_exec(move || {
            let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::getrlimit(raw, &mut r) != 0 {
                return Err(io::Error::last_os_error());
            }
            r.rlim_cur = soft.min(r.rlim_max);
            if libc::setrlimit(raw, &r) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_reaches_the_hard_limit() {
        let (_, hard) = nofile_limit().unwrap();
        assert_eq!(raise_nofile_limit().unwrap(), hard);
        assert_eq!(nofile_limit().unwrap(), (hard, hard));
    }

    #[test]
    fn a_child_gets_its_own_limit() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ulimit -n"]);
        set_soft_in_child(&mut cmd, Resource::OpenFiles, 37);
        let out = cmd.output().expect("run sh");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "37");
        assert_ne!(nofile_limit().unwrap().0, 37, "our own limit is unchanged");
    }
}
