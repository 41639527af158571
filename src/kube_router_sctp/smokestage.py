"""smoke stage: where an image is smoke-tested, and on which kernels. The one place
that decides it, for the release pipeline and for ``smoke IMAGE`` alike.

- ``--kernel`` (once or several times): each kernel under QEMU with the image's root
  file system (``vm.kernelsmoke``), one row per kernel; every kernel must pass.
- ``--smoke-host``: a privileged container on that Docker host (``smoke.on_docker``).
- neither: the building daemon; if its kernel has no IPVS (or no IPVS SCTP), the image
  is smoked on the fallback kernel under QEMU instead (``--fallback-kernel``, loudly).
- several platforms: each platform's image on a kernel of its architecture (Debian's,
  under full-system emulation, unless a smoke host or a kernel was named).

A kernel that lacks an option SCTP through IPVS needs (read from its own config) is a
verdict on the kernel (KernelUnsupportedError, exit 14), distinct from an image that
fails its check (SmokeError, exit 8) and from a guest that could not run (VMError).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import log, smoke
from .cache import Cache
from .config import Settings
from .download import Downloader
from .engine import Engine
from .errors import ConfigError, KernelUnsupportedError, PipelineError, SmokeError, VMError
from .report import Report
from .smoke import SmokeResult

if TYPE_CHECKING:
    from .vm.kernel import KernelFiles


@dataclass(frozen=True)
class Expected:
    """What the image must say about itself (from the build plan or its labels)."""

    kube_router_version: str
    ipvsadm_version: str

    @property
    def known(self) -> bool:
        return bool(self.kube_router_version and self.ipvsadm_version)


@dataclass
class KernelRun:
    """One image on one kernel: the verdict and what it took."""

    spec: str
    kernel: dict[str, Any] = field(default_factory=dict)  # what was booted (KernelFiles.record)
    result: SmokeResult | None = None
    error: PipelineError | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.result is not None and self.error is None

    @property
    def verdict(self) -> str:
        if self.passed:
            return "pass"
        if isinstance(self.error, KernelUnsupportedError):
            return "kernel lacks: " + self.error.message.split(": ", 1)[-1]
        if isinstance(self.error, SmokeError):
            return f"image fails (class {self.error.smoke_class}): {self.error.message}"
        return f"could not run: {self.error.message if self.error else 'no result'}"

    def record(self) -> dict[str, Any]:
        details = self.result.record() if self.result else {}
        return {
            "spec": self.spec,
            "passed": self.passed,
            "verdict": self.verdict,
            "exit_code": 0 if self.passed else (self.error.exit_code if self.error else 1),
            "timings": {k: round(v, 1) for k, v in self.timings.items()},
            **{k: v for k, v in details.items() if k not in ("passed", "timings")},
            "kernel": details.get("kernel", self.kernel),
            "guest_timings": details.get("timings", {}),
        }


class SmokeStage:
    def __init__(
        self,
        settings: Settings,
        builder: Engine,
        cache: Cache,
        downloader: Downloader | None = None,
        smoke_engine: Engine | None = None,
        report: Report | None = None,
    ) -> None:
        self.settings = settings
        self.report = report  # a failing kernel matrix still lands in it, row by row
        self.builder = builder
        self.cache = cache
        self.downloader = downloader or Downloader(cache, offline=settings.offline)
        # A smoke host named by the caller (tests, the release job) or by --smoke-host.
        self.named_engine = smoke_engine or (Engine(settings.smoke_host) if settings.smoke_host else None)

    # -- one image ---------------------------------------------------------------------
    def image(
        self,
        image: str,
        expected: Expected,
        *,
        pushed: bool,
        platform: str | None = None,
        host_image: str | None = None,
    ) -> dict[str, Any]:
        """Smoke one image where the settings say; return the report's record. ``pushed``:
        ``image`` is a registry reference (pulled, so the registry's bytes are tested);
        ``host_image``: the same image as a smoke host reaches it (``--smoke-registry``)."""
        if self.settings.smoke_kernels:
            return self.on_kernels(image, self.settings.smoke_kernels, expected, pushed=pushed, platform=platform)
        engine = self.named_engine or self.builder
        try:
            on_host = host_image or image
            with log.step("smoke", f"{on_host} on {engine.describe()}"):
                result = self._on_docker(engine, on_host, expected, pull=pushed or engine is not self.builder)
            return result.record()
        except SmokeError as exc:
            fallback = self.settings.smoke_fallback_kernel
            if self.named_engine is not None or exc.smoke_class not in smoke.KERNEL_CLASSES or not fallback:
                raise
            # The daemon's kernel, not the image, failed: test the image on a kernel that can.
            log.loud(
                f"{engine.describe()} cannot run the smoke test ({exc.message}); smoking on "
                f"{'Debian' if fallback.startswith('debian') else fallback}'s kernel under QEMU instead "
                "(name the node with --smoke-host or --kernel; --fallback-kernel none fails here)"
            )
            record = self.on_kernels(image, (fallback,), expected, pushed=pushed, platform=platform, modules=False)
            return {**record, "fallback_from": f"{engine.describe()}: {exc.message}"}

    def _on_docker(self, engine: Engine, image: str, expected: Expected, *, pull: bool) -> SmokeResult:
        return smoke.on_docker(
            engine,
            image,
            pull=pull,
            kube_router_version=expected.kube_router_version,
            ipvsadm_version=expected.ipvsadm_version,
            versions=expected.known,
        )

    # -- kernels -----------------------------------------------------------------------
    def on_kernels(
        self,
        image: str,
        specs: tuple[str, ...],
        expected: Expected,
        *,
        pushed: bool,
        platform: str | None = None,
        modules: bool = True,
    ) -> dict[str, Any]:
        """Boot each kernel under QEMU with the image's file system; every one must pass.
        With several, every kernel runs before the verdict, and a table says how each did."""
        from .vm.qemu import arch_of_platform

        if pushed:
            self.builder.pull(image, platform=platform)  # kernel mode reads the builder's copy
        arch = arch_of_platform(platform or self._platform_of(image)).name
        runs = [self._one_kernel(image, spec, arch, expected, modules) for spec in dict.fromkeys(specs)]
        if len(runs) > 1:
            log.info("kernel matrix:\n" + table(runs))
        failed = [r for r in runs if not r.passed]
        if failed and self.report is not None:
            self.report.add("smoke", {"passed": False, "image": image, "kernels": [r.record() for r in runs]})
        if failed:
            if len(runs) == 1 and failed[0].error is not None:
                raise failed[0].error
            raise _summary_error(image, failed, len(runs))
        first = runs[0].record()
        if len(runs) > 1:
            first["kernels"] = [r.record() for r in runs]
        return first

    def _platform_of(self, image: str) -> str:
        details = self.builder.image(image) or {}
        return f"linux/{details.get('Architecture', 'amd64')}"

    def _one_kernel(self, image: str, spec: str, arch: str, expected: Expected, modules: bool) -> KernelRun:
        from .vm import kernelsmoke

        run = KernelRun(spec)
        start = time.monotonic()
        try:
            kernel = self._kernel(spec, arch, modules)
            run.timings["kernel"] = time.monotonic() - start
            run.kernel = {"spec": spec, "release": kernel.version, "arch": kernel.arch}
            mark = time.monotonic()
            run.result = kernelsmoke.run(
                self.builder,
                image,
                kernel,
                expected.kube_router_version,
                expected.ipvsadm_version,
                versions=expected.known,
                cache=self.cache,
            )
            run.timings["smoke"] = time.monotonic() - mark
        except (SmokeError, VMError, ConfigError) as exc:
            run.error = exc  # said once: in the table and the summary error (several kernels) or as is
        run.timings["total"] = time.monotonic() - start
        return run

    def _kernel(self, spec: str, arch: str, modules: bool) -> KernelFiles:
        from .vm.kernel import resolve as resolve_kernel

        kernel = resolve_kernel(
            spec,
            self.settings.smoke_modules if modules else None,
            self.cache,
            arch,
            mirror=self.settings.mirrors.debian,
            downloader=self.downloader,
        )
        if kernel.arch != arch:
            raise ConfigError(
                f"--kernel {spec} is a {kernel.arch} kernel; the image is for {arch}",
                "pass --kernel debian (Debian's kernel for each platform) or a kernel of that architecture",
            )
        return kernel

    # -- several platforms -------------------------------------------------------------
    def platforms(self, entries: dict[str, str], expected: Expected) -> dict[str, Any]:
        """Smoke each platform's candidate (``platform -> repository@digest``) where a
        kernel of its architecture can run it: every platform on the named kernels;
        otherwise amd64 on the smoke host (or the building daemon, with its fallback) and
        the other platforms on Debian's kernel of their architecture unless a smoke host
        was named or the fallback kernel is off. A platform left out is said loudly."""
        from .vm.kernel import resolve as resolve_kernel
        from .vm.qemu import ARCHES

        settings = self.settings
        records: dict[str, Any] = {}
        kernels = settings.smoke_kernels
        # Given kernels (not Debian specs) have one architecture each: other platforms wait.
        fixed = {
            resolve_kernel(k, settings.smoke_modules, self.cache, mirror=settings.mirrors.debian).arch
            for k in kernels
            if not k.startswith("debian")
        }
        for platform, reference in entries.items():
            arch = next((a.name for a in ARCHES.values() if a.platform == platform), None)
            if kernels and arch and (not fixed or arch in fixed):
                with log.step("smoke", f"{platform}: {reference}"):
                    specs = tuple(k for k in kernels if k.startswith("debian") or arch in fixed)
                    records[platform] = self.on_kernels(reference, specs, expected, pushed=True, platform=platform)
            elif not kernels and platform == "linux/amd64":
                records[platform] = self.image(reference, expected, pushed=True, platform=platform)
            elif arch and self.named_engine is None and (settings.smoke_fallback_kernel or "").startswith("debian"):
                # No Docker host runs a foreign image's ipvsadm (qemu-user has no generic
                # netlink): a kernel of its architecture under full-system emulation does.
                missing = self._emulation_missing(arch)
                if missing:
                    log.loud(f"{platform} is not smoked: {missing}")
                    continue
                fallback = settings.smoke_fallback_kernel or "debian"
                with log.step("smoke", f"{platform}: {reference} on Debian's {arch} kernel"):
                    records[platform] = self.on_kernels(
                        reference, (fallback,), expected, pushed=True, platform=platform, modules=False
                    )
            else:
                log.loud(
                    f"{platform} is not smoked: no kernel of its architecture "
                    "(pass --kernel debian to boot Debian's under emulation)"
                )
        if not records:
            raise ConfigError(
                "no platform of this image could be smoke-tested",
                "pass --kernel debian, or include linux/amd64, or --no-smoke to release untested",
            )
        return {"passed": True, "platforms": records}

    def _emulation_missing(self, arch: str) -> str | None:
        """Why Debian's kernel for ``arch`` cannot be booted here (no QEMU for it, no
        mirror that has it), or None. Asked only where nobody named a smoke target."""
        from .vm.kernel import resolve as resolve_kernel
        from .vm.qemu import ARCHES

        spec = ARCHES[arch]
        if shutil.which(spec.binary) is None:
            return f"{spec.binary} is not installed (apt-get install {spec.package}, or pass --kernel)"
        try:
            resolve_kernel(
                self.settings.smoke_fallback_kernel or "debian",
                None,
                self.cache,
                arch,
                mirror=self.settings.mirrors.debian,
                downloader=self.downloader,
            )
        except PipelineError as exc:
            return exc.one_line()
        return None


# -- `smoke IMAGE` -------------------------------------------------------------------------
def check_image(settings: Settings, image: str, report: Report | None = None) -> dict[str, Any]:
    """``smoke IMAGE``: what the image says it is (its labels), then the stage's policy."""
    builder = Engine(settings.docker_host)
    platform = settings.platforms[0]
    if settings.smoke_kernels and builder.image(image) is None:
        # Kernel mode reads the image's file system from the building daemon.
        with log.step("pull", f"{image} ({platform})"):
            builder.pull(image, platform=platform)
    details = builder.image(image) or {}
    labels = details.get("Config", {}).get("Labels") or {}
    expected = Expected(
        labels.get("org.opencontainers.image.version", ""), labels.get("io.github.kube-router-sctp.ipvsadm.version", "")
    )
    stage = SmokeStage(settings, builder, Cache(settings.cache_dir), report=report)
    if not expected.kube_router_version and stage.named_engine is None:
        raise ConfigError(
            f"{image} is not on {builder.describe()} or carries no kube-router-sctp labels",
            "build it first, or pass a pushed reference",
        )
    if settings.smoke_kernels:
        return stage.on_kernels(image, settings.smoke_kernels, expected, pushed=False, platform=_arch_platform(details))
    return stage.image(image, expected, pushed=builder.image(image) is None)


def _arch_platform(details: dict[str, Any]) -> str:
    return f"linux/{details.get('Architecture', 'amd64')}"


def summary(image: str, record: dict[str, Any]) -> str:
    """What ``smoke`` prints on success: one line, and the table for several kernels."""
    rows = record.get("kernels")
    if rows:
        specs = ", ".join(r["spec"] for r in rows)
        return f"{record_table(rows)}\nsmoke passed: {image} on {len(rows)} kernels ({specs})"
    return f"smoke passed: {image} on {record.get('host')} in {float(record.get('seconds', 0)):.1f}s"


# -- the table -----------------------------------------------------------------------------
def table(runs: list[KernelRun]) -> str:
    return record_table([run.record() for run in runs])


def record_table(rows: list[dict[str, Any]]) -> str:
    """One row per kernel (from KernelRun records): what was booted, the verdict, the times."""
    lines = [
        "| kernel | release | verdict | kernel ready | boot + check | total |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        timings, guest = row.get("timings", {}), row.get("guest_timings", {})
        seconds = [timings.get("kernel", 0), guest.get("boot_and_check", 0), timings.get("total", 0)]
        cells = [
            row["spec"],
            row.get("kernel", {}).get("release", "?"),
            row["verdict"],
            *(f"{v:.1f} s" for v in seconds),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _summary_error(image: str, failed: list[KernelRun], total: int) -> PipelineError:
    """Several kernels, some failed: the image's own failure outranks a guest that could
    not run, which outranks a kernel that lacks an option."""
    message = f"smoke test of {image} failed on {len(failed)} of {total} kernels: " + "; ".join(
        f"{r.spec}: {r.verdict}" for r in failed
    )
    errors = [r.error for r in failed if r.error is not None]
    for error in errors:
        if isinstance(error, SmokeError) and not isinstance(error, KernelUnsupportedError):
            return SmokeError(message, error.hint, error.smoke_class)
    for error in errors:
        if not isinstance(error, SmokeError):
            return type(error)(message, error.hint)
    return KernelUnsupportedError(message, "use kernels built with the options named", smoke.KERNEL_LACKS)
