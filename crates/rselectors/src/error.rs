//! Errors, one variant per exception CPython's `selectors` raises.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

/// Everything a selector call can fail with.
///
/// Each variant corresponds to one Python exception, given by [`Error::kind`],
/// so the Python module and the Rust API cannot drift apart.
#[derive(Debug)]
pub enum Error {
    /// The event mask is empty or has bits other than `READ | WRITE`
    /// (Python: `ValueError("Invalid events: ...")`).
    InvalidEvents(u32),
    /// The file descriptor is negative (Python: `ValueError`).
    InvalidFd(RawFd),
    /// The backend cannot watch a descriptor this large: `select(2)` stops at
    /// `FD_SETSIZE` (Python: `ValueError("filedescriptor out of range in select()")`).
    FdOutOfRange {
        /// The descriptor that was refused.
        fd: RawFd,
        /// The first descriptor the backend cannot watch.
        limit: RawFd,
    },
    /// The descriptor is registered already (Python: `KeyError`).
    AlreadyRegistered(RawFd),
    /// The descriptor is not registered (Python: `KeyError`).
    NotRegistered(RawFd),
    /// The selector was closed (Python: `RuntimeError("Selector is closed")`).
    Closed,
    /// The operating system refused the call (Python: `OSError` with the errno).
    Os(io::Error),
}

/// The Python exception an [`Error`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `ValueError`
    Value,
    /// `KeyError`
    Key,
    /// `RuntimeError`
    Runtime,
    /// `OSError` (and its errno subclasses)
    Os,
}

impl Error {
    /// Which Python exception this error maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidEvents(_) | Error::InvalidFd(_) | Error::FdOutOfRange { .. } => {
                ErrorKind::Value
            }
            Error::AlreadyRegistered(_) | Error::NotRegistered(_) => ErrorKind::Key,
            Error::Closed => ErrorKind::Runtime,
            Error::Os(_) => ErrorKind::Os,
        }
    }

    /// The OS error number, for [`Error::Os`].
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Os(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// True for `EINTR`: a signal arrived during a wait.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Error::Os(e) if e.kind() == io::ErrorKind::Interrupted)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidEvents(bits) => write!(f, "Invalid events: {bits}"),
            Error::InvalidFd(fd) => write!(f, "Invalid file descriptor: {fd}"),
            Error::FdOutOfRange { fd, limit } => write!(
                f,
                "file descriptor {fd} out of range in select() (FD_SETSIZE is {limit})"
            ),
            Error::AlreadyRegistered(fd) => write!(f, "file descriptor {fd} is already registered"),
            Error::NotRegistered(fd) => write!(f, "file descriptor {fd} is not registered"),
            Error::Closed => f.write_str("Selector is closed"),
            Error::Os(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Os(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match e {
            Error::Os(inner) => return inner,
            Error::InvalidEvents(_) | Error::InvalidFd(_) | Error::FdOutOfRange { .. } => {
                io::ErrorKind::InvalidInput
            }
            Error::AlreadyRegistered(_) => io::ErrorKind::AlreadyExists,
            Error::NotRegistered(_) => io::ErrorKind::NotFound,
            Error::Closed => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// A refused `register`: the error, and the file object and data handed back
/// so that nothing the caller owned is lost (an owned socket is not closed).
pub struct Rejected<F, D> {
    /// Why the registration was refused.
    pub error: Error,
    /// The file object that was passed to `register`.
    pub fileobj: F,
    /// The data that was passed to `register`.
    pub data: D,
}

impl<F, D> Rejected<F, D> {
    /// Drops the file object and data and keeps the error.
    pub fn into_error(self) -> Error {
        self.error
    }
}

impl<F, D> fmt::Debug for Rejected<F, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<F, D> fmt::Display for Rejected<F, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<F, D> std::error::Error for Rejected<F, D> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<F, D> From<Rejected<F, D>> for Error {
    fn from(r: Rejected<F, D>) -> Self {
        r.error
    }
}

impl<F, D> From<Rejected<F, D>> for io::Error {
    fn from(r: Rejected<F, D>) -> Self {
        r.error.into()
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
