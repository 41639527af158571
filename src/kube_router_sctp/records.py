"""What each stage writes into the build report: plain JSON-ready dicts built from the
stage's own results. The pipeline decides when a stage runs; this module only says what
its record holds, so the report's shape is read (and reviewed) in one place."""

from __future__ import annotations

import hashlib
from typing import Any

from .fetch import Fetched
from .patch import PatchedTree
from .plan import Plan
from .render import Rendered


def plan_record(plan: Plan) -> dict[str, Any]:
    return {
        "kube_router_version": plan.version,
        "source": plan.source.describe(),
        "release_line": plan.line.name,
        "patch_series": plan.series.name,
        "series_revision": plan.series.revision,
        "native": plan.series.native,
        "ipvsadm_version": plan.ipvsadm_version,
        "family": plan.family,
        "image_repository": plan.image_repository,
        "release_tags": list(plan.release_tags),
    }


def fetch_record(plan: Plan, fetched: Fetched, bytes_downloaded: int) -> dict[str, Any]:
    kr = fetched.kube_router
    toolchain = fetched.go_toolchain
    return {
        "kube_router": {
            "version": kr.version,
            "commit": kr.commit,
            "tree_sha256": kr.tree_sha256,
            "origin": kr.origin,
            "restored_files": [r.describe() for r in kr.restored],
        },
        "ipvsadm": {
            "file": plan.ipvsadm.name,
            "sha256": fetched.ipvsadm.sha256,
            "url": fetched.ipvsadm.url or "cache",
        },
        "go_toolchain": None if toolchain is None else {"sha256": toolchain.sha256, "url": toolchain.url or "cache"},
        "bytes_downloaded": bytes_downloaded,
    }


def patch_record(plan: Plan, patched: PatchedTree) -> dict[str, Any]:
    series = plan.series
    return {
        "series": series.name,
        "revision": series.revision,
        "native": series.native,
        "applied": [
            {"name": a.name, "sha256": a.sha256, "description": a.description, "files": list(a.files)}
            for a in patched.applied
        ],
    }


def render_record(rendered: Rendered) -> dict[str, Any]:
    return {
        "base_images": rendered.provenance["base_images"],
        "source_date_epoch": rendered.source_date_epoch,
    }


def build_record(
    *, image_id: str, size: int, candidate: str, context_bytes: int, context_sha256: str, rendered: Rendered
) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "size": size,
        "candidate": candidate,
        "context_bytes": context_bytes,
        "context_sha256": context_sha256,
        "dockerfile_sha256": hashlib.sha256(rendered.dockerfile.encode()).hexdigest(),
        # Only these stages saw a network; every other step was built with none.
        "network": {"package_stages": list(rendered.prepare_stages), "other_stages": "none"},
    }
