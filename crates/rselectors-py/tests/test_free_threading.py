"""The stress test of issue 21: threads hammer shared selectors of every
backend while one thread selects, with sockets becoming ready and closing.

For RSELECTORS_STRESS_SECONDS in all (default 20), split between the
backends, HAMMERS threads per backend register, modify, unregister, read
keys and the map, and iterate it; one thread selects; one closes the
shared selector now and then and puts a new one in its place. Asserted:
no call fails but as the standard library's would (never "Already
borrowed"), every thread ends (bounded joins; the whole run is a child
process with a time limit, since a deadlock could hold the GIL), no
select() that started after an unregister() returned delivers that key,
a final select() finds every ready file, and every descriptor is
released at the end. It prints calls per second, threads and backends.

The same test is what a free-threaded CPython would run; none is
installed here (see the README).
"""

import errno
import gc
import os
import socket
import subprocess
import sys
import threading
import time
import traceback

DURATION = float(os.environ.get("RSELECTORS_STRESS_SECONDS", "20"))
HAMMERS = 4
PAIRS_PER_HAMMER = 4
CLOSE_EVERY = 0.05  # seconds between two swaps of the shared selector
# Every join is bounded: a thread still alive this long after the end is
# a deadlock.
JOIN_GRACE = 30.0


def test_stress_every_backend(capsys):
    """Runs this file as a program, with a time limit."""
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__)],
        capture_output=True, text=True, timeout=DURATION + 2 * JOIN_GRACE,
    )
    with capsys.disabled():
        sys.stdout.write("\n" + done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr


def open_fds():
    """The descriptors this process has open."""
    path = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    return set(os.listdir(path))


class Token:
    """The data of one registration; records when its unregister()
    returned (time.monotonic_ns, read after the call)."""

    __slots__ = ("unregistered_at",)

    def __init__(self):
        self.unregistered_at = None


class Run:
    """One backend's run: the shared selector and what the threads saw."""

    def __init__(self, cls):
        self.cls = cls
        self.sel = cls()
        self.closed = set()  # ids of the selectors being closed or closed
        self.keep = []  # closed selectors, so that their ids stay unique
        self.stop = threading.Event()
        self.errors = []
        self.calls = []  # per thread
        self.selects = self.delivered = self.swaps = self.ebadf = 0

    def fail(self, what):
        self.errors.append(what)

    def closed_error(self, sel, e):
        """True if `e` is what a closed selector raises, and `sel` is closed."""
        return str(e) == "Selector is closed" and id(sel) in self.closed


def hammer(run, pairs):
    calls = 0
    iteration = 0
    try:
        while not run.stop.is_set():
            iteration += 1
            index = iteration % len(pairs)
            a, b = pairs[index]
            sel = run.sel
            token = Token()
            try:
                key = sel.register(a, 1, token)
                if iteration % 3 == 0:
                    b.send(b"x")  # ready for the selecting thread
                assert sel.get_key(a) is key, "get_key after register"
                m = sel.get_map()
                if m is not None:  # None once closed
                    assert m.get(a) in (key, None), "get_map().get"
                    assert a in m or id(sel) in run.closed, "in get_map()"
                    for _fd in m:
                        pass
                    for _key in m.values():
                        pass
                    dict(m.items())
                    len(m)
                    calls += 5
                sel.modify(a, 3, token)
                sel.modify(a, 1, token)
                sel.unregister(a)
                token.unregistered_at = time.monotonic_ns()
                calls += 6
            except RuntimeError as e:
                if not run.closed_error(sel, e):
                    raise
            except KeyError:
                # Only a selector closed under the sequence forgets a key.
                if id(sel) not in run.closed:
                    raise
            try:
                a.recv(4096)
            except BlockingIOError:
                pass
            if iteration % 40 == 0:
                # The peer closes (a hang-up for the next registration's
                # last moments), then a new pair replaces the old.
                b.close()
                a.close()
                pairs[index] = new_pair()
            if iteration % 500 == 0:
                gc.collect()  # traverses the selectors in use meanwhile
    except BaseException:  # noqa: BLE001 - reported by the run
        run.fail(traceback.format_exc())
    run.calls.append(calls)


def selector_loop(run, backend):
    calls = 0
    try:
        while not run.stop.is_set():
            sel = run.sel
            started = time.monotonic_ns()
            try:
                ready = sel.select(0 if calls % 4 == 0 else 0.01)
            except RuntimeError as e:
                if not run.closed_error(sel, e):
                    raise
                continue
            except OSError as e:
                # select(2) fails a wait that began with a descriptor
                # another thread closed since it unregistered it: as
                # CPython's SelectSelector.
                if backend != "select" or e.errno != errno.EBADF:
                    raise
                run.ebadf += 1
                continue
            finally:
                calls += 1
            for key, events in ready:
                token = key.data
                gone = token.unregistered_at
                if gone is not None and gone < started:
                    run.fail(f"select() that started {started - gone} ns after "
                             f"unregister() returned delivered {key}")
                if not events:
                    run.fail(f"empty events for {key}")
            run.selects += 1
            run.delivered += len(ready)
    except BaseException:  # noqa: BLE001 - reported by the run
        run.fail(traceback.format_exc())
    run.calls.append(calls)


def closer(run):
    calls = 0
    try:
        while not run.stop.wait(CLOSE_EVERY):
            old, run.sel = run.sel, run.cls()
            run.closed.add(id(old))  # before: a call may fail at once
            old.close()
            run.keep.append(old)
            run.swaps += 1
            calls += 2
    except BaseException:  # noqa: BLE001 - reported by the run
        run.fail(traceback.format_exc())
    run.calls.append(calls)


def new_pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


def final_check(cls):
    """No key lost: with nothing else going on, one select() finds every
    ready file of a fresh selector."""
    sel = cls()
    pairs = [new_pair() for _ in range(8)]
    keys = [sel.register(a, 1, i) for i, (a, _) in enumerate(pairs)]
    for _, b in pairs:
        b.send(b"x")
    found = sorted((key.data for key, _ in sel.select(5)))
    sel.close()
    for a, b in pairs:
        a.close()
        b.close()
    assert found == [key.data for key in keys], found


def stress(name, cls, seconds):
    run = Run(cls)
    pools = [[new_pair() for _ in range(PAIRS_PER_HAMMER)] for _ in range(HAMMERS)]
    threads = [threading.Thread(target=hammer, args=(run, pool)) for pool in pools]
    threads.append(threading.Thread(target=selector_loop, args=(run, name)))
    threads.append(threading.Thread(target=closer, args=(run,)))
    for t in threads:
        t.daemon = True
        t.start()
    time.sleep(seconds)
    run.stop.set()
    deadline = time.monotonic() + JOIN_GRACE
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = sum(t.is_alive() for t in threads)
    if hung:
        run.fail(f"{hung} threads still running {JOIN_GRACE} s after the end: deadlock")
    run.sel.close()
    for pool in pools:
        for a, b in pool:
            a.close()
            b.close()
    final_check(cls)
    return run, len(threads)


def main():
    import rselectors

    classes = {
        "select": "SelectSelector", "poll": "PollSelector", "epoll": "EpollSelector",
        "devpoll": "DevpollSelector", "kqueue": "KqueueSelector",
    }
    backends = list(rselectors._rselectors.BACKENDS)
    seconds = DURATION / len(backends)
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # with the GIL: switch threads often
    gc.collect()
    before = open_fds()
    failures = 0
    total_calls = 0
    try:
        for name in backends:
            run, threads = stress(name, getattr(rselectors, classes[name]), seconds)
            calls = sum(run.calls)
            total_calls += calls
            print(f"stress {name:6}: {threads} threads, {seconds:.1f} s, {calls} calls "
                  f"({calls / seconds:,.0f}/s), {run.selects} selects delivered "
                  f"{run.delivered} keys, {run.swaps} selectors closed under the "
                  f"others, {run.ebadf} EBADF waits")
            for error in run.errors[:5]:
                print(error)
            failures += len(run.errors)
            if any("Already borrowed" in e for e in run.errors):
                print("FAIL: 'Already borrowed'")
    finally:
        sys.setswitchinterval(previous)
    gc.collect()
    leaked = open_fds() - before
    if leaked:
        print(f"FAIL: descriptors left open: {sorted(leaked)}")
        failures += 1
    print(f"stress: {sys.implementation.name} {sys.version.split()[0]}, GIL "
          f"{'on' if gil else 'off'}, backends {', '.join(backends)}: {total_calls} calls "
          f"in {DURATION:.1f} s ({total_calls / DURATION:,.0f}/s), "
          f"{'FAILED' if failures else 'no failure, no descriptor left open'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
