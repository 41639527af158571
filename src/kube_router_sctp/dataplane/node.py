"""The node under test: a Docker-host VM on Debian's kernel, wired like the 2019 report's
node, with kube-router running on it as a cluster runs it.

Everything here is real: the kernel (IPVS, SCTP, netfilter, ipset), the network
namespaces and veths, the bridge, the echo servers and clients (socat), and kube-router
in a privileged host-network container of the image under test, talking to a real API
server on the host (``controlplane``), which the guest reaches as 10.0.2.2. What is
absent is the kubelet: the test makes each pod's network namespace, as a container
runtime and CNI plugin would, and ``controlplane.kubelet`` reports the pods to the API.

The guest is driven through its Docker API (a loopback port forwarded by QEMU). Commands
run in the guest's own namespaces: a privileged "toolbox" container of the image under
test (host network and PID namespace, the guest's root bind-mounted) enters PID 1's
namespaces with the guest's nsenter, so every tool is the guest's (socat, ipvsadm,
iptables, ip) and a background process outlives the command that started it.

The node is driven through the guest's Docker API with ``Engine`` (long-lived containers,
exec, the image copied in from the building daemon); a failure of that API becomes a
DataplaneError that says control of the node was lost.
"""

from __future__ import annotations

import functools
import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from .. import log
from ..controlplane.cluster import SERVICE_CIDR
from ..engine import Engine
from ..errors import DataplaneError, DockerError
from . import workload as w

# -- the topology (the report's addresses where it gives them) ---------------------------
NODE_IP = w.NODE_IP
CLIENT_IP = w.CLIENT_IP
POD_CIDR = w.POD_CIDR
BRIDGE_IP = w.BRIDGE_IP
EXTERNAL_NS = w.EXTERNAL
NODE = w.NODE

_LABEL = {"io.github.kube-router-sctp.role": "dataplane"}
_LIB = "/run/krs/lib.sh"  # the guest-side helpers, written at set-up
_KUBECONFIG = "/var/lib/kube-router/kubeconfig"
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(what: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Turn a failure of the guest's Docker API into a DataplaneError that says so: the
    run then ends with its results so far instead of a traceback."""

    def decorate(func: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(func)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return func(*args, **kwargs)
            except DockerError as exc:  # engine.py turns every SDK and HTTP failure into one
                raise DataplaneError(
                    f"lost control of the node: could not {what} ({' '.join(exc.message.split())[:200]})",
                    "see the guest console in the results; each run boots a fresh node, so run again",
                ) from exc

        return wrapper

    return decorate


# The flags of a kube-router DaemonSet that runs the service proxy and the firewall (the
# report's, without the BGP router, which needs peers this node does not have).
BASE_FLAGS = (
    "--run-service-proxy=true",
    "--run-firewall=true",
    "--run-router=false",
    "--masquerade-all=true",
    "--hairpin-mode=true",
    "--nodeport-bindon-all-ip=true",
    f"--hostname-override={w.NODE_NAME}",
    f"--kubeconfig={_KUBECONFIG}",
    "--v=3",
)
# Flags only some releases have; given when ``kube-router --help`` lists them, since an
# unknown flag stops kube-router (v2 dropped --cluster-cidr; v1.0+ assume 10.96.0.0/12
# for services unless told).
OPTIONAL_FLAGS = (
    f"--cluster-cidr={POD_CIDR}",
    f"--service-cluster-ip-range={SERVICE_CIDR}",
)
EXTERNAL_RANGE_FLAG = "--service-external-ip-range"  # v1.x+: each Service's external IPs

_LIB_SCRIPT = r"""
# Helpers of the dataplane proof, sourced by each command the host runs in the guest.
in_ns() { # in_ns NS COMMAND...: run in a network namespace ("node" = the root one)
    ns=$1; shift
    if [ "$ns" = node ]; then "$@"; else ip netns exec "$ns" "$@"; fi
}
probe() { # probe NS PROTO ADDR PORT MESSAGE WAIT: send one message, print the echo
    ns=$1 proto=$2 addr=$3 port=$4 msg=$5 wait=$6
    # connect-timeout: an SCTP INIT nobody answers is retransmitted for a minute.
    case $proto in
    SCTP) target=SCTP-CONNECT:$addr:$port,connect-timeout=$wait ;;
    TCP) target=TCP:$addr:$port,connect-timeout=$wait ;;
    UDP) target=UDP:$addr:$port ;;
    esac
    # SCTP has no half-close: a client that ends on EOF of its input would abort the
    # association before the reply. ignoreeof keeps it open until the server's reply and
    # close end it, or until -T seconds pass with no traffic. UDP never closes, so its
    # idle limit is what ends a successful probe: keep it short.
    idle=$wait
    [ "$proto" = UDP ] && idle=2
    start=$(date +%s%N)
    echo "$msg" | in_ns "$ns" timeout "$((wait + 3))" socat -T "$idle" -,ignoreeof "$target" 2>&1
    echo "KRS-PROBE status=$? ms=$((($(date +%s%N) - start) / 1000000))"
}
serve() { # serve NS IP PROTO:PORT...: echo servers answering with the pod's address, as daemons
    ns=$1 ip=$2
    shift 2
    for spec in "$@"; do
        proto=${spec%%:*} port=${spec#*:}
        case $proto in
        SCTP) listen=SCTP-LISTEN:$port ;;
        TCP) listen=TCP-LISTEN:$port ;;
        UDP) listen=UDP-RECVFROM:$port ;;
        esac
        reply="read -r line; echo \"\$line pod=$ip port=$port\""
        ip netns exec "$ns" setsid -f socat "$listen,fork,reuseaddr" SYSTEM:"$reply" \
            </dev/null >"/run/krs/$ns-$proto-$port.log" 2>&1
    done
}
stop_pod() { # stop_pod NS: end every process in a pod's network namespace (its "containers")
    for pid in $(ip netns pids "$1"); do kill "$pid" 2>/dev/null || true; done
}
"""

_SETUP_SCRIPT = r"""
set -eu
. @LIB@
# The pods' network, as the bridge CNI plugin (or kube-router's own CNI, with
# --run-router) would make it: a bridge holding the pods' gateway, a veth per pod.
ip link add kube-bridge type bridge
ip addr add @BRIDGE_IP@/24 dev kube-bridge
ip link set kube-bridge up
pod() { # pod NS IP PROTO:PORT...: a pod's network namespace on the bridge, and its servers
    ns=$1 ip=$2
    ip netns add "$ns"
    ip link add "veth-$ns" type veth peer name eth0 netns "$ns"
    ip link set "veth-$ns" master kube-bridge up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via @BRIDGE_IP@
    serve "$@"
}
@PODS@
# The external host (the report's SCTP client) and the node's InternalIP: a veth pair.
# The client routes the external IP and the pod network via the node, as an upstream
# router would.
ip netns add @EXT@
ip link add eth1 type veth peer name eth0 netns @EXT@
ip addr add @NODE_IP@/24 dev eth1
ip link set eth1 up
ip -n @EXT@ addr add @CLIENT_IP@/24 dev eth0
ip -n @EXT@ link set lo up
ip -n @EXT@ link set eth0 up
ip -n @EXT@ route add @POD_CIDR@ via @NODE_IP@
@EXTERNAL_ROUTES@
# Forwarding to and from pods, as a CNI allows it. Docker sets FORWARD's policy to DROP
# when it has to turn forwarding on itself; IPVS-NAT replies to clients off the node
# pass FORWARD, so without these NodePort and ExternalIP traffic would die there.
echo 1 > /proc/sys/net/ipv4/ip_forward
iptables -A FORWARD -s @POD_CIDR@ -m comment --comment "krs: pod network, as a CNI" -j ACCEPT
iptables -A FORWARD -d @POD_CIDR@ -m comment --comment "krs: pod network, as a CNI" -j ACCEPT
# kube-router's DaemonSet mounts the node's xtables lock (FileOrCreate).
touch /run/xtables.lock
echo "FORWARD policy: $(iptables -S FORWARD | head -n 1)"
ip -br addr
"""


def kube_router_mounts(binds: dict[str, str]) -> dict[str, str]:
    """What a DaemonSet mounts into kube-router (the node's modules, read-only, and its
    xtables lock), plus ``binds``; a bind of the caller's to the same place (node B's
    own xtables lock) replaces the default, since Docker refuses two mounts at one path."""
    defaults = {"/lib/modules": "/lib/modules:ro", "/run/xtables.lock": "/run/xtables.lock"}
    taken = {target.split(":", 1)[0] for target in binds.values()}
    kept = {host: target for host, target in defaults.items() if target.split(":", 1)[0] not in taken}
    return {**kept, **binds}


@dataclass(frozen=True)
class Shell:
    """What a command in the guest printed, and its exit status."""

    code: int
    output: str


@dataclass(frozen=True)
class Probe:
    """One message sent through the dataplane and what came back."""

    ok: bool
    reply: str
    ms: int  # the client's time, measured in the guest
    output: str


class Node:
    """The guest of one run: set up once, driven command by command, thrown away."""

    def __init__(self, engine: Engine, image: str) -> None:
        self.engine = engine
        self.image = image
        self.toolbox = ""
        self.kube_router = ""

    # -- containers ---------------------------------------------------------------------
    @_guarded("start the toolbox container")
    def start_toolbox(self) -> None:
        self.toolbox = self.engine.start(
            self.image,
            ["while :; do sleep 3600; done"],
            entrypoint=["/bin/sh", "-c"],
            privileged=True,
            network_mode="host",
            pid_mode="host",
            binds={"/": "/host"},
            labels={**_LABEL, "io.github.kube-router-sctp.part": "toolbox"},
            name="krs-toolbox",
        )

    def sh(self, script: str, timeout: int = 120) -> Shell:
        """Run ``script`` with the guest's /bin/sh in the guest's own namespaces."""
        command = [
            "chroot",
            "/host",
            "timeout",
            str(timeout),
            "nsenter",
            "--target=1",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--",
            "/bin/sh",
            "-c",
            script,
        ]
        return self._exec(self.toolbox, command)

    def in_kube_router(self, *command: str, container: str = "") -> Shell:
        """Run a command in kube-router's container (or another node's, ``container``):
        its iptables sees the rule set in the back end (legacy or nf_tables) that
        kube-router itself writes."""
        return self._exec(container or self.kube_router, list(command))

    @_guarded("run a command in the node")
    def _exec(self, container: str, command: list[str]) -> Shell:
        result = self.engine.exec(container, command)
        return Shell(result.exit_code, result.output)

    @_guarded("copy a file into a container")
    def put_file(self, container: str, path: str, text: str) -> None:
        """Write a file into a container (created or running) before it needs it."""
        self.engine.put_file(container, path, text)

    # -- set-up ---------------------------------------------------------------------------
    def set_up(self, pods: Sequence[w.Pod], external_ips: Sequence[str]) -> str:
        """The pods' network namespaces and echo servers, the external host and its routes;
        returns what the guest said."""
        self.put_file(self.toolbox, f"/host{_LIB}", _render(_LIB_SCRIPT))
        result = self.sh(_render(_SETUP_SCRIPT, pods, external_ips))
        if result.code != 0:
            raise DataplaneError(
                f"setting up the node's network failed: {log.last_line(result.output)}",
                "see the output above; the guest kernel may lack a module (veth, bridge, sctp)",
            )
        return result.output

    def kube_router_help(self) -> str:
        return self._run_once(["--help"])

    def stop_pod(self, pod: w.Pod) -> None:
        """End a pod's servers, as its containers stop when the pod is deleted."""
        self.sh(f". {_LIB}; stop_pod {shlex.quote(pod.netns)}")

    @_guarded("run kube-router --help")
    def _run_once(self, command: list[str]) -> str:
        return self.engine.run(self.image, command, timeout=120, labels=_LABEL).output

    @_guarded("start kube-router")
    def start_kube_router(
        self,
        flags: list[str],
        kubeconfig: str,
        *,
        name: str = "kube-router",
        network_mode: str = "host",
        binds: dict[str, str] | None = None,
        environment: dict[str, str] | None = None,
        pid_mode: str | None = None,
    ) -> str:
        """kube-router as its DaemonSet runs it: privileged, host network, the node's
        modules and xtables lock mounted, a kubeconfig with its service account's token.
        Another node's kube-router (``name``) joins that node's network namespace
        (``network_mode``, ``container:NODE``) with its own xtables lock (``binds``)."""
        started = self.engine.start(
            self.image,
            flags,
            privileged=True,
            network_mode=network_mode,
            binds=kube_router_mounts(binds or {}),
            environment=environment,
            pid_mode=pid_mode,
            labels={**_LABEL, "io.github.kube-router-sctp.part": name},
            name=name,
            files={_KUBECONFIG: kubeconfig},
        )
        if name == "kube-router":
            self.kube_router = started
        return started

    @_guarded("stop kube-router")
    def stop_kube_router(self, container: str, network_mode: str = "host") -> str:
        """Remove a kube-router container, then let the image's kube-router undo what it
        set up in that network namespace (``--cleanup-config``: IPVS services, iptables
        chains, ipsets), as an operator does before running it with other flags."""
        self.engine.remove(container)
        if container == self.kube_router:
            self.kube_router = ""
        return self.engine.run(
            self.image,
            ["--cleanup-config"],
            timeout=120,
            privileged=True,
            network_mode=network_mode,
            volumes={"/lib/modules": "/lib/modules:ro"},  # run() passes these as the container's binds
            labels=_LABEL,
        ).output

    @_guarded("start a container on the node")
    def start_container(self, name: str, network_mode: str = "none", privileged: bool = False) -> tuple[str, int]:
        """A long-lived container of the image under test doing nothing but hold its
        namespaces (a second node, a pod with a real container ID); its id and pid."""
        started = self.engine.start(
            self.image,
            ["while :; do sleep 3600; done"],
            entrypoint=["/bin/sh", "-c"],
            privileged=privileged,
            network_mode=network_mode,
            labels={**_LABEL, "io.github.kube-router-sctp.part": name},
            name=name,
        )
        return started, self.engine.pid(started)

    @_guarded("inspect kube-router's container")
    def kube_router_running(self) -> bool:
        return self.engine.running(self.kube_router)

    @_guarded("read kube-router's log")
    def kube_router_logs(self) -> str:
        if not self.kube_router:
            return ""
        return self.engine.logs(self.kube_router)

    # -- the dataplane --------------------------------------------------------------------
    def probe(self, ns: str, protocol: str, address: str, port: int, message: str, wait: int = 4) -> Probe:
        """Send ``message`` from namespace ``ns``; ok when the echo names the message."""
        args = " ".join(shlex.quote(a) for a in (ns, protocol, address, str(port), message, str(wait)))
        result = self.sh(f". {_LIB}; probe {args}", timeout=wait + 15)
        match = re.search(r"KRS-PROBE status=(\d{1,3}) ms=(\d{1,9})\b", result.output)
        body = result.output[: match.start()] if match else result.output
        reply = next((line for line in body.splitlines() if line.startswith(message)), "")
        return Probe(bool(reply), reply, int(match[2]) if match else 0, body.strip())

    def ipvs(self) -> str:
        return self.sh("ipvsadm -Ln").output

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float, interval: float = 1.0) -> float:
        """Poll ``check`` until it holds; return the seconds it took. Raises when kube-router
        exits meanwhile; returns -1 on time-out (the caller decides what that means)."""
        start = time.monotonic()
        while True:
            if check():
                return time.monotonic() - start
            if self.kube_router and not self.kube_router_running():
                raise DataplaneError(
                    f"kube-router exited while waiting for {what}: {log.last_line(self.kube_router_logs())}",
                    'see its log in the results (evidence "kube-router log (end)")',
                )
            if time.monotonic() - start > timeout:
                log.info(f"no {what} within {timeout:.0f}s")
                return -1.0
            time.sleep(interval)


def transfer_image(source: Engine, target: Engine, image: str) -> str:
    """Copy ``image`` from the building daemon into the guest's (save, streamed into load):
    no registry is needed, and the guest runs exactly the bytes that were built. Returns
    the image id, which is the same on both sides."""
    try:
        return source.copy_image_to(target, image)
    except DockerError as exc:
        raise DataplaneError(f"copying {image} into the node failed: {exc.message}", exc.hint) from exc


def kube_router_flags(help_text: str, external_ips: Sequence[str] = ()) -> list[str]:
    """The DaemonSet's flags, plus the optional ones this release understands."""
    extra = [flag for flag in OPTIONAL_FLAGS if flag.split("=", 1)[0] in help_text]
    if external_ips and EXTERNAL_RANGE_FLAG in help_text:
        extra.append(f"{EXTERNAL_RANGE_FLAG}={','.join(f'{ip}/32' for ip in external_ips)}")
    return [*BASE_FLAGS, *extra]


def _render(script: str, pods: Sequence[w.Pod] = (), external_ips: Sequence[str] = ()) -> str:
    """The guest script with the topology filled in. Every value is an address, a port
    number or a name this module made (the workload checked the addresses); each still
    goes through shlex.quote."""
    pod_lines = [
        " ".join(
            ["pod", shlex.quote(pod.netns), shlex.quote(pod.ip)] + [f"{proto}:{port}" for proto, port in pod.serves]
        )
        for pod in pods
    ]
    routes = [f"ip -n @EXT@ route add {shlex.quote(ip)}/32 via @NODE_IP@" for ip in external_ips]
    values = {  # in order: the generated lines use the placeholders after them
        "@PODS@": "\n".join(pod_lines),
        "@EXTERNAL_ROUTES@": "\n".join(routes),
        "@LIB@": _LIB,
        "@BRIDGE_IP@": BRIDGE_IP,
        "@EXT@": EXTERNAL_NS,
        "@NODE_IP@": NODE_IP,
        "@CLIENT_IP@": CLIENT_IP,
        "@POD_CIDR@": POD_CIDR,
    }
    for key, value in values.items():
        script = script.replace(key, value)
    return script
