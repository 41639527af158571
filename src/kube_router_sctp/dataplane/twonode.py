"""The scenarios' cluster: node A (the VM's root network namespace, where the base proof
ran) and node B (the network namespace of a container on the same VM, the way kind runs
nodes), each with its own kube-router, addresses, routes, IPVS table, iptables and
ipsets; a LAN between them and an external client with two paths to node A.

kube-router runs on each node with the same flags, as a DaemonSet runs it, in one of
three profiles, each started from a clean slate (``--cleanup-config``):

- ``cluster``: the 2019 report's flags (``--masquerade-all``, no BGP router); the pod
  ranges are routed between the nodes as a provisioner would route them.
- ``router``: ``--run-router`` (the two kube-routers peer over iBGP and route each
  other's pod range) without ``--masquerade-all``: kube-router then knows the node's pod
  range and masquerades only traffic that leaves it, which is what keeps a client's
  address for ``externalTrafficPolicy: Local`` (every release: ``ensureMasqueradeIptablesRule``
  reads the pod range only with ``--run-router``; v0.3.2:2424-2430, v2.7.1:2040-2056),
  and what lets a multi-homed client's second address reach the pod as itself.
- ``ipv6``: ``cluster`` plus ``--enable-ipv6`` and dual-stack ranges (v2.x).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import guestscripts
from ..controlplane.cluster import SERVICE_CIDR
from ..errors import DataplaneError
from . import workload as w
from .node import BASE_FLAGS, OPTIONAL_FLAGS, Node, Shell

NODE_A = "node"  # namespace names as the guest helpers take them
NODE_B = "node-b"
EXT = "ext"
NODE_B_NAME = "k8s03"
NODE_B_IP = "10.101.50.118"
NODE_B_POD_CIDR = "172.20.2.0/24"
NODE_A_IP2 = "10.101.51.117"  # the external client's second path to node A
CLIENT_IP2 = "10.101.51.85"
NODE_A_IP6 = "fd00:101:50::117"
NODE_B_IP6 = "fd00:101:50::118"
CLIENT_IP6 = "fd00:101:50::85"
POD_CIDR6_A = "fd00:172:20:1::/64"
POD_CIDR6_B = "fd00:172:20:2::/64"
BRIDGE_IP6 = "fd00:172:20:1::1"
SERVICE_CIDR6 = "fd00:10:254::/108"  # kube-apiserver takes at most 20 host bits for IPv6
EXTERNAL_RANGE = "10.120.20.0/24"  # the scenarios' external and load-balancer IPs
EXTERNAL_RANGE6 = "fd00:120:20::/64"
KUBE_ROUTER_B = "kube-router-b"
NODE_B_CONTAINER = "krs-node-b"
_KRS = "/run/krs"
LIB = f"{_KRS}/scenario-lib.sh"
PEER = f"{_KRS}/sctp-peer.py"
PROFILES = ("cluster", "router", "ipv6")


def profile_flags(help_text: str, profile: str, hostname: str) -> list[str]:
    """One node's kube-router flags in a profile, each optional flag only where this
    release's ``--help`` lists it (an unknown flag stops kube-router)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}")
    flags = [f for f in BASE_FLAGS if not f.startswith("--hostname-override=")]
    flags.append(f"--hostname-override={hostname}")
    flags += [f for f in OPTIONAL_FLAGS if f.split("=", 1)[0] in help_text and "service-cluster-ip-range" not in f]
    services = SERVICE_CIDR + (f",{SERVICE_CIDR6}" if profile == "ipv6" else "")
    externals = EXTERNAL_RANGE + (f",{EXTERNAL_RANGE6}" if profile == "ipv6" else "")
    wanted = {
        "--service-cluster-ip-range": services,
        "--service-external-ip-range": externals,
        # v2.9.0 drops LB IPs outside this range (strict validation); v2.7.1 reads it
        # only with --run-loadbalancer, which stays off.
        "--loadbalancer-ip-range": externals,
    }
    flags += [f"{name}={value}" for name, value in wanted.items() if name in help_text]
    if profile == "router":
        flags = [f.replace("--run-router=false", "--run-router=true") for f in flags]
        flags = [f.replace("--masquerade-all=true", "--masquerade-all=false") for f in flags]
        # Only the routing: no CNI file, no tunnels between nodes on one subnet, no pod egress NAT.
        flags += [f for f in ("--enable-cni=false", "--enable-overlay=false", "--enable-pod-egress=false")
                  if f.split("=", 1)[0] in help_text]  # fmt: skip
    if profile == "ipv6":
        flags += [f for f in ("--enable-ipv4=true", "--enable-ipv6=true") if f.split("=", 1)[0] in help_text]
    return flags


def network_values(node_b_pid: int, api_host: str) -> dict[str, str | int]:
    """What scenario-net.sh is rendered with: the topology above, node B's process, and
    the address the nodes reach the API server by."""
    return {
        "NODE_B_PID": node_b_pid,
        "NODE_A_IP": w.NODE_IP,
        "NODE_B_IP": NODE_B_IP,
        "CLIENT_IP": w.CLIENT_IP,
        "NODE_A_IP2": NODE_A_IP2,
        "CLIENT_IP2": CLIENT_IP2,
        "NODE_A_IP6": NODE_A_IP6,
        "NODE_B_IP6": NODE_B_IP6,
        "CLIENT_IP6": CLIENT_IP6,
        "POD_RANGE_A": w.NODE_POD_CIDR,
        "POD_RANGE_B": NODE_B_POD_CIDR,
        "POD_RANGE_A6": POD_CIDR6_A,
        "SERVICE_RANGES": f"{SERVICE_CIDR} {SERVICE_CIDR6}",
        "EXTERNAL_RANGES": f"{EXTERNAL_RANGE} {EXTERNAL_RANGE6}",
        "API_HOST": api_host,
    }


@dataclass
class TwoNodes:
    """Node B and the LAN, added to a node the base proof has used."""

    node: Node
    kubeconfig: str
    help_text: str
    node_b: str = ""  # the container holding node B's namespaces
    kube_routers: dict[str, str] = field(default_factory=dict)  # namespace -> container
    profile: str = ""
    logs: dict[str, str] = field(default_factory=dict)  # "node (profile)" -> the end of its kube-router's log
    setup_said: str = ""  # what scenario-net.sh printed (its commands, under set -x)

    def build(self, api_host: str) -> str:
        """Node B's container, the LAN, the second path and the routes; the helpers and
        the SCTP program into the node. Returns what the guest said."""
        self.node.put_file(self.node.toolbox, f"/host{LIB}", guestscripts.text("scenario-lib.sh"))
        self.node.put_file(self.node.toolbox, f"/host{PEER}", guestscripts.text("sctp-peer.py"))
        self.node_b, pid = self.node.start_container(NODE_B_CONTAINER, network_mode="none", privileged=True)
        script = guestscripts.render("scenario-net.sh", **network_values(pid, api_host))
        result = self.node.sh(script)
        self.setup_said = result.output
        if result.code != 0:
            lines = result.output.strip().splitlines()
            ran = [line[2:] for line in lines if line.startswith("+ ")][-1:]  # the script runs under set -x
            raise DataplaneError(
                f"setting up the scenarios' two nodes failed at `{' '.join(ran)}`: {' '.join(lines[-1:])}",
                'see "scenario network" in the results',
            )
        return result.output

    # -- kube-router on both nodes ----------------------------------------------------------
    def start(self, profile: str) -> dict[str, list[str]]:
        """Both kube-routers in ``profile``, each from a clean slate; their flags."""
        cleanup = self.stop()
        flags = {
            NODE_A: profile_flags(self.help_text, profile, w.NODE_NAME),
            NODE_B: profile_flags(self.help_text, profile, NODE_B_NAME),
        }
        # DSR finds a pod's process through the node's Docker (v0.3.2, and v2.x for
        # docker:// container IDs): the socket is mounted as a DaemonSet mounts it.
        docker = {"/var/run/docker.sock": "/var/run/docker.sock"}
        # v2.x's Docker client asks for its own API version (FromEnv, no negotiation:
        # v2.7.1 linux_networking.go:730) and the node's Docker 20.10 refuses anything above
        # 1.41, so DSR fails until the DaemonSet sets DOCKER_API_VERSION to the node's.
        env = {"DOCKER_API_VERSION": str(self.node.engine.version().get("ApiVersion", ""))}
        # ...and DSR enters the pod's network namespace through /proc/PID/ns/net, so the
        # DaemonSet runs in the host's PID namespace (hostPID: true, as upstream's do).
        self.kube_routers[NODE_A] = self.node.start_kube_router(
            flags[NODE_A], self.kubeconfig, binds=docker, environment=env, pid_mode="host"
        )
        self.kube_routers[NODE_B] = self.node.start_kube_router(
            flags[NODE_B],
            self.kubeconfig,
            name=KUBE_ROUTER_B,
            network_mode=f"container:{self.node_b}",
            binds={**docker, f"{_KRS}/node-b.xtables.lock": "/run/xtables.lock"},
            environment=env,
            pid_mode="host",
        )
        self.profile = profile
        if cleanup:
            flags["cleanup"] = [cleanup[-2000:]]
        return flags

    def stop(self) -> str:
        said = []
        for ns, container in list(self.kube_routers.items()):
            mode = "host" if ns == NODE_A else f"container:{self.node_b}"
            self.logs[f"{ns} ({self.profile})"] = self.node.engine.logs(container)[-20000:]
            said.append(self.node.stop_kube_router(container, mode))
            del self.kube_routers[ns]
        if not said and self.node.kube_router:  # the base proof's kube-router
            said.append(self.node.stop_kube_router(self.node.kube_router))
        self.node.sh(f"touch {_KRS}/node-b.xtables.lock")
        return "\n".join(said)

    def running(self) -> bool:
        return all(self.node.engine.running(c) for c in self.kube_routers.values())

    # -- commands -----------------------------------------------------------------------------
    def lib(self, function: str, *args: str | float, timeout: int = 120) -> Shell:
        """A helper of scenario-lib.sh, every argument shell-quoted."""
        quoted = " ".join(shlex.quote(str(a)) for a in args)
        return self.node.sh(f". {LIB}; {function} {quoted}", timeout=timeout)

    def sh_in(self, ns: str, *command: str) -> Shell:
        """A command in a namespace (``node`` = node A's)."""
        return self.lib("in_ns", ns, *command)

    def ipvs(self, ns: str) -> str:
        return self.sh_in(ns, "ipvsadm", "-Ln").output

    def tables(self, ns: str, timeout: int = 120) -> str:
        return self.lib("sc_tables", ns, timeout=timeout).output

    def iptables(self, ns: str, *args: str) -> str:
        return self.node.in_kube_router("iptables", *args, container=self.kube_routers.get(ns, "")).output

    def route_external(self, address: str, via: str | None) -> None:
        """Route one external address from the client through a node (``via``), or back
        to the ranges' routes (None)."""
        if via is None:
            self.sh_in(EXT, "ip", "route", "del", f"{address}/32")
        else:
            self.sh_in(EXT, "ip", "route", "replace", f"{address}/32", "via", via)

    def cut_primary_path(self) -> None:
        self.sh_in(EXT, "ip", "link", "set", "eth0", "down")

    def restore_primary_path(self, ranges: Sequence[str]) -> None:
        """The client's first link up again, with the routes its going down removed (its
        addresses stay: keep_addr_on_down, set at build)."""
        self.sh_in(EXT, "ip", "link", "set", "eth0", "up")
        for cidr in ranges:
            family, via = ("-6", NODE_A_IP6) if ":" in cidr else ("-4", w.NODE_IP)
            self.sh_in(EXT, "ip", family, "route", "replace", cidr, "via", via, "metric", "10")
