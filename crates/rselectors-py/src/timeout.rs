//! `select(timeout)`'s argument, read as CPython's selectors read it.

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use std::time::Duration;

/// `None` blocks; zero or less polls; a positive number of seconds waits at
/// least that long (the core rounds up to the backend's resolution).
pub(crate) fn parse_timeout(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    let Some(timeout) = timeout else {
        return Ok(None);
    };
    let seconds: f64 = timeout.extract()?;
    if seconds.is_nan() {
        return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
    }
    if seconds <= 0.0 {
        return Ok(Some(Duration::ZERO));
    }
    // A positive timeout below a nanosecond must still wait (the core
    // rounds it up), not become a busy zero-timeout poll.
    Duration::try_from_secs_f64(seconds)
        .map(|d| Some(d.max(Duration::from_nanos(1))))
        .map_err(|_| PyOverflowError::new_err("timeout is too large"))
}
