"""What the memory planner needs from a config.json: layer types, KV shapes, parameter counts.

Traps handled here (see tests/data/model-configs): nested `text_config` (multimodal configs);
`use_sliding_window: false` next to a `sliding_window` value (Qwen2.5); MLA models (DeepSeek V2/V3,
Kimi K2) whose `num_key_value_heads` is not their KV cache; Gemma 2/3 and gpt-oss mixing sliding
and full layers, with the pattern left implicit in older configs (transformers' defaults apply);
Llama 4's chunked local attention. Mamba and linear-attention layers are refused, not guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmprod.errors import ConfigError, NotFoundError
from llmprod.modelio import is_hub_id, looks_offline, offline_error

FULL, SLIDING, CHUNKED = "full_attention", "sliding_attention", "chunked_attention"
_UNSIZABLE = ("mamba", "linear_attention", "conv", "recurrent", "ssm", "gated_delta")

DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "fp8": 1, "float8_e4m3fn": 1}
# vLLM's `--dtype auto` downcasts a float32 config: bfloat16 where the GPU has it, else float16. Either
# way two bytes, for the weights and for the KV cache that follows the model's dtype.
SERVED_DTYPE = {"float32": "bfloat16", "float": "bfloat16"}


@dataclass(frozen=True)
class LayerAttention:
    kind: str  # FULL, SLIDING or CHUNKED
    window: int | None = None  # sliding window or attention chunk size, in tokens


@dataclass(frozen=True)
class ModelShape:
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int  # K head size (and V unless v_head_dim differs)
    v_head_dim: int
    vocab_size: int
    max_position_embeddings: int
    dtype: str  # what vLLM serves it in (`--dtype auto`)
    layers: tuple[LayerAttention, ...]
    mla_latent: int | None = None  # kv_lora_rank + qk_rope_head_dim: MLA's one cached "head"
    tie_word_embeddings: bool = False
    quantization_config: dict[str, Any] | None = None
    checkpoint_dtype: str = "bfloat16"  # what config.json says
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_mla(self) -> bool:
        return self.mla_latent is not None

    @property
    def is_moe(self) -> bool:
        return num_experts(self.raw) > 0


def load_config(model: str, revision: str | None = None) -> tuple[dict[str, Any], Path | None]:
    """config.json as a dict, and the directory it lives in (for safetensors headers) if local."""
    path = Path(model).expanduser()
    if path.is_file():
        return _read_json(path), path.parent
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise NotFoundError(f"{model} has no config.json", hint="point at a model directory or its config.json")
        return _read_json(path / "config.json"), path
    if not is_hub_id(model):
        raise NotFoundError(f"no such file or directory: {model}",
                            hint="give a model directory, a config.json, or a hub id such as org/name")
    try:
        from huggingface_hub import hf_hub_download

        return _read_json(Path(hf_hub_download(model, "config.json", revision=revision))), None
    except Exception as exc:  # offline with nothing cached, gated, or missing
        if looks_offline(exc):
            raise offline_error(model) from exc
        raise NotFoundError(f"cannot get config.json of {model!r} from the hub: {str(exc).splitlines()[0][:300]}",
                            hint="check the id, the revision and HF_TOKEN (for gated models)") from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno})", hint="fix or re-download config.json") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a JSON object")
    return data


# Keys transformers fills in when a config.json leaves them out (its config classes' defaults):
# Gemma 3's text_config is sparse, so these decide its vocabulary, context and layer pattern.
TRANSFORMERS_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {"vocab_size": 262_208, "max_position_embeddings": 131_072, "num_key_value_heads": 4,
                    "head_dim": 256, "sliding_window": 4096, "sliding_window_pattern": 6, "tie_word_embeddings": True},
}


# Architectures whose transformers config class ties the output projection to the embeddings unless config.json
# says otherwise (Gemma 2's config.json does not say): one tensor, counted once. The test checks this set against
# transformers' own config classes.
TIED_BY_DEFAULT = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text", "cohere", "cohere2", "starcoder2", "falcon",
                             "gpt2", "ernie4_5", "smollm3"})


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a (possibly multimodal) config; top-level quantization is kept."""
    inner = config.get("text_config")
    merged = dict(inner) if isinstance(inner, dict) else dict(config)
    if isinstance(inner, dict):
        for key in ("quantization_config", "torch_dtype", "dtype", "tie_word_embeddings"):
            if key in config and key not in merged:
                merged[key] = config[key]
        if config.get("model_type") == "gemma3" and "model_type" not in merged:
            merged["model_type"] = "gemma3_text"
    for key, value in TRANSFORMERS_DEFAULTS.get(str(merged.get("model_type")), {}).items():
        merged.setdefault(key, value)
    return merged


def _require(cfg: dict[str, Any], *keys: str) -> int:
    for key in keys:
        if isinstance(cfg.get(key), int):
            return cfg[key]
    raise ConfigError(f"config.json has no {keys[0]}", hint="is this a decoder-only language model's config?")


def layer_attention(cfg: dict[str, Any], num_layers: int) -> tuple[LayerAttention, ...]:
    model_type = str(cfg.get("model_type", ""))
    types = cfg.get("layer_types")
    window = cfg.get("sliding_window")
    if cfg.get("use_sliding_window") is False:  # Qwen2/2.5 list a window they do not use
        window = None
    if isinstance(types, list):
        bad = sorted({t for t in types if any(u in str(t) for u in _UNSIZABLE)})
        if bad:
            raise ConfigError(f"layer types {', '.join(bad)} keep a recurrent state, not a KV cache, "
                              "and llmprod cannot size them",
                              hint="estimate-memory supports full, sliding-window and chunked attention")
        if len(types) != num_layers:
            raise ConfigError(f"layer_types lists {len(types)} layers but num_hidden_layers is {num_layers}")
        out = []
        for t in types:
            if t == "sliding_attention" and window:
                out.append(LayerAttention(SLIDING, int(window)))
            elif t in ("full_attention", "sliding_attention", "attention"):
                out.append(LayerAttention(FULL))
            elif t == "chunked_attention" and cfg.get("attention_chunk_size"):
                out.append(LayerAttention(CHUNKED, int(cfg["attention_chunk_size"])))
            else:
                raise ConfigError(f"unknown layer type {t!r} in layer_types",
                                  hint="estimate-memory supports full, sliding-window and chunked attention")
        return tuple(out)
    if model_type in {"jamba", "mamba", "mamba2", "falcon_h1", "qwen3_next", "nemotron_h", "granitemoehybrid",
                      "bamba", "zamba", "zamba2", "plamo2", "lfm2", "minimax"}:
        raise ConfigError(f"{model_type} has Mamba or linear-attention layers, whose state llmprod cannot size",
                          hint="estimate-memory supports full, sliding-window and chunked attention")
    if model_type == "llama4_text" or (model_type == "llama4" and cfg.get("attention_chunk_size")):
        # transformers' default: every 4th layer has no RoPE and full attention; the rest are chunked.
        chunk = cfg.get("attention_chunk_size")
        no_rope = cfg.get("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(num_layers)]
        return tuple(LayerAttention(CHUNKED, int(chunk)) if chunk and uses_rope else LayerAttention(FULL)
                     for uses_rope in no_rope[:num_layers])
    if window and model_type in {"gemma2", "gemma3_text", "gemma3", "cohere2"}:
        # transformers' defaults: Gemma 2 alternates (sliding first); Gemma 3 has 5 sliding : 1 full.
        pattern = cfg.get("sliding_window_pattern") or {"gemma2": 2, "cohere2": 4}.get(model_type, 6)
        return tuple(LayerAttention(SLIDING, int(window)) if (i + 1) % pattern else LayerAttention(FULL)
                     for i in range(num_layers))
    if window and window < _require(cfg, "max_position_embeddings", "n_positions"):
        return tuple(LayerAttention(SLIDING, int(window)) for _ in range(num_layers))  # Mistral 7B v0.1 style
    return tuple(LayerAttention(FULL) for _ in range(num_layers))


def model_shape(config: dict[str, Any]) -> ModelShape:
    cfg = text_config(config)
    num_layers = _require(cfg, "num_hidden_layers", "n_layer", "num_layers")
    hidden = _require(cfg, "hidden_size", "n_embd", "d_model")
    heads = _require(cfg, "num_attention_heads", "n_head")
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or hidden // heads
    dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16").replace("torch.", "")
    dtype = dtype if dtype in DTYPE_BYTES else "bfloat16"
    mla = None
    v_head_dim = head_dim
    if cfg.get("kv_lora_rank"):
        mla = int(cfg["kv_lora_rank"]) + int(cfg.get("qk_rope_head_dim") or 0)
        head_dim = int(cfg.get("qk_nope_head_dim", 0)) + int(cfg.get("qk_rope_head_dim", 0))
        v_head_dim = int(cfg.get("v_head_dim") or head_dim)
    max_pos = cfg.get("max_position_embeddings") or cfg.get("n_positions") or 0
    return ModelShape(
        model_type=str(cfg.get("model_type", "")),
        num_layers=num_layers,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        v_head_dim=int(v_head_dim),
        vocab_size=_require(cfg, "vocab_size"),
        max_position_embeddings=int(max_pos),
        dtype=SERVED_DTYPE.get(dtype, dtype),
        checkpoint_dtype=dtype,
        layers=layer_attention(cfg, num_layers),
        mla_latent=mla,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", str(cfg.get("model_type")) in TIED_BY_DEFAULT)),
        quantization_config=config.get("quantization_config") or cfg.get("quantization_config"),
        raw=cfg,
    )


def num_experts(cfg: dict[str, Any]) -> int:
    """Routed experts per MoE layer (0 for a dense model), under the names configs give them."""
    return int(cfg.get("n_routed_experts") or cfg.get("num_local_experts") or cfg.get("num_experts") or 0)


@dataclass(frozen=True)
class LayerParams:
    """Parameters of one decoder layer, split by how tensor parallelism and quantization treat them."""

    attention: int  # q/o projections (MLA: all its projections)
    kv_linear: int  # k_proj + v_proj: replicated when tp exceeds the KV heads
    mlp: int  # dense MLP or every expert, shared experts included
    other: int  # norms, routers, biases: kept in the original dtype

    @property
    def total(self) -> int:
        return self.attention + self.kv_linear + self.mlp + self.other


def decoder_layer_params(shape: ModelShape, index: int) -> LayerParams:
    cfg, h = shape.raw, shape.hidden_size
    kv = 0
    if shape.is_mla:
        q_lora = cfg.get("q_lora_rank")
        qk = shape.head_dim
        q = (h * q_lora + q_lora * shape.num_heads * qk) if q_lora else h * shape.num_heads * qk
        attn = (q + h * shape.mla_latent + int(cfg["kv_lora_rank"]) * shape.num_heads
                * (int(cfg.get("qk_nope_head_dim", 0)) + shape.v_head_dim) + shape.num_heads * shape.v_head_dim * h)
        norms = (q_lora or 0) + int(cfg["kv_lora_rank"])
    else:
        q_out = shape.num_heads * shape.head_dim
        kv = 2 * h * shape.num_kv_heads * shape.head_dim
        attn = 2 * h * q_out
        norms = 0
        if cfg.get("attention_bias") or shape.model_type in {"qwen2", "qwen2_moe", "gpt_oss"}:
            norms += q_out + 2 * shape.num_kv_heads * shape.head_dim
        if shape.model_type in {"qwen3", "qwen3_moe"}:
            norms += 2 * shape.head_dim  # q_norm, k_norm
    mlp, other = _mlp_params(shape, index)
    return LayerParams(attention=attn, kv_linear=kv, mlp=mlp, other=2 * h + norms + other)


def is_moe_layer(cfg: dict[str, Any], index: int) -> bool:
    """Whether decoder layer `index` routes to experts (DeepSeek's first dense layers, Qwen's mlp_only_layers and
    decoder_sparse_step keep some layers dense)."""
    if not num_experts(cfg):
        return False
    if index < int(cfg.get("first_k_dense_replace") or 0) or index in (cfg.get("mlp_only_layers") or []):
        return False
    step = int(cfg.get("decoder_sparse_step") or cfg.get("moe_layer_freq") or 1)
    return not (step > 1 and (index + 1) % step)


def expert_intermediate_size(cfg: dict[str, Any]) -> int:
    return int(cfg.get("moe_intermediate_size") or cfg.get("intermediate_size") or 4 * cfg["hidden_size"])


def experts_per_token(cfg: dict[str, Any]) -> int:
    return int(cfg.get("num_experts_per_tok") or cfg.get("experts_per_token") or cfg.get("moe_topk") or 1)


def _mlp_params(shape: ModelShape, index: int) -> tuple[int, int]:
    cfg, h = shape.raw, shape.hidden_size
    experts = num_experts(cfg)
    dense_inter = cfg.get("intermediate_size") or 4 * h
    if not is_moe_layer(cfg, index):
        return 3 * h * dense_inter, 0
    inter = expert_intermediate_size(cfg)
    routed = experts * 3 * h * inter
    router = h * experts + (experts if shape.model_type == "gpt_oss" else 0)
    shared = (cfg.get("n_shared_experts") or 0) * 3 * h * inter
    if cfg.get("shared_expert_intermediate_size"):  # Qwen MoE: one shared expert and its gate
        shared += 3 * h * cfg["shared_expert_intermediate_size"]
        router += h
    biases = experts * (2 * inter + h) if shape.model_type == "gpt_oss" else 0
    return routed + shared, router + biases


def parameter_count(shape: ModelShape) -> int:
    total = sum(decoder_layer_params(shape, i).total for i in range(shape.num_layers))
    embed = shape.vocab_size * shape.hidden_size
    return total + embed * (1 if shape.tie_word_embeddings else 2) + shape.hidden_size
