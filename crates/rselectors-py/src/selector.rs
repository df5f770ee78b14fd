//! `_Selector`: the core's `AnySelector` as a Python class, safe to share
//! between threads with or without the GIL.
//!
//! The lock rule. The core selector sits in a `Mutex` inside the object
//! (a frozen class: no runtime borrow, so no "Already borrowed"). The lock
//! is held only around core calls, and never while Python code may run or
//! while waiting:
//! - Python work comes first and outside it: `fileno()`, `repr()`, `__ne__`,
//!   building keys, converting errors;
//! - inside it only the core's work and reference-count increments; a
//!   reference that may be the last one (an unregistered key, a replaced
//!   key, the whole selector at `close`) is carried out and dropped after
//!   it, since a finalizer may run anything, even a call back into this
//!   selector;
//! - `select()` takes the wait out of the core (`detach_wait`) under the
//!   lock, waits without the lock and without the GIL, then maps what was
//!   ready to keys under the lock again (`attach_wait`). What was
//!   unregistered before that second lock is never delivered: a key whose
//!   `unregister` returned before `select()` re-locked is not in the table
//!   any more, and an event of the registration that had the number before
//!   is told apart from one of a new registration.
//!
//! With the GIL, a holder of the lock also holds the GIL throughout, so
//! the lock is never contended. Without it, a thread waits at most for one
//! core call of another, which never waits on anything: no deadlock with
//! stop-the-world pauses (garbage collection, `os.fork()`).

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
use rselectors::{AnySelector, BackendKind, Error, Events};
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

/// The core selector; the data of each registration is its `SelectorKey`.
type Core = AnySelector<PyFileObj, Py<PyAny>>;

/// The native selector. Python subclasses name their backend in the class
/// attribute `_backend` (a name of `BACKENDS`, or `"default"`).
#[pyclass(
    frozen,
    subclass,
    module = "rselectors._rselectors",
    name = "_Selector"
)]
#[derive(Debug)]
pub(crate) struct PySelector {
    /// `None` once closed. Locked as the module's docs say.
    core: Mutex<Option<Core>>,
    /// The backend (known after `close()` too).
    kind: BackendKind,
    /// How `select()` reads its timeout: as CPython's selector of `kind`.
    timeout_rule: TimeoutRule,
}

/// What one `select` found: each ready key and its events.
type ReadyKeys = Vec<(Py<PyAny>, u32)>;

/// A registration's key and file object, held while the core may drop its
/// own references, so that none of them is the last.
type Held = Option<(Py<PyAny>, Py<PyAny>)>;

impl PySelector {
    /// The core, locked. A panic inside a core call (a bug, which Python
    /// sees as `PanicException`) leaves the lock poisoned; the core's
    /// state is still a selector's, so later calls go on.
    fn lock(&self) -> MutexGuard<'_, Option<Core>> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `count` ready events of the last wait, as keys (no Python code
/// runs here).
fn take_ready(py: Python<'_>, core: &Core, count: usize) -> ReadyKeys {
    let mut ready = Vec::with_capacity(count);
    ready.extend(
        core.ready_keys()
            .map(|(key, events)| (key.data.clone_ref(py), events.bits())),
    );
    ready
}

/// New references to the key and file object registered for `fd`.
fn hold(py: Python<'_>, core: &Core, fd: RawFd) -> Held {
    let key = core.get_key(fd).ok()?;
    Some((key.data.clone_ref(py), key.fileobj.obj.clone_ref(py)))
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
            let target = fileobj.as_ptr();
            let found = slf.get().lock().as_ref().and_then(|core| {
                core.get_map()
                    .iter()
                    .find(|k| k.fileobj.obj.as_ptr() == target)
                    .map(|k| k.fd)
            });
            found.map(FdNumber::Fd).ok_or(e)
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
        FdNumber::TooLarge(_) if slf.get().lock().is_none() => Err(closed()),
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

/// What `modify`'s locked step found.
#[derive(Debug)]
enum Modified {
    /// Done; the replaced key, to drop after the lock.
    Done(Py<PyAny>),
    /// Another thread changed the registration since it was read: its
    /// current key and events, to start again from.
    Changed(Py<PyAny>, Events),
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
        let core = AnySelector::with_kind(kind).map_err(|e| os_error(py, &e))?;
        Ok(PySelector {
            core: Mutex::new(Some(core)),
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
        let stored = key.clone().unbind();
        // A refusal hands the file object and key back: dropped after the lock.
        let added = match slf.get().lock().as_mut() {
            Some(core) => core.register(file, mask, stored).map(|_| ()),
            None => Err(rselectors::Rejected {
                error: Error::Closed,
                fileobj: file,
                data: stored,
            }),
        };
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
        let removed = match slf.get().lock().as_mut() {
            Some(core) => core.unregister(fd),
            None => Err(Error::Closed),
        };
        match removed {
            Ok(key) => Ok(key.data.into_bound(py)),
            Err(e) => Err(to_pyerr(py, e, fileobj)),
        }
    }

    /// Changes a registration's events and data; returns its (new) key.
    ///
    /// As CPython: a change of data alone makes no system call, no change
    /// returns the same key, and a refused change of events unregisters
    /// the file object (bpo-30014). The change applies to the key read at
    /// the start: if another thread replaced it meanwhile, it starts again
    /// from that one, so no thread's change is silently lost.
    #[pyo3(signature = (fileobj, events, data=None))]
    fn modify<'py>(
        slf: &Bound<'py, Self>,
        fileobj: &Bound<'py, PyAny>,
        events: &Bound<'py, PyAny>,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let fd = registered_fd(slf, fileobj)?;
        let found = match slf.get().lock().as_ref() {
            Some(core) => core.get_key(fd).map(|k| (k.data.clone_ref(py), k.events)),
            None => Err(Error::Closed),
        };
        let (mut old_key, mut old_events) = found.map_err(|e| to_pyerr(py, e, fileobj))?;
        // CPython looks the file object up before it checks the mask.
        let mask = parse_events(events)?;
        let none = py.None().into_bound(py);
        let data = data.unwrap_or(&none);
        loop {
            let old = old_key.bind(py);
            let events_changed = mask != old_events;
            // `!=` as CPython writes it (it may run the data's `__ne__`).
            if !events_changed && !data.ne(field(old, 3)?)? {
                return Ok(old.clone());
            }
            let key = new_key(&field(old, 0)?, fd, events, data)?;
            let mut held: Held = None;
            let outcome = match slf.get().lock().as_mut() {
                None => Err(Error::Closed),
                Some(core) => match core.get_key(fd) {
                    Err(e) => Err(e),
                    Ok(k) if !k.data.is(&old_key) => {
                        Ok(Modified::Changed(k.data.clone_ref(py), k.events))
                    }
                    Ok(_) => {
                        // A refused change drops the registration in the core.
                        held = hold(py, core, fd);
                        let modified = if events_changed {
                            core.modify_events(fd, mask).map(|_| ())
                        } else {
                            Ok(())
                        };
                        modified.and_then(|()| core.get_key_mut(fd)).map(|k| {
                            Modified::Done(std::mem::replace(k.data, key.clone().unbind()))
                        })
                    }
                },
            };
            drop(held);
            match outcome {
                // The replaced key is dropped here, after the lock.
                Ok(Modified::Done(_replaced)) => return Ok(key),
                Ok(Modified::Changed(current, events)) => {
                    old_key = current;
                    old_events = events;
                }
                Err(e) => return Err(to_pyerr(py, e, fileobj)),
            }
        }
    }

    /// Waits for registered file objects to be ready, or `timeout` seconds
    /// (`None`: no limit; zero or less: just look); returns `[(key, events)]`.
    ///
    /// The GIL and the lock are released while waiting. A signal runs
    /// Python's handlers: one that raises ends the call with its exception;
    /// otherwise the wait goes on for the time that remains (PEP 475).
    /// Closed by another thread meanwhile, it returns `[]` when its wait
    /// ends, as CPython's does.
    #[pyo3(signature = (timeout=None))]
    fn select<'py>(
        slf: &Bound<'py, Self>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let this = slf.get();
        let timeout = match timeout {
            None => None,
            Some(timeout) => parse_timeout(this.timeout_rule, timeout)?,
        };
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut remaining = timeout;
        loop {
            let outcome = if remaining == Some(Duration::ZERO) {
                // A poll does not block: keep the GIL and the lock, and
                // skip the thread switch that releasing the GIL may cause.
                match this.lock().as_mut() {
                    Some(core) => core
                        .select_once(Some(Duration::ZERO))
                        .map(|count| take_ready(py, core, count)),
                    None => Err(Error::Closed),
                }
            } else {
                let detached = this.lock().as_mut().map(|core| core.detach_wait());
                let mut wait = match detached {
                    Some(Ok(wait)) => wait,
                    Some(Err(e)) => return Err(select_error(py, e)),
                    None => return Err(closed()),
                };
                let waited = py.detach(|| wait.wait(remaining));
                match this.lock().as_mut() {
                    Some(core) => match core.attach_wait(wait) {
                        Ok(count) => waited.map(|()| take_ready(py, core, count)),
                        Err(e) => Err(e),
                    },
                    // Closed by another thread meanwhile: nothing is registered.
                    None => Ok(ReadyKeys::new()),
                }
            };
            // Unlocked from here on: the list's allocations may run the
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
        if slf.get().lock().is_none() {
            return Err(closed());
        }
        let fd = registered_fd(slf, fileobj)?;
        let found = match slf.get().lock().as_ref() {
            Some(core) => core.get_key(fd).map(|k| k.data.clone_ref(py)),
            None => Err(Error::Closed),
        };
        match found {
            Ok(key) => Ok(key.into_bound(py)),
            Err(e) => Err(to_pyerr(py, e, fileobj)),
        }
    }

    /// Closes the backend and forgets every registration. Idempotent.
    fn close(&self) {
        // Dropped after the lock: the last references to the keys (and
        // their file objects) may go here, running finalizers.
        let core = self.lock().take();
        drop(core);
    }

    /// The backend's kernel descriptor (`EpollSelector.fileno()`,
    /// `KqueueSelector.fileno()`, `DevpollSelector.fileno()`).
    fn _fileno(&self) -> PyResult<RawFd> {
        let fileno = self.lock().as_ref().map(|core| core.fileno());
        match fileno {
            Some(Ok(Some(fd))) => Ok(fd),
            Some(Ok(None)) => Err(PyValueError::new_err(
                "this selector has no file descriptor",
            )),
            // The message of CPython's `select.epoll`, `select.kqueue` or
            // `select.devpoll` object, by its name.
            Some(Err(_)) | None => Err(PyValueError::new_err(format!(
                "I/O operation on closed {} object",
                self.kind.name()
            ))),
        }
    }

    /// The backend's name: one of `BACKENDS` (None once closed).
    #[getter]
    fn _backend_name(&self) -> Option<&'static str> {
        self.lock().as_ref().and_then(|core| core.backend_name())
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

    /// `get_map().get(fileobj, default=None)` (the mapping's `get` is this
    /// method): the key, or `default` (also for a number no descriptor can
    /// have); `ValueError` for what is not a file object, as in CPython.
    #[pyo3(signature = (fileobj, default=None))]
    fn _get_key<'py>(
        slf: &Bound<'py, Self>,
        fileobj: &Bound<'py, PyAny>,
        default: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        Ok(match map_key(slf, fileobj)? {
            Some(key) => key,
            None => default.map_or_else(|| py.None().into_bound(py), Bound::clone),
        })
    }

    /// Number of registrations (`len(get_map())`).
    fn _count(&self) -> usize {
        self.lock().as_ref().map_or(0, |core| core.len())
    }

    /// The registered descriptors (`list(get_map())`).
    fn _fds<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        let fds: Vec<RawFd> = match slf.get().lock().as_ref() {
            Some(core) => core.get_map().fds().collect(),
            None => Vec::new(),
        };
        PyList::new(slf.py(), fds)
    }

    /// The registered keys (`list(get_map().values())`).
    fn _keys<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let keys: Vec<Py<PyAny>> = match slf.get().lock().as_ref() {
            Some(core) => core
                .get_map()
                .iter()
                .map(|k| k.data.clone_ref(py))
                .collect(),
            None => Vec::new(),
        };
        PyList::new(py, keys)
    }

    /// The keys hold the file objects and data: the garbage collector must
    /// see them to collect cycles through the selector (asyncio makes them).
    ///
    /// The collector runs while no other thread is inside a core call
    /// (with the GIL, or with the world stopped without it), so the lock
    /// is free; were it not, visiting nothing only keeps objects alive.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let guard = match self.core.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(()),
        };
        for key in guard.iter().flat_map(|core| core.get_map().iter()) {
            visit.call(&key.data)?;
            visit.call(&key.fileobj.obj)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        self.close();
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
        .get()
        .lock()
        .as_ref()
        .and_then(|core| core.get_map().get(fd).map(|k| k.data.clone_ref(py)));
    Ok(found.map(|key| key.into_bound(py)))
}
