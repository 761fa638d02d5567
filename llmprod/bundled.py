"""Files shipped in recipes/ (quantization recipes, guardrail policies), found by path or by name."""

from __future__ import annotations

from pathlib import Path

from llmprod.errors import NotFoundError

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
