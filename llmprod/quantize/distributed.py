"""`--gpus N`: llm-compressor's data-parallel calibration, one process per GPU under torchrun.

The parent `llmprod quantize` process validates, reads and tokenizes the calibration data once, and writes
the job (spec, recipe, token ids) to a file beside the temporary output. `torchrun` starts N copies of
this module's `main`; each initialises torch.distributed (NCCL), rank 0 loads the weights and shares them,
each rank calibrates on its contiguous share of the samples, and llm-compressor reduces the statistics
(GPTQ Hessians, observers' ranges) across ranks before quantizing; rank 0 writes the checkpoint. The
parent then runs the same reload check, manifest and atomic rename as a one-GPU run.

NVLink SHARP (NCCL's NVLS, "multicast") stays off unless the user sets NCCL_NVLS_ENABLE: on the lent
multi-GPU machines it cannot be used, and NCCL's fallback is as fast for the small reductions here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from llmprod.errors import InputError, OperationFailed

JOB_FILE = "job.json"
# A test may replace this with a fake: it gets (argv, env) and returns the exit status.
Launcher = Callable[[Sequence[str], dict[str, str]], int]


def check_gpus(gpus: int, device: str) -> None:
    """Refused before any work: --gpus N needs N CUDA GPUs here, and not --device cpu."""
    if gpus <= 1:
        return
    if device == "cpu":
        raise InputError(f"--gpus {gpus} with --device cpu", hint="drop --device cpu, or drop --gpus")
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < gpus:
        raise InputError(f"--gpus {gpus}, but this machine has {found} CUDA GPU(s) visible",
                         hint=f"use --gpus {found} or fewer (CUDA_VISIBLE_DEVICES chooses which)" if found > 1
                         else "drop --gpus")


def launch_plan(job_file: Path, gpus: int, environ: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The torchrun command line and its environment (one host, a free rendezvous port)."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("NCCL_NVLS_ENABLE", "0")
    # torchrun would set 1 thread per rank (and warn); share the host's cores between the ranks instead.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or gpus) // gpus)))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}",
            "-m", "llmprod.quantize.distributed", str(job_file)]
    return argv, env


def _subprocess_launcher(argv: Sequence[str], env: dict[str, str]) -> int:
    """torchrun with its ranks' stdout (llm-compressor logs there) sent to stderr: --json keeps stdout one document."""
    return subprocess.run(list(argv), env=env, check=False, stdout=sys.stderr.fileno()).returncode


LAUNCHER: Launcher = _subprocess_launcher


def run_distributed(job) -> list[dict]:
    """Run `job` on spec.gpus GPUs; each rank's report: its peak GPU memory and seconds per phase."""
    spec = job.spec
    jobdir = Path(tempfile.mkdtemp(prefix=f".{spec.output.name}.llmprod-job-", dir=spec.output.parent))
    try:
        job_file = jobdir / JOB_FILE
        job_file.write_text(json.dumps(_job_to_dict(job)))
        argv, env = launch_plan(job_file, spec.gpus)
        status = LAUNCHER(argv, env)
        if status != 0:
            raise OperationFailed(f"data-parallel calibration on {spec.gpus} GPUs failed (torchrun exit {status})",
                                  hint="the ranks' errors are above; --gpus 1 runs the same job in one process")
        reports = []
        for rank in range(spec.gpus):
            report = jobdir / f"rank-{rank}.json"
            if report.is_file():
                reports.append({"rank": rank, **json.loads(report.read_text())})
        return reports
    finally:
        shutil.rmtree(jobdir, ignore_errors=True)


def _job_to_dict(job) -> dict[str, Any]:
    spec = job.spec
    spec_fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    spec_fields["settings"] = dataclasses.asdict(spec.settings)
    calibration = dataclasses.asdict(job.calibration) if job.calibration is not None else None
    return json.loads(json.dumps({"spec": spec_fields, "source_dir": str(job.source_dir), "recipe": job.recipe,
                                  "workdir": str(job.workdir), "calibration": calibration}, default=str))


def _job_from_dict(data: dict[str, Any]):
    from llmprod.quantize.backends import QuantizeJob
    from llmprod.quantize.calibration import CalibrationSet
    from llmprod.quantize.spec import QuantizeSettings, QuantizeSpec

    fields = dict(data["spec"])
    settings = dict(fields.pop("settings"))
    if settings.get("ignore") is not None:
        settings["ignore"] = tuple(settings["ignore"])  # JSON gave a list back
    fields["output"] = Path(fields["output"])
    fields["recipe_path"] = Path(fields["recipe_path"]) if fields.get("recipe_path") else None
    fields["calibration_flags"] = tuple(fields.get("calibration_flags") or ())
    spec = QuantizeSpec(settings=QuantizeSettings(**settings), **fields)
    calibration = CalibrationSet(**data["calibration"]) if data.get("calibration") else None
    return QuantizeJob(spec, Path(data["source_dir"]), calibration, data["recipe"], Path(data["workdir"]))


def main(argv: Sequence[str] | None = None) -> int:
    """One rank, as torchrun starts it: `python -m llmprod.quantize.distributed JOB_FILE`."""
    import torch

    from llmprod.quantize.backends import LlmCompressorBackend

    job_file = Path((argv if argv is not None else sys.argv[1:])[0])
    job = _job_from_dict(json.loads(job_file.read_text()))
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if distributed:
        from compressed_tensors.offload import init_dist

        init_dist()
    rank = int(os.environ.get("RANK", "0"))
    phases: dict = {}
    try:
        LlmCompressorBackend().run(dataclasses.replace(job, phases=phases))
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
        (job_file.parent / f"rank-{rank}.json").write_text(json.dumps({"peak_gpu_memory_bytes": peak,
                                                                       "seconds": phases}))
    finally:
        if distributed:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
