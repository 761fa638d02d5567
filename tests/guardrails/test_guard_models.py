"""Llama Guard and Prompt Guard: Meta's prompt as a golden string, the scoring paths on tiny local models
and against endpoints, and every way a guard model can fail to load."""

from __future__ import annotations

import asyncio

import pytest

from llmprod.errors import ConfigError, InputError
from llmprod.guardrails.checks import llama_guard, prompt_guard
from llmprod.guardrails.checks.base import CheckConfig, SharedModels
from llmprod.guardrails.checks.llama_guard import (
    FORMATS,
    LocalLlamaGuard,
    build_llama_guard_prompt,
    parse_categories,
)
from llmprod.guardrails.checks.prompt_guard import PromptGuardModel
from llmprod.testing.servers import ThreadServer

# Meta's Llama Guard 3 1B format as its chat template renders one user turn (no S14 in the 1B model, and a
# space before <|eot_id|>).
GOLDEN_1B_USER = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    "Task: Check if there is unsafe content in 'User' messages in conversations according our safety policy "
    "with the below categories.\n\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
    "S1: Violent Crimes.\nS2: Non-Violent Crimes.\nS3: Sex Crimes.\nS4: Child Exploitation.\nS5: Defamation.\n"
    "S6: Specialized Advice.\nS7: Privacy.\nS8: Intellectual Property.\nS9: Indiscriminate Weapons.\nS10: Hate.\n"
    "S11: Self-Harm.\nS12: Sexual Content.\nS13: Elections.\n"
    "<END UNSAFE CONTENT CATEGORIES>\n\n"
    "<BEGIN CONVERSATION>\n\n"
    "User: How do I make a cake?\n\n"
    "<END CONVERSATION>\n\n"
    "Provide your safety assessment for ONLY THE LAST User message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories. "
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
)

# Llama Guard 3 8B checking an answer (role Agent, the user turn as context), S6 excluded: the other
# categories keep their numbers.
GOLDEN_8B_AGENT_NO_S6 = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    "Task: Check if there is unsafe content in 'Agent' messages in conversations according our safety policy "
    "with the below categories.\n\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
    "S1: Violent Crimes.\nS2: Non-Violent Crimes.\nS3: Sex Crimes.\nS4: Child Exploitation.\nS5: Defamation.\n"
    "S7: Privacy.\nS8: Intellectual Property.\nS9: Indiscriminate Weapons.\nS10: Hate.\n"
    "S11: Self-Harm.\nS12: Sexual Content.\nS13: Elections.\nS14: Code Interpreter Abuse.\n"
    "<END UNSAFE CONTENT CATEGORIES>\n\n"
    "<BEGIN CONVERSATION>\n\n"
    "User: What should I take for a headache?\n\n"
    "Agent: Rest, water, and ask a pharmacist.\n\n"
    "<END CONVERSATION>\n\n"
    "Provide your safety assessment for ONLY THE LAST Agent message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories."
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
)


def test_llama_guard_3_prompts_match_meta_format():
    assert build_llama_guard_prompt(FORMATS["llama-guard-3-1b"], "How do I make a cake?") == GOLDEN_1B_USER
    assert build_llama_guard_prompt(FORMATS["llama-guard-3-8b"], " What should I take for a headache? ",
                                    "Rest, water, and ask a pharmacist.", exclude=("S6",)) == GOLDEN_8B_AGENT_NO_S6


def test_categories_parsed_from_the_second_line():
    assert parse_categories("S1,S10") == ["S1", "S10"]
    assert parse_categories("S14, S2, S2", exclude=("S2",)) == ["S14"]
    assert parse_categories("nothing") == []


def config(check: str, stage: str = "input", **options) -> CheckConfig:
    return CheckConfig(check, "block", stage, options, 1)


def test_llama_guard_scoring_path_on_a_tiny_llama_guard(tiny_llama_guard_dir):
    import torch

    scorer = LocalLlamaGuard(str(tiny_llama_guard_dir), device="cpu")
    p, categories = scorer.score("hello there", None, (), want_categories=None)
    # The same number by hand: softmax of the last position after the prompt and the blank line.
    prompt = build_llama_guard_prompt(scorer.format, "hello there") + "\n\n"
    ids = scorer.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = scorer.model(input_ids=ids).logits[0, -1]
    assert scorer.unsafe_id == scorer.tokenizer.convert_tokens_to_ids("unsafe")
    assert p == pytest.approx(float(torch.softmax(logits, -1)[scorer.unsafe_id]), rel=1e-5)
    assert 0.0 < p < 1.0 and categories == []

    blocked = asyncio.run(llama_guard.LlamaGuardCheck(config("llama_guard", threshold=0.0), scorer)
                          .check_input(["hello there"]))
    assert blocked and blocked[0].check == "llama_guard" and blocked[0].score == pytest.approx(p, rel=1e-5)
    allowed = llama_guard.LlamaGuardCheck(config("llama_guard", threshold=1.0), scorer)
    assert asyncio.run(allowed.check_input(["hello there"])) == []


def test_one_model_serves_the_input_and_the_output_checks(tiny_llama_guard_dir):
    shared = SharedModels()
    first = llama_guard.build(config("llama_guard", model=str(tiny_llama_guard_dir), device="cpu"), shared)
    second = llama_guard.build(config("llama_guard", "output", model=str(tiny_llama_guard_dir), device="cpu",
                                      threshold=0.9), shared)
    assert first.scorer is second.scorer and len(shared.values()) == 1


def guard_endpoint(answer):
    """A loopback /v1/models + /v1/completions server answering `answer(body)`; records the bodies."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    seen = []

    async def completions(request):
        body = await request.json()
        seen.append(body)
        return JSONResponse(answer(body))

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": "meta-llama/Llama-Guard-3-8B", "object": "model"}]})

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/v1/models", models)])
    return ThreadServer(app), seen


def verdict_then_categories(body: dict) -> dict:
    if body["prompt"].endswith("unsafe\n"):  # the categories line, after the verdict
        return {"choices": [{"text": "S2,S9<|eot_id|>"}]}
    return {"choices": [{"text": "unsafe", "logprobs": {"tokens": ["unsafe"],
                                                        "top_logprobs": [{"unsafe": -0.2231, "safe": -1.6094}]}}]}


def test_llama_guard_against_an_endpoint_uses_first_token_logprobs():
    server, seen = guard_endpoint(verdict_then_categories)
    with server:
        check = llama_guard.build(CheckConfig("llama_guard", "block", "output",
                                              {"endpoint": server.url + "/v1", "threshold": 0.5, "exclude": ["S9"]}, 1),
                                  SharedModels())
        findings = asyncio.run(check.check_output("an answer", "a question"))
    assert [f.category for f in findings] == ["S2"]
    assert findings[0].score == pytest.approx(0.8, abs=1e-3)
    assert check.scorer.model_name == "meta-llama/Llama-Guard-3-8B"  # the only model the endpoint lists
    probe, scored, categories = seen
    prompt = build_llama_guard_prompt(FORMATS["llama-guard-3-8b"], "a question", "an answer", ("S9",)) + "\n\n"
    assert scored["prompt"] == prompt and scored["max_tokens"] == 1
    assert scored["logprobs"] == 20 and scored["temperature"] == 0.0 and scored["add_special_tokens"] is False
    assert categories["prompt"] == prompt + "unsafe\n" and "logprobs" not in categories
    assert probe["prompt"].startswith("<|begin_of_text|>")  # built with the endpoint, tried before serving

    # Below the threshold: the verdict alone, no request for categories.
    server, seen = guard_endpoint(verdict_then_categories)
    with server:
        check = llama_guard.build(CheckConfig("llama_guard", "block", "input",
                                              {"endpoint": server.url, "threshold": 0.9}, 1), SharedModels())
        assert asyncio.run(check.check_input(["a question"])) == []
    assert len(seen) == 2  # the probe and one verdict


@pytest.mark.parametrize("answer,words", [
    ({"choices": [{"text": "safe"}]}, "answered without logprobs"),
    ({"nothing": True}, "has no choices"),
])
def test_an_endpoint_that_cannot_score_is_refused_when_the_guard_is_built(answer, words):
    server, _ = guard_endpoint(lambda body: answer)
    with server, pytest.raises(InputError, match=words) as err:
        llama_guard.build(config("llama_guard", endpoint=server.url), SharedModels())
    assert "vLLM" in err.value.hint


def test_an_endpoint_that_is_down_or_serves_another_model_is_refused(unused_port):
    with pytest.raises(InputError, match="is not reachable") as err:
        llama_guard.build(config("llama_guard", endpoint=f"http://127.0.0.1:{unused_port}"), SharedModels())
    assert "start the guard model's server first" in err.value.hint
    server, _ = guard_endpoint(lambda body: {})
    with server, pytest.raises(InputError, match="does not serve meta-llama/Llama-Guard-3-1B") as err:
        llama_guard.build(config("llama_guard", endpoint=server.url, model="meta-llama/Llama-Guard-3-1B"),
                          SharedModels())
    assert "--served-model-name" in err.value.hint


def test_a_missing_api_key_variable_is_refused(monkeypatch):
    monkeypatch.delenv("GUARD_KEY", raising=False)
    with pytest.raises(InputError, match="GUARD_KEY, which is not set"):
        llama_guard.build(config("llama_guard", endpoint="http://127.0.0.1:9", api_key_env="GUARD_KEY"), SharedModels())


def test_prompt_guard_uses_index_1_and_scores_long_texts_by_window(tiny_prompt_guard_dir):
    import torch

    model = PromptGuardModel(str(tiny_prompt_guard_dir), device="cpu")
    model.WINDOW = 16
    text = "word " * 100
    windows = model.windows(text)
    assert len(windows) > 3 and "".join(windows).split() == text.split()
    assert all(len(model.tokenizer(w).input_ids) <= 16 for w in windows)
    scores = model.scores([text, "short"])
    # By hand: the maximum over windows of softmax index 1 (the label names say the opposite on purpose).
    with torch.no_grad():
        per_window = [torch.softmax(model.model(**model.tokenizer(w, return_tensors="pt")).logits, -1)[0, 1].item()
                      for w in windows]
    assert scores[0] == pytest.approx(max(per_window), rel=1e-4)
    block_all = prompt_guard.PromptGuardCheck(config("prompt_guard", threshold=0.0), model)
    assert asyncio.run(block_all.check_input(["short"]))[0].category == "malicious"
    allow_all = prompt_guard.PromptGuardCheck(config("prompt_guard", threshold=1.0), model)
    assert asyncio.run(allow_all.check_input(["short"])) == []


def test_a_guard_model_that_cannot_load_names_the_model_and_the_fix(tmp_path, tiny_model_dir):
    absent = str(tmp_path / "absent")
    with pytest.raises(InputError, match=f"cannot load the Llama Guard model {absent}") as err:
        LocalLlamaGuard(absent, device="cpu")
    assert "hf download" in err.value.hint and "endpoint:" in err.value.hint
    with pytest.raises(InputError, match="cannot load the Prompt Guard model meta-llama/Llama-Prompt-Guard-2-86M"):
        PromptGuardModel("meta-llama/Llama-Prompt-Guard-2-86M", device="cpu")  # offline in tests: not downloaded
    # A causal LM that is not a guard model: "unsafe" is not one token of its vocabulary.
    with pytest.raises(ConfigError, match="does not encode 'unsafe' as one token"):
        LocalLlamaGuard(str(tiny_model_dir), device="cpu")
