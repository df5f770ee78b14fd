//! `rselectors._rselectors`: the native half of the Python module
//! `rselectors`, a drop-in replacement for the standard library's
//! `selectors` built on the Rust core (`crates/rselectors`).
//!
//! The package `rselectors` (`python/rselectors/__init__.py`) subclasses
//! `selector::PySelector` (Python name `_Selector`) once per backend and
//! adds what is cheap in Python and rarely called (`get_map()`'s mapping,
//! `close()`'s bookkeeping). Everything on a hot path — `register`,
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

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use rselectors::BackendKind;

/// The module `rselectors._rselectors`.
#[pymodule]
fn _rselectors(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<selector::PySelector>()?;
    let names = BackendKind::ALL.iter().map(|k| k.name());
    m.add("BACKENDS", PyTuple::new(m.py(), names)?)?;
    m.add("DEFAULT_BACKEND", BackendKind::DEFAULT.name())?;
    Ok(())
}
