//! Python's `selectors` module in Rust: the same API and the same rules,
//! over `epoll(7)`, `/dev/poll`, `kqueue(2)`, `poll(2)` and `select(2)`.
//!
//! ```
//! use rselectors::{DefaultSelector, Events};
//! use std::io::{Read, Write};
//! use std::os::fd::AsRawFd;
//! use std::os::unix::net::UnixStream;
//! use std::time::Duration;
//!
//! // The key's data says what to do with a ready file object, as in the seeds.
//! enum Role { Server, Client }
//!
//! let (mut near, far) = UnixStream::pair()?;
//! let mut sel = DefaultSelector::new()?;
//! let key = sel.register(far, Events::READ, Role::Server)?;
//! let far_fd = key.fd;
//!
//! near.write_all(b"ping")?;
//! sel.select(Some(Duration::from_secs(5)))?;
//! while let Some((fd, mask)) = sel.next_ready() {
//!     assert_eq!((fd, mask), (far_fd, Events::READ));
//!     let key = sel.get_key(fd)?;
//!     match key.data {
//!         Role::Server => {
//!             let mut buf = [0; 4];
//!             (&key.fileobj).read_exact(&mut buf)?;
//!             (&key.fileobj).write_all(&buf)?;
//!             // No borrow is held between events: change anything here.
//!             sel.modify_events(fd, Events::READ | Events::WRITE)?;
//!         }
//!         Role::Client => unreachable!(),
//!     }
//! }
//! let mut echo = [0; 4];
//! near.read_exact(&mut echo)?;
//! assert_eq!(&echo, b"ping");
//!
//! // unregister hands the socket back.
//! let key = sel.unregister(far_fd)?;
//! assert_eq!(key.fileobj.as_raw_fd(), far_fd);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Shape
//!
//! [`Selector`] is CPython's `_BaseSelectorImpl`: it owns the fd-to-key
//! table and every rule (validation, errors, EINTR, masking). Its backend
//! only talks to the OS; there is one small file per mechanism under
//! `sys/`, and the only `unsafe` code of the crate lives there. Name a
//! selector by its alias ([`DefaultSelector`], `EpollSelector`,
//! [`PollSelector`], …) or pick the backend at run time with
//! [`AnySelector`] and [`BackendKind`]. [`Backend`] is sealed: the
//! backend types only name a selector's type, so a new backend, or a change
//! in how backends and the selector talk, is not a breaking change.
//!
//! | Python | Rust |
//! |---|---|
//! | `EVENT_READ`, `EVENT_WRITE` | [`Events::READ`], [`Events::WRITE`] |
//! | `SelectorKey(fileobj, fd, events, data)` | [`SelectorKey`] |
//! | `DefaultSelector()` | [`DefaultSelector::new`] |
//! | `register(fileobj, events, data)` | [`Selector::register`] |
//! | `unregister(fileobj)` | [`Selector::unregister`] (returns the key) |
//! | `modify(fileobj, events, data)` | [`Selector::modify`] |
//! | `for key, mask in select(timeout)` | [`Selector::select`] then [`Selector::next_ready`] (or [`Selector::ready_keys`]) |
//! | `get_key`, `get_map`, `close` | [`Selector::get_key`], [`Selector::get_map`], [`Selector::close`] |
//! | `fileno()` | [`Selector::fileno`] |
//! | `ValueError`, `KeyError`, `RuntimeError`, `OSError` | [`Error`], [`ErrorKind`] |
//!
//! # Hot loops
//!
//! A server's loop runs `select`, then one handler per ready event, and
//! registers and unregisters once per connection. These variants save
//! work there; each keeps every rule of the operation it stands for.
//!
//! - [`Selector::next_ready`] is the way to take events: one at a time,
//!   by value, so no borrow is held between events and the handler may
//!   register, modify or unregister anything. An event whose registration
//!   went since `select` is skipped, and events are masked with the key's
//!   current events.
//! - [`Selector::next_ready_mut`]: the next event with its key, file
//!   object and data mutable, found with the one lookup `next_ready`
//!   makes anyway. Use it when the handler needs only that key; the
//!   selector stays borrowed while the key is held, so take the descriptor
//!   out of it and drop it before changing registrations.
//! - [`Selector::get_key_mut`]: a handler's own state, changed in place
//!   (no `modify`, no system call).
//! - [`Selector::modify_events`]: `modify` that keeps the data, so it
//!   need not be moved out and back in. Same rules: no system call when
//!   the events are unchanged, and the registration goes if the OS refuses
//!   the new ones.
//! - [`Selector::unregister_closing`]: `unregister` for a file the caller
//!   closes right away, without the system call the close makes
//!   redundant (Linux's epoll and kqueue forget a closed file themselves;
//!   the other backends make it as `unregister` does). The rule it relies
//!   on: close the file at once, and hold no other
//!   descriptor of the same open file (`dup`, a child process).
//! - [`Selector::select_once`]: one wait, returning `EINTR`
//!   ([`Error::is_interrupted`]) instead of retrying, for a loop that acts
//!   on signals between waits. [`Selector::select`] retries with the time
//!   that remains.
//!
//! To wait without borrowing the selector (a binding that releases its
//! lock while it waits), see [`Selector::detach_wait`]; to end a wait
//! from another thread or a signal handler, register a [`Waker`].
//!
//! # Portability
//!
//! Every backend keeps CPython's rules; where the mechanisms differ, they
//! differ as they do in CPython (the tests state it per backend, in
//! `tests/common`'s `Quirks`):
//!
//! - A closed file cannot be registered on any backend (`EBADF`).
//! - A file closed behind the selector's back: epoll and kqueue forget
//!   it, and a `modify` that changes its events fails with `EBADF` and
//!   drops the key; `select(2)` fails the whole wait with `EBADF`;
//!   `poll(2)` and `/dev/poll` report it ready for both events
//!   (`POLLNVAL`).
//! - A pipe's read end whose writer is gone: every backend but select
//!   reports the hang-up to a WRITE interest too; `select(2)` counts it as
//!   readable only.
//! - Regular files: epoll refuses them (`EPERM`); the others report them
//!   always ready.
//! - `select(2)` cannot watch a descriptor at or above `FD_SETSIZE`
//!   ([`Error::FdOutOfRange`], Python's `ValueError`).
//! - A timeout is rounded up to the backend's resolution, never down to a
//!   busy poll: microseconds for select, milliseconds for poll, epoll and
//!   `/dev/poll`, nanoseconds for kqueue.
//! - [`Selector::fileno`] is `Some` for the backends with a kernel object
//!   (epoll, `/dev/poll`, kqueue).
//! - A detached wait ([`Selector::detach_wait`]) on epoll or kqueue also
//!   reports registrations made while it waited; one on poll or select
//!   waits on a snapshot, and `/dev/poll`'s results for them are dropped:
//!   the next `select` reports them.
//! - [`Waker`] is an eventfd on Linux and Android, a pipe elsewhere.
//! - The backends a platform has, and its default, are in
//!   [`BackendKind::ALL`] and [`BackendKind::DEFAULT`]: epoll on Linux,
//!   Android and illumos (which has `/dev/poll` too), `/dev/poll` on
//!   Solaris, kqueue on macOS and the BSDs; poll and select everywhere.

#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms)]
// `unsafe` is for system calls only, and those live in `sys/`.
#![deny(unsafe_code)]

mod error;
mod events;
mod fdmap;
mod key;
mod selector;
// Backend internals: public only for this package's tests and benches
// (and `for_each_backend!`), not part of the API.
#[doc(hidden)]
#[allow(unsafe_code)]
pub mod sys;
mod table;
mod waker;

pub use error::{Error, ErrorKind, Rejected, Result};
pub use events::Events;
pub use key::{Fd, KeyMut, SelectorKey};
pub use selector::{AnySelector, DetachedWait, Selector};
pub use sys::{AnyBackend, AnyWaiter, Backend, BackendKind, UnknownBackend, Waiter};
pub use table::{Keys, Map};
pub use waker::Waker;

// `DefaultSelector`, `EpollSelector`, `PollSelector`, `SelectSelector`, …:
// one alias per backend of this platform, from the list in `sys`, and the
// backend and waiter types they name (`EpollBackend`, `EpollWaiter`, …).
for_each_backend!(sys::selector_aliases);
