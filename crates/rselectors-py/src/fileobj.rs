//! File objects: an int or anything with `fileno()`, as CPython's
//! `selectors._fileobj_to_fd` reads them.

use pyo3::exceptions::{PyAttributeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyInt;
use std::os::fd::{AsRawFd, RawFd};

/// A registered Python file object and the descriptor it had at `register`.
///
/// The core owns one per registration; the descriptor is never asked for
/// again, so a file object closed since still unregisters by its number.
#[derive(Debug)]
pub(crate) struct PyFileObj {
    /// The object the caller registered (kept for lookups by identity).
    pub(crate) obj: Py<PyAny>,
    /// Its descriptor at `register`.
    pub(crate) fd: RawFd,
}

impl AsRawFd for PyFileObj {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

/// A descriptor number as CPython's `_fileobj_to_fd` returns it.
#[derive(Debug)]
pub(crate) enum FdNumber<'py> {
    /// One that fits a C int, as the core and the kernel take it.
    Fd(RawFd),
    /// A non-negative int too large for a C int. No such descriptor can be
    /// open, but CPython takes the number as it is: a lookup finds it not
    /// registered (`KeyError`), and only the backend's own call refuses it
    /// (`OverflowError`).
    TooLarge(Bound<'py, PyAny>),
}

/// CPython's `_fileobj_to_fd`: the descriptor of an int or of
/// `int(fileobj.fileno())`.
///
/// `ValueError("Invalid file object: ...")` when `fileno()` is missing or
/// gives no int (AttributeError, TypeError, ValueError), `ValueError("Invalid
/// file descriptor: ...")` when it is negative.
pub(crate) fn fileobj_to_fd<'py>(fileobj: &Bound<'py, PyAny>) -> PyResult<FdNumber<'py>> {
    let py = fileobj.py();
    let number = if fileobj.is_instance_of::<PyInt>() {
        fileobj.clone()
    } else {
        let converted = fileobj.call_method0(intern!(py, "fileno")).and_then(|n| {
            if n.is_instance_of::<PyInt>() {
                Ok(n)
            } else {
                py.get_type::<PyInt>().call1((n,))
            }
        });
        match converted {
            Ok(n) => n,
            Err(e)
                if e.is_instance_of::<PyAttributeError>(py)
                    || e.is_instance_of::<PyTypeError>(py)
                    || e.is_instance_of::<PyValueError>(py) =>
            {
                return Err(PyValueError::new_err(format!(
                    "Invalid file object: {}",
                    fileobj.repr()?
                )));
            }
            Err(e) => return Err(e),
        }
    };
    match number.extract::<RawFd>() {
        Ok(fd) if fd >= 0 => Ok(FdNumber::Fd(fd)),
        Ok(fd) => Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {fd}"
        ))),
        // Out of C int range: negative is invalid, positive cannot be open.
        Err(_) if number.lt(0)? => Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {number}"
        ))),
        Err(_) => Ok(FdNumber::TooLarge(number)),
    }
}
