"""Kinds of configuration values: strict types, grammars, and where each value came from.

A configuration is a tree merged from layers (defaults, the project's pin files, the user
config file, the environment, flags). :class:`Layers` merges them and remembers, for every
node, the layer that set it. Each kind checks a node of the merged tree: the TOML type
first (``offline = "false"`` is a string, not a boolean), then the value's grammar, and
turns it into the typed value the code uses. Every refusal is one line naming the key,
the layer that set it and what was expected; unknown keys suggest the nearest known one.
The options (options.py) and the pins (pins.py) are both declared with these kinds, so a
value passes the same validators whichever layer it came from.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from . import redact
from .errors import ConfigError

T = TypeVar("T")
Path_ = tuple[str | int, ...]

DEFAULTS = "defaults"  # the layer of the schema's own defaults


def dotted(path: Path_) -> str:
    """``("kube-router", "releases", "v0.3.2", "commit")`` -> ``kube-router.releases."v0.3.2".commit``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            text += ("." if text else "") + part
        else:
            text += ("." if text else "") + '"' + part.encode("unicode_escape").decode()[:60] + '"'
    return text


def shown(value: object) -> str:
    """A value as the user wrote it, short and on one line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        value = redact.value(value)  # a wrong-typed value may be a URL with a password
        text = '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    elif isinstance(value, Mapping):
        text = "{…}"
    elif isinstance(value, list | tuple):
        text = "[…]" if value else "[]"
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + '..."'


def toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dt.date | dt.time):
        return "a date or time"
    return type(value).__name__


def suggest(name: str, known: Iterable[str]) -> str:
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"did you mean {matches[0]}?" if matches else ""


def by_origin(origin: str) -> str:
    """How a message names a layer: a file, a variable, a flag or the defaults."""
    if origin.startswith("--"):
        return f"flag {origin}"
    if origin == DEFAULTS:
        return "the defaults"
    return origin


class Layers:
    """The configuration tree merged from layers, with the layer that set every node.

    Tables merge key by key; any other value (a string, an array) replaces what an
    earlier layer had there, subtree and all.
    """

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self._origins: dict[Path_, str] = {}

    def add(self, data: Mapping[str, Any], origin: str) -> None:
        self._merge(self.tree, data, (), origin)

    def _merge(self, target: dict[str, Any], data: Mapping[str, Any], path: Path_, origin: str) -> None:
        self._origins[path] = origin
        for key, value in data.items():
            here = (*path, key)
            if isinstance(value, Mapping) and isinstance(target.get(key), dict):
                self._merge(target[key], value, here, origin)
                continue
            for old in [p for p in self._origins if p[: len(here)] == here]:
                del self._origins[old]
            target[key] = _plain(value)
            self._record(here, value, origin)

    def _record(self, path: Path_, value: object, origin: str) -> None:
        self._origins[path] = origin
        if isinstance(value, Mapping):
            for key, item in value.items():
                self._record((*path, key), item, origin)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                self._record((*path, index), item, origin)

    def origin(self, path: Path_) -> str:
        """The layer that set ``path`` (or, for a key that is missing, its table)."""
        for end in range(len(path), -1, -1):
            if path[:end] in self._origins:
                return self._origins[path[:end]]
        return DEFAULTS

    def at(self, *path: str | int) -> At:
        return At(path, self)


def _plain(value: object) -> object:
    """A deep copy made of dicts and lists, so later layers never change an earlier one."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


@dataclasses.dataclass(frozen=True)
class At:
    """A node of the tree: its path, and the layers that say who set it."""

    path: Path_
    layers: Layers

    def child(self, key: str | int) -> At:
        return At((*self.path, key), self.layers)

    @property
    def key(self) -> str:
        return dotted(self.path)

    @property
    def origin(self) -> str:
        return self.layers.origin(self.path)

    def where(self) -> str:
        return f"{self.key}, set by {by_origin(self.origin)}"

    def wrong_type(self, value: object, expected: str, hint: str) -> ConfigError:
        return ConfigError(
            f"{self.key} = {shown(value)} (set by {by_origin(self.origin)}) is {toml_type(value)}, expected {expected}",
            hint,
        )

    def refuse(self, problem: str, hint: str) -> ConfigError:
        return ConfigError(f"{self.key}: {problem} (set by {by_origin(self.origin)})", hint)

    def located(self, error: ConfigError) -> ConfigError:
        """A grammar's refusal, with the key and the layer added."""
        return ConfigError(f"{error.message} ({self.where()})", error.hint)


class Kind(Generic[T]):
    """A kind of value: its TOML type, its grammar, and its forms in the environment and flags."""

    expected = "a value"
    hint = "fix the value"

    def check(self, value: object, at: At) -> T:
        raise NotImplementedError

    def from_text(self, raw: str, name: str) -> object:
        """An environment variable's text as the TOML value it stands for."""
        return raw

    def from_flag(self, value: Any) -> object:
        return value

    def show(self, value: T) -> str:
        return str(value)


class Text(Kind[T]):
    """A string checked by a grammar (one of validate.py's functions)."""

    expected = "a string"

    def __init__(
        self, grammar: Callable[[str], T] | None = None, what: str = "", hint: str = 'write it in quotes: key = "value"'
    ) -> None:
        self.grammar = grammar
        self.what = what  # for the docs: "a string: <what>"
        self.hint = hint

    def check(self, value: object, at: At) -> T:
        if not isinstance(value, str):
            raise at.wrong_type(value, self.expected, self.hint)
        if self.grammar is None:
            return value  # type: ignore[return-value]
        try:
            return self.grammar(value)
        except ConfigError as exc:
            raise at.located(exc) from exc


class Optional(Kind[T | None]):
    """A value that may be left unset: ``""`` in a file, an empty variable."""

    def __init__(self, inner: Kind[T]) -> None:
        self.inner = inner
        self.expected = inner.expected
        self.hint = inner.hint

    def check(self, value: object, at: At) -> T | None:
        if value is None or value == "":
            return None
        return self.inner.check(value, at)

    def from_text(self, raw: str, name: str) -> object:
        return raw if raw == "" else self.inner.from_text(raw, name)

    def from_flag(self, value: Any) -> object:
        return self.inner.from_flag(value)

    def show(self, value: T | None) -> str:
        return "" if value is None else self.inner.show(value)


class Choice(Kind[str]):
    expected = "a string"

    def __init__(self, values: Iterable[str], what: str) -> None:
        self.values = tuple(values)
        self.what = what
        self.hint = f"choose one of: {', '.join(self.values)}"

    def check(self, value: object, at: At) -> str:
        if not isinstance(value, str):
            raise at.wrong_type(value, f"one of {', '.join(self.values)}", self.hint)
        if value not in self.values:
            near = suggest(value, self.values)
            raise ConfigError(f"unknown {self.what} {shown(value)} ({at.where()})", f"{near} {self.hint}".strip())
        return value


class Flag(Kind[bool]):
    expected = "a boolean"
    hint = "write true or false, without quotes"
    TRUE = ("1", "true", "yes", "on")
    FALSE = ("0", "false", "no", "off", "")

    def check(self, value: object, at: At) -> bool:
        if not isinstance(value, bool):
            raise at.wrong_type(value, self.expected, self.hint)
        return value

    def from_text(self, raw: str, name: str) -> object:
        lowered = raw.strip().lower()
        if lowered in self.TRUE:
            return True
        if lowered in self.FALSE:
            return False
        raise ConfigError(f"{name}={shown(raw)} is not a boolean", "use 1/0, true/false, yes/no or on/off")

    def from_flag(self, value: Any) -> object:
        return bool(value)

    def show(self, value: bool) -> str:
        return "true" if value else "false"


class Integer(Kind[int]):
    expected = "an integer"
    hint = "write a whole number without quotes"

    def __init__(self, low: int, high: int, unit: str = "") -> None:
        self.low, self.high, self.unit = low, high, unit

    def check(self, value: object, at: At) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise at.wrong_type(value, self.expected, self.hint)
        if not self.low <= value <= self.high:
            raise at.refuse(
                f"{value} is out of range", f"expected {self.unit or 'a number'} from {self.low} to {self.high}"
            )
        return value

    def from_text(self, raw: str, name: str) -> object:
        if not re.fullmatch(r"[0-9]{1,40}", raw.strip()):
            raise ConfigError(
                f"{name}={shown(raw)} is not a whole number",
                f"expected {self.unit or 'a number'} from {self.low} to {self.high}",
            )
        value = int(raw.strip())
        if not self.low <= value <= self.high:
            raise ConfigError(
                f"{name}={shown(raw)} is out of range",
                f"expected {self.unit or 'a number'} from {self.low} to {self.high}",
            )
        return value

    def from_flag(self, value: Any) -> object:
        return self.from_text(str(value), "the flag")


class Array(Kind[tuple[T, ...]]):
    """An array of one kind; in the environment, items separated by commas or spaces."""

    def __init__(self, item: Kind[T], *, low: int = 0, high: int = 1000) -> None:
        self.item = item
        self.low, self.high = low, high
        self.expected = f"an array of {item.expected.removeprefix('a ').removeprefix('an ')}s"
        self.hint = 'write it as an array: key = ["a", "b"]'

    def check(self, value: object, at: At) -> tuple[T, ...]:
        if not isinstance(value, list | tuple):
            raise at.wrong_type(value, self.expected, self.hint)
        if not self.low <= len(value) <= self.high:
            count = f"exactly {self.low}" if self.low == self.high else f"{self.low} to {self.high}"
            raise at.refuse(f"has {len(value)} item(s)", f"expected {count}")
        return tuple(self.item.check(item, at.child(index)) for index, item in enumerate(value))

    def from_text(self, raw: str, name: str) -> object:
        return [part for part in raw.replace(",", " ").split() if part]

    def from_flag(self, value: Any) -> object:
        return list(value)

    def show(self, value: tuple[T, ...]) -> str:
        return ",".join(self.item.show(v) for v in value)


class Map(Kind[dict[str, T]]):
    """A table whose keys follow a grammar (release versions, label keys)."""

    expected = "a table"

    def __init__(self, key: Kind[str], value: Kind[T], what: str = "key") -> None:
        self.key, self.value, self.what = key, value, what
        self.hint = "write it as a table: [section] with key = value lines"

    def check(self, value: object, at: At) -> dict[str, T]:
        if not isinstance(value, Mapping):
            raise at.wrong_type(value, self.expected, self.hint)
        result = {}
        for key, item in value.items():
            checked = self.key.check(key, at.child(key))
            if checked != key:
                raise at.child(key).refuse(
                    f"{self.what} {shown(key)} is not written canonically", f"write it as {checked}"
                )
            result[key] = self.value.check(item, at.child(key))
        return result

    def from_flag(self, value: Any) -> object:
        table = {}
        for item in value:
            key, sep, text = str(item).partition("=")
            if not sep:
                raise ConfigError(f"{shown(item)} is not KEY=VALUE", "write it as --label org.example.team=net")
            table[key] = text
        return table

    def show(self, value: dict[str, T]) -> str:
        return ",".join(f"{k}={self.value.show(v)}" for k, v in value.items()) or "(none)"


@dataclasses.dataclass(frozen=True)
class Field(Generic[T]):
    kind: Kind[T]
    required: bool = True
    default: Any = None


class Record(Kind[T]):
    """A table with fixed keys, read into a frozen dataclass (``tag-suffix`` -> ``tag_suffix``)."""

    expected = "a table"

    def __init__(self, cls: Callable[..., T], fields: Mapping[str, Field[Any]], what: str = "key") -> None:
        self.cls, self.fields, self.what = cls, fields, what
        self.hint = "write it as a table ([name] or { key = value, ... })"

    def check(self, value: object, at: At) -> T:
        if not isinstance(value, Mapping):
            raise at.wrong_type(value, self.expected, self.hint)
        unknown = [str(k) for k in value if k not in self.fields]
        if unknown:
            where = at.child(unknown[0])
            raise ConfigError(
                f"unknown {self.what} {where.key} (set by {by_origin(where.origin)})",
                suggest(unknown[0], self.fields) or f"known: {', '.join(self.fields)}",
            )
        kwargs = {}
        for name, spec in self.fields.items():
            attr = name.replace("-", "_")
            if name not in value:
                if spec.required:
                    raise at.refuse(f"missing key {name}", f"add {name} ({spec.kind.expected})")
                kwargs[attr] = spec.default
                continue
            kwargs[attr] = spec.kind.check(value[name], at.child(name))
        return self.cls(**kwargs)
