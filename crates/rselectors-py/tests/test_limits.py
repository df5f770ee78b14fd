"""Numbers past what the system calls take, next to the standard library:
descriptors that do not fit a C int, and timeouts longer than a backend
can wait. Each backend of the standard library has its own rules here (and
Python versions their own messages); rselectors follows them."""

import math
import selectors
import sys
import threading
import time
from decimal import Decimal
from fractions import Fraction

import pytest

import rselectors
from conftest import here
from test_semantics import outcome

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class FileNo:
    """A file object whose fileno() is `number`."""

    def __init__(self, number):
        self.number = number

    def fileno(self):
        return self.number

    def __repr__(self):
        return f"FileNo({self.number})"


class IntSubclass(int):
    pass


class FloatSubclass(float):
    pass


class NotANumber:
    def __repr__(self):
        return "NotANumber()"


# Past a C int: CPython's _fileobj_to_fd returns the number as it is, and
# the lookup in its dict finds nothing. Below -2**31 it is negative, so
# invalid, like any negative number.
PAST_C_INT = [
    2**31,
    2**32,
    2**63,
    2**64,
    2**100,
    IntSubclass(2**31),
    FileNo(2**31),
    FileNo(2**64),
    -2**31 - 1,
    -2**63 - 1,
    FileNo(-2**31 - 1),
    2**31 - 1,  # fits: an ordinary unregistered number, for comparison
]


@pytest.mark.parametrize("number", PAST_C_INT, ids=repr)
def test_lookups_past_c_int_match(pair, socketpair, number):
    std_cls, our_cls = pair
    rd, _ = socketpair()
    with std_cls() as std, our_cls() as ours:
        for sel in (std, ours):
            sel.register(rd, READ)
        calls = [
            lambda s: s.unregister(number),
            lambda s: s.get_key(number),
            lambda s: s.modify(number, WRITE),
            lambda s: s.modify(number, 99),  # the lookup fails first
            lambda s: s.get_map()[number],
            lambda s: number in s.get_map(),
            lambda s: s.get_map().get(number),
            lambda s: s.get_map().get(number, "default"),
            lambda s: s._fileobj_lookup(number),
        ]
        for call in calls:
            assert outcome(lambda: call(ours)) == outcome(lambda: call(std))
        # Nothing changed: the registered file object is still there.
        assert [k.fileobj for k in ours.get_map().values()] == [rd]


@pytest.mark.parametrize("name", here("PollSelector", "EpollSelector", "DefaultSelector"))
@pytest.mark.parametrize("number", [2**31, 2**64, FileNo(2**31), -2**31 - 1], ids=repr)
def test_register_past_c_int_matches(name, number):
    # poll.register and epoll.register refuse the number (OverflowError),
    # and the selector keeps nothing.
    std_cls, our_cls = getattr(selectors, name), getattr(rselectors, name)
    with std_cls() as std, our_cls() as ours:
        expected = outcome(lambda: std.register(number, READ))
        assert expected[0] is OverflowError or expected[0] is ValueError
        assert outcome(lambda: ours.register(number, READ)) == expected
        assert len(ours.get_map()) == 0 == len(std.get_map())
        assert outcome(lambda: ours.get_key(number)) == outcome(lambda: std.get_key(number))


@pytest.mark.parametrize("number", [2**31, 2**64, FileNo(2**31)], ids=repr)
def test_select_selector_refuses_past_c_int_as_select_would(number):
    # CPython's SelectSelector stores the number, then every select()
    # raises select.select's OverflowError; rselectors raises that at
    # register and keeps nothing (as it does past FD_SETSIZE).
    with selectors.SelectSelector() as std, rselectors.SelectSelector() as ours:
        std.register(number, READ)
        expected = outcome(lambda: std.select(0))
        assert expected[0] is OverflowError
        assert outcome(lambda: ours.register(number, READ)) == expected
        assert len(ours.get_map()) == 0 and ours.select(0) == []


def test_lookups_past_c_int_on_a_closed_selector(ours):
    # As for any number that is not registered: RuntimeError from the
    # calls that change registrations, KeyError from the old mapping.
    mapping = ours.get_map()
    ours.close()
    for call in (lambda: ours.unregister(2**31), lambda: ours.modify(2**31, READ),
                 lambda: ours.get_key(2**31)):
        with pytest.raises(RuntimeError, match="Selector is closed"):
            call()
    with pytest.raises(KeyError, match="2147483648 is not registered"):
        mapping[2**31]
    assert 2**31 not in mapping and mapping.get(2**64) is None


def _around(x, steps=3):
    """x and the `steps` doubles on either side of it."""
    below, above, values = x, x, [x]
    for _ in range(steps):
        below, above = math.nextafter(below, -math.inf), math.nextafter(above, math.inf)
        values += [below, above]
    return values


TIMEOUTS = [
    # Nothing to wait: zero.
    0, 0.0, -0.0, -1, -1.5, -math.inf, -(10**400), False,
    # Ordinary.
    1, 0.5, True, 1e-10, 5e-324, IntSubclass(2), FloatSubclass(0.25),
    # NaN and infinity.
    math.nan, -math.nan, math.inf, FloatSubclass(math.inf),
    # Past poll(2) and epoll_wait(2)'s INT_MAX milliseconds (~24.8 days):
    # their selectors refuse, select.select takes up to ~292 years.
    *_around(2147483.647), *_around(2147483.6465), 2147483, 2147484, 2147483.648,
    10**7, 1e7, 1e8, 9.2e9, 9223372036, 2**31, 2**32, 2**33,
    # Past _PyTime_t's 2**63 nanoseconds (messages differ per version).
    *_around(9223372036.854775), 9223372037, 9.3e9, 1e10, 1e18, 1e20, 1e300,
    2**62, 2**63 - 1, 2**63, 2**64, 10**30, 10**306, 10**400, FloatSubclass(1e300),
    # poll's milliseconds past _PyTime_t.
    *_around(9223372036854.0), 9223372036854, 9223372036855,
    # Other types go through Python's own operators.
    Fraction(1, 3), Fraction(10**20), Fraction(-1, 2), Decimal("0.5"), Decimal("-1"),
    "1", None, [], NotANumber(),
]


def _skipped_on_this_version(name, timeout):
    # CPython 3.9 converts a double of exactly 2**63 nanoseconds to
    # _PyTime_t (undefined behaviour in C; x86-64 gives -2**63, and
    # select.select then says "timeout must be non-negative"). 3.10 fixed
    # the range check to refuse it, which is what rselectors does.
    if sys.version_info >= (3, 10) or name != "SelectSelector":
        return False
    ns = timeout * 1e9 if isinstance(timeout, float) else math.nan
    return math.isfinite(ns) and math.ceil(ns) == 2**63


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.9: Decimal's __int__
@pytest.mark.parametrize("timeout", TIMEOUTS, ids=repr)
def test_timeouts_match(pair, socketpair, timeout):
    std_cls, our_cls = pair
    if _skipped_on_this_version(std_cls.__name__, timeout):
        pytest.skip("CPython 3.9's undefined conversion of 2**63 ns")
    # A readable socket: whatever timeout is accepted, select() returns at
    # once.
    rd, wr = socketpair()
    wr.send(b"x")
    with std_cls() as std, our_cls() as ours:
        for sel in (std, ours):
            sel.register(rd, READ)

        def result(sel):
            got = outcome(lambda: sel.select(timeout))
            return ("ok", [(key.fd, events) for key, events in got[1]]) if got[0] == "ok" else got

        assert result(ours) == result(std)


@pytest.mark.parametrize(
    "name, timeout",
    [
        ("SelectSelector", 9.2e9),  # ~291 years
        ("SelectSelector", 2**33),
        ("PollSelector", 2147483.647),  # INT_MAX ms
        ("EpollSelector", 2147483.647),
        ("DefaultSelector", 2147483),
    ],
)
def test_longest_timeouts_wait(name, timeout, socketpair):
    # The longest timeout each backend takes is a wait, not an error: it
    # ends when a file object becomes ready.
    if not hasattr(rselectors, name):
        pytest.skip(f"no {name} on this platform")
    rd, wr = socketpair()
    with getattr(rselectors, name)() as sel:
        key = sel.register(rd, READ)
        sender = threading.Timer(0.2, wr.send, args=(b"x",))
        sender.start()
        try:
            start = time.monotonic()
            assert sel.select(timeout) == [(key, READ)]
            assert 0.1 <= time.monotonic() - start < 10
        finally:
            sender.cancel()
