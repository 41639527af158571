"""The build context: exactly the files the Dockerfile copies, as a normalised tar.

The context is written by us rather than collected from a directory, so it holds nothing
else (no .git, no caches) and every member has fixed owner, mode and mtime: the same
inputs give the same bytes, which keeps Docker's layer cache warm and builds reproducible.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .fetch import GoModules
from .gomodules import external_imports, go_mod_module, proxy_members, zip_tree
from .patch import PatchedTree
from .plan import Plan
from .render import Rendered, dumps


@dataclass(frozen=True)
class Link:
    """A symlink member of the context (from the source tree; never followed)."""

    target: str


Member = tuple[str, Path | bytes | Link, int]  # (name in the tar, content, mode)


@dataclass(frozen=True)
class Context:
    path: Path
    size: int
    sha256: str
    files: int


def tree_members(patched: PatchedTree, prefix: str) -> Iterator[Member]:
    for rel, item in patched.contents():
        yield f"{prefix}{rel}", Link(item.link) if item.link is not None else item.data, item.mode


def _members(
    plan: Plan,
    rendered: Rendered,
    patched: PatchedTree | None,
    ipvsadm: Path | None,
    go_toolchain: Path | None,
    binaries: Path | None,
    modules: GoModules | None,
) -> Iterator[Member]:
    """(name in context, content, mode) in a stable order."""
    yield "Dockerfile", rendered.dockerfile.encode(), 0o644
    yield "provenance.json", dumps(rendered.provenance).encode(), 0o644
    if patched is not None:
        yield from tree_members(patched, "kube-router/")
        if plan.line.layout == "modules" and binaries is None:
            yield "kube-router-imports.txt", _imports(patched), 0o644
    if modules is not None:
        yield from proxy_members(modules.files, "gomod/")
        if modules.gobgp is not None:
            gobgp = modules.gobgp
            yield from zip_tree(gobgp.zip, gobgp.module, gobgp.version, "gobgp/")
    if ipvsadm is not None:
        yield f"ipvsadm/{plan.ipvsadm.name}", ipvsadm, 0o644
        for patch in plan.ipvsadm_knowledge.patches:
            yield f"ipvsadm/patches/{patch.name}", patch, 0o644
    if rendered.go_zip and go_toolchain is not None:
        yield f"go/{rendered.go_zip}", go_toolchain, 0o644
    if binaries is not None:
        for name in ("kube-router", "gobgp"):
            yield f"bin/{name}", binaries / name, 0o755
    if rendered.ca_bundle is not None:
        yield "certs/ca-bundle.crt", rendered.ca_bundle, 0o644


def _imports(patched: PatchedTree) -> bytes:
    """The packages kube-router's source imports from other modules, one a line: the list
    the builder compiles ahead of the source (its own layer, cached across releases)."""
    go_mod = patched.read("go.mod") or b""
    module = go_mod_module(go_mod.decode("utf-8", "replace")) or ""
    sources = ((rel, item.data) for rel, item in patched.contents() if rel.endswith(".go") and item.link is None)
    return "".join(f"{path}\n" for path in external_imports(sources, module)).encode()


def write_tar(dest: Path, members: Iterable[Member], mtime: int) -> Context:
    try:
        return _write_tar(dest, members, mtime)
    except OSError as exc:
        if exc.filename:
            raise
        dest.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(dest)) from exc  # name the place that filled up


def _write_tar(dest: Path, members: Iterable[Member], mtime: int) -> Context:
    count = 0
    with dest.open("wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content, mode in members:
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if isinstance(content, Link):
                info.type = tarfile.SYMTYPE
                info.linkname = content.target
                info.mode = 0o777
                tar.addfile(info)
            elif isinstance(content, Path):
                info.size = content.stat().st_size
                info.mode = mode
                with content.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                info.size = len(content)
                info.mode = mode
                tar.addfile(info, io.BytesIO(content))
            count += 1
    digest = hashlib.sha256()
    with dest.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return Context(dest, dest.stat().st_size, digest.hexdigest(), count)


def write(
    dest: Path,
    plan: Plan,
    rendered: Rendered,
    *,
    patched: PatchedTree | None = None,
    ipvsadm: Path | None = None,
    go_toolchain: Path | None = None,
    binaries: Path | None = None,
    modules: GoModules | None = None,
) -> Context:
    """The build context; with only ``go_toolchain`` it serves the package stages alone
    (what is built with the network), with ``binaries`` (a directory holding kube-router
    and gobgp) one platform's image, with ``modules`` the Go stages' module proxy."""
    members = _members(plan, rendered, patched, ipvsadm, go_toolchain, binaries, modules)
    return write_tar(dest, members, rendered.source_date_epoch)
