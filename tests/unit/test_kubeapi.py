"""The Kubernetes API stand-in over real HTTP on a free loopback port: lists, watches that
continue exactly where a list ended, bookmarks, time-outs, selectors and the write verbs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from kube_router_sctp.dataplane import manifests as m
from kube_router_sctp.dataplane.kubeapi import KubeAPIStandIn, Store

NP = "/apis/networking.k8s.io/v1/networkpolicies"
PODS = "/api/v1/pods"


@pytest.fixture
def api() -> Iterator[KubeAPIStandIn]:
    other = m.pod("other", pod_ip="172.20.1.7", node_name="k8s01", labels={"app": "other", "tier": "db"})
    store = Store([*m.topology_2019(), other, m.namespace("kube-system-extra", {"team": "net"})])
    with KubeAPIStandIn(store, bookmark_interval=0.2) as standin:
        yield standin


def get(api: KubeAPIStandIn, path: str, **params: str) -> requests.Response:
    return requests.get(api.url + path, params=params, timeout=10)


def names(api: KubeAPIStandIn, path: str, **params: str) -> list[str]:
    response = get(api, path, **params)
    assert response.status_code == 200, response.text
    return [item["metadata"]["name"] for item in response.json()["items"]]


def watch(api: KubeAPIStandIn, path: str, **params: str) -> list[dict[str, Any]]:
    """The whole event stream of a watch that ends by its own time-out (fractions of a
    second are the stand-in's leniency, to keep these tests quick)."""
    params.setdefault("timeoutSeconds", "0.3")
    with requests.get(api.url + path, params={"watch": "1", **params}, stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        return [json.loads(line) for line in response.iter_lines() if line]


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(e["type"], e["object"]["metadata"].get("name", ""), int(e["object"]["metadata"]["resourceVersion"]))
            for e in events]  # fmt: skip


# -- discovery and reads ------------------------------------------------------------
def test_version_and_discovery(api: KubeAPIStandIn) -> None:
    version = get(api, "/version").json()
    assert (version["major"], version["minor"]) == ("1", "15")  # v0.3.x reads the minor as a number
    assert get(api, "/api").json()["versions"] == ["v1"]
    groups = {g["name"] for g in get(api, "/apis").json()["groups"]}
    assert groups >= {"networking.k8s.io", "discovery.k8s.io", "coordination.k8s.io"}
    core = {r["name"]: r for r in get(api, "/api/v1").json()["resources"]}
    assert {"pods", "services", "endpoints", "nodes", "namespaces", "services/status"} <= set(core)
    assert core["pods"]["namespaced"] and not core["nodes"]["namespaced"]
    assert "watch" in core["pods"]["verbs"]
    assert get(api, "/apis/networking.k8s.io").json()["preferredVersion"]["version"] == "v1"
    assert get(api, "/apis/discovery.k8s.io/v1").json()["resources"][0]["kind"] == "EndpointSlice"
    assert get(api, "/healthz").text == "ok"


def test_list_carries_the_store_version_and_get_by_name(api: KubeAPIStandIn) -> None:
    body = get(api, PODS).json()
    assert body["kind"] == "PodList"
    assert body["metadata"]["resourceVersion"] == str(api.store.resource_version)
    assert names(api, PODS) == ["other", m.POD_NAME]
    assert names(api, "/api/v1/namespaces/default/pods") == ["other", m.POD_NAME]
    assert names(api, "/api/v1/namespaces/kube-system/pods") == []
    assert names(api, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices") == ["sctp-expserver-stand-in"]
    node = get(api, "/api/v1/nodes/k8s02").json()
    assert node["status"]["addresses"][0] == {"type": "InternalIP", "address": m.NODE_IP}
    svc = get(api, "/api/v1/namespaces/default/services/sctp-expserver").json()
    assert [(p["protocol"], p["port"], p["nodePort"]) for p in svc["spec"]["ports"]] == [
        ("SCTP", 32000, 32000), ("TCP", 32001, 32001), ("UDP", 32002, 32002)]  # fmt: skip
    missing = get(api, "/api/v1/namespaces/default/services/nope")
    assert missing.status_code == 404
    assert missing.json()["reason"] == "NotFound" and missing.json()["kind"] == "Status"
    assert get(api, "/apis/extensions/v1beta1/networkpolicies").status_code == 404


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=sctp-socket", [m.POD_NAME]),
        ("app==sctp-socket", [m.POD_NAME]),
        ("app!=sctp-socket", ["other"]),
        ("app in (sctp-socket, web)", [m.POD_NAME]),
        ("app notin (sctp-socket)", ["other"]),
        ("tier", ["other"]),
        ("!tier", [m.POD_NAME]),
        ("app=other,tier=db", ["other"]),
        ("app=other,tier=web", []),
        ("", ["other", m.POD_NAME]),
    ],
)
def test_label_selectors(api: KubeAPIStandIn, selector: str, expected: list[str]) -> None:
    assert names(api, PODS, labelSelector=selector) == expected


def test_field_selectors_and_bad_selectors(api: KubeAPIStandIn) -> None:
    assert names(api, PODS, fieldSelector="spec.nodeName=k8s02") == [m.POD_NAME]
    assert names(api, PODS, fieldSelector="spec.nodeName!=k8s02,metadata.namespace=default") == ["other"]
    assert names(api, "/api/v1/namespaces", fieldSelector="metadata.name=kube-system") == ["kube-system"]
    assert get(api, PODS, labelSelector="app in sctp").status_code == 400
    assert get(api, PODS, fieldSelector="spec.nodeName").status_code == 400


# -- watches --------------------------------------------------------------------------
def test_watch_resumes_exactly_after_the_list(api: KubeAPIStandIn) -> None:
    listed = get(api, NP).json()["metadata"]["resourceVersion"]
    store = api.store
    store.apply(m.network_policy())
    store.apply(m.pod("third", pod_ip="172.20.1.8"))  # another kind: not in this watch
    store.apply(m.network_policy(from_cidr="10.101.50.0/24"))
    store.delete("NetworkPolicy", "default", "allow-sctp")
    events = summary(watch(api, NP, resourceVersion=listed))
    first = int(listed) + 1
    assert events == [("ADDED", "allow-sctp", first), ("MODIFIED", "allow-sctp", first + 2),
                      ("DELETED", "allow-sctp", first + 3)]  # fmt: skip
    # resuming from the middle replays only what came after
    assert summary(watch(api, NP, resourceVersion=str(first)))[0][2] == first + 2
    assert watch(api, NP, resourceVersion=str(store.resource_version)) == []


def test_live_events_reach_every_open_watch(api: KubeAPIStandIn) -> None:
    since = str(api.store.resource_version)
    results: list[list[dict[str, Any]]] = [[], []]

    def follow(slot: int) -> None:
        results[slot] = watch(api, NP, resourceVersion=since, timeoutSeconds="2")

    threads = [threading.Thread(target=follow, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.4)
    api.store.apply(m.network_policy())
    api.store.delete("NetworkPolicy", "default", "allow-sctp")
    for thread in threads:
        thread.join(5)
    for events in results:
        assert [e[:2] for e in summary(events)] == [("ADDED", "allow-sctp"), ("DELETED", "allow-sctp")]
    watches = [r for r in api.requests if r.watch and r.path == NP]
    assert len(watches) == 2 and all(r.query["resourceVersion"] == since for r in watches)


def test_watch_from_zero_starts_with_the_current_state(api: KubeAPIStandIn) -> None:
    events = watch(api, "/api/v1/namespaces/default/pods", resourceVersion="0")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "other"), ("ADDED", m.POD_NAME)]


def test_watch_times_out_and_sends_bookmarks_only_when_asked(api: KubeAPIStandIn) -> None:
    start = time.monotonic()
    since = str(api.store.resource_version)
    events = watch(api, PODS, resourceVersion=since, allowWatchBookmarks="true", timeoutSeconds="1")
    assert 0.9 < time.monotonic() - start < 3
    assert events and {e["type"] for e in events} == {"BOOKMARK"}
    bookmark = events[-1]["object"]
    assert bookmark["kind"] == "Pod" and bookmark["metadata"]["resourceVersion"] == str(api.store.resource_version)
    assert watch(api, PODS, resourceVersion=str(api.store.resource_version)) == []


def test_watch_list_sends_initial_events_then_the_end_bookmark(api: KubeAPIStandIn) -> None:
    events = watch(api, NP, sendInitialEvents="true", allowWatchBookmarks="true", resourceVersionMatch="NotOlderThan")
    api.store.apply(m.network_policy())
    first = events[0]
    assert first["type"] == "BOOKMARK"  # no policies yet: the end marker comes at once
    assert first["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    events = watch(api, NP, sendInitialEvents="true", allowWatchBookmarks="true", resourceVersionMatch="NotOlderThan")
    assert [e["type"] for e in events[:2]] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["resourceVersion"] == str(api.store.resource_version)


def test_a_selected_watch_sees_objects_enter_and_leave_the_selection(api: KubeAPIStandIn) -> None:
    since = str(api.store.resource_version)
    relabelled = m.pod("other", pod_ip="172.20.1.7", labels={"app": "sctp-socket"})
    api.store.apply(relabelled)
    api.store.apply(m.pod("other", pod_ip="172.20.1.7", labels={"app": "gone"}))
    events = watch(api, PODS, resourceVersion=since, labelSelector="app=sctp-socket")
    assert [e[:2] for e in summary(events)] == [("ADDED", "other"), ("DELETED", "other")]


def test_a_watch_older_than_the_history_gets_410() -> None:
    store = Store([m.namespace("a"), m.namespace("b"), m.namespace("c")], history=1)
    with KubeAPIStandIn(store) as api:
        events = watch(api, "/api/v1/namespaces", resourceVersion="0")
        assert len(events) == 3  # a fresh start is always possible
        events = watch(api, "/api/v1/namespaces", resourceVersion="1")
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
        assert [e["object"]["metadata"]["name"] for e in watch(api, "/api/v1/namespaces", resourceVersion="2")] == ["c"]


# -- writes and the Python API --------------------------------------------------------
def test_write_verbs(api: KubeAPIStandIn) -> None:
    url = api.url + "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies"
    created = requests.post(url, json=m.network_policy(), timeout=10)
    assert created.status_code == 201 and created.json()["metadata"]["namespace"] == "default"
    assert requests.post(url, json=m.network_policy(), timeout=10).status_code == 409
    item = url + "/allow-sctp"
    stale = dict(created.json(), metadata={**created.json()["metadata"], "resourceVersion": "1"})
    assert requests.put(item, json=stale, timeout=10).json()["reason"] == "Conflict"
    patch = {"metadata": {"annotations": {"kube-router.io/x": "y"}}}
    headers = {"Content-Type": "application/merge-patch+json"}
    patched = requests.patch(item, data=json.dumps(patch), headers=headers, timeout=10).json()
    assert patched["metadata"]["annotations"] == {"kube-router.io/x": "y"}
    assert patched["metadata"]["uid"] == created.json()["metadata"]["uid"]
    assert patched["spec"] == created.json()["spec"]
    protobuf = {"Content-Type": "application/vnd.kubernetes.protobuf"}
    assert requests.put(item, data=b"\x6b\x38\x73\x00", headers=protobuf, timeout=10).status_code == 415
    assert requests.delete(item, timeout=10).status_code == 200
    assert requests.delete(item, timeout=10).status_code == 404
    status_url = api.url + "/api/v1/namespaces/default/services/sctp-expserver/status"
    svc = get(api, "/api/v1/namespaces/default/services/sctp-expserver").json()
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "10.120.10.121"}]}}
    svc["spec"]["type"] = "ClusterIP"  # ignored: only the status changes through /status
    updated = requests.put(status_url, json=svc, timeout=10).json()
    assert updated["status"]["loadBalancer"]["ingress"] == [{"ip": "10.120.10.121"}]
    assert updated["spec"]["type"] == "NodePort"
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "kube-router-lballoc"}}
    leases = api.url + "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
    assert requests.post(leases, json=lease, timeout=10).status_code == 201


def test_store_api_versions_and_files(tmp_path: Path) -> None:
    store = Store()
    added = store.apply(m.node())
    assert added["metadata"]["resourceVersion"] == "1" and "namespace" not in added["metadata"]
    changed = store.apply(m.node(internal_ip="10.101.50.118"))
    assert changed["metadata"]["resourceVersion"] == "2"
    assert changed["metadata"]["uid"] == added["metadata"]["uid"]
    assert store.get("Node", None, "k8s02") == changed
    assert store.delete("Node", None, "k8s02") is not None and store.resource_version == 3
    assert store.delete("Node", None, "k8s02") is None and store.resource_version == 3
    with pytest.raises(ValueError, match="extensions/v1beta1"):
        store.apply({**m.network_policy(), "apiVersion": "extensions/v1beta1"})
    manifest = tmp_path / "cluster.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": m.topology_2019()}))
    store.load_file(manifest)
    assert [o["kind"] for o in store.objects("Pod")] == ["Pod"]
    assert store.objects("Namespace", None)[0]["metadata"]["name"] == "default"


def test_kubeconfig_points_at_the_server(api: KubeAPIStandIn) -> None:
    config = json.loads(api.kubeconfig())
    assert config["clusters"][0]["cluster"]["server"] == api.url
    assert config["current-context"] == "stand-in"
    assert json.loads(api.kubeconfig("http://172.17.0.1:8080"))["clusters"][0]["cluster"]["server"].endswith(":8080")


def test_the_2019_objects_fit_together() -> None:
    objects = {o["kind"]: o for o in m.topology_2019()}
    svc, pod, ep = objects["Service"], objects["Pod"], objects["Endpoints"]
    assert svc["spec"]["externalIPs"] == ["10.120.10.120"] and svc["spec"]["clusterIP"] == "10.254.125.172"
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert ep["subsets"][0]["addresses"][0]["ip"] == pod["status"]["podIP"] == "172.20.1.6"
    assert objects["EndpointSlice"]["endpoints"][0]["addresses"] == ["172.20.1.6"]
    assert {p["protocol"] for p in pod["spec"]["containers"][0]["ports"]} == {"SCTP", "TCP", "UDP"}
    policy = m.network_policy(from_cidr="10.101.50.0/24")
    assert policy["spec"]["ingress"][0] == {
        "ports": [{"protocol": "SCTP", "port": 32000}], "from": [{"ipBlock": {"cidr": "10.101.50.0/24"}}]}  # fmt: skip
