"""The stages in order: fetch -> patch -> render -> build -> push candidate -> smoke -> promote.

A stage runs its predecessors as needed (from the cache, so that is cheap), records what
it produced in the report, and hands a small record to the next. Release tags are pushed
only after the smoke test passed on the very digest the registry holds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import bases, context, fetch, log, patch, records, render, safefs, smokestage
from .cache import Cache, remove_tree
from .download import Downloader
from .engine import Engine
from .errors import ConfigError, DockerError, RegistryError
from .fetch import Fetched, GoModules, KubeRouterTree
from .patch import PatchedTree
from .plan import Plan
from .render import BaseImages, Rendered
from .report import Report


@dataclass(frozen=True)
class Built:
    image_id: str
    size: int
    reference: str  # local candidate reference
    context_bytes: int
    context_files: int


@dataclass(frozen=True)
class Pushed:
    repository: str
    tag: str
    digest: str

    @property
    def by_digest(self) -> str:
        return f"{self.repository}@{self.digest}"


class Pipeline:
    def __init__(self, plan: Plan, report: Report | None = None) -> None:
        self.plan = plan
        self.report = report or Report()
        self.cache = Cache(plan.settings.cache_dir)
        self.downloader = Downloader(self.cache, offline=plan.settings.offline)
        self._engine: Engine | None = None
        self._fetched: Fetched | None = None
        self._tree: KubeRouterTree | None = None
        self._patched: PatchedTree | None = None
        self._modules: tuple[GoModules | None] | None = None  # a 1-tuple once resolved
        self._bases: BaseImages | None = None
        self._rendered: Rendered | None = None
        self._built: Built | None = None
        self.report.set("plan", records.plan_record(self.plan))

    # -- helpers ----------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.plan.settings.docker_host)
        return self._engine

    # -- stages -----------------------------------------------------------------------
    def fetch(self) -> Fetched:
        if self._fetched is None:
            start = time.monotonic()
            with log.step("fetch", f"kube-router {self.plan.version}, ipvsadm {self.plan.ipvsadm_version}"):
                tree = self._tree or fetch.kube_router(self.plan, self.cache, self.downloader)
                fetched = Fetched(
                    tree,
                    fetch.ipvsadm(self.plan, self.downloader),
                    fetch.go_toolchain(self.plan, self.downloader),
                )
            self.report.add(
                "fetch",
                records.fetch_record(self.plan, fetched, self.downloader.bytes_downloaded),
                time.monotonic() - start,
            )
            self._fetched = fetched
        return self._fetched

    def kube_router_tree(self) -> KubeRouterTree:
        """Only the kube-router source (what patch needs), from the cache when possible."""
        if self._fetched is not None:
            return self._fetched.kube_router
        if self._tree is None:
            with log.step("fetch", f"kube-router {self.plan.version}"):
                self._tree = fetch.kube_router(self.plan, self.cache, self.downloader)
        return self._tree

    def patch(self) -> PatchedTree:
        if self._patched is None:
            tree = self.kube_router_tree()
            series = self.plan.series
            start = time.monotonic()
            what = "native SCTP, nothing to apply" if series.native else f"series {series.name} rev {series.revision}"
            with log.step("patch", what):
                patched = patch.run(tree.path, series)
                for item in patched.applied:
                    log.info(f"applied {item.name}: {item.description}")
            self.report.add("patch", records.patch_record(self.plan, patched), time.monotonic() - start)
            self._patched = patched
        return self._patched

    def go_modules(self) -> GoModules | None:
        """The Go modules of the patched tree (and gobgp's), verified and cached on the host:
        the Go stages build from them with the network off. None for GOPATH lines."""
        if self._modules is None:
            patched = self.patch()
            start = time.monotonic()
            with log.step("modules", f"Go modules of kube-router {self.plan.version} and gobgp"):
                modules = fetch.go_modules(self.plan, patched, self.cache, self.downloader)
                if modules is None:
                    log.info("none: this release line vendors its dependencies")
                else:
                    fresh = [f for f in modules.files if f.downloaded]
                    gobgp = f"{modules.gobgp.module}@{modules.gobgp.version}" if modules.gobgp else "from the tree"
                    log.info(
                        f"{len(modules.files)} module files, {sum(f.size for f in modules.files) / 1048576:.1f} MiB, "
                        f"verified against go.sum: {len(fresh)} downloaded ({modules.bytes_downloaded} bytes), the "
                        f"rest from the cache; gobgp {gobgp}"
                    )
            if modules is not None:
                self.report.add("go_modules", modules.record(), time.monotonic() - start)
            self._modules = (modules,)
        return self._modules[0]

    def bases(self, resolve: bool = True) -> BaseImages:
        if self._bases is None:
            if resolve:
                with log.step("bases", "builder and runtime base images"):
                    self._bases = bases.resolve(self.plan, self.engine)
            else:
                self._bases = render.configured_bases(self.plan)
        return self._bases

    def render(self, resolve_bases: bool = True) -> Rendered:
        if self._rendered is None:
            with log.step("render", "images/Dockerfile.j2"):
                rendered = render.render(self.plan, self.bases(resolve_bases), gobgp_module=self._gobgp_module())
            self.report.add("render", records.render_record(rendered))
            self._rendered = rendered
        return self._rendered

    def _gobgp_module(self) -> str | None:
        modules = self._modules[0] if self._modules else None
        return f"{modules.gobgp.module}@{modules.gobgp.version}" if modules and modules.gobgp else None

    def _prepare(
        self, prepare_ctx: Path, rendered: Rendered, platform: str | None, on_output: Callable[[str], None]
    ) -> list[str]:
        """Build the package stages (the only ones that may reach the network; with --offline
        none may, so they must come from Docker's layer cache); return the tags of the
        stage images, which the caller removes. --no-cache (online) builds each afresh."""
        settings = self.plan.settings
        stages = rendered.prepare_stages
        fresh = settings.no_cache and not settings.offline
        token = uuid.uuid4().hex[:12]
        tags: list[str] = []
        for index, stage in enumerate(stages):
            if not settings.no_cache and stage != stages[-1]:
                continue  # one build up to the last package stage builds them all
            stage_tag = f"kube-router-sctp/prepared:{stage}-{token}"
            try:
                self.engine.build(
                    prepare_ctx,
                    stage_tag,
                    platform=platform,
                    target=stage,
                    network_mode="none" if settings.offline else None,
                    nocache=fresh and index == 0,
                    cache_from=list(tags) if fresh and tags else None,
                    on_output=on_output,
                )
            except DockerError as exc:
                for made in tags:
                    self.engine.untag(made)
                if settings.offline:
                    raise DockerError(
                        f"--offline: the package stage {stage} is not in Docker's layer cache, and installing "
                        f"its packages needs the Debian mirror ({exc.message})",
                        "run `python build.py fetch` (or build) for this release once with network: the daemon "
                        "keeps those layers",
                    ) from exc
                raise
            tags.append(stage_tag)
        return tags

    def _hermetic_build(
        self,
        ctx: Path,
        prepare_ctx: Path,
        tag: str,
        rendered: Rendered,
        *,
        platform: str | None = None,
        target: str | None = None,
        on_output: Callable[[str], None] = log.stream,
    ) -> str:
        """Build with the network only where packages are installed, and prove the rest
        needs none: the package stages first (``_prepare``), then the whole file with
        ``network_mode=none``: the Go and ipvsadm stages see no network at all.

        --no-cache keeps its meaning (nothing from earlier builds): the full build may take
        only the just-built package stages' layers from the cache (``cache_from``); offline,
        those are the package layers of earlier builds, and everything after them is new."""
        tags = self._prepare(prepare_ctx, rendered, platform, on_output)
        try:
            return self.engine.build(
                ctx,
                tag,
                platform=platform,
                target=target,
                network_mode="none",
                cache_from=list(tags) if self.plan.settings.no_cache else None,
                on_output=on_output,
            )
        finally:
            for stage_tag in tags:
                self.engine.untag(stage_tag)

    def prepare_packages(self) -> tuple[str, ...]:
        """Put the package stages into Docker's layer cache (the network part of a build),
        so that a later --offline build needs no network at all."""
        fetched = self.fetch()
        rendered = self.render()
        scratch = self.cache.scratch("packages-")
        try:
            toolchain = fetched.go_toolchain.path if fetched.go_toolchain else None
            prepare = context.write(scratch / "packages.tar", self.plan, rendered, go_toolchain=toolchain)
            with log.step("packages", ", ".join(rendered.prepare_stages)):
                for stage_tag in self._prepare(prepare.path, rendered, None, lambda _text: None):
                    self.engine.untag(stage_tag)
        finally:
            remove_tree(scratch)
        return rendered.prepare_stages

    def build(self, save_context: Path | None = None) -> Built:
        """Build the single-platform image; ``save_context`` keeps a copy of the exact
        context sent to the daemon (to rebuild it elsewhere, or compare with docker build)."""
        if self._built is None:
            fetched = self.fetch()
            patched = self.patch()
            modules = self.go_modules()
            rendered = self.render()
            candidate = f"{self.plan.image_repository}:{self.plan.tag}-candidate"
            start = time.monotonic()
            with log.step("build", candidate):
                scratch = self.cache.scratch("context-")
                try:
                    toolchain = fetched.go_toolchain.path if fetched.go_toolchain else None
                    ctx = context.write(
                        scratch / "context.tar",
                        self.plan,
                        rendered,
                        patched=patched,
                        ipvsadm=fetched.ipvsadm.path,
                        go_toolchain=toolchain,
                        modules=modules,
                    )
                    log.info(f"build context: {ctx.files} files, {ctx.size / 1048576:.1f} MiB")
                    if save_context is not None:
                        safefs.write_output(save_context, ctx.path, "the build context")
                    prepare = context.write(scratch / "packages.tar", self.plan, rendered, go_toolchain=toolchain)
                    image_id = self._hermetic_build(ctx.path, prepare.path, candidate, rendered)
                finally:
                    remove_tree(scratch)
                image = self.engine.image(image_id) or {}
            built = Built(image_id, int(image.get("Size", 0)), candidate, ctx.size, ctx.files)
            log.info(f"image {image_id[:19]}, {built.size / 1048576:.1f} MiB")
            self.report.add(
                "build",
                records.build_record(
                    image_id=image_id,
                    size=built.size,
                    candidate=candidate,
                    context_bytes=ctx.size,
                    context_sha256=ctx.sha256,
                    rendered=rendered,
                ),
                time.monotonic() - start,
            )
            self._built = built
        return self._built

    def push_candidate(self) -> Pushed:
        built = self.build()
        repository, _, tag = built.reference.rpartition(":")
        start = time.monotonic()
        with log.step("push", f"candidate {built.reference}"):
            digest = self.engine.push(repository, tag)
            log.info(f"registry holds {repository}@{digest}")
        pushed = Pushed(repository, tag, digest)
        self.report.add("push_candidate", {"reference": built.reference, "digest": digest}, time.monotonic() - start)
        return pushed

    def _smoke_stage(self, smoke_engine: Engine | None) -> smokestage.SmokeStage:
        return smokestage.SmokeStage(
            self.plan.settings, self.engine, self.cache, self.downloader, smoke_engine, self.report
        )

    def _expected(self) -> smokestage.Expected:
        return smokestage.Expected(self.plan.tag, self.plan.ipvsadm_version)

    def smoke(self, pushed: Pushed | None, smoke_engine: Engine | None = None) -> dict[str, Any]:
        """Smoke the candidate (by digest when pushed) where smokestage decides."""
        settings = self.plan.settings
        image = pushed.by_digest if pushed else self.build().image_id
        host_image = image
        if pushed and settings.smoke_registry and settings.push:
            # The same digest, reached through the address the smoke host knows.
            host_image = settings.smoke_registry + image.removeprefix(settings.push[0])
        start = time.monotonic()
        record = self._smoke_stage(smoke_engine).image(
            image, self._expected(), pushed=pushed is not None, host_image=host_image
        )
        self.report.add("smoke", record, time.monotonic() - start)
        return record

    def promote(self, pushed: Pushed | None) -> dict[str, str]:
        """Put the release tags on the smoked image (locally, and in the registry)."""
        built = self.build()
        tags: dict[str, str] = {}
        with log.step("promote", ", ".join(self.plan.release_tags)):
            for tag in self.plan.release_tags:
                self.engine.tag(built.image_id, self.plan.image_repository, tag)
                reference = f"{self.plan.image_repository}:{tag}"
                if pushed is None:
                    tags[reference] = built.image_id
                    log.info(f"tagged {reference}")
                    continue
                digest = self.engine.push(self.plan.image_repository, tag)
                if digest != pushed.digest:
                    raise RegistryError(
                        f"{reference} was pushed as {digest}, but the smoked candidate is {pushed.digest}",
                        "another push raced this one; run again",
                    )
                tags[reference] = digest
                log.info(f"released {reference} -> {digest}")
        self.report.add("promote", {"tags": tags})
        return tags

    # -- several platforms ---------------------------------------------------------------
    def build_platforms(self) -> dict[str, Built]:
        """One image per platform: Go cross-compiles once on the build platform, then each
        platform's ipvsadm and runtime stages run on that platform (binfmt emulation)."""
        platforms = self.plan.settings.platforms
        fetched = self.fetch()
        patched = self.patch()
        modules = self.go_modules()
        rendered = render.render(self.plan, self.bases(), targets=platforms, gobgp_module=self._gobgp_module())
        toolchain = fetched.go_toolchain.path if fetched.go_toolchain else None
        binaries_image = f"kube-router-sctp/binaries:{self.plan.tag}"
        built: dict[str, Built] = {}
        scratch = self.cache.scratch("platforms-")
        try:
            with log.step("build", f"kube-router and gobgp for {', '.join(platforms)}"):
                ctx = context.write(
                    scratch / "go.tar", self.plan, rendered, patched=patched, go_toolchain=toolchain, modules=modules
                )
                prepare = context.write(scratch / "packages.tar", self.plan, rendered, go_toolchain=toolchain)
                self._hermetic_build(ctx.path, prepare.path, binaries_image, rendered, target="kube-router-builder")
                self.engine.extract(binaries_image, "/out", scratch)
            for platform in platforms:
                arch = platform.split("/")[1]
                candidate = f"{self.plan.image_repository}:{self.plan.tag}-candidate-{arch}"
                start = time.monotonic()
                with log.step("build", f"{candidate} ({platform})"):
                    with log.step("bases", platform):
                        platform_bases = bases.resolve(self.plan, self.engine, platform)
                    per_platform = render.render(self.plan, platform_bases, platform=platform, binaries_in_context=True)
                    ctx = context.write(
                        scratch / f"{arch}.tar",
                        self.plan,
                        per_platform,
                        ipvsadm=fetched.ipvsadm.path,
                        binaries=scratch / "out" / f"linux_{arch}",
                    )
                    prepare = context.write(scratch / f"{arch}-packages.tar", self.plan, per_platform)
                    image_id = self._hermetic_build(ctx.path, prepare.path, candidate, per_platform, platform=platform)
                size = int((self.engine.image(image_id) or {}).get("Size", 0))
                built[platform] = Built(image_id, size, candidate, ctx.size, ctx.files)
                self.report.add(
                    f"build_{arch}",
                    {"platform": platform, "image_id": image_id, "size": size, "candidate": candidate},
                    time.monotonic() - start,
                )
        finally:
            remove_tree(scratch)
        return built

    def _release_platforms(self, smoke_enabled: bool, smoke_engine: Engine | None) -> dict[str, str]:
        built = self.build_platforms()
        repository = self.plan.image_repository
        entries: dict[str, str] = {}
        with log.step("push", f"candidates for {', '.join(built)}"):
            for platform, image in built.items():
                _, _, tag = image.reference.rpartition(":")
                digest = self.engine.push(repository, tag)
                entries[platform] = f"{repository}@{digest}"
                log.info(f"{platform}: {repository}@{digest}")
            candidate_list = self.engine.push_manifest_list(
                f"{repository}:{self.plan.tag}-candidate", list(entries.values())
            )
        self.report.add("push_candidate", {"manifest_list": candidate_list, "platforms": entries})
        if smoke_enabled:
            start = time.monotonic()
            record = self._smoke_stage(smoke_engine).platforms(entries, self._expected())
            self.report.add("smoke", record, time.monotonic() - start)
        else:
            log.loud("--no-smoke: no platform of this image was tested on an IPVS kernel")
            self.report.add("smoke", {"skipped": True})
        tags: dict[str, str] = {}
        with log.step("promote", ", ".join(self.plan.release_tags)):
            for tag in self.plan.release_tags:
                digest = self.engine.push_manifest_list(f"{repository}:{tag}", list(entries.values()))
                tags[f"{repository}:{tag}"] = digest
                log.info(f"released {repository}:{tag} -> {digest} ({', '.join(entries)})")
        self.report.add("promote", {"tags": tags, "platforms": entries})
        return tags

    def release(self, push: bool, smoke_enabled: bool, smoke_engine: Engine | None = None) -> dict[str, str]:
        """The whole job: build, push a candidate, smoke it, then the release tags."""
        if len(self.plan.settings.platforms) > 1 or self.plan.settings.platforms != ("linux/amd64",):
            if not push:
                raise ConfigError(
                    "images for other or several platforms need --push", "a manifest list lives in a registry"
                )
            return self._release_platforms(smoke_enabled, smoke_engine)
        pushed = self.push_candidate() if push else None
        if smoke_enabled:
            self.smoke(pushed, smoke_engine)
        else:
            log.loud(
                "--no-smoke: the image was NOT tested on an IPVS kernel; release tags go on an "
                "image nobody has seen create an SCTP IPVS service"
            )
            self.report.add("smoke", {"skipped": True})
        return self.promote(pushed)
