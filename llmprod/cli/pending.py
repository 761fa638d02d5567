"""What a command says before the issue that builds it has landed: plainly not available, exit 2."""

from __future__ import annotations

from llmprod.errors import NotAvailableError

# Pending commands accept any arguments, so a script calling the final interface gets this
# message rather than a usage error about an option that will exist.
CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def not_available(command: str) -> NotAvailableError:
    return NotAvailableError(
        f"`llmprod {command}` is not available yet in llmprod",
        hint="it is registered so scripts can be written against it; see README.md for what works today",
    )
