"""patch stage: choose the series for a kube-router release and apply it strictly.

Series are data: ``patches/kube-router/<series>/NNNN-description.patch`` (DEP-3 headers,
applied in name order) and one index, ``patches/kube-router/series.toml``, mapping
semver ranges to a series or to ``native`` (releases with SCTP upstream, which get none).
The result is the exported tree plus an overlay of patched files; nothing in the cached
tree is modified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import semver

from . import unidiff
from .errors import ConfigError, PatchError
from .paths import patches_dir
from .safefs import Beneath, write_tree

INDEX = "series.toml"
NATIVE_CHECKS = "native-checks"
DEP3_REQUIRED = ("Description", "Origin", "Last-Update")


@dataclass(frozen=True)
class Series:
    name: str
    versions: str
    revision: int
    native: bool
    directory: Path | None
    compat: tuple[str, ...] = ()  # patches that only make the release run, no SCTP change
    control_of: str | None = None  # set on a negative-control cut of a series
    # native series: directories of tests proving upstream's SCTP is there, layered in order
    checks: tuple[Path, ...] = ()
    test_run: Mapping[str, str] = dataclasses.field(default_factory=dict)  # package -> go test -run

    def matches(self, version: semver.Version) -> bool:
        return all(version.match(clause.strip()) for clause in self.versions.split(","))

    def patches(self) -> list[Path]:
        if self.directory is None:
            return []
        found = sorted(self.directory.glob("[0-9][0-9][0-9][0-9]-*.patch"))
        return [p for p in found if p.name in self.compat] if self.control_of else found

    def digest(self) -> str:
        """Changes whenever any patch of the series changes (cache and label key)."""
        digest = hashlib.sha256(self.name.encode())
        for patch in self.patches():
            digest.update(patch.name.encode() + b"\0" + patch.read_bytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class AppliedPatch:
    name: str
    sha256: str
    description: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class PatchedTree:
    """An exported tree with the series applied as an overlay of new file contents."""

    base: Path
    overlay: Mapping[str, bytes | None]
    series: Series
    applied: tuple[AppliedPatch, ...]

    def walk(self) -> Iterator[tuple[str, Path | bytes]]:
        """(relative path, file on disk or new bytes) for every file of the patched tree."""
        seen = set()
        for dirpath, dirnames, filenames, dirfd in os.fwalk(self.base):
            links = [d for d in dirnames if stat.S_ISLNK(os.stat(d, dir_fd=dirfd, follow_symlinks=False).st_mode)]
            dirnames.sort()
            base = Path(dirpath)
            for name in sorted(filenames + links):
                rel = (base / name).relative_to(self.base).as_posix()
                seen.add(rel)
                if rel in self.overlay:
                    content = self.overlay[rel]
                    if content is not None:
                        yield rel, content
                else:
                    yield rel, base / name
        for rel in sorted(set(self.overlay) - seen):
            content = self.overlay[rel]
            if content is not None:
                yield rel, content

    def contents(self) -> Iterator[tuple[str, TreeFile]]:
        """Every file of the patched tree with its content, read through ``safefs``: a
        symlink is reported as its target, never followed, and nothing behind a symlinked
        directory is read."""
        with Beneath(self.base, "source tree", "the cached tree is damaged: remove it from the cache") as tree:
            for rel, source in self.walk():
                if isinstance(source, bytes):
                    tree.lstat(rel)  # a patched file never sits behind a symlinked directory
                    yield rel, TreeFile(source, 0o644)
                    continue
                info = tree.lstat(rel)
                if info is not None and stat.S_ISLNK(info.st_mode):
                    yield rel, TreeFile(b"", 0o777, tree.readlink(rel))
                else:
                    data, mode = tree.read_with_mode(rel)
                    yield rel, TreeFile(data, 0o755 if mode & stat.S_IXUSR else 0o644)

    def read(self, rel: str) -> bytes | None:
        """One file of the patched tree (``go.mod``), None if it has none; read through
        ``safefs``, so a symlink (or a path through one) is refused, never followed."""
        if rel in self.overlay:
            return self.overlay[rel]
        with Beneath(self.base, "source tree", "the cached tree is damaged: remove it from the cache") as tree:
            return tree.read(rel)

    def materialize(self, dest: Path) -> None:
        """Write the patched tree to ``dest`` (for users and for Go checks): a new or empty
        directory, filled in a temporary sibling and renamed into place once its links
        are checked; never through a symlink."""

        def fill(out: Beneath) -> None:
            for rel, item in self.contents():
                if item.link is not None:
                    out.symlink(rel, item.link)
                else:
                    out.write(rel, item.data, item.mode)

        write_tree(dest, fill, "the patched tree")


@dataclass(frozen=True)
class TreeFile:
    """A file of the patched tree: its bytes and mode, or a symlink's target."""

    data: bytes
    mode: int
    link: str | None = None


MAX_REVISION = 9999


def load_index(root: Path | None = None) -> list[Series]:
    base = root or patches_dir()
    index = base / INDEX
    try:
        data = tomllib.loads(index.read_text())
    except FileNotFoundError as exc:
        raise PatchError(f"patch index {index} is missing", "restore patches/kube-router/series.toml") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PatchError(f"patch index {index} is not valid TOML ({exc})", "fix the index") from exc
    entries = data.get("series", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise PatchError(f"patch index {index}: series must be [[series]] tables", "fix the index")
    result = []
    for entry in entries:
        name = str(entry.get("name", ""))
        if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
            raise PatchError(
                f"patch index entry {name!r} does not name a directory inside patches/kube-router",
                "series names are plain directory names beside series.toml",
            )
        native = bool(entry.get("native", False))
        directory = None if native else base / name
        if directory is not None and (not directory.is_dir() or directory.resolve().parent != base.resolve()):
            raise PatchError(
                f"patch series {name} has no directory {directory} inside patches/kube-router",
                "create it or fix the index",
            )
        versions = str(entry.get("versions", ""))
        for clause in versions.split(","):
            try:
                semver.Version(0, 0, 0).match(clause.strip())
            except ValueError as exc:
                raise PatchError(
                    f"series {name}: bad version range {versions!r} ({exc})", "use e.g. '>=0.3.0, <0.4.0'"
                ) from exc
        compat = tuple(str(c) for c in entry.get("compat", []))
        for item in compat:
            if directory is None or not (directory / item).is_file() or "/" in item:
                raise PatchError(f"series {name}: compat patch {item!r} is not in its directory", "fix the index")
        checks: tuple[Path, ...] = ()
        if native:
            for item in (str(c) for c in entry.get("checks", [])):
                layer = base / NATIVE_CHECKS / item
                if "/" in item or not layer.is_dir():
                    raise PatchError(f"series {name}: checks {item!r} is not in {NATIVE_CHECKS}/", "fix it")
                checks += (layer,)
        test_run = {str(k): str(v) for k, v in entry.get("test-run", {}).items()}
        for package, pattern in test_run.items():
            if "'" in pattern or "\n" in pattern:
                raise PatchError(f"series {name}: test-run pattern for {package} has a quote or newline", "fix it")
        result.append(Series(name, versions, _revision(name, entry), native, directory, compat, None, checks, test_run))
    return result


def _revision(name: str, entry: dict[str, object]) -> int:
    """The series' revision, the image tag's ``sctp.N``: a whole number from 1, never
    rounded or coerced, since two revisions that read alike would push over each other's tag."""
    revision = entry.get("revision", 1)
    if type(revision) is not int or not 1 <= revision <= MAX_REVISION:
        raise PatchError(
            f"series {name}: revision {revision!r} is not a whole number from 1 to {MAX_REVISION}",
            "write it as revision = N in patches/kube-router/series.toml",
        )
    return revision


def select(index: list[Series], version: str) -> Series:
    parsed = semver.Version.parse(version.removeprefix("v"))
    matches = [s for s in index if s.matches(parsed)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise PatchError(
            f"kube-router {version} matches several series: {', '.join(s.name for s in matches)}",
            "make the ranges in patches/kube-router/series.toml disjoint",
        )
    lines = "; ".join(f"{s.name} ({s.versions})" for s in index)
    raise ConfigError(f"kube-router {version} is not supported", f"supported release lines: {lines}")


def dep3_fields(patch: Path) -> dict[str, str]:
    """The DEP-3 header of a patch (the lines before the diff)."""
    fields: dict[str, str] = {}
    last = ""
    for line in patch.read_text(errors="replace").splitlines():
        if line.startswith(("---", "diff ", "Index:")):
            break
        if line.startswith((" ", "\t")) and last:
            fields[last] += "\n" + line.strip()
            continue
        key, sep, value = line.partition(":")
        if sep and key and " " not in key:
            last = key.strip()
            fields[last] = value.strip()
    return fields


def negative_control(series: Series) -> Series:
    """The series cut down to its compat patches: the release as upstream ships it, made to
    run on a current node, with no SCTP change (for proving that the patches matter)."""
    return dataclasses.replace(series, name=f"{series.name}-control", native=False, control_of=series.name)


def run(tree: Path, series: Series) -> PatchedTree:
    overlay: dict[str, bytes | None] = {}
    applied = []
    for patch in series.patches():
        fields = dep3_fields(patch)
        before = set(overlay)
        overlay = unidiff.apply(patch, overlay, tree)
        touched = tuple(
            sorted({f.path for f in unidiff.parse(patch.read_bytes(), patch.name)} | (set(overlay) - before))
        )
        applied.append(
            AppliedPatch(
                name=patch.name,
                sha256=hashlib.sha256(patch.read_bytes()).hexdigest(),
                description=fields.get("Description", "").split("\n", 1)[0],
                files=touched,
            )
        )
    return PatchedTree(tree, overlay, series, tuple(applied))
