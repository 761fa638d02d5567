"""`llmprod deploy`: the checkpoint, its memory plan and its guardrail policy as Kubernetes manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmprod.cli.options import (GpuMemoryUtilizationOpt, JsonOpt, KvCacheDtypeOpt, MaxModelLenOpt,
                                 PipelineParallelOpt, TensorParallelOpt)

EXAMPLE = ("Example: [bold]llmprod deploy ./llama-awq --model-uri s3://models/llama-awq --target kubernetes --gpu L4 "
           "--image-gateway registry.example.com/llmprod-gateway:0.1 --output k8s/[/bold]")


def deploy(
    checkpoint: Annotated[str, typer.Argument(help="The checkpoint to serve: a local directory (with --model-uri) "
                                              "or a hub id.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="A new directory for the manifests and their README.",
                                         show_default=False)],
    gpu: Annotated[str, typer.Option("--gpu", help="The GPU of the engine nodes, as estimate-memory names it "
                                     "(H100, L4, ...): the plan must fit it and its kernels must load the format.",
                                     show_default=False)],
    target: Annotated[str, typer.Option("--target", help="kubernetes (Deployments) or kserve (an InferenceService "
                                        "for the engine).", case_sensitive=False)] = "kubernetes",

    image_gateway: Annotated[Optional[str], typer.Option("--image-gateway", help="The gateway image your cluster pulls "
                                                         "(build deploy/gateway.Dockerfile).", show_default=False)] = None,
    image_engine: Annotated[str, typer.Option("--image-engine", help="vLLM's image; its release is the one planned for.")]
    = "vllm/vllm-openai:v0.26.0",
    model_uri: Annotated[Optional[str], typer.Option("--model-uri", help="Where the pods read the weights: hf://ORG/NAME, "
                                                     "s3://..., gs://... or pvc://CLAIM/PATH [default: hf://ID for a hub id].",
                                                     show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="The objects' name [default: from the checkpoint].",
                                                show_default=False)] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="The namespace of every object.")] = "default",
    replicas: Annotated[Optional[int], typer.Option("--replicas", min=1, help="Engine replicas [default: 1, or from --rate].",
                                                    show_default=False)] = None,
    rate: Annotated[Optional[float], typer.Option("--rate", min=0.001, help="Requests per second to carry: replicas = "
                                                  "rate ÷ the per-replica capacity in --capacity.", show_default=False)] = None,
    capacity: Annotated[Optional[Path], typer.Option("--capacity", help="`llmprod bench --find-max ... --rate ... --json` "
                                                     "of one replica.", show_default=False)] = None,
    perplexity: Annotated[Optional[Path], typer.Option("--perplexity", help="`llmprod perplexity --baseline ... --json` "
                                                       "of the checkpoint: recorded, and a failed gate refuses.",
                                                       show_default=False)] = None,
    guardrails: Annotated[str, typer.Option("--guardrails", help="A guardrail policy YAML or a bundled name; its Llama "
                                            "Guard models get engines of their own.")] = "default",
    no_guardrails: Annotated[bool, typer.Option("--no-guardrails", help="A gateway that checks nothing.")] = False,
    max_model_len: MaxModelLenOpt = None,
    tensor_parallel_size: TensorParallelOpt = None,
    pipeline_parallel_size: PipelineParallelOpt = None,
    gpu_memory_utilization: GpuMemoryUtilizationOpt = None,
    kv_cache_dtype: KvCacheDtypeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Render a guarded vLLM fleet for Kubernetes or KServe, sized by llmprod's memory plan; nothing is applied."""
    from llmprod.cli.exits import command_output

    with command_output(json_output) as out:
        import re

        from llmprod.deploy.plan import DeploySpec, build_plan
        from llmprod.deploy.render import write

        release = re.search(r":v?(\d+\.\d+(?:\.\d+)?)", image_engine)
        spec = DeploySpec(
            checkpoint=checkpoint, target=target.lower(), gpu=gpu, output=output, gateway_image=image_gateway,
            engine_image=image_engine, model_uri=model_uri, name=name, namespace=namespace, replicas=replicas,
            rate=rate, capacity=capacity, perplexity=perplexity, guardrails=None if no_guardrails else guardrails,
            max_model_len=max_model_len, tp=tensor_parallel_size or 1, pp=pipeline_parallel_size or 1,
            gpu_memory_utilization=gpu_memory_utilization, kv_cache_dtype=kv_cache_dtype or "auto",
            vllm_version=release[1] if release else "0.26.0")
        result = write(build_plan(spec), output)
        out.result(result, lambda console: _render(console, result))


def _render(console, r: dict) -> None:
    console.print(f"[bold]{r['name']}[/bold] → {r['output']} ({r['target']}, namespace {r['namespace']}): "
                  f"{r['engine_replicas']} engine replica(s) × {r['gpus_per_replica']} {r['gpu']}, kernel {r['kernel']}")
    for name, objects in r["files"].items():
        console.print(f"  {name}: {', '.join(objects)}")
    for key, note in r["provenance"].items():
        console.print(f"  {key}: {note}", style="dim")
    console.print(f"apply: kubectl apply -f {r['output']}  (its README.md says what to create first)")
