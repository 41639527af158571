"""ipvsadm's folder (``ipvsadm/`` at the top of the project): its pins and build knowledge.

``ipvsadm.hash`` holds the pins as Buildroot-style lines; they enter the configuration as
the layer ``ipvsadm/ipvsadm.hash`` under ``ipvsadm.releases``, where a user config may add
releases and every entry passes the same validators (pins.py). ``ipvsadm.toml`` says
where files are downloaded from and which packages the builder and runtime stages need;
``NNNN-*.patch`` files are patches to ipvsadm, applied in order by the builder stage.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import schema, validate
from .errors import ConfigError
from .patch import DEP3_REQUIRED, dep3_fields
from .paths import ipvsadm_dir

HASH_FILE = "ipvsadm.hash"
FILE_RE = re.compile(r"^ipvsadm-(?P<version>[0-9][0-9.]*)\.tar\.(?:gz|xz|bz2)$")
_HASH_LINE_RE = re.compile(r"^(?P<algo>[a-z0-9]+)  (?P<hash>\S+)  (?P<file>\S+)$")


def version_of(file: str) -> str | None:
    match = FILE_RE.fullmatch(file)
    return match["version"] if match else None


def hash_layer(root: Path | None = None) -> dict[str, Any]:
    """``ipvsadm.hash`` as a configuration layer: ``{"ipvsadm": {"releases": ...}}``."""
    base = root or ipvsadm_dir()
    path = base / HASH_FILE
    text = _read(path)
    debian = set(_toml(base).get("debian-orig", {}).get("files", []))
    releases: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _HASH_LINE_RE.fullmatch(line)
        if not match or match["algo"] != "sha256":
            raise ConfigError(
                f"{path}:{number}: {schema.shown(line)} is not a hash line", "write it as: sha256  <64 hex>  <file>"
            )
        version = version_of(match["file"])
        if version is None:
            raise ConfigError(
                f"{path}:{number}: {schema.shown(match['file'])} is not an ipvsadm release file",
                "name it ipvsadm-<version>.tar.gz or .tar.xz",
            )
        entry: dict[str, Any] = {"name": match["file"], "sha256": match["hash"]}
        if match["file"] in debian:
            entry["debian-orig"] = True
        releases.setdefault(version, {"files": []})["files"].append(entry)
    return {"ipvsadm": {"releases": releases}}


@dataclass(frozen=True)
class Packages:
    build: tuple[str, ...]
    runtime: tuple[str, ...]
    patch: tuple[str, ...]


@dataclass(frozen=True)
class Knowledge:
    """What ``ipvsadm.toml`` and the patches say, checked."""

    urls: tuple[str, ...]
    debian_pool: str
    packages: dict[str, Packages]
    patches: tuple[Path, ...]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} is missing", "restore the project's ipvsadm/ folder") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text", "restore the project's ipvsadm/ folder") from exc


def _toml(base: Path) -> dict[str, Any]:
    path = base / "ipvsadm.toml"
    try:
        return tomllib.loads(_read(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc})", "fix the file") from exc


def _pool(value: str) -> str:
    validate.tree_path(value.replace("{version}", "0"), "Debian pool path")
    validate.url_template("http://pool.invalid/" + value, "Debian pool path", ("version",))
    return value


def _schema() -> schema.Record[Knowledge]:
    packages = schema.Array(schema.Text(lambda v: validate.package(v, "ipvsadm package")))
    per_family = schema.Record(
        lambda build, runtime, patch: Packages(build, runtime, patch),
        {"build": schema.Field(packages), "runtime": schema.Field(packages), "patch": schema.Field(packages)},
    )
    debian_orig = schema.Record(
        lambda pool, files: (pool, files),
        {
            "pool": schema.Field(schema.Text(_pool)),
            "files": schema.Field(schema.Array(schema.Text(lambda v: validate.file_name(v, "ipvsadm file name")))),
        },
    )
    return schema.Record(
        lambda urls, debian_orig, packages: Knowledge(urls, debian_orig[0], packages, ()),
        {
            "urls": schema.Field(
                schema.Array(schema.Text(lambda v: validate.url_template(v, "ipvsadm URL", ("file", "version"))), low=1)
            ),
            "debian-orig": schema.Field(debian_orig),
            "packages": schema.Field(schema.Map(schema.Choice(("alpine", "debian"), "base family"), per_family)),
        },
    )


def knowledge(root: Path | None = None) -> Knowledge:
    base = root or ipvsadm_dir()
    layers = schema.Layers()
    layers.add(_toml(base), str(base / "ipvsadm.toml"))
    known = _schema().check(layers.tree, layers.at())
    patches = tuple(sorted(base.glob("*.patch")))
    for patch in patches:
        if not re.fullmatch(r"[0-9]{4}-[a-z0-9][a-z0-9.-]*\.patch", patch.name):
            raise ConfigError(f"ipvsadm patch {patch.name} is not named NNNN-description.patch", "rename it")
        missing = [f for f in DEP3_REQUIRED if f not in dep3_fields(patch)]
        if missing:
            raise ConfigError(f"ipvsadm patch {patch.name} lacks DEP-3 field(s) {', '.join(missing)}", "add them")
    return Knowledge(known.urls, known.debian_pool, known.packages, patches)
