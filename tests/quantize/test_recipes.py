"""Recipes, settings precedence and up-front refusals: nothing here loads a model's weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmprod.errors import ConfigError, InputError
from llmprod.quantize import build_spec
from llmprod.quantize.recipes import BUNDLED, recipe_dict, settings_from_recipe
from llmprod.quantize.spec import QuantizeSettings, resolve_settings


def _spec(tmp_path, **kw):
    base = dict(model="m", output=tmp_path / "out", method=None, bits=None, group_size=None, symmetric=None,
                ignore=None, recipe=None)
    return build_spec(**{**base, **kw})


@pytest.mark.parametrize("name,method,bits,symmetric", [
    ("awq-w4a16", "awq", 4, False), ("gptq-w4a16", "gptq", 4, True), ("gptq-w8a16", "gptq", 8, True)])
def test_bundled_recipes(name, method, bits, symmetric):
    s = settings_from_recipe(BUNDLED / f"{name}.yaml")
    assert (s.method, s.bits, s.group_size, s.symmetric, s.ignore) == (method, bits, 128, symmetric, ("lm_head",))


@pytest.mark.parametrize("name,method,scheme,smoothquant", [
    ("w8a8-fp8", "rtn", "w8a8-fp8", None), ("fp8-block", "rtn", "fp8-block", None),
    ("nvfp4a16", "rtn", "nvfp4a16", None), ("w8a8-int8", "gptq", "w8a8-int8", 0.8)])
def test_bundled_recipes_of_the_hopper_schemes(name, method, scheme, smoothquant):
    s = settings_from_recipe(BUNDLED / f"{name}.yaml")
    assert (s.method, s.scheme, s.smoothquant, s.ignore) == (method, scheme, smoothquant, ("lm_head",))
    assert s.needs_data is (method != "rtn")


@pytest.mark.parametrize("kw", [
    dict(scheme="w8a8-fp8"), dict(scheme="fp8-block"), dict(scheme="nvfp4a16"), dict(scheme="w8a8-int8"),
    dict(scheme="w8a8-int8", method="rtn", smoothquant=0.5), dict(method="rtn"),
    dict(method="gptq", kv_cache="fp8"), dict(method="awq", kv_cache="fp8"), dict(scheme="w8a8-fp8", kv_cache="fp8")])
def test_every_scheme_writes_a_recipe_that_reads_back_and_llmcompressor_accepts(tmp_path, kw):
    from llmcompressor.recipe import Recipe

    spec = _spec(tmp_path, **kw)
    path = tmp_path / "r.yaml"
    path.write_text(__import__("yaml").safe_dump(recipe_dict(spec)))
    assert settings_from_recipe(path) == spec.settings
    Recipe.from_dict(recipe_dict(spec))


def test_scheme_defaults(tmp_path):
    assert _spec(tmp_path, scheme="w8a8-fp8").settings.method == "rtn"  # FP8 has one way to be made
    int8 = _spec(tmp_path, scheme="w8a8-int8").settings
    assert (int8.method, int8.smoothquant) == ("gptq", 0.8)  # SmoothQuant then GPTQ
    assert _spec(tmp_path, scheme="w8a8-int8", smoothquant=0.6).settings.smoothquant == 0.6
    assert _spec(tmp_path, bits=8, method="gptq").settings.scheme == "w8a16"  # --bits is shorthand
    fp8_kv = _spec(tmp_path, scheme="w8a8-fp8", kv_cache="fp8").settings
    assert fp8_kv.needs_data and fp8_kv.method == "rtn"  # KV scales are calibrated even though weights are not
    assert _spec(tmp_path, scheme="w8a8-fp8", kv_cache="fp8", dataset="x.txt").dataset == "x.txt"


def test_flags_override_the_recipe_which_overrides_defaults(tmp_path):
    spec = _spec(tmp_path, recipe="gptq-w4a16", group_size=64)
    assert (spec.settings.method, spec.settings.bits, spec.settings.group_size) == ("gptq", 4, 64)
    assert spec.settings.options == {"dampening_frac": 0.01}  # kept from the recipe
    spec = _spec(tmp_path, method="awq")
    assert (spec.settings.bits, spec.settings.group_size, spec.settings.symmetric) == (4, 128, False)


def test_written_recipe_reads_back_to_the_same_settings(tmp_path):
    for name in ("awq-w4a16", "gptq-w8a16"):
        spec = _spec(tmp_path, recipe=name, group_size=32, ignore=["lm_head", "re:.*gate_proj"])
        path = tmp_path / f"{name}.yaml"
        path.write_text(__import__("yaml").safe_dump(recipe_dict(spec)))
        assert settings_from_recipe(path) == spec.settings


def test_llmcompressor_accepts_every_written_recipe(tmp_path):
    from llmcompressor.recipe import Recipe

    for method in ("awq", "gptq"):
        Recipe.from_dict(recipe_dict(_spec(tmp_path, method=method)))


def _write(tmp_path, text) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_awq_without_a_quantizer_is_refused(tmp_path):
    path = _write(tmp_path, "quant_stage:\n  quant_modifiers:\n    AWQModifier: {duo_scaling: true}\n")
    with pytest.raises(ConfigError, match="no quantization modifier after it"):
        settings_from_recipe(path)


def test_bad_yaml_names_the_line(tmp_path):
    path = _write(tmp_path, "quant_stage:\n  quant_modifiers:\n    GPTQModifier: {scheme: [W4A16\n")
    with pytest.raises(ConfigError, match="line"):
        settings_from_recipe(path)


def test_unknown_modifier_and_activation_quantization_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unsupported modifier"):
        settings_from_recipe(_write(tmp_path, "s_stage:\n  q_modifiers:\n    SparseGPTModifier: {}\n"))
    with pytest.raises(ConfigError, match="activation quantization"):
        settings_from_recipe(_write(tmp_path, "s_stage:\n  q_modifiers:\n    GPTQModifier: {config_groups: "
                                              "{g: {weights: {num_bits: 8}, input_activations: {num_bits: 8}}}}\n"))
    with pytest.raises(ConfigError, match="not one llmprod writes"):
        settings_from_recipe(_write(tmp_path, "s_stage:\n  q_modifiers:\n    QuantizationModifier: {scheme: W4A8}\n"))
    with pytest.raises(ConfigError, match="not FP8"):
        settings_from_recipe(_write(tmp_path, "s_stage:\n  q_modifiers:\n    GPTQModifier: {scheme: W4A16, "
                                              "kv_cache_scheme: {num_bits: 4, type: int}}\n"))


@pytest.mark.parametrize("kw,message", [
    (dict(method="gptq", bits=3), "not supported"),
    (dict(method="gptq", group_size=0), "not a positive integer"),
    (dict(method="gptq", format="awq"), "--format awq"),
    (dict(method="awq", format="awq", bits=8), "--format awq"),
    (dict(method="awq", format="awq", symmetric=True), "always asymmetric"),
    (dict(), "no quantization method"),
    (dict(method="awq", scheme="w8a8-fp8"), "--method awq cannot make w8a8-fp8"),
    (dict(method="gptq", scheme="nvfp4a16"), "--method gptq cannot make nvfp4a16"),
    (dict(method="awq", scheme="w8a8-int8"), "--method awq cannot make w8a8-int8"),
    (dict(method="gptq", smoothquant=0.8), "does not quantize activations to integers"),
    (dict(scheme="w8a8-fp8", smoothquant=0.8), "does not quantize activations to integers"),
    (dict(scheme="w8a8-int8", smoothquant=1.5), "between 0 and 1"),
    (dict(scheme="w8a8-fp8", dataset="calib.txt"), "reads no calibration data"),
    (dict(method="rtn", num_samples=64), "reads no calibration data"),
    (dict(scheme="fp8-block", group_size=64), "--group-size does not apply to fp8-block"),
    (dict(scheme="w8a8-int8", symmetric=False), "does not apply to w8a8-int8"),
    (dict(scheme="w4a16", bits=8, method="gptq"), "--bits 8 contradicts --scheme w4a16"),
    (dict(scheme="w4a4"), "unknown --scheme"),
    (dict(method="gptq", kv_cache="int8"), "unknown --kv-cache-scheme"),
    (dict(method="awq", format="awq", kv_cache="fp8"), "cannot hold KV cache scales"),
    (dict(method="awq", format="awq", gpus=2), "AutoAWQ has none"),
    (dict(scheme="w8a8-fp8", gpus=2), "reads none"),
    (dict(method="gptq", gpus=0), "not a number of GPUs"),
    (dict(method="gptq", gpus=4, num_samples=2), "gives some of the 4 GPUs nothing"),
])
def test_impossible_settings_are_refused(tmp_path, kw, message):
    with pytest.raises(InputError, match=message):
        _spec(tmp_path, **kw)


def test_resolution_is_cli_then_recipe_then_defaults():
    recipe = QuantizeSettings(method="awq", scheme="w8a16", group_size=64)
    assert resolve_settings(QuantizeSettings(scheme="w4a16"), recipe).bits == 4
    assert resolve_settings(QuantizeSettings(), recipe).group_size == 64
    assert resolve_settings(QuantizeSettings(method="gptq"), None).group_size == 128


def _refused(cli, args, message, out):
    result = cli("quantize", *args)
    assert result.exit_code == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last, result.stderr
    assert result.stderr.count("error:") == 1
    assert not out.exists()


def test_cli_refuses_a_group_size_that_does_not_divide_a_layer(cli, tiny_model_dir, tmp_path, eval_text_file):
    out = tmp_path / "q"
    _refused(cli, [tiny_model_dir, "--method", "gptq", "--group-size", "96", "--output", out, "--dataset",
                   eval_text_file], "does not divide the input size 128", out)
    assert list(tmp_path.iterdir()) == []  # not even a temporary directory was made


def test_cli_refuses_an_invalid_recipe(cli, tiny_model_dir, tmp_path):
    recipe = _write(tmp_path, "quant_stage:\n  quant_modifiers:\n    AWQModifier: {}\n")
    _refused(cli, [tiny_model_dir, "--recipe", recipe, "--output", tmp_path / "q"], "no quantization modifier",
             tmp_path / "q")


def test_cli_refuses_a_missing_recipe_listing_the_bundled_ones(cli, tiny_model_dir, tmp_path):
    _refused(cli, [tiny_model_dir, "--recipe", "gptq-w3", "--output", tmp_path / "q"], "gptq-w4a16",
             tmp_path / "q")


def test_cli_refuses_a_missing_model(cli, tmp_path, eval_text_file):
    _refused(cli, [tmp_path / "nope", "--method", "gptq", "--output", tmp_path / "q", "--dataset", eval_text_file],
             "not found", tmp_path / "q")


def test_cli_refuses_a_named_dataset_while_offline(cli, tiny_model_dir, tmp_path):
    _refused(cli, [tiny_model_dir, "--method", "awq", "--output", tmp_path / "q", "--dataset", "pile-val"],
             "local .txt, .jsonl or .parquet", tmp_path / "q")


def test_cli_refuses_to_overwrite_and_leaves_the_directory_alone(cli, tiny_model_dir, tmp_path, eval_text_file):
    out = tmp_path / "q"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = cli("quantize", tiny_model_dir, "--method", "gptq", "--output", out, "--dataset", eval_text_file)
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    assert [p.name for p in out.iterdir()] == ["precious.txt"] and (out / "precious.txt").read_text() == "keep me"


def test_cli_refuses_calibration_flags_for_a_data_free_scheme(cli, tiny_model_dir, tmp_path, eval_text_file):
    out = tmp_path / "q"
    _refused(cli, [tiny_model_dir, "--scheme", "w8a8-fp8", "--output", out, "--dataset", eval_text_file],
             "reads no calibration data", out)
    _refused(cli, [tiny_model_dir, "--method", "awq", "--scheme", "w8a8-fp8", "--output", out],
             "cannot make w8a8-fp8", out)
    assert list(tmp_path.iterdir()) == []


def test_cli_smoothquant_strength(cli, tiny_model_dir, tmp_path):
    plan = cli("quantize", tiny_model_dir, "--scheme", "w8a8-int8", "--output", tmp_path / "q", "--dry-run", "--json")
    assert plan.exit_code == 0, plan.stderr
    assert plan.json()["recipe"]["quant_stage"]["quant_modifiers"]["SmoothQuantModifier"] == {"smoothing_strength": 0.8}
    plan = cli("quantize", tiny_model_dir, "--scheme", "w8a8-int8", "--smoothquant", "0", "--output", tmp_path / "q",
               "--dry-run", "--json")
    assert list(plan.json()["recipe"]["quant_stage"]["quant_modifiers"]) == ["GPTQModifier"]  # 0 turns it off
    plan = cli("quantize", tiny_model_dir, "--scheme", "w8a8-int8", "--smoothquant", "0.55", "--output",
               tmp_path / "q", "--dry-run", "--json")
    assert plan.json()["recipe"]["quant_stage"]["quant_modifiers"]["SmoothQuantModifier"] == {"smoothing_strength": 0.55}
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing
