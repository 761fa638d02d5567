"""The deterministic check types: personal data, secrets, prompt injection, deny-lists, custom regexes.

Each builds a `PatternCheck` from the detectors in `llmprod.guardrails.detectors` (RE2 patterns with
validators); their options pick which patterns.
"""

from __future__ import annotations

from llmprod.guardrails import detectors
from llmprod.guardrails.checks.base import CheckConfig, CheckType, OptionSpec, PatternCheck, SharedModels
from llmprod.guardrails.types import ACTIONS, STAGES


def _pii(config: CheckConfig, _shared: SharedModels) -> PatternCheck:
    entities = config.options.get("entities", list(detectors.PII_ENTITIES))
    return PatternCheck(config, detectors.pii_patterns(entities))


def _secrets(config: CheckConfig, _shared: SharedModels) -> PatternCheck:
    kinds = config.options.get("kinds", list(detectors.SECRET_PATTERNS))
    return PatternCheck(config, detectors.secret_patterns(kinds))


def _injection(config: CheckConfig, _shared: SharedModels) -> PatternCheck:
    categories = config.options.get("categories", detectors.INJECTION_CATEGORIES)
    return PatternCheck(config, detectors.injection_patterns(categories))


def _denylist(config: CheckConfig, _shared: SharedModels) -> PatternCheck:
    options = config.options
    return PatternCheck(config, [detectors.denylist_pattern(options["words"], options.get("case_sensitive", False))])


def _regex(config: CheckConfig, _shared: SharedModels) -> PatternCheck:
    options = config.options
    return PatternCheck(config, [
        detectors.Pattern(item["name"], item["pattern"], case_insensitive=not options.get("case_sensitive", False),
                          stream="window", max_len=options.get("max_length", 128))
        for item in options["patterns"]])


PII = CheckType("pii", "e-mail, phone, card (Luhn), SSN, IBAN (mod-97), IP addresses", ACTIONS, STAGES,
                {"entities": OptionSpec("list[str]", tuple(detectors.PII_ENTITIES))}, _pii)
SECRETS = CheckType("secrets", "cloud and VCS tokens, private keys, JWTs, high-entropy assignments", ACTIONS, STAGES,
                    {"kinds": OptionSpec("list[str]", tuple(detectors.SECRET_PATTERNS))}, _secrets)
INJECTION = CheckType("injection", "instruction overrides, prompt extraction, jailbreak phrasing", ACTIONS, STAGES,
                      {"categories": OptionSpec("list[str]", tuple(detectors.INJECTION_CATEGORIES))}, _injection)
DENYLIST = CheckType("denylist", "whole words or phrases", ACTIONS, STAGES,
                     {"words": OptionSpec("list[str]", required=True), "case_sensitive": OptionSpec("bool")},
                     _denylist)
REGEX = CheckType("regex", "your own RE2 patterns", ACTIONS, STAGES,
                  {"patterns": OptionSpec("patterns", required=True), "case_sensitive": OptionSpec("bool"),
                   "max_length": OptionSpec("int", minimum=1, maximum=100_000)}, _regex)

TYPES = (PII, SECRETS, INJECTION, DENYLIST, REGEX)
