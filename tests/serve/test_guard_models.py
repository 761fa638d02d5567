"""Llama Guard and Prompt Guard: Meta's prompt as a golden string, and the scoring paths on tiny local models."""

from __future__ import annotations

import asyncio

import pytest
from tests_serve_helpers import ThreadServer

from llmprod.serve.guardrails.models import (FORMATS, LlamaGuardCheck, PromptGuardCheck, build_llama_guard_prompt,
                                             parse_categories)
from llmprod.serve.guardrails.policy import CheckConfig

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


def config(check: str, **options) -> CheckConfig:
    return CheckConfig(check, "block", "input", options, 1)


def test_llama_guard_scoring_path_on_a_tiny_llama(tiny_model_dir):
    import torch

    guard = LlamaGuardCheck(str(tiny_model_dir), None, device="cpu")
    p, categories = guard.score("hello there", None, (), want_categories=None)
    # The same number by hand: softmax of the last position after the prompt and the blank line.
    prompt = build_llama_guard_prompt(guard.format, "hello there") + "\n\n"
    ids = guard.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = guard.model(input_ids=ids).logits[0, -1]
    assert p == pytest.approx(float(torch.softmax(logits, -1)[guard.unsafe_id]), rel=1e-5)
    assert 0.0 < p < 1.0 and categories == []

    blocked = asyncio.run(guard.check_input(["hello there"], config("llama_guard", threshold=0.0)))
    assert blocked and blocked[0].check == "llama_guard" and blocked[0].score == pytest.approx(p, rel=1e-5)
    assert asyncio.run(guard.check_input(["hello there"], config("llama_guard", threshold=1.0))) == []


def test_llama_guard_against_an_endpoint_uses_first_token_logprobs():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    seen = {}

    async def completions(request):
        body = await request.json()
        seen.update(body)
        return JSONResponse({"choices": [{"text": "unsafe\nS2,S9", "logprobs": {
            "tokens": ["unsafe", "\n", "S2"], "top_logprobs": [{"unsafe": -0.2231, "safe": -1.6094}, {}, {}]}}]})

    server = ThreadServer(Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])).start()
    try:
        guard = LlamaGuardCheck("meta-llama/Llama-Guard-3-8B", server.url)
        findings = asyncio.run(guard.check_output("an answer", "a question",
                                                  CheckConfig("llama_guard", "block", "output",
                                                              {"threshold": 0.5, "exclude": ["S9"]}, 1)))
    finally:
        server.stop()
    assert [f.category for f in findings] == ["S2"]
    assert findings[0].score == pytest.approx(0.8, abs=1e-3)
    assert seen["prompt"] == build_llama_guard_prompt(FORMATS["llama-guard-3-8b"], "a question", "an answer",
                                                      ("S9",)) + "\n\n"
    assert seen["logprobs"] == 20 and seen["temperature"] == 0.0


@pytest.fixture(scope="module")
def tiny_prompt_guard(tiny_model_dir, tmp_path_factory):
    """A DeBERTa-v2 sequence classifier (Prompt Guard 2's architecture) with labels named backwards."""
    import torch
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=512, num_labels=2,
                          pad_token_id=tokenizer.pad_token_id or 0, id2label={0: "MALICIOUS", 1: "BENIGN"},
                          label2id={"MALICIOUS": 0, "BENIGN": 1})
    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(cfg)
    path = tmp_path_factory.mktemp("prompt-guard")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_prompt_guard_uses_index_1_and_scores_long_texts_by_window(tiny_prompt_guard):
    import torch

    guard = PromptGuardCheck(str(tiny_prompt_guard), device="cpu")
    guard.WINDOW = 16
    text = "word " * 100
    windows = guard.windows(text)
    assert len(windows) > 3 and "".join(windows).split() == text.split()
    assert all(len(guard.tokenizer(w).input_ids) <= 16 for w in windows)
    scores = guard.scores([text, "short"])
    # By hand: the maximum over windows of softmax index 1 (the label names say the opposite on purpose).
    with torch.no_grad():
        per_window = [torch.softmax(guard.model(**guard.tokenizer(w, return_tensors="pt")).logits, -1)[0, 1].item()
                      for w in windows]
    assert scores[0] == pytest.approx(max(per_window), rel=1e-4)
    assert asyncio.run(guard.check_input(["short"], config("prompt_guard", threshold=0.0)))[0].category == "malicious"
    assert asyncio.run(guard.check_input(["short"], config("prompt_guard", threshold=1.0))) == []


def test_missing_guard_model_is_a_clear_input_error(tmp_path):
    from llmprod.errors import InputError

    with pytest.raises(InputError, match="cannot load the guard model"):
        LlamaGuardCheck(str(tmp_path / "absent"), None, device="cpu")
