"""Write docs/cli.md, the CLI reference, from each command's --help (so the docs cannot drift from the code).

    python scripts/cli_reference.py          # rewrite docs/cli.md
    python scripts/cli_reference.py --check  # exit 1 if docs/cli.md is stale (the test suite runs this)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cli.md"
COMMANDS = [[], ["quantize"], ["perplexity"], ["estimate-memory"], ["serve"], ["guardrails", "scan"], ["bench"],
            ["tiny-model"]]


def help_text(words: list[str]) -> str:
    env = {**os.environ, "COLUMNS": "110", "NO_COLOR": "1", "TERM": "dumb", "LLMPROD_DEBUG": ""}
    done = subprocess.run([sys.executable, "-m", "llmprod", *words, "--help"], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=True)
    return "\n".join(line.rstrip() for line in done.stdout.strip("\n").splitlines())


def reference() -> str:
    parts = ["# CLI reference\n", "Generated from `--help` by `python scripts/cli_reference.py`; a test fails when it "
             "is stale.\n"]
    for words in COMMANDS:
        parts.append(f"## llmprod {' '.join(words)}".rstrip() + "\n")
        parts.append("```\n" + help_text(words) + "\n```\n")
    return "\n".join(parts)


def main() -> int:
    text = reference()
    if "--check" in sys.argv:
        if not DOC.is_file() or DOC.read_text() != text:
            print("docs/cli.md is stale: run python scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
