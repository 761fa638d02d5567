"""A wheel installed as a user installs it (not editable) finds its bundled recipes and policies."""

from __future__ import annotations

import json
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import llmprod

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_wheel_in_a_fresh_virtualenv_finds_its_recipes_and_policies(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, cwd=tmp_path)
    wheel = next(dist.glob("llmprod-*.whl"))
    assert wheel.name.startswith(f"llmprod-{llmprod.__version__}-")  # the version comes from one place

    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, cwd=tmp_path)
    # The wheel's dependencies (typer, re2, ...) from this environment's site-packages, after the venv's own:
    # offline, and this checkout's editable install stays out (its .pth is not read from there).
    own = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip())
    (own / "deps-of-the-test.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    llmprod_bin = env / "bin" / "llmprod"

    where = subprocess.run([str(python), "-c", "import llmprod; print(llmprod.__file__)"], check=True,
                           capture_output=True, text=True, cwd=tmp_path).stdout
    assert where.startswith(str(env)), where  # the installed wheel, not this checkout

    texts = tmp_path / "texts.txt"
    texts.write_text("all fine\nmail me at ana@example.org\nkey AKIAZ7Q3XK2M4N5P6R8T\n")
    scan = subprocess.run([str(llmprod_bin), "guardrails", "scan", str(texts), "--json"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert scan.returncode == 0, scan.stderr
    doc = json.loads(scan.stdout)
    assert doc["summary"]["policy"] == "default"
    assert [r["verdict"] for r in doc["results"]] == ["allow", "redact", "block"]

    helped = subprocess.run([str(llmprod_bin), "quantize", "--help"], capture_output=True, text=True, cwd=tmp_path,
                            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert helped.returncode == 0, helped.stderr
    assert "awq-w4a16, fp8-block, gptq-w4a16, gptq-w8a16, nvfp4a16, w8a8-fp8" in helped.stdout
    # the kernel table (package data of llmprod.memory) ships too: the preflight answers from the wheel
    config = Path(__file__).resolve().parent / "data" / "vllm-0.26.0" / "llama-3.1-8b-w8a8-fp8.json"
    preflight = subprocess.run([str(llmprod_bin), "estimate-memory", str(config), "--gpu", "A100", "--max-model-len",
                                "4096", "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert preflight.returncode == 0, preflight.stderr
    assert json.loads(preflight.stdout)["kernel"] == "Marlin FP8 (weight-only fallback)"
    version = subprocess.run([str(llmprod_bin), "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert version.stdout.strip() == f"llmprod {llmprod.__version__}"


def test_every_package_of_the_tree_is_in_the_wheels_list():
    """pyproject.toml lists the packages (recipes/ is mapped into the wheel): a new one must be added there."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "llmprod").rglob("__init__.py")}
    assert listed == found | {"llmprod.recipes"}
    assert not list((ROOT / "llmprod" / "recipes").rglob("*.yaml"))  # one source: the root's recipes/
