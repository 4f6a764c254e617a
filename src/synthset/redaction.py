"""One redaction function for everything synthset prints: API keys, tokens and credentials inside
URLs, headers, server answers and recipe values never reach a terminal, a log or an error."""

from __future__ import annotations

import re

MASK = "***"

#: Secrets by their shape: OpenAI, Hugging Face, GitHub, Slack, AWS, Google and bearer tokens.
_TOKENS = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-]{6,}|hf_[A-Za-z0-9]{6,}|gh[pousr]_[A-Za-z0-9]{6,}"
    r"|github_pat_[A-Za-z0-9_]{6,}|xox[abpors]-[A-Za-z0-9\-]{6,}|AKIA[0-9A-Z]{12,}"
    r"|AIza[0-9A-Za-z_\-]{20,})"
)
#: ``scheme://user:password@host`` (and ``scheme://token@host``).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@'\"]+@")
#: ``?key=...`` / ``&sig=...`` query parameters.
_QUERY = re.compile(
    r"(?P<key>[?&](?:key|sig|signature|code|auth)=)(?P<value>[^\s&'\"#]+)", re.IGNORECASE
)
#: ``api_key=...``, ``token: ...``, ``password=...``, ``Authorization: Bearer ...``.
_NAMED = re.compile(
    r"(?P<key>\b(?:api[_-]?key|apikey|access[_-]?token|token|secret|client[_-]?secret|password"
    r"|passwd|authorization|x-api-key)\b['\"]?\s*[=:]\s*['\"]?(?:bearer\s+|basic\s+)?)"
    r"(?P<value>[^\s&'\",;)]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<key>\bbearer\s+)(?P<value>[A-Za-z0-9._~+/\-]{8,}=*)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every secret-shaped part replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m['key']}{MASK}", text)
    text = _NAMED.sub(lambda m: f"{m['key']}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m['key']}{MASK}", text)
    return _TOKENS.sub(MASK, text)


def looks_like_secret(value: str) -> bool:
    """Does ``value`` hold something :func:`redact` would hide (a key, a token, credentials)?"""
    return redact(value) != value
