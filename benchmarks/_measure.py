"""Shared by the benchmark scripts: run a command as a child process, time it, read its own peak RSS."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time


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
