"""What the dataplane proof plans from the Services the API server returns: pods, the
ports each serves, the targets to send to; and what it refuses."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kube_router_sctp.dataplane import workload as w
from kube_router_sctp.errors import ConfigError

# The 2019 report's Service as a 1.37 API server returns it (defaults filled in).
SCTP_EXPSERVER: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "sctp-expserver", "namespace": "default", "resourceVersion": "231"},
    "spec": {
        "type": "NodePort",
        "clusterIP": "10.254.125.172",
        "clusterIPs": ["10.254.125.172"],
        "externalIPs": ["10.120.10.120"],
        "selector": {"app": "sctp-socket"},
        "internalTrafficPolicy": "Cluster",
        "externalTrafficPolicy": "Cluster",
        "ports": [
            {"name": "sctp", "protocol": "SCTP", "port": 32000, "targetPort": 32000, "nodePort": 32000},
            {"name": "tcp", "protocol": "TCP", "port": 32001, "targetPort": 32001, "nodePort": 32001},
            {"name": "udp", "protocol": "UDP", "port": 32002, "targetPort": 32002, "nodePort": 32002},
        ],
    },
}
DIAMETER: dict[str, Any] = {
    "metadata": {"name": "diameter", "namespace": "telecom"},
    "spec": {
        "type": "ClusterIP",
        "clusterIP": "10.254.7.9",
        "selector": {"app": "diameter-peer"},
        "ports": [
            {"name": "diameter", "protocol": "SCTP", "port": 3868, "targetPort": "diameter"},
            {"name": "s1ap", "protocol": "SCTP", "port": 36412, "targetPort": 36412},
        ],
    },
}


def services(*objects: dict[str, Any]) -> list[w.Service]:
    return [w.service_from_api(o) for o in objects]


def test_the_2019_service_gives_nine_targets_and_one_pod_at_the_reports_address() -> None:
    plan = w.plan(services(SCTP_EXPSERVER))
    (pod,) = plan.pods
    assert pod.ip == "172.20.1.6" and pod.spec.labels == {"app": "sctp-socket"}
    assert pod.serves == (("SCTP", 32000), ("TCP", 32001), ("UDP", 32002), ("SCTP", 32003))
    assert pod.unlisted == 32003
    assert plan.spare.ip == "172.20.1.7" and plan.spare.spec.labels == pod.spec.labels
    assert plan.subject.name == "sctp-expserver"
    cells = {(t.kind, t.protocol, t.address, t.dst_port, t.client) for t in plan.targets()}
    assert len(cells) == 9
    assert ("ClusterIP", "SCTP", "10.254.125.172", 32000, w.NODE) in cells
    assert ("NodePort", "UDP", w.NODE_IP, 32002, w.EXTERNAL) in cells
    assert ("ExternalIP", "TCP", "10.120.10.120", 32001, w.EXTERNAL) in cells
    assert plan.external_ips() == ["10.120.10.120"]
    assert {p.netns for p in plan.guest_pods()} == {"pod-0", "pod-1"}


def test_a_named_target_port_is_served_on_the_service_port_under_that_name() -> None:
    plan = w.plan(services(SCTP_EXPSERVER, DIAMETER))
    diameter = next(p for p in plan.pods if p.spec.namespace == "telecom")
    assert ("diameter", 3868, "SCTP") in diameter.spec.ports
    assert ("SCTP", 3868) in diameter.serves and ("SCTP", 36412) in diameter.serves
    targets = [t for t in plan.targets() if t.service.name == "diameter"]
    assert {(t.kind, t.dst_port) for t in targets} == {("ClusterIP", 3868), ("ClusterIP", 36412)}


def test_services_sharing_a_selector_share_their_pod_which_serves_both() -> None:
    other = copy.deepcopy(SCTP_EXPSERVER)
    other["metadata"]["name"] = "sctp-second"
    other["spec"]["clusterIP"] = "10.254.125.173"
    other["spec"]["externalIPs"] = []
    other["spec"]["ports"] = [{"name": "m3ua", "protocol": "SCTP", "port": 2905, "targetPort": 2905}]
    plan = w.plan(services(SCTP_EXPSERVER, other))
    (pod,) = plan.pods
    assert ("SCTP", 2905) in pod.serves and ("SCTP", 32000) in pod.serves
    for service in plan.services:
        assert plan.backends(service) == [pod]


def test_services_the_proof_cannot_cover_are_skipped_with_the_reason() -> None:
    headless = copy.deepcopy(DIAMETER)
    headless["metadata"]["name"] = "peers"
    headless["spec"]["clusterIP"] = "None"
    no_selector = copy.deepcopy(DIAMETER)
    no_selector["metadata"]["name"] = "external-db"
    del no_selector["spec"]["selector"]
    plan = w.plan(services(SCTP_EXPSERVER, headless, no_selector))
    assert [s.name for s in plan.services] == ["sctp-expserver"]
    assert any("peers: headless" in note for note in plan.skipped)
    assert any("external-db: no selector" in note for note in plan.skipped)
    with pytest.raises(ConfigError, match="no Service the proof can cover"):
        w.plan(services(headless))


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("10.0.2.2", "QEMU user networking"),
        ("10.101.50.117", "external host's network"),
        ("172.20.9.9", "pod network"),
        ("fd00::1", "IPv6"),
    ],
)
def test_an_external_ip_the_test_network_uses_is_refused(address: str, why: str) -> None:
    hostile = copy.deepcopy(SCTP_EXPSERVER)
    hostile["spec"]["externalIPs"] = [address]
    with pytest.raises(ConfigError, match=why):
        w.plan(services(hostile))


def test_the_subject_is_the_first_service_with_an_sctp_port() -> None:
    plain = copy.deepcopy(DIAMETER)
    plain["metadata"]["namespace"] = "aaa"
    plain["spec"]["ports"] = [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
    plan = w.plan(services(plain, SCTP_EXPSERVER))
    assert plan.subject.name == "sctp-expserver"
    assert plan.spare.spec.labels == {"app": "sctp-socket"}


def test_more_services_than_the_pod_network_holds_is_one_line() -> None:
    # 249 Services with selectors of their own need 250 pods (one spare): the node's /24
    # from .6 holds 249. Before: a bare StopIteration traceback.
    many = []
    for index in range(249):
        service = copy.deepcopy(SCTP_EXPSERVER)
        service["metadata"]["name"] = f"svc-{index}"
        service["spec"]["selector"] = {"app": f"a{index}"}
        service["spec"]["clusterIP"] = service["spec"]["clusterIPs"][0] = f"10.254.{index // 200}.{index % 200 + 2}"
        many.append(service)
    assert len(w.plan(services(*many[:248])).pods) == 248
    with pytest.raises(ConfigError, match="more pods than the node's pod network"):
        w.plan(services(*many))


def test_the_closed_port_is_one_the_pod_does_not_serve() -> None:
    wide = copy.deepcopy(SCTP_EXPSERVER)
    wide["spec"]["ports"] = [
        {"name": "low", "protocol": "SCTP", "port": 1, "targetPort": 1, "nodePort": 32000},
        {"name": "high", "protocol": "SCTP", "port": 65535, "targetPort": 65535, "nodePort": 32001},
    ]
    pod = w.plan(services(wide)).pods[0]
    assert 0 < pod.unlisted <= 65535 and pod.unlisted not in (1, 65535)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("sctp", True),
        ("s1ap-1", True),
        ("sctp--x", False),
        ("1234", False),
        ("-a", False),
        ("a-", False),
        ("x" * 16, False),
    ],
)
def test_container_port_names_follow_the_api_servers_rule(name: str, valid: bool) -> None:
    assert w._port_name(name) is valid
