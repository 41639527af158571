"""smoke stage: the image creates SCTP (and TCP, UDP) IPVS services on a real kernel.

The same shell script runs in a privileged container on a Docker host (``--smoke-host``)
or as the init of a QEMU guest booted with the image's root file system (``--kernel``).
Its exit status names the failure class, so the verdict never depends on scraping text;
the output is shown to the user as the evidence.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from . import guestscripts, log
from .engine import Engine
from .errors import DockerError, RegistryError, SmokeError

VIP = "10.254.125.172"
REAL = "172.20.1.6"
PORTS = {"sctp": 32000, "tcp": 32001, "udp": 32002}
EXTERNAL_IP = "10.120.10.120"
FALLBACK_CAPS = ["NET_ADMIN", "NET_RAW", "SYS_MODULE", "SYS_ADMIN"]

# Classes that are about the kernel the check ran on, not about the image.
KERNEL_LACKS = 17
KERNEL_CLASSES = (10, 11, KERNEL_LACKS)

# exit status -> (failure class, the fix)
CLASSES: dict[int, tuple[str, str]] = {
    10: (
        "the host kernel has no IPVS",
        "run the smoke test on a node kernel with ip_vs: --smoke-host tcp://HOST:2375 (a Docker "
        "host on such a kernel) or --kernel debian:SUITE, a kernel .deb, or VMLINUZ --modules DIR "
        "(boots it under QEMU)",
    ),
    11: (
        "the kernel has IPVS without SCTP support",
        "use a kernel built with CONFIG_IP_VS_PROTO_SCTP=y (and the sctp module available)",
    ),
    12: (
        "the container is not privileged (no CAP_NET_ADMIN)",
        "run it privileged: the Docker host must allow --privileged containers",
    ),
    13: ("a binary is missing from the image", "rebuild the image; its runtime stage lost a binary"),
    14: (
        "an IPVS service was created but does not read back as expected",
        "check the ipvsadm build in the image against the kernel's IPVS version",
    ),
    15: (
        "the image's ipset refuses SCTP service entries",
        "the runtime's libc cannot resolve protocol 132: install netbase (glibc) or use a base "
        "whose ipset accepts numeric protocols",
    ),
    16: ("a version in the image does not match the build report", "rebuild and push again"),
    # Decided before booting, from the kernel's own config (kernelfeatures); exit code 11.
    KERNEL_LACKS: (
        "the kernel lacks an option SCTP through IPVS needs",
        "use a kernel built with the option the message names",
    ),
}


def script(kube_router_version: str, ipvsadm_version: str, check_versions: bool = True) -> str:
    """The check (``resources/guest/smoke-check.sh``) with its values. Exit 0 = pass;
    other codes as in CLASSES."""
    return guestscripts.render(
        "smoke-check.sh",
        VIP=VIP,
        REAL=REAL,
        SCTP_PORT=PORTS["sctp"],
        TCP_PORT=PORTS["tcp"],
        UDP_PORT=PORTS["udp"],
        EXTERNAL_IP=EXTERNAL_IP,
        KUBE_ROUTER_VERSION=kube_router_version,
        IPVSADM_VERSION=ipvsadm_version,
        CHECK_VERSIONS="yes" if check_versions else "no",
    )


@dataclass(frozen=True)
class SmokeResult:
    passed: bool
    host: str
    image: str
    table: str
    output: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)  # kernel mode: what was booted and loaded

    def record(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "host": self.host,
            "image": self.image,
            "seconds": round(self.seconds, 2),
            "ipvs_table": self.table,
            **self.details,
        }


def interpret(exit_code: int, output: str, where: str) -> None:
    """Raise the failure class an exit status names (nothing for 0)."""
    if exit_code == 0 and "SMOKE-PASS" in output:
        return
    marker = re.search(r"SMOKE-FAIL (\d+) (.*)", output)
    detail = marker[2].strip() if marker else output.strip().splitlines()[-1:] or ["no output"]
    what, fix = CLASSES.get(exit_code, (f"the smoke check exited with status {exit_code}", "see its output above"))
    raise SmokeError(
        f"smoke test on {where} failed: {what} ({detail if isinstance(detail, str) else detail[0]})", fix, exit_code
    )


def ipvs_table(output: str) -> str:
    match = re.search(r"--- ipvsadm -Ln\n(.*?)(?:\n--- |\nSMOKE-)", output, re.S)
    return match[1] if match else ""


def show(output: str) -> None:
    log.detail(output)


def on_docker(
    engine: Engine,
    image: str,
    *,
    pull: bool,
    kube_router_version: str,
    ipvsadm_version: str,
    versions: bool = True,
) -> SmokeResult:
    """Run the check in a privileged container on ``engine``'s host; the container is removed."""
    where = engine.describe()
    start = time.monotonic()
    if pull:
        log.info(f"pulling {image} on {where}")
        try:
            engine.pull(image)
        except RegistryError as exc:
            raise SmokeError(
                f"smoke test on {where} failed: the image cannot be pulled ({exc.message})",
                "make the registry reachable from the smoke host (insecure-registries for plain HTTP)",
            ) from exc
    command = [script(kube_router_version, ipvsadm_version, versions)]
    labels = {"io.github.kube-router-sctp.role": "smoke"}
    try:
        result = engine.run(image, command, entrypoint=["/bin/sh", "-c"], privileged=True, labels=labels)
    except DockerError as exc:
        if "apply caps" not in exc.message:
            raise
        # Some hosts (sandboxed daemons) cannot grant every capability. kube-router needs
        # these; try them so the verdict is about the kernel, and say what happened.
        log.warn(
            f"{where} refuses privileged containers ({exc.message}); "
            f"running the check with --cap-add {','.join(FALLBACK_CAPS)} instead"
        )
        result = engine.run(image, command, entrypoint=["/bin/sh", "-c"], cap_add=FALLBACK_CAPS, labels=labels)
    show(result.output)
    interpret(result.exit_code, result.output, where)
    return SmokeResult(True, where, image, ipvs_table(result.output), result.output, time.monotonic() - start)
