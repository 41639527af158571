"""Credentials never leave the process: one redaction for every line, report field and file.

Three kinds of secret are hidden wherever they appear: the user-info of any URL
(``https://user:token@host`` -> ``https://***@host``), secret-looking query parameters
(``?token=…``, ``&sig=…``), and header-like ``password=…``/``Authorization: Basic …``
text in daemon and registry output. Secrets the configuration holds are also registered
once, when it is loaded, so that they are hidden even where they appear out of their URL
(a tool that prints the password alone, percent-decoded, or in Basic-auth base64).
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MASK = "***"
_USERINFO_RE = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#@\s'\"<>]+(?:@[^/?#@\s'\"<>]+)*)@"
)
_QUERY_KEYS = (
    r"access[_-]?token|auth|auth[_-]?token|token|key|api[_-]?key|apikey|password|passwd|pass|secret|"
    r"client[_-]?secret|sig|signature|x-amz-signature|x-amz-credential|x-goog-signature|private[_-]?token"
)
_QUERY_RE = re.compile(rf"(?i)(?P<key>[?&;](?:{_QUERY_KEYS})=)[^&#\s'\"<>]+")
_HEADER_RE = re.compile(r"(?i)(authorization|password|token|auth)(\"?\s*[=:]\s*\"?(?:basic |bearer )?)[^\s\"',}&]+")
_SECRET_QUERY_KEY_RE = re.compile(rf"(?i)^(?:{_QUERY_KEYS})$")
MIN_SECRET = 4  # shorter registered values would mask ordinary words
TOKEN_LENGTH = 16  # a user name this long with no password is taken for a token (a name is no secret)

_registered: set[str] = set()


def register(secret: str) -> None:
    """Hide ``secret`` (and its percent-encoded and decoded forms) in all output from now on."""
    for form in {secret, unquote(secret), quote(secret, safe="")}:
        if len(form) >= MIN_SECRET:
            _registered.add(form)


def register_url(url: str) -> None:
    """Register the credentials a URL carries: its user-info and secret query values."""
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
        query = parse_qsl(parts.query, keep_blank_values=False)
    except ValueError:
        return
    if password:
        register(password)
        if username:
            pair = f"{unquote(username)}:{unquote(password)}".encode()
            register(base64.b64encode(pair).decode())
    elif username and len(username) >= TOKEN_LENGTH:
        register(username)  # a long user-info alone is the token itself (https://TOKEN@host)
    for key, value in query:
        if _SECRET_QUERY_KEY_RE.match(key):
            register(value)


def register_values(value: Any) -> None:
    """Register the credentials of every URL found in a configuration value (strings,
    mappings, sequences and dataclasses, walked recursively)."""
    for text in _strings(value):
        if "://" in text or "@" in text:
            for word in text.replace(",", " ").replace("|", " ").split():
                if "://" in word:
                    register_url(word)


def has_credentials(url: str) -> bool:
    """Whether a URL (or a GOPROXY-style list of them) carries user-info or a secret query."""
    return bool(_USERINFO_RE.search(url) or _QUERY_RE.search(url))


def redact(text: str) -> str:
    """``text`` with every credential replaced by ``***``."""
    if not text:
        return text
    text = _USERINFO_RE.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY_RE.sub(lambda m: f"{m['key']}{MASK}", text)
    text = _HEADER_RE.sub(rf"\1\2{MASK}", text)
    for secret in sorted(_registered, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_data(value: Any) -> Any:
    """A JSON-like value with every string redacted (keys too)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(item) for item in value]
    return value


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _strings(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from _strings(getattr(value, item.name))
