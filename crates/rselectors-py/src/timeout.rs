//! `select(timeout)`'s argument, read as CPython's selectors read it: each
//! backend its own way, with the same results and the same exceptions.
//!
//! CPython's selectors do a little arithmetic on the timeout and hand the
//! result to the call they wrap, which converts it with the interpreter's
//! time functions (`_PyTime_t`: int64 nanoseconds, rounded away from zero):
//!
//! | selector         | hands on                               | to             | accepts                          |
//! |------------------|----------------------------------------|----------------|----------------------------------|
//! | `SelectSelector` | `max(timeout, 0)` s                    | `select.select`| below 2**63 ns (~292 years)      |
//! | `PollSelector`   | `math.ceil(timeout * 1e3)` ms          | `poll.poll`    | up to INT_MAX ms (~24.8 days)    |
//! | `EpollSelector`  | `math.ceil(timeout * 1e3) * 1e-3` s    | `epoll.poll`   | up to INT_MAX ms, rounded up     |
//! | `DevpollSelector`| `math.ceil(timeout * 1e3)` ms          | `devpoll.poll` | -1 to INT_MAX ms                 |
//! | `KqueueSelector` | `max(timeout, 0)` s                    | `kqueue.control`| below 2**63 ns (~292 years)     |
//!
//! Past that they raise `OverflowError`: `"timeout is too large"` past
//! INT_MAX ms, the interpreter's own message past `_PyTime_t` (it changed
//! in 3.11 for floats and in 3.13 for ints: see [`pytime_overflow`]),
//! `math.ceil`'s for infinity; NaN is `math.ceil`'s `ValueError` (poll,
//! epoll, devpoll) or `select.select`'s. `kqueue.control` is the exception:
//! it turns every failed conversion (overflow and NaN included) into
//! `TypeError("timeout argument must be a number or None, got <type>")`.
//!
//! The rules are keyed by the backend's name ([`TimeoutRule::of`]), not
//! by [`BackendKind`]'s variants: every rule then compiles, and can be
//! tested, on every platform, whichever backends it has.
//!
//! An exact `float`, `int` or `bool` (every timeout in practice) is read
//! here with the same double arithmetic; anything else goes through the
//! same Python operations as CPython's code (`<=`, `*`, `math.ceil`,
//! `max`, then the C API's `PyLong_AsLongLong`), so a `Fraction` or a
//! NumPy float behaves as it does there too.
//!
//! A timeout accepted is handed to the core whole, as the wrapped call
//! would pass it to the kernel: whole milliseconds for poll and epoll,
//! nanoseconds for select (which the core rounds up to select(2)'s
//! microseconds). It is never clamped here.

use pyo3::exceptions::{PyDeprecationWarning, PyOverflowError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyFloat, PyInt};
use std::ffi::c_int;
use std::time::Duration;

const NS_PER_SEC: i64 = 1_000_000_000;
const NS_PER_MS: i64 = 1_000_000;
/// 2**63: `_PyTime_t` holds the nanoseconds below it (and from -2**63 on).
const PYTIME_BOUND: f64 = 9_223_372_036_854_775_808.0;
/// poll(2) and epoll_wait(2) take a C int of milliseconds.
const MS_MAX: i64 = c_int::MAX as i64;
const MS_MIN: i64 = c_int::MIN as i64;

/// Which CPython selector's way of reading `select(timeout)` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeoutRule {
    /// `SelectSelector`.
    Select,
    /// `PollSelector`.
    Poll,
    /// `EpollSelector`.
    Epoll,
    /// `DevpollSelector`.
    Devpoll,
    /// `KqueueSelector`.
    Kqueue,
}

impl TimeoutRule {
    /// The rule of the backend named `name` ([`rselectors::BackendKind::name`]),
    /// if CPython has a selector for it.
    pub(crate) fn of(name: &str) -> Option<Self> {
        Some(match name {
            "select" => TimeoutRule::Select,
            "poll" => TimeoutRule::Poll,
            "epoll" => TimeoutRule::Epoll,
            "devpoll" => TimeoutRule::Devpoll,
            "kqueue" => TimeoutRule::Kqueue,
            _ => return None,
        })
    }
}

/// The wait that CPython's selector of `rule` asks the kernel for when
/// given `timeout` (not None): zero to just look, `None` for no limit (only
/// an odd type gets that: a negative millisecond count), or the exception
/// that selector raises.
pub(crate) fn parse_timeout(
    rule: TimeoutRule,
    timeout: &Bound<'_, PyAny>,
) -> PyResult<Option<Duration>> {
    match rule {
        TimeoutRule::Select => select_timeout(timeout).map(Some),
        TimeoutRule::Poll => poll_timeout(timeout, MS_MIN),
        TimeoutRule::Epoll => epoll_timeout(timeout),
        // devpoll.poll refuses a negative count but -1 (an odd type's).
        TimeoutRule::Devpoll => poll_timeout(timeout, -1),
        TimeoutRule::Kqueue => kqueue_timeout(timeout).map(Some),
    }
}

/// `SelectSelector.select`: `select.select(..., max(timeout, 0))`.
fn select_timeout(timeout: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let py = timeout.py();
    let ns = if let Ok(float) = timeout.cast_exact::<PyFloat>() {
        let seconds = float.value();
        // `0 > NaN` is false: max() keeps NaN, and select.select refuses it.
        if 0.0 > seconds {
            0
        } else {
            ns_from_f64(py, seconds, NS_PER_SEC)?
        }
    } else if is_plain_int(timeout) {
        match timeout.extract::<i64>() {
            Ok(seconds) if seconds < 0 => 0,
            Ok(seconds) => ns_from_i64(py, seconds, NS_PER_SEC)?,
            // Past int64: zero when negative, else past _PyTime_t.
            Err(_) if timeout.lt(0)? => 0,
            Err(_) => return Err(pytime_overflow(py, Overflow::Int)),
        }
    } else {
        let seconds = max_zero(timeout)?;
        ns_from_object(&seconds, NS_PER_SEC, "timeout must be a float or None")?
    };
    // select.select's own check, on the timeval (only an odd type, whose
    // `0 > timeout` is false but whose value is negative, gets here).
    let ns =
        u64::try_from(ns).map_err(|_| PyValueError::new_err("timeout must be non-negative"))?;
    Ok(Duration::from_nanos(ns))
}

/// `KqueueSelector.select`: `kqueue.control(None, n, max(timeout, 0))`.
fn kqueue_timeout(timeout: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let py = timeout.py();
    // kqueue.control replaces whatever went wrong in the conversion.
    let refused = |_: PyErr| match timeout.get_type().name() {
        Ok(name) => PyTypeError::new_err(format!(
            "timeout argument must be a number or None, got {name}"
        )),
        Err(e) => e,
    };
    let ns = if let Ok(float) = timeout.cast_exact::<PyFloat>() {
        let seconds = float.value();
        if 0.0 > seconds {
            0
        } else {
            ns_from_f64(py, seconds, NS_PER_SEC).map_err(refused)?
        }
    } else if is_plain_int(timeout) {
        match timeout.extract::<i64>() {
            Ok(seconds) if seconds < 0 => 0,
            Ok(seconds) => ns_from_i64(py, seconds, NS_PER_SEC).map_err(refused)?,
            Err(_) if timeout.lt(0)? => 0,
            Err(e) => return Err(refused(e)),
        }
    } else {
        let seconds = max_zero(timeout)?;
        // Its TypeError's message is replaced as well.
        ns_from_object(&seconds, NS_PER_SEC, "").map_err(refused)?
    };
    // The timespec's check (only an odd type gets a negative value here).
    let ns =
        u64::try_from(ns).map_err(|_| PyValueError::new_err("timeout must be positive or None"))?;
    Ok(Duration::from_nanos(ns))
}

/// `max(timeout, 0)`, in Python: it compares `0 > timeout`, and keeps
/// `timeout` unless that holds.
fn max_zero<'py>(timeout: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let zero = 0i32.into_pyobject(timeout.py())?.into_any();
    Ok(if zero.gt(timeout)? {
        zero
    } else {
        timeout.clone()
    })
}

/// `PollSelector.select` (and `DevpollSelector.select`): zero if
/// `timeout <= 0`, else `poll.poll(math.ceil(timeout * 1e3))`, whose call
/// takes `ms_min..=INT_MAX` milliseconds.
fn poll_timeout(timeout: &Bound<'_, PyAny>, ms_min: i64) -> PyResult<Option<Duration>> {
    let py = timeout.py();
    let ns = match plain_ceil_ms(timeout)? {
        Plain::Other => match generic_ceil_ms(timeout)? {
            None => return Ok(Some(Duration::ZERO)),
            Some(ms) => ns_from_object(&ms, NS_PER_MS, "timeout must be an integer or None")?,
        },
        Plain::Zero => return Ok(Some(Duration::ZERO)),
        // math.ceil gives an int; poll.poll reads it with PyLong_AsLongLong.
        Plain::CeilMs(ms) if !(-PYTIME_BOUND..PYTIME_BOUND).contains(&ms) => {
            return Err(pytime_overflow(py, Overflow::Int))
        }
        Plain::CeilMs(ms) => ns_from_i64(py, ms as i64, NS_PER_MS)?,
    };
    // _PyTime_AsMilliseconds(_PyTime_ROUND_TIMEOUT): away from zero.
    let ms = if ns >= 0 {
        ceil_ms(ns)
    } else {
        ns.div_euclid(NS_PER_MS)
    };
    poller_ms(ms, ms_min)
}

/// `EpollSelector.select`: zero if `timeout <= 0`, else
/// `epoll.poll(math.ceil(timeout * 1e3) * 1e-3)`.
fn epoll_timeout(timeout: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    let py = timeout.py();
    let ns = match plain_ceil_ms(timeout)? {
        Plain::Other => match generic_ceil_ms(timeout)? {
            None => return Ok(Some(Duration::ZERO)),
            Some(ms) => {
                let seconds = ms.mul(1e-3)?;
                ns_from_object(&seconds, NS_PER_SEC, "timeout must be an integer or None")?
            }
        },
        Plain::Zero => return Ok(Some(Duration::ZERO)),
        // `int * 1e-3` is a float (the int is a double's value: exact).
        Plain::CeilMs(ms) => ns_from_f64(py, ms * 1e-3, NS_PER_SEC)?,
    };
    // _PyTime_AsMilliseconds(_PyTime_ROUND_CEILING).
    poller_ms(ceil_ms(ns), MS_MIN)
}

/// Nanoseconds in milliseconds, rounded up (towards positive infinity).
fn ceil_ms(ns: i64) -> i64 {
    ns.div_euclid(NS_PER_MS) + i64::from(ns.rem_euclid(NS_PER_MS) != 0)
}

/// poll.poll's, epoll.poll's and devpoll.poll's last step: a C int of
/// milliseconds from `ms_min` on, a negative one waiting for ever.
fn poller_ms(ms: i64, ms_min: i64) -> PyResult<Option<Duration>> {
    if !(ms_min..=MS_MAX).contains(&ms) {
        return Err(PyOverflowError::new_err("timeout is too large"));
    }
    Ok(u64::try_from(ms).ok().map(Duration::from_millis))
}

/// What `timeout <= 0` and `math.ceil(timeout * 1e3)` give for a plain
/// number.
#[derive(Debug)]
enum Plain {
    /// Not an exact float, int or bool: Python does the arithmetic.
    Other,
    /// `timeout <= 0`.
    Zero,
    /// `math.ceil(timeout * 1e3)`: a finite integral double.
    CeilMs(f64),
}

/// [`Plain`] of an exact float, int or bool.
fn plain_ceil_ms(timeout: &Bound<'_, PyAny>) -> PyResult<Plain> {
    let seconds = if let Ok(float) = timeout.cast_exact::<PyFloat>() {
        float.value()
    } else if is_plain_int(timeout) {
        match timeout.extract::<i64>() {
            Ok(seconds) if seconds <= 0 => return Ok(Plain::Zero),
            // Rounded to nearest, ties to even, as int.__float__ does.
            Ok(seconds) => seconds as f64,
            Err(_) if timeout.lt(0)? => return Ok(Plain::Zero),
            // `int * 1e3` converts the int: OverflowError("int too large
            // to convert to float") past a double.
            Err(_) => timeout.extract::<f64>()?,
        }
    } else {
        return Ok(Plain::Other);
    };
    // `NaN <= 0` is false: NaN goes on to math.ceil, which refuses it.
    if seconds <= 0.0 {
        return Ok(Plain::Zero);
    }
    let ms = seconds * 1e3;
    if ms.is_nan() {
        return Err(PyValueError::new_err("cannot convert float NaN to integer"));
    }
    if ms.is_infinite() {
        return Err(PyOverflowError::new_err(
            "cannot convert float infinity to integer",
        ));
    }
    Ok(Plain::CeilMs(ms.ceil()))
}

/// `None` if `timeout <= 0`, else `math.ceil(timeout * 1e3)`, in Python.
fn generic_ceil_ms<'py>(timeout: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = timeout.py();
    if timeout.le(0i32)? {
        return Ok(None);
    }
    static CEIL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let ceil = CEIL.import(py, "math", "ceil")?;
    Ok(Some(ceil.call1((timeout.mul(1e3f64)?,))?))
}

/// An exact int or bool: its arithmetic cannot have been overridden.
fn is_plain_int(timeout: &Bound<'_, PyAny>) -> bool {
    timeout.is_exact_instance_of::<PyInt>() || timeout.is_exact_instance_of::<PyBool>()
}

/// `_PyTime_FromSecondsObject` / `_PyTime_FromMillisecondsObject` with
/// `_PyTime_ROUND_TIMEOUT`, `unit` nanoseconds per unit: a float (or
/// subclass) by its value, anything else as `PyLong_AsLongLong` takes it
/// (`__index__`; on 3.9 also `__int__`, see [`as_long_long`]), whose
/// TypeError becomes the caller's `type_error`.
fn ns_from_object(value: &Bound<'_, PyAny>, unit: i64, type_error: &str) -> PyResult<i64> {
    let py = value.py();
    if let Ok(float) = value.cast::<PyFloat>() {
        return ns_from_f64(py, float.value(), unit);
    }
    let number = as_long_long(value).map_err(|e| {
        if e.is_instance_of::<PyOverflowError>(py) {
            pytime_overflow(py, Overflow::Int)
        } else if e.is_instance_of::<PyTypeError>(py) {
            PyTypeError::new_err(type_error.to_owned())
        } else {
            e
        }
    })?;
    ns_from_i64(py, number, unit)
}

/// `PyLong_AsLongLong(value)`, safely: an int, or what `__index__` gives;
/// and on CPython 3.9, whose `PyLong_AsLongLong` still falls back on
/// `__int__`, what that gives, with 3.9's DeprecationWarning.
fn as_long_long(value: &Bound<'_, PyAny>) -> PyResult<i64> {
    let py = value.py();
    match value.extract::<i64>() {
        Err(e)
            if e.is_instance_of::<PyTypeError>(py)
                && py.version_info() < (3, 10)
                && !value.hasattr(intern!(py, "__index__"))?
                && value.hasattr(intern!(py, "__int__"))? =>
        {
            let message = format!(
                "an integer is required (got type {}).  Implicit conversion to integers \
                 using __int__ is deprecated, and may be removed in a future version of Python.",
                value.get_type().name()?
            );
            let category = py.get_type::<PyDeprecationWarning>();
            PyErr::warn(py, &category, &std::ffi::CString::new(message)?, 1)?;
            let int = value.call_method0(intern!(py, "__int__"))?;
            if !int.is_instance_of::<PyInt>() {
                let name = int.get_type().name()?;
                return Err(PyTypeError::new_err(format!(
                    "__int__ returned non-int (type {name})"
                )));
            }
            int.extract::<i64>()
        }
        result => result,
    }
}

/// CPython's conversion of a double of `unit`s to nanoseconds, rounded
/// away from zero.
fn ns_from_f64(py: Python<'_>, value: f64, unit: i64) -> PyResult<i64> {
    if value.is_nan() {
        return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
    }
    let ns = value * unit as f64;
    let ns = if ns >= 0.0 { ns.ceil() } else { ns.floor() };
    if !(-PYTIME_BOUND..PYTIME_BOUND).contains(&ns) {
        return Err(pytime_overflow(py, Overflow::Float));
    }
    // Integral and in range: exact.
    Ok(ns as i64)
}

/// CPython's conversion of an int64 of `unit`s to nanoseconds.
fn ns_from_i64(py: Python<'_>, value: i64, unit: i64) -> PyResult<i64> {
    value
        .checked_mul(unit)
        .ok_or_else(|| pytime_overflow(py, Overflow::Int))
}

/// Which of the interpreter's two messages a `_PyTime_t` overflow has.
#[derive(Debug, Clone, Copy)]
enum Overflow {
    /// An int past int64 nanoseconds.
    Int,
    /// A float past them.
    Float,
}

/// The `OverflowError` the interpreter raises for a time past `_PyTime_t`.
///
/// Its message depends on the version: "timestamp too large to convert to
/// C _PyTime_t" (3.9, 3.10), for floats "timestamp out of range for
/// platform time_t" from 3.11, for ints "... C PyTime_t" from 3.13. So
/// it is taken, once, from the interpreter itself: a free lock's
/// `acquire(True, timeout)` converts its timeout with the function
/// `select.select` and `epoll.poll` use (and returns at once: the lock is
/// free), and 2**64 - 1 and infinity are past any `_PyTime_t`.
fn pytime_overflow(py: Python<'_>, which: Overflow) -> PyErr {
    static INT: PyOnceLock<String> = PyOnceLock::new();
    static FLOAT: PyOnceLock<String> = PyOnceLock::new();
    let message = match which {
        Overflow::Int => INT.get_or_init(py, || {
            provoked_message(py, PyInt::new(py, u64::MAX).into_any())
                .unwrap_or_else(|| "timestamp too large to convert to C _PyTime_t".to_owned())
        }),
        Overflow::Float => FLOAT.get_or_init(py, || {
            provoked_message(py, PyFloat::new(py, f64::INFINITY).into_any())
                .unwrap_or_else(|| "timestamp out of range for platform time_t".to_owned())
        }),
    };
    PyOverflowError::new_err(message.clone())
}

/// The message of the `OverflowError` that a free lock's
/// `acquire(True, timeout)` raises, if it does.
fn provoked_message(py: Python<'_>, timeout: Bound<'_, PyAny>) -> Option<String> {
    let lock = py
        .import(intern!(py, "_thread"))
        .and_then(|thread| thread.call_method0(intern!(py, "allocate_lock")))
        .ok()?;
    match lock.call_method1(intern!(py, "acquire"), (true, timeout)) {
        Err(e) if e.is_instance_of::<PyOverflowError>(py) => {
            e.value(py).str().ok().map(|s| s.to_string())
        }
        _ => None,
    }
}
