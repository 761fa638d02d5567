"""A Ctrl-C swallowed by a finalizer is raised again at the next check."""

from __future__ import annotations

import os
import signal
import time

import pytest

from llmprod import interrupts


class SignalInFinalizer:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here, inside __del__, where Python ignores what it raises


def test_a_swallowed_interrupt_is_raised_again_by_check():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background shell may ignore it
    try:
        with interrupts.latched():
            interrupts.check()  # nothing pending
            obj = SignalInFinalizer()
            del obj  # KeyboardInterrupt raised in the finalizer and ignored by Python
            with pytest.raises(KeyboardInterrupt):
                interrupts.check()
        interrupts.check()  # cleared on the way out
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
