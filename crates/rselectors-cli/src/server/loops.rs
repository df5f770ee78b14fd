//! One server is 1 to N event loops (`--threads N`), served by one path:
//! [`serve`].
//!
//! Each loop is a thread with its own selector (loop 0 runs on the
//! calling thread). By default they share one listening socket (each
//! watches a descriptor of it, level-triggered): a new connection makes
//! every idle loop's wait return, the first to accept takes it and the
//! others get `EAGAIN` and wait again. (Under `--reuse-port` each loop
//! has a socket of its own: see [`super::listen`].)
//!
//! No lock is taken on the path of a message. What loops tell each other
//! (a chat line for their clients, "stop") goes through [`Loops`]: an
//! inbox per loop, held locked only to push or to take its contents, and
//! the loop's [`Waker`] to get its attention.
//!
//! Loop 0 is the one that handles the console and the signals; whichever
//! loop stops first (a signal, the console's `quit`, an error) stops them
//! all.

use super::listen::bind_listeners;
use super::{print_summary, Client, Server, Stats};
use crate::logging::say;
use crate::signals::Signals;
use rselectors::{BackendKind, Waker};
use std::fmt;
use std::io;
use std::mem;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;

/// One loop as the others see it.
#[derive(Debug)]
struct Member<M> {
    waker: Waker,
    inbox: Mutex<Vec<M>>,
    /// Clients connected to this loop, as last published by it.
    clients: AtomicUsize,
}

/// The loops of one server and how they reach each other; `M` is what
/// they post to each other's inboxes.
#[derive(Debug)]
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
#[derive(Debug)]
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

/// One loop's view of the server's loops: its own number, and the way to
/// the others.
pub struct Link<'a, M> {
    pub loops: &'a Loops<M>,
    /// This loop's number.
    pub index: usize,
}

impl<M> Clone for Link<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M> Copy for Link<'_, M> {}

impl<M> fmt::Debug for Link<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loop {} of {}", self.index, self.loops.len())
    }
}

impl<M> Link<'_, M> {
    /// Whether there are other loops.
    pub fn has_others(&self) -> bool {
        self.loops.len() > 1
    }

    /// The numbers of the other loops.
    pub fn others(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.loops.len()).filter(move |&i| i != self.index)
    }

    /// Moves this loop's inbox into `into` (see [`Loops::take_inbox`]).
    pub fn take_inbox(&self, into: &mut Vec<M>) {
        self.loops.take_inbox(self.index, into);
    }

    /// Why the loops stop, once one of them has asked.
    pub fn stop_reason(&self) -> Option<String> {
        self.loops.stop_reason()
    }
}

/// Serves `addr` with `threads` event loops of `C` clients on selectors of
/// `kind`, until one stops (a signal, an error, or `event_loop` returning);
/// then closes every client and prints the summary. `event_loop` runs each
/// loop's [`Server`]: it must return once the server is stopping (a stop
/// from another loop arrives as a wake-up: see [`Link::stop_reason`]).
pub fn serve<C, M, F>(
    addr: &str,
    kind: BackendKind,
    threads: usize,
    event_loop: F,
) -> io::Result<()>
where
    C: Client,
    M: Send,
    F: Fn(&mut Server<C>, Link<'_, M>) -> io::Result<()> + Sync,
{
    let listeners = bind_listeners(addr, threads.max(1))?;
    let loops: Loops<M> = Loops::new(listeners.len())?;
    // Installed before `listening on`, so that no signal is lost after it.
    let signals = Signals::install()?;
    say!("listening on {}", listeners[0].local_addr()?);
    let stats = run(&loops, listeners, signals, |index, listener, signals| {
        let link = Link {
            loops: &loops,
            index,
        };
        let mut server = Server::on_listener(listener, kind, loops.waker(index), signals)?;
        event_loop(&mut server, link)?;
        if let Some(reason) = server.stop_reason() {
            loops.stop_all(reason);
        }
        Ok(server.close_all())
    })?;
    let reason = loops.stop_reason();
    print_summary(reason.as_deref().unwrap_or("done"), stats);
    Ok(())
}

/// Runs `event_loop(index, listener, signals)` for every listener, loop 0
/// on the calling thread with `signals`, the others on threads of their
/// own, and waits for them all. The result is the sum of their [`Stats`],
/// or the first error.
fn run<M, F>(
    loops: &Loops<M>,
    listeners: Vec<TcpListener>,
    signals: Signals,
    event_loop: F,
) -> io::Result<Stats>
where
    M: Send,
    F: Fn(usize, TcpListener, Option<Signals>) -> io::Result<Stats> + Sync,
{
    let event_loop = &event_loop;
    let run_one = move |index: usize, listener: TcpListener, signals: Option<Signals>| {
        let _stop_all = StopOnDrop(loops);
        event_loop(index, listener, signals)
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
                .spawn_scoped(scope, move || run_one(index, listener, None));
            match spawned {
                Ok(handle) => others.push(handle),
                Err(e) => {
                    loops.stop_all("cannot start a thread");
                    return Err(e);
                }
            }
        }
        let mut result = run_one(0, first, Some(signals));
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

    /// Loop 0 runs on the calling thread and alone gets the signals; the
    /// stats of every loop add up.
    #[test]
    fn loop_zero_alone_gets_the_signals_and_the_stats_add_up() {
        let loops: Loops<()> = Loops::new(3).unwrap();
        let listeners = super::super::listen::bind_listeners("127.0.0.1:0", 3).unwrap();
        let caller = thread::current().id();
        let signals = Signals::install().unwrap();
        let stats = run(&loops, listeners, signals, |index, _listener, signals| {
            assert_eq!(signals.is_some(), index == 0, "loop {index}");
            assert_eq!(thread::current().id() == caller, index == 0);
            Ok(Stats {
                served: 1 << index,
                ..Stats::default()
            })
        })
        .unwrap();
        assert_eq!(stats.served, 0b111);
    }
}
