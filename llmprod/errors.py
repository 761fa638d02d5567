"""The error tree. Library code raises these; only `llmprod.cli.app` turns them into exit codes.

    LlmprodError                      base; never raised itself
     ├── InputError  (exit 2)         the user gave something we cannot use; the message says how to fix it
     │    ├── NotFoundError           a model, file or directory that does not exist
     │    ├── OfflineError            something needs the network and there is none (suggests a local file)
     │    ├── ConfigError             a recipe, policy or model config that does not validate
     │    ├── MissingExtraError       an optional dependency is not installed (names the extra)
     │    └── UsageError              the command line does not parse (unknown option, bad value, missing argument)
     ├── CheckFailed (exit 1)         the command ran and a check or gate said no (perplexity gate, ...)
     └── OperationFailed (exit 1)     the command ran and the work failed (engine crash, NaN logits, ...)

Every message is one line that says what is wrong and how to fix it. Exit codes: 0 ok, 1 a check
or an operation failed, 2 bad input or usage (Typer's own usage errors become UsageErrors: cli/usage.py).
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class LlmprodError(Exception):
    """Base of every error llmprod raises on purpose."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        return " ".join(text.split())


class InputError(LlmprodError):
    exit_code = EXIT_BAD_INPUT


class NotFoundError(InputError):
    pass


class OfflineError(InputError):
    pass


class ConfigError(InputError):
    pass


class UsageError(InputError):
    pass


class MissingExtraError(InputError):
    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"this command needs '{module}', which is not installed",
            hint=f"install it with: pip install 'llmprod[{extra}]' -c constraints.txt",
        )
        self.module = module
        self.extra = extra


class CheckFailed(LlmprodError):
    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, result: dict | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        # The full result still goes out (table or JSON) before the failure is reported.
        self.result = result


class OperationFailed(LlmprodError):
    exit_code = EXIT_FAILED


def require(module: str, extra: str):
    """Import an optional dependency or raise MissingExtraError naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the module exists but one of *its* imports is broken: show the real error
        raise MissingExtraError(module, extra) from exc
