#!/usr/bin/env python3
"""Chat across servers: what does the Redis broker add per delivered line?

In one run, five configurations take the same chat load: one `rselectors chat-server`
alone (the baseline), then two and three chat servers sharing a room through one
`redis-server`, with `--broker-mode pubsub` and with `streams`. The load is
`rselectors load --chat N --senders S` with one `--addr` per server (listeners and
senders spread round-robin over the servers), 64-byte lines, a latency-bound shape
(pipeline 1) and a throughput-bound one (pipeline 16). Servers and Redis run on core 1,
the load generator on core 0 (`taskset`), as in fanout.py.

The load tool has no "ready" marker, so each measurement is two loads against the same
servers, of D/3 and D seconds: every process's CPU time (all its threads, from
/proc/PID/task/*/schedstat, exact; /proc/PID/stat's user+system ticks as a check) and
the deliveries are differences between the two, so connecting, the handshake and the
drain cancel out. Deliveries/s and latencies are the longer load's. A configuration
during whose loads other processes took CPU (the machine is shared) is run again after
the others (--max-others, --retries). Lost or duplicated lines fail the run, loudly. Results go to stdout and (full runs) to the broker section
of bench/RESULTS.md.

Python 3.11 standard library only. See bench/README.md, "Chat across servers (broker)".
"""

from __future__ import annotations

import argparse
import datetime
import glob
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fanout import (DEFAULT_REDIS, RedisServer, cpu_snapshot, install_redis, num,
                    redis_version, write_section)
from harness import Server, parse_summary, pin
from run import log, machine_facts

BENCH_DIR = Path(__file__).resolve().parent
ROOT_DIR = BENCH_DIR.parent
RSELECTORS = ROOT_DIR / "target" / "release" / "rselectors"
DEFAULT_CHAT = f"{RSELECTORS} -q chat-server"
DEFAULT_LOAD = f"{RSELECTORS} load"
BEGIN, END = "<!-- broker:begin -->", "<!-- broker:end -->"
BASELINE = "1 server"
# (name, chat servers, --broker-mode or None for no broker)
CONFIGS = [
    (BASELINE, 1, None),
    ("2, pubsub", 2, "pubsub"),
    ("2, streams", 2, "streams"),
    ("3, pubsub", 3, "pubsub"),
    ("3, streams", 3, "streams"),
]
# (name, listeners, --pipeline)
SHAPES = [
    ("30 L, pipeline 1", 30, 1),
    ("30 L, pipeline 16", 30, 16),
]
LINE_SIZE = 64
# No attempt is made again after this many seconds, so that a busy machine cannot stretch
# the run much past its usual ~2 minutes.
RETRY_UNTIL = 200
# The same senders in every configuration, so every one takes the same load; 6 spreads
# evenly over 1, 2 and 3 servers.
SENDERS = 6


def busy_seconds() -> float:
    """CPU time every core has spent busy since boot (/proc/stat), in seconds."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # - idle, iowait


def timeslices(pid: int) -> int:
    """How many times the process's threads have been put on a CPU (schedstat's third field)."""
    count = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            count += int(Path(path).read_text().split()[2])
        except (OSError, ValueError, IndexError):
            pass
    return count


def load_once(addrs: list[str], listeners: int, pipeline: int, seconds: float,
              pids: list[int], args) -> dict:
    """One load run; the load tool's summary, and each pid's CPU over the whole run."""
    cmd = pin(args.load_core) + shlex.split(args.load) + [
        "--chat", str(listeners), "--senders", str(args.senders), "--size", str(LINE_SIZE),
        "--pipeline", str(pipeline), "--duration", f"{seconds:g}"]
    for addr in addrs:
        cmd += ["--addr", addr]
    before = [cpu_snapshot(pid) for pid in pids]
    slices = sum(timeslices(pid) for pid in pids)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine = busy_seconds()
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"the load tool did not end within {seconds + 60:g} s") from err
    wall = time.monotonic() - started
    machine = busy_seconds() - machine
    after = [cpu_snapshot(pid) for pid in pids]
    slices = sum(timeslices(pid) for pid in pids) - slices
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = parse_summary(done.stdout)
    if "msgs" not in summary:
        raise RuntimeError(f"no summary from `{shlex.join(cmd)}` (exit {done.returncode}): "
                           f"{done.stderr.strip()[-600:]}")
    load_cpu = (children_after.ru_utime + children_after.ru_stime
                - children.ru_utime - children.ru_stime)
    cpu_ns = [a[0] - b[0] for a, b in zip(after, before)]
    return {"cmd": shlex.join(cmd), "summary": summary, "exit": done.returncode,
            "stderr": done.stderr.strip()[-600:], "wall": wall, "load_cpu": load_cpu,
            "others": max(0.0, machine - load_cpu - sum(cpu_ns) / 1e9) / wall, "cpu_ns": cpu_ns,
            "slices": slices,
            "cpu_stat_s": [a[1] - b[1] for a, b in zip(after, before)]}


def measure(addrs: list[str], pids: list[int], shape: tuple, args) -> dict:
    """A short and a long load; the costs of the difference between them."""
    _, listeners, pipeline = shape
    short = load_once(addrs, listeners, pipeline, args.duration / 3, pids, args)
    long = load_once(addrs, listeners, pipeline, args.duration, pids, args)
    s = long["summary"]
    result: dict = {"cmd": long["cmd"]}
    for key in ("deliveries_per_s", "p50_us", "p99_us", "xp50_us", "xp99_us"):
        result[key] = float(s[key]) if key in s else None
    if len(addrs) == 1:  # nothing crosses: the summary's cross-server figures are empty
        result["xp50_us"] = result["xp99_us"] = None
    result["lost"] = sum(int(r["summary"].get("lost", 0)) for r in (short, long))
    result["dup"] = sum(int(r["summary"].get("dup", 0)) for r in (short, long))
    result["errors"] = sum(int(r["summary"].get("errors", 1)) for r in (short, long))
    result["load_busy"] = long["load_cpu"] / long["wall"] if long["wall"] > 0 else None
    result["others"] = long["others"]
    dels = int(s["msgs"]) - int(short["summary"]["msgs"])
    lines = int(s.get("lines", 0)) - int(short["summary"].get("lines", 0))
    result["deliveries"], result["lines"] = dels, lines
    if dels <= 0 or lines <= 0:
        result["failure"] = f"the longer load delivered no more ({dels} deliveries more)"
        return result
    result["ns_per_del"] = [(lg - sh) / dels for lg, sh in zip(long["cpu_ns"], short["cpu_ns"])]
    result["stat_ms"] = [(lg - sh) * 1e3 for lg, sh in
                         zip(long["cpu_stat_s"], short["cpu_stat_s"])]
    result["slices_per_line"] = (long["slices"] - short["slices"]) / lines
    window = long["wall"] - short["wall"]
    if window > 0:
        result["server_core_busy"] = (sum(long["cpu_ns"]) - sum(short["cpu_ns"])) / 1e9 / window
    bad = [r["stderr"] for r in (short, long) if r["exit"] != 0 and r["stderr"]]
    if bad:
        result["load_stderr"] = bad[-1]
    return result


def run_config(config: tuple, args) -> dict[str, dict]:
    """Starts the configuration's servers (and Redis), measures every shape, stops them."""
    _, count, mode = config
    workdir = tempfile.TemporaryDirectory()
    redis = None
    servers: list[Server] = []
    try:
        chat = shlex.split(args.chat)
        if mode is not None:
            redis = RedisServer(shlex.split(args.redis), args.server_core, workdir.name)
            chat += ["--broker", f"redis://{redis.addr}", "--broker-mode", mode]
        servers = [Server(chat, args.server_core) for _ in range(count)]
        addrs = [s.addr for s in servers]
        pids = [s.pid for s in servers] + ([redis.pid] if redis else [])
        # Every link joined and the stream or channel in use before anything is measured.
        load_once(addrs, 2, 1, 0.2, pids, args)
        out = {}
        for shape in args.shape_list:
            try:
                out[shape[0]] = measure(addrs, pids, shape, args)
            except (RuntimeError, OSError, ValueError, KeyError) as err:
                out[shape[0]] = {"failure": str(err)}
            dead = [i + 1 for i, s in enumerate(servers) if s.proc.poll() is not None]
            if dead or (redis and redis.proc.poll() is not None):
                raise RuntimeError(f"a process ended under load: chat servers {dead}, "
                                   f"redis {'ended' if redis and redis.proc.poll() else 'up'}")
        return out
    except (RuntimeError, OSError, ValueError, KeyError) as err:
        return {shape[0]: {"failure": str(err)} for shape in args.shape_list}
    finally:
        for server in servers:
            server.stop()
        if redis:
            redis.stop()
        workdir.cleanup()


def disturbance(runs: dict[str, dict]) -> float:
    """The most CPU other processes took during any of the loads, in cores."""
    return max((r.get("others") or 0.0 for r in runs.values()), default=0.0)


def log_runs(config: tuple, repeat: int, runs: dict[str, dict], started: float) -> list[str]:
    """Logs one configuration's runs; names those that failed, lost or duplicated lines."""
    bad = []
    for shape_name, run in runs.items():
        log(f"[{time.monotonic() - started:4.0f}s] {config[0]}, {shape_name} #{repeat + 1}: "
            + (f"FAILED: {run['failure']}" if "failure" in run else
               f"{num(run['deliveries_per_s'], 0)} del/s, p50 {num(run['p50_us'], 0)} µs, "
               f"xp50 {num(run['xp50_us'], 0)} µs, {num(run.get('total_ns_per_del'), 0)} ns/del "
               f"({' + '.join(num(v, 0) for v in run.get('ns_per_del', []))}), "
               f"servers' core busy {num(run.get('server_core_busy'), 2)}, "
               f"load busy {num(run['load_busy'], 2)}, "
               f"other processes {num(run.get('others'), 2)}")
            + (f"\n    {run['load_stderr']}" if run.get("load_stderr") else ""))
        if run.get("lost") or run.get("dup"):
            log(f"!!! broker: {config[0]}, {shape_name} #{repeat + 1}: "
                f"{run['lost']} LOST, {run['dup']} DUPLICATED: must be 0")
        if run.get("failure") or run.get("errors") or run.get("lost") or run.get("dup"):
            bad.append(f"{config[0]} / {shape_name} #{repeat + 1}")
    return bad


def measure_all(args, started: float) -> tuple[dict, int, list[str]]:
    """Every (repeat, configuration), then again, in up to --retries passes, those during
    whose loads other processes took more than --max-others cores (later, when the machine
    may be quiet again), keeping the least disturbed attempt; an attempt that failed or
    lost or duplicated lines is kept and named. The runs, how many were redone, the bad."""
    attempts: dict[tuple[int, str], dict[str, dict]] = {}
    order = []
    bad: list[str] = []
    for repeat in range(args.repeats):
        # Rotated every repeat, so a burst of background load does not always hit the same one.
        shift = repeat % len(args.config_list)
        for config in args.config_list[shift:] + args.config_list[:shift]:
            runs = {name: total({**run, "servers": config[1]})
                    for name, run in run_config(config, args).items()}
            bad += log_runs(config, repeat, runs, started)
            attempts[repeat, config[0]] = runs
            order.append((repeat, config))
    redone = 0
    for _ in range(args.retries):
        busy = [(repeat, config) for repeat, config in order
                if disturbance(attempts[repeat, config[0]]) > args.max_others]
        for repeat, config in busy:
            if time.monotonic() - started > RETRY_UNTIL:
                break
            kept = attempts[repeat, config[0]]
            log(f"broker: {config[0]} #{repeat + 1}: other processes took "
                f"{disturbance(kept):.2f} cores: again")
            runs = {name: total({**run, "servers": config[1]})
                    for name, run in run_config(config, args).items()}
            redone += 1
            problems = log_runs(config, repeat, runs, started)
            bad += problems
            clean = not any(r.get("failure") or r.get("errors") or r.get("lost") or r.get("dup")
                            for r in kept.values())
            if clean and not problems and disturbance(runs) < disturbance(kept):
                attempts[repeat, config[0]] = runs
    results: dict = {c[0]: {s[0]: [] for s in args.shape_list} for c in args.config_list}
    for repeat, config in sorted(order, key=lambda item: item[0]):
        for name, run in attempts[repeat, config[0]].items():
            results[config[0]][name].append(run)
    return results, redone, bad


def median(runs: list[dict], key: str, index: int | None = None) -> float | None:
    values = []
    for run in runs:
        if run.get("failure") or run.get(key) is None:
            continue
        values.append(run[key] if index is None else run[key][index])
    return statistics.median(values) if values else None


def total(run: dict) -> dict:
    """Adds the sums over the processes: CPU per delivery and Redis's per line."""
    if "ns_per_del" in run:
        run["total_ns_per_del"] = sum(run["ns_per_del"])
        run["servers_ns_per_del"] = run["ns_per_del"][:run["servers"]]
        if len(run["ns_per_del"]) > run["servers"]:
            run["redis_ns_per_del"] = run["ns_per_del"][-1]
            run["redis_ns_per_line"] = run["ns_per_del"][-1] * run["deliveries"] / run["lines"]
    return run


def times(value: float | None, base: float | None) -> str:
    return "n/a" if value is None or not base else f"**{value / base:.2f}**"


def report(results: dict, args) -> str:
    out = []
    for shape in args.shape_list:
        name, listeners, pipeline = shape
        out += [f"### {listeners} listeners, {args.senders} senders, pipeline {pipeline}", "",
                "| servers, mode | del/s | x 1 server | p50 µs | p99 µs | xp50 µs | xp99 µs "
                "| lost / dup | CPU ns/del, each chat server | redis | total | x 1 server "
                "| broker adds | redis ns/line |",
                "|---|" + "---:|" * 13]
        base = results[BASELINE][name] if BASELINE in results else []
        base_rate, base_cpu = median(base, "deliveries_per_s"), median(base, "total_ns_per_del")
        for config in args.config_list:
            runs = results[config[0]][name]
            count = config[1]
            rate, cpu = median(runs, "deliveries_per_s"), median(runs, "total_ns_per_del")
            each = " / ".join(num(median(runs, "servers_ns_per_del", i), 0) for i in range(count))
            lost = sum(r.get("lost", 0) for r in runs)
            dup = sum(r.get("dup", 0) for r in runs)
            failed = sum(1 for r in runs if r.get("failure") or r.get("errors"))
            loss = f"{lost} / {dup}" if not (lost or dup) else f"**{lost} / {dup} (NOT 0)**"
            if failed:
                loss += f" **{failed} failed**"
            extra = "n/a" if cpu is None or base_cpu is None or config[0] == BASELINE \
                else f"{cpu - base_cpu:+,.0f}"
            out.append(f"| {config[0]} | " + " | ".join([
                num(rate, 0), times(rate, base_rate),
                num(median(runs, "p50_us"), 0), num(median(runs, "p99_us"), 0),
                num(median(runs, "xp50_us"), 0), num(median(runs, "xp99_us"), 0), loss,
                each, num(median(runs, "redis_ns_per_del"), 0), num(cpu, 0),
                times(cpu, base_cpu), extra,
                num(median(runs, "redis_ns_per_line"), 0)]) + " |")
        out.append("")
    out += ["<details><summary>Every run</summary>", "",
            "| shape | servers, mode | repeat | deliveries (window) | lines | lost | dup | "
            "errors | CPU ns/del per process (servers, redis) | CPU ms from /proc/PID/stat "
            "| p50 µs | xp50 µs | runs per line | server core busy | load busy "
            "| other processes |",
            "|---|---|---:|" + "---:|" * 13]
    for shape in args.shape_list:
        for config in args.config_list:
            for i, run in enumerate(results[config[0]][shape[0]], 1):
                if "failure" in run and "deliveries" not in run:
                    out.append(f"| {shape[0]} | {config[0]} | {i} | failed: {run['failure']} |"
                               + " |" * 12)
                    continue
                per = " / ".join(num(v, 0) for v in run.get("ns_per_del", []))
                stat = " / ".join(num(v, 0) for v in run.get("stat_ms", []))
                out.append(f"| {shape[0]} | {config[0]} | {i} | {run['deliveries']:,} | "
                           f"{run['lines']:,} | {run['lost']} | {run['dup']} | {run['errors']}"
                           f"{' ' + run['failure'] if 'failure' in run else ''} | {per} | "
                           f"{stat} | {num(run['p50_us'], 0)} | {num(run['xp50_us'], 0)} | "
                           f"{num(run.get('slices_per_line'), 2)} | "
                           f"{num(run.get('server_core_busy'), 2)} | "
                           f"{num(run['load_busy'], 2)} | {num(run.get('others'), 2)} |")
    out += ["", "</details>", ""]
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds of the longer load of each measurement (the shorter: "
                             "a third of it)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per (configuration, shape)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 repeat x 1 s, nothing written to RESULTS.md")
    parser.add_argument("--configs", default="",
                        help="comma-separated 1-based configuration numbers (1: one server)")
    parser.add_argument("--shapes", default="", help="comma-separated 1-based shape numbers")
    parser.add_argument("--senders", type=int, default=SENDERS,
                        help="load --senders, the same for every configuration")
    parser.add_argument("--chat", default=DEFAULT_CHAT,
                        help="chat server command (+ --addr, --broker, --broker-mode)")
    parser.add_argument("--load", default=DEFAULT_LOAD, help="load generator command")
    parser.add_argument("--redis", default=DEFAULT_REDIS,
                        help="redis-server command (+ --bind --port --dir)")
    parser.add_argument("--max-others", type=float, default=0.2,
                        help="cores other processes may take during a load before the "
                             "configuration is measured again")
    parser.add_argument("--retries", type=int, default=2,
                        help="times a configuration is measured again while the machine is "
                             f"busy (none after {RETRY_UNTIL} s; --quick: 0)")
    parser.add_argument("--install", action="store_true",
                        help="if redis-server is missing, apt-get install it (Debian, root)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--out", default=None,
                        help="file whose broker section to (re)write; default bench/RESULTS.md "
                             "for full runs, none for --quick; '-': none")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.duration, args.retries = 1, 1.0, 0
    if args.out is None:
        args.out = "-" if args.quick else str(BENCH_DIR / "RESULTS.md")
    pinning = not args.no_pin and shutil.which("taskset") and (os.cpu_count() or 1) >= 2
    args.server_core, args.load_core = (1, 0) if pinning else (None, None)
    args.config_list = pick(CONFIGS, args.configs, parser)
    args.shape_list = pick(SHAPES, args.shapes, parser)
    return args


def pick(items: list[tuple], numbers: str, parser: argparse.ArgumentParser) -> list[tuple]:
    if not numbers:
        return items
    try:
        picked = {int(x) for x in numbers.split(",")}
    except ValueError:
        parser.error(f"expected comma-separated numbers: {numbers!r}")
    if not picked <= set(range(1, len(items) + 1)):
        parser.error(f"numbers from 1 to {len(items)}: {numbers!r}")
    return [item for i, item in enumerate(items, 1) if i in picked]


def git(*words: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT_DIR), *words], capture_output=True,
                          text=True, check=False).stdout.strip()


def main() -> int:
    args = parse_args()
    redis_bin = shlex.split(args.redis)[0]
    needs_redis = any(c[2] for c in args.config_list)
    if needs_redis and not shutil.which(redis_bin) and args.install and shutil.which("apt-get"):
        install_redis("broker")
    missing = [what for what, ok in [
        (f"redis-server ({redis_bin}; Debian: apt-get install -y redis-server, or --install)",
         not needs_redis or shutil.which(redis_bin)),
        (f"{shlex.split(args.chat)[0]} (cargo build --release -p rselectors-cli)",
         Path(shlex.split(args.chat)[0]).is_file() or shutil.which(shlex.split(args.chat)[0]))]
        if not ok]
    if missing:
        for what in missing:
            log(f"broker: missing: {what}")
        return 2
    if needs_redis:
        log(f"broker: redis-server: {shutil.which(redis_bin)} ({redis_version(redis_bin)})")
    facts = machine_facts()
    started = time.monotonic()
    results, redone, bad = measure_all(args, started)
    tables = report(results, args)
    print(tables)
    if bad:
        log(f"!!! broker: {len(bad)} runs failed or lost or duplicated lines: {', '.join(bad)}")
    facts.append("load average at the end: "
                 + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    others = [r["others"] for shapes in results.values() for runs in shapes.values()
              for r in runs if r.get("others") is not None]
    if others:
        busy = statistics.median(others)
        facts.append(f"other processes took {busy:.2f} cores (median over the loads, "
                     f"{min(others):.2f}-{max(others):.2f}; {redone} configuration runs "
                     f"measured again because others took more than {args.max_others:g})"
                     + (": NOT QUIET, rates, latencies and CPU are disturbed" if busy > 0.2
                        else ""))
        if busy > 0.2:
            log(f"!!! broker: other processes took {busy:.2f} cores (median) during the loads: "
                "the figures are disturbed")
    if args.out != "-":
        dirty = git("status", "--porcelain", "--", "crates")
        example = next((r["cmd"] for shapes in reversed(results.values())
                        for runs in shapes.values() for r in runs if "cmd" in r), "")
        section = "\n".join([
            "## Chat across servers: what the Redis broker adds", "",
            f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
            f"`{shlex.join(['python3', 'bench/broker.py', *sys.argv[1:]])}` at commit "
            f"{git('rev-parse', '--short', 'HEAD')}{' (crates/ modified)' if dirty else ''}; "
            f"{args.repeats} repeats, medians; chat servers and redis-server on core 1, the "
            "load generator on core 0, all on loopback. How to read: "
            "[README.md](README.md#chat-across-servers-broker).", "",
            "Loopback on this 2-core machine cannot show scale-out gains: every chat server "
            "and Redis share one core, so more servers only split the same work and add the "
            "broker's. What the tables show is the overhead the broker adds per delivery: the "
            "CPU each chat server and redis-server spend, and the latency a line takes to "
            "cross from one server to another (xp50/xp99). On separate machines each server "
            "would write to its own clients on its own cores, so the fan-out would scale with "
            "the servers; Redis's cost is per envelope (the lines one server gathered in a "
            "round of events: published once, read or pushed once by each server), not per listener, so it stays small next "
            "to the fan-out as rooms grow (redis ns/line); "
            "and a cross-server line would add one network round trip, to Redis and back, to "
            "the latency measured here.", "",
            f"Load: `load --chat N --senders {args.senders} --size {LINE_SIZE} --pipeline K` "
            f"with one `--addr` per server, e.g. `{example}`. Each measurement is two loads "
            f"against the same servers, of {args.duration / 3:g} and {args.duration:g} s: CPU "
            "(schedstat, all threads) and deliveries are their differences, so connecting, "
            "the handshake and the drain cancel out; rates and latencies are the longer "
            f"load's. Servers: `{args.chat}`; `{args.redis}`.", "",
            *([f"**Runs that failed, lost or duplicated lines (any attempt): {', '.join(bad)}.**",
               ""] if bad else []),
            "Machine: " + "; ".join(facts) + (f"; redis-server {redis_version(redis_bin)}"
                                              if needs_redis else "") + ".", "",
            tables])
        write_section(Path(args.out), section, BEGIN, END)
        log(f"broker: wrote the section of {args.out}")
    log(f"broker: {time.monotonic() - started:.0f} s" + (f", {len(bad)} bad runs" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
