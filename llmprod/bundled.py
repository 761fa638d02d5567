"""Files shipped in recipes/ (quantization recipes, guardrail policies), found by path or by name."""

from __future__ import annotations

from pathlib import Path

from llmprod.errors import ConfigError, NotFoundError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def find_bundled(name_or_path: str | Path, folder: Path, what: str) -> Path:
    """A file path, or the name of a bundled file (`default` for FOLDER/default.yaml)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    bundled = folder / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
    raise NotFoundError(f"no {what} {name_or_path}", hint=f"give a path, or a bundled {what}: {names}")


def yaml_error(path: Path, exc: Exception) -> ConfigError:
    """A YAML syntax error as one line naming the file and the line."""
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}" if mark else ""
    return ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})",
                       hint="fix the YAML syntax")
