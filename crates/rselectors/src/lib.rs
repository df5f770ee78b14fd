//! Python's `selectors` module in Rust: the same API and the same rules,
//! over `select(2)`, `poll(2)` and `epoll(7)`.
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
//! table and every rule (validation, errors, EINTR, masking). A [`Backend`]
//! only talks to the OS; there is one small file per mechanism under
//! `sys/`, and the only `unsafe` code of the crate lives there.
//!
//! | Python | Rust |
//! |---|---|
//! | `EVENT_READ`, `EVENT_WRITE` | [`Events::READ`], [`Events::WRITE`] |
//! | `SelectorKey(fileobj, fd, events, data)` | [`SelectorKey`] |
//! | `DefaultSelector()` | [`DefaultSelector::new`] |
//! | `register(fileobj, events, data)` | [`Selector::register`] |
//! | `unregister(fileobj)` | [`Selector::unregister`] (returns the key) |
//! | `modify(fileobj, events, data)` | [`Selector::modify`], [`Selector::modify_events`] |
//! | `for key, mask in select(timeout)` | [`Selector::select`] then [`Selector::next_ready`] |
//! | `get_key`, `get_map`, `close` | [`Selector::get_key`], [`Selector::get_map`], [`Selector::close`] |
//! | `ValueError`, `KeyError`, `RuntimeError`, `OSError` | [`Error`], [`ErrorKind`] |

#![deny(missing_docs)]
// `unsafe` is for system calls only, and those live in `sys/`.
#![deny(unsafe_code)]

mod error;
mod events;
mod fdmap;
mod key;
mod selector;
#[allow(unsafe_code)]
pub mod sys;
mod table;
mod waker;

pub use error::{Error, ErrorKind, Rejected, Result};
pub use events::Events;
pub use key::{Fd, KeyMut, SelectorKey};
pub use selector::{AnySelector, DetachedWait, Selector};
pub use sys::{AnyBackend, AnyWaiter, Backend, BackendKind, ReadyList, UnknownBackend, Waiter};
pub use table::{Keys, Map};
pub use waker::Waker;

// `DefaultSelector`, `EpollSelector`, `PollSelector`, `SelectSelector`, …:
// one alias per backend of this platform, from the list in `sys`.
for_each_backend!(sys::selector_aliases);
