"""Prompt injection and jailbreak phrasing."""

from __future__ import annotations

from llmprod.guardrails.detectors.engine import Pattern

# General phrasing of the families in the literature: overriding instructions, extracting the system prompt
# or credentials, switching the model into a "mode" or persona without rules, and framing devices (fiction,
# hypotheticals) used together with a request for something protected.
_W = r"[\s\S]{0,60}?"  # a short gap of anything (bounded: RE2 keeps it linear)
_TARGET = (r"(?:system prompt|initial prompt|hidden prompt|original prompt|(?:your|the) (?:instructions|rules|prompt)|"
           r"pass ?words?|pass ?codes?|pass ?phrases?|secret (?:key|word|code|phrase|token)|api key|credentials?|"
           r"access (?:code|token)|pin(?: code)?|contrase[nñ]a|mot de passe|passwort|senha|parola d'ordine)")
INJECTION_PATTERNS = {
    "instruction_override": Pattern(
        "instruction_override",
        r"(?i)\b(?:ignore|disregard|forget|override|bypass|skip|neglect|drop|abandon|discard)\b[\s\S]{0,40}?\b(?:all|any|every|"
        r"previous|prior|above|earlier|preceding|foregoing|former|original|initial|existing|your|the|those|these|what)"
        r"\b[\s\S]{0,40}?\b(?:instructions?|prompts?|rules|directions|directives|guidelines|guidance|context|"
        r"messages?|commands?|constraints|restrictions|programming|told|said|above)\b",
        stream="window", max_len=160),
    "instruction_override_new": Pattern(
        "instruction_override",
        r"(?i)\b(?:new|updated|revised|real|actual|true)\s+(?:instructions?|rules|directives|task)\s*(?::|follow|are\b)|"
        r"\bfrom now on,?\s+(?:you|your|ignore|only|respond|answer|act)\b|\bdo not follow (?:the|your|any)\b",
        stream="window", max_len=80),
    "prompt_extraction": Pattern(
        "prompt_extraction",
        r"(?i)\b(?:what(?:'s| is| are| was| were)|tell|give|share|reveal|show|print|repeat|output|display|leak|disclose|"
        r"confirm|provide|spell|write|say|send|dump|recite|type|hint)\b" + _W + r"\b(?:your|the|our|its|my|this|that|"
        r"system|secret|hidden)\b" + _W + r"\b" + _TARGET + r"\b",
        stream="window", max_len=200),
    "prompt_extraction_verbatim": Pattern(
        "prompt_extraction",
        r"(?i)\b(?:repeat|print|output|reproduce|recite)\b[\s\S]{0,30}?\b(?:everything|all|the (?:text|words|"
        r"message|content))\b[\s\S]{0,30}?\b(?:above|before|so far|verbatim|word for word)\b|"
        r"\bwhat (?:were|are) you (?:told|instructed|programmed)\b",
        stream="window", max_len=120),
    "mode_switch": Pattern(
        "mode_switch",
        r"(?i)\b(?:developer|dev|debug|maintenance|admin|administrator|god|sudo|root|unrestricted|jailbreak|"
        r"jailbroken|system|diagnostic|test|override|unlocked|dan)\s+mode\b|\bdo anything now\b|\bjailbreak\b|"
        r"\b(?:i am|i'm|this is) (?:your|the|an?) (?:developer|creator|administrator|admin|owner|programmer|"
        r"system administrator|engineer)\b|\bsecurity audit\b|\bsystem override\b",
        stream="window", max_len=80),
    "roleplay_jailbreak": Pattern(
        "roleplay_jailbreak",
        r"(?i)\b(?:you are now|you're now|act as|pretend (?:to be|you are|you're)|roleplay as|role-play as|"
        r"play the role of|from now on you are|stay in character|simulate)\b[\s\S]{0,80}?\b(?:no|without|free of|"
        r"free from|any|ignore|unfiltered|uncensored|unrestricted|evil|amoral|immoral|jailbroken|not bound|"
        r"doesn't have to|does not have to|never refuses?)\b[\s\S]{0,30}?\b(?:restrictions?|filters?|filtering|"
        r"rules|limits|limitations|guidelines|policies|ethics|morals|censorship|refuse|boundaries|constraints|"
        r"anything)\b|\b(?:no|without) (?:any )?(?:special )?(?:filtering|filters|restrictions|censorship|"
        r"content policy|guardrails|safety guidelines)\b",
        stream="window", max_len=200),
    "framed_request": Pattern(
        "framed_request",
        r"(?i)\b(?:imagine|suppose|pretend|hypothetically|in a (?:fictional|hypothetical|parallel|alternate) "
        r"(?:world|universe|scenario|story)|let's play a game|for a (?:story|novel|screenplay|research)|"
        r"as a thought experiment|in this (?:world|game|story|scenario))\b[\s\S]{0,200}?\b" + _TARGET + r"\b",
        stream="window", max_len=320),
    "credential_request": Pattern(
        "credential_request",
        r"(?i)\b(?:your|the|our|system|admin|account|secret)\s+(?:pass ?word|pass ?code|pass ?phrase|secret key|"
        r"secret word|secret code|api key|credentials)\b[\s\S]{0,3}\?|\bi (?:really )?need (?:the|your) "
        r"(?:pass ?word|pass ?code|secret|credentials)\b|" + r"\b" + _TARGET + r"\s*\?",
        stream="window", max_len=80),
    "instruction_override_aside": Pattern(
        "instruction_override",
        r"(?i)\b(?:regardless of|instead of|never mind|forget about|disregarding)\b[\s\S]{0,20}?\b(?:the |any |your |all |"
        r"that|this|previous|prior|above|earlier|what)|\bignore (?:the|this|that) [a-z]+(?: [a-z]+)? and "
        r"(?:say|state|write|print|respond|output|answer|tell|reply|return)\b|\bforget (?:about )?"
        r"(?:that|this|it|everything)\b",
        stream="window", max_len=80),
    # The same override in the languages attacks most often switch to (a switch of language is itself a
    # known evasion); words for "ignore / forget" near "previous / above" and "instructions".
    "instruction_override_multilingual": Pattern(
        "instruction_override",
        r"(?i)(?:ignor[a-z]*|olvid[a-z]*|oubli[a-z]*|vergiss[a-z]*|esque[cç][a-z]*|dimentic[a-z]*|игнорир[а-я]*|"
        r"забуд[а-я]*|αγνο[α-ωά-ώ]*|تجاهل)[\s\S]{0,40}?(?:anterior[a-z]*|pr[ée]c[ée]dent[a-z]*|vorherig[a-z]*|"
        r"obig[a-z]*|precedent[a-z]*|предыдущ[а-я]*|προηγο[α-ωά-ώ]*|السابقة)[\s\S]{0,20}?"
        r"|(?:忽略|无视|忽视|無視|무시)|(?:निर्देशों|निर्देश)[\s\S]{0,20}?(?:अनदेखी|अनदेखा|नज़रअंदाज़)",
        stream="window", max_len=120),
    "mode_switch_enter": Pattern(
        "mode_switch",
        r"(?i)\b(?:enter(?:ing)?|activate|activating|switch(?:ing)? (?:to|into)|enable|enabling|engage|now in|"
        r"put you in|turn on)\s+(?:a |the |your )?['\"]?[a-z][a-z -]{0,30}['\"]? ?mode\b",
        stream="window", max_len=80),
    "data_exfiltration": Pattern(
        "data_exfiltration",
        r"(?i)\b(?:the|other|another|this|that) users?'s? (?:personal|private|e-?mail|home|birth ?(?:date|day)|"
        r"date of birth|address|location|phone|initials|full name|password|data|information|details|favou?rite|"
        r"account|secret|age|salary|ssn|social security)|\bwhere (?:does|do|is) the user\b|"
        r"\b(?:users?|customers?)(?: in| from)? (?:your|the) database\b",
        stream="window", max_len=80),
    "obfuscation": Pattern(
        "obfuscation",
        r"(?i)\b(?:decode|encode|translate|convert|reply|respond|answer|write|spell|give|provide|tell|say|output)"
        r"\b[\s\S]{0,60}?\b(?:morse code|base ?64|rot ?13|hexadecimal|binary code|pig latin|leetspeak|"
        r"reverse order|backwards|interlace[a-z]*|one (?:letter|character) at a time|character by character)",
        stream="window", max_len=120),
    "bribery": Pattern(
        "persuasion",
        r"(?i)\b(?:i(?:'ll| will| would)|we(?:'ll| will)) (?:give|pay|donate|tip|reward|send)\b[\s\S]{0,60}?"
        r"\bif you\b|\byou (?:agreed|promised|said you would)\b",
        stream="window", max_len=120),
    "payload_splitting": Pattern(
        "payload_splitting",
        r"(?i)\bstrings?\b[\s\S]{0,400}?\b[a-z]\s*=\s*[a-z]\s*\+\s*[a-z]\b",
        stream="window", max_len=480),
    "fake_dialogue": Pattern(
        "fake_dialogue",
        r"(?:^|\s)Q:[\s\S]{1,600}?\sA:[\s\S]{1,600}?\sQ:|(?:^|\n)\s*(?:System|SYSTEM|Assistant|ASSISTANT)\s*:",
        stream="window", max_len=1300),
}
INJECTION_CATEGORIES = sorted({p.category for p in INJECTION_PATTERNS.values()})
