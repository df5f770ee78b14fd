//! What no client may take from a server: memory past the process-wide
//! budget (`--max-memory`, counted in [`crate::budget`]), and a descriptor
//! held in silence past the idle timeout (`--idle-timeout`).
//!
//! Memory: past three quarters of the budget, clients whose output is not
//! leaving are no longer read ([`budget::may_read`]); past the budget, the
//! clients that hold the most among those not reading what they are sent
//! are cut off ([`Server::end_round`]), until the count is back under the
//! back-pressure level. A client that reads what it is sent is never cut
//! off for the budget.
//!
//! Idle time is counted in ticks of a quarter of the timeout, from one
//! process-wide timer thread that wakes every loop at each tick: the busy
//! path reads no clock, and a connection only stores the tick of its last
//! activity (see [`crate::conn::Conn::touch`]). A connection is closed
//! after between 4 and 5 ticks (1 and 1.25 timeouts) of silence.

use super::{Client, Server, Who};
use crate::budget;
use crate::logging::{info, warning};
use rselectors::Waker;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Ticks of silence after which a connection is closed (one more than the
/// timeout's four: the tick a connection was last active in may have just
/// begun or be nearly over).
const IDLE_TICKS: u16 = 5;

/// At most this often, the clients are checked for whom to cut off while
/// the budget is exceeded: long enough for a client that reads to have
/// taken some of its output since the last check.
const SHED_EVERY: Duration = Duration::from_millis(100);

/// Clients cut off for memory that one check logs one by one; the rest
/// are counted in one line.
const LOGGED_CUTS: usize = 5;

/// Idle ticks since the timer started.
static TICK: AtomicU16 = AtomicU16::new(0);

/// The idle timeout, once set (`None`: no timeout).
static IDLE_TIMEOUT: OnceLock<Option<Duration>> = OnceLock::new();

/// The wakers of the loops that close idle connections, woken at each tick.
static TICK_WAKERS: Mutex<Vec<Waker>> = Mutex::new(Vec::new());

/// Sets the server's limits, once, before any loop starts.
pub fn configure(max_memory: usize, idle_timeout: Option<Duration>) {
    budget::set_limit(max_memory);
    let timeout = idle_timeout.filter(|t| !t.is_zero());
    if IDLE_TIMEOUT.set(timeout).is_ok() {
        if let Some(timeout) = timeout {
            start_ticking(timeout / 4);
        }
    }
}

fn start_ticking(period: Duration) {
    let started = thread::Builder::new()
        .name("idle timer".into())
        .spawn(move || loop {
            thread::sleep(period);
            TICK.fetch_add(1, Ordering::Relaxed);
            let wakers = TICK_WAKERS.lock().unwrap_or_else(PoisonError::into_inner);
            for waker in wakers.iter() {
                let _ = waker.wake();
            }
        });
    if let Err(e) = started {
        warning!("no idle timeout: cannot start its timer: {e}");
    }
}

/// Has `waker` woken at every idle tick, if there is an idle timeout.
pub(super) fn wake_at_ticks(waker: &Waker) {
    if matches!(IDLE_TIMEOUT.get(), Some(Some(_))) {
        TICK_WAKERS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(waker.clone());
    }
}

/// The current idle tick.
pub(super) fn current_tick() -> u16 {
    TICK.load(Ordering::Relaxed)
}

impl<C: Client> Server<C> {
    /// The idle tick to stamp activity with (see [`crate::conn::Conn::touch`]).
    #[inline]
    pub fn tick(&self) -> u16 {
        self.tick
    }

    /// Called once per round of events, and whenever a client's input may
    /// have taken memory over the budget: cuts off clients if it is.
    #[inline]
    pub fn end_round(&mut self) {
        if budget::exceeded() {
            self.shed();
        }
    }

    /// Cuts off the clients that hold the most among those that have not
    /// read any of their output since the last check, until the budget's
    /// count is back under the back-pressure level.
    #[cold]
    #[inline(never)]
    fn shed(&mut self) {
        let now = Instant::now();
        if self.shed_at.is_some_and(|at| now < at + SHED_EVERY) {
            return;
        }
        self.shed_at = Some(now);
        let mut fds = Vec::new();
        self.client_fds(&mut fds);
        let mut stalled: Vec<(usize, RawFd)> = Vec::new();
        for fd in fds {
            if let Some(client) = self.client_mut(fd) {
                if client.conn_mut().stalled() {
                    stalled.push((client.held(), fd));
                }
            }
        }
        stalled.sort_unstable_by(|a, b| b.cmp(a));
        let mut cut = 0;
        for (held, fd) in stalled {
            if budget::held() <= budget::target() {
                break;
            }
            if let Some(client) = self.client(fd).filter(|_| cut < LOGGED_CUTS) {
                warning!(
                    "cutting off {}: it holds {held} bytes it does not read, and the \
                     server's clients hold {} bytes, over the budget of {} (--max-memory)",
                    Who(client.peer(), fd),
                    budget::held(),
                    budget::limit()
                );
            }
            self.close_client(fd, "memory budget exceeded");
            cut += 1;
        }
        if cut > LOGGED_CUTS {
            warning!(
                "cut off {} more clients that do not read, for the same reason",
                cut - LOGGED_CUTS
            );
        }
    }

    /// The idle timer ticked (or the waker went off for another reason):
    /// closes the connections silent for too long.
    #[inline(never)]
    pub(super) fn take_tick(&mut self) {
        let tick = current_tick();
        if tick == self.tick {
            return;
        }
        self.tick = tick;
        let Some(Some(timeout)) = IDLE_TIMEOUT.get() else {
            return;
        };
        let mut fds = Vec::new();
        self.client_fds(&mut fds);
        for fd in fds {
            let idle = self
                .client(fd)
                .is_some_and(|c| tick.wrapping_sub(c.conn().active_at()) >= IDLE_TICKS);
            if idle {
                if let Some(client) = self.client(fd) {
                    info!(
                        "closing {}: idle for more than {timeout:?} (--idle-timeout)",
                        Who(client.peer(), fd)
                    );
                }
                self.close_client(fd, "idle timeout");
            }
        }
    }
}
