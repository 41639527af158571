"""Where the project's own data lives: patch series, image templates, ipvsadm's folder.

They sit beside the package in the checkout (the tool is run from it, as
``python build.py`` or an editable install). ``KUBE_ROUTER_SCTP_PROJECT_DIR`` points
elsewhere, for example at a copy of the repository shipped into an air-gapped site.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError


def project_dir() -> Path:
    explicit = os.environ.get("KUBE_ROUTER_SCTP_PROJECT_DIR")
    candidates = [Path(explicit)] if explicit else []
    candidates.append(Path(__file__).resolve().parents[2])
    for candidate in candidates:
        if (candidate / "patches" / "kube-router" / "series.toml").is_file():
            return candidate
    raise ConfigError(
        "cannot find the project's patches/ and images/ directories",
        "run from a checkout of kube-router-sctp or set KUBE_ROUTER_SCTP_PROJECT_DIR",
    )


def patches_dir() -> Path:
    return project_dir() / "patches" / "kube-router"


def images_dir() -> Path:
    return project_dir() / "images"


def ipvsadm_dir() -> Path:
    return project_dir() / "ipvsadm"
