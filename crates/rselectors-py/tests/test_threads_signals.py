"""select() releases the GIL, lets other threads use the selector while it
waits, and handles signals as CPython does (PEP 475)."""

import gc
import inspect
import signal
import sys
import threading
import time

import pytest

import rselectors

READ, WRITE = rselectors.EVENT_READ, rselectors.EVENT_WRITE

# Every wait in these tests ends by itself: a broken select() fails a test,
# it does not hang the run.
WAIT = 10.0


class Waiter(threading.Thread):
    """A thread that calls sel.select(timeout) once and keeps the result."""

    def __init__(self, sel, timeout=WAIT):
        super().__init__(daemon=True)
        self.sel, self.timeout = sel, timeout
        self.result = self.error = None
        self.elapsed = None

    def run(self):
        start = time.monotonic()
        try:
            self.result = self.sel.select(self.timeout)  # WAITING LINE
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        self.elapsed = time.monotonic() - start

    def wait_until_selecting(self):
        """Returns once the thread's Python frame is at the select() call."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(self.ident)
            if (frame is not None and frame.f_code is Waiter.run.__code__
                    and frame.f_lineno == Waiter.WAITING_LINE):
                # Let it reach the system call (if it never does, the
                # checks below still hold, they just prove less).
                time.sleep(0.05)
                return
            time.sleep(0.005)
        raise AssertionError("the waiter never reached select()")


def _line_of(function, marker):
    lines, first = inspect.getsourcelines(function)
    return first + next(i for i, line in enumerate(lines) if marker in line)


Waiter.WAITING_LINE = _line_of(Waiter.run, "# WAITING LINE")


def test_other_threads_use_the_selector_during_select(ours, socketpair):
    wake_rd, wake_wr = socketpair()
    wake_key = ours.register(wake_rd, READ, "wake")
    waiter = Waiter(ours)
    waiter.start()
    waiter.wait_until_selecting()

    # The GIL is free and the selector is not borrowed: all of this runs
    # while the other thread is blocked in select().
    rd, wr = socketpair()
    key = ours.register(rd, READ, "other")
    assert len(ours.get_map()) == 2 and ours.get_key(rd) is key
    assert sorted(k.data for k in ours.get_map().values()) == ["other", "wake"]
    # (Not ready for anything: an event here would end the wait early.)
    assert ours.modify(rd, READ, "changed").data == "changed"
    assert ours.unregister(rd).data == "changed"
    assert waiter.is_alive(), "select() returned without an event"

    wake_wr.send(b"!")
    waiter.join(WAIT)
    assert not waiter.is_alive() and waiter.error is None
    assert waiter.result == [(wake_key, READ)]
    assert waiter.elapsed < WAIT - 1


@pytest.mark.skipif(not hasattr(rselectors, "EpollSelector"), reason="no epoll here")
def test_epoll_sees_registrations_made_during_select(socketpair):
    with rselectors.EpollSelector() as sel:
        waiter = Waiter(sel)
        waiter.start()
        waiter.wait_until_selecting()
        rd, wr = socketpair()
        wr.send(b"ready already")
        key = sel.register(rd, READ)
        waiter.join(WAIT)
        assert waiter.result == [(key, READ)]
        assert waiter.elapsed < WAIT - 1


def test_close_during_select(ours, socketpair):
    rd, wr = socketpair()
    ours.register(rd, READ)
    waiter = Waiter(ours)
    waiter.start()
    waiter.wait_until_selecting()
    ours.close()
    assert ours.get_map() is None
    wr.send(b"x")  # wakes the wait, whose results are dropped
    waiter.join(WAIT)
    assert not waiter.is_alive() and waiter.error is None
    assert waiter.result == []
    assert waiter.elapsed < WAIT - 1


@pytest.fixture
def alarm():
    """Installs a SIGALRM handler and a timer; restores both afterwards."""
    previous = signal.getsignal(signal.SIGALRM)

    def start(handler, first, interval=0.0):
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, first, interval)

    yield start
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


class Interrupted(Exception):
    pass


def test_raising_signal_handler_ends_select(ours, socketpair, alarm):
    rd, _ = socketpair()
    ours.register(rd, READ)

    def handler(signum, frame):
        raise Interrupted

    alarm(handler, 0.2)
    start = time.monotonic()
    with pytest.raises(Interrupted):
        ours.select(WAIT)
    assert time.monotonic() - start < WAIT / 2


def test_raising_signal_handler_ends_a_blocking_select(ours, socketpair, alarm):
    # select(None): only the exception can end it (or, if it is lost, the
    # watchdog's write, which fails the test instead of hanging it).
    rd, wr = socketpair()
    ours.register(rd, READ)
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        if len(calls) == 3:
            raise Interrupted

    watchdog = threading.Timer(WAIT, wr.send, args=(b"watchdog",))
    watchdog.start()
    try:
        alarm(handler, 0.1, 0.1)
        with pytest.raises(Interrupted):
            ours.select()
    finally:
        watchdog.cancel()
    assert len(calls) == 3


def test_quiet_signal_handler_resumes_with_remaining_time(ours, socketpair, alarm):
    rd, _ = socketpair()
    ours.register(rd, READ)
    calls = []

    def handler(signum, frame):
        calls.append(time.monotonic())
        if len(calls) == 5:
            signal.setitimer(signal.ITIMER_REAL, 0)

    # Five signals over 0.75 s. Resuming with the remaining time ends the
    # wait at 1.0 s; restarting the full timeout would end it at 1.75 s.
    alarm(handler, 0.15, 0.15)
    start = time.monotonic()
    assert ours.select(1.0) == []
    elapsed = time.monotonic() - start
    assert len(calls) == 5
    assert 1.0 <= elapsed < 1.5, elapsed


def test_signals_do_not_end_select_in_another_thread(socketpair, alarm):
    # The signal may interrupt the waiting thread's system call; it must
    # resume (the handler runs in the main thread).
    with rselectors.DefaultSelector() as sel:
        rd, _ = socketpair()
        sel.register(rd, READ)
        calls = []
        waiter = Waiter(sel, timeout=0.6)
        waiter.start()
        alarm(lambda signum, frame: calls.append(signum), 0.05, 0.05)
        waiter.join(WAIT)
        signal.setitimer(signal.ITIMER_REAL, 0)
        assert waiter.error is None and waiter.result == []
        assert waiter.elapsed >= 0.6
        assert calls


def test_threads_hammering_one_selector(ours, socketpair):
    # Frequent thread switches, finalizers and garbage collections while
    # several threads use one selector: no call may find it "already
    # borrowed", whatever Python code runs in the middle of another call.
    class Data:
        def __del__(self):
            gc_garbage.append(1)  # Python code at deallocation

    gc_garbage = []
    errors = []
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def worker(rd):
        try:
            for i in range(500):
                ours.register(rd, READ, Data())
                ours.modify(rd, READ | WRITE, [Data()])
                ours.get_key(rd)
                for _key in ours.get_map().values():
                    pass
                ours.select(0)
                ours.unregister(rd)
                if i % 50 == 0:
                    gc.collect()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(socketpair()[0],)) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(previous)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(ours.get_map()) == 0 and gc_garbage
