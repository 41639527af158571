"""fetch stage: kube-router source, ipvsadm tarball, Go toolchain and Go modules, all verified.

kube-router is verified by the digest of its tree (one pin for a git export, a GitHub
archive or a release tarball alike) and, for git sources, by the commit its tag names:
a tag that moved since it was pinned is refused. Verified trees are cached under their
digest, so a second run exports and downloads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import archive, gitsource, gomodules, goproxy, log
from .cache import Cache, remove_tree
from .download import Downloaded, Downloader
from .errors import ConfigError, VerificationError
from .gomodules import ModuleFile, ModuleStore
from .goproxy import Restoration
from .patch import PatchedTree
from .plan import Pin, Plan
from .treedigest import digest_tree


@dataclass(frozen=True)
class KubeRouterTree:
    path: Path
    version: str
    commit: str | None
    tree_sha256: str
    origin: str
    restored: tuple[Restoration, ...]


@dataclass(frozen=True)
class Fetched:
    kube_router: KubeRouterTree
    ipvsadm: Downloaded
    go_toolchain: Downloaded | None


def _require_pin(plan: Plan) -> Pin:
    if plan.pin is None or not plan.pin.tree_sha256:
        raise ConfigError(
            f"kube-router {plan.version} has no pinned commit and tree digest",
            f"pin it on purpose: python build.py pin --kube-router-source GIT {plan.version} "
            "and add the printed lines to your config",
        )
    return plan.pin


def _check_tree(tree: Path, pin: Pin, what: str) -> str:
    actual = digest_tree(tree)
    if actual != pin.tree_sha256:
        raise VerificationError(
            f"{what} has tree digest {actual}, but the pin says {pin.tree_sha256}; nothing was cached",
            "the source is not the pinned release: use the genuine source or update the pin on purpose",
        )
    return actual


def export_git(
    plan: Plan, cache: Cache, downloader: Downloader, dest: Path, commit: str, gitdir: Path
) -> tuple[Restoration, ...]:
    missing = gitsource.export(gitdir, commit, dest)
    if not missing:
        return ()
    names = ", ".join(m.path for m in missing)
    log.info(f"the git repository lacks {len(missing)} file(s) ({names}); restoring from the Go module proxy")
    restored = goproxy.restore(dest, missing, list(plan.restorations), downloader, plan.settings.mirrors.go_proxy)
    for item in restored:
        log.info(f"restored {item.path} from {item.module}@{item.version} (blob id verified)")
    return tuple(restored)


def kube_router(plan: Plan, cache: Cache, downloader: Downloader) -> KubeRouterTree:
    pin = _require_pin(plan)
    source = plan.source
    commit: str | None = None
    gitdir: Path | None = None
    if source.kind == "git":
        gitdir = gitsource.git_dir(source.location, cache.root / "git", plan.settings.offline)
        commit = gitsource.resolve(gitdir, plan.version)
        if commit != pin.commit:
            raise VerificationError(
                f"tag {plan.version} in {source.location} names commit {commit}, "
                f"but it was pinned at {pin.commit} (the tag moved)",
                "refusing to build it; if the new commit is intended, update the pin on purpose "
                "with `python build.py pin`",
            )

    with cache.lock(f"tree-{pin.tree_sha256}"):
        # A local tarball is always checked (it is cheap, and the user handed us that file);
        # git and URL sources are verified when first exported, then served from the cache.
        if source.kind != "tarball" and cache.has_tree(pin.tree_sha256):
            log.info(f"kube-router {plan.version}: cached tree {pin.tree_sha256[:12]} (verified)")
            return KubeRouterTree(
                cache.tree_path(pin.tree_sha256),
                plan.version,
                commit or pin.commit,
                pin.tree_sha256,
                source.describe(),
                (),
            )
        scratch = cache.scratch("kube-router-")
        try:
            tree = scratch / "tree"
            tree.mkdir()
            restored: tuple[Restoration, ...] = ()
            if source.kind == "git":
                assert gitdir is not None and commit is not None
                log.info(f"exporting {plan.version} ({commit[:12]}) from {source.location}")
                restored = export_git(plan, cache, downloader, tree, commit, gitdir)
            else:
                if source.kind == "archive":
                    tarball = scratch / "source.tar"
                    downloader.fetch_unpinned(
                        f"kube-router {plan.version} archive",
                        [source.location],
                        tarball,
                        hint="GitHub may be unreachable: pass a git mirror or a local tarball as "
                        "--kube-router-source, or use --offline with a filled cache",
                    )
                else:
                    tarball = Path(source.location)
                extracted = archive.extract(tarball, tree)
                commit = extracted.commit or pin.commit
                if extracted.commit and extracted.commit != pin.commit:
                    raise VerificationError(
                        f"the archive says it holds commit {extracted.commit}, the pin says {pin.commit}",
                        "use the archive of the pinned release or update the pin on purpose",
                    )
            _check_tree(tree, pin, f"kube-router {plan.version} from {source.describe()}")
            final = cache.put_tree(tree, pin.tree_sha256)
        finally:
            if scratch.exists():
                remove_tree(scratch)
    log.info(f"kube-router {plan.version}: tree {pin.tree_sha256[:12]} verified and cached")
    return KubeRouterTree(final, plan.version, commit, pin.tree_sha256, source.describe(), restored)


def ipvsadm(plan: Plan, downloader: Downloader) -> Downloaded:
    upstream = ", ".join(sorted({urlsplit(u).hostname or u for u in plan.ipvsadm_knowledge.urls}))
    return downloader.fetch(
        plan.ipvsadm.name,
        plan.ipvsadm.sha256,
        plan.ipvsadm.urls,
        hint=f"{upstream} may be unreachable: add a mirror (--ipvsadm-mirror URL, file:// works) "
        "or use --offline with a filled cache",
    )


def go_toolchain(plan: Plan, downloader: Downloader) -> Downloaded | None:
    go = plan.line.go
    if go.kind != "toolchain":
        return None
    assert go.sha256 is not None
    return goproxy.toolchain_zip(downloader, plan.settings.mirrors.go_proxy, go.value, "amd64", go.sha256)


@dataclass(frozen=True)
class GobgpModule:
    module: str
    version: str
    zip: Path


@dataclass(frozen=True)
class GoModules:
    """Every module file the Go stages read, verified and cached; gobgp's own zip."""

    files: tuple[ModuleFile, ...]
    gobgp: GobgpModule | None
    bytes_downloaded: int

    def record(self) -> dict[str, object]:
        downloaded = [f for f in self.files if f.downloaded]
        return {
            "files": len(self.files),
            "bytes": sum(f.size for f in self.files),
            "downloaded_files": len(downloaded),
            "bytes_downloaded": self.bytes_downloaded,
            "gobgp": None if self.gobgp is None else f"{self.gobgp.module}@{self.gobgp.version}",
            "modules": [f.record() for f in self.files],
        }


def _text(patched: PatchedTree, rel: str) -> str:
    data = patched.read(rel)
    if data is None:
        raise VerificationError(f"the source tree has no {rel}", "the release line's layout says it has one")
    return data.decode("utf-8", "replace")


def go_modules(plan: Plan, patched: PatchedTree, cache: Cache, downloader: Downloader) -> GoModules | None:
    """The module graphs the Go stages compile, from the patched tree's go.mod and go.sum:
    kube-router's (module lines) and gobgp's own (every line that builds gobgp as a module,
    at the version kube-router's go.mod requires). None for GOPATH lines (all vendored)."""
    layout, gobgp = plan.line.layout, plan.line.gobgp
    if layout != "modules" and gobgp.package is None:
        return None
    start = downloader.bytes_downloaded
    store = ModuleStore(cache, downloader, goproxy.proxy_urls(plan.settings.mirrors.go_proxy))
    sums = gomodules.parse_go_sum(_text(patched, "go.sum"), f"kube-router {plan.version} go.sum")
    files: dict[tuple[str, str, str], ModuleFile] = {}
    if layout == "modules":
        files.update(((f.path, f.version, f.kind), f) for f in store.get_all(sums.values()))
    module = None
    if gobgp.package is not None:
        requires = gomodules.go_mod_requires(_text(patched, "go.mod"))
        found = gomodules.command_module(gobgp.package, requires)
        if found is None:
            raise ConfigError(
                f"kube-router {plan.version}'s go.mod requires no module holding {gobgp.package}",
                "fix the release line's gobgp package",
            )
        path, version, _ = found
        if gobgp.version and gobgp.version != "go.mod":
            version = gobgp.version
        pinned = sums.get(f"{path}@{version}")
        if pinned is None or pinned.zip_h1 is None:
            raise ConfigError(
                f"gobgp {path}@{version} has no go.sum line in kube-router {plan.version}: it cannot be verified",
                'build the gobgp version kube-router requires (gobgp version = "go.mod")',
            )
        if path != gobgp.package.rpartition("/" + gobgp.command)[0]:
            log.info(f"gobgp: kube-router {plan.version} requires {path}@{version}; building its {gobgp.command}")
        zipped = store.get(path, version, "zip", pinned.zip_h1)
        files[(path, version, "zip")] = zipped
        own = gomodules.read_zip_file(zipped.blob, path, version, "go.sum")
        if own is None:
            raise VerificationError(f"{path}@{version} has no go.sum", "its dependencies cannot be verified")
        own_sums = gomodules.parse_go_sum(own.decode("utf-8", "replace"), f"{path}@{version} go.sum")
        files.update(((f.path, f.version, f.kind), f) for f in store.get_all(own_sums.values()))
        module = GobgpModule(path, version, zipped.blob)
    ordered = tuple(files[key] for key in sorted(files))
    return GoModules(ordered, module, downloader.bytes_downloaded - start)
