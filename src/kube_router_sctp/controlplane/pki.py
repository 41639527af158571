"""The control plane's keys and certificates, made with openssl for one run.

A CA, the API server's serving certificate (IP SANs for loopback and for the address the
node VM reaches the host by, plus the ``kubernetes`` Service's names and cluster IP), and
the service-account signing key pair. EC P-256 throughout: quick to make, and every
client here (kubectl 1.20, client-go of 2019 and of today) speaks it. Keys are written
0600 into the run's private directory and die with it.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataplaneError

DAYS = 2  # a run lasts minutes; a clock skewed by a day still validates
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True)
class PKI:
    """The run's keys and certificates: a CA, the API server's serving pair, and the
    key pair that signs and checks service-account tokens."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_private: Path
    sa_public: Path


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigError("openssl is not installed", "apt-get install openssl")
    result = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataplaneError(f"openssl {args[0]} failed: {last}", "check the openssl installation")


def _ec_key(path: Path, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path.name, cwd=cwd)
    path.chmod(0o600)


def make(directory: Path, ips: list[str], names: list[str]) -> PKI:
    """Everything the API server needs, in ``directory`` (which must be private)."""
    for ip in ips:
        ipaddress.ip_address(ip)  # never a free-form string into the extension file
    for name in names:
        if not _DNS_NAME.match(name):
            raise ValueError(f"not a DNS name: {name!r}")
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "apiserver.key", directory / "apiserver.csr", directory / "apiserver.crt"
    sa_key, sa_pub = directory / "sa.key", directory / "sa.pub"
    _ec_key(ca_key, directory)
    _openssl(
        "req", "-x509", "-new", "-key", ca_key.name, "-subj", "/CN=kube-router-sctp verify CA",
        "-days", str(DAYS), "-out", ca_cert.name, cwd=directory,
    )  # fmt: skip
    _ec_key(key, directory)
    _openssl("req", "-new", "-key", key.name, "-subj", "/CN=kube-apiserver", "-out", csr.name, cwd=directory)
    sans = [f"IP:{ip}" for ip in ips] + [f"DNS:{name}" for name in names]
    extensions = directory / "apiserver.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={','.join(sans)}\n"
    )
    _openssl(
        "x509", "-req", "-in", csr.name, "-CA", ca_cert.name, "-CAkey", ca_key.name, "-CAcreateserial",
        "-days", str(DAYS), "-extfile", extensions.name, "-out", cert.name, cwd=directory,
    )  # fmt: skip
    _ec_key(sa_key, directory)
    _openssl("pkey", "-in", sa_key.name, "-pubout", "-out", sa_pub.name, cwd=directory)
    return PKI(ca_cert, cert, key, sa_key, sa_pub)
