//! `SelectorKey` tuples and event masks.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};
use rselectors::Events;
use std::os::fd::RawFd;

/// The standard library's `selectors.SelectorKey`: our keys are instances
/// of it, so `isinstance(key, selectors.SelectorKey)` holds for both modules.
static KEY_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
/// `tuple.__new__`, which is all the named tuple's own `__new__` calls;
/// calling it directly saves a Python frame per key.
static TUPLE_NEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `SelectorKey(fileobj, fd, events, data)`.
pub(crate) fn new_key<'py>(
    fileobj: &Bound<'py, PyAny>,
    fd: RawFd,
    events: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = fileobj.py();
    let class = KEY_CLASS.import(py, "selectors", "SelectorKey")?;
    let tuple_new = TUPLE_NEW.get_or_try_init(py, || {
        PyResult::Ok(py.get_type::<PyTuple>().getattr("__new__")?.unbind())
    })?;
    let fd = fd.into_pyobject(py)?.into_any();
    let fields = PyTuple::new(py, [fileobj, &fd, events, data])?;
    tuple_new.bind(py).call1((class, fields))
}

/// The item `index` of a key tuple.
pub(crate) fn field<'py>(key: &Bound<'py, PyAny>, index: usize) -> PyResult<Bound<'py, PyAny>> {
    key.cast::<PyTuple>()?.get_item(index)
}

/// CPython's check `(not events) or (events & ~(EVENT_READ | EVENT_WRITE))`:
/// `ValueError("Invalid events: ...")` unless the mask is `EVENT_READ`,
/// `EVENT_WRITE` or both.
pub(crate) fn parse_events(events: &Bound<'_, PyAny>) -> PyResult<Events> {
    let invalid = || match events.repr() {
        Ok(repr) => PyValueError::new_err(format!("Invalid events: {repr}")),
        Err(e) => e,
    };
    let bits: i64 = match events.extract::<i64>() {
        Ok(bits) => bits,
        // Not an int: evaluate the check itself, with the object's own
        // truth and `&` (a TypeError from `&` propagates, as in CPython).
        Err(_) => {
            if !events.is_truthy()? || events.bitand(!3i64)?.is_truthy()? {
                return Err(invalid());
            }
            events.bitand(3i64)?.extract()?
        }
    };
    if bits & !3 != 0 {
        return Err(invalid());
    }
    // Fits: bits is 0..=3 here.
    Events::from_mask(bits as u32).ok_or_else(invalid)
}
