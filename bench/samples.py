"""What share of a server's cpu-clock samples is its own user-space code.

`perf record -e cpu-clock` splits a server's CPU into user and kernel time far
better than the tick-based rusage split, but on this VM about half of every
server's user samples sit on the instruction right after a `syscall`: a timer
interrupt that arrives while the kernel returns from a system call (interrupts
off) is taken on that first user instruction, so those samples are kernel-exit
time charged to user mode, the same per call for every server. This module
finds them (perf's mmap events map each sample to a file offset, objdump finds
the offsets that follow a system-call instruction) so that run.py can report
the user time of the server's own code as well. Standard library only.
"""

from __future__ import annotations

import os
import re
import subprocess

# System-call instruction -> its length: the sample skid lands at address + length.
SYSCALL_INSNS = {"syscall": 2}  # x86-64, 0f 05
# "PERF_RECORD_MMAP2 PID/TID: [0xSTART(0xLEN) @ 0xPGOFF MAJ:MIN INODE GEN]: r-xp PATH"
MMAP_RE = re.compile(r"PERF_RECORD_MMAP2? \S+: \[(0x[0-9a-f]+)\((0x[0-9a-f]+)\) "
                     r"@ (0x[0-9a-f]+|0)([^\]]*)\]: (\S+) (.+)$")
SAMPLE_RE = re.compile(r"\s*([0-9a-f]+) \((.*)\)$")
OBJDUMP_RE = re.compile(r"\s*([0-9a-f]+):\s+(\S+)")


def is_kernel_ip(ip: str) -> bool:
    return len(ip) == 16 and ip.startswith("ffff")  # x86-64 kernel half


def sample_shares(perf_data: str) -> dict:
    """Share of cpu-clock samples taken in user space ("user_frac"), and share of all
    samples that are user samples on the instruction right after a system-call
    instruction ("after_syscall_frac"). A timer interrupt that arrives while the kernel
    returns from a system call (interrupts off) is taken on that first user instruction,
    so those samples are kernel-exit time charged to user mode, the same per call for
    every server. Reasons for a missing share go to "after_syscall_failure"."""
    try:
        script = subprocess.run(
            ["perf", "script", "-i", perf_data, "--show-mmap-events", "-F", "ip,dso"],
            capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"user_frac": None, "after_syscall_failure": f"perf script: {err}"}
    maps: list[tuple[int, int, int, str, int | None]] = []  # start, len, pgoff, path, inode
    user: dict[tuple[str, int | None, int], int] = {}  # (path, inode, file offset) -> samples
    unmapped = kernel = 0
    for line in script.stdout.splitlines():
        mmap = MMAP_RE.search(line)
        if mmap:
            if "x" in mmap.group(5):
                ident = re.match(r"\s*[0-9a-f]+:[0-9a-f]+ (\d+)", mmap.group(4))
                maps.append((int(mmap.group(1), 16), int(mmap.group(2), 16),
                             int(mmap.group(3), 16), mmap.group(6),
                             int(ident.group(1)) if ident else None))
            continue
        sample = SAMPLE_RE.match(line)
        if not sample:
            continue
        if is_kernel_ip(sample.group(1)):
            kernel += 1
            continue
        ip = int(sample.group(1), 16)
        # Newest mapping first: the file order is time order, so a later mmap of the
        # same range replaces an earlier one.
        for start, length, pgoff, path, inode in reversed(maps):
            if start <= ip < start + length:
                key = (path, inode, ip - start + pgoff)
                user[key] = user.get(key, 0) + 1
                break
        else:
            unmapped += 1
    users = sum(user.values()) + unmapped
    total = users + kernel
    if total < 100:
        why = f"{total} samples" + (f", perf script: {script.stderr.strip()[-200:]}"
                                    if script.returncode != 0 else "")
        return {"user_frac": None, "after_syscall_failure": why}
    result: dict = {"user_frac": users / total}
    if users and not maps:
        result["after_syscall_failure"] = "no mmap events in perf.data"
        return result
    after = 0
    for path, inode in {(path, inode) for path, inode, _ in user}:
        offsets, failure = after_syscall_offsets(path, inode)
        if offsets is None:
            result["after_syscall_failure"] = f"{path}: {failure}"
            return result
        after += sum(n for (p, i, off), n in user.items()
                     if p == path and i == inode and off in offsets)
    result["after_syscall_frac"] = after / total
    return result


# (path, inode, mtime) -> file offsets right after a system-call instruction, or why not.
_AFTER_SYSCALL: dict[tuple[str, int, int], tuple[frozenset[int] | None, str]] = {}


def after_syscall_offsets(path: str, inode: int | None) -> tuple[frozenset[int] | None, str]:
    """File offsets of the instructions that directly follow a system-call instruction
    in the mapped file `path` (disassembled once per file version), or (None, why).
    Offsets, not addresses, because that is what a sample maps to: ip - mapping start
    + mapping file offset. `inode` from the mmap event guards against a file rebuilt
    since it was mapped."""
    if not path.startswith("/"):
        return frozenset(), ""  # [vdso], [vsyscall], anonymous code: no file to read
    try:
        stat = os.stat(path)
    except OSError as err:
        return None, f"cannot stat: {err}"
    if inode is not None and inode not in (0, stat.st_ino):
        return None, "file replaced since it was mapped"
    key = (path, stat.st_ino, stat.st_mtime_ns)
    if key not in _AFTER_SYSCALL:
        _AFTER_SYSCALL[key] = disassemble_after_syscall(path)
    return _AFTER_SYSCALL[key]


def exec_segments(path: str) -> tuple[list[tuple[int, int, int]] | None, str]:
    """(vaddr, memsz, file offset) of each executable LOAD segment, by readelf -lW:
    converts objdump's virtual addresses to file offsets."""
    try:
        out = subprocess.run(["readelf", "-lW", path], capture_output=True, text=True,
                             timeout=60, check=False)
    except FileNotFoundError:
        return None, "readelf not found (Debian: `apt-get install -y binutils`)"
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"readelf: {err}"
    segments = []
    for line in out.stdout.splitlines():
        # LOAD Offset VirtAddr PhysAddr FileSiz MemSiz Flg(R E / RWE ...) Align
        fields = line.split()
        if len(fields) >= 8 and fields[0] == "LOAD" and "E" in "".join(fields[6:-1]):
            segments.append((int(fields[2], 16), int(fields[5], 16), int(fields[1], 16)))
    return (segments, "") if segments else (None, "no executable LOAD segment")


def disassemble_after_syscall(path: str) -> tuple[frozenset[int] | None, str]:
    segments, failure = exec_segments(path)
    if segments is None:
        return None, failure
    try:
        out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path],
                             capture_output=True, text=True, timeout=300, check=False)
    except FileNotFoundError:
        return None, "objdump not found (Debian: `apt-get install -y binutils`)"
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"objdump: {err}"
    if out.returncode != 0:
        return None, f"objdump: {out.stderr.strip()[-200:]}"
    offsets = set()
    for line in out.stdout.splitlines():
        insn = OBJDUMP_RE.match(line)
        if insn is None or insn.group(2) not in SYSCALL_INSNS:
            continue
        # The return address: the instruction right after, even across a symbol boundary.
        addr = int(insn.group(1), 16) + SYSCALL_INSNS[insn.group(2)]
        for vaddr, memsz, offset in segments:
            if vaddr <= addr < vaddr + memsz:
                offsets.add(addr - vaddr + offset)
                break
    return frozenset(offsets), ""
