"""Shared fixtures: selector class pairs (standard library, rselectors),
socket pairs that close themselves, free ports and server processes."""

import contextlib
import os
import selectors
import socket
import subprocess
import sys
import time

import pytest

import rselectors

# The class name of each backend the native module may list, as CPython
# names it.
CLASS_NAMES = {
    "select": "SelectSelector",
    "poll": "PollSelector",
    "epoll": "EpollSelector",
    "devpoll": "DevpollSelector",
    "kqueue": "KqueueSelector",
}

# The class names of the backends this machine has (rselectors' list).
BACKEND_CLASSES = [CLASS_NAMES[name] for name in rselectors._rselectors.BACKENDS]

# (name, standard library class, rselectors class) for every backend here,
# and DefaultSelector.
SELECTOR_PAIRS = [
    (name, getattr(selectors, name), getattr(rselectors, name))
    for name in [*BACKEND_CLASSES, "DefaultSelector"]
]



def here(*names):
    """The class names `names` as pytest parameters, each skipped where the
    standard library (so rselectors) has no such class."""
    return [
        pytest.param(name, marks=pytest.mark.skipif(
            not hasattr(selectors, name), reason=f"no {name} on this platform"))
        for name in names
    ]


SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


@pytest.fixture(params=SELECTOR_PAIRS, ids=[p[0] for p in SELECTOR_PAIRS])
def pair(request):
    """(stdlib class, rselectors class) of one backend."""
    return request.param[1], request.param[2]


@pytest.fixture(params=SELECTOR_PAIRS, ids=[p[0] for p in SELECTOR_PAIRS])
def ours(request):
    """An open rselectors selector of each backend, closed afterwards."""
    sel = request.param[2]()
    yield sel
    sel.close()


@pytest.fixture
def socketpair():
    """A factory of connected socket pairs, all closed at the end."""
    made = []

    def make():
        a, b = socket.socketpair()
        made.extend((a, b))
        return a, b

    yield make
    for s in made:
        s.close()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def connect(port, proc=None, timeout=10.0):
    """Connects to 127.0.0.1:port, retrying while the server starts up
    (bounded by `timeout`); fails early if `proc` exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            sock.settimeout(timeout)
            return sock
        except ConnectionRefusedError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def recv_until(sock, expected, timeout=10.0):
    """Reads from `sock` until `expected` (bytes) is in what was read."""
    deadline = time.monotonic() + timeout
    got = b""
    while expected not in got:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


@pytest.fixture(params=["rselectors", "selectors"])
def seed(request, tmp_path):
    """seed(name): the path of tests/seeds/<name> as ported (`import
    rselectors as selectors`), or, for the comparison run, a copy with the
    standard library's `import selectors` back in place."""

    def path(name):
        source = os.path.join(SEEDS, name)
        if request.param == "rselectors":
            return source
        with open(source, encoding="utf-8") as f:
            text = f.read()
        assert text.count("import rselectors as selectors\n") == 1
        copy = tmp_path / name
        copy.write_text(text.replace("import rselectors as selectors\n", "import selectors\n"),
                        encoding="utf-8")
        return str(copy)

    path.module = request.param
    return path


@contextlib.contextmanager
def seed_process(script, *args, stdin=None, output=None):
    """Runs the Python program `script` with this interpreter, its output
    (stdout and stderr) going to the file `output`; kills it (by its pid)
    if it is still running at the end."""
    with open(output or os.devnull, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-u", script, *map(str, args)],
            stdin=stdin,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def wait_for_output(path, text, proc=None, timeout=10.0, count=1):
    """Waits until the file `path` contains `text` (`count` times); returns
    its content."""
    deadline = time.monotonic() + timeout
    while True:
        exited = proc is not None and proc.poll() is not None
        with open(path, encoding="utf-8", errors="replace") as f:
            content = f.read()
        if content.count(text) >= count:
            return content
        if exited or time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the output:\n{content}")
        time.sleep(0.02)
