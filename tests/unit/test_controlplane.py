"""The control plane's pieces that need no process: the pin, the build key, kubeconfigs,
the kubelet stand-in's objects, RBAC per release, the audit log's reading, the tables."""

from __future__ import annotations

import dataclasses
import json
import re

from kube_router_sctp.controlplane import build
from kube_router_sctp.controlplane.kubectl import kubeconfig
from kube_router_sctp.controlplane.kubelet import Kubelet, PodSpec
from kube_router_sctp.dataplane.scenario import KUBE_ROUTER_USER, Outcome, api_requests


def test_the_pin_names_the_release_every_staging_module_and_its_sums() -> None:
    pin = build.load_pin()
    go_mod = pin.go_mod.decode()
    assert re.search(rf"^\tk8s\.io/kubernetes {re.escape(pin.kubernetes)}( // indirect)?$", go_mod, re.M)
    replaced = re.findall(r"^\t(k8s\.io/\S+) => (\S+) (\S+)$", go_mod, re.M)
    assert len(replaced) > 20
    assert all(module == target and version == pin.staging for module, target, version in replaced), replaced
    for command in pin.commands:
        assert f"k8s.io/kubernetes/cmd/{command}" in go_mod  # a tool of the scratch module
    assert f"k8s.io/kubernetes {pin.kubernetes} h1:" in pin.go_sum.decode()
    assert f"k8s.io/api {pin.staging} h1:" in pin.go_sum.decode()


def test_version_variables_and_stripping_go_into_the_link() -> None:
    pin = build.load_pin()
    flags = pin.ldflags()
    assert flags.startswith("-s -w ")
    assert f"-X k8s.io/component-base/version.gitVersion={pin.kubernetes}" in flags
    assert "-X k8s.io/component-base/version.gitMinor=37" in flags


def test_the_build_key_changes_with_any_input() -> None:
    pin = build.load_pin()
    key = build.build_key(pin, "a" * 64, "amd64")
    assert key == build.build_key(pin, "a" * 64, "amd64")
    assert key != build.build_key(pin, "b" * 64, "amd64")
    assert key != build.build_key(pin, "a" * 64, "arm64")
    assert key != build.build_key(dataclasses.replace(pin, go_sum=pin.go_sum + b"\n"), "a" * 64, "amd64")


def test_a_kubeconfig_is_written_without_kubectl() -> None:
    text = kubeconfig("https://10.0.2.2:40123", b"-----BEGIN CERTIFICATE-----\n", "t0ken", "kube-router")
    data = json.loads(text)
    assert data["clusters"][0]["cluster"]["server"] == "https://10.0.2.2:40123"
    assert data["users"] == [{"name": "kube-router", "user": {"token": "t0ken"}}]
    assert data["current-context"] == data["contexts"][0]["name"]


def test_pods_are_bound_to_the_node_and_name_their_ports() -> None:
    kubelet = Kubelet(None, "k8s02", "10.101.50.117", "172.20.1.0/24")  # type: ignore[arg-type]
    spec = PodSpec("sctp-expserver-echo-a", "default", {"app": "sctp-socket"}, "172.20.1.6", [("sctp", 32000, "SCTP")])
    pod = kubelet.pod_object(spec)
    assert pod["spec"]["nodeName"] == "k8s02"
    assert pod["spec"]["containers"][0]["ports"] == [{"name": "sctp", "containerPort": 32000, "protocol": "SCTP"}]
    unnamed = kubelet.pod_object(dataclasses.replace(spec, ports=[("", 32000, "SCTP")]))
    assert unnamed["spec"]["containers"][0]["ports"] == [{"containerPort": 32000, "protocol": "SCTP"}]


def test_kube_router_gets_the_cluster_role_of_its_release() -> None:
    from kube_router_sctp.verify import rbac_manifest

    old, new = rbac_manifest("v0.3.2").read_text(), rbac_manifest("v2.7.1").read_text()
    assert "endpointslices" not in old and "endpoints" in old
    assert "endpointslices" in new and "leases" in new
    assert rbac_manifest("v1.6.0").name == "rbac-v0.3-v1.yaml"
    assert rbac_manifest("v2.0.0").name == "rbac-v2.yaml"
    for text in (old, new):
        assert "verbs: [list, get, watch]" in text and "create, delete" not in text


def test_the_audit_log_counts_each_request_once() -> None:
    def event(audit_id: str, verb: str, uri: str, code: int, stage: str, user: str = KUBE_ROUTER_USER) -> dict:
        return {
            "auditID": audit_id,
            "stage": stage,
            "verb": verb,
            "requestURI": uri,
            "user": {"username": user},
            "responseStatus": {"code": code},
        }

    events = [
        event("1", "list", "/api/v1/services?limit=500&resourceVersion=0", 200, "ResponseComplete"),
        event("2", "watch", "/api/v1/services?watch=true&resourceVersion=12", 200, "ResponseStarted"),
        event("2", "watch", "/api/v1/services?watch=true&resourceVersion=12", 200, "ResponseComplete"),
        event("3", "list", "/apis/discovery.k8s.io/v1/endpointslices", 403, "ResponseComplete"),
        event("4", "list", "/api/v1/pods", 200, "ResponseComplete", user="krs-admin"),
    ]
    assert api_requests(events, KUBE_ROUTER_USER) == {
        ("list", "/api/v1/services", 200): 1,
        ("watch", "/api/v1/services", 200): 1,
        ("list", "/apis/discovery.k8s.io/v1/endpointslices", 403): 1,
    }


def test_cells_are_tabled_per_service_with_a_column_per_port() -> None:
    from kube_router_sctp.verify import cell_tables

    def cell(kind: str, address: str, port: int, protocol: str, dst: int, passed: bool = True) -> Outcome:
        return Outcome(
            "x", passed, True, 1.0, kind="cell", address=kind, protocol=protocol,
            service="telecom/diameter", port=port, target=f"{address}:{dst}",
        )  # fmt: skip

    lines = cell_tables(
        [
            cell("ClusterIP", "10.254.7.9", 3868, "SCTP", 3868),
            cell("ClusterIP", "10.254.7.9", 36412, "SCTP", 36412),
            cell("NodePort", "10.101.50.117", 3868, "SCTP", 31001, passed=False),
        ]
    )
    text = "\n".join(lines)
    assert "| address | client | 3868/SCTP | 36412/SCTP |" in text
    assert "| ClusterIP 10.254.7.9 | node (root netns) | pass (1.0 s) | pass (1.0 s) |" in text
    assert "| NodePort 10.101.50.117 | external host | **FAIL (1.0 S), expected pass** (:31001) | — |" in text


def test_the_node_script_wires_every_pod_and_routes_every_external_ip() -> None:
    from kube_router_sctp.dataplane import workload as w
    from kube_router_sctp.dataplane.node import _SETUP_SCRIPT, _render

    spec = PodSpec("a", "default", {"app": "x"}, "172.20.1.6", [])
    pod = w.Pod(spec, "pod-0", (("SCTP", 32000), ("UDP", 32002)), 32001)
    script = _render(_SETUP_SCRIPT, [pod], ["10.120.10.120", "10.120.10.121"])
    assert "pod pod-0 172.20.1.6 SCTP:32000 UDP:32002" in script
    assert "ip -n ext route add 10.120.10.121/32 via 10.101.50.117" in script
    assert "@" not in script.replace("$@", "")


def test_kubectls_json_is_read_as_a_list_or_one_object_after_another() -> None:
    from kube_router_sctp.verify import _json_objects

    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}}
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "telecom"}}
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": [namespace, service]})
    assert _json_objects(listed) == [namespace, service]
    assert _json_objects(json.dumps(namespace, indent=2) + "\n" + json.dumps(service, indent=2)) == [namespace, service]
    assert _json_objects("") == []
