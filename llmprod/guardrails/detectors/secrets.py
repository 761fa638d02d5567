"""Secrets: cloud and VCS tokens, private keys, JWTs, and high-entropy values assigned to a secret's name."""

from __future__ import annotations

import string

from llmprod.guardrails.detectors.engine import Pattern
from llmprod.guardrails.detectors.pii import _ALNUM
from llmprod.guardrails.detectors.validators import bare_secret_ok, quoted_secret_ok

_SECRET_NAME = (r"(?:api[_.-]?key|apikey|secret|token|passw(?:or)?d|passwd|pwd|access[_.-]?key|auth[_.-]?key|"
                r"private[_.-]?key|credential)")
_KEYWORD_VALUE = r"\s*(?:[\"']?\s*(?:=>|:=|=|:)\s*)[\"'`]?"
SECRET_PATTERNS = {
    "aws": [
        Pattern("aws_access_key_id", r"(?:^|[^A-Z0-9])((?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA|A3T[A-Z0-9])"
                r"[A-Z0-9]{16})(?:$|[^A-Z0-9])", group=1, max_len=24,
                hint=r"A(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA|BIA|CCA|3T)", hint_tail=4,
                chars=string.ascii_uppercase + string.digits, lead=string.ascii_uppercase + string.digits),
        Pattern("aws_secret_access_key", r"(?i)(?:aws)?_?(?:secret)_?(?:access)?_?key(?:_id)?" + _KEYWORD_VALUE +
                r"([A-Za-z0-9/+=]{40})(?:$|[^A-Za-z0-9/+=])", group=1, stream="keyword",
                trigger=r"secret_?(?:access)?_?key(?:_id)?" + _KEYWORD_VALUE, max_len=120),
    ],
    "github": [Pattern("github_token", r"(?:^|[^A-Za-z0-9_])((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}|"
                       r"github_pat_[A-Za-z0-9_]{22,255})", group=1, max_len=300, hint=r"gh[pousr]_|github_pat_",
                       hint_tail=11, chars=_ALNUM + "_", lead=_ALNUM + "_")],
    "gitlab": [Pattern("gitlab_token", r"(?:^|[^A-Za-z0-9_])((?:glpat|glptt|gldt|glrt|glsoat|glffct|glcbt|gloas|"
                       r"glimt|glagent|glft)-[A-Za-z0-9_-]{20,64}|GR1348941[A-Za-z0-9_-]{20,64})", group=1,
                       max_len=80, hint=r"gl[a-z]+-|GR1348941", hint_tail=9, chars=_ALNUM + "_-", lead=_ALNUM + "-")],
    "slack": [
        Pattern("slack_token", r"(?:^|[^A-Za-z0-9])(xox[abposre]-[A-Za-z0-9-]{10,250}|xapp-\d-?[A-Za-z0-9/-]{10,250}|"
                r"xapp-[A-Za-z0-9/-]{20,250})", group=1, max_len=260, hint=r"xox[a-z]-|xapp-", hint_tail=5,
                chars=_ALNUM + "/-", lead=string.ascii_letters + "-"),
        Pattern("slack_webhook", r"(https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,200})",
                group=1, max_len=220, hint=r"hooks\.slack\.com", hint_tail=30, chars=_ALNUM + ":/.+_-",
                lead=string.ascii_letters + ":/."),
    ],
    "private_key": [Pattern("private_key", r"(-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
                            r"(?:[\s\S]*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)?)",
                            group=1, stream="keyword", trigger=r"-----BEGIN", max_len=16500, open_ended=True)],
    "jwt": [Pattern("jwt", r"(?:^|[^A-Za-z0-9_-])(eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)",
                    group=1, max_len=4096, hint="eyJ", hint_tail=3, chars=_ALNUM + "_.-", lead=string.ascii_letters,
                    needs=r"eyJ[A-Za-z0-9_-]{8,}\.eyJ")],
    "generic": [
        Pattern("generic_secret", r"(?i)[A-Za-z0-9_.-]*(?:api[_.-]?key|apikey|secret|token|passw(?:or)?d|passwd|pwd|"
                r"access[_.-]?key|auth[_.-]?key|private[_.-]?key|credential)[A-Za-z0-9_.-]*[\"']?\s*(?:=>|:=|=|:)\s*"
                r"[\"'`]([^\"'`\s]{8,200})[\"'`]", group=1, validate=quoted_secret_ok, stream="keyword",
                trigger=_SECRET_NAME + r"[A-Za-z0-9_.-]*[\"']?\s*(?:=>|:=|=|:)", max_len=260),
        Pattern("generic_secret", r"(?i)[A-Za-z0-9_.-]*(?:api[_.-]?key|apikey|secret|token|passw(?:or)?d|"
                r"access[_.-]?key|auth[_.-]?key)[A-Za-z0-9_.-]*\s*(?:=>|:=|=|:)\s*([A-Za-z0-9_+/.=-]{16,200})",
                group=1, validate=bare_secret_ok, stream="keyword",
                trigger=_SECRET_NAME + r"[A-Za-z0-9_.-]*[\"']?\s*(?:=>|:=|=|:)", max_len=260),
    ],
}
