"""Shell that runs inside the guests (the smoke check, the VMs' init scripts), kept as
files under ``resources/guest/`` so shellcheck lints them like code (tests/lint).

A script takes its values from ``NAME=@KEY@`` lines at its top: rendering replaces each
``@KEY@`` with the value, shell-quoted, and refuses a script left with a placeholder or a
value it does not use, so a renamed key fails at once instead of in a guest.
"""

from __future__ import annotations

import re
import shlex
from importlib import resources

_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def text(name: str) -> str:
    """The script as shipped (``smoke-check.sh``, ``kernelsmoke-init.sh``...)."""
    return resources.files("kube_router_sctp").joinpath(f"resources/guest/{name}").read_text()


def render(name: str, **values: str | int) -> str:
    source = text(name)
    wanted = set(_PLACEHOLDER.findall(source))
    if wanted != set(values):
        missing, unused = sorted(wanted - set(values)), sorted(set(values) - wanted)
        raise ValueError(f"{name}: placeholders without values {missing}, values without placeholders {unused}")
    return _PLACEHOLDER.sub(lambda match: shlex.quote(str(values[match[1]])), source)
