"""A real Kubernetes control plane for one run: etcd, kube-apiserver, kube-controller-manager.

Everything listens on 127.0.0.1 at ports chosen at run time; the node VM reaches the API
server as the host's slirp address (10.0.2.2), which the serving certificate names. RBAC
is on (``--authorization-mode=Node,RBAC``); the test drives the cluster with an admin
token (group system:masters), the controller-manager runs as
system:kube-controller-manager with a service account per controller, and workloads get
bound service-account tokens (TokenRequest, as a projected volume would give them).

Only the controllers that turn Pods into Endpoints and EndpointSlices run, with the
garbage collector (EndpointSlices of a deleted Service) and the service-account
controller (every namespace's ``default`` account, which Pod admission requires). Nothing
plays the node lifecycle controller: with no kubelet posting heartbeats it would mark the
node NotReady and its pods' endpoints with it. The kubelet's own part is ``kubelet.py``.

The processes run in sessions of their own (a Ctrl-C reaches only this program, which
then stops them in order) and die with it if it is killed outright (PR_SET_PDEATHSIG).
``ControlPlane`` is a context manager: on leaving, every process is stopped and the run's
directory (etcd's data, keys, tokens, logs) removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from .. import log
from ..errors import ConfigError, DataplaneError
from . import pki
from .build import Binaries
from .kubectl import Kubectl, kubeconfig

CONTROLLERS = ("endpoint", "endpointslice", "garbagecollector", "serviceaccount")
# Our own servers on loopback: never through the environment's HTTP(S)_PROXY (which
# `requests` honours even for 127.0.0.1 without NO_PROXY) nor its .netrc.
_LOOPBACK = requests.Session()
_LOOPBACK.trust_env = False
SERVICE_CIDR = "10.254.0.0/16"  # the 2019 report's
KUBERNETES_SERVICE_IP = "10.254.0.1"  # the first address of SERVICE_CIDR
ADMIN = "krs-admin"
START_TIMEOUT = 90.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Process:
    """One server of the control plane, its output in a log file."""

    name: str
    command: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # the only way to PR_SET_PDEATHSIG; no thread of ours forks meanwhile
            )

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM its process group, then SIGKILL after ``grace`` seconds."""
        if self.popen is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if self.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(wait)
        if self.popen.poll() is None:  # pragma: no cover - SIGKILL did not take
            log.warn(f"{self.name} (pid {self.popen.pid}) did not stop")

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager in ``workdir`` (removed on exit)."""

    binaries: Binaries
    workdir: Path
    guest_address: str  # how the node VM reaches the host's loopback (slirp: 10.0.2.2)
    audited_users: Sequence[str] = ()  # whose requests the audit log records
    service_cidr: str = SERVICE_CIDR  # one range, or "IPv4,IPv6" for dual-stack scenarios
    processes: list[Process] = field(default_factory=list)
    api_port: int = 0
    admin_token: str = ""
    pki: pki.PKI | None = None
    timings: dict[str, float] = field(default_factory=dict)

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if shutil.which("etcd") is None:
            raise ConfigError("etcd is not installed", "apt-get install etcd-server (or run scripts/setup-host.sh)")
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        start = time.monotonic()
        self.pki = pki.make(
            self._dir("pki"),
            ["127.0.0.1", self.guest_address, KUBERNETES_SERVICE_IP],
            ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        )
        self.admin_token = secrets.token_hex(24)
        manager_token = secrets.token_hex(24)
        tokens = self.workdir / "tokens.csv"
        tokens.touch(mode=0o600)
        tokens.write_text(
            f'{self.admin_token},{ADMIN},{ADMIN},"system:masters"\n'
            f"{manager_token},system:kube-controller-manager,system:kube-controller-manager\n"
        )
        etcd_url = self._start_etcd()
        self._start_apiserver(etcd_url, tokens)
        self.timings["api server ready"] = time.monotonic() - start
        manager = self.workdir / "controller-manager.kubeconfig"
        manager.touch(mode=0o600)
        manager.write_text(kubeconfig(self.url, self.pki.ca_cert.read_bytes(), manager_token, "controller-manager"))
        self._start_controller_manager(manager)
        self.timings["controllers ready"] = time.monotonic() - start

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def _spawn(self, name: str, command: list[str]) -> Process:
        process = Process(name, command, self.workdir / f"{name}.log")
        self.processes.append(process)
        process.start()
        return process

    def _wait(self, process: Process, what: str, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(requests.RequestException, DataplaneError):
                if ready():
                    return
            if not process.running():
                raise DataplaneError(
                    f"{process.name} exited before {what}: {log.last_line(process.tail())}",
                    "see its log in the results",
                )
            if time.monotonic() > deadline:
                raise DataplaneError(f"{process.name}: no {what} within {timeout:.0f}s", "see its log in the results")
            time.sleep(0.5)

    # -- the servers -------------------------------------------------------------------------------
    def _start_etcd(self) -> str:
        data = self._dir("etcd")
        for _attempt in range(3):  # a port taken between choosing and binding: choose again
            client, peer = free_port(), free_port()
            url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
            etcd = self._spawn(
                "etcd",
                [
                    str(shutil.which("etcd")),
                    "--name=krs",
                    f"--data-dir={data}",
                    f"--listen-client-urls={url}",
                    f"--advertise-client-urls={url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=krs={peer_url}",
                    "--initial-cluster-state=new",
                    "--log-level=warn",
                    "--logger=zap",
                ],
            )
            try:
                self._wait(etcd, "health", lambda u=url: _etcd_healthy(u))  # type: ignore[misc]
                return url
            except DataplaneError:
                if "address already in use" not in etcd.tail():
                    raise
                etcd.stop()
                self.processes.remove(etcd)
                shutil.rmtree(data, ignore_errors=True)
                data = self._dir("etcd")
        raise DataplaneError("etcd found no free port in three tries", "run again")

    def _start_apiserver(self, etcd_url: str, tokens: Path) -> None:
        assert self.pki is not None
        audit_policy = self.workdir / "audit-policy.json"
        audit_policy.write_text(json.dumps(_audit_policy(self.audited_users)))
        for _attempt in range(3):
            self.api_port = free_port()
            apiserver = self._spawn(
                "kube-apiserver",
                [
                    str(self.binaries["kube-apiserver"]),
                    f"--etcd-servers={etcd_url}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={self.api_port}",
                    f"--cert-dir={self._dir('apiserver-certs')}",
                    f"--tls-cert-file={self.pki.serving_cert}",
                    f"--tls-private-key-file={self.pki.serving_key}",
                    f"--token-auth-file={tokens}",
                    "--authorization-mode=Node,RBAC",
                    "--enable-admission-plugins=NodeRestriction",
                    f"--service-cluster-ip-range={self.service_cidr}",
                    f"--service-account-key-file={self.pki.sa_public}",
                    f"--service-account-signing-key-file={self.pki.sa_private}",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    # Loopback is no address for the `kubernetes` Service's endpoints.
                    "--endpoint-reconciler-type=none",
                    f"--audit-policy-file={audit_policy}",
                    f"--audit-log-path={self.workdir / 'audit.log'}",
                    "--profiling=false",
                ],
            )
            try:
                self._wait(apiserver, "/readyz", self._ready)
                return
            except DataplaneError:
                if "address already in use" not in apiserver.tail():
                    raise
                apiserver.stop()
                self.processes.remove(apiserver)
        raise DataplaneError("kube-apiserver found no free port in three tries", "run again")

    def _ready(self) -> bool:
        assert self.pki is not None
        response = _LOOPBACK.get(
            f"{self.url}/readyz",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            verify=str(self.pki.ca_cert),
            timeout=5,
        )
        return response.status_code == 200

    def _start_controller_manager(self, kubeconfig_path: Path) -> None:
        assert self.pki is not None
        manager = self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig_path}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--secure-port=0",
                f"--root-ca-file={self.pki.ca_cert}",
            ],
        )
        # The service-account controller's first work is every namespace's `default`
        # account: once it is there, the controllers are running.
        self._wait(
            manager, "the default ServiceAccount", lambda: self.kubectl.exists("serviceaccount", "default", "default")
        )

    # -- access ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def guest_url(self) -> str:
        return f"https://{self.guest_address}:{self.api_port}"

    @property
    def ca_pem(self) -> bytes:
        assert self.pki is not None
        return self.pki.ca_cert.read_bytes()

    @property
    def kubectl(self) -> Kubectl:
        path = self.workdir / "admin.kubeconfig"
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(kubeconfig(self.url, self.ca_pem, self.admin_token, ADMIN))
        return Kubectl(path, self._dir("kubectl-cache"))

    def token(self, namespace: str, account: str, seconds: int = 7200) -> str:
        """A bound token of a ServiceAccount (TokenRequest), as a projected volume holds."""
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        answer = self.kubectl.create_raw(f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", request)
        token = str(answer.get("status", {}).get("token", ""))
        if not token:
            raise DataplaneError(f"no token for {namespace}/{account}", "see the API server's log in the results")
        return token

    def version(self) -> dict[str, Any]:
        return self.kubectl.get_raw("/version")

    def etcd_version(self) -> str:
        result = subprocess.run([str(shutil.which("etcd")), "--version"], capture_output=True, text=True, timeout=30)
        first = (result.stdout.strip().splitlines() or ["?"])[0]
        return first.rsplit(":", 1)[-1].strip()

    def logs(self, lines: int = 40) -> dict[str, str]:
        return {process.name: process.tail(lines) for process in self.processes}

    def audit(self) -> list[dict[str, Any]]:
        """The audit log's events (one per request and stage), oldest first."""
        path = self.workdir / "audit.log"
        events = []
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
        return events


def _audit_policy(users: Sequence[str]) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [{"level": "Metadata", "users": list(users)}] if users else []
    rules.append({"level": "None"})
    return {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"], "rules": rules}


def _etcd_healthy(url: str) -> bool:
    response = _LOOPBACK.get(f"{url}/health", timeout=3)
    return response.status_code == 200 and response.json().get("health") == "true"
