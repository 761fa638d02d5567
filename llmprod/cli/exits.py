"""Runs a command body and maps the error tree to exit codes, in one place for every command."""

from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager
from typing import Iterator

import typer

from llmprod.errors import EXIT_FAILED, LlmprodError, OperationFailed
from llmprod.output import Output

EXIT_INTERRUPTED = 130  # the shell convention for SIGINT


def debug_enabled() -> bool:
    return os.environ.get("LLMPROD_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


@contextmanager
def command_output(json_mode: bool = False) -> Iterator[Output]:
    """`with command_output(json) as out:` around a command body.

    LlmprodError → its one-line message and exit code; Ctrl-C → exit 130; anything else is a bug:
    one line plus how to get the traceback. LLMPROD_DEBUG=1 adds the traceback to every case.
    """
    out = Output(json_mode=json_mode)
    try:
        yield out
    except LlmprodError as err:
        _traceback_if_debug()
        out.error(err)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        _traceback_if_debug()
        out.error(OperationFailed("interrupted", hint="nothing was left half-written"))
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a wall of text
        _traceback_if_debug()
        err = OperationFailed(f"internal error: {type(exc).__name__}: {exc}",
                              hint="set LLMPROD_DEBUG=1 for the traceback and report it")
        out.error(err)
        raise typer.Exit(EXIT_FAILED) from None


def _traceback_if_debug() -> None:
    if debug_enabled():
        traceback.print_exc(file=sys.stderr)
