"""Shared by the benchmark scripts: run a command as a child process, time it, read its own peak RSS."""

from __future__ import annotations

import os
import subprocess
import time


def run_measured(argv: list[str], env: dict | None = None) -> dict:
    """Wall seconds and the child's own peak resident memory (from wait4, not a polled guess)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    out_chunks = []
    # Read stdout while waiting so a chatty child never blocks on a full pipe.
    out_chunks.append(proc.stdout.read())
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    stderr = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {"seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024,
            "stdout": b"".join(out_chunks).decode(errors="replace")}


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
