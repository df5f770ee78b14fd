//! The ceiling: a hand-written level-triggered `epoll` echo server on `libc`.
//!
//! One thread, one epoll set, an fd-indexed table of connections. On EPOLLIN it reads
//! once (64 KiB) and writes the bytes straight back; if the write is partial the rest is
//! buffered and the fd switches to EPOLLOUT until drained, then back to EPOLLIN (so a
//! slow reader pushes back on its writer). Close on EOF or error. This is what a careful
//! C programmer would write; every other server is compared with it.
//!
//! `unsafe` is used for the raw system calls: this is benchmark code, never shipped.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use bench_peers::{announce, bind_listener, die, Pending, READ_BUF_SIZE};

/// Events fetched per `epoll_wait`.
const MAX_EVENTS: usize = 1024;

/// State of one accepted connection: only the unsent tail of a partial write.
struct Conn {
    pending: Pending,
}

/// Converts a `-1` return into the thread's `errno` as an `io::Error`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Changes the interest set of `fd` (EPOLL_CTL_ADD or EPOLL_CTL_MOD).
fn epoll_ctl(epfd: RawFd, op: libc::c_int, fd: RawFd, events: u32) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: `event` is a valid, initialised epoll_event that outlives the call; the
    // kernel validates both fds.
    check(unsafe { libc::epoll_ctl(epfd, op, fd, &mut event) }).map(drop)
}

/// Writes as much of `buf` as the socket takes now; returns the count (0 on EAGAIN).
fn write_some(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid readable slice for `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(err),
        }
    }
}

/// Closes `fd` and forgets its state. Closing removes it from the epoll set too, because
/// no other descriptor refers to the same open file.
fn close_conn(table: &mut [Option<Conn>], fd: RawFd) {
    table[fd as usize] = None;
    // SAFETY: `fd` was returned by accept4 and is owned by the table entry just cleared.
    unsafe { libc::close(fd) };
}

/// Accepts every pending connection on the listener (level-triggered, but draining the
/// backlog per wakeup saves epoll_wait calls under churn).
fn accept_all(epfd: RawFd, listen_fd: RawFd, table: &mut Vec<Option<Conn>>) {
    loop {
        // SAFETY: null address pointers are allowed when the peer address is not wanted.
        let fd = unsafe {
            libc::accept4(
                listen_fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                io::ErrorKind::WouldBlock => return,
                // EMFILE and friends: leave the rest in the backlog until a close frees an fd.
                _ => return,
            }
        }
        let one: libc::c_int = 1;
        // SAFETY: `one` is a valid c_int for the duration of the call. Small echoes
        // must not wait for Nagle; every peer server sets TCP_NODELAY the same way.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let index = fd as usize;
        if table.len() <= index {
            table.resize_with(index + 1, || None);
        }
        if epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32).is_err() {
            // SAFETY: `fd` was just accepted and is owned here.
            unsafe { libc::close(fd) };
            continue;
        }
        table[index] = Some(Conn {
            pending: Pending::default(),
        });
    }
}

/// Handles EPOLLIN: one read, one write back, buffer the rest and switch to EPOLLOUT.
fn on_readable(epfd: RawFd, fd: RawFd, table: &mut [Option<Conn>], buf: &mut [u8]) {
    // SAFETY: `buf` is a valid writable slice for `buf.len()` bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let kind = io::Error::last_os_error().kind();
        if kind != io::ErrorKind::WouldBlock && kind != io::ErrorKind::Interrupted {
            close_conn(table, fd);
        }
        return;
    }
    if n == 0 {
        close_conn(table, fd);
        return;
    }
    let data = &buf[..n as usize];
    match write_some(fd, data) {
        Ok(sent) if sent == data.len() => {}
        Ok(sent) => {
            if let Some(conn) = table[fd as usize].as_mut() {
                conn.pending.hold(&data[sent..]);
            }
            if epoll_ctl(epfd, libc::EPOLL_CTL_MOD, fd, libc::EPOLLOUT as u32).is_err() {
                close_conn(table, fd);
            }
        }
        Err(_) => close_conn(table, fd),
    }
}

/// Handles EPOLLOUT: write the buffered tail; once drained, go back to EPOLLIN.
fn on_writable(epfd: RawFd, fd: RawFd, table: &mut [Option<Conn>]) {
    let Some(conn) = table[fd as usize].as_mut() else {
        return;
    };
    match write_some(fd, conn.pending.rest()) {
        Ok(sent) => {
            let drained = conn.pending.wrote(sent);
            if drained && epoll_ctl(epfd, libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32).is_err() {
                close_conn(table, fd);
            }
        }
        Err(_) => close_conn(table, fd),
    }
}

fn main() {
    let (listener, local) = bind_listener();
    let listen_fd = listener.as_raw_fd();

    // SAFETY: plain system call; the result is checked.
    let epfd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
        .unwrap_or_else(|e| die("epoll_create1", e));
    epoll_ctl(epfd, libc::EPOLL_CTL_ADD, listen_fd, libc::EPOLLIN as u32)
        .unwrap_or_else(|e| die("epoll_ctl(listener)", e));
    announce(local);

    let mut table: Vec<Option<Conn>> = Vec::new();
    let mut buf = vec![0u8; READ_BUF_SIZE];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
    loop {
        // SAFETY: `events` holds MAX_EVENTS initialised entries the kernel may overwrite.
        let ready =
            unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), MAX_EVENTS as libc::c_int, -1) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            die("epoll_wait", err);
        }
        for event in &events[..ready as usize] {
            let fd = event.u64 as RawFd;
            let flags = event.events;
            if fd == listen_fd {
                accept_all(epfd, listen_fd, &mut table);
                continue;
            }
            // An earlier event in this batch may have closed it. If an accept in this
            // batch reused the number, the stale event costs one EAGAIN read at worst.
            if table.get(fd as usize).is_none_or(|c| c.is_none()) {
                continue;
            }
            let writing = table[fd as usize]
                .as_ref()
                .is_some_and(|c| !c.pending.is_empty());
            if writing {
                // Registered for EPOLLOUT only; EPOLLERR/EPOLLHUP surface as a write error.
                on_writable(epfd, fd, &mut table);
            } else if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                on_readable(epfd, fd, &mut table, &mut buf);
            }
        }
    }
}
