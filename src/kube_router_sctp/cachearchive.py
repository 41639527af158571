"""cache export / cache import: a filled cache carried to an air-gapped site as one archive.

The archive is an uncompressed tar (module zips and toolchains do not compress further)::

    MANIFEST.json          {"format": 1, "entries": [{"name": ..., "sha256": ..., "size": ...}]}
    blobs/sha256/<hex>     a verified download, named by its sha256
    index/gomod/<key>      a Go module index entry (module@version file -> blob, h1)
    trees/<digest>.tar     a verified source tree, named by its tree digest

Import trusts nothing in it: every member must be a regular file with one of those names,
listed once in the manifest with the size and sha256 it has; every blob must hash to its
name, every tree to its digest, and every module entry's blob to the entry's go.sum hash
(recomputed). Links, directories, devices, ``..``, unknown or unlisted names refuse the
whole archive. Members are staged in the cache's tmp and enter the cache only when all of
them passed, so a refused archive leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import archive, gomodules, log
from .cache import Cache, remove_tree
from .context import Link, Member, write_tar
from .errors import ConfigError, UnsafeSourceError, VerificationError
from .treedigest import digest_tree, manifest

MANIFEST = "MANIFEST.json"
FORMAT = 1
_NAME_RE = re.compile(r"^(?:blobs/sha256/[0-9a-f]{64}|index/gomod/[0-9a-f]{64}|trees/[0-9a-f]{64}\.tar)$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_MANIFEST = 64 << 20


@dataclass(frozen=True)
class Summary:
    blobs: int
    trees: int
    modules: int
    bytes: int


def _refuse(path: Path, why: str) -> UnsafeSourceError:
    return UnsafeSourceError(
        f"refusing cache archive {path.name}: {why}; nothing was imported",
        "use an archive written by `python build.py cache export`, copied intact",
    )


# -- export ------------------------------------------------------------------------------
def _tree_tar(tree: Path, dest: Path) -> None:
    """A verified tree as a normalised tar: files and symlinks, modes as the digest sees them."""
    members: list[Member] = []
    for rel, mode, _ in manifest(tree):
        if mode == "120000":
            members.append((rel, Link(str((tree / rel).readlink())), 0o777))
        else:
            members.append((rel, tree / rel, 0o755 if mode == "100755" else 0o644))
    write_tar(dest, members, 0)


def export(cache: Cache, dest: Path) -> Summary:
    """Write every verified blob, module index entry and source tree of ``cache`` to ``dest``."""
    damaged = cache.verify_all()
    for entry in damaged:
        log.warn(f"cache entry {entry} was damaged and is left out (it was removed)")
    scratch = cache.scratch("export-")
    try:
        files: list[tuple[str, Path]] = []
        for sha in cache.entries()["blobs"]:
            files.append((f"blobs/sha256/{sha}", cache.blob_path(sha)))
        index_dir = cache.index_path("gomod", "x").parent
        modules = 0
        for item in sorted(index_dir.iterdir()):
            if _HEX_RE.match(item.name) and _module_entry(item.read_bytes(), item.name) is not None:
                files.append((f"index/gomod/{item.name}", item))
                modules += 1
        trees = 0
        for digest in cache.entries()["trees"]:
            tar = scratch / f"{digest}.tar"
            _tree_tar(cache.tree_path(digest), tar)
            files.append((f"trees/{digest}.tar", tar))
            trees += 1
        entries = [{"name": name, "sha256": _sha256(path), "size": path.stat().st_size} for name, path in files]
        text = json.dumps({"format": FORMAT, "entries": entries}, indent=1, sort_keys=True).encode()
        part = dest.with_name(f".{dest.name}.part")
        members: list[Member] = [(MANIFEST, text, 0o644)]
        members += [(name, path, 0o644) for name, path in files]
        try:
            written = write_tar(part, members, 0)
            part.replace(dest)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    finally:
        remove_tree(scratch)
    return Summary(len(cache.entries()["blobs"]), trees, modules, written.size)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- import ------------------------------------------------------------------------------
def _module_entry(data: bytes, key: str) -> dict[str, Any] | None:
    """A module index entry, checked field by field (None if it is not one)."""
    try:
        entry = json.loads(data)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    fields = ("module", "version", "file", "h1", "sha256", "size")
    if set(entry) != set(fields) or entry["file"] not in ("mod", "zip") or not _HEX_RE.match(str(entry["sha256"])):
        return None
    try:
        gomodules.check_path(str(entry["module"]), "entry")
        gomodules.check_version(str(entry["version"]), "entry")
    except VerificationError:
        return None
    if gomodules.index_key(str(entry["module"]), str(entry["version"]), str(entry["file"])) != key:
        return None
    return entry


def _read_manifest(tar: tarfile.TarFile, path: Path) -> dict[str, tuple[str, int]]:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isreg() or first.size > MAX_MANIFEST:
        raise _refuse(path, f"its first member is not {MANIFEST}")
    handle = tar.extractfile(first)
    assert handle is not None
    try:
        data = json.loads(handle.read())
        entries = data["entries"] if data.get("format") == FORMAT else None
        rows = (
            [(str(e["name"]), str(e["sha256"]), int(e["size"])) for e in entries] if isinstance(entries, list) else []
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _refuse(path, f"its manifest is not valid ({exc})") from exc
    if not isinstance(entries, list):
        raise _refuse(path, "its manifest is of an unknown format")
    listed: dict[str, tuple[str, int]] = {}
    for name, sha, size in rows:
        if not _NAME_RE.match(name) or not _HEX_RE.match(sha) or size < 0 or name in listed:
            raise _refuse(path, f"its manifest lists a bad entry {name[:100]!r}")
        listed[name] = (sha, size)
    return listed


def _stage(handle: IO[bytes], dest: Path) -> str:
    digest = hashlib.sha256()
    with dest.open("wb") as out:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _members(tar: tarfile.TarFile, path: Path, listed: dict[str, tuple[str, int]]) -> Iterator[tarfile.TarInfo]:
    seen: set[str] = set()
    for number, member in enumerate(tar):
        name = member.name
        if number == 0:
            continue  # the manifest, read already
        if not member.isreg():
            raise _refuse(path, f"member {name[:200]!r} is not a regular file (links and directories are refused)")
        if name not in listed or not _NAME_RE.match(name):
            raise _refuse(path, f"member {name[:200]!r} is not a cache entry the manifest lists")
        if name in seen:
            raise _refuse(path, f"member {name!r} appears twice")
        if member.size != listed[name][1]:
            raise _refuse(path, f"member {name!r} has {member.size} bytes, the manifest says {listed[name][1]}")
        seen.add(name)
        yield member
    missing = sorted(set(listed) - seen)
    if missing:
        raise _refuse(path, f"the manifest lists {missing[0]} but the archive lacks it")


def import_archive(cache: Cache, path: Path) -> Summary:
    """Verify every entry of the archive at ``path``, then add them all to ``cache``."""
    if not path.is_file():
        raise ConfigError(f"{path} is not a file", "pass the archive `cache export` wrote")
    scratch = cache.scratch("import-")
    try:
        staged: dict[str, Path] = {}
        try:
            with tarfile.open(path, "r:", tarinfo=archive.BoundedTarInfo) as tar:
                listed = _read_manifest(tar, path)
                for number, member in enumerate(_members(tar, path, listed)):
                    handle = tar.extractfile(member)
                    assert handle is not None
                    target = scratch / f"{number}.entry"
                    if _stage(handle, target) != listed[member.name][0]:
                        raise _refuse(path, f"member {member.name!r} does not match its sha256 in the manifest")
                    staged[member.name] = target
        except tarfile.TarError as exc:
            raise _refuse(path, f"it is not a readable tar archive ({exc})") from exc
        return _commit(cache, path, staged, scratch)
    finally:
        remove_tree(scratch)


def _commit(cache: Cache, path: Path, staged: dict[str, Path], scratch: Path) -> Summary:
    blobs = {name.rsplit("/", 1)[1]: file for name, file in staged.items() if name.startswith("blobs/")}
    for sha, file in blobs.items():
        if _sha256(file) != sha:
            raise _refuse(path, f"blob {sha} does not hash to its name")
    modules: list[dict[str, Any]] = []
    for name, file in staged.items():
        if not name.startswith("index/gomod/"):
            continue
        key = name.rsplit("/", 1)[1]
        entry = _module_entry(file.read_bytes(), key)
        if entry is None:
            raise _refuse(path, f"{name} is not a Go module index entry")
        sha = str(entry["sha256"])
        blob = blobs.get(sha) or (cache.blob_path(sha) if cache.has_blob(sha) else None)
        if blob is None:
            raise _refuse(path, f"{name} names blob {sha}, which neither the archive nor the cache holds")
        problem = gomodules.verify_blob(
            blob, str(entry["module"]), str(entry["version"]), str(entry["file"]), str(entry["h1"])
        )
        if problem is not None:
            raise _refuse(path, f"{entry['module']}@{entry['version']} {entry['file']}: {problem}")
        held = gomodules.read_index(cache, str(entry["module"]), str(entry["version"]), str(entry["file"]))
        if held is not None and held.get("h1") != entry["h1"]:
            raise VerificationError(
                f"cache archive {path.name} says {entry['module']}@{entry['version']} is {entry['h1']}, "
                f"the cache holds it verified as {held.get('h1')}; nothing was imported",
                "one of them is wrong: find out which before importing",
            )
        modules.append(entry)
    trees: dict[str, Path] = {}
    for name, file in staged.items():
        if not name.startswith("trees/"):
            continue
        digest = name.removeprefix("trees/").removesuffix(".tar")
        tree = scratch / f"tree-{digest}"
        tree.mkdir()
        archive.extract(file, tree)
        if digest_tree(tree) != digest:
            raise _refuse(path, f"tree {digest} does not hash to its name")
        trees[digest] = tree
    # Everything verified: now it enters the cache, each entry atomically.
    for sha, file in blobs.items():
        with cache.lock(sha):
            if not cache.has_blob(sha):
                cache.put_blob(file, sha)
    for digest, tree in trees.items():
        with cache.lock(f"tree-{digest}"):
            if not cache.has_tree(digest):
                cache.put_tree(tree, digest)
    for entry in modules:
        blob = cache.blob_path(str(entry["sha256"]))
        item = gomodules.ModuleFile(
            str(entry["module"]),
            str(entry["version"]),
            str(entry["file"]),
            str(entry["h1"]),
            str(entry["sha256"]),
            int(entry["size"]),
            blob,
            False,
        )
        gomodules.write_index(cache, item)
    total = sum(file.stat().st_size for file in staged.values() if file.exists())
    return Summary(len(blobs), len(trees), len(modules), total)
