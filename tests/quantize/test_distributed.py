"""`--gpus N`: the torchrun launch plan, checked with a fake launcher that runs the job in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmprod.quantize import distributed
from llmprod.quantize.backends import _partition


def test_partition_is_contiguous_complete_and_even():
    samples = list(range(11))
    parts = [_partition(samples, r, 4) for r in range(4)]
    assert [x for part in parts for x in part] == samples
    assert sorted(len(p) for p in parts) == [2, 3, 3, 3]
    assert _partition(samples, 0, 1) == samples


def test_the_ranks_stdout_goes_to_stderr(capfd):
    """llm-compressor logs to stdout in every rank; with --json, stdout must stay one document (seen on the H200)."""
    import sys

    status = distributed._subprocess_launcher([sys.executable, "-c", "print('rank log line')"], {})
    out, err = capfd.readouterr()
    assert status == 0 and out == "" and "rank log line" in err


def test_launch_plan_is_torchrun_on_one_host_with_nvls_off(tmp_path):
    argv, env = distributed.launch_plan(tmp_path / "job.json", 2, {"PATH": "/bin"})
    assert argv[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        "-m", "llmprod.quantize.distributed", str(tmp_path / "job.json")]
    assert env["NCCL_NVLS_ENABLE"] == "0" and env["PATH"] == "/bin" and int(env["OMP_NUM_THREADS"]) >= 1
    # A user's own setting wins.
    _, env = distributed.launch_plan(tmp_path / "job.json", 2, {"NCCL_NVLS_ENABLE": "1"})
    assert env["NCCL_NVLS_ENABLE"] == "1"


def test_cli_refuses_more_gpus_than_the_machine_has(cli, tiny_model_dir, tmp_path, eval_text_file):
    out = tmp_path / "q"
    result = cli("quantize", tiny_model_dir, "--method", "gptq", "--gpus", 2, "--output", out,
                 "--dataset", eval_text_file, "--num-samples", 4, "--seq-len", 64)
    assert result.exit_code == 2
    assert "--gpus 2, but this machine has 0 CUDA GPU(s)" in result.stderr or "--device cpu" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_gpus_runs_the_job_through_the_launcher(cli, trained_model_dir, tmp_path, eval_text_file, monkeypatch):
    seen = {}

    def fake_launcher(argv, env):
        # What torchrun would start on each rank; here once, in one process (no WORLD_SIZE: not distributed).
        seen["argv"], seen["env"] = list(argv), dict(env)
        job_file = argv[-1]
        seen["job"] = json.loads(Path(job_file).read_text())
        return distributed.main([job_file])

    monkeypatch.setattr(distributed, "LAUNCHER", fake_launcher)
    monkeypatch.setattr(distributed, "check_gpus", lambda gpus, device: None)
    out = tmp_path / "q"
    result = cli("quantize", trained_model_dir, "--method", "gptq", "--gpus", 2, "--output", out, "--device", "cpu",
                 "--dataset", eval_text_file, "--num-samples", 8, "--seq-len", 128, "--json")
    assert result.exit_code == 0, result.stderr
    assert "--nproc-per-node=2" in seen["argv"] and seen["env"]["NCCL_NVLS_ENABLE"] == "0"
    assert len(seen["job"]["calibration"]["samples"]) == 8 and seen["job"]["spec"]["gpus"] == 2
    doc = result.json()
    assert doc["gpus"] == 2 and doc["reload_check"]["finite_logits"]
    (rank,) = doc["ranks"]  # the fake launcher ran one process: rank 0's report, with where its time went
    assert rank["rank"] == 0 and set(rank["seconds"]) == {"load", "oneshot", "save"}
    assert (out / "config.json").exists() and [p.name for p in tmp_path.iterdir()] == ["q"]  # job files gone


def test_a_failed_launch_leaves_nothing(cli, trained_model_dir, tmp_path, eval_text_file, monkeypatch):
    monkeypatch.setattr(distributed, "LAUNCHER", lambda argv, env: 1)
    monkeypatch.setattr(distributed, "check_gpus", lambda gpus, device: None)
    out = tmp_path / "q"
    result = cli("quantize", trained_model_dir, "--method", "gptq", "--gpus", 2, "--output", out, "--device", "cpu",
                 "--dataset", eval_text_file, "--num-samples", 4, "--seq-len", 64)
    assert result.exit_code == 1 and "torchrun exit 1" in result.stderr
    assert list(tmp_path.iterdir()) == []
