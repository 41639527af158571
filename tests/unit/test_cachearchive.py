"""cache export / cache import: the round trip, and every way a carried archive can lie."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from kube_router_sctp import cachearchive, gomodules
from kube_router_sctp.cache import Cache
from kube_router_sctp.download import Downloader
from kube_router_sctp.errors import UnsafeSourceError
from kube_router_sctp.treedigest import digest_tree
from tests.unit.test_gomodules import ORACLE_FILES, ORACLE_MOD_H1, ORACLE_ZIP_H1, oracle_zip


def filled_cache(tmp_path: Path) -> Cache:
    """A cache with a Go module (zip and go.mod, fetched from a file:// proxy), a plain
    download and a source tree with an executable and a symlink."""
    proxy = tmp_path / "proxy" / "example.com" / "oracle" / "@v"
    proxy.mkdir(parents=True)
    oracle_zip(tmp_path).replace(proxy / "v1.0.0.zip")
    (proxy / "v1.0.0.mod").write_bytes(ORACLE_FILES["go.mod"])
    cache = Cache(tmp_path / "cache")
    store = gomodules.ModuleStore(cache, Downloader(cache), [f"file://{tmp_path / 'proxy'}"])
    store.get_all([gomodules.Sum("example.com/oracle", "v1.0.0", ORACLE_ZIP_H1, ORACLE_MOD_H1)])
    tarball = tmp_path / "ipvsadm.tar.gz"
    tarball.write_bytes(b"an ipvsadm tarball")
    sha = hashlib.sha256(tarball.read_bytes()).hexdigest()
    Downloader(cache).fetch("ipvsadm", sha, [f"file://{tarball}"])
    tree = tmp_path / "tree"
    (tree / "cmd").mkdir(parents=True)
    (tree / "cmd" / "main.go").write_text("package main\n")
    (tree / "build.sh").write_text("#!/bin/sh\n")
    (tree / "build.sh").chmod(0o755)
    (tree / "link").symlink_to("cmd/main.go")
    digest = digest_tree(tree)
    cache.put_tree(tree, digest)
    return cache


def contents(cache: Cache) -> dict[str, object]:
    index = cache.index_path("gomod", "x").parent
    return {
        **cache.entries(),
        "index": sorted(p.name for p in index.iterdir()),
        "tmp": sorted(p.name for p in cache.tmp_dir().iterdir()),
    }


def test_export_then_import_gives_the_same_verified_cache(tmp_path: Path) -> None:
    source = filled_cache(tmp_path)
    archive = tmp_path / "cache.tar"
    summary = cachearchive.export(source, archive)
    assert (summary.blobs, summary.modules, summary.trees) == (3, 2, 1)
    target = Cache(tmp_path / "elsewhere")
    imported = cachearchive.import_archive(target, archive)
    assert (imported.blobs, imported.modules, imported.trees) == (3, 2, 1)
    assert contents(target) == contents(source)
    assert target.verify_all() == []
    entry = gomodules.read_index(target, "example.com/oracle", "v1.0.0", "zip")
    assert entry is not None and entry["h1"] == ORACLE_ZIP_H1
    # Imported again: nothing changes, nothing is duplicated.
    cachearchive.import_archive(target, archive)
    assert contents(target) == contents(source)


def rewrite(archive: Path, dest: Path, change: object) -> Path:
    """Copy ``archive`` member by member through ``change(name, data) -> [(info, data)]``,
    keeping the manifest consistent with what is written unless ``change`` writes it."""
    with tarfile.open(archive) as src:
        members = [(m, src.extractfile(m).read() if m.isreg() else b"") for m in src.getmembers()]  # type: ignore[union-attr]
    out: list[tuple[tarfile.TarInfo, bytes]] = []
    for info, data in members:
        out += change(info, data)  # type: ignore[operator]
    manifest = json.loads(next(d for i, d in out if i.name == cachearchive.MANIFEST))
    if isinstance(change, _ForgeZip):  # the manifest names the forged blob, consistently
        for entry in manifest["entries"]:
            entry["name"] = entry["name"].replace(change.old, change.new)
    listed = {e["name"] for e in manifest["entries"]}
    for info, data in out:
        if info.isreg() and info.name in listed:
            for entry in manifest["entries"]:
                if entry["name"] == info.name:
                    entry["sha256"], entry["size"] = hashlib.sha256(data).hexdigest(), len(data)
    with tarfile.open(dest, "w") as tar:
        for info, data in out:
            if info.name == cachearchive.MANIFEST:
                data = json.dumps(manifest).encode()
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return dest


class _ForgeZip:
    """A consistent lie: the module zip's contents changed, stored under its new sha256,
    and its index entry pointing there; only the go.sum hash can tell."""

    def __init__(self) -> None:
        self.old = self.new = ""

    def __call__(self, info: tarfile.TarInfo, data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
        if data.startswith(b"PK"):
            forged = io.BytesIO()
            with zipfile.ZipFile(io.BytesIO(data)) as real, zipfile.ZipFile(forged, "w") as out:
                for item in real.infolist():
                    out.writestr(item, real.read(item).replace(b"Answer = 42", b"Answer = 43"))
            data = forged.getvalue()
            self.old, self.new = info.name.rsplit("/", 1)[1], hashlib.sha256(data).hexdigest()
            info.name = f"blobs/sha256/{self.new}"
        elif info.name == cachearchive.MANIFEST:
            data = data  # fixed below, once the new name is known
        elif info.name.startswith("index/") and self.old and self.old.encode() in data:
            data = data.replace(self.old.encode(), self.new.encode())
        return [(info, data)]


def _extra(info: tarfile.TarInfo, data: bytes, extra: tarfile.TarInfo, extra_data: bytes = b"") -> list[object]:
    return [(info, data)] if info.name != cachearchive.MANIFEST else [(info, data), (extra, extra_data)]


def _grow_plain_blobs(info: tarfile.TarInfo, data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    plain = info.name.startswith("blobs/") and not data.startswith(b"PK")
    return [(info, data + b"!" if plain else data)]


def _symlink() -> tarfile.TarInfo:
    info = tarfile.TarInfo("blobs/sha256/" + "a" * 64)
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return info


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda i, d: _extra(i, d, tarfile.TarInfo("../../evil"), b"x"), "not a cache entry the manifest lists"),
        (lambda i, d: _extra(i, d, _symlink()), "not a regular file"),
        (lambda i, d: _extra(i, d, tarfile.TarInfo("trees")), "not a cache entry"),
        (lambda i, d: [] if i.name.startswith("trees/") else [(i, d)], "the archive lacks it"),
        (_grow_plain_blobs, "does not hash to its name"),
        (_ForgeZip(), "go.sum says h1:"),
    ],
    ids=["traversal", "symlink", "unknown", "missing", "blob-name", "forged-module"],
)
def test_a_lying_archive_is_refused_and_imports_nothing(tmp_path: Path, change: object, why: str) -> None:
    archive = tmp_path / "cache.tar"
    cachearchive.export(filled_cache(tmp_path), archive)
    hostile = rewrite(archive, tmp_path / "hostile.tar", change)
    target = Cache(tmp_path / "elsewhere")
    with pytest.raises(UnsafeSourceError, match=why) as caught:
        cachearchive.import_archive(target, hostile)
    assert "nothing was imported" in caught.value.one_line()
    assert contents(target) == {"blobs": [], "trees": [], "index": [], "tmp": []}


def test_a_manifest_that_does_not_match_a_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "cache.tar"
    cachearchive.export(filled_cache(tmp_path), archive)
    with tarfile.open(archive) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]  # type: ignore[union-attr]
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        for info, data in members:
            if info.name.startswith("index/"):
                data = data.replace(b'"size"', b'"size" ')  # same length? no: one byte more
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UnsafeSourceError, match="bytes, the manifest says"):
        cachearchive.import_archive(Cache(tmp_path / "elsewhere"), bad)
