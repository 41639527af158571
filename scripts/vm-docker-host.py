#!/usr/bin/env python3
"""Boot a Docker host on a real kernel (Debian's, under QEMU) and keep it up until killed.

Prints ``DOCKER_HOST=tcp://127.0.0.1:PORT`` on stdout once the Docker API answers, so CI
can ``eval`` it or read it from a file; everything else goes to stderr. The first run
builds and caches the VM disk (needs root and the Debian mirror of the host's apt
sources); ``--build-only`` does just that.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kube_router_sctp.cache import Cache, default_root
from kube_router_sctp.errors import PipelineError
from kube_router_sctp.vm import dockerhost
from kube_router_sctp.vm.kernel import resolve as kernel_files


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@click.command(help=__doc__)
@click.option(
    "--kernel", help="debian, debian:SUITE, debian:VERSION, a kernel .deb or directory, or a vmlinuz (with --modules)."
)
@click.option(
    "--modules",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The kernel's /lib/modules/<version> directory.",
)
@click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Pipeline cache (default: the tool's)."
)
@click.option("--mirror", help="Debian mirror URL for the disk (default: the host's apt sources).")
@click.option("--memory", type=click.IntRange(512), default=2048, show_default=True, help="Guest memory in MiB.")
@click.option("--cpus", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Host loopback port for the Docker API (default: a free one)."
)
@click.option(
    "--boot-timeout", type=click.FloatRange(1), default=180.0, show_default=True, help="Seconds to wait for dockerd."
)
@click.option(
    "--insecure-registry",
    "insecure_registry",
    multiple=True,
    help=f"Plain-HTTP registry the guest may use (default: {dockerhost.DEFAULT_INSECURE[0]}, the host's :5000).",
)
@click.option("--build-only", is_flag=True, help="Build and cache the disk, then exit.")
@click.option("--rebuild", is_flag=True, help="Build the disk again even if cached.")
def main(
    kernel: str | None,
    modules: Path | None,
    cache_dir: Path | None,
    mirror: str | None,
    memory: int,
    cpus: int,
    port: int | None,
    boot_timeout: float,
    insecure_registry: tuple[str, ...],
    build_only: bool,
    rebuild: bool,
) -> None:
    cache = Cache(cache_dir or default_root())
    try:
        files = kernel_files(kernel, modules, cache) if kernel else dockerhost.debian_kernel(cache)
        disk = dockerhost.build_disk(cache, mirror=mirror, rebuild=rebuild)
        modules_disk = dockerhost.modules_disk(files, cache)
        if build_only:
            print(
                f"disk: {disk.disk} (built in {disk.build_seconds:.0f}s), modules of {files.version}: {modules_disk}",
                file=sys.stderr,
            )
            sys.exit(0)
        signal.signal(signal.SIGTERM, _stop)
        insecure = insecure_registry or tuple(dockerhost.DEFAULT_INSECURE)
        with dockerhost.docker_host(
            files,
            cache,
            mirror=mirror,
            memory_mb=memory,
            cpus=cpus,
            boot_timeout=boot_timeout,
            insecure_registries=insecure,
            port=port,
        ) as host:
            print(f"DOCKER_HOST={host.url}", flush=True)
            print(f"ready in {host.boot_seconds:.1f}s; Ctrl-C or SIGTERM stops the VM", file=sys.stderr)
            while host.guest.running():
                time.sleep(1)
            print(f"the VM stopped by itself: {host.guest.console_tail(5)}", file=sys.stderr)
            sys.exit(1)
    except PipelineError as exc:
        print(f"vm-docker-host: error: {exc.one_line()}", file=sys.stderr)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        print("stopped; the VM is gone", file=sys.stderr)
        sys.exit(0)


if __name__ == "__main__":
    main()
