"""The one place that runs kubectl: apply, get, delete, and raw requests.

Any kubectl from 1.20 on (Debian bookworm's ``kubernetes-client``) does: only flags it
already had are used. Its ``config set-credentials`` crashes, so kubeconfigs are written
here (JSON, which every kubeconfig reader takes as YAML). The status subresource, which
kubectl 1.20 cannot address by name, is reached with ``replace --raw``. Every call runs
with its own discovery cache under the run's directory, never in the user's home.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataplaneError

Obj = dict[str, Any]


def find() -> str:
    found = shutil.which("kubectl")
    if found is None:
        raise ConfigError(
            "kubectl is not installed (the dataplane proof applies its objects with it)",
            "apt-get install kubernetes-client (or run scripts/setup-host.sh)",
        )
    return found


def kubeconfig(server: str, ca_pem: bytes, token: str, user: str = "user") -> str:
    """A kubeconfig for one server, CA and bearer token."""
    cluster = "krs"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    }
    return json.dumps(document, indent=2) + "\n"


class Kubectl:
    def __init__(self, kubeconfig_path: Path, cache_dir: Path) -> None:
        self.kubeconfig = kubeconfig_path
        self.cache_dir = cache_dir
        self.binary = find()

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60, check: bool = True) -> str:
        command = [self.binary, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}", *args]
        try:
            result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise DataplaneError(
                f"kubectl {' '.join(args[:3])} took over {timeout:.0f}s", "is the API server up?"
            ) from exc
        if check and result.returncode != 0:
            said = " ".join(result.stderr.split())[:400] or f"exit status {result.returncode}"
            raise DataplaneError(
                f"kubectl {' '.join(args[:3])} failed: {said}", "see the API server's log in the results"
            )
        return result.stdout

    def version(self) -> str:
        data = json.loads(self.run("version", "--client", "-o", "json"))
        return str(data.get("clientVersion", {}).get("gitVersion", "unknown"))

    # -- objects -----------------------------------------------------------------------------
    def apply(self, objects: list[Obj]) -> str:
        """Create or update ``objects`` (sent as one JSON List)."""
        document = {"apiVersion": "v1", "kind": "List", "items": objects}
        return self.run("apply", "-f", "-", stdin=json.dumps(document))

    def apply_path(self, path: Path) -> str:
        """``kubectl apply`` a manifest file, or every manifest under a directory."""
        args = ["apply", "-f", str(path)] + (["--recursive"] if path.is_dir() else [])
        return self.run(*args, timeout=120)

    def get(self, resource: str, name: str | None = None, namespace: str | None = None) -> Obj:
        """One object, or (without ``name``) a List; ``namespace`` None: every namespace
        for a list, ``default`` for one object."""
        args = ["get", resource] + ([name] if name else []) + ["-o", "json"]
        if namespace is not None:
            args += ["-n", namespace]
        elif name is None:
            args.append("--all-namespaces")
        result: Obj = json.loads(self.run(*args))
        return result

    def items(self, resource: str, namespace: str | None = None) -> list[Obj]:
        return list(self.get(resource, namespace=namespace).get("items", []))

    def exists(self, resource: str, name: str, namespace: str | None = None) -> bool:
        args = ["get", resource, name, "--ignore-not-found", "-o", "name"]
        if namespace is not None:
            args += ["-n", namespace]
        return bool(self.run(*args).strip())

    def delete(
        self, resource: str, name: str, namespace: str | None = None, *, now: bool = False, grace: int | None = None
    ) -> None:
        """Delete and return at once; ``now``: no grace period (what a kubelet confirms);
        ``grace``: this grace period (a pod bound to a node then stays, terminating, until
        its kubelet confirms)."""
        args = ["delete", resource, name, "--ignore-not-found", "--wait=false"]
        if namespace is not None:
            args += ["-n", namespace]
        if now:
            args += ["--grace-period=0", "--force"]
        elif grace is not None:
            args += [f"--grace-period={grace}"]
        self.run(*args)

    # -- raw requests -------------------------------------------------------------------------
    def create_raw(self, uri: str, body: Obj) -> Obj:
        """POST ``body`` to ``uri`` (a subresource such as a ServiceAccount's token)."""
        result: Obj = json.loads(self.run("create", "--raw", uri, "-f", "-", stdin=json.dumps(body)) or "{}")
        return result

    def replace_raw(self, uri: str, body: Obj) -> Obj:
        """PUT ``body`` to ``uri`` (the status subresource)."""
        result: Obj = json.loads(self.run("replace", "--raw", uri, "-f", "-", stdin=json.dumps(body)) or "{}")
        return result

    def get_raw(self, uri: str) -> Obj:
        result: Obj = json.loads(self.run("get", "--raw", uri))
        return result
