//! The core's errors as the exceptions (and messages) CPython's `selectors` raises.

use pyo3::exceptions::{PyKeyError, PyOSError, PyOverflowError, PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use rselectors::Error;
use std::io;

/// `RuntimeError('Selector is closed')`, as `BaseSelector.get_key` raises it.
pub(crate) fn closed() -> PyErr {
    PyRuntimeError::new_err("Selector is closed")
}

/// `KeyError("<fileobj!r> is not registered")`.
pub(crate) fn not_registered(fileobj: &Bound<'_, PyAny>) -> PyErr {
    match fileobj.repr() {
        Ok(repr) => PyKeyError::new_err(format!("{repr} is not registered")),
        Err(e) => e,
    }
}

/// `OverflowError('Python int too large to convert to C int')`: what
/// `select.poll`, `select.epoll` and `select.select` raise for a descriptor
/// number that does not fit a C int (3.9 to 3.13 alike).
pub(crate) fn too_large_for_c_int() -> PyErr {
    PyOverflowError::new_err("Python int too large to convert to C int")
}

/// `OSError(errno, strerror)`: Python picks the subclass (`PermissionError`
/// for `EPERM`, ...) from the errno, as it does for `select.epoll`'s errors.
pub(crate) fn os_error(py: Python<'_>, error: &io::Error) -> PyErr {
    let Some(errno) = error.raw_os_error() else {
        return PyOSError::new_err(error.to_string());
    };
    let strerror = py
        .import(intern!(py, "os"))
        .and_then(|os| os.getattr(intern!(py, "strerror")))
        .and_then(|f| f.call1((errno,)))
        .and_then(|s| s.extract::<String>());
    match strerror {
        Ok(message) => PyOSError::new_err((errno, message)),
        Err(e) => e,
    }
}

/// Converts a core error about `fileobj` (the object the caller passed).
pub(crate) fn to_pyerr(py: Python<'_>, error: Error, fileobj: &Bound<'_, PyAny>) -> PyErr {
    match error {
        Error::Closed => closed(),
        Error::NotRegistered(_) => not_registered(fileobj),
        Error::AlreadyRegistered(fd) => match fileobj.repr() {
            Ok(repr) => PyKeyError::new_err(format!("{repr} (FD {fd}) is already registered")),
            Err(e) => e,
        },
        // The message of CPython's select.select(), where the limit bites there.
        Error::FdOutOfRange { .. } => {
            PyValueError::new_err("filedescriptor out of range in select()")
        }
        Error::InvalidFd(fd) => PyValueError::new_err(format!("Invalid file descriptor: {fd}")),
        Error::InvalidEvents(bits) => PyValueError::new_err(format!("Invalid events: {bits}")),
        Error::Os(e) => os_error(py, &e),
    }
}
