"""smoke stage: the image creates SCTP (and TCP, UDP) IPVS services on a real kernel.

The same shell script runs in a privileged container on a Docker host (``--smoke-host``)
or as the init of a QEMU guest booted with the image's root file system (``--kernel``).
Its exit status names the failure class, so the verdict never depends on scraping text;
the output is shown to the user as the evidence.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from . import log
from .engine import Engine
from .errors import DockerError, RegistryError, SmokeError

VIP = "10.254.125.172"
REAL = "172.20.1.6"
PORTS = {"sctp": 32000, "tcp": 32001, "udp": 32002}
FLAG = {"sctp": "--sctp-service", "tcp": "--tcp-service", "udp": "--udp-service"}
EXTERNAL_IP = "10.120.10.120"
FALLBACK_CAPS = ["NET_ADMIN", "NET_RAW", "SYS_MODULE", "SYS_ADMIN"]

# Classes that are about the kernel the check ran on, not about the image.
KERNEL_CLASSES = (10, 11)

# exit status -> (failure class, the fix)
CLASSES: dict[int, tuple[str, str]] = {
    10: (
        "the host kernel has no IPVS",
        "run the smoke test on a node kernel with ip_vs: --smoke-host tcp://HOST:2375 (a Docker "
        "host on such a kernel) or --kernel VMLINUZ --modules DIR (boots it under QEMU)",
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
}


def script(kube_router_version: str, ipvsadm_version: str, check_versions: bool = True) -> str:
    """The check, as POSIX sh. Exit 0 = pass; other codes as in CLASSES."""
    lines = [
        "set -u",
        'fail() { code=$1; shift; echo "SMOKE-FAIL $code $*"; exit "$code"; }',
        "for bin in kube-router gobgp ipvsadm ipset iptables; do",
        '  command -v "$bin" >/dev/null 2>&1 || fail 13 "missing binary: $bin"',
        "done",
        # CAP_NET_ADMIN is bit 12 of the effective capability set.
        "cap=$(awk '/^CapEff/ {print $2}' /proc/self/status)",
        'case "$cap" in *[0-9a-f]) ;; *) cap=0 ;; esac',
        'if [ $(( 0x$cap >> 12 & 1 )) -ne 1 ]; then fail 12 "CapEff=$cap lacks CAP_NET_ADMIN"; fi',
        "out=$(ipvsadm -Ln 2>&1) || {",
        '  echo "$out"',
        '  case "$out" in *"Protocol not available"*|*"Can\'t initialize ipvs"*|*"Module ip_vs not found"*)',
        '    fail 10 "ipvsadm -Ln: $out";; esac',
        '  case "$out" in *"ermission denied"*|*"not permitted"*) fail 12 "ipvsadm -Ln: $out";; esac',
        '  fail 10 "ipvsadm -Ln: $out"',
        "}",
        'kv=$(kube-router --version 2>&1 | head -n 1); echo "kube-router: $kv"',
        'iv=$(ipvsadm --version 2>&1 | head -n 1); echo "ipvsadm: $iv"',
        'gv=$(gobgp --version 2>&1 | head -n 1); echo "gobgp: $gv"',
    ]
    if check_versions:
        lines += [
            f'case "$kv" in *"version {kube_router_version},"*) ;; *) fail 16 "kube-router says: $kv";; esac',
            f'case "$iv" in *"v{ipvsadm_version} "*) ;; *) fail 16 "ipvsadm says: $iv";; esac',
        ]
    for proto in ("tcp", "udp", "sctp"):
        port = PORTS[proto]
        flag = FLAG[proto]
        code = 11 if proto == "sctp" else 14
        name = proto.upper()
        lines += [
            f'ipvsadm -A {flag} {VIP}:{port} -s rr 2>&1 || fail {code} "cannot add {name} service"',
            f'ipvsadm -a {flag} {VIP}:{port} -r {REAL}:{port} -m 2>&1 || fail {code} "cannot add {name} real server"',
        ]
    lines += ['echo "--- ipvsadm -Ln"', "table=$(ipvsadm -Ln)", 'echo "$table"']
    for proto in ("tcp", "udp", "sctp"):
        port = PORTS[proto]
        name = proto.upper()
        lines += [
            f'echo "$table" | grep -Eq "^{name} +{VIP}:{port} +rr" || fail 14 "{name} service not listed as {name}"',
            f'ipvsadm -Ln {FLAG[proto]} {VIP}:{port} | grep -Eq -- "-> +{REAL}:{port} +Masq"'
            f' || fail 14 "{name} real server not listed"',
        ]
    lines += [
        "ipset create krs-smoke hash:ip,port timeout 0 2>/dev/null || ipset create krs-smoke hash:ip,port",
        f"ipset add krs-smoke {EXTERNAL_IP},132:{PORTS['sctp']} 2>&1"
        f' || fail 15 "ipset add {EXTERNAL_IP},132:{PORTS["sctp"]}"',
        f'ipset add krs-smoke {EXTERNAL_IP},tcp:{PORTS["tcp"]} 2>&1 || fail 15 "ipset add tcp entry"',
        'echo "--- ipset list krs-smoke"; ipset list krs-smoke',
        "ipset destroy krs-smoke",
        "ipvsadm -C",
        'echo "SMOKE-PASS"',
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SmokeResult:
    passed: bool
    host: str
    image: str
    table: str
    output: str
    seconds: float

    def record(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "host": self.host,
            "image": self.image,
            "seconds": round(self.seconds, 2),
            "ipvs_table": self.table,
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
