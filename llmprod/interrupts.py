"""Ctrl-C that long library calls cannot lose.

Python raises KeyboardInterrupt wherever the main thread happens to be; when that is a finalizer
(`__del__`, a weakref callback, which heavy tensor code runs all the time), Python prints
"Exception ignored" and carries on, and a quantization run goes on for minutes after Ctrl-C. Inside
`latched()` the signal is also remembered, and `check()` (called at every decoder layer) raises it
again until it is handled.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_pending = False


def check() -> None:
    if _pending:
        raise KeyboardInterrupt


def _handler(signum, frame) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


@contextmanager
def latched() -> Iterator[None]:
    global _pending
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # not ours to change (a thread, or a host application with its own handler)
        return
    _pending = False
    previous = signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _pending = False
