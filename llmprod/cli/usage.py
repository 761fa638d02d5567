"""Typer's own usage errors in the shape of every other error.

An unknown option, a value that does not parse, a missing argument: Typer would print a boxed message in
its parser's words and nothing on stdout. Here each is one line on stderr, "error: ... (how to fix)",
exit 2, and under --json also the one {"error": {...}} document on stdout, as `command_output` does for
the errors a command raises. The root command's group class runs Typer in non-standalone mode to see them.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Sequence

from typer.core import TyperGroup

from llmprod.errors import EXIT_BAD_INPUT, UsageError

# The parser's words → ours.
PLAIN = {
    "Input should be a valid integer, unable to parse string as an integer": "expected a whole number",
    "Input should be a valid integer": "expected a whole number",
    "Input should be a valid number, unable to parse string as a number": "expected a number",
    "Input should be a valid number": "expected a number",
    "Input should be a valid boolean, unable to interpret input": "expected true or false",
}
_BOUNDS = [(re.compile(r"Input should be less than or equal to (\S+)"), r"must be at most \1"),
           (re.compile(r"Input should be greater than or equal to (\S+)"), r"must be at least \1"),
           (re.compile(r"Input should be less than (\S+)"), r"must be less than \1"),
           (re.compile(r"Input should be greater than (\S+)"), r"must be more than \1")]
_OPTION = re.compile(r"Invalid value for '([^']+)'")


def usage_error(exc: Exception, args: Sequence[str]) -> UsageError:
    """The one-line InputError for a parser exception (anything with Click's `format_message`)."""
    message = " ".join(exc.format_message().split())
    for words, plain in PLAIN.items():
        message = message.replace(words, plain)
    for pattern, plain in _BOUNDS:
        message = pattern.sub(plain, message)
    found = _OPTION.search(message)
    if found:
        value = _value_of(found.group(1), args)
        if value is not None and repr(value) not in message:
            message = f"{message}; got {value!r}"
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "llmprod"
    return UsageError(message.rstrip("."), hint=f"see '{command} --help'")


def _value_of(option: str, args: Sequence[str]) -> str | None:
    """What the user gave an option ('--batch' / '--batch/-b' as the parser names it), from the argv."""
    names = [n.strip() for n in option.split("/")]
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


class LlmprodGroup(TyperGroup):
    """The root group: usage errors go through the same error shape as everything else."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(args=argv, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                              **extra)
        except KeyboardInterrupt:
            # A second Ctrl-C, or one a finalizer raised while the first was being handled (the command
            # already said "interrupted"): still the shell's exit code for it, not death by the signal.
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - only the parser's own errors are handled here
            if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # `llmprod` alone: its help, as usage
                sys.stderr.write(exc.format_message() + "\n")
                sys.exit(EXIT_BAD_INPUT)
            from llmprod.output import Output

            Output(json_mode="--json" in argv).error(usage_error(exc, argv))
            sys.exit(EXIT_BAD_INPUT)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv
