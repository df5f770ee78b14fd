#!/usr/bin/env python3
"""Chat fan-out benchmark: `rselectors chat-server` against `redis-server` PUBLISH.

For every shape (listeners, offered load, senders) both servers run one after the
other, pinned to core 1, with the same driver (`bench/target/release/fanout_load`,
pinned to core 0) offering the same lines: chat lines to the chat server, `PUBLISH
room` to Redis listeners that `SUBSCRIBE room`. The driver connects and hands
shakes, then says `ready`; only then is the server measured: its CPU time (all its
threads, from /proc/PID/task/*/schedstat, exact, and user/system from
/proc/PID/stat, in ticks) and its system calls (`perf stat -e raw_syscalls:sys_enter`
and per-call tracepoints, enabled through perf's control fifo for exactly the run),
divided by the deliveries (one line reaching one listener), which the driver counts
and checks (every listener gets every line once, in order, byte for byte). The
driver also reports deliveries/s and per-delivery latency p50/p99. Ratios are
chat/redis. Results go to stdout and (full runs) to a section of bench/RESULTS-fanout.md.

Python 3.11 standard library only. See bench/README.md, "Chat fan-out against Redis".
"""

from __future__ import annotations

import argparse
import datetime
import glob
import os
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Server, pin
from run import log, machine_facts, perf_event_works

BENCH_DIR = Path(__file__).resolve().parent
ROOT_DIR = BENCH_DIR.parent
DRIVER = BENCH_DIR / "target" / "release" / "fanout_load"
DEFAULT_CHAT = f"{ROOT_DIR / 'target' / 'release' / 'rselectors'} -q chat-server"
# No persistence, no protection prompt, loopback only (--bind/--port are added).
DEFAULT_REDIS = ("redis-server --save '' --appendonly no --protected-mode no "
                 "--daemonize no --loglevel warning --maxclients 4000")
BEGIN, END = "<!-- fanout:begin -->", "<!-- fanout:end -->"
ALL_SYSCALLS = "raw_syscalls:sys_enter"
# The calls to break the count into (each probed: perf refuses a list with a missing one).
BREAKDOWN = {
    "waits": ["epoll_wait", "epoll_pwait", "epoll_pwait2"],
    "reads": ["read", "readv", "recvfrom", "recvmsg"],
    "writes": ["write", "writev", "sendto", "sendmsg"],
    "epoll_ctl": ["epoll_ctl"],
}
LINE_SIZE = 64
BURST = 4  # lines per tick in the throughput-bound shapes
# Throughput-bound lines/s per listener count: BURST lines together every 1, 4 and
# 40 ms (epoll timeouts are whole milliseconds), 40k-100k deliveries/s, which
# leaves both servers and the driver short of a full core.
RATE = {10: 4000, 100: 1000, 1000: 100}


def shapes() -> list[dict]:
    out = []
    for listeners in (10, 100, 1000):
        for mode in ("latency", "rate"):
            for senders in ("one", "all"):
                load = "1 at a time" if mode == "latency" else f"{RATE[listeners]:,}/s x{BURST}"
                out.append({"name": f"{listeners:,} L, {senders} sender{'s' * (senders == 'all')}"
                                    f", {load}",
                            "listeners": listeners, "mode": mode, "senders": senders})
    return out


def driver_flags(shape: dict, proto: str, addr: str, args) -> list[str]:
    flags = ["--server", proto, "--addr", addr, "--listeners", str(shape["listeners"]),
             "--senders", shape["senders"], "--mode", shape["mode"], "--size", str(LINE_SIZE),
             "--duration", str(args.duration), "--control"]
    if shape["mode"] == "rate":
        flags += ["--rate", str(RATE[shape["listeners"]]), "--burst", str(BURST)]
    return flags


class RedisServer:
    """redis-server pinned to a core, on a free loopback port, stopped by its PID."""

    def __init__(self, cmd: list[str], core: int | None, workdir: str):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        self.addr = f"127.0.0.1:{port}"
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            pin(core) + cmd + ["--bind", "127.0.0.1", "--port", str(port), "--dir", workdir],
            stdout=self.stderr, stderr=self.stderr, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid  # taskset execs it
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                self.stderr.seek(0)
                raise RuntimeError(f"redis-server did not start: {self.stderr.read()[-500:]!r}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_snapshot(pid: int) -> tuple[int, float]:
    """(ns on CPU summed over every thread, user+system seconds from /proc/PID/stat)."""
    ns = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            ns += int(Path(path).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return ns, (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


class PerfWindow:
    """`perf stat` attached to PID but counting only between enable() and disable()."""

    def __init__(self, pid: int, events: list[str], core: int | None):
        self.dir = tempfile.TemporaryDirectory()
        ctl, ack = (os.path.join(self.dir.name, n) for n in ("ctl", "ack"))
        os.mkfifo(ctl)
        os.mkfifo(ack)
        self.out = os.path.join(self.dir.name, "out")
        self.proc = subprocess.Popen(
            pin(core) + ["perf", "stat", "-D", "-1", "--control", f"fifo:{ctl},{ack}",
                         "-e", ",".join(events), "-x,", "-o", self.out, "-p", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ctl = os.open(ctl, os.O_WRONLY)
        self.ack = os.open(ack, os.O_RDONLY)

    def _say(self, word: bytes) -> None:
        os.write(self.ctl, word + b"\n")
        ready, _, _ = select.select([self.ack], [], [], 10)
        if ready:
            os.read(self.ack, 64)

    def enable(self) -> None:
        self._say(b"enable")

    def disable(self) -> None:
        self._say(b"disable")

    def counts(self) -> dict[str, int]:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.ctl)
        os.close(self.ack)
        counts = {}
        for line in Path(self.out).read_text().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[2]:
                if fields[0].isdigit():
                    counts[fields[2]] = int(fields[0])
                elif fields[0] == "<not counted>":  # never scheduled while enabled
                    counts[fields[2]] = 0
        self.dir.cleanup()
        return counts


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"driver said nothing for {timeout:.0f} s")
    return proc.stdout.readline().decode(errors="replace").strip()


def run_one(kind: str, shape: dict, args, events: list[str]) -> dict:
    """One server, one shape: the driver's summary and the server's costs."""
    workdir = tempfile.TemporaryDirectory()
    if kind == "chat":
        server = Server(shlex.split(args.chat), args.server_core)
    else:
        server = RedisServer(shlex.split(args.redis), args.server_core, workdir.name)
    result: dict = {"errors": 0}
    perf = None
    driver = None
    try:
        if events:
            perf = PerfWindow(server.pid, events, args.load_core)
        cmd = pin(args.load_core) + [str(args.driver)] + driver_flags(shape, kind, server.addr,
                                                                       args)
        result["driver_cmd"] = shlex.join(cmd)
        driver = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        if read_line(driver, 60) != "ready":
            raise RuntimeError("driver did not get ready")
        time.sleep(0.2)  # let the handshake's last writes settle
        if perf:
            perf.enable()
        cpu0 = cpu_snapshot(server.pid)
        assert driver.stdin is not None
        driver.stdin.write(b"go\n")
        driver.stdin.flush()
        summary = read_line(driver, args.duration + 60)
        cpu1 = cpu_snapshot(server.pid)
        if perf:
            perf.disable()
        driver.stdin.close()
        driver.wait(timeout=30)
        result.update(dict(f.split("=", 1) for f in summary.split() if "=" in f))
        result["cpu_ns"] = cpu1[0] - cpu0[0]
        result["cpu_stat_s"] = cpu1[1] - cpu0[1]
    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as err:
        result["failure"] = str(err)
    finally:
        if driver is not None:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
            assert driver.stderr is not None
            err_text = driver.stderr.read().decode(errors="replace").strip()
            if err_text:
                result["driver_stderr"] = err_text[-800:]
        counts = perf.counts() if perf else {}
        server.stop()
        workdir.cleanup()
    return derive(result, counts)


def derive(result: dict, counts: dict[str, int]) -> dict:
    for key in ("lines", "deliveries", "expected", "errors", "late_bursts"):
        result[key] = int(result.get(key, 0))
    for key in ("deliveries_per_s", "p50_us", "p99_us", "driver_busy"):
        result[key] = float(result[key]) if key in result else None
    dels = result["deliveries"]
    if dels <= 0:
        return result
    if "cpu_ns" in result:
        result["cpu_ns_per_del"] = result["cpu_ns"] / dels
    if ALL_SYSCALLS in counts:
        result["syscalls_per_del"] = counts[ALL_SYSCALLS] / dels
        other = counts[ALL_SYSCALLS]
        for group, names in BREAKDOWN.items():
            total = sum(counts.get(f"syscalls:sys_enter_{n}", 0) for n in names)
            result[f"{group}_per_del"] = total / dels
            result[group] = total
            other -= total
        result["other_per_del"] = other / dels
    return result


def median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None and not r.get("failure")]
    return statistics.median(values) if values else None


def num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio(chat: float | None, redis: float | None) -> str:
    return "n/a" if chat is None or not redis else f"**{chat / redis:.2f}**"


def report(results: dict, shape_list: list[dict]) -> str:
    out = ["| shape | CPU ns/del chat | redis | chat/redis | syscalls/del chat | redis | "
           "chat/redis | p50 µs chat | redis | p99 µs chat | redis | del/s chat | redis |",
           "|---|" + "---:|" * 12]
    for shape in shape_list:
        c, r = results[shape["name"]]["chat"], results[shape["name"]]["redis"]
        m = {k: (median(c, k), median(r, k)) for k in
             ("cpu_ns_per_del", "syscalls_per_del", "p50_us", "p99_us", "deliveries_per_s")}
        out.append(f"| {shape['name']} | " + " | ".join([
            num(m["cpu_ns_per_del"][0], 0), num(m["cpu_ns_per_del"][1], 0),
            ratio(*m["cpu_ns_per_del"]),
            num(m["syscalls_per_del"][0], 3), num(m["syscalls_per_del"][1], 3),
            ratio(*m["syscalls_per_del"]),
            num(m["p50_us"][0], 0), num(m["p50_us"][1], 0),
            num(m["p99_us"][0], 0), num(m["p99_us"][1], 0),
            num(m["deliveries_per_s"][0], 0), num(m["deliveries_per_s"][1], 0)]) + " |")
    out += ["", "System calls per delivery by kind, and per wait (medians):", "",
            "| shape | server | waits | reads | writes | epoll_ctl | other | "
            "writes/wait | del/write |", "|---|---|" + "---:|" * 7]
    for shape in shape_list:
        for kind in ("chat", "redis"):
            runs = results[shape["name"]][kind]
            w, wr = median(runs, "waits"), median(runs, "writes")
            d = median(runs, "deliveries")
            out.append(f"| {shape['name']} | {kind} | " + " | ".join([
                num(median(runs, "waits_per_del"), 4), num(median(runs, "reads_per_del"), 4),
                num(median(runs, "writes_per_del"), 4),
                num(median(runs, "epoll_ctl_per_del"), 4), num(median(runs, "other_per_del"), 4),
                num(wr / w if w and wr is not None else None, 1),
                num(d / wr if d and wr else None, 2)]) + " |")
    out += ["", "Every run (driver_busy: the driver's CPU share of its core; near 1 means "
            "the driver, not the server, set the pace):", "",
            "| shape | server | repeat | deliveries | lost | errors | CPU ms (stat) | "
            "syscalls | p50 µs | p99 µs | late bursts | driver busy |",
            "|---|---|---:|" + "---:|" * 9]
    for shape in shape_list:
        for kind in ("chat", "redis"):
            for i, run in enumerate(results[shape["name"]][kind], 1):
                lost = run["expected"] - run["deliveries"]
                calls = run.get("syscalls_per_del", 0) * run["deliveries"] \
                    if "syscalls_per_del" in run else None
                out.append(f"| {shape['name']} | {kind} | {i} | {run['deliveries']:,} | "
                           f"{lost:,} | {run['errors']}{' ' + run['failure'] if 'failure' in run else ''} | "
                           f"{num(run.get('cpu_ns', 0) / 1e6, 1)} ({num(run.get('cpu_stat_s', 0) * 1e3, 0)}) | "
                           f"{num(calls, 0)} | {num(run['p50_us'], 0)} | {num(run['p99_us'], 0)} | "
                           f"{run['late_bursts']} | {num(run['driver_busy'], 2)} |")
    return "\n".join(out) + "\n"


def write_section(path: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{section}{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per (shape, server)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 repeat x 0.5 s, nothing written to RESULTS-fanout.md")
    parser.add_argument("--shapes", default="", help="comma-separated 1-based shape numbers")
    parser.add_argument("--chat", default=DEFAULT_CHAT, help="chat server command (+ --addr)")
    parser.add_argument("--redis", default=DEFAULT_REDIS,
                        help="redis-server command (+ --bind --port --dir)")
    parser.add_argument("--driver", default=str(DRIVER))
    parser.add_argument("--install", action="store_true",
                        help="if redis-server is missing, apt-get install it (Debian, root)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--out", default=None,
                        help="file whose fan-out section to (re)write; default "
                             "bench/RESULTS-fanout.md for full runs, none for --quick; '-': none")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.duration = 1, 0.5
    if args.out is None:
        args.out = "-" if args.quick else str(BENCH_DIR / "RESULTS-fanout.md")
    pinning = not args.no_pin and shutil.which("taskset") and (os.cpu_count() or 1) >= 2
    args.server_core, args.load_core = (1, 0) if pinning else (None, None)
    return args


def install_redis(who: str) -> None:
    log(f"{who}: redis-server is missing; installing it: apt-get install -y redis-server")
    subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=False,
                   stdout=subprocess.DEVNULL)
    # The package may start its own service; the benchmarks start their own instances.
    if shutil.which("systemctl"):
        subprocess.run(["systemctl", "disable", "--now", "redis-server"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def redis_version(redis_bin: str) -> str:
    try:
        text = subprocess.run([redis_bin, "--version"], capture_output=True, text=True,
                              check=False, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "version unknown"
    return next((f for f in text.split() if f.startswith("v=")), "version unknown")


def main() -> int:
    args = parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    redis_bin = shlex.split(args.redis)[0]
    missing = [what for what, ok in [
        (f"redis-server ({redis_bin}; Debian: apt-get install -y redis-server)",
         shutil.which(redis_bin)),
        (f"the driver {args.driver} (cd bench && cargo build --release --bin fanout_load)",
         Path(args.driver).is_file()),
        (f"the chat server {shlex.split(args.chat)[0]} (cargo build --release)",
         Path(shlex.split(args.chat)[0]).is_file() or shutil.which(shlex.split(args.chat)[0]))]
        if not ok]
    if missing and args.install and not shutil.which(redis_bin) and shutil.which("apt-get"):
        install_redis("fanout")
        missing = [m for m in missing if not m.startswith("redis-server")
                   or not shutil.which(redis_bin)]
    if missing:
        for what in missing:
            log(f"fanout: missing: {what}")
        return 2
    log(f"fanout: redis-server: {shutil.which(redis_bin)} ({redis_version(redis_bin)})")
    events: list[str] = []
    if shutil.which("perf") and perf_event_works(ALL_SYSCALLS):
        events = [ALL_SYSCALLS] + [f"syscalls:sys_enter_{n}" for names in BREAKDOWN.values()
                                   for n in names if perf_event_works(f"syscalls:sys_enter_{n}")]
    else:
        log("fanout: perf is missing or cannot attach (Debian: apt-get install -y linux-perf; "
            "root or kernel.perf_event_paranoid <= 1): system call columns show n/a")
    shape_list = shapes()
    if args.shapes:
        picked = {int(x) for x in args.shapes.split(",")}
        shape_list = [s for i, s in enumerate(shape_list, 1) if i in picked]
    facts = machine_facts()
    started = time.monotonic()
    results = {s["name"]: {"chat": [], "redis": []} for s in shape_list}
    for repeat in range(args.repeats):
        for i, shape in enumerate(shape_list):
            order = ["chat", "redis"] if (repeat + i) % 2 == 0 else ["redis", "chat"]
            for kind in order:
                run = run_one(kind, shape, args, events)
                results[shape["name"]][kind].append(run)
                lost = run["expected"] - run["deliveries"]
                log(f"[{time.monotonic() - started:5.0f}s] {shape['name']} {kind} #{repeat + 1}: "
                    f"{run['deliveries']:,} del, lost {lost}, errors {run['errors']}, "
                    f"{num(run.get('cpu_ns_per_del'), 0)} ns/del, "
                    f"{num(run.get('syscalls_per_del'), 3)} calls/del, "
                    f"p50 {num(run['p50_us'], 0)} µs, p99 {num(run['p99_us'], 0)} µs, "
                    f"busy {num(run['driver_busy'], 2)}"
                    + (f" FAILED: {run['failure']}" if "failure" in run else "")
                    + (f"\n    {run['driver_stderr']}" if run.get("driver_stderr") else ""))
    tables = report(results, shape_list)
    print(tables)
    bad = sum(1 for s in results.values() for runs in s.values() for r in runs
              if r.get("failure") or r["errors"] or r["deliveries"] != r["expected"])
    if args.out != "-":
        commit = subprocess.run(["git", "-C", str(ROOT_DIR), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT_DIR), "status", "--porcelain", "--",
                                "crates"], capture_output=True, text=True,
                               check=False).stdout.strip()
        example = results[shape_list[0]["name"]]["chat"][0].get("driver_cmd", "")
        section = "\n".join([
            "## Chat fan-out against redis-server",
            "",
            f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
            f"`{shlex.join(['python3', 'bench/fanout.py', *sys.argv[1:]])}` at commit "
            f"{commit}{' (crates/ modified)' if dirty else ''}; {args.repeats} repeats x "
            f"{args.duration} s per (shape, server), medians; server on core 1, driver on "
            f"core 0. How to read: [README.md](README.md#chat-fan-out-against-redis).",
            "",
            "L = listeners; a delivery is one line reaching one listener. Servers: "
            f"`{args.chat}`; `{args.redis}`. Example driver command: `{example}`.",
            "",
            "Machine: " + "; ".join(facts) + f"; redis-server {redis_version(redis_bin)}.",
            "",
            tables])
        write_section(Path(args.out), section)
        log(f"fanout: wrote the section of {args.out}")
    log(f"fanout: {time.monotonic() - started:.0f} s" + (f", {bad} bad runs" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
