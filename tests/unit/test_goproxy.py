"""Restoring a vendored file from its Go module zip: the zip is read in memory, a damaged
or oversized one is one clear failure, and the file is never written through a link."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from kube_router_sctp import goproxy
from kube_router_sctp.cache import Cache
from kube_router_sctp.download import Downloader
from kube_router_sctp.errors import UnsafeSourceError, VerificationError
from kube_router_sctp.gitsource import MissingBlob, blob_id
from kube_router_sctp.goproxy import Restoration

MODULE, VERSION = "golang.org/x/text", "v0.3.0"
HOLE = "vendor/golang.org/x/text/collate/tables.go"
CONTENT = b"package collate\n"


def cached_zip(cache: Cache, data: bytes) -> str:
    """Put a zip into the cache under its sha256, as a verified download would be."""
    sha = hashlib.sha256(data).hexdigest()
    cache.blob_path(sha).write_bytes(data)
    return sha


def module_zip(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return raw.getvalue()


def restore(tmp_path: Path, zip_bytes: bytes, tree: Path | None = None) -> list[Restoration]:
    cache = Cache(tmp_path / "cache")
    sha = cached_zip(cache, zip_bytes)
    tree = tree or tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    hole = MissingBlob(HOLE, blob_id(CONTENT), "100644")
    rule = Restoration(HOLE, MODULE, VERSION, sha)
    return goproxy.restore(tree, [hole], [rule], Downloader(cache, offline=True), None)


def test_a_hole_is_filled_and_checked(tmp_path: Path) -> None:
    restore(tmp_path, module_zip({f"{MODULE}@{VERSION}/collate/tables.go": CONTENT}))
    assert (tmp_path / "tree" / HOLE).read_bytes() == CONTENT


def test_a_damaged_zip_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="is not a readable zip"):
        restore(tmp_path, b"PK\x03\x04 not really a zip")


def test_an_oversized_member_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(goproxy, "MAX_MEMBER_BYTES", 1000)
    zipped = module_zip({f"{MODULE}@{VERSION}/collate/tables.go": b"0" * 100_000})
    with pytest.raises(VerificationError, match="unpacks to 100000 bytes, more than 1000"):
        restore(tmp_path, zipped)


def test_a_hole_behind_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "vendor").symlink_to(outside)
    with pytest.raises(UnsafeSourceError, match="passes through the symlink 'vendor'"):
        restore(tmp_path, module_zip({f"{MODULE}@{VERSION}/collate/tables.go": CONTENT}), tree)
    assert list(outside.iterdir()) == []
