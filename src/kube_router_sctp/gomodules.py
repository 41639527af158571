"""Go modules fetched on the host, verified against go.sum, cached by content.

A library for any go.mod/go.sum pair (kube-router's, gobgp's, kube-apiserver's): the
``go.sum`` lines say which ``.mod`` and ``.zip`` files the go command will read and what
their ``h1:`` hashes are; every one is downloaded from the configured Go module proxy
through the project's one downloader, checked against that hash (Go's dirhash "Hash1",
computed here), stored in the cache under its sha256, and indexed under
``module@version``. A module downloaded once is never downloaded again, whatever
release asks for it. The build then gets exactly those files as a file-based module proxy
(``<escaped path>/@v/{list,<v>.info,<v>.mod,<v>.zip}``) and compiles with Go's network off.

Trust: ``go.sum`` is part of the pinned source tree (its tree digest is pinned), so every
hash it holds is as trusted as the source; a module's own ``go.sum`` (gobgp's) is trusted
through the ``h1:`` of its zip in the parent's ``go.sum``. The checksum database adds
nothing to that chain and is not consulted (see docs/configuration.md).

Module zips are hostile input: they are read in memory, never extracted; names are checked
(one ``module@version/`` prefix, no ``..``, no duplicates) and sizes bounded as Go bounds them.

Use, for any module (kube-router in fetch.py; kube-apiserver the same way)::

    store = ModuleStore(cache, downloader, goproxy.proxy_urls(settings.mirrors.go_proxy))
    files = store.get_all(parse_go_sum(go_sum_text, "kube-apiserver go.sum").values())
    members = proxy_members(files, "gomod/")  # into a build context; GOPROXY=file:///…/gomod
    # a module built as its own main module: zip_tree(zip, module, version, "src/")
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import zipfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import semver

from .cache import Cache
from .download import Downloader
from .errors import FetchError, PipelineError, UnsafeSourceError, VerificationError

# Go's own limits for module files (golang.org/x/mod/zip): larger files are refused there too.
MAX_ZIP_BYTES = 500 << 20
MAX_MOD_BYTES = 16 << 20
MAX_ZIP_FILES = 100_000
WORKERS = 8

_PATH_ELEMENT_RE = re.compile(r"^[A-Za-z0-9_~-][A-Za-z0-9._~-]*$")
_VERSION_RE = re.compile(r"^v[0-9A-Za-z.+-]+$")
_H1_RE = re.compile(r"^h1:[A-Za-z0-9+/]{43}=$")
_MAJOR_RE = re.compile(r"/v[0-9]+$")
_PROXY_REFUSED_RE = re.compile(r"HTTP (40[13]|410)")
_DAMAGED = "the file is damaged or hostile"


# -- names -------------------------------------------------------------------------------
def check_path(path: str, origin: str) -> str:
    """A module path as the proxy protocol allows it (Go's CheckPath, the parts that keep
    it a safe URL and file name): dotted first element, no empty, ``.`` or ``..`` element."""
    elements = path.split("/")
    ok = "." in elements[0] and all(_PATH_ELEMENT_RE.match(e) and not e.endswith(".") for e in elements)
    if not ok:
        raise VerificationError(f"{origin} names an invalid module path {path[:200]!r}", _DAMAGED)
    return path


def check_version(version: str, origin: str) -> str:
    if not _VERSION_RE.match(version) or ".." in version or len(version) > 200:
        raise VerificationError(f"{origin} names an invalid version {version[:200]!r}", _DAMAGED)
    return version


def escape(text: str) -> str:
    """The proxy protocol's case-encoding of paths and versions (``Azure`` -> ``!azure``)."""
    return "".join(f"!{c.lower()}" if c.isupper() else c for c in text)


def semver_key(version: str) -> tuple[int, semver.Version | None, str]:
    """Sort key for module versions: semver order, anything unparsable after, by text."""
    try:
        return (0, semver.Version.parse(version.removeprefix("v")), version)
    except ValueError:
        return (1, None, version)


# -- go.sum and go.mod -------------------------------------------------------------------
@dataclass(frozen=True)
class Sum:
    """What one go.sum says about module@version: the h1 of its zip and of its go.mod."""

    path: str
    version: str
    zip_h1: str | None
    mod_h1: str | None

    @property
    def key(self) -> str:
        return f"{self.path}@{self.version}"


def parse_go_sum(text: str, origin: str) -> dict[str, Sum]:
    """module@version -> Sum. Every line is checked; a malformed one is refused."""
    found: dict[str, dict[str, str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{origin} line {number}"
        if len(fields) != 3 or not _H1_RE.match(fields[2]):
            raise VerificationError(f"{where} is not a go.sum line: {line[:120]!r}", _DAMAGED)
        path, version, h1 = fields
        kind = "mod" if version.endswith("/go.mod") else "zip"
        version = version.removesuffix("/go.mod")
        check_path(path, where)
        check_version(version, where)
        entry = found.setdefault(f"{path}@{version}", {"path": path, "version": version})
        if entry.get(kind, h1) != h1:
            raise VerificationError(f"{where} gives {path}@{version} a second, different hash", "fix the go.sum")
        entry[kind] = h1
    return {key: Sum(e["path"], e["version"], e.get("zip"), e.get("mod")) for key, e in found.items()}


def go_mod_requires(text: str) -> dict[str, str]:
    """module path -> version of the ``require`` directives (single-line and blocks)."""
    requires: dict[str, str] = {}
    block = False
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if block:
            if line == ")":
                block = False
            elif line:
                words = line.split()
                if len(words) >= 2:
                    requires[words[0].strip('"')] = words[1]
            continue
        words = line.split()
        if words[:1] == ["require"]:
            if words[1:2] == ["("]:
                block = True
            elif len(words) >= 3:
                requires[words[1].strip('"')] = words[2]
    return requires


def go_mod_module(text: str) -> str | None:
    """The ``module`` directive's path."""
    for raw in text.splitlines():
        words = raw.split("//", 1)[0].split()
        if words[:1] == ["module"] and len(words) == 2:
            return words[1].strip('"')
    return None


_COMMENT_RE = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_IMPORT_RE = re.compile(r"^import\s*(?:\((?P<block>[^)]*)\)|(?P<one>[^\n]*))", re.M)
_QUOTED_RE = re.compile(r'"([^"\\\n]+)"')


def external_imports(sources: Iterable[tuple[str, bytes]], module: str) -> list[str]:
    """The packages outside ``module`` and the standard library that its non-test Go files
    import (a superset: build constraints are not evaluated; the go command filters)."""
    found: set[str] = set()
    for rel, data in sources:
        parts = rel.split("/")
        skip = parts[0] == "vendor" or any(p in ("testdata",) or p[:1] in (".", "_") for p in parts[:-1])
        if not rel.endswith(".go") or rel.endswith("_test.go") or skip:
            continue
        text = _COMMENT_RE.sub("", data.decode("utf-8", "replace"))
        for match in _IMPORT_RE.finditer(text):
            for path in _QUOTED_RE.findall(match["block"] or match["one"] or ""):
                first = path.split("/", 1)[0]
                if "." in first and path != module and not path.startswith(module + "/"):
                    found.add(path)
    return sorted(found)


def command_module(package: str, requires: dict[str, str]) -> tuple[str, str, str] | None:
    """(module, version, subdirectory) of the required module that holds ``package``.

    An exact module-path prefix wins; otherwise a required module of the same family with
    another major version (a line naming ``gobgp/v4/cmd/gobgp`` for a release whose go.mod
    requires ``gobgp/v3``) gives the same command in the version the release requires.
    """
    exact = [m for m in requires if package.startswith(m + "/") and not re.match(r"v[0-9]+/", package[len(m) + 1 :])]
    if exact:
        module = max(exact, key=len)
        return module, requires[module], package[len(module) + 1 :]
    for module, version in sorted(requires.items()):
        family = _MAJOR_RE.sub("", module)
        match = re.fullmatch(rf"{re.escape(family)}(?:/v[0-9]+)?/(.+)", package)
        if match:
            return module, version, match[1]
    return None


# -- Go's dirhash Hash1 ----------------------------------------------------------------
def _hash1(lines: Iterable[tuple[str, str]]) -> str:
    """sha256 over sorted ``"<sha256 hex>  <name>\\n"`` lines, base64, ``h1:`` prefix."""
    summary = hashlib.sha256()
    for name, digest in sorted(lines, key=lambda item: item[0].encode()):
        summary.update(f"{digest}  {name}\n".encode())
    return "h1:" + base64.b64encode(summary.digest()).decode()


def hash_mod(data: bytes) -> str:
    """The ``/go.mod`` hash: Hash1 of the single file named ``go.mod``."""
    return _hash1([("go.mod", hashlib.sha256(data).hexdigest())])


def _names(bundle: zipfile.ZipFile, module: str, version: str, origin: str) -> list[tuple[zipfile.ZipInfo, str]]:
    """Every member with its name as Go reads it, checked the way Go checks module zips."""
    prefix = f"{module}@{version}/"
    members = bundle.infolist()
    if len(members) > MAX_ZIP_FILES:
        raise UnsafeSourceError(f"{origin} has more than {MAX_ZIP_FILES} files", "refusing a zip bomb")
    total = 0
    seen: set[str] = set()
    named = []
    for info in members:
        # Without the UTF-8 flag Python decoded the name as cp437; Go takes the raw bytes.
        name = info.filename if info.flag_bits & 0x800 else info.filename.encode("cp437").decode("utf-8", "replace")
        rel = name[len(prefix) :]
        parts = PurePosixPath(rel).parts
        bad = (
            not name.startswith(prefix)
            or not rel
            or "\\" in name
            or any(ord(c) < 0x20 for c in name)
            or rel.startswith("/")
            or any(p in ("..", ".") for p in rel.split("/"))
            or len(parts) != len(rel.rstrip("/").split("/"))
        )
        if bad:
            raise UnsafeSourceError(f"{origin} holds a member outside {prefix}: {name[:200]!r}", "refusing it")
        folded = name.lower()
        if folded in seen:
            raise UnsafeSourceError(f"{origin} holds {name!r} twice (case-insensitively)", "refusing it")
        seen.add(folded)
        total += info.file_size
        if total > MAX_ZIP_BYTES:
            raise UnsafeSourceError(f"{origin} unpacks to more than {MAX_ZIP_BYTES >> 20} MiB", "refusing a zip bomb")
        named.append((info, name))
    return named


def _open_zip(path: Path, origin: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise VerificationError(f"{origin} is not a readable zip ({exc})", "the proxy served a damaged file") from exc


def hash_zip(path: Path, module: str, version: str) -> str:
    """Go's HashZip of a module zip, reading members in memory (nothing is extracted)."""
    origin = f"{module}@{version}.zip"
    with _open_zip(path, origin) as bundle:
        lines = []
        try:
            for info, name in _names(bundle, module, version, origin):
                digest = hashlib.sha256()
                with bundle.open(info) as member:
                    while chunk := member.read(1 << 20):
                        digest.update(chunk)
                lines.append((name, digest.hexdigest()))
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise VerificationError(f"{origin} is damaged ({exc})", "the proxy served a damaged file") from exc
    return _hash1(lines)


def read_zip_file(path: Path, module: str, version: str, rel: str) -> bytes | None:
    """One file of a verified module zip (``go.mod``, ``go.sum``), or None if absent."""
    origin = f"{module}@{version}.zip"
    with _open_zip(path, origin) as bundle:
        for info, name in _names(bundle, module, version, origin):
            if name == f"{module}@{version}/{rel}":
                if info.file_size > MAX_MOD_BYTES:
                    raise UnsafeSourceError(f"{origin}: {rel} is larger than {MAX_MOD_BYTES >> 20} MiB", "refusing it")
                return bundle.read(info)
    return None


def zip_tree(path: Path, module: str, version: str, prefix: str) -> Iterator[tuple[str, bytes, int]]:
    """The files of a verified module zip as build-context members under ``prefix``
    (a module built as a main module of its own, as gobgp is): regular files only."""
    origin = f"{module}@{version}.zip"
    with _open_zip(path, origin) as bundle:
        strip = len(f"{module}@{version}/")
        for info, name in _names(bundle, module, version, origin):
            if not info.is_dir():
                yield f"{prefix}{name[strip:]}", bundle.read(info), 0o644


# -- the cache's module index and the fetcher ------------------------------------------
@dataclass(frozen=True)
class ModuleFile:
    """One verified .mod or .zip in the cache."""

    path: str
    version: str
    kind: str  # "mod" | "zip"
    h1: str
    sha256: str
    size: int
    blob: Path
    downloaded: bool  # False: it was in the cache already

    def record(self) -> dict[str, object]:
        return {
            "module": self.path,
            "version": self.version,
            "file": self.kind,
            "h1": self.h1,
            "sha256": self.sha256,
            "size": self.size,
            "downloaded": self.downloaded,
        }


def index_key(path: str, version: str, kind: str) -> str:
    return hashlib.sha256(f"{path}@{version} {kind}".encode()).hexdigest()


def read_index(cache: Cache, path: str, version: str, kind: str) -> dict[str, object] | None:
    entry = cache.index_path("gomod", index_key(path, version, kind))
    try:
        data = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or (data.get("module"), data.get("version"), data.get("file")) != (
        path,
        version,
        kind,
    ):
        return None
    return data


def write_index(cache: Cache, item: ModuleFile) -> None:
    """Atomically record module@version file -> blob (after the blob is in place)."""
    target = cache.index_path("gomod", index_key(item.path, item.version, item.kind))
    record = {k: v for k, v in item.record().items() if k != "downloaded"}
    part = cache.tmp_dir() / f"{target.name}.{os.getpid()}.{threading.get_ident()}.part"
    part.write_text(json.dumps(record, sort_keys=True) + "\n")
    part.replace(target)


def verify_blob(path: Path, module: str, version: str, kind: str, h1: str) -> str | None:
    """None when the file at ``path`` has hash ``h1``, else what is wrong."""
    if kind == "mod":
        if path.stat().st_size > MAX_MOD_BYTES:
            return f"go.mod larger than {MAX_MOD_BYTES >> 20} MiB"
        actual = hash_mod(path.read_bytes())
    else:
        if path.stat().st_size > MAX_ZIP_BYTES:
            return f"zip larger than {MAX_ZIP_BYTES >> 20} MiB"
        try:
            actual = hash_zip(path, module, version)
        except PipelineError as exc:
            return exc.message
    return None if actual == h1 else f"go.sum says {h1}, the file hashes to {actual}"


class ModuleStore:
    """Fetch, verify and cache module files; several at once, each at most once."""

    def __init__(self, cache: Cache, downloader: Downloader, proxies: list[str], workers: int = WORKERS) -> None:
        self.cache = cache
        self.downloader = downloader
        self.proxies = [p.rstrip("/") for p in proxies]
        self.workers = workers

    def get(self, path: str, version: str, kind: str, h1: str) -> ModuleFile:
        name = f"{path}@{version}" + ("/go.mod" if kind == "mod" else ".zip")
        with self.cache.lock(f"gomod-{index_key(path, version, kind)}"):
            entry = read_index(self.cache, path, version, kind)
            if entry is not None:
                sha = str(entry.get("sha256", ""))
                if entry.get("h1") != h1:
                    raise VerificationError(
                        f"{name}: go.sum says {h1}, but the cache holds it verified as {entry.get('h1')}",
                        "two go.sum files disagree about one module version: one of them is wrong",
                    )
                if re.fullmatch(r"[0-9a-f]{64}", sha) and self.cache.has_blob(sha):
                    blob = self.cache.blob_path(sha)
                    return ModuleFile(path, version, kind, h1, sha, blob.stat().st_size, blob, False)
            if self.downloader.offline:
                raise FetchError(
                    f"Go module {name} is not in the cache and --offline forbids downloading",
                    "run `python build.py fetch` for this release once with network (or `cache import` "
                    "an export of a cache that has it)",
                )
            if not self.proxies:
                raise FetchError(
                    f"Go module {name} is not in the cache and no Go module proxy is configured",
                    "set one with --go-proxy URL, GOPROXY or mirrors.go-proxy",
                )
            suffix = ".mod" if kind == "mod" else ".zip"
            urls = [f"{base}/{escape(path)}/@v/{escape(version)}{suffix}" for base in self.proxies]
            got = self.downloader.fetch_verified(
                name,
                urls,
                lambda file: verify_blob(file, path, version, kind, h1),
                what=f"go.sum's {h1}",
                hint="set a Go module proxy (--go-proxy, GOPROXY or mirrors.go-proxy) that serves it",
                max_bytes=MAX_MOD_BYTES if kind == "mod" else MAX_ZIP_BYTES,
            )
            item = ModuleFile(path, version, kind, h1, got.sha256, got.size, got.path, got.url is not None)
            write_index(self.cache, item)
            return item

    def get_all(self, sums: Iterable[Sum]) -> list[ModuleFile]:
        """Every file the sums name; failures are collected and the most telling raised
        (a verification failure before a refusal before anything else), naming the module."""
        wanted = []
        for s in sums:
            if s.mod_h1:
                wanted.append((s.path, s.version, "mod", s.mod_h1))
            if s.zip_h1:
                wanted.append((s.path, s.version, "zip", s.zip_h1))
        results: list[ModuleFile] = []
        failures: list[PipelineError] = []
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(self.get, *item) for item in wanted]
            for future in futures:
                try:
                    results.append(future.result())
                except PipelineError as exc:
                    failures.append(exc)
        if failures:
            failures.sort(key=_severity)
            first = failures[0]
            if len(failures) > 1:
                first.message += f" (and {len(failures) - 1} more module file(s) failed)"
            raise first
        return results


def _severity(exc: PipelineError) -> int:
    if isinstance(exc, VerificationError | UnsafeSourceError):
        return 0
    if _PROXY_REFUSED_RE.search(exc.message):
        return 1
    return 2


def proxy_members(files: Iterable[ModuleFile], prefix: str) -> Iterator[tuple[str, Path | bytes, int]]:
    """A file-based module proxy (GOPROXY=file://…) holding exactly ``files``."""
    by_module: dict[str, dict[str, dict[str, ModuleFile]]] = {}
    for item in files:
        by_module.setdefault(item.path, {}).setdefault(item.version, {})[item.kind] = item
    for module in sorted(by_module):
        base = f"{prefix}{escape(module)}/@v/"
        versions = sorted(by_module[module], key=semver_key)
        yield f"{base}list", "".join(f"{v}\n" for v in versions).encode(), 0o644
        for version in versions:
            kinds = by_module[module][version]
            yield f"{base}{escape(version)}.info", json.dumps({"Version": version}).encode() + b"\n", 0o644
            for kind in ("mod", "zip"):
                if kind in kinds:
                    yield f"{base}{escape(version)}.{kind}", kinds[kind].blob, 0o644
