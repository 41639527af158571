"""A stand-in for the Kubernetes API server, and only for its API: no admission, no
controllers, no auth, no etcd. It exists because kube-router needs an API to read its
Nodes, Services, Endpoints and policies from, and kube-apiserver cannot be had here.

It serves JSON over plain HTTP: discovery (``/api``, ``/apis``, group versions),
``/version``, and for each kind in ``RESOURCES`` get, list (label and field selectors)
and watch (``?watch=1``: a chunked stream of ADDED/MODIFIED/DELETED/BOOKMARK events that
starts exactly after the list's resourceVersion, honours ``timeoutSeconds``,
``allowWatchBookmarks`` and ``sendInitialEvents``), plus create/replace/merge-patch/
delete so that clients which write get a plausible answer. The test drives it through
``Store.apply`` and ``Store.delete``; every change gets the next resourceVersion and
reaches every open watch. ``KubeAPIStandIn.requests`` logs what clients asked for.

What kube-router asks for (read from its source):

* v0.3.x-v1.6.x: one shared informer factory lists and watches Services, Endpoints,
  Pods, Nodes, Namespaces and networking.k8s.io/v1 NetworkPolicies (all six, whichever
  controllers run), gets its Node by name (NODE_NAME, hostname, --hostname-override)
  and, v0.3.x only, reads ``/version``: the firewall panics without it and falls back to
  extensions/v1beta1 policies below 1.7, which is why the default version is 1.15.3 (the
  report's cluster). It writes nothing.
* v2.0.x-v2.5.x: the same plus discovery.k8s.io/v1 EndpointSlices.
* v2.6.0 and later (client-go 0.34 in v2.7.1): EndpointSlices instead of Endpoints; the
  proxy also gets Services by name and lists Pods by label selector. Watches ask for
  bookmarks; ``sendInitialEvents`` (WatchList) is used only if the client's
  WatchListClient gate is on (off by default in 0.34). Requests are JSON (client-go's
  default; kube-router sets no content type). The only writes are the load-balancer
  allocator's (``--run-loadbalancer``): Lease leader election and Service status.
  Protobuf or CBOR request bodies get 415, which makes CBOR-preferring clients fall back.

Left out on purpose: extensions/v1beta1 NetworkPolicies (v0.3.x reads them only from
servers older than 1.7), protobuf, CBOR and JSON-patch bodies, pagination (``limit`` is
ignored: every list is complete) and exact-version reads (every read is of the latest).

Pointing kube-router at it: ``--kubeconfig=FILE`` with a file from ``kubeconfig()``
works in every version. ``--master=http://ADDR:PORT`` alone works up to v2.5.x; from
v2.6.0 it goes through the in-cluster config and so needs a service-account token file.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import re
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "Namespace", False),
    Resource("", "v1", "nodes", "Node", False),
    Resource("", "v1", "services", "Service", True),
    Resource("", "v1", "endpoints", "Endpoints", True),
    Resource("", "v1", "pods", "Pod", True),
    Resource("", "v1", "events", "Event", True),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
)
_BY_KIND = {r.kind: r for r in RESOURCES}
_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
_WITH_STATUS = {"Namespace", "Node", "Service", "Pod"}


class ApiError(Exception):
    """An answer in the API's own error shape (a Status object)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


# -- selectors ----------------------------------------------------------------------
_LABEL_TERM = re.compile(
    r"\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*)|\s(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?\s*(?:,|$)"
)


class LabelSelector:
    """The label selector syntax clients send (=, ==, !=, in, notin, key, !key), terms ANDed."""

    def __init__(self, text: str) -> None:
        self.terms: list[tuple[str, str, frozenset[str]]] = []
        text, pos = text.strip(), 0
        while pos < len(text):
            m = _LABEL_TERM.match(text, pos)
            if not m or m.end() == pos or (m["neg"] and (m["op"] or m["set"])):
                raise ApiError(400, "BadRequest", f"unable to parse label selector {text!r}")
            pos = m.end()
            if m["op"]:
                self.terms.append((m["key"], "!=" if m["op"] == "!=" else "=", frozenset([m["value"]])))
            elif m["set"]:
                self.terms.append((m["key"], m["set"], frozenset(v.strip() for v in m["values"].split(","))))
            else:
                self.terms.append((m["key"], "!" if m["neg"] else "exists", frozenset()))

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, op, values in self.terms:
            present = key in labels
            inside = present and labels[key] in values
            # != and notin also match objects without the label, as on a real API server
            ok = {"=": inside, "in": inside, "!=": not inside, "notin": not inside, "exists": present}.get(op)
            if not (ok if ok is not None else not present):
                return False
        return True


class FieldSelector:
    """``path=value`` / ``path!=value`` terms on any field (metadata.name, spec.nodeName, ...)."""

    def __init__(self, text: str) -> None:
        self.terms: list[tuple[list[str], bool, str]] = []
        for term in filter(None, (t.strip() for t in text.split(","))):
            m = re.fullmatch(r"([A-Za-z.]+)\s*(==|=|!=)\s*(.*)", term)
            if not m:
                raise ApiError(400, "BadRequest", f"unable to parse field selector {text!r}")
            self.terms.append((m[1].split("."), m[2] != "!=", m[3]))

    def matches(self, obj: Obj) -> bool:
        return all((str(_dig(obj, path)) == value) == equal for path, equal, value in self.terms)


def _dig(obj: Any, path: list[str]) -> Any:
    for part in path:
        obj = obj.get(part, "") if isinstance(obj, dict) else ""
    return obj


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (null deletes a key, lists are replaced whole)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- the store ----------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    rv: int
    type: str  # ADDED, MODIFIED or DELETED
    resource: Resource
    obj: Obj
    old: Obj | None


class Expired(Exception):
    """The resourceVersion a watch wants to resume from is older than the history kept."""


class Store:
    """Objects by (resource, namespace, name) and the history of changes to them.

    One counter orders every change of every kind, as etcd's revision does, so a watch
    resumed from a list's resourceVersion sees each later change exactly once.
    """

    def __init__(self, objects: Iterable[Mapping[str, Any]] = (), *, history: int = 10_000) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._objects: dict[tuple[Resource, str, str], Obj] = {}
        self._changes: deque[Change] = deque(maxlen=history)
        self._rv = 0
        self.load(objects)

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def load(self, objects: Iterable[Mapping[str, Any]]) -> None:
        for obj in objects:
            if obj.get("kind", "").endswith("List") and "items" in obj:
                self.load(obj["items"])
            else:
                self.apply(obj)

    def load_file(self, path: Path) -> None:
        """A JSON file holding one object, a list of objects or a ``kind: ...List``."""
        data = json.loads(Path(path).read_text())
        self.load(data if isinstance(data, list) else [data])

    def apply(self, obj: Mapping[str, Any]) -> Obj:
        """Create or replace ``obj``; returns the stored copy with its resourceVersion."""
        resource = resource_for(obj.get("kind", ""), obj.get("apiVersion"))
        meta = obj.get("metadata") or {}
        return self._put(resource, meta.get("namespace", "default"), meta.get("name", ""), obj)

    def delete(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        """Delete an object; returns its last state, or None if there was none."""
        resource = resource_for(kind)
        with self._cond:
            old = self._objects.pop(_key(resource, namespace, name), None)
            if old is None:
                return None
            gone = copy.deepcopy(old)
            self._record("DELETED", resource, gone, old)
            return copy.deepcopy(gone)

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        resource = resource_for(kind)
        with self._cond:
            found = self._objects.get(_key(resource, namespace, name))
            return copy.deepcopy(found) if found else None

    def objects(self, kind: str, namespace: str | None = None) -> list[Obj]:
        """The objects of one kind, in one namespace or all, sorted by namespace and name."""
        return self.snapshot(resource_for(kind), namespace)[1]

    def snapshot(self, resource: Resource, namespace: str | None) -> tuple[int, list[Obj]]:
        """The objects of one kind (in one namespace, or all) and the version they are at."""
        with self._cond:
            items = [
                copy.deepcopy(o)
                for (r, ns, _), o in sorted(self._objects.items(), key=lambda i: i[0][1:])
                if r == resource and namespace in (None, ns)
            ]
            return self._rv, items

    def changes_after(self, rv: int, resource: Resource, wait: float) -> tuple[int, list[Change]]:
        """Changes to ``resource`` after ``rv``, waiting up to ``wait`` seconds for any change."""
        with self._cond:
            if self._changes and rv < self._changes[0].rv - 1:
                raise Expired(f"too old resource version: {rv} ({self._changes[0].rv - 1})")
            if self._rv <= rv:
                self._cond.wait(wait)
            return self._rv, [c for c in self._changes if c.rv > rv and c.resource == resource]

    def _put(self, resource: Resource, namespace: str, name: str, obj: Mapping[str, Any]) -> Obj:
        if not name:
            raise ApiError(422, "Invalid", f"{resource.kind} without metadata.name")
        stored = copy.deepcopy(dict(obj))
        stored["apiVersion"], stored["kind"] = resource.api_version, resource.kind
        meta = stored.setdefault("metadata", {})
        meta["name"] = name
        if resource.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = ""
        key = (resource, namespace, name)
        with self._cond:
            old = self._objects.get(key)
            if old is None:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            else:
                meta["uid"] = old["metadata"]["uid"]
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            self._objects[key] = stored
            self._record("ADDED" if old is None else "MODIFIED", resource, stored, old)
            return copy.deepcopy(stored)

    def _record(self, kind: str, resource: Resource, obj: Obj, old: Obj | None) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._changes.append(Change(self._rv, kind, resource, copy.deepcopy(obj), old))
        self._cond.notify_all()

    # The HTTP write verbs: same rules as apply, plus the API's conflict answers.
    def create(self, resource: Resource, namespace: str, obj: Obj) -> Obj:
        name = (obj.get("metadata") or {}).get("name", "")
        with self._cond:
            if _key(resource, namespace, name) in self._objects:
                raise ApiError(409, "AlreadyExists", f'{resource.plural} "{name}" already exists')
            return self._put(resource, namespace, name, obj)

    def replace(self, resource: Resource, namespace: str, name: str, obj: Obj, status_only: bool) -> Obj:
        with self._cond:
            current = self._existing(resource, namespace, name)
            wanted = (obj.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource.plural} "{name}": '
                    "the object has been modified; please apply your changes to the latest version",
                )
            if status_only:
                obj = {**current, "status": obj.get("status", {})}
            return self._put(resource, namespace, name, obj)

    def patch(self, resource: Resource, namespace: str, name: str, patch: Obj) -> Obj:
        with self._cond:
            return self._put(resource, namespace, name, merge_patch(self._existing(resource, namespace, name), patch))

    def remove(self, resource: Resource, namespace: str, name: str) -> Obj:
        with self._cond:
            self._existing(resource, namespace, name)
            return self.delete(resource.kind, namespace, name) or {}

    def read(self, resource: Resource, namespace: str, name: str) -> Obj:
        with self._cond:
            return copy.deepcopy(self._existing(resource, namespace, name))

    def _existing(self, resource: Resource, namespace: str, name: str) -> Obj:
        found = self._objects.get(_key(resource, namespace, name))
        if found is None:
            raise ApiError(404, "NotFound", f'{resource.plural} "{name}" not found')
        return found


def _key(resource: Resource, namespace: str | None, name: str) -> tuple[Resource, str, str]:
    return resource, (namespace or "") if resource.namespaced else "", name


def resource_for(kind: str, api_version: str | None = None) -> Resource:
    resource = _BY_KIND.get(kind)
    if resource is None or (api_version is not None and api_version != resource.api_version):
        raise ValueError(f"the stand-in does not serve {api_version or '?'} {kind or '(no kind)'}")
    return resource


# -- HTTP ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    status: int
    user_agent: str

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("1", "true")


@dataclass(frozen=True)
class _Route:
    resource: Resource
    namespace: str | None  # None: across all namespaces
    name: str
    subresource: str


class KubeAPIStandIn:
    """The stand-in's HTTP server around a Store; a context manager that starts and stops it."""

    def __init__(
        self,
        store: Store | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        bookmark_interval: float = 10.0,
        git_version: str = "v1.15.3",
    ) -> None:
        self.store = store if store is not None else Store()
        self.bookmark_interval = bookmark_interval
        self.git_version = git_version
        self._requests: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        cast(Any, self._httpd).standin = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._requests)

    def start(self) -> KubeAPIStandIn:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="kubeapi-stand-in", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # open watches end within half a second
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> KubeAPIStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubeconfig(self, server_url: str | None = None) -> str:
        """A kubeconfig without credentials (JSON, which kubeconfig loaders read as YAML).
        ``server_url`` is how the client reaches this server if not by ``url``: a Docker
        network's gateway, or ``http://10.0.2.2:PORT`` from a QEMU guest on user networking."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "stand-in",
            "clusters": [{"name": "stand-in", "cluster": {"server": server_url or self.url}}],
            "users": [{"name": "stand-in", "user": {}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in"}}],
        }
        return json.dumps(config, indent=2) + "\n"

    def _record(self, record: RequestRecord) -> None:
        with self._log_lock:
            self._requests.append(record)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # watches need chunked transfer encoding
    server_version = "kubeapi-stand-in"

    @property
    def standin(self) -> KubeAPIStandIn:
        return cast(KubeAPIStandIn, cast(Any, self.server).standin)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests go to KubeAPIStandIn.requests instead of stderr

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self._query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self._method, self._url_path = method, split.path
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            discovery = self._discovery(split.path) if method == "GET" else None
            if discovery is not None:
                self._send_json(200, discovery)
                return
            route = _route(split.path)
            if method == "GET" and not route.name and self._query.get("watch") in ("1", "true"):
                self._watch(route)
            elif method == "GET":
                self._send_json(200, self._get(route))
            else:
                self._send_json(201 if method == "POST" else 200, self._write(method, route, body))
        except ApiError as exc:
            self._send_json(exc.code, exc.status())

    def _discovery(self, path: str) -> Any:
        parts = [p for p in path.split("/") if p]
        groups: dict[str, list[Resource]] = {}
        for r in RESOURCES:
            groups.setdefault(r.api_version, []).append(r)
        if path in ("/healthz", "/livez", "/readyz"):
            return "ok"
        if path == "/version":
            major, minor = [*re.findall(r"\d+", self.standin.git_version), "1", "15"][:2]
            return {
                "major": major,
                "minor": minor,
                "gitVersion": self.standin.git_version,
                "platform": "linux/amd64",
                "goVersion": "stand-in",
            }
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.standin.url.split("//")[1]}
                ],
            }
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(gv) for gv in groups if "/" in gv]}
        if len(parts) == 2 and parts[0] == "apis":
            for gv in groups:
                if gv.split("/")[0] == parts[1]:
                    return {"kind": "APIGroup", "apiVersion": "v1", **_group(gv)}
        gv = "/".join(parts[1:])
        if gv in groups and len(parts) == (2 if parts[0] == "api" else 3):
            resources = []
            for r in groups[gv]:
                verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
                resources.append(
                    {
                        "name": r.plural,
                        "singularName": r.kind.lower(),
                        "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": verbs,
                    }
                )
                if r.kind in _WITH_STATUS:
                    resources.append(
                        {
                            "name": f"{r.plural}/status",
                            "singularName": "",
                            "namespaced": r.namespaced,
                            "kind": r.kind,
                            "verbs": ["get", "patch", "update"],
                        }
                    )
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
        return None

    def _get(self, route: _Route) -> Obj:
        store = self.standin.store
        if route.name:
            return store.read(route.resource, route.namespace or "", route.name)
        visible = self._visible(route)
        rv, items = store.snapshot(route.resource, route.namespace)
        return {
            "kind": f"{route.resource.kind}List",
            "apiVersion": route.resource.api_version,
            "metadata": {"resourceVersion": str(rv)},
            "items": [o for o in items if visible(o)],
        }

    def _write(self, method: str, route: _Route, body: bytes) -> Obj:
        store, ns = self.standin.store, route.namespace or ""
        if method == "DELETE":
            return store.remove(route.resource, ns, route.name)
        media = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        accepted = (
            ("application/merge-patch+json", "application/strategic-merge-patch+json")
            if method == "PATCH"
            else ("application/json",)
        )
        if media not in accepted:
            raise ApiError(415, "UnsupportedMediaType", f"the stand-in takes {', '.join(accepted)}, not {media}")
        try:
            obj = json.loads(body or b"{}")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"body is not JSON: {exc}") from None
        if method == "POST" and not route.name:
            return store.create(route.resource, ns, obj)
        if not route.name:
            raise ApiError(405, "MethodNotAllowed", f"{method} needs an object name")
        if method == "PUT":
            return store.replace(route.resource, ns, route.name, obj, route.subresource == "status")
        if method == "PATCH":
            # Strategic merge differs from a merge patch only inside lists; nothing here patches lists.
            return store.patch(route.resource, ns, route.name, obj)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not served here")

    def _visible(self, route: _Route) -> Callable[[Obj], bool]:
        labels = LabelSelector(self._query.get("labelSelector", ""))
        fields = FieldSelector(self._query.get("fieldSelector", ""))

        def visible(obj: Obj) -> bool:
            meta = obj.get("metadata", {})
            in_ns = route.namespace is None or meta.get("namespace", "") == route.namespace
            return in_ns and labels.matches(meta.get("labels") or {}) and fields.matches(obj)

        return visible

    def _watch(self, route: _Route) -> None:
        store, query, resource = self.standin.store, self._query, route.resource
        visible = self._visible(route)
        deadline = time.monotonic() + (float(query.get("timeoutSeconds") or 0) or 1800.0)
        bookmarks = query.get("allowWatchBookmarks") in ("1", "true")
        initial_events = query.get("sendInitialEvents") in ("1", "true")
        since = query.get("resourceVersion", "")
        if since in ("", "0") or initial_events:
            # Start from the current state, announced as ADDED events (the API's rule for "any version").
            position, items = store.snapshot(resource, route.namespace)
        else:
            if not since.isdigit():
                raise ApiError(400, "BadRequest", f"resourceVersion {since!r} is not a number")
            position, items = int(since), []
        self._start_stream()
        try:
            for obj in filter(visible, items):
                self._event("ADDED", obj)
            if initial_events:
                self._event("BOOKMARK", _bookmark(resource, position, initial_events_end=True))
            next_bookmark = time.monotonic() + self.standin.bookmark_interval
            while not self.standin._closing.is_set() and time.monotonic() < deadline:
                wait = min(deadline, next_bookmark) - time.monotonic()
                try:
                    current, changes = store.changes_after(position, resource, max(0.0, min(wait, 0.5)))
                except Expired as exc:
                    self._event("ERROR", ApiError(410, "Expired", str(exc)).status())
                    break
                for change in changes:
                    kind = _seen_as(change, visible)
                    if kind:
                        self._event(kind, change.obj)
                position = max(position, current)
                if bookmarks and time.monotonic() >= next_bookmark:
                    self._event("BOOKMARK", _bookmark(resource, position))
                    next_bookmark = time.monotonic() + self.standin.bookmark_interval
            self._chunk(b"")
        except OSError:
            pass  # the client went away; that ends its watch
        self.close_connection = True

    def _start_stream(self) -> None:
        self._respond_headers(200, "application/json", chunked=True)

    def _event(self, kind: str, obj: Obj) -> None:
        self._chunk(json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send_json(self, code: int, body: Any) -> None:
        data = (json.dumps(body, separators=(",", ":")) if not isinstance(body, str) else body).encode()
        self._respond_headers(code, "application/json" if not isinstance(body, str) else "text/plain", length=len(data))
        self.wfile.write(data)

    def _respond_headers(self, code: int, content_type: str, *, length: int = 0, chunked: bool = False) -> None:
        self.standin._record(
            RequestRecord(self._method, self._url_path, self._query, code, self.headers.get("User-Agent", ""))
        )
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()


def _route(path: str) -> _Route:
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, "NotFound", f"the stand-in serves no {path}")
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3 and (group, version, rest[2]) in _BY_PATH:
        namespace, rest = rest[1], rest[2:]
    resource = _BY_PATH.get((group, version, rest[0]))
    if resource is None or len(rest) > 3 or (len(rest) == 3 and rest[2] != "status"):
        raise ApiError(404, "NotFound", f"the stand-in serves no {path}")
    if resource.namespaced and namespace is None and len(rest) > 1:
        raise ApiError(404, "NotFound", f"{resource.plural} are namespaced: {path}")
    return _Route(resource, namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "")


def _group(group_version: str) -> Obj:
    name, version = group_version.split("/")
    entry = {"groupVersion": group_version, "version": version}
    return {"name": name, "versions": [entry], "preferredVersion": entry}


def _bookmark(resource: Resource, rv: int, *, initial_events_end: bool = False) -> Obj:
    meta: Obj = {"resourceVersion": str(rv)}
    if initial_events_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": resource.kind, "apiVersion": resource.api_version, "metadata": meta}


def _seen_as(change: Change, visible: Callable[[Obj], bool]) -> str | None:
    """How a change looks through a watch's selectors: an object that starts or stops
    matching is ADDED or DELETED for that watch, as on a real API server."""
    now = visible(change.obj)
    before = change.old is not None and visible(change.old)
    if change.type == "MODIFIED":
        return "MODIFIED" if now and before else "ADDED" if now else "DELETED" if before else None
    if change.type == "DELETED":
        return "DELETED" if before else None
    return "ADDED" if now else None


def main(argv: list[str] | None = None) -> None:
    """Serve manifests until interrupted: ``python -m kube_router_sctp.dataplane.kubeapi``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("manifests", nargs="*", type=Path, help="JSON files: an object, a list or a List")
    parser.add_argument("--listen", default="127.0.0.1:0", help="ADDR:PORT (default: a free loopback port)")
    parser.add_argument("--kubeconfig-out", type=Path, help="write a kubeconfig for this server here")
    parser.add_argument("--server-url", help="the URL clients use, if not the listen address")
    parser.add_argument("--bookmark-interval", type=float, default=10.0)
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    store = Store()
    for manifest in args.manifests:
        store.load_file(manifest)
    standin = KubeAPIStandIn(store, host, int(port), bookmark_interval=args.bookmark_interval).start()
    if args.kubeconfig_out:
        args.kubeconfig_out.write_text(standin.kubeconfig(args.server_url))
    print(f"Kubernetes API stand-in on {standin.url} ({store.resource_version} changes loaded)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    for record in standin.requests:
        print(record.method, record.path, record.query, record.status, flush=True)
    standin.stop()


if __name__ == "__main__":
    main()
