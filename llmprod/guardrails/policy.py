"""Guardrail policies: YAML files that list input and output checks, each with an action and options.

    name: default
    input:
      - check: secrets          # pii | secrets | injection | denylist | regex | llama_guard | prompt_guard
        action: block           # block | redact | flag
        options: {kinds: [aws, github]}
    output:
      - check: pii
        action: redact

`input_mode` (top level) says when the request may go to the engine: `parallel` (the default) sends it as
soon as the deterministic checks have passed and redacted it, while the model checks (Llama Guard, Prompt
Guard) run, and releases nothing of the answer until they have passed; `before` waits for every input check,
for prompts that must never reach the model.

A policy is validated completely on load, and every mistake is reported with its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmprod.bundled import RECIPES, find_bundled, yaml_error
from llmprod.errors import ConfigError
from llmprod.guardrails import detectors
from llmprod.guardrails.checks.base import CheckConfig, CheckType, OptionSpec
from llmprod.guardrails.registry import CHECK_TYPES
from llmprod.guardrails.types import STAGES

BUNDLED = RECIPES / "guardrails"
DEFAULT_POLICY = BUNDLED / "default.yaml"


INPUT_MODES = ("parallel", "before")


@dataclass
class Policy:
    name: str
    source: str
    input: list[CheckConfig] = field(default_factory=list)
    output: list[CheckConfig] = field(default_factory=list)
    input_mode: str = "parallel"  # INPUT_MODES

    def checks(self, stage: str) -> list[CheckConfig]:
        return self.input if stage == "input" else self.output


def find_policy(name_or_path: str | Path) -> Path:
    return find_bundled(name_or_path, BUNDLED, "guardrail policy")


def load_policy(name_or_path: str | Path, registry: dict[str, CheckType] | None = None) -> Policy:
    """A policy file (or a bundled policy's name), validated against the check types of `registry`."""
    import yaml

    path = find_policy(name_or_path)
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", hint="give a readable UTF-8 YAML file") from None
    return _parse(root, path, registry or CHECK_TYPES)


def _err(path: Path, line: int, message: str, hint: str = f"see {DEFAULT_POLICY} for the format"):
    return ConfigError(f"{path} line {line}: {message}", hint=hint)


def _line(node) -> int:
    return node.start_mark.line + 1


def _mapping(node, path: Path, what: str) -> dict[str, Any]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise _err(path, _line(node), f"{what} must be a mapping")
    result = {}
    for key, value in node.value:
        result[str(key.value)] = value
    return result


def _plain(node):
    import yaml

    return yaml.safe_load(yaml.serialize(node))


def _parse(root, path: Path, registry: dict[str, CheckType]) -> Policy:
    import yaml

    if root is None:
        raise ConfigError(f"{path} is empty", hint="a policy needs `input:` and/or `output:` lists of checks")
    top = _mapping(root, path, "a policy")
    unknown = set(top) - {"name", "description", "input_mode", "input", "output"}
    if unknown:
        key = next(k for k, _ in root.value if k.value in unknown)
        raise _err(path, _line(key), f"unknown key {key.value!r} (known: name, description, input_mode, input, "
                                     "output)")
    name = _plain(top["name"]) if "name" in top else path.stem
    mode = str(_plain(top["input_mode"])) if "input_mode" in top else "parallel"
    if mode not in INPUT_MODES:
        raise _err(path, _line(top["input_mode"]), f"input_mode {mode!r} is not one of {', '.join(INPUT_MODES)}",
                   "parallel: the request goes upstream while the model checks run; before: after them")
    policy = Policy(name=str(name), source=str(path), input_mode=mode)
    for stage in STAGES:
        node = top.get(stage)
        if node is None:
            continue
        if not isinstance(node, yaml.SequenceNode):
            raise _err(path, _line(node), f"`{stage}` must be a list of checks")
        for item in node.value:
            policy.checks(stage).append(_parse_check(item, stage, path, registry))
    if not policy.input and not policy.output:
        raise _err(path, _line(root), "the policy has no checks", "add checks under `input:` or `output:`")
    return policy


def _parse_check(node, stage: str, path: Path, registry: dict[str, CheckType]) -> CheckConfig:
    fields = _mapping(node, path, "a check")
    line = _line(node)
    for key in fields:
        if key not in ("check", "action", "options"):
            raise _err(path, line, f"unknown key {key!r} in a check (known: check, action, options)")
    if "check" not in fields:
        raise _err(path, line, "a check needs `check:` (one of " + ", ".join(registry) + ")")
    check = str(_plain(fields["check"]))
    spec = registry.get(check)
    if spec is None:
        raise _err(path, _line(fields["check"]), f"unknown check {check!r}", f"use one of: {', '.join(registry)}")
    if stage not in spec.stages:
        raise _err(path, line, f"check {check!r} runs on {', '.join(spec.stages)} only, not {stage}")
    action = str(_plain(fields["action"])) if "action" in fields else "block"
    if action not in spec.actions:
        raise _err(path, _line(fields.get("action", node)), f"action {action!r} is not possible for {check}",
                   f"use one of: {', '.join(spec.actions)}")
    options: dict[str, Any] = {}
    if "options" in fields:
        raw = _mapping(fields["options"], path, "options")
        for key, value_node in raw.items():
            option = spec.options.get(key)
            if option is None:
                raise _err(path, _line(value_node), f"unknown option {key!r} for {check}",
                           f"options of {check}: {', '.join(spec.options) or 'none'}")
            options[key] = _check_option(check, key, option, _plain(value_node), path, _line(value_node))
    for key, option in spec.options.items():
        if option.required and key not in options:
            raise _err(path, line, f"{check} needs the option {key!r}")
    return CheckConfig(check, action, stage, options, line)


def _check_option(check: str, key: str, option: OptionSpec, value: Any, path: Path, line: int) -> Any:
    where = f"option {key!r} of {check}"
    if option.kind == "bool":
        if not isinstance(value, bool):
            raise _err(path, line, f"{where} must be true or false")
        return value
    if option.kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (option.kind == "int"
                                                                            and not isinstance(value, int)):
            raise _err(path, line, f"{where} must be a{'n integer' if option.kind == 'int' else ' number'}")
        if (option.minimum is not None and value < option.minimum) or (
                option.maximum is not None and value > option.maximum):
            raise _err(path, line, f"{where} is {value}, outside [{option.minimum:g}, {option.maximum:g}]")
        return value
    if option.kind == "str":
        if not isinstance(value, str) or not value:
            raise _err(path, line, f"{where} must be a non-empty string")
        if option.choices and value not in option.choices:
            raise _err(path, line, f"{where} is {value!r}", f"use one of: {', '.join(option.choices)}")
        return value
    if option.kind == "list[str]":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise _err(path, line, f"{where} must be a non-empty list of strings")
        if option.choices:
            bad = [v for v in value if v not in option.choices]
            if bad:
                raise _err(path, line, f"{where}: unknown {', '.join(map(repr, bad))}",
                           f"use any of: {', '.join(option.choices)}")
        return value
    if option.kind == "patterns":
        return _check_patterns(value, path, line, where)
    raise AssertionError(option.kind)


def _check_patterns(value: Any, path: Path, line: int, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _err(path, line, f"{where} must be a non-empty list of {{name, pattern}}")
    patterns = []
    for i, item in enumerate(value):
        if not (isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("pattern"), str)):
            raise _err(path, line, f"{where}[{i}] must be a mapping with `name` and `pattern` strings")
        try:
            detectors.compile_re2(item["pattern"])
        except Exception as exc:  # noqa: BLE001 - re2.error, reported with the pattern's name
            detail = str(exc).strip("b'\"")
            raise _err(path, line, f"{where}: pattern {item['name']!r} is not a valid RE2 regex ({detail})",
                       "RE2 matches in linear time: no look-around or back-references") from None
        patterns.append({"name": item["name"], "pattern": item["pattern"]})
    return patterns


# -- a policy file's guard models, for whoever serves them (serve's guard engines, deploy's Deployments) --------
def _model_checks(doc: dict[str, Any]):
    """(check name, its options) of each check of a policy file (its YAML as a dict) that names a `model:`."""
    for stage in STAGES:
        for check in doc.get(stage) or []:
            options = check.get("options") or {}
            if options.get("model"):
                yield check.get("check"), options


def served_guard_models(doc: dict[str, Any]) -> list[str]:
    """The Llama Guard models no `endpoint:` serves yet, in order: vLLM can serve these beside the main model."""
    found = [o["model"] for name, o in _model_checks(doc) if name == "llama_guard" and not o.get("endpoint")]
    return list(dict.fromkeys(found))


def in_process_models(doc: dict[str, Any]) -> list[str]:
    """The other guard models without an `endpoint:` (Prompt Guard): they run inside the gateway."""
    found = [o["model"] for name, o in _model_checks(doc) if name != "llama_guard" and not o.get("endpoint")]
    return list(dict.fromkeys(found))


def point_guards(doc: dict[str, Any], endpoints: dict[str, str]) -> None:
    """Set `endpoint:` on each Llama Guard check whose model is served at endpoints[model] (in place)."""
    for name, options in _model_checks(doc):
        if name == "llama_guard" and options["model"] in endpoints:
            options["endpoint"] = endpoints[options["model"]]
