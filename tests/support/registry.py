"""Real registries (Debian's docker-registry, CNCF distribution) started by tests: plain,
read-only, or htpasswd over TLS with a CA the test makes and the Docker daemon trusts."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.support import env

CERTS_D = Path("/etc/docker/certs.d")


@dataclass
class TestRegistry:
    address: str  # host:port
    root: Path
    process: subprocess.Popen[bytes]
    ca: Path | None = None
    # What tests push under (``push``): a namespace of this session, so the local tags a
    # pipeline leaves for it are removed after the suite (tests/support/after_suite.py)
    # and never mistaken for another session's, whatever port the registry had.
    namespace: str = field(default_factory=lambda: env.namespace("reg"))

    @property
    def push(self) -> str:
        return f"{self.address}/{self.namespace}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tags(self, repository: str, auth: tuple[str, str] | None = None) -> list[str]:
        scheme = "https" if self.ca else "http"
        response = requests.get(
            f"{scheme}://{self.address}/v2/{repository}/tags/list",
            auth=auth,
            verify=str(self.ca) if self.ca else True,
            timeout=10,
        )
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return sorted(response.json().get("tags") or [])


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _make_ca_and_cert(directory: Path, ip: str) -> tuple[Path, Path, Path]:
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text(f"subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\n")
    steps = [
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=krs test CA",
            "-keyout",
            str(ca_key),
            "-out",
            str(ca_crt),
        ],
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={ip}",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        ],
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_crt),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(ext),
            "-out",
            str(crt),
        ],
    ]
    for step in steps:
        subprocess.run(step, check=True, capture_output=True)
    return ca_crt, crt, key


@contextlib.contextmanager
def registry(
    tmp: Path,
    *,
    host: str = "127.0.0.1",
    tls: bool = False,
    users: dict[str, str] | None = None,
    readonly: bool = False,
) -> Iterator[TestRegistry]:
    if shutil.which("docker-registry") is None:
        env.missing("needs Debian's docker-registry package")
    tmp.mkdir(parents=True, exist_ok=True)
    port = _free_port(host)
    address = f"{host}:{port}"
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(tmp / "data")}, "delete": {"enabled": True}},
        "http": {"addr": address},
    }
    if readonly:
        config["storage"]["maintenance"] = {"readonly": {"enabled": True}}  # type: ignore[index]
    ca = None
    trusted: Path | None = None
    if tls:
        ca, crt, key = _make_ca_and_cert(tmp, host)
        config["http"]["tls"] = {"certificate": str(crt), "key": str(key)}  # type: ignore[index]
        trusted = CERTS_D / address
        trusted.mkdir(parents=True, exist_ok=True)
        shutil.copy(ca, trusted / "ca.crt")
    if users:
        lines = [
            subprocess.run(
                ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True
            ).stdout.strip()
            for user, password in users.items()
        ]
        (tmp / "htpasswd").write_text("\n".join(lines) + "\n")
        config["auth"] = {"htpasswd": {"realm": "krs-test", "path": str(tmp / "htpasswd")}}
    (tmp / "config.yml").write_text(json.dumps(config))  # YAML is a superset of JSON
    log = (tmp / "registry.log").open("wb")
    process = subprocess.Popen(["docker-registry", "serve", str(tmp / "config.yml")], stdout=log, stderr=log)
    found = TestRegistry(address, tmp, process, ca)
    scheme = "https" if tls else "http"
    try:
        for _ in range(100):
            try:
                requests.get(f"{scheme}://{address}/v2/", verify=str(ca) if ca else True, timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            pytest.fail(f"the test registry on {address} did not start: {(tmp / 'registry.log').read_text()[-500:]}")
        yield found
    finally:
        found.stop()
        if trusted is not None:
            shutil.rmtree(trusted, ignore_errors=True)


def docker_config(tmp: Path, address: str, user: str, password: str) -> Path:
    """A DOCKER_CONFIG directory holding credentials for ``address`` (as `docker login` would)."""
    directory = tmp / "docker-config"
    directory.mkdir(exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {address: {"auth": auth}}}))
    return directory
