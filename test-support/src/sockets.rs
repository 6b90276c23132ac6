//! Client sockets the way tests need them and std cannot make them: options set *before*
//! connect (a small receive window, a small MSS), any int option, and a close that sends RST
//! instead of FIN (SO_LINGER 0), to play a peer that resets.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Duration;

/// Options applied to a client socket before it connects (so they shape the connection from
/// its first segment: the window it advertises, the MSS it announces).
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    /// SO_RCVBUF in bytes (the kernel doubles it).
    pub recv_buffer: Option<i32>,
    /// SO_SNDBUF in bytes (the kernel doubles it).
    pub send_buffer: Option<i32>,
    /// TCP_MAXSEG: the largest segment this side announces.
    pub max_segment: Option<i32>,
}

/// Sets an int socket option (`setsockopt(fd, level, name, &value)`).
pub fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int with its exact size; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A blocking IPv4 TCP connection to `addr` whose socket got `shape` before connecting.
///
/// A signal can interrupt the blocking connect (libFuzzer's timeout alarm does); the
/// handshake goes on regardless, so the connect is asked again until it reports connected
/// (EISCONN).
pub fn connect_shaped(addr: SocketAddr, shape: Shape) -> io::Result<TcpStream> {
    let SocketAddr::V4(v4) = addr else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "connect_shaped: IPv4 only"));
    };
    // SAFETY: plain socket(2); it takes integers and returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nothing else owns; from here on the stream closes it,
    // on every return path.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let options = [
        (libc::SOL_SOCKET, libc::SO_RCVBUF, shape.recv_buffer),
        (libc::SOL_SOCKET, libc::SO_SNDBUF, shape.send_buffer),
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG, shape.max_segment),
    ];
    for (level, name, value) in options {
        if let Some(v) = value {
            set_int_option(fd, level, name, v)?;
        }
    }
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
        sin_zero: [0; 8],
    };
    loop {
        // SAFETY: `sin` is a live sockaddr_in of the size passed; the kernel only reads it.
        let rc = unsafe {
            libc::connect(
                fd,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(stream);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EISCONN) => return Ok(stream),
            Some(libc::EINTR | libc::EALREADY | libc::EINPROGRESS) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            _ => return Err(e),
        }
    }
}

/// Sets SO_LINGER {on, 0} on `fd`: its close then sends RST instead of FIN (and nothing stays
/// in TIME_WAIT).
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: passes a pointer to a live linger struct with its exact size; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes `stream` abruptly: SO_LINGER 0, then close, so the peer gets RST instead of FIN.
/// Panics if the option cannot be set (the test would otherwise send FIN and test nothing).
pub fn reset(stream: TcpStream) {
    set_linger_zero(stream.as_raw_fd()).expect("SO_LINGER 0 on a test socket");
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn get_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are live and sized for a c_int option.
        let rc =
            unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut libc::c_int).cast(), &mut len) };
        assert_eq!(rc, 0, "getsockopt: {}", io::Error::last_os_error());
        value
    }

    #[test]
    fn a_shaped_socket_connects_with_its_options() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let shape = Shape { recv_buffer: Some(4096), send_buffer: Some(4096), max_segment: Some(1000) };
        let mut s = connect_shaped(listener.local_addr().unwrap(), shape).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        // The kernel doubles the buffer sizes it is given.
        assert_eq!(get_int_option(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF), 8192);
        assert_eq!(get_int_option(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF), 8192);
        assert!(get_int_option(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_MAXSEG) <= 1000);
        s.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        server.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
    }

    #[test]
    fn connect_shaped_reports_a_refused_connection() {
        // Bind then drop: nothing listens on the port any more.
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let e = connect_shaped(addr, Shape::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(connect_shaped("[::1]:1".parse().unwrap(), Shape::default()).is_err());
    }

    #[test]
    fn reset_sends_rst_not_fin() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        reset(client);
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let e = server.read(&mut [0u8; 16]).expect_err("a FIN would read as Ok(0)");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }
}
