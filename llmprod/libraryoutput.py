"""Keep the libraries' own output (tqdm bars, loguru, warnings, prints) out of llmprod's streams.

While a backend runs, Python-level stdout and stderr go to a log file; llmprod's Rich console was
created before and keeps the real stderr. llm-compressor configures loguru at import with a sink on
*stdout* (which would break `--json`); inside this block its records go to the log file, or to
stderr with `verbose`. On failure the caller names the log file, so nothing the libraries said is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

_LOGURU_FORMAT = "{time:YYYY-MM-DDTHH:mm:ss.SSSS} | {name} | {level} - {message}"


@contextlib.contextmanager
def library_output(verbose: bool, label: str, *, llmcompressor: bool = False) -> Iterator[Path | None]:
    fd, name = tempfile.mkstemp(prefix=f"llmprod-{label}-", suffix=".log")
    path = Path(name)
    loggers = [logging.getLogger(n) for n in ("torch", "transformers", "accelerate", "datasets")]
    levels = [lg.level for lg in loggers]
    failed = False
    with os.fdopen(fd, "w", buffering=1) as log, contextlib.ExitStack() as stack:
        if not verbose:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            stack.enter_context(contextlib.redirect_stderr(log))
            stack.enter_context(contextlib.redirect_stdout(log))
        handler = _own_loguru(sys.stderr if verbose else log) if llmcompressor else None
        try:
            yield None if verbose else path
        except KeyboardInterrupt:
            raise  # the user stopped it: nothing to diagnose, so the log goes too
        except BaseException:
            failed = True  # kept, and named in the error the caller raises
            raise
        finally:
            if handler is not None:
                from loguru import logger

                logger.remove(handler)
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
    if verbose or not failed:
        path.unlink(missing_ok=True)


def _own_loguru(sink) -> int:
    """Import llmcompressor (its import configures loguru), then replace its stdout sink with ours."""
    from llmprod.errors import require

    require("llmcompressor", "quantize")  # imported here so its import-time records land in the sink
    from loguru import logger

    logger.remove()
    logger.enable("llmcompressor")
    return logger.add(sink, level="INFO", format=_LOGURU_FORMAT)
