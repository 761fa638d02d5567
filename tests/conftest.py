"""Shared fixtures: tiny local models (no network), and a CLI runner that keeps stdout and stderr apart."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

# No test may reach a hub: fail fast instead of hanging on a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


@pytest.fixture
def cli():
    """Invoke the real Typer app in-process, as `llmprod ARGS...`."""
    from typer.testing import CliRunner

    from llmprod.cli.app import app

    def invoke(*args: str, env: dict[str, str] | None = None) -> CliResult:
        result = CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return invoke


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (nothing else takes it meanwhile, on a test machine)."""
    from llmprod.testing.servers import free_port

    return free_port()


def _model_cache(request) -> Path:
    # Reused across runs on a developer's machine (pytest's cache dir); CI starts from a clean clone.
    return Path(request.config.cache.mkdir("llmprod-tiny-models"))


@pytest.fixture(scope="session")
def tiny_model_dir(request) -> Path:
    """Random weights: fast to build, for plumbing tests."""
    from llmprod.tinymodel import RANDOM, cached_tiny_model

    return cached_tiny_model(_model_cache(request), RANDOM)


@pytest.fixture(scope="session")
def trained_model_dir(request) -> Path:
    """Trained briefly on this Python's documentation: perplexity far below uniform."""
    from llmprod.tinymodel import TRAINED, cached_tiny_model

    return cached_tiny_model(_model_cache(request), TRAINED)


@pytest.fixture(scope="session")
def eval_text_file(tmp_path_factory) -> Path:
    """Held-out documentation topics the trained model never saw."""
    from llmprod.tinymodel import corpus_split

    path = tmp_path_factory.mktemp("texts") / "eval.txt"
    path.write_text(corpus_split()[1])
    return path


@pytest.fixture(scope="session")
def tiny_llama_guard_dir(request) -> Path:
    """Llama Guard's architecture and prompt vocabulary ("safe"/"unsafe" single tokens), random weights."""
    from llmprod.tinymodel.guards import cached

    return cached(_model_cache(request), "llama-guard")


@pytest.fixture(scope="session")
def tiny_prompt_guard_dir(request) -> Path:
    """Prompt Guard 2's architecture (DeBERTa-v2, two labels named backwards), random weights."""
    from llmprod.tinymodel.guards import cached

    return cached(_model_cache(request), "prompt-guard")
