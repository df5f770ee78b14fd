"""The standard library's selectors against rselectors, in one run.

    python crates/rselectors-py/bench/bench_selectors.py [--quick] [--hot]

--hot runs only asyncio's hot calls (a few seconds, for each CPython).

Measures, on epoll (DefaultSelector on Linux):
  * register + unregister of a socket,
  * modify (events changed: one epoll_ctl each; data only: no system call),
  * select() with 1,000 registered socket pairs of which 100 are readable,
  * an asyncio streams echo round trip (client and server on one loop),
  * asyncio's hot calls on this Python version: add_reader + remove_reader
    on a SelectorEventLoop (3.13 on: get_map().get(); before: get_key()
    with KeyError caught), and those lookups alone,
  * register + unregister of a descriptor with a high number (dup2'd to
    19,999, and to 1,000,000 when RLIMIT_NOFILE allows it once the soft
    limit is raised to the hard one) on a long-lived selector,
  * the short-lived selector of subprocess.communicate() at such a
    descriptor: DefaultSelector(), register it, select(0), close.

Each figure is the best of several interleaved repeats (the machine may be
busy), in microseconds per operation; "speed-up" is stdlib / rselectors.
The "kernel floor" rows time the bare system calls through select.epoll,
which neither library can go below. Runs in well under a minute.
"""

import asyncio
import os
import resource
import select
import selectors
import socket
import sys
import time

import rselectors

QUICK = "--quick" in sys.argv[1:]
HOT_ONLY = "--hot" in sys.argv[1:]
REPEATS = 3 if QUICK else 7
SCALE = 0.2 if QUICK else 1.0


def best_of(repeats, number, func):
    """Best time of `repeats` runs of `func(number)`, per operation, in µs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func(number)
        times.append((time.perf_counter() - start) / number * 1e6)
    return min(times)


def interleaved(cases, number):
    """{name: best µs/op} for cases {name: func(number)}, run in turns so
    that background load hits every case alike."""
    results = {name: [] for name in cases}
    for _ in range(REPEATS):
        for name, func in cases.items():
            results[name].append(best_of(1, number, func))
    return {name: min(times) for name, times in results.items()}


def calibrated(cases, budget):
    """{name: best µs/op} for cases {name: func(number)} whose costs may
    differ by orders of magnitude: each case gets its own number of
    operations, about `budget` seconds' worth (measured on a first,
    warm-up call), and the cases run in turns as in `interleaved`."""
    numbers = {}
    for name, func in cases.items():
        start = time.perf_counter()
        func(1)
        once = max(time.perf_counter() - start, 1e-7)
        numbers[name] = max(1, min(100_000, int(budget / once)))
    results = {name: [] for name in cases}
    for _ in range(REPEATS):
        for name, func in cases.items():
            results[name].append(best_of(1, numbers[name], func))
    return {name: min(times) for name, times in results.items()}


def high_descriptors(sock):
    """{number: fd}: `sock` dup2'd to 19,999 and to 1,000,000, each where
    RLIMIT_NOFILE allows it (the soft limit raised as far as the hard one
    lets it). The caller closes them."""
    fds = {}
    for number in (19_999, 1_000_000):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and number >= soft:
            if hard != resource.RLIM_INFINITY and number >= hard:
                print(f"(fd {number:,}: skipped, RLIMIT_NOFILE's hard limit is {hard:,})")
                continue
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (number + 1, hard))
            except (ValueError, OSError) as e:
                print(f"(fd {number:,}: skipped, cannot raise RLIMIT_NOFILE: {e})")
                continue
        fds[number] = os.dup2(sock.fileno(), number, inheritable=False)
    return fds


def measure_register_unregister(target, measure):
    """register + unregister of `target` (a file object or a descriptor) on
    one long-lived selector of each module, and on a raw epoll object:
    `measure` gets the cases and returns the times."""
    def loop(sel):
        def run(n):
            register, unregister = sel.register, sel.unregister
            for _ in range(n):
                register(target, selectors.EVENT_READ)
                unregister(target)
        return run

    ep = select.epoll()
    fd = target if isinstance(target, int) else target.fileno()

    def raw(n):
        for _ in range(n):
            ep.register(fd, select.EPOLLIN)
            ep.unregister(fd)

    std, ours = selectors.EpollSelector(), rselectors.EpollSelector()
    try:
        return measure({"std": loop(std), "ours": loop(ours), "raw": raw})
    finally:
        std.close(), ours.close(), ep.close()


def bench_register_high(fd):
    """register + unregister of a high descriptor number `fd`."""
    return measure_register_unregister(fd, lambda cases: calibrated(cases, 0.05 * SCALE))


def bench_short_lived(fd):
    """subprocess.communicate()'s pattern: a new DefaultSelector, one
    descriptor registered (`fd`, writable), select(0), close."""
    def cycle(module):
        def run(n):
            for _ in range(n):
                with module.DefaultSelector() as sel:
                    sel.register(fd, selectors.EVENT_WRITE)
                    sel.select(0)
        return run

    def raw(n):
        for _ in range(n):
            ep = select.epoll()
            ep.register(fd, select.EPOLLOUT)
            ep.poll(0, 1)
            ep.close()

    for module in (selectors, rselectors):
        with module.DefaultSelector() as sel:
            key = sel.register(fd, selectors.EVENT_WRITE)
            assert sel.select(0) == [(key, selectors.EVENT_WRITE)]
    return calibrated({"std": cycle(selectors), "ours": cycle(rselectors), "raw": raw},
                      0.05 * SCALE)


def bench_register(rd):
    return measure_register_unregister(rd, lambda cases: interleaved(cases, int(20000 * SCALE)))


def bench_modify(rd):
    def events(sel):
        def run(n):
            modify = sel.modify
            for _ in range(n // 2):
                modify(rd, selectors.EVENT_WRITE)
                modify(rd, selectors.EVENT_READ)
        return run

    def data(sel):
        def run(n):
            modify = sel.modify
            for i in range(n):
                modify(rd, selectors.EVENT_READ, i)
        return run

    std, ours = selectors.EpollSelector(), rselectors.EpollSelector()
    for sel in (std, ours):
        sel.register(rd, selectors.EVENT_READ)
    ep = select.epoll()
    fd = rd.fileno()
    ep.register(fd, select.EPOLLIN)

    def raw(n):
        for _ in range(n // 2):
            ep.modify(fd, select.EPOLLOUT)
            ep.modify(fd, select.EPOLLIN)

    number = int(20000 * SCALE)
    got_events = interleaved({"std": events(std), "ours": events(ours), "raw": raw}, number)
    got_data = interleaved({"std": data(std), "ours": data(ours)}, number)
    std.close(), ours.close(), ep.close()
    return got_events, got_data


def bench_select(pairs, ready, timeout):
    std, ours = selectors.EpollSelector(), rselectors.EpollSelector()
    ep = select.epoll()
    for rd, _ in pairs:
        for sel in (std, ours):
            sel.register(rd, selectors.EVENT_READ)
        ep.register(rd.fileno(), select.EPOLLIN)
    for sel in (std, ours):
        assert len(sel.select(timeout)) == ready

    def loop(sel):
        def run(n):
            for _ in range(n):
                sel.select(timeout)
        return run

    def raw(n):
        for _ in range(n):
            ep.poll(0 if timeout == 0 else -1, len(pairs))

    got = interleaved({"std": loop(std), "ours": loop(ours), "raw": raw}, int(2000 * SCALE))
    std.close(), ours.close(), ep.close()
    return got


def bench_asyncio():
    message = b"x" * 100

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    async def session(n):
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.perf_counter()
        for _ in range(n):
            writer.write(message)
            await reader.readexactly(len(message))
        elapsed = time.perf_counter() - start
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return elapsed

    def loop_with(selector_class):
        def run(n):
            loop = asyncio.SelectorEventLoop(selector_class())
            try:
                loop.run_until_complete(session(n))
            finally:
                loop.close()
        return run

    return interleaved(
        {"std": loop_with(selectors.DefaultSelector), "ours": loop_with(rselectors.DefaultSelector)},
        int(3000 * SCALE),
    )


def bench_asyncio_hot(rd):
    """asyncio's calls on every add_reader / remove_reader, as this
    version's asyncio makes them: (name, {case: µs}) rows."""
    def add_remove(selector_class):
        loop = asyncio.SelectorEventLoop(selector_class())

        def run(n):
            add, remove = loop.add_reader, loop.remove_reader
            for _ in range(n):
                add(rd, int)
                remove(rd)
        return loop, run

    def lookups(module):
        sel = module.DefaultSelector()
        registered, _ = socket.socketpair()
        sel.register(registered, selectors.EVENT_READ)
        unregistered = rd.fileno()
        fd = registered.fileno()

        def get_missing(n):
            get = sel.get_map().get
            for _ in range(n):
                get(unregistered)

        def get_found(n):
            get = sel.get_map().get
            for _ in range(n):
                get(fd)

        def get_key_found(n):
            get_key = sel.get_key
            for _ in range(n):
                get_key(fd)

        def get_key_missing(n):
            get_key = sel.get_key
            for _ in range(n):
                try:
                    get_key(unregistered)
                except KeyError:
                    pass

        def close():
            sel.close()
            registered.close()
        return close, {"get_map().get(fd), not registered": get_missing,
                       "get_map().get(fd), registered": get_found,
                       "get_key(fd), registered": get_key_found,
                       "get_key(fd) -> KeyError caught": get_key_missing}

    std_loop, std_run = add_remove(selectors.DefaultSelector)
    our_loop, our_run = add_remove(rselectors.DefaultSelector)
    number = int(20000 * SCALE)
    rows = [("asyncio add_reader + remove_reader",
             interleaved({"std": std_run, "ours": our_run}, number))]
    std_loop.close(), our_loop.close()
    std_close, std_cases = lookups(selectors)
    our_close, our_cases = lookups(rselectors)
    for name in std_cases:
        rows.append((name, interleaved({"std": std_cases[name], "ours": our_cases[name]},
                                       int(100000 * SCALE))))
    std_close(), our_close()
    return rows


def print_rows(rows):
    print()
    print(f"{'operation (µs per op)':37} {'stdlib':>9} {'rselectors':>11} {'speed-up':>9} "
          f"{'kernel floor':>13}")
    for name, got in rows:
        raw = f"{got['raw']:13.2f}" if "raw" in got else f"{'-':>13}"
        print(f"{name:37} {got['std']:9.2f} {got['ours']:11.2f} "
              f"{got['std'] / got['ours']:8.2f}x {raw}")


def main():
    start = time.perf_counter()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; best of {REPEATS} repeats")
    rows = []
    rd, wr = socket.socketpair()
    if HOT_ONLY:
        print_rows(bench_asyncio_hot(rd))
        rd.close(), wr.close()
        print(f"total {time.perf_counter() - start:.1f} s")
        return

    got = bench_register(rd)
    rows.append(("register + unregister", got))
    got_events, got_data = bench_modify(rd)
    rows.append(("modify, events changed", got_events))
    rows.append(("modify, data only", got_data))

    pairs = [socket.socketpair() for _ in range(1000)]
    for _, w in pairs[:100]:
        w.send(b"!")
    rows.append(("select(), 1000 fds, 100 ready", bench_select(pairs, 100, None)))
    rows.append(("select(0), 1000 fds, 100 ready", bench_select(pairs, 100, 0)))
    for a, b in pairs:
        a.close(), b.close()
    rows.extend(bench_asyncio_hot(rd))
    rd.close(), wr.close()

    rows.append(("asyncio echo round trip", bench_asyncio()))

    high_rd, high_wr = socket.socketpair()
    high = high_descriptors(high_wr)
    for number, fd in high.items():
        rows.append((f"register + unregister, fd {number:,}", bench_register_high(fd)))
    for number, fd in high.items():
        rows.append((f"short-lived selector, fd {number:,}", bench_short_lived(fd)))
    for fd in high.values():
        os.close(fd)
    high_rd.close(), high_wr.close()

    print_rows(rows)
    print(f"\n(kernel floor: the same system calls through select.epoll, with no "
          f"selector around them)\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
