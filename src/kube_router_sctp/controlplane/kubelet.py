"""The kubelet's part, played through the API as kwok plays it.

There is no kubelet on the node (no container runtime for pods, no CNI plugin: the test
makes the pods' network namespaces itself). What a kubelet would tell the API server, this
does, through the same requests: it registers the Node and posts its status (InternalIP,
Ready), and for each pod bound to the node it posts the pod's status (Running, its IP,
Ready) through the status subresource once the test has made the pod's network; a pod
being deleted is confirmed gone (grace period 0), as a kubelet does once its containers
have stopped. Nothing else is faked: Endpoints and EndpointSlices come from the real
controllers, watching these Pods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .kubectl import Kubectl, Obj


@dataclass(frozen=True)
class PodSpec:
    """A pod the test runs on the node: its object and the address its network has."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    ip: str
    ports: Sequence[tuple[str, int, str]]  # (name, containerPort, protocol)
    ip6: str = ""  # a dual-stack pod's IPv6 address
    container_id: str = ""  # "docker://ID" where the pod is a real container (DSR finds its process)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _conditions(types: Sequence[str]) -> list[dict[str, str]]:
    now = _now()
    return [{"type": kind, "status": "True", "lastTransitionTime": now} for kind in types]


class Kubelet:
    """The kubelet of one node, speaking to the API server through ``kubectl``."""

    def __init__(
        self, kubectl: Kubectl, node_name: str, node_ip: str, pod_cidr: str, node_ip6: str = "", pod_cidr6: str = ""
    ) -> None:
        self.kubectl = kubectl
        self.node_name = node_name
        self.node_ip = node_ip
        self.pod_cidr = pod_cidr
        self.node_ip6 = node_ip6  # a dual-stack node's IPv6 InternalIP and pod range
        self.pod_cidr6 = pod_cidr6

    def register(self, labels: Mapping[str, str] | None = None) -> None:
        """Create the Node, then post its status: addresses and Ready."""
        node: Obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux", **(labels or {})},
            },
            "spec": {
                "podCIDR": self.pod_cidr,
                "podCIDRs": [self.pod_cidr, *([self.pod_cidr6] if self.pod_cidr6 else [])],
            },
        }
        self.kubectl.apply([node])
        current = self.kubectl.get("node", self.node_name)
        current["status"] = {
            **current.get("status", {}),
            "addresses": [
                {"type": "InternalIP", "address": self.node_ip},
                *([{"type": "InternalIP", "address": self.node_ip6}] if self.node_ip6 else []),
                {"type": "Hostname", "address": self.node_name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "the dataplane proof's node (no kubelet: the test posts this status)",
                    "lastHeartbeatTime": _now(),
                    "lastTransitionTime": _now(),
                }
            ],
        }
        self.kubectl.replace_raw(f"/api/v1/nodes/{self.node_name}/status", current)

    def run(self, pods: Sequence[PodSpec]) -> None:
        """Create the pods bound to this node, then report each Running and Ready at its IP
        (the caller has made their network namespaces and started their servers)."""
        self.kubectl.apply([self.pod_object(pod) for pod in pods])
        for pod in pods:
            self.report_running(pod)

    def pod_object(self, pod: PodSpec) -> Obj:
        ports = [
            ({"name": name} if name else {}) | {"containerPort": port, "protocol": protocol}
            for name, port, protocol in pod.ports
        ]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": dict(pod.labels)},
            "spec": {
                "nodeName": self.node_name,  # bound already: there is no scheduler either
                "containers": [{"name": "echo", "image": "kube-router-sctp/echo:none", "ports": ports}],
                "terminationGracePeriodSeconds": 0,
            },
        }

    def report_running(self, pod: PodSpec, ready: bool = True) -> None:
        """Running at its IP(s); ``ready=False``: its readiness probe fails (still running)."""
        current = self.kubectl.get("pod", pod.name, pod.namespace)
        started = _now()
        conditions = _conditions(("PodScheduled", "Initialized", "ContainersReady", "Ready"))
        if not ready:
            conditions = [
                c if c["type"] in ("PodScheduled", "Initialized") else {**c, "status": "False"} for c in conditions
            ]
        current["status"] = {
            "phase": "Running",
            "hostIP": self.node_ip,
            "hostIPs": [{"ip": self.node_ip}, *([{"ip": self.node_ip6}] if self.node_ip6 else [])],
            "podIP": pod.ip,
            "podIPs": [{"ip": pod.ip}, *([{"ip": pod.ip6}] if pod.ip6 else [])],
            "startTime": started,
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": "echo",
                    "ready": ready,
                    "started": True,
                    "restartCount": 0,
                    "image": "kube-router-sctp/echo:none",
                    "imageID": "",
                    "state": {"running": {"startedAt": started}},
                    **({"containerID": pod.container_id} if pod.container_id else {}),
                }
            ],
        }
        self.kubectl.replace_raw(f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status", current)

    def delete(self, pod: PodSpec) -> None:
        """Delete a pod and confirm it gone at once, as a kubelet does when its containers
        have stopped (the test stops its servers)."""
        self.kubectl.delete("pod", pod.name, pod.namespace, now=True)
