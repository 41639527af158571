"""The 2019 field report's cluster as API objects, for the Kubernetes API stand-in.

The report ran the NodePort Service ``sctp-expserver`` (clusterIP 10.254.125.172,
externalIP 10.120.10.120; 32000/SCTP, 32001/TCP, 32002/UDP with port = targetPort =
nodePort) in front of one pod, 172.20.1.6 with label app=sctp-socket, on node k8s02
(10.101.50.117); pod CIDR 172.20.0.0/16, service CIDR 10.254.0.0/16. The builders take
those as defaults and let a test put the pod and node where its own network has them.
Endpoints and EndpointSlices are both built: kube-router up to v2.5 reads Endpoints,
v2.0 and later EndpointSlices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

Obj = dict[str, Any]

POD_CIDR = "172.20.0.0/16"
SERVICE_CIDR = "10.254.0.0/16"
CLUSTER_IP = "10.254.125.172"
EXTERNAL_IP = "10.120.10.120"
POD_IP = "172.20.1.6"
NODE_NAME = "k8s02"
NODE_IP = "10.101.50.117"
NODE_POD_CIDR = "172.20.1.0/24"
SERVICE_NAME = "sctp-expserver"
POD_NAME = "sctp-deploy-5c9dfb5959-gw5g9"
APP_LABELS: Mapping[str, str] = {"app": "sctp-socket"}


class Port(NamedTuple):
    name: str
    port: int  # also the targetPort, the nodePort and the container port
    protocol: str  # SCTP, TCP or UDP


PORTS: tuple[Port, ...] = (Port("sctp", 32000, "SCTP"), Port("tcp", 32001, "TCP"), Port("udp", 32002, "UDP"))


def _meta(name: str, namespace: str | None = None, labels: Mapping[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    return meta


def namespace(name: str = "default", labels: Mapping[str, str] | None = None) -> Obj:
    all_labels = {"kubernetes.io/metadata.name": name, **(labels or {})}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": _meta(name, labels=all_labels),
        "status": {"phase": "Active"},
    }


def node(name: str = NODE_NAME, internal_ip: str = NODE_IP, pod_cidr: str = NODE_POD_CIDR) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _meta(name, labels={"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}),
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": internal_ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def service(
    name: str = SERVICE_NAME,
    ns: str = "default",
    *,
    cluster_ip: str = CLUSTER_IP,
    external_ips: Sequence[str] = (EXTERNAL_IP,),
    ports: Sequence[Port] = PORTS,
    selector: Mapping[str, str] = APP_LABELS,
    service_type: str = "NodePort",
) -> Obj:
    spec: Obj = {
        "type": service_type,
        "clusterIP": cluster_ip,
        "clusterIPs": [cluster_ip],
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "selector": dict(selector),
        "sessionAffinity": "None",
        # What every API server since 1.22 defaults; kube-router v2.x dereferences it.
        "internalTrafficPolicy": "Cluster",
        "ports": [
            {"name": p.name, "protocol": p.protocol, "port": p.port, "targetPort": p.port}
            | ({"nodePort": p.port} if service_type in ("NodePort", "LoadBalancer") else {})
            for p in ports
        ],
    }
    if external_ips:
        spec["externalIPs"] = list(external_ips)
    if service_type in ("NodePort", "LoadBalancer"):
        spec["externalTrafficPolicy"] = "Cluster"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, ns),
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def _target(pod_name: str, ns: str) -> Obj:
    return {"kind": "Pod", "namespace": ns, "name": pod_name}


def endpoints(
    name: str = SERVICE_NAME,
    ns: str = "default",
    *,
    pod_ip: str = POD_IP,
    node_name: str = NODE_NAME,
    pod_name: str = POD_NAME,
    ports: Sequence[Port] = PORTS,
) -> Obj:
    address = {"ip": pod_ip, "nodeName": node_name, "targetRef": _target(pod_name, ns)}
    subset = {
        "addresses": [address],
        "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in ports],
    }
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": _meta(name, ns), "subsets": [subset]}


def endpoint_slice(
    service_name: str = SERVICE_NAME,
    ns: str = "default",
    *,
    pod_ip: str = POD_IP,
    node_name: str = NODE_NAME,
    pod_name: str = POD_NAME,
    ports: Sequence[Port] = PORTS,
) -> Obj:
    labels = {
        "kubernetes.io/service-name": service_name,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": _meta(f"{service_name}-stand-in", ns, labels),
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [pod_ip],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": node_name,
                "targetRef": _target(pod_name, ns),
            }
        ],
        "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in ports],
    }


def pod(
    name: str = POD_NAME,
    ns: str = "default",
    *,
    pod_ip: str = POD_IP,
    node_name: str = NODE_NAME,
    host_ip: str = NODE_IP,
    labels: Mapping[str, str] = APP_LABELS,
    ports: Sequence[Port] = PORTS,
) -> Obj:
    container_ports = [{"name": p.name, "containerPort": p.port, "protocol": p.protocol} for p in ports]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(name, ns, labels),
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "server", "image": "sctp-server", "ports": container_ports}],
        },
        "status": {
            "phase": "Running",
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def network_policy(
    name: str = "allow-sctp",
    ns: str = "default",
    *,
    pod_labels: Mapping[str, str] = APP_LABELS,
    port: int | str = 32000,
    protocol: str = "SCTP",
    from_cidr: str | None = None,
) -> Obj:
    """Ingress to the selected pods only on ``protocol``/``port`` (a number or a container
    port name), from anywhere, or only from ``from_cidr``."""
    rule: Obj = {"ports": [{"protocol": protocol, "port": port}]}
    if from_cidr:
        rule["from"] = [{"ipBlock": {"cidr": from_cidr}}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, ns),
        "spec": {"podSelector": {"matchLabels": dict(pod_labels)}, "policyTypes": ["Ingress"], "ingress": [rule]},
    }


def topology_2019(
    *,
    node_name: str = NODE_NAME,
    node_ip: str = NODE_IP,
    node_pod_cidr: str = NODE_POD_CIDR,
    pod_ip: str = POD_IP,
) -> list[Obj]:
    """The report's Service with its pod on one node: what the service proxy needs."""
    return [
        namespace("default"),
        namespace("kube-system"),
        node(node_name, node_ip, node_pod_cidr),
        service(),
        endpoints(pod_ip=pod_ip, node_name=node_name),
        endpoint_slice(pod_ip=pod_ip, node_name=node_name),
        pod(pod_ip=pod_ip, node_name=node_name, host_ip=node_ip),
    ]
