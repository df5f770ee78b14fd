//! `_Selector`: the core's `AnySelector` as a Python class.
//!
//! Threads: CPython's selectors let one thread sit in `select()` while
//! others register, unregister, read the map or close. So `select` releases
//! the GIL without holding any borrow of this object (the core's
//! `detach_wait` / `attach_wait`), and no method runs Python code
//! (`fileno()`, `repr()`, `__ne__`, a finalizer) while it holds the borrow:
//! another thread could be switched in and find the object borrowed.
//! Hence the shape of every method: Python work first, one short borrow
//! for the core call, and references that might be the last ones dropped
//! after the borrow ends.

use crate::errors::{closed, not_registered, os_error, to_pyerr, too_large_for_c_int};
use crate::fileobj::{fileobj_to_fd, FdNumber, PyFileObj};
use crate::keys::{field, new_key, parse_events};
use crate::timeout::{parse_timeout, TimeoutRule};
use pyo3::exceptions::PyValueError;
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};
use pyo3::PyTraverseError;
use rselectors::{AnySelector, BackendKind, Error};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// The native selector. Python subclasses name their backend in the class
/// attribute `_backend` (a name of `BACKENDS`, or `"default"`).
#[pyclass(subclass, module = "rselectors._rselectors", name = "_Selector")]
#[derive(Debug)]
pub(crate) struct PySelector {
    /// The data of each registration is its `SelectorKey` tuple.
    inner: AnySelector<PyFileObj, Py<PyAny>>,
    /// The backend (known after `close()` too, when the core has
    /// forgotten it).
    kind: BackendKind,
    /// How `select()` reads its timeout: as CPython's selector of `kind`.
    timeout_rule: TimeoutRule,
}

/// What one `select` found: each ready key and its events.
type ReadyKeys = Vec<(Py<PyAny>, u32)>;

impl PySelector {
    /// Takes the `count` ready events of the last wait (no Python code
    /// runs here).
    fn take_ready(&self, py: Python<'_>, count: usize) -> ReadyKeys {
        let mut ready = Vec::with_capacity(count);
        ready.extend(
            self.inner
                .ready_keys()
                .map(|(key, events)| (key.data.clone_ref(py), events.bits())),
        );
        ready
    }
}

/// CPython's `_fileobj_lookup`: the descriptor of `fileobj`, or, when it
/// has none any more (a closed socket), the descriptor it was registered
/// with, found by identity.
fn lookup_fd<'py>(
    slf: &Bound<'py, PySelector>,
    fileobj: &Bound<'py, PyAny>,
) -> PyResult<FdNumber<'py>> {
    let py = slf.py();
    match fileobj_to_fd(fileobj) {
        Err(e) if e.is_instance_of::<PyValueError>(py) => {
            let this = slf.try_borrow()?;
            let target = fileobj.as_ptr();
            let found = this
                .inner
                .get_map()
                .iter()
                .find(|k| k.fileobj.obj.as_ptr() == target);
            found.map(|k| FdNumber::Fd(k.fd)).ok_or(e)
        }
        other => other,
    }
}

/// The descriptor of a registered file object: `lookup_fd`, with a number
/// too large for a C int (which cannot have been registered) answered as
/// the core answers for a descriptor that is not registered:
/// `RuntimeError` once the selector is closed, else `KeyError`.
fn registered_fd(slf: &Bound<'_, PySelector>, fileobj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    match lookup_fd(slf, fileobj)? {
        FdNumber::Fd(fd) => Ok(fd),
        FdNumber::TooLarge(_) if slf.try_borrow()?.inner.is_closed() => Err(closed()),
        FdNumber::TooLarge(_) => Err(not_registered(fileobj)),
    }
}

/// A failed wait as a Python exception.
fn select_error(py: Python<'_>, error: Error) -> PyErr {
    match error {
        Error::Closed => closed(),
        Error::Os(e) => os_error(py, &e),
        other => PyValueError::new_err(other.to_string()),
    }
}

#[pymethods]
impl PySelector {
    /// Opens the backend named by the class attribute `_backend`.
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let py = cls.py();
        let kind = match cls.getattr_opt(intern!(py, "_backend"))? {
            Some(name) => name
                .extract::<String>()?
                .parse::<BackendKind>()
                .map_err(|e| PyValueError::new_err(e.to_string()))?,
            None => BackendKind::DEFAULT,
        };
        let timeout_rule = TimeoutRule::of(kind.name()).ok_or_else(|| {
            PyValueError::new_err(format!("no Python selector for the {kind} backend"))
        })?;
        let inner = AnySelector::with_kind(kind).map_err(|e| os_error(py, &e))?;
        Ok(PySelector {
            inner,
            kind,
            timeout_rule,
        })
    }

    /// Registers a file object for `events`; returns its `SelectorKey`.
    #[pyo3(signature = (fileobj, events, data=None))]
    fn register<'py>(
        slf: &Bound<'py, Self>,
        fileobj: &Bound<'py, PyAny>,
        events: &Bound<'py, PyAny>,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let mask = parse_events(events)?;
        // A number past a C int is refused by every backend's own call,
        // in CPython too: poll and epoll at register, select.select at
        // each select() (where this module refuses what select() would).
        let fd = match lookup_fd(slf, fileobj)? {
            FdNumber::Fd(fd) => fd,
            FdNumber::TooLarge(_) => return Err(too_large_for_c_int()),
        };
        let none = py.None().into_bound(py);
        let key = new_key(fileobj, fd, events, data.unwrap_or(&none))?;
        let file = PyFileObj {
            obj: fileobj.clone().unbind(),
            fd,
        };
        let added = slf
            .try_borrow_mut()?
            .inner
            .register(file, mask, key.clone().unbind())
            .map(|_| ());
        match added {
            Ok(()) => Ok(key),
            Err(rejected) => Err(to_pyerr(py, rejected.error, fileobj)),
        }
    }

    /// Unregisters a file object; returns its `SelectorKey`.
    fn unregister<'py>(
        slf: &Bound<'py, Self>,
        fileobj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let fd = registered_fd(slf, fileobj)?;
        let removed = slf.try_borrow_mut()?.inner.unregister(fd);
        match removed {
            Ok(key) => Ok(key.data.into_bound(py)),
            Err(e) => Err(to_pyerr(py, e, fileobj)),
        }
    }

    /// Changes a registration's events and data; returns its (new) key.
    ///
    /// As CPython: a change of data alone makes no system call, no change
    /// returns the same key, and a refused change of events unregisters
    /// the file object (bpo-30014).
    #[pyo3(signature = (fileobj, events, data=None))]
    fn modify<'py>(
        slf: &Bound<'py, Self>,
        fileobj: &Bound<'py, PyAny>,
        events: &Bound<'py, PyAny>,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let fd = registered_fd(slf, fileobj)?;
        let found = slf
            .try_borrow()?
            .inner
            .get_key(fd)
            .map(|k| (k.data.clone_ref(py), k.events));
        let (old_key, old_events) = found.map_err(|e| to_pyerr(py, e, fileobj))?;
        // CPython looks the file object up before it checks the mask.
        let mask = parse_events(events)?;
        let old_key = old_key.into_bound(py);
        let none = py.None().into_bound(py);
        let data = data.unwrap_or(&none);
        let events_changed = mask != old_events;
        // `!=` as CPython writes it (it may run the data's `__ne__`).
        if !events_changed && !data.ne(field(&old_key, 3)?)? {
            return Ok(old_key);
        }
        let key = new_key(&field(&old_key, 0)?, fd, events, data)?;
        let replaced = {
            let mut this = slf.try_borrow_mut()?;
            let sel = &mut this.inner;
            let modified = if events_changed {
                sel.modify_events(fd, mask).map(|_| ())
            } else {
                Ok(())
            };
            modified
                .and_then(|()| sel.get_key_mut(fd))
                .map(|k| std::mem::replace(k.data, key.clone().unbind()))
        };
        match replaced {
            // The old key is dropped here, after the borrow.
            Ok(_old) => Ok(key),
            Err(e) => Err(to_pyerr(py, e, fileobj)),
        }
    }

    /// Waits for registered file objects to be ready, or `timeout` seconds
    /// (`None`: no limit; zero or less: just look); returns `[(key, events)]`.
    ///
    /// The GIL is released while waiting. A signal runs Python's handlers:
    /// one that raises ends the call with its exception; otherwise the wait
    /// goes on for the time that remains (PEP 475).
    #[pyo3(signature = (timeout=None))]
    fn select<'py>(
        slf: &Bound<'py, Self>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let timeout = match timeout {
            None => None,
            Some(timeout) => {
                let rule = slf.try_borrow()?.timeout_rule;
                parse_timeout(rule, timeout)?
            }
        };
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut remaining = timeout;
        loop {
            let outcome = if remaining == Some(Duration::ZERO) {
                // A poll does not block: keep the GIL, and skip the thread
                // switch that releasing it may cause.
                let mut this = slf.try_borrow_mut()?;
                let polled = this.inner.select_once(Some(Duration::ZERO));
                polled.map(|count| this.take_ready(py, count))
            } else {
                let detached = slf.try_borrow_mut()?.inner.detach_wait();
                let mut wait = detached.map_err(|e| select_error(py, e))?;
                let waited = py.detach(|| wait.wait(remaining));
                let mut this = slf.try_borrow_mut()?;
                match this.inner.attach_wait(wait) {
                    // Closed by another thread meanwhile: nothing is registered.
                    Err(_) => Ok(ReadyKeys::new()),
                    Ok(count) => waited.map(|()| this.take_ready(py, count)),
                }
            };
            // No borrow from here on: the list's allocations may run the
            // garbage collector, a signal handler may run anything.
            match outcome {
                Ok(ready) => return PyList::new(py, ready),
                Err(e) if e.is_interrupted() => {
                    py.check_signals()?;
                    if let Some(deadline) = deadline {
                        remaining = Some(deadline.saturating_duration_since(Instant::now()));
                    }
                }
                Err(e) => return Err(select_error(py, e)),
            }
        }
    }

    /// The `SelectorKey` of a registered file object.
    fn get_key<'py>(
        slf: &Bound<'py, Self>,
        fileobj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if slf.try_borrow()?.inner.is_closed() {
            return Err(closed());
        }
        let fd = registered_fd(slf, fileobj)?;
        let found = slf
            .try_borrow()?
            .inner
            .get_key(fd)
            .map(|k| k.data.clone_ref(py));
        match found {
            Ok(key) => Ok(key.into_bound(py)),
            Err(e) => Err(to_pyerr(py, e, fileobj)),
        }
    }

    /// Closes the backend and forgets every registration. Idempotent.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let keys: Vec<Py<PyAny>> = {
            let mut this = slf.try_borrow_mut()?;
            let keys = this
                .inner
                .get_map()
                .iter()
                .map(|k| k.data.clone_ref(py))
                .collect();
            this.inner.close();
            keys
        };
        // The last references to the keys (and their file objects) may go
        // here, running finalizers: after the borrow.
        drop(keys);
        Ok(())
    }

    /// The backend's kernel descriptor (`EpollSelector.fileno()`,
    /// `KqueueSelector.fileno()`, `DevpollSelector.fileno()`).
    fn _fileno(&self) -> PyResult<RawFd> {
        match self.inner.fileno() {
            Ok(Some(fd)) => Ok(fd),
            Ok(None) => Err(PyValueError::new_err(
                "this selector has no file descriptor",
            )),
            // The message of CPython's `select.epoll`, `select.kqueue` or
            // `select.devpoll` object, by its name.
            Err(_) => Err(PyValueError::new_err(format!(
                "I/O operation on closed {} object",
                self.kind.name()
            ))),
        }
    }

    /// The backend's name: one of `BACKENDS` (None once closed).
    #[getter]
    fn _backend_name(&self) -> Option<&'static str> {
        self.inner.backend_name()
    }

    /// CPython's private `_fileobj_lookup`: the descriptor of `fileobj`
    /// (a number too large for a C int as it is).
    fn _fileobj_lookup<'py>(
        slf: &Bound<'py, Self>,
        fileobj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match lookup_fd(slf, fileobj)? {
            FdNumber::Fd(fd) => Ok(fd.into_pyobject(slf.py())?.into_any()),
            FdNumber::TooLarge(number) => Ok(number),
        }
    }

    /// `get_map()[fileobj]`: the key, or KeyError (also once closed).
    fn _lookup_key<'py>(
        slf: &Bound<'py, Self>,
        fileobj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        map_key(slf, fileobj)?.ok_or_else(|| not_registered(fileobj))
    }

    /// `get_map().get(fileobj, default)`: the key, or `default` (also for
    /// a number no descriptor can have); `ValueError` for what is not a
    /// file object, as in CPython.
    fn _get_key<'py>(
        slf: &Bound<'py, Self>,
        fileobj: &Bound<'py, PyAny>,
        default: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(map_key(slf, fileobj)?.unwrap_or_else(|| default.clone()))
    }

    /// Number of registrations (`len(get_map())`).
    fn _count(&self) -> usize {
        self.inner.len()
    }

    /// The registered descriptors (`list(get_map())`).
    fn _fds<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        let fds: Vec<RawFd> = slf.try_borrow()?.inner.get_map().fds().collect();
        PyList::new(slf.py(), fds)
    }

    /// The registered keys (`list(get_map().values())`).
    fn _keys<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let keys: Vec<Py<PyAny>> = slf
            .try_borrow()?
            .inner
            .get_map()
            .iter()
            .map(|k| k.data.clone_ref(py))
            .collect();
        PyList::new(py, keys)
    }

    /// The keys hold the file objects and data: the garbage collector must
    /// see them to collect cycles through the selector (asyncio makes them).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for key in self.inner.get_map().iter() {
            visit.call(&key.data)?;
            visit.call(&key.fileobj.obj)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.inner.close();
    }
}

/// The key `get_map()` holds for `fileobj`, if any (none for a number no
/// descriptor can have); `ValueError` for what is not a file object.
fn map_key<'py>(
    slf: &Bound<'py, PySelector>,
    fileobj: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = slf.py();
    let FdNumber::Fd(fd) = lookup_fd(slf, fileobj)? else {
        return Ok(None);
    };
    let found = slf
        .try_borrow()?
        .inner
        .get_map()
        .get(fd)
        .map(|k| k.data.clone_ref(py));
    Ok(found.map(|key| key.into_bound(py)))
}
