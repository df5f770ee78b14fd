"""Numbers past what the system calls take, next to the standard library:
descriptors that do not fit a C int. Each backend of the standard library
has its own rules here; rselectors follows them."""

import selectors

import pytest

import rselectors
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


@pytest.mark.parametrize("name", ["PollSelector", "EpollSelector", "DefaultSelector"])
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
