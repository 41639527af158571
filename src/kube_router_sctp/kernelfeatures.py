"""What a kernel needs for SCTP through IPVS, and whether a given kernel has it, decided
from the kernel's own build configuration.

Each need is a kernel option and, where the option can be a module, the module's name.
The kernel's ``config`` (``/boot/config-<release>``, or ``config`` beside the modules in
Debian's split packages) says ``=y`` (built in: nothing to load), ``=m`` (a module to
load) or ``is not set`` (the kernel lacks it: a verdict about the kernel, not the image).
``modules.builtin`` and ``modules.builtin.modinfo`` are consulted too, and the module
files themselves, because neither list is complete alone: on 7.2, nfnetlink is built in
(``CONFIG_NETFILTER_NETLINK=y``) and appears in neither. Without a config, a need that is
neither a module file nor listed as built in is "unknown": the guest boots and the smoke
check's own exit status decides.

The same table serves the smoke guest, the Docker-host VM and ``doctor`` on a node.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import VMError

BUILT_IN, MODULE, LACKING, NO_FILE, UNKNOWN = "built in", "module", "lacking", "module file missing", "unknown"


@dataclass(frozen=True)
class Need:
    option: str  # CONFIG_IP_VS
    module: str | None  # the module it builds when =m; None for options that are never modules
    what: str
    required: bool = True


# What the smoke check and kube-router's service proxy need: IPVS with SCTP and the
# schedulers, the SCTP stack, conntrack with SCTP and NAT, the ipset types kube-router
# uses (hash:ip,port holds SCTP entries), and veth for the dataplane's pods.
SMOKE: tuple[Need, ...] = (
    Need("CONFIG_IP_VS", "ip_vs", "IPVS"),
    Need("CONFIG_IP_VS_PROTO_SCTP", None, "IPVS SCTP support"),
    Need("CONFIG_IP_VS_RR", "ip_vs_rr", "IPVS round-robin scheduler"),
    Need("CONFIG_IP_VS_WRR", "ip_vs_wrr", "IPVS weighted round-robin scheduler", required=False),
    Need("CONFIG_IP_VS_SH", "ip_vs_sh", "IPVS source-hash scheduler", required=False),
    Need("CONFIG_IP_SCTP", "sctp", "the SCTP stack"),
    Need("CONFIG_NF_CONNTRACK", "nf_conntrack", "connection tracking"),
    # A module of its own before 4.17 (nf_conntrack_proto_sctp), part of nf_conntrack since.
    Need("CONFIG_NF_CT_PROTO_SCTP", "nf_conntrack_proto_sctp", "SCTP connection tracking"),
    Need("CONFIG_NF_NAT", "nf_nat", "NAT"),
    Need("CONFIG_NETFILTER_NETLINK", "nfnetlink", "netfilter netlink (ipset's interface)"),
    Need("CONFIG_IP_SET", "ip_set", "ipset"),
    Need("CONFIG_IP_SET_HASH_IP", "ip_set_hash_ip", "ipset hash:ip"),
    Need("CONFIG_IP_SET_HASH_IPPORT", "ip_set_hash_ipport", "ipset hash:ip,port"),
    Need("CONFIG_IP_SET_HASH_IPPORTIP", "ip_set_hash_ipportip", "ipset hash:ip,port,ip", required=False),
    Need("CONFIG_IP_SET_HASH_NET", "ip_set_hash_net", "ipset hash:net", required=False),
    Need("CONFIG_VETH", "veth", "virtual Ethernet pairs (pods)", required=False),
)
# The Docker-host VM's own needs besides SMOKE (Docker asks for the rest on demand).
DOCKER_HOST: tuple[Need, ...] = (
    Need("CONFIG_VIRTIO_NET", "virtio_net", "the VM's network card"),
    Need("CONFIG_OVERLAY_FS", "overlay", "Docker's overlay2 storage"),
    Need("CONFIG_BRIDGE_NETFILTER", "br_netfilter", "bridge netfilter", required=False),
    Need("CONFIG_VETH", "veth", "virtual Ethernet pairs"),
    Need("CONFIG_DUMMY", "dummy", "dummy interfaces (ExternalIP addresses)", required=False),
    Need("CONFIG_BINFMT_MISC", "binfmt_misc", "foreign-architecture images", required=False),
)
# What the Docker-host VM's initramfs needs to mount its disks.
ROOT_DISK: tuple[Need, ...] = (
    Need("CONFIG_VIRTIO_PCI", "virtio_pci", "virtio devices"),
    Need("CONFIG_VIRTIO_BLK", "virtio_blk", "virtio disks"),
    Need("CONFIG_EXT4_FS", "ext4", "the ext4 file system"),
)
# The arm64 guest's status port (a virtio serial port).
STATUS_PORT: tuple[Need, ...] = (
    Need("CONFIG_VIRTIO_PCI", "virtio_pci", "virtio devices"),
    Need("CONFIG_VIRTIO_CONSOLE", "virtio_console", "the virtio serial port"),
)
BY_MODULE = {n.module: n for n in (*SMOKE, *DOCKER_HOST, *ROOT_DISK, *STATUS_PORT) if n.module}


@dataclass(frozen=True)
class Verdict:
    need: Need
    state: str  # BUILT_IN, MODULE, LACKING, NO_FILE or UNKNOWN
    evidence: str  # "CONFIG_IP_VS=m", "in modules.builtin", "CONFIG_IP_VS_PROTO_SCTP is not set"

    def line(self) -> str:
        return f"{self.need.option} ({self.need.what}): {self.state}, {self.evidence}"


class KernelConfig:
    """A kernel's ``config``: option -> value (``y``, ``m``, a number, a string)."""

    def __init__(self, values: dict[str, str], origin: str) -> None:
        self.values = values
        self.origin = origin

    @classmethod
    def parse(cls, text: str, origin: str) -> KernelConfig:
        values: dict[str, str] = {}
        for line in text.splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                key, _, value = line.partition("=")
                values[key] = value.strip()
        return cls(values, origin)

    @classmethod
    def read(cls, path: Path) -> KernelConfig:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":  # /proc/config.gz
            try:
                data = gzip.decompress(data)
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise VMError(f"{path.name} is damaged ({exc})", "the kernel's config is not readable") from exc
        return cls.parse(data.decode(errors="replace"), str(path))

    def get(self, option: str) -> str | None:
        return self.values.get(option)


def assess(needs: Iterable[Need], config: KernelConfig | None, builtin: set[str], modules: set[str]) -> list[Verdict]:
    """One verdict per need (the first of repeated options wins)."""
    verdicts: list[Verdict] = []
    seen: set[str] = set()
    for need in needs:
        if need.option in seen:
            continue
        seen.add(need.option)
        verdicts.append(_assess(need, config, builtin, modules))
    return verdicts


def _assess(need: Need, config: KernelConfig | None, builtin: set[str], modules: set[str]) -> Verdict:
    value = config.get(need.option) if config is not None else None
    has_file = need.module is not None and need.module in modules
    listed = need.module is not None and need.module in builtin
    if value == "y":
        return Verdict(need, BUILT_IN, f"{need.option}=y")
    if value == "m":
        if has_file:
            return Verdict(need, MODULE, f"{need.option}=m")
        if listed:
            return Verdict(need, BUILT_IN, f"{need.option}=m but {need.module} is listed as built in")
        return Verdict(need, NO_FILE, f"{need.option}=m but no {need.module} module file")
    # Not set, or no config: the files decide where they can (an option renamed in a
    # later kernel must not condemn a kernel that plainly carries the module).
    if has_file:
        return Verdict(
            need, MODULE, f"{need.module} module file" + ("" if config is None else f", {need.option} unset")
        )
    if listed:
        return Verdict(need, BUILT_IN, f"{need.module} listed as built in")
    if config is None:
        return Verdict(need, UNKNOWN, "no kernel config to tell")
    return Verdict(need, LACKING, f"{need.option} is not set")


def lacking(verdicts: Iterable[Verdict]) -> list[Verdict]:
    """Required needs the kernel does not have."""
    return [v for v in verdicts if v.state == LACKING and v.need.required]


def summary(verdicts: Iterable[Verdict]) -> dict[str, list[str]]:
    """For reports and the kernel matrix: options built in, modules loaded, the rest."""
    out: dict[str, list[str]] = {"built_in": [], "modules": [], "absent": [], "unknown": []}
    for v in verdicts:
        if v.state == BUILT_IN:
            out["built_in"].append(v.need.option)
        elif v.state == MODULE and v.need.module:
            out["modules"].append(v.need.module)
        elif v.state == UNKNOWN:
            out["unknown"].append(v.need.option)
        else:
            out["absent"].append(v.evidence)
    return out
