"""Shared by the benchmark scripts: run a command as a child process, time it, read its own peak RSS; read
the live processes and one process's memory and open descriptors from /proc (Linux)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from llmprod.testing.servers import proc_stat


def run_measured(argv: list[str], env: dict | None = None) -> dict:
    """Wall seconds and the child's own peak resident memory (from wait4, not a polled guess).

    Output goes to files, not pipes: a child that fills an undrained pipe (progress bars on
    stderr) blocks forever.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {"seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024, "stdout": stdout}


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def processes() -> dict[int, tuple[int, str]]:
    """{pid: (process group, command line)} of every live process (zombies left out)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name, fields = proc_stat(int(entry.name))
            if fields[0] == "Z":
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            out[int(entry.name)] = (int(fields[2]), cmd or f"[{name}]")
        except (OSError, ValueError, IndexError):
            continue
    return out


def parent_of(pid: int) -> int | None:
    try:
        return int(proc_stat(pid)[1][1])
    except (OSError, ValueError, IndexError):
        return None


def engine_leader(serve_pid: int) -> int | None:
    """The engine `serve` runs now (a restart changes it): serve's child that leads its own process group."""
    return next((pid for pid, (group, cmd) in processes().items()
                 if pid == group and parent_of(pid) == serve_pid and " serve " in f" {cmd} "), None)


def rss_and_fds(pid: int) -> tuple[int, int]:
    """A live process's resident memory in bytes and its open file descriptors."""
    rss = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))
