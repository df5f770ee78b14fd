"""The backends: rselectors has the standard library's selector classes,
exactly those this platform's standard library has, and each follows the
rules of CPython's class of that backend. The rules of backends this
machine lacks (kqueue, /dev/poll) are checked through the native module's
`_timeout_ns`, which reads a timeout as a backend's select() would."""

import math
import selectors
from fractions import Fraction

import pytest

import rselectors
from conftest import BACKEND_CLASSES, CLASS_NAMES
from test_limits import TIMEOUTS, FloatSubclass
from test_semantics import outcome

_timeout_ns = rselectors._rselectors._timeout_ns


def test_class_set_is_the_standard_librarys():
    stdlib = {name for name in CLASS_NAMES.values() if hasattr(selectors, name)}
    ours = {name for name in CLASS_NAMES.values() if hasattr(rselectors, name)}
    assert ours == stdlib == set(BACKEND_CLASSES)
    assert {name for name in rselectors.__all__ if name in CLASS_NAMES.values()} == stdlib
    assert rselectors.DefaultSelector.__name__ == selectors.DefaultSelector.__name__
    assert getattr(rselectors, rselectors.DefaultSelector.__name__) is rselectors.DefaultSelector


def test_this_linux_machine_has_epoll_poll_and_select():
    # What the suite runs on here; the test above holds on any platform.
    if not hasattr(selectors, "EpollSelector"):
        pytest.skip("not a Linux machine")
    assert rselectors._rselectors.BACKENDS == ("select", "poll", "epoll")
    assert rselectors.DefaultSelector is rselectors.EpollSelector
    assert not hasattr(rselectors, "KqueueSelector")
    assert not hasattr(rselectors, "DevpollSelector")


def test_fileno_and_its_closed_error_match(pair):
    std_cls, our_cls = pair
    std, ours = std_cls(), our_cls()
    try:
        assert hasattr(ours, "fileno") == hasattr(std, "fileno")
        if not hasattr(ours, "fileno"):
            return
        assert ours.fileno() >= 0
    finally:
        std.close()
        ours.close()
    # "I/O operation on closed epoll object", kqueue's, devpoll's.
    assert outcome(ours.fileno) == outcome(std.fileno)


class NegativeAfterAll:
    """A number whose `timeout <= 0` and `0 > timeout` are False, yet whose
    value (in milliseconds or seconds) is negative: what reaches the
    wrapped calls' own checks."""

    def __le__(self, other):
        return False

    def __lt__(self, other):
        return False

    def __gt__(self, other):
        return False

    def __mul__(self, other):
        return self

    def __ceil__(self):
        return -5

    def __index__(self):
        return -5


def test_devpoll_reads_timeouts_as_poll_does():
    # DevpollSelector.select is PollSelector's; devpoll.poll takes the
    # milliseconds poll.poll takes, but no negative count below -1.
    for timeout in TIMEOUTS:
        assert outcome(lambda: _timeout_ns("devpoll", timeout)) == \
            outcome(lambda: _timeout_ns("poll", timeout)), timeout
    assert _timeout_ns("poll", NegativeAfterAll()) is None  # waits for ever
    assert outcome(lambda: _timeout_ns("devpoll", NegativeAfterAll())) == \
        (OverflowError, ("timeout is too large",))


def test_kqueue_reads_timeouts_as_select_does_but_for_its_errors():
    # KqueueSelector.select hands max(timeout, 0) seconds to kqueue.control,
    # as SelectSelector hands them to select.select, with the same
    # conversion; kqueue.control turns any failure of that conversion into
    # one TypeError naming the type.
    for timeout in TIMEOUTS:
        select = outcome(lambda: _timeout_ns("select", timeout))
        kqueue = outcome(lambda: _timeout_ns("kqueue", timeout))
        converted = select[0] in ("ok", OverflowError, ValueError) or \
            select == (TypeError, ("timeout must be a float or None",))
        if select[0] != "ok" and converted:
            name = type(timeout).__name__
            select = (TypeError, (f"timeout argument must be a number or None, got {name}",))
        assert kqueue == select, timeout
    assert _timeout_ns("kqueue", 1.5) == 1_500_000_000
    assert _timeout_ns("kqueue", 1e-10) == 1  # rounded up
    assert _timeout_ns("kqueue", FloatSubclass(0.25)) == 250_000_000
    assert _timeout_ns("kqueue", -3) == 0
    for timeout, name in [(1e300, "float"), (math.nan, "float"), (2**64, "int"),
                          (Fraction(1, 3), "Fraction"),
                          (FloatSubclass(math.inf), "FloatSubclass")]:
        assert outcome(lambda: _timeout_ns("kqueue", timeout)) == \
            (TypeError, (f"timeout argument must be a number or None, got {name}",))
    assert outcome(lambda: _timeout_ns("kqueue", NegativeAfterAll())) == \
        (ValueError, ("timeout must be positive or None",))


def test_every_backend_here_has_a_timeout_rule():
    for name in rselectors._rselectors.BACKENDS:
        assert _timeout_ns(name, 0) == 0
    with pytest.raises(ValueError):
        _timeout_ns("no such backend", 0)
