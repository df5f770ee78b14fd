"""rselectors next to the standard library: same names, same keys, same
exceptions with the same messages, same results."""

import collections.abc
import errno
import gc
import os
import selectors
import tempfile
import time
import weakref

import pytest

import rselectors
from conftest import here

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def outcome(call):
    """What a call did: ('ok', result) or (exception type, args)."""
    try:
        return ("ok", call())
    except Exception as e:  # noqa: BLE001 - compared, not handled
        return (type(e), e.args)


def test_public_names():
    assert rselectors.EVENT_READ == 1 and rselectors.EVENT_WRITE == 2
    assert rselectors.SelectorKey is selectors.SelectorKey
    assert rselectors.BaseSelector is selectors.BaseSelector
    for name in ["EVENT_READ", "EVENT_WRITE", "SelectorKey", "BaseSelector",
                 "SelectSelector", "DefaultSelector"]:
        assert name in rselectors.__all__ and hasattr(selectors, name), name


def test_classes_are_base_selectors(pair):
    std_cls, our_cls = pair
    with our_cls() as sel:
        assert isinstance(sel, selectors.BaseSelector)
        assert isinstance(sel, rselectors.BaseSelector)
        assert issubclass(our_cls, selectors.BaseSelector)
        # fileno() exactly where the standard library has it (epoll).
        assert hasattr(sel, "fileno") == hasattr(std_cls, "fileno")
        if hasattr(sel, "fileno"):
            assert sel.fileno() >= 0


def test_key_is_the_named_tuple(pair, socketpair):
    std_cls, our_cls = pair
    rd, wr = socketpair()
    with std_cls() as std, our_cls() as ours:
        theirs = std.register(rd, READ, "data")
        key = ours.register(rd, READ, "data")
        assert type(key) is selectors.SelectorKey
        assert key == theirs and repr(key) == repr(theirs)
        assert key.fileobj is rd and key.fd == rd.fileno()
        assert key.events == READ and key.data == "data"
        fileobj, fd, events, data = key
        assert (fileobj, fd, events, data) == (key[0], key[1], key[2], key[3])
        assert key._replace(data=1).data == 1 and key._asdict()["fd"] == fd
        # register, get_key, the map and select() hand out the same object.
        assert ours.get_key(rd) is key and ours.get_map()[rd] is key
        wr.send(b"x")
        [(ready, mask)] = ours.select(5)
        assert ready is key and mask == READ


BAD_FILEOBJ = object()


class BadFileno:
    def __init__(self, result=None, exc=None):
        self.result, self.exc = result, exc

    def fileno(self):
        if self.exc is not None:
            raise self.exc
        return self.result


BAD_FILENO_STR = BadFileno(result="x")
BAD_FILENO_TYPE = BadFileno(exc=TypeError("no"))
BAD_FILENO_OS = BadFileno(exc=OSError(errno.EBADF, "closed"))
NEGATIVE_FILENO = BadFileno(result=-3)


@pytest.mark.parametrize(
    "fileobj, events",
    [
        ("rd", 0),
        ("rd", 4),
        ("rd", 999999),
        ("rd", -1),
        ("rd", None),
        ("rd", "x"),
        (-10, READ),
        (BAD_FILEOBJ, READ),
        ("not a file", READ),
        (BAD_FILENO_STR, READ),
        (BAD_FILENO_TYPE, READ),
        (BAD_FILENO_OS, READ),
        (NEGATIVE_FILENO, READ),
        (BAD_FILEOBJ, 0),
    ],
)
def test_register_errors_match(pair, socketpair, fileobj, events):
    std_cls, our_cls = pair
    rd, _ = socketpair()
    fileobj = rd if fileobj == "rd" else fileobj
    with std_cls() as std, our_cls() as ours:
        expected = outcome(lambda: std.register(fileobj, events))
        assert expected[0] != "ok"
        assert outcome(lambda: ours.register(fileobj, events)) == expected
        assert len(ours.get_map()) == 0


def test_lookup_errors_match(pair, socketpair):
    std_cls, our_cls = pair
    rd, wr = socketpair()
    with std_cls() as std, our_cls() as ours:
        for sel in (std, ours):
            sel.register(rd, READ)
        calls = [
            lambda s: s.register(rd, READ),  # twice
            lambda s: s.register(rd.fileno(), WRITE),  # same fd, other object
            lambda s: s.unregister(999999),
            lambda s: s.unregister(wr),
            lambda s: s.unregister(BAD_FILEOBJ),
            lambda s: s.modify(999999, READ),
            lambda s: s.modify(999999, 99),  # lookup before the mask check
            lambda s: s.modify(wr, READ),
            lambda s: s.modify(BAD_FILEOBJ, READ),
            lambda s: s.get_key(999999),
            lambda s: s.get_key(wr),
            lambda s: s.get_key(BAD_FILEOBJ),
            lambda s: s.get_map()[999999],
            lambda s: s.get_map()[BAD_FILEOBJ],
        ]
        for call in calls:
            assert outcome(lambda: call(ours)) == outcome(lambda: call(std))


def test_map_get_and_contains_match(pair, socketpair):
    """get_map().get() and `in` (native here) give what the standard
    library's mapping gives: the key, the default, or its exception."""
    std_cls, our_cls = pair
    rd, wr = socketpair()
    with std_cls() as std, our_cls() as ours:
        for sel in (std, ours):
            sel.register(rd, READ, "data")
        for probe in (rd, rd.fileno(), wr, 999999, -1, BAD_FILEOBJ, "x"):
            for call in (
                lambda s: s.get_map().get(probe),
                lambda s: s.get_map().get(probe, "default"),
                lambda s: probe in s.get_map(),
            ):
                # Keys compare equal: the same file object, events and data.
                assert outcome(lambda: call(ours)) == outcome(lambda: call(std)), probe


def test_every_mapping_method_matches(pair, socketpair):
    """Each method of the standard library's get_map() (its own and
    collections.abc.Mapping's) gives what it gives there (iteration order
    aside: descriptor order here)."""
    std_cls, our_cls = pair
    (rd, wr), (other, _) = socketpair(), socketpair()
    with std_cls() as std, our_cls() as ours:
        for sel in (std, ours):
            sel.register(rd, READ, "r")
            sel.register(wr, WRITE, "w")
        s, o = std.get_map(), ours.get_map()
        assert isinstance(o, collections.abc.Mapping)
        assert len(o) == len(s) == 2 and bool(o) and bool(s)
        assert sorted(o) == sorted(s) and sorted(o.keys()) == sorted(s.keys())
        assert o.keys() == s.keys() and o.items() == s.items()
        assert sorted(o.values(), key=lambda k: k.fd) == sorted(s.values(), key=lambda k: k.fd)
        assert sorted(o.items()) == sorted(s.items())
        assert o == s and s == o and not (o != s) and o == dict(s.items())
        assert dict(o) == dict(s)
        for probe in (rd, wr, rd.fileno(), other, 999999):
            assert outcome(lambda: o[probe]) == outcome(lambda: s[probe])
            assert outcome(lambda: o.get(probe)) == outcome(lambda: s.get(probe))
            assert (probe in o) == (probe in s)
            assert (probe in o.keys()) == (probe in s.keys())
        assert (o[rd] in o.values()) and (rd.fileno(), o[rd]) in o.items()
        assert outcome(lambda: reversed(o)) == outcome(lambda: reversed(s))
        for sel in (std, ours):
            sel.unregister(wr)
        assert o == s and len(o) == 1


def test_unregister_and_modify_twice(pair, socketpair):
    std_cls, our_cls = pair
    rd, _ = socketpair()
    with std_cls() as std, our_cls() as ours:
        for sel in (std, ours):
            sel.register(rd, READ)
        for call in [
            lambda s: s.unregister(rd),
            lambda s: s.unregister(rd),
            lambda s: s.modify(rd, WRITE),
        ]:
            expected = outcome(lambda: call(std))
            got = outcome(lambda: call(ours))
            assert got[0] == expected[0]
            assert got[0] != "ok" or got[1] == expected[1]


def test_modify(ours, socketpair):
    rd, wr = socketpair()
    d1, d2 = object(), object()
    key = ours.register(rd, READ, d1)
    # No change: the same key object.
    assert ours.modify(rd, READ, d1) is key
    # New data: a new key, no system call needed.
    key2 = ours.modify(rd, READ, d2)
    assert key2 is not key and key2.data is d2 and key2.events == READ
    assert ours.get_key(rd) is key2
    # New events; by descriptor number the key keeps the registered object.
    key3 = ours.modify(rd.fileno(), WRITE, d2)
    assert key3.fileobj is rd and key3.events == WRITE
    assert ours.select(5) == [(key3, WRITE)]
    # Read and write at once: one entry per key.
    wr.send(b"x")
    key4 = ours.modify(rd, READ | WRITE)
    assert key4.data is None
    assert ours.select(5) == [(key4, READ | WRITE)]


def test_modify_invalid_events_keeps_registration(ours, socketpair):
    # Stricter than CPython, whose poll/epoll selectors accept any mask here
    # and whose select selector unregisters before failing.
    rd, _ = socketpair()
    key = ours.register(rd, READ)
    with pytest.raises(ValueError, match="Invalid events: 0"):
        ours.modify(rd, 0)
    assert ours.get_key(rd) is key


@pytest.mark.parametrize("name", here("PollSelector", "EpollSelector"))
def test_modify_refused_by_kernel_unregisters(name, socketpair):
    # bpo-30014 (CPython's test_modify_unregister, with a real error):
    # the descriptor was closed behind the selector's back, epoll refuses
    # EPOLL_CTL_MOD with EBADF, and the registration is gone. poll has no
    # kernel call to refuse; both libraries then keep the key.
    results = []
    for module in (selectors, rselectors):
        rd, _ = socketpair()
        fd = rd.fileno()
        with getattr(module, name)() as sel:
            sel.register(fd, READ)
            rd.close()
            got = outcome(lambda: sel.modify(fd, WRITE))
            results.append((got[0] if got[0] == "ok" else (got[0], got[1][0]),
                            outcome(lambda: sel.get_key(fd))[0]))
    assert results[0] == results[1]
    if name == "EpollSelector":
        assert results[1] == ((OSError, errno.EBADF), KeyError)


def test_closed_file_objects_are_found_by_identity(ours, socketpair):
    rd, wr = socketpair()
    key = ours.register(rd, READ)
    ours.register(wr.fileno(), WRITE)
    rd.close()
    wr.close()
    assert ours.get_key(rd) is key
    assert rd in ours.get_map()
    assert ours.unregister(rd) is key
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        ours.get_key(rd)


def test_unregister_after_fd_reuse(ours, socketpair):
    rd, wr = socketpair()
    r, w = rd.fileno(), wr.fileno()
    ours.register(r, READ)
    ours.register(w, WRITE)
    rd2, wr2 = socketpair()
    rd.close()
    wr.close()
    os.dup2(rd2.fileno(), r)
    os.dup2(wr2.fileno(), w)
    try:
        assert ours.unregister(r).fd == r
        assert ours.unregister(w).fd == w
        assert len(ours.get_map()) == 0
    finally:
        os.close(r)
        os.close(w)


def test_get_map(ours, socketpair):
    rd, wr = socketpair()
    keys = ours.get_map()
    assert ours.get_map() is keys
    assert not keys and len(keys) == 0 and list(keys) == []
    k1 = ours.register(rd, READ, "r")
    k2 = ours.register(wr, WRITE, "w")
    assert len(keys) == 2 and rd in keys and wr.fileno() in keys and 999 not in keys
    assert sorted(keys) == sorted([rd.fileno(), wr.fileno()])
    assert sorted(keys.values(), key=lambda k: k.fd) == sorted([k1, k2], key=lambda k: k.fd)
    assert dict(keys.items()) == {k1.fd: k1, k2.fd: k2}
    assert set(keys.keys()) == {k1.fd, k2.fd}
    assert keys.get(999) is None and keys.get(rd) is k1
    assert k1 in keys.values() and (k2.fd, k2) in keys.items()
    with pytest.raises(TypeError):
        keys[rd] = k1
    with pytest.raises(TypeError):
        del keys[rd]


def test_close(ours, socketpair):
    rd, wr = socketpair()
    mapping = ours.get_map()
    ours.register(rd, READ)
    ours.register(wr, WRITE)
    ours.close()
    ours.close()  # idempotent
    assert ours.get_map() is None
    with pytest.raises(RuntimeError, match="Selector is closed"):
        ours.get_key(rd)
    with pytest.raises(KeyError):
        mapping[rd]
    assert len(mapping) == 0
    # Stricter than CPython, whose behaviour here depends on the backend.
    for call in (lambda: ours.register(rd, READ), lambda: ours.unregister(rd),
                 lambda: ours.modify(rd, WRITE), lambda: ours.select(0)):
        with pytest.raises(RuntimeError, match="Selector is closed"):
            call()
    # The file objects stay open: the selector does not own them.
    wr.send(b"still open")
    assert rd.recv(100) == b"still open"


def test_context_manager(pair, socketpair):
    rd, _ = socketpair()
    with pair[1]() as sel:
        sel.register(rd, READ)
    with pytest.raises(RuntimeError):
        sel.get_key(rd)


def test_select_results_match(pair, socketpair):
    std_cls, our_cls = pair
    socks = [socketpair() for _ in range(8)]
    with std_cls() as std, our_cls() as ours:
        for i, (rd, wr) in enumerate(socks):
            for sel in (std, ours):
                sel.register(rd, READ | WRITE if i % 3 == 0 else READ, i)
                if i % 2:
                    sel.register(wr, WRITE, -i)
        for rd, wr in socks[::3]:
            wr.send(b"x")

        def normal(result):
            return sorted((key.fd, key.data, mask) for key, mask in result)

        assert normal(ours.select(5)) == normal(std.select(5))
        assert normal(ours.select(0)) == normal(std.select(0))
        assert normal(ours.select(-1)) == normal(std.select(-1))


def test_select_timeouts(ours, socketpair):
    rd, _ = socketpair()
    ours.register(rd, READ)
    start = time.monotonic()
    assert ours.select(0) == [] and ours.select(-5) == []
    assert time.monotonic() - start < 0.5
    start = time.monotonic()
    assert ours.select(0.0001) == []
    assert ours.select(0.05) == []
    elapsed = time.monotonic() - start
    assert 0.05 <= elapsed < 2.0
    assert ours.select(timeout=0.01) == []
    with pytest.raises(ValueError):
        ours.select(float("nan"))
    with pytest.raises(OverflowError):
        ours.select(float("inf"))
    with pytest.raises(TypeError):
        ours.select("1")


@pytest.mark.parametrize("name", here("PollSelector", "EpollSelector"))
def test_tiny_timeout_still_waits(name, socketpair):
    # 1e-10 s rounds up to the backend's 1 ms, never down to a busy poll.
    rd, _ = socketpair()
    with getattr(rselectors, name)() as sel:
        sel.register(rd, READ)
        start = time.monotonic()
        for _ in range(50):
            assert sel.select(1e-10) == []
        assert time.monotonic() - start >= 0.05


@pytest.mark.parametrize("name", here("SelectSelector", "PollSelector", "EpollSelector"))
def test_closed_or_huge_descriptor_is_refused(name):
    # CPython's poll and select selectors accept these and fail (or report
    # POLLNVAL) later; rselectors refuses them at register, as epoll does,
    # and sizes no table by the number.
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with getattr(rselectors, name)() as sel:
        for fd in (r, 2**31 - 1):
            with pytest.raises((OSError, ValueError)):
                sel.register(fd, READ)
        assert len(sel.get_map()) == 0


def test_empty_select(ours):
    assert ours.select(0) == []
    start = time.monotonic()
    assert ours.select(0.05) == []
    assert time.monotonic() - start >= 0.05


def test_events_object_is_kept(pair, socketpair):
    # CPython stores the events argument itself in the key.
    std_cls, our_cls = pair
    rd, _ = socketpair()
    with std_cls() as std, our_cls() as ours:
        assert ours.register(rd, True) == std.register(rd, True)
        assert ours.get_key(rd).events is True


@pytest.mark.parametrize("name", here("PollSelector", "EpollSelector"))
def test_many_descriptors(name, socketpair):
    # Past FD_SETSIZE (1024): poll and epoll have no limit.
    with getattr(rselectors, name)() as sel:
        pairs = [socketpair() for _ in range(700)]
        for rd, wr in pairs:
            sel.register(rd, READ)
            sel.register(wr, WRITE)
        assert max(k.fd for k in sel.get_map().values()) >= 1024
        assert len(sel.select(5)) == 700


def test_select_selector_refuses_large_descriptors(socketpair):
    # CPython's SelectSelector accepts them and fails in select(); ours
    # refuses at register, leaving nothing behind.
    with rselectors.SelectSelector() as sel:
        fd = os.dup2(socketpair()[0].fileno(), 1500)
        try:
            with pytest.raises(ValueError, match="out of range"):
                sel.register(fd, READ)
            assert len(sel.get_map()) == 0
        finally:
            os.close(fd)


@pytest.mark.skipif(not hasattr(selectors, "EpollSelector"), reason="no epoll here")
def test_epoll_refuses_regular_files():
    with tempfile.TemporaryFile() as f:
        for module in (selectors, rselectors):
            with module.EpollSelector() as sel:
                with pytest.raises(PermissionError) as info:
                    sel.register(f, READ)
                assert info.value.errno == errno.EPERM
                assert info.value.strerror == os.strerror(errno.EPERM)
                with pytest.raises(KeyError):
                    sel.get_key(f)


def test_cycles_through_the_selector_are_collected(ours, socketpair):
    # The data refers back to the selector (asyncio's loop does): the
    # garbage collector must see the references the native part holds.
    rd, _ = socketpair()
    sel = type(ours)()
    sel.register(rd, READ, {"selector": sel})
    ref = weakref.ref(sel)
    del sel
    gc.collect()
    assert ref() is None


def test_subclassing_and_instance_attributes(socketpair):
    class Counting(rselectors.DefaultSelector):
        def __init__(self):
            super().__init__()
            self.selects = 0

        def select(self, timeout=None):
            self.selects += 1
            return super().select(timeout)

    rd, wr = socketpair()
    with Counting() as sel:
        sel.register(wr, WRITE)
        assert len(sel.select(1)) == 1 and sel.selects == 1
