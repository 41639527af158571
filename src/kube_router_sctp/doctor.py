"""doctor: is this machine (and its Docker daemon, registry, kernel) ready?

Each check yields a Finding: OK, WARN or FAIL, what was seen, and what to do. The node
checks are the ones the 2019 field report tripped over one by one (kernel SCTP and
IPVS-SCTP support, the sctp module, a host firewall dropping SCTP); the Kubernetes
SCTPSupport feature gate cannot be seen from a node and is listed as a reminder.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import kernelfeatures as kf
from . import smoke
from .config import Settings
from .engine import Engine, registry_api_status
from .errors import DockerError, SmokeError
from .render import VERSION_LABEL
from .vm.debian import KEYRING

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"


@dataclass(frozen=True)
class Finding:
    status: str
    check: str
    seen: str
    todo: str = ""


def _kernel_config(release: str) -> kf.KernelConfig | None:
    for path in (Path(f"/boot/config-{release}"), Path("/proc/config.gz")):
        if path.is_file():
            return kf.KernelConfig.read(path)
    return None


def _module_names(base: Path) -> set[str]:
    """Modules this node can load (its modules directory) or has loaded."""
    from .vm.modules import SUFFIXES, module_name

    names = set()
    if base.is_dir():
        names = {module_name(p.name) for p in base.rglob("*.ko*") if p.name.endswith(SUFFIXES)}
    loaded = Path("/proc/modules")
    if loaded.exists():
        names |= {line.split(" ", 1)[0] for line in loaded.read_text().splitlines() if line}
    return names


def node_checks() -> Iterator[Finding]:
    """What a node needs before SCTP services work, decided as the smoke test decides it:
    from the running kernel's own config, its built-in lists and its module files."""
    from .vm.modules import builtin_names

    release = platform.release()
    config = _kernel_config(release)
    base = Path("/lib/modules") / release
    verdicts = kf.assess(kf.SMOKE, config, builtin_names(base), _module_names(base))
    for verdict in verdicts:
        need, check = verdict.need, f"node: {verdict.need.what}"
        if verdict.state in (kf.BUILT_IN, kf.MODULE):
            if need.required:
                yield Finding(OK, check, f"{verdict.state} ({verdict.evidence})")
        elif verdict.state == kf.NO_FILE:
            todo = f"install the kernel's modules package ({need.module}.ko)"
            yield Finding(WARN if need.required else INFO, check, verdict.evidence, todo)
        elif verdict.state == kf.LACKING:
            story = "; the field report had to rebuild its kernel to get sctp.ko" if need.module == "sctp" else ""
            yield Finding(
                FAIL if need.required else INFO,
                check,
                f"kernel {release}: {verdict.evidence}",
                f"use a kernel with {need.option}={'y' if need.module is None else 'm or y'}{story}",
            )
        elif need.required:
            yield Finding(
                WARN,
                check,
                "kernel config not readable (/boot/config-*, /proc/config.gz) and no module file",
                f"check {need.option} with your distribution, or smoke the image with --kernel and its package",
            )
    yield from _firewall_check()
    yield Finding(
        INFO,
        "cluster: SCTPSupport feature gate",
        "not visible from a node",
        "on Kubernetes before 1.20 set --feature-gates=SCTPSupport=true on apiserver, controller-manager, "
        "scheduler and kubelet (the field report needed it); from 1.20 SCTP is on by default",
    )


def _firewall_check() -> Iterator[Finding]:
    active = [name for name in ("firewalld", "ufw") if shutil.which(name) and _service_active(name)]
    if active:
        yield Finding(
            WARN,
            "node: host firewall",
            f"{', '.join(active)} is active",
            "allow SCTP (protocol 132) to node ports and external IPs, or disable it; the field report's "
            "CentOS 8 firewalld dropped SCTP",
        )
        return
    iptables = shutil.which("iptables")
    if not iptables:
        yield Finding(INFO, "node: host firewall", "iptables not installed; nothing to inspect")
        return
    try:
        rules = subprocess.run([iptables, "-S", "INPUT"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        rules = ""
    policy_drop = "-P INPUT DROP" in rules
    if policy_drop and "-p sctp" not in rules and "-p 132" not in rules:
        yield Finding(
            WARN,
            "node: host firewall",
            "INPUT policy DROP without an SCTP accept rule",
            "accept SCTP (-p sctp) to the node-port range and external IPs",
        )
    else:
        yield Finding(OK, "node: host firewall", "no SCTP-dropping INPUT policy seen")


def _service_active(name: str) -> bool:
    try:
        return subprocess.run(["systemctl", "is-active", "--quiet", name], timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _probe_image(engine: Engine, wanted: str | None) -> str | None:
    if wanted:
        return wanted
    images = engine.images(VERSION_LABEL)
    return str(images[0]["Id"]) if images else None


def docker_checks(settings: Settings, image: str | None) -> Iterator[Finding]:
    try:
        engine = Engine(settings.docker_host)
    except DockerError as exc:
        yield Finding(FAIL, "docker: daemon", exc.message, exc.hint)
        return
    version = engine.version()
    seen = f"{engine.describe()}: Engine {version.get('Version')} (API {version.get('ApiVersion')})"
    yield Finding(OK, "docker: daemon", f"{seen}, kernel {version.get('KernelVersion')}")
    probe = _probe_image(engine, image)
    if probe is None:
        yield Finding(
            WARN,
            "docker: privileged containers",
            "no kube-router-sctp image on the daemon to probe with",
            "build an image first, or pass --image",
        )
        yield Finding(
            WARN, "docker: kernel IPVS with SCTP", "not probed (no image)", "build an image first, or pass --image"
        )
    else:
        try:
            engine.run(probe, ["-c", "true"], entrypoint=["/bin/sh"], privileged=True, timeout=60)
            yield Finding(OK, "docker: privileged containers", "allowed")
        except DockerError as exc:
            yield Finding(
                FAIL,
                "docker: privileged containers",
                f"refused ({exc.message[-120:]})",
                "kube-router runs privileged; use a Docker host that allows --privileged (the smoke stage "
                "falls back to the capabilities it needs)",
            )
        try:
            smoke.on_docker(engine, probe, pull=False, kube_router_version="", ipvsadm_version="", versions=False)
            yield Finding(
                OK,
                "docker: kernel IPVS with SCTP",
                f"SCTP IPVS service created on kernel {version.get('KernelVersion')}",
            )
        except SmokeError as exc:
            yield Finding(FAIL, "docker: kernel IPVS with SCTP", exc.message.split(": ", 1)[-1], exc.hint)
    root = engine.info().get("DockerRootDir", "/var/lib/docker")
    yield _disk(Path(root), "docker: free disk", 20)


def _disk(path: Path, check: str, need_gib: int) -> Finding:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stat = os.statvfs(probe)
    free = stat.f_bavail * stat.f_frsize / (1 << 30)
    if free < need_gib:
        return Finding(
            WARN, check, f"{free:.1f} GiB free at {probe}", f"keep at least {need_gib} GiB free (images, caches)"
        )
    return Finding(OK, check, f"{free:.1f} GiB free at {probe}")


def registry_checks(settings: Settings) -> Iterator[Finding]:
    if settings.push is None:
        yield Finding(INFO, "registry", "no --push target given; not checked")
        return
    host, _ = settings.push
    loopback = host.startswith(("127.", "localhost", "[::1]"))
    schemes = ("http", "https") if loopback else ("https", "http")
    last = ""
    for scheme in schemes:
        status = registry_api_status(f"{scheme}://{host}/v2/")
        if isinstance(status, str):
            last = status
            continue
        if status == 200:
            yield Finding(OK, "registry", f"{scheme}://{host}/v2/ answers without authentication")
        elif status == 401:
            auths = _docker_config_auths()
            if host in auths:
                yield Finding(OK, "registry", f"{host} requires login; the Docker config has credentials for it")
            else:
                yield Finding(
                    FAIL,
                    "registry",
                    f"{host} requires login and the Docker config has none for it",
                    f"docker login {host}",
                )
        else:
            yield Finding(WARN, "registry", f"{scheme}://{host}/v2/ answered HTTP {status}", "check the registry")
        if scheme == "http" and not loopback:
            yield Finding(
                WARN,
                "registry: TLS",
                f"{host} speaks plain HTTP",
                "the daemon needs it under insecure-registries; prefer TLS",
            )
        return
    yield Finding(FAIL, "registry", f"{host} is not reachable ({last})", "start the registry or fix the --push address")


def _docker_config_auths() -> set[str]:
    import json

    path = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return set(data.get("auths", {})) | set(data.get("credHelpers", {}))


def vm_checks(settings: Settings) -> Iterator[Finding]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        yield Finding(
            WARN,
            "vm: QEMU",
            "qemu-system-x86_64 not installed",
            "apt-get install qemu-system-x86 (for --kernel smoke runs and the test VM)",
        )
    else:
        yield Finding(OK, "vm: QEMU", f"{qemu} (guests boot with TCG software emulation; no KVM needed)")
    if shutil.which("qemu-system-aarch64") is None:
        yield Finding(
            WARN,
            "vm: arm64",
            "qemu-system-aarch64 not installed: arm64 images cannot be smoke-tested",
            "apt-get install qemu-system-arm (and dpkg --add-architecture arm64 for Debian's arm64 kernel)",
        )
    if shutil.which("qemu-img") is None:
        yield Finding(
            WARN, "vm: qemu-img", "qemu-img not installed", "apt-get install qemu-utils (for the Docker-host test VM)"
        )
    missing = [tool for tool in ("gpgv",) if shutil.which(tool) is None]
    if not settings.mirrors.debian:
        yield Finding(
            WARN,
            "vm: kernel",
            "no Debian mirror (apt sources or --debian-mirror) for --kernel debian[:SUITE]",
            "set mirrors.debian, or pass --kernel a kernel .deb, a directory of them, or VMLINUZ --modules DIR",
        )
    elif missing or not KEYRING.is_file():
        yield Finding(
            WARN,
            "vm: kernel",
            f"cannot check Debian's signatures ({', '.join(missing) or KEYRING})",
            "apt-get install gpgv debian-archive-keyring",
        )
    else:
        yield Finding(OK, "vm: kernel", f"Debian kernels by suite or version from {settings.mirrors.debian}")
    yield _disk(settings.cache_dir, "cache: free disk", 10)


def verify_checks(settings: Settings) -> Iterator[Finding]:
    """What ``verify`` needs beside the VM: etcd and kubectl on the host, and the control
    plane's binaries (built on the first run if the cache lacks them)."""
    from .controlplane import HOST_TOOLS
    from .controlplane import build as cpbuild
    from .errors import PipelineError

    for tool, package in HOST_TOOLS:
        found = shutil.which(tool)
        yield (
            Finding(OK, f"verify: {tool}", found)
            if found
            else Finding(WARN, f"verify: {tool}", f"{tool} not installed", f"apt-get install {package}")
        )
    try:
        cached = cpbuild.cached(settings)
    except PipelineError as exc:
        yield Finding(WARN, "verify: control plane", exc.message, exc.hint)
        return
    if cached is None:
        yield Finding(
            INFO,
            "verify: control plane",
            "kube-apiserver and kube-controller-manager are not built yet",
            "verify builds them once (10 minutes or more), or: python -m kube_router_sctp.controlplane build",
        )
    else:
        yield Finding(
            OK, "verify: control plane", f"kube-apiserver and kube-controller-manager {cached.version} cached"
        )


def run(settings: Settings, image: str | None) -> list[Finding]:
    findings: list[Finding] = []
    findings += docker_checks(settings, image)
    findings += registry_checks(settings)
    findings += vm_checks(settings)
    findings += verify_checks(settings)
    findings += node_checks()
    return findings
