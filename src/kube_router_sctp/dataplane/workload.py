"""What the proof runs and sends to, derived from the Services as the API server holds them.

The manifests (the 2019 report's ``sctp-service.yaml`` by default, or an operator's
directory) are applied with kubectl; then each Service is read back from the API server,
defaulted and allocated (cluster IP, node ports), and the proof plans from that:

- one pod per Service, labelled with the Service's selector, at the next address of the
  node's pod range; each pod serves every target port of every Service that selects it,
  so Services sharing a selector share pods, as they would in a cluster;
- one target per (Service port, address): the cluster IP (client: the node), the node's
  InternalIP at the node port (client: the external host) and each external IP (client:
  the external host), as the Service has them.

Services the proof cannot cover say why (no selector, headless, no ports) and are left
out. Addresses that would collide with the test's own network are refused: a Service
whose external IP is the address the node reaches the API server by would cut the node
off from it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..controlplane.kubelet import PodSpec
from ..errors import ConfigError

NODE_NAME = "k8s02"  # the report's node
NODE_IP = "10.101.50.117"  # its InternalIP, on the veth to the external host
CLIENT_IP = "10.101.50.85"  # the report's external SCTP client
NODE_SUBNET = "10.101.50.0/24"
POD_CIDR = "172.20.0.0/16"  # the report's --cluster-cidr
NODE_POD_CIDR = "172.20.1.0/24"
BRIDGE_IP = "172.20.1.1"  # the node's address on the pods' bridge (their gateway)
FIRST_POD_HOST = 6  # the report's pod was 172.20.1.6
SLIRP_SUBNET = "10.0.2.0/24"  # QEMU user networking: the node's path to the API server
PROTOCOLS = ("SCTP", "TCP", "UDP")

CLUSTER_IP, NODE_PORT, EXTERNAL_IP = "ClusterIP", "NodePort", "ExternalIP"
NODE = "node"  # the client runs in the node's root network namespace
EXTERNAL = "ext"  # the client runs on the external host
CLIENT = {NODE: "node (root netns)", EXTERNAL: "external host"}


@dataclass(frozen=True)
class ServicePort:
    name: str
    protocol: str
    port: int
    target_port: int  # the number the pod listens on
    target_name: str  # the pod's port name when targetPort names one, else ""
    node_port: int  # 0: none


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    type: str
    cluster_ip: str  # "" for headless
    external_ips: tuple[str, ...]
    selector: Mapping[str, str]
    ports: tuple[ServicePort, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects(self, labels: Mapping[str, str]) -> bool:
        return bool(self.selector) and all(labels.get(k) == v for k, v in self.selector.items())


@dataclass(frozen=True)
class Target:
    """One cell: a Service port through one of its addresses, from one client."""

    service: Service
    port: ServicePort
    kind: str  # ClusterIP, NodePort, ExternalIP
    address: str
    dst_port: int  # port (ClusterIP, ExternalIP) or nodePort
    client: str  # NODE or EXTERNAL

    @property
    def protocol(self) -> str:
        return self.port.protocol


@dataclass(frozen=True)
class Pod:
    """A pod of the proof: its API object's spec and its network namespace in the guest."""

    spec: PodSpec
    netns: str
    serves: tuple[tuple[str, int], ...]  # (protocol, port) its echo servers listen on
    unlisted: int  # an SCTP port it serves that no Service names

    @property
    def ip(self) -> str:
        return self.spec.ip


@dataclass
class Workload:
    services: list[Service]
    pods: list[Pod]  # run from the start
    subject: Service  # the one the further checks (policy, endpoints change, deletion) act on
    spare: Pod  # a second pod for the subject, which the endpoints change moves to
    skipped: list[str] = field(default_factory=list)  # Services left out, and why

    def backends(self, service: Service) -> list[Pod]:
        return [pod for pod in self.pods if service.selects(pod.spec.labels)]

    def targets(self) -> list[Target]:
        found = []
        for service in self.services:
            for port in service.ports:
                found.append(Target(service, port, CLUSTER_IP, service.cluster_ip, port.port, NODE))
                if port.node_port:
                    found.append(Target(service, port, NODE_PORT, NODE_IP, port.node_port, EXTERNAL))
                for address in service.external_ips:
                    found.append(Target(service, port, EXTERNAL_IP, address, port.port, EXTERNAL))
        return found

    def external_ips(self) -> list[str]:
        return sorted({ip for service in self.services for ip in service.external_ips}, key=ipaddress.ip_address)

    def guest_pods(self) -> list[Pod]:
        """Every pod whose network the node needs from the start (the spare included)."""
        return [*self.pods, self.spare]


# -- reading Services back -------------------------------------------------------------------
def service_from_api(obj: Mapping[str, Any]) -> Service:
    meta, spec = obj.get("metadata", {}), obj.get("spec", {})
    ports = []
    for index, raw in enumerate(spec.get("ports", [])):
        target = raw.get("targetPort", raw.get("port"))
        number, name = (target, "") if isinstance(target, int) else (int(raw["port"]), str(target))
        ports.append(
            ServicePort(
                name=str(raw.get("name") or f"port-{index}"),
                protocol=str(raw.get("protocol", "TCP")),
                port=int(raw["port"]),
                target_port=int(number),
                target_name=name,
                node_port=int(raw.get("nodePort") or 0),
            )
        )
    return Service(
        namespace=str(meta.get("namespace", "default")),
        name=str(meta["name"]),
        type=str(spec.get("type", "ClusterIP")),
        cluster_ip="" if spec.get("clusterIP") in (None, "", "None") else str(spec["clusterIP"]),
        external_ips=tuple(str(ip) for ip in spec.get("externalIPs", []) or []),
        selector={str(k): str(v) for k, v in (spec.get("selector") or {}).items()},
        ports=tuple(ports),
    )


def _reserved() -> list[tuple[str, ipaddress.IPv4Network]]:
    return [
        ("the node's link to the API server (QEMU user networking)", ipaddress.IPv4Network(SLIRP_SUBNET)),
        ("the node's and the external host's network", ipaddress.IPv4Network(NODE_SUBNET)),
        ("the pod network", ipaddress.IPv4Network(POD_CIDR)),
        ("loopback", ipaddress.IPv4Network("127.0.0.0/8")),
    ]


def check(service: Service) -> None:
    """Refuse a Service whose addresses the proof's own network uses."""
    for address in service.external_ips:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError as exc:
            raise ConfigError(f"Service {service.key}: external IP {address!r} is not an address", "fix it") from exc
        if ip.version != 4:
            raise ConfigError(
                f"Service {service.key}: external IP {address} is IPv6, which the proof's node does not route yet",
                "use IPv4 external IPs",
            )
        for what, network in _reserved():
            if ip in network:
                raise ConfigError(
                    f"Service {service.key}: external IP {address} is in {network}, {what}",
                    "choose another external IP for the proof",
                )
    for port in service.ports:
        if port.protocol not in PROTOCOLS:
            raise ConfigError(f"Service {service.key}: protocol {port.protocol!r} is not SCTP, TCP or UDP", "fix it")


def plan(services: Sequence[Service]) -> Workload:
    """Pods and targets for ``services`` (as the API server returned them). The subject of
    the further checks is the first Service with an SCTP port (else the first)."""
    covered, skipped = [], []
    for service in sorted(services, key=lambda s: (s.namespace, s.name)):
        why = ""
        if not service.selector:
            why = "no selector (its endpoints are not made from pods)"
        elif not service.cluster_ip:
            why = "headless (no virtual address to send to)"
        elif not service.ports:
            why = "no ports"
        if why:
            skipped.append(f"{service.key}: {why}")
            continue
        check(service)
        covered.append(service)
    if not covered:
        raise ConfigError(
            "the manifests hold no Service the proof can cover" + (f" ({'; '.join(skipped)})" if skipped else ""),
            "give verify --manifests a directory with at least one Service that has a selector and ports",
        )
    addresses = list(ipaddress.IPv4Network(NODE_POD_CIDR).hosts())[FIRST_POD_HOST - 1 :]
    hosts = iter(addresses)

    def address() -> ipaddress.IPv4Address:
        taken = next(hosts, None)
        if taken is None:
            raise ConfigError(
                f"the manifests' Services need more pods than the node's pod network {NODE_POD_CIDR} "
                f"holds ({len(addresses)}, one kept spare)",
                "prove fewer Services in one run (split the directory)",
            )
        return taken

    pods: list[Pod] = []
    for service in covered:
        if any(pod.spec.namespace == service.namespace and service.selects(pod.spec.labels) for pod in pods):
            continue  # a pod with these labels exists already: it serves this Service too
        pods.append(_pod(service.namespace, f"{service.name}-echo-a", service.selector, address(), covered, len(pods)))
    subject = next((s for s in covered if any(p.protocol == "SCTP" for p in s.ports)), covered[0])
    first = next(pod for pod in pods if subject.selects(pod.spec.labels))
    spare = _pod(subject.namespace, f"{subject.name}-echo-b", first.spec.labels, address(), covered, len(pods))
    return Workload(covered, pods, subject, spare, skipped)


def _pod(
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    ip: ipaddress.IPv4Address,
    services: Sequence[Service],
    index: int,
) -> Pod:
    """A pod with echo servers on the target ports of every Service selecting ``labels``,
    and on one SCTP port none of them names (the NetworkPolicy check's closed port)."""
    serves: dict[tuple[str, int], str] = {}
    for service in services:
        if service.namespace == namespace and service.selects(labels):
            for port in service.ports:
                serves.setdefault((port.protocol, port.target_port), port.target_name or port.name)
    taken = {number for _, number in serves}
    # An SCTP port no Service names: the first free one above them, else below.
    unlisted = next(n for n in (*range(max(taken) + 1, 65536), *range(1, 65536)) if n not in taken)
    ports = _unique_names([(name_, number, protocol) for (protocol, number), name_ in serves.items()])
    spec = PodSpec(name, namespace, dict(labels), str(ip), ports)
    return Pod(spec, f"pod-{index}", (*sorted(serves), ("SCTP", unlisted)), unlisted)


def _unique_names(ports: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    """Container port names must be unique in a pod; a clash keeps only the first name."""
    seen: set[str] = set()
    result = []
    for name, number, protocol in ports:
        keep = name if name and name not in seen and _port_name(name) else ""
        seen.add(keep)
        result.append((keep, number, protocol))
    return result


# A container port name (IANA_SVC_NAME): lower-case letters, digits and single inner
# hyphens, at least one letter, at most 15 characters.
_PORT_NAME = re.compile(r"(?=[a-z0-9-]{1,15}\Z)(?=.*[a-z])(?!.*--)[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")


def _port_name(name: str) -> bool:
    return _PORT_NAME.fullmatch(name) is not None
