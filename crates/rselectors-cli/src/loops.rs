//! `--threads N`: N event loops in one server.
//!
//! Each loop is a thread with its own selector. They share one listening
//! socket (each watches a duplicate of its descriptor, level-triggered):
//! a new connection makes every idle loop's wait return, the first to
//! call `accept4` takes it and the others get `EAGAIN` and wait again.
//! One socket holds the port alone, so a second server on it fails with
//! "Address already in use" instead of silently splitting the clients
//! with this one, as per-loop sockets with `SO_REUSEPORT` would. Under
//! `--reuse-port` each loop has a socket of its own with `SO_REUSEPORT`
//! (the kernel spreads new connections over them, and over those of
//! other servers that share the port).
//!
//! No lock is taken on the path of a message. What loops tell each other
//! (a chat line for their clients, "stop") goes through [`Loops`]: an
//! inbox per loop, held locked only to push or to take its contents, and
//! the loop's [`Waker`] to get its attention.
//!
//! Loop 0 runs on the calling thread and is the one that handles the
//! console and the signals; whichever loop stops first (a signal, the
//! console's `quit`, an error) stops them all.

use crate::server::{listen_on, on_first_address, Stats};
use rselectors::Waker;
use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;

/// One loop as the others see it.
struct Member<M> {
    waker: Waker,
    inbox: Mutex<Vec<M>>,
    /// Clients connected to this loop, as last published by it.
    clients: AtomicUsize,
}

/// The loops of one server and how they reach each other; `M` is what
/// they post to each other's inboxes.
pub struct Loops<M> {
    members: Vec<Member<M>>,
    /// Why the server stops, once a loop has stopped.
    stop_reason: Mutex<Option<String>>,
}

/// Locks `mutex`, recovering the data if a panicking thread poisoned it:
/// an inbox is a plain list, valid whatever happened mid-push.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<M> Loops<M> {
    /// `count` loops, each with a new waker and an empty inbox.
    pub fn new(count: usize) -> io::Result<Loops<M>> {
        let members = (0..count)
            .map(|_| {
                Ok(Member {
                    waker: Waker::new()?,
                    inbox: Mutex::new(Vec::new()),
                    clients: AtomicUsize::new(0),
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Loops {
            members,
            stop_reason: Mutex::new(None),
        })
    }

    /// How many loops there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The waker of loop `index`, to register in its selector.
    pub fn waker(&self, index: usize) -> Waker {
        self.members[index].waker.clone()
    }

    /// Puts `message` in the inbox of loop `to` and wakes it, unless the
    /// inbox held messages already (then a wake-up is on its way: the
    /// owner resets its waker before it takes the inbox).
    pub fn post(&self, to: usize, message: M) {
        let member = &self.members[to];
        let was_empty = {
            let mut inbox = lock(&member.inbox);
            inbox.push(message);
            inbox.len() == 1
        };
        if was_empty {
            // Fails only if the eventfd counter is saturated: awake anyway.
            let _ = member.waker.wake();
        }
    }

    /// Moves everything in the inbox of loop `index` into `into` (which
    /// should be empty: the two lists are swapped, so no memory is
    /// allocated in the steady state).
    pub fn take_inbox(&self, index: usize, into: &mut Vec<M>) {
        mem::swap(&mut *lock(&self.members[index].inbox), into);
    }

    /// Records how many clients loop `index` has (for the console).
    pub fn publish_clients(&self, index: usize, clients: usize) {
        self.members[index]
            .clients
            .store(clients, Ordering::Relaxed);
    }

    /// How many clients loop `index` last said it has.
    pub fn clients(&self, index: usize) -> usize {
        self.members[index].clients.load(Ordering::Relaxed)
    }

    /// Asks every loop to stop (the first reason given wins).
    pub fn stop_all(&self, reason: &str) {
        lock(&self.stop_reason).get_or_insert_with(|| reason.to_owned());
        for member in &self.members {
            let _ = member.waker.wake();
        }
    }

    /// Why the loops stop, once one of them has asked.
    pub fn stop_reason(&self) -> Option<String> {
        lock(&self.stop_reason).clone()
    }
}

/// Stops every loop when dropped: when a loop returns, fails or panics,
/// the others do not go on alone.
struct StopOnDrop<'a, M>(&'a Loops<M>);

impl<M> Drop for StopOnDrop<'_, M> {
    fn drop(&mut self) {
        let reason = if thread::panicking() {
            "an event loop panicked"
        } else {
            "an event loop stopped"
        };
        self.0.stop_all(reason);
    }
}

/// `--reuse-port`: whether the servers' listening sockets let other
/// sockets listen on the same address and port (`SO_REUSEPORT`). Set once
/// by `main`, before a server binds.
static REUSE_PORT: AtomicBool = AtomicBool::new(false);

/// Sets `--reuse-port` (see [`reuse_port`]).
pub fn set_reuse_port(on: bool) {
    REUSE_PORT.store(on, Ordering::Relaxed);
}

/// Whether the servers were asked to share their port (`--reuse-port`).
/// If not, a port in use is an error, as for any program that listens:
/// without the flag a second server on the same port fails with "Address
/// already in use" rather than silently taking half of the connections.
pub fn reuse_port() -> bool {
    REUSE_PORT.load(Ordering::Relaxed)
}

/// A listener for each of `count` loops, on the first address of `addr`
/// that binds: duplicates of one socket's descriptor, or under
/// `--reuse-port` sockets of their own with `SO_REUSEPORT` (port 0 then
/// means the port the first one gets).
pub fn bind_listeners(addr: &str, count: usize) -> io::Result<Vec<TcpListener>> {
    if reuse_port() {
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

/// Runs `event_loop(index, listener)` for every listener, loop 0 on the
/// calling thread, the others on threads of their own, and waits for them
/// all. Each loop must return when [`Loops::stop_reason`] says so (its
/// waker goes off). The result is the sum of their [`Stats`], or the
/// first error.
pub fn run<M, F>(loops: &Loops<M>, listeners: Vec<TcpListener>, event_loop: F) -> io::Result<Stats>
where
    M: Send,
    F: Fn(usize, TcpListener) -> io::Result<Stats> + Sync,
{
    let event_loop = &event_loop;
    let run_one = move |index: usize, listener: TcpListener| {
        let _stop_all = StopOnDrop(loops);
        event_loop(index, listener)
    };
    thread::scope(|scope| {
        let mut listeners = listeners.into_iter();
        let first = listeners
            .next()
            .ok_or_else(|| io::Error::other("no listener"))?;
        let mut others = Vec::new();
        for (index, listener) in (1..).zip(listeners) {
            let spawned = thread::Builder::new()
                .name(format!("loop-{index}"))
                .spawn_scoped(scope, move || run_one(index, listener));
            match spawned {
                Ok(handle) => others.push(handle),
                Err(e) => {
                    loops.stop_all("cannot start a thread");
                    return Err(e);
                }
            }
        }
        let mut result = run_one(0, first);
        for handle in others {
            let outcome = handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("an event loop panicked")));
            result = match (result, outcome) {
                (Ok(mut total), Ok(stats)) => {
                    total += stats;
                    Ok(total)
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_arrive_in_order_and_wake_once() {
        let loops: Loops<u32> = Loops::new(2).unwrap();
        loops.post(1, 7);
        loops.post(1, 8);
        // One wake for both: the second post found the inbox non-empty.
        assert!(loops.waker(1).reset().unwrap());
        assert!(!loops.waker(1).reset().unwrap());
        let mut inbox = Vec::new();
        loops.take_inbox(1, &mut inbox);
        assert_eq!(inbox, [7, 8]);
        inbox.clear();
        loops.take_inbox(1, &mut inbox);
        assert!(inbox.is_empty());
    }

    #[test]
    fn the_first_stop_reason_wins_and_wakes_everyone() {
        let loops: Loops<()> = Loops::new(3).unwrap();
        assert_eq!(loops.stop_reason(), None);
        loops.stop_all("SIGTERM");
        loops.stop_all("an event loop stopped");
        assert_eq!(loops.stop_reason().as_deref(), Some("SIGTERM"));
        for index in 0..loops.len() {
            assert!(loops.waker(index).reset().unwrap());
        }
    }

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
}
