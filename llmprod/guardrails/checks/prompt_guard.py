"""The `prompt_guard` check: Prompt Guard 2 (22M, 86M), a classifier of jailbreak and injection attempts.

Index 1 of its softmax is "malicious" (label names vary between checkpoints, the index does not). Texts
longer than its 512-token window are split into windows scored in one batch; a text is as malicious as
its worst window. The model is loaded, and scores one text, when the guard is built.
"""

from __future__ import annotations

import asyncio

from llmprod.errors import ConfigError, InputError, MissingExtraError
from llmprod.guardrails.checks.base import CheckConfig, CheckType, OptionSpec, SharedModels
from llmprod.guardrails.types import Finding

DEFAULT_MODEL = "meta-llama/Llama-Prompt-Guard-2-86M"


class PromptGuardModel:
    WINDOW = 512

    def __init__(self, model: str, device: str = "auto") -> None:
        from llmprod.modelio import load_tokenizer, pick_device, quiet_backends, resolve_model

        self.model_name = model
        try:
            import torch
            from transformers import AutoModelForSequenceClassification

            quiet_backends()
            ref = resolve_model(model)
            self.device = pick_device(device)
            self.tokenizer = load_tokenizer(ref)
            self.model = AutoModelForSequenceClassification.from_pretrained(ref.load_path).to(self.device).eval()
        except MissingExtraError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever stops the load, the fix is the same
            detail = exc.message if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            raise InputError(f"cannot load the Prompt Guard model {model}: {detail.splitlines()[0][:200]}",
                             hint=f"download it first (`hf download {model}` after accepting its licence on the "
                                  "Hub), or point `model:` at a local directory") from None
        self.torch = torch
        if self.model.config.num_labels < 2:
            raise ConfigError(f"{model} has {self.model.config.num_labels} label(s); Prompt Guard has 2",
                              hint="point `model:` at a Prompt Guard 2 checkpoint")
        self.scores(["hello"])  # it runs, and the first request does not pay the warm-up

    def windows(self, text: str) -> list[str]:
        """The text cut into pieces that fit the window with the tokenizer's special tokens added."""
        room = self.WINDOW - len(self.tokenizer("").input_ids)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        if len(offsets) <= room:
            return [text]
        return [text[offsets[i][0]:offsets[min(i + room, len(offsets)) - 1][1]] for i in range(0, len(offsets), room)]

    def scores(self, texts: list[str]) -> list[float]:
        """The malicious probability of each text: the maximum over its windows, all windows in one batch."""
        torch = self.torch
        owners, batch = [], []
        for i, text in enumerate(texts):
            for window in self.windows(text):
                owners.append(i)
                batch.append(window)
        inputs = self.tokenizer(batch, padding=True, truncation=True, max_length=self.WINDOW,
                                return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float()
        malicious = torch.softmax(logits, dim=-1)[:, 1].tolist()
        best = [0.0] * len(texts)
        for owner, p in zip(owners, malicious):
            best[owner] = max(best[owner], p)
        return best


class PromptGuardCheck:
    def __init__(self, config: CheckConfig, model: PromptGuardModel) -> None:
        self.config = config
        self.name = config.check
        self.model = model
        self.threshold = config.options.get("threshold", 0.5)

    async def check_input(self, texts: list[str]) -> list[Finding]:
        scores = await asyncio.to_thread(self.model.scores, texts)
        return [Finding(self.name, "malicious", 0, 0, self.config.action, p) for p in scores if p >= self.threshold]

    async def check_output(self, text: str, context: str) -> list[Finding]:
        raise AssertionError("prompt_guard runs on the input only (the registry says so)")


def build(config: CheckConfig, shared: SharedModels) -> PromptGuardCheck:
    model = config.options.get("model") or DEFAULT_MODEL
    device = config.options.get("device", "auto")
    loaded = shared.get(("prompt_guard", model, device), lambda: PromptGuardModel(model, device))
    return PromptGuardCheck(config, loaded)


TYPE = CheckType(
    "prompt_guard", "Prompt Guard 2: P(jailbreak or injection) of each user text", ("flag", "block"), ("input",), {
        "model": OptionSpec("str", help=f"hub id or directory (default {DEFAULT_MODEL})"),
        "threshold": OptionSpec("float", minimum=0.0, maximum=1.0),
        "device": OptionSpec("str", ("auto", "cpu", "cuda")),
    }, build, loads_model=True)
