"""Keep the libraries' own output (tqdm bars, loguru, warnings, prints) out of llmprod's stderr.

While a backend runs, Python-level stdout and stderr go to a log file; llmprod's Rich console was
created before and keeps the real stderr. With `verbose` nothing is redirected. On failure the
caller names the log file in the error, so nothing the libraries said is lost.
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


@contextlib.contextmanager
def library_output(verbose: bool, label: str) -> Iterator[Path | None]:
    if verbose:
        yield None
        return
    fd, name = tempfile.mkstemp(prefix=f"llmprod-{label}-", suffix=".log")
    path = Path(name)
    loggers = [logging.getLogger(n) for n in ("torch", "transformers", "accelerate", "datasets")]
    levels = [lg.level for lg in loggers]
    with os.fdopen(fd, "w", buffering=1) as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            from loguru import logger

            # llmcompressor re-enables its namespace when imported: import it before this block.
            for namespace in ("compressed_tensors", "llmcompressor"):
                logger.disable(namespace)
        except ImportError:
            pass
        try:
            with contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
                yield path
        except BaseException:
            log.flush()
            raise
        else:
            path.unlink(missing_ok=True)
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
            try:
                from loguru import logger

                for namespace in ("compressed_tensors", "llmcompressor"):
                    logger.enable(namespace)
            except ImportError:
                pass
            sys.stderr.flush()
