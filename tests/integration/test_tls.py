"""TLS in builder stages, on the real daemon: an HTTPS Debian mirror works with no
--ca-bundle (the host's trust store is the default) and its CA never reaches the runtime
image; a mirror whose certificate nobody trusts fails in one line naming the CA setting."""

from __future__ import annotations

import http.server
import io
import ipaddress
import json
import ssl
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_router_sctp import config
from tests.support import env

pytestmark = [pytest.mark.docker, pytest.mark.upstream, pytest.mark.slow]
CA_NAMES = ("kube-router-sctp-ca.crt", "etc/kube-router-sctp/ca-bundle.crt")


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("kube-router-sctp: error:")]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


class _NoArchive(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def untrusted_mirror(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server with a self-signed certificate, where build containers reach the host."""
    engine = env.docker_engine()
    ipam = engine.api.inspect_network("bridge")["IPAM"]["Config"][0]
    # The daemon leaves Gateway out when it chose the default: the subnet's first address.
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={gateway}",
         "-addext", f"subjectAltName=IP:{gateway}", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
    )  # fmt: skip
    if made.returncode != 0:
        env.missing(f"needs openssl to make a certificate: {made.stderr.decode()[-200:]}")
    server = http.server.ThreadingHTTPServer((gateway, 0), _NoArchive)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://{gateway}:{server.server_address[1]}/debian"
    finally:
        server.shutdown()
        server.server_close()


def test_an_untrusted_mirror_certificate_names_the_ca_setting(
    untrusted_mirror: str, v032_debian_args: list[str], tmp_path: Path
) -> None:
    result = env.run_cli("build", *v032_debian_args, "--debian-mirror", untrusted_mirror, "-q")
    assert result.returncode == 6, result.stderr[-2000:]
    line = error_line(result.stderr)
    assert "image build failed at step" in line and "apt-get" in line
    assert "could not verify a TLS certificate" in line and "--ca-bundle" in line and "mirrors.ca-bundle" in line
    # With the mirror's own certificate as the bundle, TLS passes (apt then finds no archive there).
    trusted = env.run_cli(
        "build", *v032_debian_args, "--debian-mirror", untrusted_mirror, "--ca-bundle", str(tmp_path / "cert.pem"), "-q"
    )
    assert trusted.returncode == 6
    assert "could not verify a TLS certificate" not in error_line(trusted.stderr)


def test_an_https_mirror_needs_no_ca_option_and_the_runtime_never_holds_the_ca(
    v032_debian_args: list[str], tmp_path: Path
) -> None:
    host = config.host_debian_mirror()
    if not host or config.host_ca_bundle() is None:
        env.missing("needs a Debian mirror in the host's apt sources and a host trust store")
    mirror = "https://" + host.split("://", 1)[1]
    report = tmp_path / "r.json"
    # An image name of its own: the shared build's tag stays on the shared build, and this
    # build's layers stay tagged, so the next run is a layer-cache hit.
    result = env.run_cli("build", *v032_debian_args, "--debian-mirror", mirror, "--report", str(report), "-q",
                         "--image-name", "kube-router-sctp/itest-https-mirror", timeout=3600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    image = json.loads(report.read_text())["stages"]["build"]["image_id"]
    engine = env.docker_engine()
    saved = io.BytesIO(b"".join(engine.api.get_image(image)))
    found = []
    with tarfile.open(fileobj=saved) as outer:
        for member in outer.getmembers():
            if member.name.endswith("layer.tar"):
                layer = outer.extractfile(member)
                assert layer is not None
                with tarfile.open(fileobj=io.BytesIO(layer.read())) as inner:
                    found += [n for n in inner.getnames() if n.endswith(CA_NAMES)]
    assert found == []  # in no layer of the runtime image, not even a deleted one
    labels = (engine.image(image) or {})["Config"]["Labels"]
    assert labels["io.github.kube-router-sctp.kube-router.version"] == "v0.3.2"
