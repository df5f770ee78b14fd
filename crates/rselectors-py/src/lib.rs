//! `rselectors._rselectors`: the native half of the Python module
//! `rselectors`, a drop-in replacement for the standard library's
//! `selectors` built on the Rust core (`crates/rselectors`).
//!
//! The package `rselectors` (`python/rselectors/__init__.py`) subclasses
//! `selector::PySelector` (Python name `_Selector`) once per backend and
//! adds what is cheap in Python and rarely called (`get_map()`'s mapping,
//! `close()`'s bookkeeping). The native class is safe to share between
//! threads, with or without the GIL (see `selector.rs`). Everything on a hot path — `register`,
//! `unregister`, `modify`, `select`, `get_key` — is one call into this
//! crate.
//!
//! A key is the standard library's own `selectors.SelectorKey` named tuple;
//! the core stores it as the registration's data, so `register`, `get_key`
//! and `select` hand out the same object, as CPython does.

mod errors;
mod fileobj;
mod keys;
mod selector;
mod timeout;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use rselectors::BackendKind;
use timeout::{parse_timeout, TimeoutRule};

/// The wait, in nanoseconds (None: no limit), that the selector of the
/// backend `name` asks for when `select(timeout)` is called; for the tests,
/// which can so check the rules of backends this machine does not have.
#[pyfunction]
fn _timeout_ns(name: &str, timeout: &Bound<'_, PyAny>) -> PyResult<Option<u128>> {
    let rule = TimeoutRule::of(name)
        .ok_or_else(|| PyValueError::new_err(format!("no timeout rule for {name:?}")))?;
    Ok(parse_timeout(rule, timeout)?.map(|wait| wait.as_nanos()))
}

/// The module `rselectors._rselectors`: the class `_Selector`, the names of
/// the platform's backends (`BACKENDS`, best last, as the core lists them)
/// and its default (`DEFAULT_BACKEND`, CPython's `DefaultSelector` choice).
///
/// Declared safe without the GIL (a free-threaded CPython keeps it off):
/// every type here is `Send + Sync`, the selector's state is behind its
/// own lock (`selector.rs`), and there is no `unsafe` code that could
/// assume the GIL: no race depends on it.
#[pymodule(gil_used = false)]
fn _rselectors(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<selector::PySelector>()?;
    m.add_function(wrap_pyfunction!(_timeout_ns, m)?)?;
    let names = BackendKind::ALL.iter().map(|k| k.name());
    m.add("BACKENDS", PyTuple::new(m.py(), names)?)?;
    m.add("DEFAULT_BACKEND", BackendKind::DEFAULT.name())?;
    Ok(())
}
