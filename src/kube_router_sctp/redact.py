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
# User-info is whatever urlsplit takes for it: everything before the last '@' of the
# authority. Only '/', '?', '#' and ASCII white space end it here (a URL is one word in a
# line); quotes, '<', '>' and Unicode spaces such as U+00A0 are valid in a password and
# must not end the match early and leave the rest of the password in the clear.
# The scheme is bounded (schemes are short): unbounded, it ran to the end of a long line
# from every word start, and redacting one 100 KB line took minutes.
_USERINFO_RE = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]{0,31}://)(?P<userinfo>[^/?#@ \t\r\n\f\v]+(?:@[^/?#@ \t\r\n\f\v]+)*)@"
)
_AUTHORITY_USERINFO_RE = re.compile(r"(?P<scheme>://)[^/?#]*@")
# A query (or fragment) parameter is secret when its name merely *contains* one of these:
# X-Amz-Security-Token, oauth_token, sessionid, pwd, apiKey, client_secret, sig...
# A parameter name is at most 64 name characters: matched first, judged after, so that
# the match stays linear however long the line (a name pattern with a keyword inside
# backtracked quadratically over a line of "keykeykey…").
_QUERY_RE = re.compile(r"(?P<key>[?&;#](?P<name>[\w.~-]{1,64})=)[^&#\s'\"<>]+")
_SECRET_QUERY_KEY_RE = re.compile(r"(?i)token|secret|pass|pwd|sig|key|auth|cred|session|jwt|bearer")
_HEADER_RE = re.compile(r"(?i)(authorization|password|token|auth)(\"?\s*[=:]\s*\"?(?:basic |bearer )?)[^\s\"',}&]+")
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
        if _SECRET_QUERY_KEY_RE.search(key):
            register(value)


def _words(text: str) -> list[str]:
    """The URLs of a GOPROXY-style list or a line: split on ASCII white space, ',' and '|'
    only. str.split() would also split at U+00A0 and the like, which urlsplit keeps inside
    a password, and so would register half a password and hide the other half nowhere."""
    return [word for word in re.split(r"[ \t\r\n\f\v,|]+", text) if word]


def register_values(value: Any) -> None:
    """Register the credentials of every URL found in a configuration value (strings,
    mappings, sequences and dataclasses, walked recursively)."""
    for text in _strings(value):
        if "://" in text or "@" in text:
            for word in _words(text):
                if "://" in word:
                    register_url(word)


def _secret_query(match: re.Match[str]) -> bool:
    return bool(_SECRET_QUERY_KEY_RE.search(match["name"]))


def has_credentials(url: str) -> bool:
    """Whether a URL (or a GOPROXY-style list of them) carries user-info or a secret query,
    as urlsplit (and so every client) reads it, not only as the patterns spell it."""
    for word in _words(url):
        try:
            netloc = urlsplit(word).netloc
        except ValueError:
            return True  # not even a URL: never rendered as one
        if "@" in netloc:
            return True
    return bool(_USERINFO_RE.search(url) or any(_secret_query(m) for m in _QUERY_RE.finditer(url)))


def value(text: str) -> str:
    """One value (a URL, a path) as an error may show it: each URL's user-info masked up to
    its authority's last '@', however it is spelled (a URL refused for a space or a quote
    in its password must not print that password), then redacted."""
    return redact(_AUTHORITY_USERINFO_RE.sub(rf"\g<scheme>{MASK}@", text))


def redact(text: str) -> str:
    """``text`` with every credential replaced by ``***``."""
    if not text:
        return text
    text = _USERINFO_RE.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY_RE.sub(lambda m: f"{m['key']}{MASK}" if _secret_query(m) else m[0], text)
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
