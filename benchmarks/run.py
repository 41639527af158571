#!/usr/bin/env python3
"""Benchmarks: what the pipeline costs as its users feel it, beside plain `docker build`.

Writes results/benchmarks.md and results/benchmarks.json: the machine, then each figure as
the median of several runs with min and max. Not a test: figures vary with the machine;
the goals are compared and misses are stated, nothing fails.

\b
    .venv/bin/python benchmarks/run.py [--runs 3] [--cold-runs 4] [--skip-cold] [--skip-vm] [--matrix]
    .venv/bin/python benchmarks/run.py --pairs-only      # only the Go-module release pairs
    .venv/bin/python benchmarks/run.py --kernels-only [--kernel SPEC ...]
    .venv/bin/python benchmarks/run.py --controlplane-only   # the dataplane proof's control plane

Inputs come from the user's configuration like every other run (the kube-router source,
mirrors); the build is the debian family of patched kube-router v0.3.2 with ipvsadm 1.31.
The release pairs (v2.2.0 then v2.2.1, v2.6.0 then v2.6.1) start from an empty cache each:
the first build is cold (no download cache, no layer cache), the second shares both.
"""

from __future__ import annotations

import functools
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import jinja2

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))

from kube_router_sctp import config, patch, plan  # noqa: E402
from kube_router_sctp.engine import Engine  # noqa: E402
from kube_router_sctp.errors import PipelineError  # noqa: E402

BUILD = ["--kube-router-version", "v0.3.2", "--base-family", "debian", "--ipvsadm-version", "1.31"]
GOALS = {
    "cold_overhead": "pipeline at most 5% slower than plain docker build (cold)",
    "warm_overhead": "at most 1.5 s more than a cached plain docker build",
    "warm_bytes": "0 bytes downloaded when warm",
    "size_ratio": "runtime image at most 40% of the single-stage image",
    "smoke": "smoke under 60 s including VM boot",
    "new_kernel": "a new kernel's verdict (downloads cached) in at most 20 s",
    "pair_ratio": "the second release of a pair builds in at most half the time of the first",
    "pair_bytes": "the second release downloads at most the modules that differ",
}
# Kernels for the new-kernel case: one per layout Debian ships (classic 6.12, split 7.x).
NEW_KERNELS = ("debian:trixie", "debian:sid")


@functools.cache
def release() -> str:
    """The tag the pipeline gives BUILD today (its series' revision, the debian family's
    suffix, both from the configuration); read when a figure needs the image, so that
    the other figures run whatever the index says."""
    suffix = config.load().pins.families["debian"].tag_suffix
    (tag,) = plan.release_tags("v0.3.2", patch.select(patch.load_index(), "v0.3.2").revision, suffix)
    return tag


def image() -> str:
    return f"kube-router:{release()}-candidate"


PAIRS = (("v2.2.0", "v2.2.1"), ("v2.6.0", "v2.6.1"))


def cli(*args: str, timeout: int = 7200) -> subprocess.CompletedProcess[str]:
    source = config.load().kube_router_source
    extra = (
        ["--kube-router-source", source] if source and args and args[0] in ("build", "fetch", "check-patches") else []
    )
    return subprocess.run(
        [sys.executable, str(PROJECT / "build.py"), *args, *extra], capture_output=True, text=True, timeout=timeout
    )


def timed(func: Any) -> float:
    start = time.monotonic()
    func()
    return time.monotonic() - start


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def docker_build(context: Path, tag: str, nocache: bool) -> None:
    """A plain `docker build` of a context tar, with the classic builder the pipeline uses."""
    docker = shutil.which("docker") or "docker"
    args = [docker, "build", "-q", "-t", tag, *(["--no-cache"] if nocache else []), "-"]
    with context.open("rb") as handle:
        result = subprocess.run(args, stdin=handle, capture_output=True, env=dict(os.environ, DOCKER_BUILDKIT="0"))
    if result.returncode != 0:
        raise SystemExit(f"docker build failed: {result.stderr.decode()[-500:]}")


def pipeline_build(report: Path, nocache: bool, save: Path | None = None) -> dict[str, Any]:
    args = ["build", *BUILD, "--report", str(report), "-q"]
    if nocache:
        args.append("--no-cache")
    if save is not None:
        args += ["--save-context", str(save)]
    result = cli(*args)
    if result.returncode != 0:
        raise SystemExit(f"pipeline build failed: {result.stderr[-1500:]}")
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def release_build(version: str, cache: Path, report: Path, nocache: bool) -> dict[str, Any]:
    args = ["build", "--kube-router-version", version, *BUILD[2:], "--cache-dir", str(cache), "--report", str(report)]
    result = cli(*args, "-q", *(["--no-cache"] if nocache else []))
    if result.returncode != 0:
        raise SystemExit(f"pipeline build of {version} failed: {result.stderr[-1500:]}")
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def downloaded(report: dict[str, Any]) -> int:
    stages = report["stages"]
    return int(stages["fetch"]["bytes_downloaded"]) + int(stages.get("go_modules", {}).get("bytes_downloaded", 0))


def release_pair(first: str, second: str, work: Path) -> dict[str, Any]:
    """Cold build of ``first`` from an empty cache (and --no-cache), then ``second`` with the
    same cache and the layer cache as the first left it: what a user building the next
    patch release sees."""
    cache = work / f"cache-{first}"
    existing = Engine().image_ids()
    try:
        one: dict[str, Any] = {}
        two: dict[str, Any] = {}
        first_s = timed(lambda: one.update(release_build(first, cache, work / f"{first}.json", nocache=True)))
        second_s = timed(lambda: two.update(release_build(second, cache, work / f"{second}.json", nocache=False)))
    finally:
        Engine().remove_unused(Engine().image_ids(dangling=True) - existing)
        shutil.rmtree(cache, ignore_errors=True)

    def files(report: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
        return {(m["module"], m["version"], m["file"]): m for m in report["stages"]["go_modules"]["modules"]}

    first_files, second_files = files(one), files(two)
    differ = set(second_files) - set(first_files)
    fetched_again = {key for key, m in second_files.items() if m["downloaded"]}
    return {
        "first": first,
        "second": second,
        "first_s": first_s,
        "second_s": second_s,
        "ratio": second_s / first_s,
        "first_bytes_downloaded": downloaded(one),
        "second_bytes_downloaded": downloaded(two),
        "first_module_files": len(first_files),
        "first_module_bytes": sum(int(m["size"]) for m in first_files.values()),
        "second_module_files": len(second_files),
        "module_files_that_differ": len(differ),
        "second_module_files_downloaded": len(fetched_again),
        "second_downloads_only_what_differs": fetched_again <= differ,
        "first_durations": one["durations"],
        "second_durations": two["durations"],
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next(
        line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    docker = Engine().version()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 1048576, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "docker": docker.get("Version"),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def single_stage_size(context: Path, work: Path) -> int:
    """Build the 2019-style single-stage image from the pipeline's own context."""
    base = "kube-router-sctp/bootstrap-debian:bookworm"
    with tarfile.open(context) as tar:
        names = tar.getnames()
    ipvsadm_file = next(n.split("/", 1)[1] for n in names if n.startswith("ipvsadm/"))
    text = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False).from_string(  # noqa: S701
        (PROJECT / "benchmarks" / "single-stage.Dockerfile.j2").read_text()
    ).render(base=base, go_package="golang-1.19-go", go_version="1.19", ipvsadm_file=ipvsadm_file,
             ipvsadm_version=ipvsadm_file.split("-")[1].removesuffix(".tar.gz").removesuffix(".tar.xz"))  # fmt: skip
    single = work / "single.tar"
    with tarfile.open(context) as src, tarfile.open(single, "w") as dst:
        for member in src.getmembers():
            if member.name == "Dockerfile":
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text.encode())
        dst.addfile(info, io.BytesIO(text.encode()))
    docker_build(single, "kube-router-sctp/bench-single-stage:v0.3.2", nocache=False)
    inspected = Engine().image("kube-router-sctp/bench-single-stage:v0.3.2") or {}
    return int(inspected.get("Size", 0))


def vm_figures(runs: int) -> dict[str, Any]:
    from kube_router_sctp import smoke
    from kube_router_sctp.cache import Cache
    from kube_router_sctp.vm import dockerhost

    cache = Cache(config.load().cache_dir)
    pushed = f"127.0.0.1:5000/bench/{image()}"
    engine = Engine()
    engine.tag(image(), pushed.rsplit(":", 1)[0], pushed.rsplit(":", 1)[1])
    engine.push(*pushed.rsplit(":", 1))
    boots, pulls, smokes, kernel_smokes = [], [], [], []
    for _ in range(runs):
        with dockerhost.docker_host(cache=cache) as host:
            boots.append(host.boot_seconds)
            guest_ref = host.guest_registry("127.0.0.1:5000") + pushed.removeprefix("127.0.0.1:5000")
            pulls.append(host.timed_pull(guest_ref))
            result = smoke.on_docker(host.engine, guest_ref, pull=False, kube_router_version=release(),
                                     ipvsadm_version="1.31")  # fmt: skip
            smokes.append(result.seconds)
        kernel_smokes.append(timed(lambda: _check(cli("smoke", "--kernel", "debian", *BUILD[4:6],
                                                     image()))))  # fmt: skip
    return {
        "vm_boot_s": stats(boots),
        "vm_pull_s": stats(pulls),
        "vm_smoke_s": stats(smokes),
        "vm_total_s": stats([b + p + s for b, p, s in zip(boots, pulls, smokes, strict=True)]),
        "kernel_smoke_total_s": stats(kernel_smokes),
    }


def kernel_figures(specs: list[str], runs: int) -> dict[str, Any]:
    """A new kernel's verdict: its packages are in the download cache, nothing else the
    tool derives from them is (unpacked tree, module plan, the initramfs's kernel part);
    the image's part is cached, as it is for any image smoked before. Then the same
    verdict again, everything warm."""
    from kube_router_sctp.cache import Cache, remove_tree
    from kube_router_sctp.vm import kernel

    cache = Cache(config.load().cache_dir)
    _check(cli("smoke", "--kernel", "debian", image()))  # the image's initramfs part, cached
    figures: dict[str, Any] = {}
    for spec in specs:
        new, again = [], []
        for _ in range(runs):
            found = kernel.resolve(spec, None, cache)  # downloads cached, verified
            unpacked = cache.root / "kernels" / found.vmlinuz.relative_to(cache.root / "kernels").parts[0]
            remove_tree(unpacked)
            for part in (cache.root / "initramfs").glob("kernel-*.cpio"):
                part.unlink()
            new.append(timed(lambda spec=spec: _check(cli("smoke", "--kernel", spec, image()))))
            again.append(timed(lambda spec=spec: _check(cli("smoke", "--kernel", spec, image()))))
        figures[spec] = {"release": found.version, "new_s": stats(new), "again_s": stats(again)}
    return figures


def controlplane_figures(runs: int) -> dict[str, Any]:
    """The dataplane proof's control plane as a fresh machine meets it: built from nothing
    (an empty cache and module volume: toolchain, modules, compile), then found in the
    cache; and one start and stop of etcd, kube-apiserver and kube-controller-manager."""
    from kube_router_sctp.controlplane import build as cpbuild
    from kube_router_sctp.controlplane.cluster import ControlPlane

    cache_dir = Path(tempfile.mkdtemp(prefix="krs-bench-cache-"))
    volume = f"krs-bench-gomod-{os.getpid()}"
    settings = config.load({"paths.cache-dir": str(cache_dir)})
    try:
        cold = timed(lambda: cpbuild.binaries(settings, module_volume=volume))
        warm = [timed(lambda: cpbuild.binaries(settings, module_volume=volume)) for _ in range(runs)]
        built = cpbuild.binaries(settings, module_volume=volume)
        starts, stops = [], []
        for n in range(runs):
            plane = ControlPlane(built, cache_dir / f"plane{n}", "10.0.2.2")
            starts.append(timed(plane.__enter__))
            stops.append(timed(lambda plane=plane: plane.__exit__(None, None, None)))
        return {
            "controlplane_version": built.version,
            "controlplane_cold_s": cold,
            "controlplane_warm_s": stats(warm),
            "controlplane_binary_bytes": {c: p.stat().st_size for c, p in built.paths.items()},
            "controlplane_start_s": stats(starts),
            "controlplane_stop_s": stats(stops),
        }
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
        Engine().remove_volume(volume)


def _check(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        raise SystemExit(result.stderr[-1500:])


@click.command(help=__doc__)
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True, help="Warm runs per figure.")
@click.option("--cold-runs", type=click.IntRange(1), default=4, show_default=True, help="Clean (no-cache) builds.")
@click.option("--skip-cold", is_flag=True, help="No clean builds.")
@click.option("--skip-vm", is_flag=True, help="No QEMU figures (boot, smoke, verify, new kernels).")
@click.option("--matrix", is_flag=True, help="Also time check-patches --all (about an hour).")
@click.option("--kernels-only", is_flag=True, help="Only the new-kernel verdict.")
@click.option(
    "--kernel",
    "kernels",
    multiple=True,
    metavar="SPEC",
    help=f"A kernel for --kernels-only (repeat; default: {' '.join(NEW_KERNELS)}).",
)
@click.option("--skip-pairs", is_flag=True, help="Skip the Go-module release pairs.")
@click.option("--pairs-only", is_flag=True, help="Only the Go-module release pairs.")
@click.option(
    "--controlplane-only",
    is_flag=True,
    help="Only the dataplane proof's control plane: cold build from nothing, cached, start and stop.",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=PROJECT / "results",
    show_default=True,
    help="Where the JSON and Markdown results go.",
)
def main(
    runs: int,
    cold_runs: int,
    skip_cold: bool,
    skip_vm: bool,
    matrix: bool,
    kernels_only: bool,
    kernels: tuple[str, ...],
    skip_pairs: bool,
    pairs_only: bool,
    controlplane_only: bool,
    output: Path,
) -> None:
    if kernels and not kernels_only:
        raise click.UsageError("--kernel chooses the kernels of --kernels-only; add --kernels-only")
    output.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(), "figures": {}}
    figures = results["figures"]
    if kernels_only:
        figures["new_kernel"] = kernel_figures(list(kernels or NEW_KERNELS), runs)
        (output / "benchmarks-kernels.json").write_text(json.dumps(results, indent=2) + "\n")
        (output / "benchmarks-kernels.md").write_text(markdown(results))
        print(markdown(results))
        return
    if controlplane_only:
        figures.update(controlplane_figures(runs))
        (output / "benchmarks-controlplane.json").write_text(json.dumps(results, indent=2) + "\n")
        print(markdown(results))
        return
    work = Path(tempfile.mkdtemp(prefix="krs-bench-"))
    try:
        if not skip_pairs:
            figures["pairs"] = [release_pair(first, second, work) for first, second in PAIRS]
        if pairs_only:
            finish(results, output)
            return
        context = work / "context.tar"
        first = pipeline_build(work / "prime.json", nocache=False, save=context)  # warm the download cache
        figures["context_bytes"] = first["stages"]["build"]["context_bytes"]
        figures["runtime_image_bytes"] = first["stages"]["build"]["size"]

        if not skip_cold:
            existing = Engine().image_ids()
            cold_pipe, cold_plain = [], []
            for n in range(cold_runs):
                # Alternate which goes first: the second build of a pair finds the Debian
                # mirror's (and any proxy's) caches warm from the first.
                def pipe(n: int = n) -> float:
                    return timed(lambda: pipeline_build(work / f"cold{n}.json", nocache=True))

                def plain() -> float:
                    return timed(lambda: docker_build(context, "kube-router-sctp/bench-plain", nocache=True))

                if n % 2 == 0:
                    cold_pipe.append(pipe())
                    cold_plain.append(plain())
                else:
                    cold_plain.append(plain())
                    cold_pipe.append(pipe())
            figures["cold_pipeline_s"] = stats(cold_pipe)
            figures["cold_plain_docker_build_s"] = stats(cold_plain)
            figures["cold_overhead_ratio"] = statistics.median(cold_pipe) / statistics.median(cold_plain)
            # Each clean build leaves its stages behind (1-2 GB); keep only what was there.
            Engine().remove_unused(Engine().image_ids(dangling=True) - existing)

        warm_pipe, warm_plain, warm_bytes = [], [], []
        docker_build(context, "kube-router-sctp/bench-plain", nocache=False)  # prime the plain build's cache
        for n in range(runs):
            report = work / f"warm{n}.json"
            warm_pipe.append(timed(lambda report=report: pipeline_build(report, nocache=False)))
            warm_bytes.append(json.loads(report.read_text())["stages"]["fetch"]["bytes_downloaded"])
            warm_plain.append(timed(lambda: docker_build(context, "kube-router-sctp/bench-plain", nocache=False)))
        figures["warm_pipeline_s"] = stats(warm_pipe)
        figures["warm_plain_docker_build_s"] = stats(warm_plain)
        figures["warm_overhead_s"] = statistics.median(warm_pipe) - statistics.median(warm_plain)
        figures["warm_overhead_ratio"] = statistics.median(warm_pipe) / statistics.median(warm_plain)
        figures["warm_bytes_downloaded"] = max(warm_bytes)

        figures["single_stage_image_bytes"] = single_stage_size(context, work)
        figures["size_ratio"] = figures["runtime_image_bytes"] / figures["single_stage_image_bytes"]

        if not skip_vm:
            figures.update(vm_figures(max(1, min(runs, 3))))
            figures["new_kernel"] = kernel_figures(list(NEW_KERNELS), max(1, min(runs, 3)))
        if matrix:
            start = time.monotonic()
            result = cli("check-patches", "--all", "--base-family", "debian", timeout=6 * 3600)
            figures["check_patches_all_s"] = time.monotonic() - start
            figures["check_patches_all_passed"] = result.returncode == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    finish(results, output)


def finish(results: dict[str, Any], output: Path) -> None:
    (output / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    (output / "benchmarks.md").write_text(markdown(results))
    print(markdown(results))


def _fmt(value: Any, unit: str = "s") -> str:
    if isinstance(value, dict):
        return f"{value['median']:.1f} {unit} (min {value['min']:.1f}, max {value['max']:.1f}, n={value['n']})"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    m, f = results["machine"], results["figures"]
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, kernel {m['kernel']}, Docker {m['docker']}, "
        f"Python {m['python']}; load average at start {', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}.",
        "",
        "| figure | value | goal | met |",
        "| --- | --- | --- | --- |",
    ]

    def row(name: str, value: str, goal: str = "", met: str = "") -> None:
        lines.append(f"| {name} | {value} | {goal} | {met} |")

    for spec, kernel in f.get("new_kernel", {}).items():
        new = kernel["new_s"]["median"]
        row(
            f"new-kernel verdict, `{spec}` ({kernel['release']})",
            _fmt(kernel["new_s"]),
            "≤ 20 s",
            "yes" if new <= 20 else "no",
        )
        row(f"same kernel again, `{spec}`", _fmt(kernel["again_s"]))
    for pair in f.get("pairs", []):
        name = f"{pair['first']} then {pair['second']}"
        row(f"{name}: cold build of {pair['first']} (empty cache, --no-cache)", f"{pair['first_s']:.1f} s")
        row(f"{name}: then {pair['second']} (same cache)", f"{pair['second_s']:.1f} s")
        ratio = pair["ratio"]
        row(f"{name}: time ratio", f"{ratio:.2f}", "≤ 0.5", "yes" if ratio <= 0.5 else "no")
        one, two = pair["first_bytes_downloaded"] / 1048576, pair["second_bytes_downloaded"] / 1048576
        row(f"{name}: bytes downloaded", f"{one:.1f} MiB, then {two:.1f} MiB")
        only = pair["second_downloads_only_what_differs"]
        row(
            f"{name}: module files downloaded by the second",
            f"{pair['second_module_files_downloaded']} of {pair['second_module_files']} "
            f"({pair['module_files_that_differ']} differ from the first)",
            "only those that differ",
            "yes" if only else "no",
        )
    if "controlplane_cold_s" in f:
        version = f["controlplane_version"]
        row(
            f"control plane {version}: build from nothing (toolchain, modules, compile)",
            f"{f['controlplane_cold_s']:.0f} s",
        )
        row(f"control plane {version}: found in the cache", _fmt(f["controlplane_warm_s"]))
        sizes = ", ".join(f"{c} {b / 1048576:.0f} MiB" for c, b in f["controlplane_binary_bytes"].items())
        row("control plane binaries (-s -w)", sizes)
        row("control plane start (etcd, API server ready, controllers running)", _fmt(f["controlplane_start_s"]))
        row("control plane stop and clean-up", _fmt(f["controlplane_stop_s"]))
    if "warm_pipeline_s" not in f:
        lines.append("")
        return "\n".join(lines)
    if "cold_pipeline_s" in f:
        row("cold build, pipeline", _fmt(f["cold_pipeline_s"]))
        row("cold build, plain docker build", _fmt(f["cold_plain_docker_build_s"]))
        ratio = f["cold_overhead_ratio"]
        row(
            "cold overhead ratio",
            f"{ratio:.3f}",
            "≤ 1.05",
            "yes" if ratio <= 1.05 else f"no (+{(ratio - 1) * 100:.1f}%)",
        )
    row("warm rebuild, pipeline", _fmt(f["warm_pipeline_s"]))
    row("warm rebuild, plain docker build", _fmt(f["warm_plain_docker_build_s"]))
    over = f["warm_overhead_s"]
    row(
        "warm overhead",
        f"{over:.2f} s (ratio {f['warm_overhead_ratio']:.2f})",
        "≤ 1.5 s",
        "yes" if over <= 1.5 else "no",
    )
    row(
        "bytes downloaded when warm",
        str(f["warm_bytes_downloaded"]),
        "0",
        "yes" if f["warm_bytes_downloaded"] == 0 else "no",
    )
    row("build context sent to the daemon", f"{f['context_bytes'] / 1048576:.1f} MiB")
    row("runtime image", f"{f['runtime_image_bytes'] / 1048576:.1f} MiB")
    row("single-stage image (2019 style)", f"{f['single_stage_image_bytes'] / 1048576:.1f} MiB")
    size = f["size_ratio"]
    row("size ratio", f"{size * 100:.1f}%", "≤ 40%", "yes" if size <= 0.40 else "no")
    if "vm_boot_s" in f:
        row("VM boot to dockerd ready", _fmt(f["vm_boot_s"]))
        row("image pull into the VM", _fmt(f["vm_pull_s"]))
        row("smoke checks in the VM", _fmt(f["vm_smoke_s"]))
        total = f["vm_total_s"]["median"]
        row("smoke total incl. VM boot and pull", _fmt(f["vm_total_s"]), "< 60 s", "yes" if total < 60 else "no")
        kernel = f["kernel_smoke_total_s"]["median"]
        row(
            "smoke with --kernel debian (total)",
            _fmt(f["kernel_smoke_total_s"]),
            "< 30 s",
            "yes" if kernel < 30 else "no",
        )
    if "check_patches_all_s" in f:
        row(
            "check-patches --all",
            f"{f['check_patches_all_s'] / 60:.1f} min",
            "",
            "passed" if f["check_patches_all_passed"] else "FAILED",
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    except PipelineError as exc:  # the project's own errors: one line and their exit code, as build.py
        print(f"benchmarks: error: {exc.one_line()}", file=sys.stderr)
        sys.exit(exc.exit_code)
