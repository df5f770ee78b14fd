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
//! Idle time is counted in ticks of a quarter of the timeout, from an
//! [`IdleTimer`] each loop watches in its selector: the busy path reads no
//! clock, and a connection only stores the tick of its last activity (see
//! [`crate::conn::Conn::touch`]). A connection is closed after between 4
//! and 5 ticks (1 and 1.25 timeouts) of silence.

use super::{Client, Server, Source, Who};
use crate::budget;
use crate::logging::{info, warning};
#[cfg(not(any(target_os = "linux", target_os = "android")))]
use rselectors::Waker;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Ticks of silence after which a connection is closed (one more than the
/// timeout's four: the tick a connection was last active in may have just
/// begun or be nearly over).
const IDLE_TICKS: u16 = 5;

/// At most this often, the clients are checked for whom to cut off while
/// the budget is exceeded: long enough for a client that reads to have
/// taken some of its output since the last check.
const SHED_EVERY: Duration = Duration::from_millis(100);

/// Clients cut off for memory (or closed as idle) that one check logs
/// one by one; the rest are counted in one line.
const LOGGED_CUTS: usize = 5;

/// The idle timeout, once set (`None`: no timeout).
static IDLE_TIMEOUT: OnceLock<Option<Duration>> = OnceLock::new();

/// Sets the server's limits, once, before any loop starts.
pub fn configure(max_memory: usize, idle_timeout: Option<Duration>) {
    budget::set_limit(max_memory);
    let _ = IDLE_TIMEOUT.set(idle_timeout.filter(|t| !t.is_zero()));
}

/// A loop's idle ticks, if there is an idle timeout: readable once per
/// tick. On Linux a timerfd, so that a server with one loop stays one
/// thread (glibc's system call wrappers cost more in a process with
/// several); elsewhere a thread that wakes a [`rselectors::Waker`] at each tick.
pub struct IdleTimer {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fd: std::os::fd::OwnedFd,
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    waker: Waker,
    /// Tells the thread to end once the timer is dropped.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
impl Drop for IdleTimer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl IdleTimer {
    /// The timer for the configured idle timeout, if there is one.
    pub(super) fn for_timeout() -> io::Result<Option<IdleTimer>> {
        match IDLE_TIMEOUT.get() {
            Some(Some(timeout)) => IdleTimer::every(*timeout / 4).map(Some),
            _ => Ok(None),
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn every(period: Duration) -> io::Result<IdleTimer> {
        use rustix::time::{
            timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
            TimerfdTimerFlags, Timespec,
        };
        let flags = TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC;
        let fd = timerfd_create(TimerfdClockId::Monotonic, flags)?;
        // A zero period would disarm the timer: one nanosecond at least.
        let period = period.max(Duration::from_nanos(1));
        let every = Timespec {
            tv_sec: period.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: period.subsec_nanos().into(),
        };
        let spec = Itimerspec {
            it_interval: every,
            it_value: every,
        };
        timerfd_settime(&fd, TimerfdTimerFlags::empty(), &spec)?;
        Ok(IdleTimer { fd })
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn every(period: Duration) -> io::Result<IdleTimer> {
        let waker = Waker::new()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ticking, stopped) = (waker.clone(), stop.clone());
        std::thread::Builder::new()
            .name("idle timer".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                if stopped.load(std::sync::atomic::Ordering::Relaxed) || ticking.wake().is_err() {
                    return;
                }
            })?;
        Ok(IdleTimer { waker, stop })
    }

    /// Takes the ticks that came since the last call (none if spurious).
    fn take_ticks(&self) -> u16 {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let mut expirations = [0; 8];
            match rustix::io::read(&self.fd, &mut expirations) {
                Ok(8) => u64::from_ne_bytes(expirations).min(u64::from(u16::MAX)) as u16,
                _ => 0,
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = self.waker.reset();
            1
        }
    }
}

impl AsRawFd for IdleTimer {
    fn as_raw_fd(&self) -> RawFd {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            self.fd.as_raw_fd()
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            self.waker.as_raw_fd()
        }
    }
}

impl<C: Client> Server<C> {
    /// The idle tick to stamp activity with (see [`crate::conn::Conn::touch`]).
    #[inline]
    pub fn tick(&self) -> u16 {
        self.tick
    }

    /// When the next memory check is due, while the budget is exceeded:
    /// a server with nothing else to do must still get to it.
    pub(super) fn next_shed(&self) -> Option<Instant> {
        if !self.over_budget {
            return None;
        }
        Some(self.shed_at.map_or_else(Instant::now, |at| at + SHED_EVERY))
    }

    /// Called once per round of events, and whenever a client's input may
    /// have taken memory over the budget: cuts off clients if it is.
    #[inline]
    pub fn end_round(&mut self) {
        self.over_budget = budget::exceeded();
        if self.over_budget {
            self.shed();
        }
    }

    /// Cuts off the clients that hold the most among those that made no
    /// progress with what they hold since the last check (output not
    /// read, an unfinished line not finished), until the budget's count is
    /// back under the back-pressure level; then notes everyone's progress
    /// for the next check. Checks are [`SHED_EVERY`] apart, so a client
    /// that reads has had that long to take some of its output.
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
        for &fd in &fds {
            if let Some(client) = self.client(fd) {
                if client.stalled() {
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
            self.close_counted(fd, "memory budget exceeded", &mut cut, |who| {
                warning!(
                    "cutting off {who}: it holds {held} bytes and takes none of them, and the \
                     server's clients hold {} bytes, over the budget of {} (--max-memory)",
                    budget::held(),
                    budget::limit()
                );
            });
        }
        if cut > LOGGED_CUTS {
            let more = cut - LOGGED_CUTS;
            warning!("cut off {more} more stalled clients, for the same reason");
        }
        for fd in fds {
            if let Some(client) = self.client_mut(fd) {
                client.mark();
            }
        }
    }

    /// The idle timer at `fd` is readable: counts the ticks, and closes
    /// the connections silent for too long.
    #[inline(never)]
    pub(super) fn idle_timer_ready(&mut self, fd: RawFd) {
        let ticks = match &self.sel.get_key(fd).map(|key| &key.fileobj) {
            Ok(Source::IdleTimer(timer)) => timer.take_ticks(),
            _ => return,
        };
        if ticks == 0 {
            return;
        }
        self.tick = self.tick.wrapping_add(ticks);
        let tick = self.tick;
        let Some(Some(timeout)) = IDLE_TIMEOUT.get() else {
            return;
        };
        let mut fds = Vec::new();
        self.client_fds(&mut fds);
        let mut closed = 0;
        for fd in fds {
            let idle = self
                .client(fd)
                .is_some_and(|c| tick.wrapping_sub(c.conn().active_at()) >= IDLE_TICKS);
            if idle {
                self.close_counted(fd, "idle timeout", &mut closed, |who| {
                    info!("closing {who}: idle for more than {timeout:?} (--idle-timeout)");
                });
            }
        }
        if closed > LOGGED_CUTS {
            let more = closed - LOGGED_CUTS;
            info!("closed {more} more connections idle for more than {timeout:?}");
        }
    }

    /// Closes the client at `fd` for `reason`, the `count`th this check
    /// closes: the first [`LOGGED_CUTS`] are logged one by one with `log`,
    /// the caller counts the rest in one line.
    fn close_counted(&mut self, fd: RawFd, reason: &str, count: &mut usize, log: impl FnOnce(Who)) {
        if *count < LOGGED_CUTS {
            if let Some(client) = self.client(fd) {
                log(Who(client.peer(), fd));
            }
        }
        self.close_client(fd, reason);
        *count += 1;
    }
}
