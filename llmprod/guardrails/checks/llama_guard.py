"""The `llama_guard` check: Llama Guard 3 (1B, 8B) and 4, in-process or behind an OpenAI-compatible endpoint.

Llama Guard is a causal LM that answers "safe" or "unsafe\\nS1,S10". The verdict is the probability of
"unsafe" as the first generated token, compared with a threshold (a calibrated score instead of a greedy
yes/no); the categories come from the second line, generated only when the verdict is unsafe. It runs
in-process with transformers, or against a server of the guard model (vLLM): the first token's top
logprobs give the probability.

Both are checked when the guard is built, so `llmprod serve` never starts with a guard that cannot run:
an in-process model is loaded and scores one text; an endpoint must list the model and answer one
scoring request with logprobs.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from llmprod.errors import ConfigError, InputError, MissingExtraError
from llmprod.guardrails.checks.base import CheckConfig, CheckType, OptionSpec, SharedModels
from llmprod.guardrails.types import STAGES, Finding
from llmprod.urls import server_root

DEFAULT_MODEL = "meta-llama/Llama-Guard-3-1B"
CATEGORIES = {
    "S1": "Violent Crimes.", "S2": "Non-Violent Crimes.", "S3": "Sex Crimes.", "S4": "Child Exploitation.",
    "S5": "Defamation.", "S6": "Specialized Advice.", "S7": "Privacy.", "S8": "Intellectual Property.",
    "S9": "Indiscriminate Weapons.", "S10": "Hate.", "S11": "Self-Harm.", "S12": "Sexual Content.",
    "S13": "Elections.", "S14": "Code Interpreter Abuse.",
}
FIX = ("download it first (`hf download MODEL` after accepting its licence on the Hub), point `model:` at a "
       "local directory, or serve it (vLLM) and give `endpoint:`")


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
    if fmt.family == "llama-guard-4":
        raise ValueError("Llama Guard 4 prompts come from its own chat template (see LocalLlamaGuard.prompt)")
    role = "Agent" if agent is not None else "User"
    categories = [k for k in CATEGORIES if (fmt.has_s14 or k != "S14") and k not in exclude]
    lines = "".join(f"{k}: {CATEGORIES[k]}\n" for k in categories)
    conversation = f"User: {user.strip()}\n\n"
    if agent is not None:
        conversation += f"Agent: {agent.strip()}\n\n"
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


class LocalLlamaGuard:
    """Llama Guard in this process (transformers), shared by the checks that name it."""

    def __init__(self, model: str, device: str = "auto", format_name: str | None = None) -> None:
        from llmprod.modelio import load_config, load_tokenizer, pick_device, quiet_backends, resolve_model

        self.model_name = model
        try:
            import torch
            from transformers import AutoModelForCausalLM

            quiet_backends()
            ref = resolve_model(model)
            config = load_config(ref)
            self.format = FORMATS[format_name] if format_name else guard_format(model, config)
            self.device = pick_device(device)
            dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
            self.tokenizer = load_tokenizer(ref)
            self.model = AutoModelForCausalLM.from_pretrained(ref.load_path, dtype=dtype).to(self.device).eval()
        except MissingExtraError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever stops the load, the fix is the same
            detail = exc.message if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            raise InputError(f"cannot load the Llama Guard model {model}: {detail.splitlines()[0][:200]}",
                             hint=FIX.replace("MODEL", model)) from None
        unsafe = self.tokenizer.encode("unsafe", add_special_tokens=False)
        if len(unsafe) != 1:
            raise ConfigError(f"{model} does not encode 'unsafe' as one token, so it is not a Llama Guard model",
                              hint="point `model:` at a Llama Guard 3 or 4 checkpoint")
        self.unsafe_id = unsafe[0]
        self.score("hello", None, (), None)  # it runs, and the first request does not pay the warm-up

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
                forced = self.tokenizer("unsafe\n", add_special_tokens=False, return_tensors="pt").input_ids
                full = torch.cat([ids, forced.to(self.device)], dim=1)
                generated = self.model.generate(full, attention_mask=torch.ones_like(full), max_new_tokens=12,
                                                do_sample=False, pad_token_id=self.tokenizer.eos_token_id)
                text = self.tokenizer.decode(generated[0, full.shape[1]:], skip_special_tokens=True)
                categories = parse_categories(text.split("\n")[0], exclude)
        return p_unsafe, categories

    async def ascore(self, user: str, agent: str | None, exclude: tuple[str, ...], want_categories: float | None):
        return await asyncio.to_thread(self.score, user, agent, exclude, want_categories)


class EndpointLlamaGuard:
    """Llama Guard behind an OpenAI-compatible server (vLLM): Llama Guard 3 through /v1/completions with the
    prompt built here, Llama Guard 4 through /v1/chat/completions (the server applies the model's template).
    The first token's top logprobs give P(unsafe)."""

    TOP_LOGPROBS = 20  # vLLM's default --max-logprobs

    def __init__(self, endpoint: str, model: str | None, format_name: str | None, api_key: str | None,
                 timeout: float) -> None:
        self.endpoint = server_root(endpoint, "the llama_guard endpoint")
        self.model_name = model
        self.format_name = format_name
        self.format = FORMATS[format_name] if format_name else guard_format(model or "")
        self.api_key = api_key
        self.timeout = timeout
        self._client = None
        self._client_loop = None

    # -- start-up ---------------------------------------------------------------------------------------------
    def probe(self) -> "EndpointLlamaGuard":
        """The endpoint serves the model and answers a scoring request with logprobs, or an InputError says
        what to fix. Run once when the guard is built."""
        import httpx

        where = f"the Llama Guard endpoint {self.endpoint}"
        try:
            with httpx.Client(timeout=self.timeout, headers=self._headers()) as client:
                listed = client.get(f"{self.endpoint}/v1/models")
                if listed.status_code != 200:
                    raise InputError(f"{where} answered GET /v1/models with HTTP {listed.status_code}",
                                     hint="give the base URL of a vLLM (or other OpenAI-compatible) server of the "
                                          "guard model, and `api_key_env:` if it needs a key")
                served = [m.get("id") for m in (listed.json().get("data") or []) if isinstance(m, dict)]
                if self.model_name is None:
                    if len(served) != 1:
                        raise InputError(f"{where} serves {len(served)} models ({', '.join(map(str, served))})",
                                         hint="name the guard model with `model:`")
                    self.model_name = served[0]
                    if self.format_name is None:
                        self.format = guard_format(self.model_name)
                elif self.model_name not in served:
                    raise InputError(f"{where} does not serve {self.model_name} (it serves "
                                     f"{', '.join(map(str, served)) or 'nothing'})",
                                     hint="set `model:` to the name the server lists (vLLM's --served-model-name)")
                path, body = self.request("hello", None, ())
                answer = client.post(f"{self.endpoint}{path}", json=body)
        except httpx.HTTPError as exc:
            raise InputError(f"{where} is not reachable ({type(exc).__name__})",
                             hint="start the guard model's server first (e.g. `vllm serve "
                                  "meta-llama/Llama-Guard-3-1B`), or check the URL") from None
        except ValueError:
            raise InputError(f"{where} answered GET /v1/models with something that is not JSON",
                             hint="give the base URL of an OpenAI-compatible server") from None
        if answer.status_code != 200:
            raise InputError(f"{where} refused a scoring request with HTTP {answer.status_code}: "
                             f"{' '.join(answer.text.split())[:160]}",
                             hint="serve the guard model with vLLM, which returns logprobs")
        try:
            self.parse(answer.json())
        except ValueError as exc:  # not JSON, no choices, or no logprobs
            raise InputError(f"{where} cannot score: {exc}",
                             hint="serve the guard model with vLLM (its completions return logprobs)") from None
        return self

    # -- scoring ----------------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def request(self, user: str, agent: str | None, exclude: tuple[str, ...],
                categories: bool = False) -> tuple[str, dict[str, Any]]:
        """The verdict request (one token, with its top logprobs) or, once the verdict is unsafe, the request
        for the categories line (as in-process: the answer forced to start with "unsafe\n")."""
        body: dict[str, Any] = {"max_tokens": 12 if categories else 1, "temperature": 0.0}
        if self.model_name:
            body["model"] = self.model_name
        if self.format.family == "llama-guard-4":
            messages = [{"role": "user", "content": user}]
            if agent is not None:
                messages.append({"role": "assistant", "content": agent})
            body.update(messages=messages, chat_template_kwargs={"excluded_category_keys": list(exclude)})
            if not categories:
                body.update(logprobs=True, top_logprobs=self.TOP_LOGPROBS)
            return "/v1/chat/completions", body
        prompt = build_llama_guard_prompt(self.format, user, agent, exclude) + ANSWER_PREFIX
        # The prompt carries its own <|begin_of_text|>: the server must not add a second one (vLLM's
        # `add_special_tokens`, which defaults to true for completions).
        body.update(prompt=prompt + "unsafe\n" if categories else prompt, add_special_tokens=False)
        if not categories:
            body["logprobs"] = self.TOP_LOGPROBS
        return "/v1/completions", body

    def parse(self, answer: dict) -> float:
        """P("unsafe") from the first generated token's top logprobs."""
        _, top = _first_token_logprobs(_choice(answer))
        if not top:
            raise ValueError("the guard endpoint answered without logprobs")
        return sum(math.exp(lp) for tok, lp in top.items() if tok.strip().lower() == "unsafe")

    def parse_categories(self, answer: dict, exclude: tuple[str, ...]) -> list[str]:
        text = _first_token_logprobs(_choice(answer))[0].strip()
        if self.format.family == "llama-guard-4":  # the whole answer: "unsafe\nS1,S2"
            text = text.split("\n", 1)[1] if "\n" in text else ""
        return parse_categories(text.split("\n")[0], exclude)

    async def ascore(self, user: str, agent: str | None, exclude: tuple[str, ...], want_categories: float | None):
        """(p_unsafe, categories): one request for the verdict, a second for the categories when unsafe."""
        client = self._async_client()
        path, body = self.request(user, agent, exclude)
        response = await client.post(f"{self.endpoint}{path}", json=body)
        response.raise_for_status()
        p_unsafe = self.parse(response.json())
        if want_categories is None or p_unsafe < want_categories:
            return p_unsafe, []
        path, body = self.request(user, agent, exclude, categories=True)
        response = await client.post(f"{self.endpoint}{path}", json=body)
        response.raise_for_status()
        return p_unsafe, self.parse_categories(response.json(), exclude)

    def _async_client(self):
        """One pooled client per event loop (the gateway's; `guardrails scan` runs one of its own)."""
        import httpx

        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(timeout=self.timeout, headers=self._headers())
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None


def _choice(answer: dict) -> dict:
    try:
        return answer["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise ValueError("the guard endpoint's answer has no choices") from None


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


class LlamaGuardCheck:
    """One `llama_guard` entry of a policy: its threshold, exclusions and action over a shared scorer."""

    def __init__(self, config: CheckConfig, scorer: LocalLlamaGuard | EndpointLlamaGuard) -> None:
        self.config = config
        self.name = config.check
        self.scorer = scorer
        self.threshold = config.options.get("threshold", 0.5)
        self.exclude = tuple(config.options.get("exclude", ()))
        self.every_tokens = config.options.get("every_tokens", 64)

    async def _verdict(self, user: str, agent: str | None) -> list[Finding]:
        p_unsafe, categories = await self.scorer.ascore(user, agent, self.exclude, self.threshold)
        if p_unsafe < self.threshold:
            return []
        return [Finding(self.name, c, 0, 0, self.config.action, p_unsafe) for c in (categories or ["unsafe"])]

    async def check_input(self, texts: list[str]) -> list[Finding]:
        return await self._verdict(texts[-1] if texts else "", None)

    async def check_output(self, text: str, context: str) -> list[Finding]:
        return await self._verdict(context, text)


def build(config: CheckConfig, shared: SharedModels) -> LlamaGuardCheck:
    options = config.options
    endpoint, model, fmt = options.get("endpoint"), options.get("model"), options.get("format")
    if endpoint:
        api_key_env = options.get("api_key_env")
        if api_key_env and not os.environ.get(api_key_env):
            raise InputError(f"llama_guard's api_key_env names {api_key_env}, which is not set",
                             hint=f"export {api_key_env}=<the guard endpoint's key>, or drop api_key_env")
        key = ("llama_guard", "endpoint", endpoint, model, fmt, api_key_env)
        scorer = shared.get(key, lambda: EndpointLlamaGuard(
            endpoint, model, fmt, os.environ.get(api_key_env) if api_key_env else None,
            options.get("timeout", 30.0)).probe())
    else:
        model = model or DEFAULT_MODEL
        device = options.get("device", "auto")
        scorer = shared.get(("llama_guard", "local", model, device, fmt),
                            lambda: LocalLlamaGuard(model, device, fmt))
    return LlamaGuardCheck(config, scorer)


TYPE = CheckType(
    "llama_guard", "Llama Guard 3/4: P(unsafe) of the user turn (input) or the answer (output)", ("flag", "block"),
    STAGES, {
        "model": OptionSpec("str", help=f"hub id or directory (default {DEFAULT_MODEL}); the served name "
                                        "with endpoint"),
        "endpoint": OptionSpec("str", help="base URL of an OpenAI-compatible server of the guard model"),
        "api_key_env": OptionSpec("str", help="environment variable holding the endpoint's key"),
        "format": OptionSpec("str", tuple(FORMATS), help="prompt format, when the model's name does not tell"),
        "threshold": OptionSpec("float", minimum=0.0, maximum=1.0),
        "exclude": OptionSpec("list[str]", tuple(CATEGORIES)),
        "every_tokens": OptionSpec("int", minimum=1, maximum=100_000,
                                   help="streamed output: re-check every this many completion tokens"),
        "timeout": OptionSpec("float", minimum=0.1, maximum=600.0, help="seconds for one endpoint call"),
        "device": OptionSpec("str", ("auto", "cpu", "cuda")),
    }, build, loads_model=True)
