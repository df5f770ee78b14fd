//! Where the servers' listening sockets come from: the first address of
//! `--addr` that binds, one socket shared by the loops of `--threads`, or
//! one socket per loop under `--reuse-port`.
//!
//! One socket holds the port alone by default, so a second server on it
//! fails with "Address already in use" instead of silently splitting the
//! clients with this one, as per-loop sockets with `SO_REUSEPORT` would.
//! Under `--reuse-port` each loop has a socket of its own with
//! `SO_REUSEPORT` (the kernel spreads new connections over them, and over
//! those of other servers that share the port).

use crate::conn::tcp_socket;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// The kernel's queue of connections not yet accepted (capped by
/// `net.core.somaxconn`): room for a thousand clients connecting at once.
const LISTEN_BACKLOG: i32 = 1024;

/// `--reuse-port`: whether the servers' listening sockets let other
/// sockets listen on the same address and port (`SO_REUSEPORT`). Set once
/// by `main`, before a server binds.
static REUSE_PORT: AtomicBool = AtomicBool::new(false);

/// Sets `--reuse-port` (see [`REUSE_PORT`]).
pub fn set_reuse_port(on: bool) {
    REUSE_PORT.store(on, Ordering::Relaxed);
}

/// A listener for each of `count` loops, on the first address of `addr`
/// that binds (`addr` may be a host name: `localhost:9999`): descriptors
/// of one socket, or under `--reuse-port` sockets of their own with
/// `SO_REUSEPORT` (port 0 then means the port the first one gets).
pub fn bind_listeners(addr: &str, count: usize) -> io::Result<Vec<TcpListener>> {
    if REUSE_PORT.load(Ordering::Relaxed) {
        on_first_address(addr, |candidate| bind_each(candidate, count))
    } else {
        on_first_address(addr, |candidate| bind_shared(candidate, count))
    }
}

/// One socket, `count` descriptors of it.
fn bind_shared(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let first = listen_on(addr, false)?;
    let mut listeners = Vec::with_capacity(count);
    for _ in 1..count {
        listeners.push(first.try_clone()?);
    }
    listeners.insert(0, first);
    Ok(listeners)
}

/// `count` sockets on `addr` with `SO_REUSEPORT`.
fn bind_each(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let first = listen_on(addr, true)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(listen_on(bound, true)?);
    }
    Ok(listeners)
}

/// `bind` on each address `addr` resolves to, until one works; else the
/// last error, naming its address.
pub fn on_first_address<T>(
    addr: &str,
    bind: impl Fn(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last_error = None;
    let candidates = addr
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve '{addr}': {e}")))?;
    for candidate in candidates {
        match bind(candidate) {
            Ok(bound) => return Ok(bound),
            Err(e) => last_error = Some(io::Error::new(e.kind(), format!("{candidate}: {e}"))),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address"))
    }))
}

/// A non-blocking socket listening on `addr`, closed on exec; with
/// `reuse_port`, other sockets may listen on the same address and port.
pub fn listen_on(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = tcp_socket(addr)?;
    // A restarted server can bind while old connections sit in TIME_WAIT.
    rustix::net::sockopt::set_socket_reuseaddr(&socket, true)?;
    if reuse_port {
        share_port(&socket)?;
    }
    rustix::net::bind(&socket, &addr)?;
    rustix::net::listen(&socket, LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Lets other sockets listen on `socket`'s address and port, the kernel
/// spreading new connections over them (`SO_REUSEPORT`; on FreeBSD
/// `SO_REUSEPORT_LB`, since its `SO_REUSEPORT` does not spread them).
/// Refused elsewhere: illumos has no `SO_REUSEPORT`, and on macOS, NetBSD
/// and OpenBSD sockets sharing a port do not share its connections (one
/// of them would get them all).
fn share_port(socket: &OwnedFd) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "dragonfly"))]
    return Ok(rustix::net::sockopt::set_socket_reuseport(socket, true)?);
    #[cfg(target_os = "freebsd")]
    return Ok(rustix::net::sockopt::set_socket_reuseport_lb(socket, true)?);
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "dragonfly",
        target_os = "freebsd"
    )))]
    {
        let _ = socket;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "--reuse-port is not supported on this system: sockets that share a port \
             do not share its connections here (--threads alone works: its loops share \
             one socket)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_share_the_port_of_the_first() {
        let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
        for bind in [bind_shared, bind_each] {
            let listeners = bind(any_port, 3).unwrap();
            assert_eq!(listeners.len(), 3);
            let port = listeners[0].local_addr().unwrap().port();
            assert_ne!(port, 0);
            for listener in &listeners {
                assert_eq!(listener.local_addr().unwrap().port(), port);
            }
        }
    }

    /// Without --reuse-port the port is the server's alone: a socket with
    /// SO_REUSEPORT cannot join it (with --reuse-port it can).
    #[test]
    fn a_shared_listener_holds_its_port_alone() {
        let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let shared = bind_shared(any_port, 2).unwrap();
        let addr = shared[0].local_addr().unwrap();
        let intruder = listen_on(addr, true).unwrap_err();
        assert_eq!(intruder.kind(), io::ErrorKind::AddrInUse);
        assert!(bind_each(addr, 2).is_err());

        let each = bind_each(any_port, 2).unwrap();
        let addr = each[0].local_addr().unwrap();
        assert!(listen_on(addr, true).is_ok());
        assert!(listen_on(addr, false).is_err());
    }

    /// A listener is non-blocking and closed on exec, as the accepted
    /// sockets are (see `server::accept`).
    #[test]
    fn listeners_are_nonblocking_and_close_on_exec() {
        use rustix::fs::{fcntl_getfl, OFlags};
        use rustix::io::{fcntl_getfd, FdFlags};
        let listener = listen_on("127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert!(fcntl_getfl(&listener).unwrap().contains(OFlags::NONBLOCK));
        assert!(fcntl_getfd(&listener).unwrap().contains(FdFlags::CLOEXEC));
    }
}
