#!/usr/bin/env python3
"""Boot a Docker host on a real kernel (Debian's, under QEMU) and keep it up until killed.

Prints ``DOCKER_HOST=tcp://127.0.0.1:PORT`` on stdout once the Docker API answers, so CI
can ``eval`` it or read it from a file; everything else goes to stderr. The first run
builds and caches the VM disk (needs root and the Debian mirror of the host's apt
sources); ``--build-only`` does just that.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kube_router_sctp.cache import Cache, default_root
from kube_router_sctp.errors import PipelineError
from kube_router_sctp.vm import dockerhost, kernel


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--kernel",
        help="debian, debian:SUITE, debian:VERSION, a kernel .deb or directory, or a vmlinuz (with --modules)",
    )
    parser.add_argument("--modules", type=Path, help="the kernel's /lib/modules/<version> directory")
    parser.add_argument("--cache-dir", type=Path, default=None, help="pipeline cache (default: %(default)s)")
    parser.add_argument("--mirror", help="Debian mirror URL for the disk (default: the host's apt sources)")
    parser.add_argument("--memory", type=int, default=2048, help="guest memory in MiB")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--port", type=int, help="host loopback port for the Docker API (default: a free one)")
    parser.add_argument("--boot-timeout", type=float, default=180.0, help="seconds to wait for dockerd")
    parser.add_argument(
        "--insecure-registry",
        action="append",
        help=f"plain-HTTP registry the guest may use (default: {dockerhost.DEFAULT_INSECURE[0]}, the host's :5000)",
    )
    parser.add_argument("--build-only", action="store_true", help="build and cache the disk, then exit")
    parser.add_argument("--rebuild", action="store_true", help="build the disk again even if cached")
    return parser.parse_args()


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    args = _arguments()
    cache = Cache(args.cache_dir or default_root())
    try:
        files = kernel.resolve(args.kernel, args.modules, cache) if args.kernel else dockerhost.debian_kernel(cache)
        disk = dockerhost.build_disk(cache, mirror=args.mirror, rebuild=args.rebuild)
        modules = dockerhost.modules_disk(files, cache)
        if args.build_only:
            print(
                f"disk: {disk.disk} (built in {disk.build_seconds:.0f}s), modules of {files.version}: {modules}",
                file=sys.stderr,
            )
            return 0
        signal.signal(signal.SIGTERM, _stop)
        insecure = tuple(args.insecure_registry or dockerhost.DEFAULT_INSECURE)
        with dockerhost.docker_host(
            files,
            cache,
            mirror=args.mirror,
            memory_mb=args.memory,
            cpus=args.cpus,
            boot_timeout=args.boot_timeout,
            insecure_registries=insecure,
            port=args.port,
        ) as host:
            print(f"DOCKER_HOST={host.url}", flush=True)
            print(f"ready in {host.boot_seconds:.1f}s; Ctrl-C or SIGTERM stops the VM", file=sys.stderr)
            while host.guest.running():
                time.sleep(1)
            print(f"the VM stopped by itself: {host.guest.console_tail(5)}", file=sys.stderr)
            return 1
    except PipelineError as exc:
        print(f"vm-docker-host: error: {exc.one_line()}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("stopped; the VM is gone", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
