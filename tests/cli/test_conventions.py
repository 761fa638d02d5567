"""The conventions every command follows: exit codes, one JSON document, one-line errors, fast --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import typer

from llmprod.cli.exits import command_output
from llmprod.errors import CheckFailed, ConfigError

COMMANDS = ["quantize", "perplexity", "estimate-memory", "serve", "guardrails", "bench"]


def test_version(cli):
    from llmprod import __version__

    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"llmprod {__version__}"


def test_help_lists_every_command_with_an_example(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.stdout
    for args in [["quantize"], ["perplexity"], ["estimate-memory"], ["serve"], ["guardrails", "scan"], ["bench"]]:
        sub = cli(*args, "--help")
        assert sub.exit_code == 0, args
        assert "Example" in sub.stdout, args
        assert f"llmprod {' '.join(args)}" in sub.stdout, args


@pytest.mark.parametrize("args", [["serve"], ["guardrails", "scan", "/nonexistent.txt"]], ids=lambda a: a[0])
def test_bad_input_json_is_one_document(cli, args):
    result = cli(*args, "--json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["error"]["exit_code"] == 2 and doc["error"]["message"]
    assert len(result.stderr.strip().splitlines()) == 1


def test_typer_usage_errors_exit_2(cli):
    assert cli("no-such-command").exit_code == 2
    assert cli("tiny-model").exit_code == 2  # missing argument
    assert cli("tiny-model", "x", "--steps", "zero").exit_code == 2


def test_bad_input_is_one_line_without_traceback(cli, tmp_path):
    (tmp_path / "occupied").write_text("x")
    result = cli("tiny-model", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "not an empty directory" in result.stderr and "choose a new path" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_variable_adds_the_traceback(cli, tmp_path):
    (tmp_path / "occupied").write_text("x")
    result = cli("tiny-model", tmp_path, env={"LLMPROD_DEBUG": "1"})
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


def _body_raising(exc: BaseException, json_mode: bool = False) -> int:
    try:
        with command_output(json_mode):
            raise exc
    except typer.Exit as done:
        return done.exit_code
    raise AssertionError("command_output must end the command")


def test_error_tree_maps_to_exit_codes(capsys):
    assert _body_raising(ConfigError("bad recipe")) == 2
    assert _body_raising(CheckFailed("gate failed")) == 1
    assert _body_raising(KeyboardInterrupt()) == 130
    assert _body_raising(ValueError("boom")) == 1
    err = capsys.readouterr().err
    assert "internal error: ValueError: boom" in err and "LLMPROD_DEBUG=1" in err


def test_check_failed_in_json_mode_keeps_the_result_in_the_one_document(capsys):
    assert _body_raising(CheckFailed("too much", result={"perplexity": 5.0}), json_mode=True) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["perplexity"] == 5.0 and doc["error"]["message"] == "too much"


@pytest.mark.slow
def test_json_output_is_one_document_and_logs_go_to_stderr(cli, tmp_path):
    result = cli("tiny-model", tmp_path / "m", "--random", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)  # the whole of stdout parses: nothing else was printed there
    assert doc["path"] == str(tmp_path / "m")
    assert "building the tiny model" in result.stderr


def test_help_imports_no_torch_or_transformers():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "llmprod", "--help"],
                          capture_output=True, text=True, check=True)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    heavy = {name for name in imported if name.split(".")[0] in {"torch", "transformers", "llmcompressor"}}
    assert not heavy, sorted(heavy)[:5]


def test_console_script_and_module_agree():
    env = {**os.environ, "NO_COLOR": "1"}
    by_module = subprocess.run([sys.executable, "-m", "llmprod", "--version"], capture_output=True, text=True, env=env)
    by_script = subprocess.run([os.path.join(os.path.dirname(sys.executable), "llmprod"), "--version"],
                               capture_output=True, text=True, env=env)
    assert by_module.returncode == by_script.returncode == 0
    assert by_module.stdout == by_script.stdout


@pytest.mark.timeout(120)
def test_the_cli_reference_in_docs_is_current():
    """docs/cli.md is generated from --help: when an option changes, the docs are regenerated with it."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, str(root / "scripts" / "cli_reference.py"), "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def test_readme_and_docs_have_no_table_cell_over_200_characters():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.startswith("|"):
                longest = max(len(cell.strip()) for cell in line.strip().strip("|").split("|"))
                assert longest <= 200, f"{page.name}:{number} has a table cell of {longest} characters"
    assert len((root / "README.md").read_text().splitlines()) < 120  # a newcomer reads it in five minutes


def test_progress_in_a_log_is_a_line_now_and_then(capsys):
    """Where stderr is no terminal (CI, a log file) a live bar shows nothing: plain lines say it is working."""
    from llmprod.output import LineProgress, Output

    out = Output()
    with out.progress() as progress:
        assert isinstance(progress, LineProgress)
        progress.every = 0
        task = progress.add_task("training", total=10)
        progress.update(task, completed=4, description="training (loss 2.500)")
    assert "training (loss 2.500) 4/10" in capsys.readouterr().err
    assert progress.tasks[task].elapsed >= 0  # what perplexity's rate reads
