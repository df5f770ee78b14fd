#!/usr/bin/env python3
"""Echo-server benchmark driver: what does each server spend per message?

For every workload, every server (raw epoll, mio, tokio, polling, rselectors) is started
pinned to core 1, `perf stat -e raw_syscalls:sys_enter -p PID` counts its system calls
(and, in the same invocation, its epoll waits, by the syscalls:sys_enter_epoll_*wait*
tracepoints), `perf record -e cpu-clock` samples where its CPU time goes, the load generator
runs pinned to core 0 for a bounded time, then the server is stopped with SIGTERM and its
rusage is read with wait4. The samples split the exact total CPU into user and system, and
objdump finds the user samples that sit on the instruction right after a `syscall` (kernel
exit time charged to user mode), so user time is also reported without them. Servers are
interleaved within each workload (rotated every repeat), every cell is the median over the
repeats, and ratios are to raw-epoll. A last phase holds N idle connections open to measure
memory per connection. Results go to stdout and to bench/RESULTS.md.

Python 3.11 standard library only. See bench/README.md for how to read the numbers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import resource
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

from harness import Server, callgrind_instructions, parse_summary, pin, vm_rss_kib
from samples import sample_shares

BENCH_DIR = Path(__file__).resolve().parent
ROOT_DIR = BENCH_DIR.parent
PEER_BIN = BENCH_DIR / "target" / "release"
BASELINE = "raw-epoll"
PERF_EVENT = "raw_syscalls:sys_enter"
# Every way into epoll_wait: glibc, mio, tokio and polling may each use any of them.
WAIT_EVENTS = ["syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait",
               "syscalls:sys_enter_epoll_pwait2"]

# (column name, command); every server takes --addr and prints "listening on ADDR".
PEER_SERVERS = [
    ("raw-epoll", [str(PEER_BIN / "raw_epoll")]),
    ("mio", [str(PEER_BIN / "mio_echo")]),
    ("tokio", [str(PEER_BIN / "tokio_echo")]),
    ("polling", [str(PEER_BIN / "polling_echo")]),
]
# -q: no per-connection log lines (the peers log nothing either).
DEFAULT_RSELECTORS = f"{ROOT_DIR / 'target' / 'release' / 'rselectors'} -q echo-server"
DEFAULT_LOAD = f"{ROOT_DIR / 'target' / 'release' / 'rselectors'} load"

# (row name, conns, size, mode, pipeline)
WORKLOADS = [
    ("1 x 64 B ping-pong", 1, 64, "pingpong", 1),
    ("100 x 64 B ping-pong", 100, 64, "pingpong", 1),
    ("1,000 x 64 B ping-pong", 1000, 64, "pingpong", 1),
    ("50 x 16 KiB ping-pong", 50, 16384, "pingpong", 1),
    ("100 x 64 B stream, pipeline 16", 100, 64, "stream", 16),
    ("churn, 10 x 64 B (msg = connection)", 10, 64, "churn", 1),
]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def perf_event_works(event: str) -> bool:
    """True if `perf stat` can count `event` here (installed, permitted, tracepoint present)."""
    try:
        probe = subprocess.run(["perf", "stat", "-e", event, "-x,", "--", "true"],
                               capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and event in probe.stderr and "<not" not in probe.stderr


def perf_works() -> bool:
    return shutil.which("perf") is not None and perf_event_works(PERF_EVENT)


def wait_events() -> list[str]:
    """The epoll wait tracepoints this kernel has. Probed one by one because perf stat
    refuses the whole list if one is missing (epoll_pwait2 needs Linux 5.11)."""
    return [event for event in WAIT_EVENTS if perf_event_works(event)]


def run_one(server_cmd, workload, args, use_perf: bool, waits: list[str]) -> dict:
    """One server, one workload, one repeat. `waits`: the epoll wait tracepoints to
    count alongside all system calls, in the same perf stat (one attach, one window)."""
    _, conns, size, mode, pipeline = workload
    server = Server(server_cmd, args.server_core)
    result: dict = {"errors": 0}
    perf = perf_out = sampler = None
    sample_dir = tempfile.TemporaryDirectory()
    sample_file = os.path.join(sample_dir.name, "perf.data")
    try:
        if use_perf:
            perf_out = tempfile.NamedTemporaryFile(mode="r", suffix=".perf")
            perf = subprocess.Popen(
                pin(args.load_core) + ["perf", "stat", "-e", ",".join([PERF_EVENT, *waits]),
                                       "-x,", "-o", perf_out.name, "-p", str(server.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if args.user_sampling > 0:
                sampler = subprocess.Popen(
                    pin(args.load_core) + ["perf", "record", "-q", "-e", "cpu-clock",
                                           "-F", str(args.user_sampling), "-o", sample_file,
                                           "-p", str(server.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            time.sleep(0.3)  # let perf attach before any load
        load_cmd = pin(args.load_core) + shlex.split(args.load) + [
            "--addr", server.addr, "--conns", str(conns), "--size", str(size),
            "--duration", str(args.duration), "--mode", mode, "--pipeline", str(pipeline),
        ]
        result["load_cmd"] = shlex.join(load_cmd)
        with tempfile.TemporaryFile() as load_out:
            load = subprocess.Popen(load_cmd, stdout=load_out, stderr=subprocess.DEVNULL,
                                    stdin=subprocess.DEVNULL)
            peak_rss = vm_rss_kib(server.pid) or 0
            deadline = time.monotonic() + args.duration + 60
            while load.poll() is None:
                if time.monotonic() > deadline:
                    load.kill()
                    load.wait()
                    result["errors"] += 1
                    break
                peak_rss = max(peak_rss, vm_rss_kib(server.pid) or 0)
                time.sleep(0.1)
            load_out.seek(0)
            summary = parse_summary(load_out.read().decode(errors="replace"))
        result["summary"] = summary
        result["rss_kib"] = peak_rss
        result["msgs"] = int(summary.get("msgs", 0))
        result["msgs_per_s"] = float(summary.get("msgs_per_s", 0))
        result["p99_us"] = float(summary.get("p99_us", 0))
        result["errors"] += int(summary.get("errors", 1)) + (load.returncode != 0)
    finally:
        for tool in (perf, sampler):
            if tool is not None:
                tool.send_signal(signal.SIGINT)
                try:
                    tool.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    tool.kill()
                    tool.wait()
        usage = server.stop()
    if sampler is not None:
        result.update(sample_shares(sample_file))
    sample_dir.cleanup()
    if perf_out is not None:
        counts = perf_stat_counts(perf_out.read())
        perf_out.close()
        if PERF_EVENT in counts:
            result["syscalls"] = counts[PERF_EVENT]
        if waits and all(event in counts for event in waits):
            result["waits"] = sum(counts[event] for event in waits)
    if usage is not None:
        result["utime_s"] = usage.ru_utime
        result["stime_s"] = usage.ru_stime
    msgs = result["msgs"]
    if msgs > 0:
        if "syscalls" in result:
            result["syscalls_per_msg"] = result["syscalls"] / msgs
            if "waits" in result:
                result["waits_per_msg"] = result["waits"] / msgs
                result["other_syscalls_per_msg"] = (result["syscalls"] - result["waits"]) / msgs
        if usage is not None:
            result["cpu_ns_per_msg"] = (usage.ru_utime + usage.ru_stime) * 1e9 / msgs
            # Exact total CPU x sampled user share beats the tick-sampled ru_utime.
            if result.get("user_frac") is not None:
                result["user_ns_per_msg"] = result["cpu_ns_per_msg"] * result["user_frac"]
            else:
                result["user_ns_per_msg"] = usage.ru_utime * 1e9 / msgs
            if result.get("user_frac") is not None \
                    and result.get("after_syscall_frac") is not None:
                result["user_own_ns_per_msg"] = result["cpu_ns_per_msg"] * (
                    result["user_frac"] - result["after_syscall_frac"])
    return result


def perf_stat_counts(text: str) -> dict[str, int]:
    """Event -> count from `perf stat -x,` output ("<not counted>" events left out)."""
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            counts[fields[2]] = int(fields[0])
    return counts


def run_idle(server_cmd, args) -> dict:
    """Holds args.idle_conns connections, each echoed once, and reads the server's RSS."""
    server = Server(server_cmd, args.server_core)
    host, port = server.addr.rsplit(":", 1)
    socks: list[socket.socket] = []
    result: dict = {}
    try:
        time.sleep(0.1)
        base = vm_rss_kib(server.pid) or 0
        payload = b"x" * 64
        for _ in range(args.idle_conns):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(payload)
            socks.append(sock)
        for sock in socks:  # every connection has been accepted and served once
            got = b""
            while len(got) < len(payload):
                chunk = sock.recv(len(payload) - len(got))
                if not chunk:
                    raise RuntimeError("idle connection closed")
                got += chunk
        time.sleep(0.2)
        held = vm_rss_kib(server.pid) or 0
        result = {"base_kib": base, "held_kib": held,
                  "kib_per_conn": (held - base) / args.idle_conns}
    except (OSError, RuntimeError) as err:
        result = {"error": str(err)}
    finally:
        for sock in socks:
            sock.close()
        server.stop()
    return result


def med(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt_cell(value: float | None, base: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.{digits}f}"
    if base:
        text += f" ({value / base:.2f}x)"
    return text


def table(title: str, rows: list[str], servers: list[str], cell) -> str:
    lines = [f"### {title}", "", "| workload | " + " | ".join(servers) + " |",
             "|---|" + "---:|" * len(servers)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(cell(row, s) for s in servers) + " |")
    return "\n".join(lines) + "\n"


def machine_facts() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1048576:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    facts = [f"nproc: {os.cpu_count()}", f"kernel: {platform.release()}", f"CPU: {cpu}",
             f"memory: {mem}",
             "load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
             f"python: {platform.python_version()}"]
    try:
        rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True,
                               check=False, timeout=30).stdout.strip()
        facts.append(f"rustc: {rustc}")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return facts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per (workload, server)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 repeat, 2 s each")
    parser.add_argument("--load", default=DEFAULT_LOAD,
                        help="load generator command (default: rselectors load from the "
                             "root workspace's release build); flags --addr --conns --size "
                             "--duration --mode --pipeline are appended")
    parser.add_argument("--rselectors", default=DEFAULT_RSELECTORS,
                        help="rselectors echo-server command (--addr is appended)")
    parser.add_argument("--servers", default="", help="comma-separated subset of columns")
    parser.add_argument("--workloads", default="",
                        help="comma-separated 1-based row numbers to run (default all)")
    parser.add_argument("--idle-conns", type=int, default=10000,
                        help="idle connections for the memory phase (0 skips it)")
    parser.add_argument("--user-sampling", type=int, default=4999, metavar="HZ",
                        help="split CPU into user/system by `perf record -e cpu-clock -F HZ` "
                             "samples instead of the tick-based rusage split (0: rusage)")
    parser.add_argument("--callgrind-seconds", type=float, default=2.0, metavar="SECS",
                        help="S: load per server and workload under valgrind "
                             "--tool=callgrind, once for S and once for 2S seconds, for the "
                             "instructions-per-message table (0 skips it)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--out", default=str(BENCH_DIR / "RESULTS.md"))
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.duration = 1, 2.0
    if args.repeats < 1 or not 0 < args.duration <= 600:
        parser.error("--repeats >= 1 and 0 < --duration <= 600")
    pinning = not args.no_pin and shutil.which("taskset") and (os.cpu_count() or 1) >= 2
    args.server_core, args.load_core = (1, 0) if pinning else (None, None)
    return args


def main() -> int:
    args = parse_args()
    notes: list[str] = []
    # 1,000-connection and idle runs need descriptors; servers inherit this limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.idle_conns + 1024)) if hard != resource.RLIM_INFINITY \
        else max(soft, args.idle_conns + 1024)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    servers = list(PEER_SERVERS)
    rsel_cmd = shlex.split(args.rselectors)
    if rsel_cmd and Path(rsel_cmd[0]).is_file():
        servers.append(("rselectors", rsel_cmd))
    else:
        notes.append(f"rselectors skipped: `{rsel_cmd[0] if rsel_cmd else ''}` not found "
                     "(build it with `cargo build --release` at the repository root).")
    if args.servers:
        wanted = set(args.servers.split(","))
        servers = [s for s in servers if s[0] in wanted]
    missing = [cmd[0] for _, cmd in servers if not Path(cmd[0]).is_file()]
    load_bin = shlex.split(args.load)[0] if args.load else ""
    if not Path(load_bin).is_file():
        missing.append(load_bin)
    if missing:
        log(f"missing binaries: {missing}\nbuild them with: (cd {BENCH_DIR} && cargo build --release)")
        return 2
    workloads = WORKLOADS
    if args.workloads:
        picks = [int(x) for x in args.workloads.split(",")]
        workloads = [WORKLOADS[i - 1] for i in picks if 1 <= i <= len(WORKLOADS)]
    use_perf = perf_works()
    if not use_perf:
        notes.append("syscalls: n/a, `perf stat -e raw_syscalls:sys_enter` does not work here "
                     "(Debian: `apt-get install -y linux-perf`; needs root or "
                     "kernel.perf_event_paranoid <= 1 and tracefs).")
    waits = wait_events() if use_perf else []
    if use_perf and not waits:
        notes.append("epoll waits per message and system calls other than epoll waits: n/a, "
                     "none of the tracepoints " + ", ".join(WAIT_EVENTS) + " works here "
                     "(needs a kernel with CONFIG_FTRACE_SYSCALLS).")
    elif use_perf and len(waits) < len(WAIT_EVENTS):
        notes.append("epoll waits: not counted, no such tracepoint on this kernel (so no "
                     "such system call to make): "
                     + ", ".join(e for e in WAIT_EVENTS if e not in waits) + ".")
    if args.server_core is None:
        notes.append("not pinned (taskset missing, --no-pin, or fewer than 2 cores).")

    names = [name for name, _ in servers]
    per_run = args.duration + 1.5
    total = len(workloads) * len(servers) * args.repeats * per_run
    log(f"{len(workloads)} workloads x {len(servers)} servers x {args.repeats} repeats, "
        f"about {total / 60:.1f} min (+ idle phase)")
    started = datetime.datetime.now(datetime.timezone.utc)
    facts = machine_facts()
    runs: dict[tuple[str, str], list[dict]] = {}
    for workload in workloads:
        for rep in range(args.repeats):
            order = servers[rep % len(servers):] + servers[:rep % len(servers)]
            for name, cmd in order:
                try:
                    result = run_one(cmd, workload, args, use_perf, waits)
                except (RuntimeError, OSError) as err:
                    result = {"errors": 1, "failure": str(err), "msgs": 0}
                runs.setdefault((workload[0], name), []).append(result)
                log(f"[{workload[0]}] rep {rep + 1} {name}: "
                    f"{result.get('summary') or result.get('failure')} "
                    f"syscalls={result.get('syscalls')} waits={result.get('waits')} "
                    f"utime={result.get('utime_s')} "
                    f"stime={result.get('stime_s')}")
    idle: dict[str, list[dict]] = {}
    if args.idle_conns > 0:
        for rep in range(args.repeats):
            for name, cmd in servers:
                try:
                    result = run_idle(cmd, args)
                except (RuntimeError, OSError) as err:
                    result = {"error": str(err)}
                idle.setdefault(name, []).append(result)
                log(f"[idle {args.idle_conns}] rep {rep + 1} {name}: {result}")

    instructions: dict[tuple[str, str], dict] = {}
    if args.callgrind_seconds > 0 and shutil.which("valgrind"):
        for workload in workloads:
            for name, cmd in servers:
                try:
                    result = callgrind_instructions(cmd, workload, args)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
                    result = {"failure": str(err)}
                instructions[(workload[0], name)] = result
                log(f"[{workload[0]}] callgrind {name}: {result}")
    elif args.callgrind_seconds > 0:
        notes.append("instructions per message: n/a, valgrind not found "
                     "(Debian: `apt-get install -y valgrind`).")

    rows = [w[0] for w in workloads]

    def metric_cell(key: str, digits: int):
        def cell(row: str, server: str) -> str:
            base = med(runs.get((row, BASELINE), []), key)
            return fmt_cell(med(runs.get((row, server), []), key), base, digits)
        return cell

    out = []
    out.append(table("System calls per message (lower is better)", rows, names,
                     metric_cell("syscalls_per_msg", 2)))
    out.append(table("System calls per message other than epoll waits (lower is better)",
                     rows, names, metric_cell("other_syscalls_per_msg", 2)))
    out.append(table("epoll waits per message (events per wait: higher when a server is "
                     "busier; load-bound here: report, do not rank)", rows, names,
                     metric_cell("waits_per_msg", 3)))
    user_how = (f"total CPU x user share of {args.user_sampling} Hz cpu-clock samples"
                if args.user_sampling > 0 and use_perf else "rusage ru_utime")
    out.append(table(f"Server user-space CPU per message, ns ({user_how}; lower is better)",
                     rows, names, metric_cell("user_ns_per_msg", 0)))
    out.append(table("Server user-space CPU per message without the sample right after each "
                     "system call, ns (the server's own code; lower is better)",
                     rows, names, metric_cell("user_own_ns_per_msg", 0)))
    if args.user_sampling <= 0 or not use_perf:
        notes.append("user CPU without the sample right after each system call: n/a, needs "
                     "perf and --user-sampling > 0.")
    after_failures = sorted({r["after_syscall_failure"] for rs in runs.values() for r in rs
                             if r.get("after_syscall_frac") is None
                             and "after_syscall_failure" in r})
    if after_failures:
        notes.append("user CPU without the sample right after each system call: n/a where "
                     "the samples could not be placed on instructions (needs objdump and "
                     "readelf, and the mmap events in perf.data): " + "; ".join(after_failures))
    if instructions:
        def ir_cell(row: str, server: str) -> str:
            base = instructions.get((row, BASELINE), {}).get("ir_per_msg")
            return fmt_cell(instructions.get((row, server), {}).get("ir_per_msg"), base, 0)
        out.append(table(f"Server user-space instructions per message (callgrind: runs of "
                         f"{args.callgrind_seconds:g} and {2 * args.callgrind_seconds:g} s "
                         "under valgrind, difference over difference; lower is better)",
                         rows, names, ir_cell))
    out.append(table("Server total CPU (user + system) per message, ns (lower is better)",
                     rows, names, metric_cell("cpu_ns_per_msg", 0)))
    out.append(table("Messages per second (load-bound here: report, do not rank)", rows,
                     names, metric_cell("msgs_per_s", 0)))
    out.append(table("Peak server RSS during the run, KiB", rows, names,
                     metric_cell("rss_kib", 0)))
    if idle:
        base = med(idle.get(BASELINE, []), "kib_per_conn")
        cells = [fmt_cell(med(idle.get(n, []), "kib_per_conn"), base, 2) for n in names]
        held = [fmt_cell(med(idle.get(n, []), "held_kib"), None, 0) for n in names]
        out.append(f"### Memory with {args.idle_conns:,} idle connections (each echoed once)\n\n"
                   "| | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names) + "\n"
                   "| RSS growth per connection, KiB | " + " | ".join(cells) + " |\n"
                   "| RSS held, KiB | " + " | ".join(held) + " |\n")
    errors = {n: sum(r.get("errors", 0) for (row, s), rs in runs.items() if s == n for r in rs)
              for n in names}
    failures = [f"{row} / {s}: {r['failure']}" for (row, s), rs in runs.items()
                for r in rs if "failure" in r]
    failures += [f"idle / {n}: {r['error']}" for n, rs in idle.items() for r in rs
                 if "error" in r]
    failures += [f"callgrind {row} / {s}: {r['failure']}" for (row, s), r in instructions.items()
                 if "failure" in r]
    if any(errors.values()):
        notes.append(f"load-generator errors per server (should all be 0): {errors}")
    notes += failures
    tables = "\n".join(out)
    print(tables)
    for note in notes:
        print(f"- {note}")

    command = shlex.join(["python3", *sys.argv])
    kind = "QUICK SMOKE RUN (1 repeat, not for ranking)" if args.quick else \
        f"{args.repeats} repeats, medians"
    example = next((r["load_cmd"] for rs in runs.values() for r in rs if "load_cmd" in r), "")
    doc = [
        "# Echo server benchmark results", "",
        f"{kind}; {args.duration:g} s of load per run; generated {started:%Y-%m-%d %H:%M UTC} "
        "by `bench/run.py`. How to read: [README.md](README.md).", "",
        "Each cell: median over the repeats, then the ratio to raw-epoll. Servers pinned to "
        f"core {args.server_core}, load generator to core {args.load_core}.", "",
        "## Command", "", "```", command, "```", "",
        f"Load generator: `{args.load}`; e.g. `{example}`", "",
        "## Machine", "", *[f"- {fact}" for fact in facts], "",
        "## Results", "", tables,
    ]
    if notes:
        doc += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    doc += ["<details><summary>Every run</summary>", "",
            "| workload | server | msgs | msgs/s | syscalls | waits | ru_utime s | ru_stime s "
            "| sampled user share | user share right after a syscall | peak RSS KiB | p99 us "
            "| errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def num(value, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    for (row, name), rs in runs.items():
        for r in rs:
            doc.append(f"| {row} | {name} | {r.get('msgs')} | {num(r.get('msgs_per_s'), 0)} | "
                       f"{r.get('syscalls', 'n/a')} | {r.get('waits', 'n/a')} | "
                       f"{num(r.get('utime_s'), 6)} | {num(r.get('stime_s'), 6)} | "
                       f"{num(r.get('user_frac'), 4)} | {num(r.get('after_syscall_frac'), 4)} | "
                       f"{r.get('rss_kib', 'n/a')} | {r.get('p99_us', 'n/a')} | "
                       f"{r.get('errors')} |")
    doc += ["", "</details>", ""]
    # bench/broker.py's section lives in the same file: keep it.
    kept = re.search(r"<!-- broker:begin -->.*<!-- broker:end -->\n", Path(args.out).read_text()
                     if Path(args.out).exists() else "", re.S)
    Path(args.out).write_text("\n".join(doc) + ("\n" + kept.group(0) if kept else ""))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
