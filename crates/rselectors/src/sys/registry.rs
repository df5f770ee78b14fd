//! The backends, listed once.
//!
//! [`for_each_backend!`](crate::for_each_backend) holds the one list; every
//! per-backend thing follows from it: the modules under `sys/`,
//! [`BackendKind`] (its variants, [`ALL`](BackendKind::ALL),
//! [`DEFAULT`](BackendKind::DEFAULT), names and parsing), [`AnyBackend`] and
//! [`AnyWaiter`] with their dispatch, the `…Selector` aliases, and the
//! tests' per-backend instances. A new backend is its file plus one line.

use super::{Backend, BackendOps, ReadyList, Waiter, WaiterOps};
use crate::Events;
use std::io;
use std::os::fd::RawFd;
use std::str::FromStr;
use std::time::Duration;

/// Calls `callback! { (args) {line} {line} … }` with one `{line}` per
/// backend, worst first (select, poll, …, the platform's best):
///
/// ```text
/// { [cfg] [default cfg] Kind "name" module Type Alias [boxed?] }
/// ```
///
/// `cfg` holds where the backend exists; `default cfg` where it is also
/// the platform's default (exactly one line's holds on any platform);
/// `module` is its file under `sys/`, `Type` its [`Backend`] there, `Alias`
/// its `Selector` alias; `boxed` asks [`AnyBackend`] to box it.
///
/// The conditions are the build script's platform names (`epoll`,
/// `kqueue`, …), which only this package (the library, its tests, examples
/// and benches) is compiled with; other crates use [`BackendKind::ALL`].
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_backend {
    ($($callback:ident)::+ $(, $($args:tt)*)?) => {
        $crate::for_each_backend! {
            @munch [$($callback)::+]; ($($($args)*)?); []; [];
            // The list, best first: the first one a platform has is its
            // `DefaultSelector`, as in CPython's `selectors` (epoll, then
            // devpoll, kqueue, poll, select). One line per backend:
            // condition, kind (name, file::type, alias[, boxed]).
            //
            // select is boxed in `AnyBackend`: its two `fd_set`s (256
            // bytes) would make every `AnySelector` that large, for the
            // backend used least.
            #[cfg(epoll)] Epoll("epoll", epoll::EpollBackend, EpollSelector);
            #[cfg(devpoll)] Devpoll("devpoll", devpoll::DevpollBackend, DevpollSelector);
            #[cfg(kqueue)] Kqueue("kqueue", kqueue::KqueueBackend, KqueueSelector);
            #[cfg(all())] Poll("poll", poll::PollBackend, PollSelector);
            #[cfg(all())] Select("select", select::SelectBackend, SelectSelector, boxed);
        }
    };
    // Takes the next line: it is the default where it exists and no line
    // before it (a better backend) does. Lines are prepended to `done`, so
    // the callback gets them worst first.
    (@munch $callback:tt; $args:tt; [$(($($better:tt)*))*]; [$($done:tt)*];
        #[cfg($($cfg:tt)*)] $kind:ident(
            $name:literal, $module:ident :: $ty:ident, $alias:ident $(, $boxed:ident)?
        );
        $($rest:tt)*
    ) => {
        $crate::for_each_backend! {
            @munch $callback; $args; [$(($($better)*))* ($($cfg)*)];
            [
                {
                    [$($cfg)*] [all($($cfg)*, not(any($($($better)*),*)))]
                    $kind $name $module $ty $alias [$($boxed)?]
                }
                $($done)*
            ];
            $($rest)*
        }
    };
    (@munch [$($callback:tt)*]; $args:tt; $better:tt; [$($done:tt)*];) => {
        $($callback)*! { $args $($done)* }
    };
}

/// `Box<T>` for a line marked `boxed`, else `T`.
macro_rules! stored {
    ([boxed] $ty:ty) => { Box<$ty> };
    ([] $ty:ty) => { $ty };
}

/// Opens a line's backend as [`AnyBackend`] stores it.
macro_rules! open_stored {
    ([boxed] $ty:ty) => {
        Box::new(<$ty as BackendOps>::open()?)
    };
    ([] $ty:ty) => {
        <$ty as BackendOps>::open()?
    };
}

/// The `sys` modules of the backends this platform has.
macro_rules! declare_modules {
    (() $({ [$($cfg:tt)*] $dflt:tt $kind:ident $name:literal $module:ident $($_:tt)* })*) => {
        $(
            #[cfg($($cfg)*)]
            pub mod $module;
        )*
    };
}
pub(crate) use declare_modules;

/// `DefaultSelector`, one alias per backend (`EpollSelector`, …), and
/// the backend and waiter types they name (`EpollBackend`, `EpollWaiter`,
/// …).
macro_rules! selector_aliases {
    (() $({
        [$($cfg:tt)*] [$($dflt:tt)*] $kind:ident $name:literal $module:ident $ty:ident $alias:ident $boxed:tt
    })*) => {
        $(
            #[doc = concat!("A selector over `", $name, "`.")]
            #[cfg($($cfg)*)]
            pub type $alias<F, D> = $crate::Selector<$crate::sys::$module::$ty, F, D>;

            // The backend and its waiter, the module's only public items.
            #[cfg($($cfg)*)]
            pub use $crate::sys::$module::*;

            /// The best selector this platform has, as CPython's
            /// `DefaultSelector` picks it (epoll, devpoll, kqueue, poll,
            /// select: the first the platform has).
            #[cfg($($dflt)*)]
            pub type DefaultSelector<F, D> = $alias<F, D>;
        )*
    };
}
pub(crate) use selector_aliases;

/// `match $self { $enum::Kind($b) => $e, … }` over every backend.
macro_rules! match_every {
    (($self:ident, $enum:ident, $b:ident => $e:expr)
        $({ [$($cfg:tt)*] $dflt:tt $kind:ident $($_:tt)* })*) => {
        match $self {
            $(
                #[cfg($($cfg)*)]
                $enum::$kind($b) => $e,
            )*
        }
    };
}

/// Like `match_every!` on an [`AnyBackend`], but with only the default
/// backend's arm inlined where the call is, and the others behind one call
/// out of line: a server on an [`AnySelector`](crate::AnySelector) then
/// carries just its platform's backend in its hot loop.
macro_rules! match_default_inline {
    (($self:ident, $b:ident => $e:expr)
        $({ [$($cfg:tt)*] [$($dflt:tt)*] $kind:ident $($_:tt)* })*) => {
        match $self {
            $(
                #[cfg($($dflt)*)]
                AnyBackend::$kind($b) => $e,
            )*
            _ => out_of_line(|| match $self {
                $(
                    #[cfg($($cfg)*)]
                    AnyBackend::$kind($b) => $e,
                )*
            }),
        }
    };
}

/// Runs `f` in a function of its own (see `match_default_inline!`).
#[inline(never)]
fn out_of_line<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// [`BackendKind`], [`AnyBackend`] and [`AnyWaiter`].
macro_rules! kinds_and_dispatch {
    (() $({
        [$($cfg:tt)*] [$($dflt:tt)*] $kind:ident $name:literal $module:ident $ty:ident $alias:ident $boxed:tt
    })*) => {
        /// The backends this platform has, by the names Python and the
        /// command line use. Non-exhaustive: a platform may gain one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum BackendKind {
            $(
                #[doc = concat!("`", $name, "`: [`", stringify!($alias), "`](crate::", stringify!($alias), ")")]
                #[cfg($($cfg)*)]
                $kind,
            )*
        }

        impl BackendKind {
            /// Every backend of this platform, best last.
            pub const ALL: &'static [BackendKind] = &[
                $(
                    #[cfg($($cfg)*)]
                    BackendKind::$kind,
                )*
            ];

            /// The best backend of this platform (`DefaultSelector`'s), as
            /// CPython picks it: epoll, devpoll, kqueue, poll, select, the
            /// first the platform has.
            pub const DEFAULT: BackendKind = {
                $(
                    #[cfg($($dflt)*)]
                    let default = BackendKind::$kind;
                )*
                default
            };

            /// The name: `"select"`, `"poll"`, `"epoll"`, … (CPython's
            /// class names without `Selector`, in lower case).
            pub fn name(self) -> &'static str {
                match self {
                    $(
                        #[cfg($($cfg)*)]
                        BackendKind::$kind => $name,
                    )*
                }
            }
        }

        /// The backend of [`AnySelector`](crate::AnySelector), chosen at
        /// run time by [`BackendKind`]. Opaque: its variants are not part
        /// of the API.
        // Hot: one dispatch per call. A tag byte of its own, so that the
        // dispatch reads a byte rather than decoding a niche.
        #[derive(Debug)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum AnyBackend {
            $(
                #[doc(hidden)]
                #[cfg($($cfg)*)]
                $kind(stored!($boxed $crate::sys::$module::$ty)),
            )*
        }

        impl AnyBackend {
            /// Opens the backend of that kind.
            pub(crate) fn open_kind(kind: BackendKind) -> io::Result<Self> {
                Ok(match kind {
                    $(
                        #[cfg($($cfg)*)]
                        BackendKind::$kind => {
                            AnyBackend::$kind(open_stored!($boxed $crate::sys::$module::$ty))
                        }
                    )*
                })
            }
        }

        /// The [`Waiter`] of an [`AnyBackend`]. Opaque, as it is.
        // The select variant is two fd_sets (256 bytes); boxing it would cost
        // an allocation per detached wait, which is what the variant exists
        // to avoid.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        #[non_exhaustive]
        pub enum AnyWaiter {
            $(
                #[doc(hidden)]
                #[cfg($($cfg)*)]
                $kind(<$crate::sys::$module::$ty as Backend>::Waiter),
            )*
        }

        impl Backend for AnyBackend {
            type Waiter = AnyWaiter;
        }

        impl BackendOps for AnyBackend {
            fn detach(&mut self) -> AnyWaiter {
                match self {
                    $(
                        #[cfg($($cfg)*)]
                        AnyBackend::$kind(b) => AnyWaiter::$kind(b.detach()),
                    )*
                }
            }
            fn reattach(&mut self, waiter: AnyWaiter) {
                // A waiter of another kind cannot come back here; its
                // buffers are dropped.
                match (self, waiter) {
                    $(
                        #[cfg($($cfg)*)]
                        (AnyBackend::$kind(b), AnyWaiter::$kind(w)) => b.reattach(w),
                    )*
                    #[allow(unreachable_patterns)]
                    _ => {}
                }
            }

            fn open() -> io::Result<Self> {
                AnyBackend::open_kind(BackendKind::DEFAULT)
            }
            fn name(&self) -> &'static str {
                crate::for_each_backend!(match_every, self, AnyBackend, b => b.name())
            }
            fn fd_limit(&self) -> Option<RawFd> {
                crate::for_each_backend!(match_every, self, AnyBackend, b => b.fd_limit())
            }
            #[inline]
            fn add(&mut self, fd: RawFd, events: Events, tag: u32) -> io::Result<()> {
                crate::for_each_backend!(match_default_inline, self, b => b.add(fd, events, tag))
            }
            #[inline]
            fn modify(&mut self, fd: RawFd, events: Events, tag: u32) -> io::Result<()> {
                crate::for_each_backend!(match_default_inline, self, b => b.modify(fd, events, tag))
            }
            #[inline]
            fn events_carry_tags(&self) -> bool {
                crate::for_each_backend!(match_every, self, AnyBackend, b => b.events_carry_tags())
            }
            #[inline]
            fn remove(&mut self, fd: RawFd) -> io::Result<()> {
                crate::for_each_backend!(match_default_inline, self, b => b.remove(fd))
            }
            #[inline]
            fn forget(&mut self, fd: RawFd) -> io::Result<()> {
                crate::for_each_backend!(match_default_inline, self, b => b.forget(fd))
            }
            #[inline]
            fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
                crate::for_each_backend!(match_default_inline, self, b => b.wait(ready, timeout))
            }
            fn fileno(&self) -> Option<RawFd> {
                crate::for_each_backend!(match_every, self, AnyBackend, b => b.fileno())
            }
        }
    };
}

crate::for_each_backend!(kinds_and_dispatch);

impl Waiter for AnyWaiter {}

impl WaiterOps for AnyWaiter {
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        crate::for_each_backend!(match_every, self, AnyWaiter, w => w.wait(ready, timeout))
    }
    fn events_carry_tags(&self) -> bool {
        crate::for_each_backend!(match_every, self, AnyWaiter, w => w.events_carry_tags())
    }
}

impl FromStr for BackendKind {
    type Err = UnknownBackend;

    /// Parses a backend's name ([`BackendKind::name`]) or `"default"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(BackendKind::DEFAULT),
            _ => BackendKind::ALL
                .iter()
                .copied()
                .find(|k| k.name() == s)
                .ok_or_else(|| UnknownBackend(s.to_owned())),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend name that this platform does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBackend(pub String);

impl std::fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = BackendKind::ALL.iter().map(|k| k.name()).collect();
        write!(
            f,
            "unknown selector {:?} (expected default, {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownBackend {}
