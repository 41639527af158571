"""Go module proxy access: module zips and Go toolchains, always pinned by sha256.

Used to fill holes in exported trees (a vendored file a partial mirror lacks, restored
from the module at the vendored version and checked against the git blob id the tree
records) and to fetch Go toolchains for the builder stage.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .download import Downloaded, Downloader
from .errors import FetchError, VerificationError
from .gitsource import MissingBlob, blob_id
from .gomodules import escape
from .safefs import Beneath

MAX_MEMBER_BYTES = 64 << 20  # a restored vendored file; the largest known is ~4 MiB
# `go` naming a module version the proxy will not serve: module, version, HTTP status.
REFUSAL = re.compile(r"(?<![\w.\-~/])([\w.\-~/]+)@(v[^\s:]+): reading \S+: (40[34]|410) ")


def proxy_urls(go_proxy: str | None) -> list[str]:
    """The URL entries of a GOPROXY list (``direct`` and ``off`` are not URLs)."""
    if not go_proxy:
        return []
    entries = [e.strip() for part in go_proxy.split("|") for e in part.split(",")]
    return [e.rstrip("/") for e in entries if e.startswith(("https://", "http://", "file://"))]


def module_zip(downloader: Downloader, go_proxy: str | None, module: str, version: str, sha256: str) -> Downloaded:
    urls = [f"{base}/{escape(module)}/@v/{escape(version)}.zip" for base in proxy_urls(go_proxy)]
    return downloader.fetch(
        f"{module}@{version}.zip",
        sha256,
        urls,
        hint="set a Go module proxy (--go-proxy, GOPROXY or mirrors.go-proxy)",
    )


def toolchain_zip(downloader: Downloader, go_proxy: str | None, version: str, goarch: str, sha256: str) -> Downloaded:
    return module_zip(downloader, go_proxy, "golang.org/toolchain", f"v0.0.1-go{version}.linux-{goarch}", sha256)


@dataclass(frozen=True)
class Restoration:
    path: str
    module: str
    version: str
    zip_sha256: str

    def describe(self) -> dict[str, str]:
        return {
            "path": self.path,
            "module": self.module,
            "version": self.version,
            "zip_sha256": self.zip_sha256,
        }


def restore(
    tree: Path,
    missing: list[MissingBlob],
    known: list[Restoration],
    downloader: Downloader,
    go_proxy: str | None,
) -> list[Restoration]:
    """Fill every hole in ``tree`` from its Go module, or fail naming the hole. The file
    is read from the zip in memory (nothing else of the zip touches the disk) and written
    through ``safefs``, so a hole whose path passes through a symlink of the tree is refused."""
    done: list[Restoration] = []
    by_path = {r.path: r for r in known}
    with Beneath(tree, "git tree", "refusing this tree") as target:
        for hole in missing:
            recipe = by_path.get(hole.path)
            if recipe is None:
                raise FetchError(
                    f"the git repository lacks {hole.path} (blob {hole.blob}) and no restore rule covers it",
                    "use a complete mirror of kube-router, or add a vendor-restore rule to the config",
                )
            archive = module_zip(downloader, go_proxy, recipe.module, recipe.version, recipe.zip_sha256)
            inner = f"{recipe.module}@{recipe.version}/" + hole.path.split(f"vendor/{recipe.module}/", 1)[1]
            data = zip_member(archive.path, inner, f"{recipe.module}@{recipe.version}")
            if blob_id(data) != hole.blob:
                raise VerificationError(
                    f"restored {hole.path} from {recipe.module}@{recipe.version} does not match "
                    f"the tree's blob {hole.blob}",
                    "the rule names the wrong module version; fix the vendor-restore rule",
                )
            target.write(hole.path, data, 0o755 if hole.mode == "100755" else 0o644)
            done.append(recipe)
    return done


def zip_member(path: Path, name: str, what: str, limit: int | None = None) -> bytes:
    """One member of a (sha256-verified) zip, read in memory; a damaged zip, a missing
    member or one larger than ``limit`` (default MAX_MEMBER_BYTES) unpacked is one clear
    failure."""
    limit = MAX_MEMBER_BYTES if limit is None else limit
    try:
        with zipfile.ZipFile(path) as bundle:
            try:
                info = bundle.getinfo(name)
            except KeyError as exc:
                raise VerificationError(f"{what} has no {name}", "fix the vendor-restore rule") from exc
            if info.file_size > limit:
                raise VerificationError(
                    f"{what}: {name} unpacks to {info.file_size} bytes, more than {limit}",
                    "fix the vendor-restore rule",
                )
            with bundle.open(info) as handle:
                data = handle.read(limit + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError) as exc:
        raise VerificationError(
            f"{what} ({path.name}) is not a readable zip ({exc})", "delete it from the cache and fetch it again"
        ) from exc
    if len(data) > limit:
        raise VerificationError(f"{what}: {name} unpacks to more than {limit} bytes", "fix the vendor-restore rule")
    return data
