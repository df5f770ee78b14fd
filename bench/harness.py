"""What bench/run.py and scripts/perf-budget share: a server started pinned to a
core (optionally under a wrapper such as valgrind) that announces its address,
the load generator's summary line, and instructions per message under callgrind.

Python 3.11 standard library only.
"""

from __future__ import annotations

import os
import re
import resource
import select
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path

LISTEN_RE = re.compile(rb"listening on (\S+)")


def pin(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None else []


def vm_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Server:
    """A running server process, pinned, with its listening address."""

    def __init__(self, cmd: list[str], core: int | None, wrapper: list[str] | None = None):
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            pin(core) + (wrapper or []) + cmd + ["--addr", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid  # taskset (and valgrind) exec the server: same pid
        self.addr = self._read_addr(timeout=60.0 if wrapper else 10.0)

    def _read_addr(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = b""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                seen += chunk
                match = LISTEN_RE.search(seen)
                if match and b"\n" in seen[match.end():] + b"\n":
                    return match.group(1).decode()
            if self.proc.poll() is not None:
                break
        self.stop()
        self.stderr.seek(0)
        raise RuntimeError(f"server did not print 'listening on ADDR': {seen!r} "
                           f"{self.stderr.read()[-500:]!r}")

    def stop(self, grace: float = 5.0) -> resource.struct_rusage | None:
        """SIGTERM, then wait4 for its rusage (SIGKILL after `grace` s)."""
        if self.proc.returncode is not None:
            return None
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                if self.proc.stdout:
                    self.proc.stdout.close()
                return usage
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                deadline = time.monotonic() + 5.0
            time.sleep(0.01)


def parse_summary(text: str) -> dict[str, str]:
    for line in reversed(text.splitlines()):
        if "msgs=" in line:
            return dict(f.split("=", 1) for f in line.split() if "=" in f)
    return {}


def callgrind_instructions(server_cmd, workload, args) -> dict:
    """User-space instructions the server executes per message, counted by
    callgrind: repeatable for a given binary and input, unlike sampled time.
    Two runs under load, of S and 2S seconds: the difference in instructions
    over the difference in messages, so that start-up, shutdown and setting
    up the connections cancel out. Under valgrind the server runs ~50x
    slower, so it finds more events per wait than at full speed: compare
    the columns of a row, not absolutes."""
    _, conns, size, mode, pipeline = workload
    points = []
    for seconds in (args.callgrind_seconds, 2 * args.callgrind_seconds):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "callgrind.out")
            wrapper = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
            server = Server(server_cmd, args.server_core, wrapper)
            try:
                load = subprocess.run(
                    pin(args.load_core) + shlex.split(args.load) + [
                        "--addr", server.addr, "--conns", str(conns), "--size", str(size),
                        "--duration", str(seconds), "--mode", mode,
                        "--pipeline", str(pipeline)],
                    capture_output=True, text=True, timeout=seconds + 120,
                    check=False, stdin=subprocess.DEVNULL)
            finally:
                server.stop(grace=60.0)
            summary = parse_summary(load.stdout)
            try:
                msgs, errors = int(summary.get("msgs", 0)), int(summary.get("errors", 1))
                text = Path(out).read_text(errors="replace")
            except (OSError, ValueError) as err:
                return {"failure": f"callgrind run: {err}"}
            match = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            if match is None or msgs <= 0 or errors != 0:
                return {"failure": f"callgrind run: no total or no clean load ({summary})"}
            points.append((int(match.group(1)), msgs))
    (ir1, msgs1), (ir2, msgs2) = points
    if msgs2 <= msgs1:
        return {"failure": f"callgrind runs: {msgs1} then {msgs2} messages"}
    return {"ir_per_msg": (ir2 - ir1) / (msgs2 - msgs1), "msgs": msgs2}
