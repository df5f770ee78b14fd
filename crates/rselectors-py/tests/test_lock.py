"""The lock inside the selector: Python code that calls back into the
selector from the middle of a call (a ``fileno()``, a finalizer), close()
while another thread waits, an unregister while it waits. A deadlock here
would hang the interpreter with the GIL held, so those cases run in a
child process with a time limit."""

import subprocess
import sys
import textwrap

import pytest

import rselectors
from conftest import CLASS_NAMES
from test_threads_signals import WAIT, Waiter

READ, WRITE = rselectors.EVENT_READ, rselectors.EVENT_WRITE


def run_bounded(code):
    """Runs `code` in a fresh interpreter, at most WAIT seconds; returns its
    standard output."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("name", rselectors._rselectors.BACKENDS)
def test_fileno_calling_back_into_the_selector(name):
    out = run_bounded(f"""
        import socket, rselectors
        sel = rselectors.{CLASS_NAMES[name]}()
        other, peer = socket.socketpair()
        sel.register(other, rselectors.EVENT_READ, "other")

        class Reentrant:
            # Every call on it runs Python code that uses the same selector.
            def __init__(self, sock):
                self.sock = sock
                self.calls = 0
            def fileno(self):
                self.calls += 1
                assert sel.get_key(other).fd == other.fileno()
                assert sel.get_map().get(other) is sel.get_key(other)
                assert other in sel.get_map() and len(sel.get_map()) >= 1
                list(sel.get_map().items())
                sel.modify(other, rselectors.EVENT_READ, self.calls)
                sel.select(0)
                return self.sock.fileno()

        a, b = socket.socketpair()
        f = Reentrant(a)
        key = sel.register(f, rselectors.EVENT_READ, "f")
        assert sel.get_key(f) is key
        assert sel.modify(f, rselectors.EVENT_READ | rselectors.EVENT_WRITE, "g").data == "g"
        assert sel.get_map()[f].data == "g"
        assert sel.unregister(f).data == "g"
        sel.close()
        print("ok", f.calls)
    """)
    assert out.startswith("ok ")


def test_finalizers_calling_back_into_the_selector():
    # The last reference to a key's data goes at unregister, modify and
    # close: its finalizer runs after the lock is released.
    out = run_bounded("""
        import gc, socket, rselectors
        for cls in (rselectors.SelectSelector, rselectors.PollSelector, rselectors.DefaultSelector):
            sel = cls()
            other, peer = socket.socketpair()
            sel.register(other, rselectors.EVENT_READ, "other")
            seen = []

            class Data:
                def __del__(self):
                    m = sel.get_map()
                    seen.append(None if m is None else len(m))
                    if m is not None:
                        sel.get_key(other)

            a, b = socket.socketpair()
            sel.register(a, rselectors.EVENT_READ, Data())
            sel.modify(a, rselectors.EVENT_READ, Data())     # the first Data goes
            sel.modify(a, rselectors.EVENT_WRITE, "plain")   # the second goes
            sel.register(b, rselectors.EVENT_READ, Data())
            sel.unregister(b)                                # the third goes
            sel.register(b, rselectors.EVENT_READ, Data())
            sel.close()                                      # the fourth goes
            gc.collect()
            assert len(seen) == 4, seen
            for s in (other, peer, a, b):
                s.close()
        print("ok")
    """)
    assert out == "ok\n"


def test_close_while_another_thread_selects(ours, socketpair):
    # As CPython's: the wait runs to its end (here its timeout), then
    # select() returns [] (nothing is registered any more); no exception.
    rd, wr = socketpair()
    ours.register(rd, READ)
    waiter = Waiter(ours, timeout=0.5)
    waiter.start()
    waiter.wait_until_selecting()
    ours.close()
    waiter.join(WAIT)
    assert not waiter.is_alive()
    assert waiter.error is None and waiter.result == []
    with pytest.raises(RuntimeError, match="Selector is closed"):
        ours.select(0)


def test_close_then_ready_while_another_thread_selects(ours, socketpair):
    # The file becomes ready after close(): the wait may see it, the key
    # is never delivered.
    rd, wr = socketpair()
    ours.register(rd, READ)
    waiter = Waiter(ours, timeout=2)
    waiter.start()
    waiter.wait_until_selecting()
    ours.close()
    wr.send(b"x")
    waiter.join(WAIT)
    assert not waiter.is_alive()
    assert waiter.error is None and waiter.result == []


def test_unregistered_while_waiting_is_not_delivered(ours, socketpair):
    gone_rd, gone_wr = socketpair()
    stay_rd, stay_wr = socketpair()
    ours.register(gone_rd, READ, "gone")
    stay_key = ours.register(stay_rd, READ, "stay")
    waiter = Waiter(ours, timeout=2)
    waiter.start()
    waiter.wait_until_selecting()
    ours.unregister(gone_rd)
    gone_wr.send(b"x")  # a snapshot wait (poll, select) wakes up on it
    stay_wr.send(b"x")
    waiter.join(WAIT)
    assert not waiter.is_alive() and waiter.error is None
    assert all(key.data != "gone" for key, _ in waiter.result)
    # What the wait did not report, the next select does.
    assert ours.select(0) == [(stay_key, READ)]


def test_concurrent_registers_never_find_the_selector_busy(ours, socketpair):
    # Many threads at once on one selector: each call sees it free.
    import threading

    errors = []
    pairs = [socketpair() for _ in range(8)]
    start = threading.Barrier(len(pairs))

    def worker(rd):
        try:
            start.wait(WAIT)
            for i in range(300):
                ours.register(rd, READ, i)
                ours.modify(rd, READ | WRITE, i)
                ours.get_map().get(rd)
                ours.unregister(rd)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(rd,)) for rd, _ in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 3)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and len(ours.get_map()) == 0
