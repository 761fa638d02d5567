"""Model-based checks: Llama Guard (3 and 4) and Prompt Guard 2.

Llama Guard is a causal LM that answers "safe" or "unsafe\\nS1,S10". The verdict is the probability of
"unsafe" as the first generated token, compared with a threshold (a calibrated score instead of a greedy
yes/no); the categories come from the second line, generated only when the verdict is unsafe. It runs
in-process with transformers, or against an OpenAI-compatible endpoint that serves the guard model (the
first token's logprobs give the probability).

Prompt Guard 2 is a sequence classifier; index 1 of its softmax is "malicious" (label names vary between
checkpoints, the index does not). Texts longer than its 512-token window are split into windows scored
in one batch; a text is as malicious as its worst window.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from llmprod.errors import ConfigError, InputError
from llmprod.serve.guardrails.types import Finding

LLAMA_GUARD_CATEGORIES = {
    "S1": "Violent Crimes.", "S2": "Non-Violent Crimes.", "S3": "Sex Crimes.", "S4": "Child Exploitation.",
    "S5": "Defamation.", "S6": "Specialized Advice.", "S7": "Privacy.", "S8": "Intellectual Property.",
    "S9": "Indiscriminate Weapons.", "S10": "Hate.", "S11": "Self-Harm.", "S12": "Sexual Content.",
    "S13": "Elections.", "S14": "Code Interpreter Abuse.",
}


@dataclass(frozen=True)
class GuardFormat:
    """The prompt shape of one Llama Guard generation."""

    family: str  # "llama-guard-3-1b" | "llama-guard-3-8b" | "llama-guard-4"
    has_s14: bool
    space_before_eot: bool


FORMATS = {
    "llama-guard-3-1b": GuardFormat("llama-guard-3-1b", has_s14=False, space_before_eot=True),
    "llama-guard-3-8b": GuardFormat("llama-guard-3-8b", has_s14=True, space_before_eot=False),
    "llama-guard-4": GuardFormat("llama-guard-4", has_s14=True, space_before_eot=False),
}


def guard_format(model_name: str, config: Any | None = None) -> GuardFormat:
    name = model_name.lower()
    if "guard-4" in name or "guard4" in name or getattr(config, "model_type", "") in ("llama4", "llama4_text"):
        return FORMATS["llama-guard-4"]
    if "1b" in name:
        return FORMATS["llama-guard-3-1b"]
    return FORMATS["llama-guard-3-8b"]


def build_llama_guard_prompt(fmt: GuardFormat, user: str, agent: str | None = None,
                             exclude: tuple[str, ...] = ()) -> str:
    """Meta's Llama Guard 3 prompt (as its chat template renders it) for one user turn, or a user turn and the
    agent's answer when checking output. Excluded categories are left out with their numbering kept."""
    role = "Agent" if agent is not None else "User"
    categories = [k for k in LLAMA_GUARD_CATEGORIES if (fmt.has_s14 or k != "S14") and k not in exclude]
    lines = "".join(f"{k}: {LLAMA_GUARD_CATEGORIES[k]}\n" for k in categories)
    conversation = f"User: {user.strip()}\n\n"
    if agent is not None:
        conversation += f"Agent: {agent.strip()}\n\n"
    if fmt.family == "llama-guard-4":
        raise ValueError("Llama Guard 4 prompts come from its own chat template (see LlamaGuardCheck.prompt)")
    start, end = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n", \
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
    eot_gap = " " if fmt.space_before_eot else ""
    return (f"{start}Task: Check if there is unsafe content in '{role}' messages in conversations according our "
            f"safety policy with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n{lines}"
            f"<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n{conversation}<END CONVERSATION>\n\n"
            f"Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
            f" - First line must read 'safe' or 'unsafe'.\n"
            f" - If unsafe, a second line must include a comma-separated list of violated categories.{eot_gap}{end}")


# The models answer "\n\nsafe" / "\n\nunsafe\nS1": the verdict token follows the blank line.
ANSWER_PREFIX = "\n\n"
_CATEGORY = re.compile(r"\bS(1[0-4]|[1-9])\b")


def parse_categories(text: str, exclude: tuple[str, ...] = ()) -> list[str]:
    return [c for c in dict.fromkeys("S" + m for m in _CATEGORY.findall(text)) if c not in exclude]


def _device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def _load_error(model: str, exc: Exception) -> InputError:
    return InputError(f"cannot load the guard model {model} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})",
                      hint="download it first (`hf download ...`, gated models need an accepted licence), point "
                           "`model:` at a local directory, or give `endpoint:`")


class LlamaGuardCheck:
    def __init__(self, model: str | None, endpoint: str | None, device: str = "auto",
                 api_key_env: str | None = None) -> None:
        self.model_name = model or ""
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.tokenizer = None
        self.model = None
        self.format = guard_format(self.model_name)
        if self.endpoint is None:
            self._load(device)

    def _load(self, device: str) -> None:
        try:
            import torch
            from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

            from llmprod.modelio import quiet_backends

            quiet_backends()
            config = AutoConfig.from_pretrained(self.model_name)
            self.format = guard_format(self.model_name, config)
            self.device = _device(device)
            dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            self.model = AutoModelForCausalLM.from_pretrained(self.model_name, dtype=dtype).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise _load_error(self.model_name, exc) from None
        first = self.tokenizer.encode("unsafe", add_special_tokens=False)
        self.unsafe_id = first[0]

    # -- scoring ----------------------------------------------------------------------------------------------
    def prompt(self, user: str, agent: str | None, exclude: tuple[str, ...]) -> str:
        """Llama Guard 3: the prompt built here (tested against Meta's format). Llama Guard 4: the checkpoint's
        own chat template, which takes the excluded categories as `excluded_category_keys`."""
        if self.format.family != "llama-guard-4":
            return build_llama_guard_prompt(self.format, user, agent, exclude) + ANSWER_PREFIX
        messages = [{"role": "user", "content": [{"type": "text", "text": user}]}]
        if agent is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": agent}]})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  excluded_category_keys=list(exclude))

    def score(self, user: str, agent: str | None, exclude: tuple[str, ...], want_categories: float | None):
        """(p_unsafe, categories): categories are generated only when p_unsafe >= want_categories."""
        import torch

        prompt = self.prompt(user, agent, exclude)
        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids.to(self.device)
        with torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=True)
            probs = torch.softmax(out.logits[0, -1].float(), dim=-1)
            p_unsafe = float(probs[self.unsafe_id])
            categories: list[str] = []
            if want_categories is not None and p_unsafe >= want_categories:
                forced = self.tokenizer("unsafe\n", add_special_tokens=False, return_tensors="pt").input_ids.to(self.device)
                full = torch.cat([ids, forced], dim=1)
                generated = self.model.generate(full, attention_mask=torch.ones_like(full), max_new_tokens=12,
                                                do_sample=False, pad_token_id=self.tokenizer.eos_token_id)
                text = self.tokenizer.decode(generated[0, full.shape[1]:], skip_special_tokens=True)
                categories = parse_categories(text.split("\n")[0], exclude)
        return p_unsafe, categories

    async def score_endpoint(self, client, user: str, agent: str | None, exclude: tuple[str, ...]):
        """Against a server of the guard model. Llama Guard 3: /v1/completions with the prompt built here;
        Llama Guard 4: /v1/chat/completions, the server applying the model's template. The first token's
        top logprobs give P(unsafe)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body: dict[str, Any] = {"max_tokens": 12, "temperature": 0.0}
        if self.model_name:
            body["model"] = self.model_name
        if self.format.family == "llama-guard-4":
            messages = [{"role": "user", "content": user}]
            if agent is not None:
                messages.append({"role": "assistant", "content": agent})
            body.update(messages=messages, logprobs=True, top_logprobs=20,
                        chat_template_kwargs={"excluded_category_keys": list(exclude)})
            path = "/v1/chat/completions"
        else:
            body.update(prompt=build_llama_guard_prompt(self.format, user, agent, exclude) + ANSWER_PREFIX,
                        logprobs=20)
            path = "/v1/completions"
        response = await client.post(f"{self.endpoint}{path}", json=body, headers=headers, timeout=30.0)
        response.raise_for_status()
        choice = response.json()["choices"][0]
        text, top = _first_token_logprobs(choice)
        p_unsafe = sum(math.exp(lp) for tok, lp in top.items() if tok.strip().lower() == "unsafe")
        if not top:
            p_unsafe = 1.0 if text.strip().lower().startswith("unsafe") else 0.0
        lines = text.strip().split("\n")
        categories = parse_categories(lines[1] if len(lines) > 1 else "", exclude)
        return p_unsafe, categories

    async def _verdict(self, user: str, agent: str | None, config) -> list[Finding]:
        threshold = config.options.get("threshold", 0.5)
        exclude = tuple(config.options.get("exclude", ()))
        if self.endpoint is not None:
            import httpx

            async with httpx.AsyncClient() as client:
                p_unsafe, categories = await self.score_endpoint(client, user, agent, exclude)
        else:
            p_unsafe, categories = await asyncio.to_thread(self.score, user, agent, exclude, threshold)
        if p_unsafe < threshold:
            return []
        return [Finding("llama_guard", c, 0, 0, config.action, p_unsafe) for c in (categories or ["unsafe"])]

    async def check_input(self, texts: list[str], config) -> list[Finding]:
        return await self._verdict(texts[-1] if texts else "", None, config)

    async def check_output(self, text: str, context: str, config) -> list[Finding]:
        return await self._verdict(context, text, config)


def _first_token_logprobs(choice: dict) -> tuple[str, dict[str, float]]:
    """(generated text, {token: logprob} of the first non-blank position) from a completions or chat choice."""
    if "message" in choice:
        text = (choice.get("message") or {}).get("content") or ""
        entries = ((choice.get("logprobs") or {}).get("content") or [])
        for entry in entries:
            if entry.get("token", "").strip():
                return text, {t["token"]: t["logprob"] for t in entry.get("top_logprobs") or []}
        return text, {}
    text = choice.get("text") or ""
    logprobs = choice.get("logprobs") or {}
    for token, top in zip(logprobs.get("tokens") or [], logprobs.get("top_logprobs") or []):
        if token.strip():
            return text, top or {}
    return text, {}


class PromptGuardCheck:
    WINDOW = 512

    def __init__(self, model: str, device: str = "auto") -> None:
        self.model_name = model
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            from llmprod.modelio import quiet_backends

            quiet_backends()
            self.device = _device(device)
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForSequenceClassification.from_pretrained(model).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise _load_error(model, exc) from None
        self.torch = torch
        if self.model.config.num_labels < 2:
            raise ConfigError(f"{model} has {self.model.config.num_labels} label(s); Prompt Guard has 2",
                              hint="point `model:` at a Prompt Guard 2 checkpoint")

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

    async def check_input(self, texts: list[str], config) -> list[Finding]:
        threshold = config.options.get("threshold", 0.5)
        scores = await asyncio.to_thread(self.scores, texts)
        return [Finding("prompt_guard", "malicious", 0, 0, config.action, p) for p in scores if p >= threshold]

    async def check_output(self, text: str, context: str, config) -> list[Finding]:
        return []


def load_model_check(config):
    options = config.options
    if config.check == "llama_guard":
        return LlamaGuardCheck(options.get("model"), options.get("endpoint"), options.get("device", "auto"),
                               options.get("api_key_env"))
    return PromptGuardCheck(options["model"], options.get("device", "auto"))
