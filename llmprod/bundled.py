"""Data shipped inside the package (quantization recipes, guardrail policies), found by path or by name.

They live in `recipes/` at the repository root, the one source; the wheel carries them as the package
`llmprod.recipes` (pyproject.toml maps it), read through `importlib.resources`. A checkout (an editable
install) reads the root's folder itself.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from llmprod.errors import ConfigError, NotFoundError

def _recipes() -> Traversable:
    packaged = files("llmprod") / "recipes"
    if (packaged / "guardrails" / "default.yaml").is_file():  # an installed wheel (not a stale, empty folder)
        return packaged
    return Path(__file__).resolve().parents[1] / "recipes"  # a checkout


RECIPES: Traversable = _recipes()


def find_bundled(name_or_path: str | Path, folder: Traversable, what: str) -> Path | Traversable:
    """A file path, or the name of a bundled file (`default` for FOLDER/default.yaml)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    bundled = folder / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    raise NotFoundError(f"no {what} {name_or_path}", hint=f"give a path, or a bundled {what}: {', '.join(names(folder))}")


def names(folder: Traversable) -> list[str]:
    """The bundled files' names (without .yaml), sorted."""
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def yaml_error(path, exc: Exception) -> ConfigError:
    """A YAML syntax error as one line naming the file and the line."""
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}" if mark else ""
    return ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})",
                       hint="fix the YAML syntax")
