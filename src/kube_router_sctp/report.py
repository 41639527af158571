"""The JSON build report: inputs, what each stage produced, and how long it took.

Stages add their records as they finish; the file is written once, atomically, when the
run ends (successfully or with a handled failure), so no reader ever sees half a report.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from . import __version__
from .redact import redact_data
from .safefs import write_output


class Report:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {
            "tool": {"name": "kube-router-sctp", "version": __version__},
            "started": _now(),
            "status": "running",
            "stages": {},
            "stage_order": [],  # the order the stages ran in (the keys above are sorted)
            "durations": {},
        }

    def add(self, stage: str, record: dict[str, Any], seconds: float | None = None) -> None:
        self.data["stages"][stage] = record
        if stage not in self.data["stage_order"]:
            self.data["stage_order"].append(stage)
        if seconds is not None:
            self.data["durations"][stage] = round(seconds, 2)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def finish(self, status: str, error: str | None = None) -> None:
        self.data["status"] = status
        self.data["finished"] = _now()
        if error:
            self.data["error"] = error

    def write(self, path: Path) -> None:
        """Atomically, never through a symlink, with every credential redacted."""
        text = json.dumps(redact_data(self.data), indent=2, sort_keys=True) + "\n"
        write_output(path, text.encode(), "the report")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
