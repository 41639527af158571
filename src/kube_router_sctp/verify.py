"""verify: prove on a real kernel that an image's kube-router forwards SCTP for ClusterIP,
NodePort and ExternalIP services, and (with ``--control``) that its patches are why.

Each image gets a node of its own: a fresh Docker-host VM on Debian's kernel under QEMU
(``vm.dockerhost``), the image copied into it from the building daemon, the 2019
report's topology wired in the guest (``dataplane.node``), kube-router started as its
DaemonSet runs it against a Kubernetes API stand-in on the host (``dataplane.kubeapi``),
then the checks (``dataplane.scenario``). Only the API is a stand-in; the kernel, the
network and kube-router are real.

A candidate must pass every check. A negative control (the same release built with
``--negative-control``) must fail the three SCTP cells and pass the six TCP and UDP ones.
Any other result fails the run (exit status of DataplaneError).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import log, safefs
from .cache import Cache
from .config import Settings
from .dataplane import manifests as m
from .dataplane.kubeapi import KubeAPIStandIn, Store
from .dataplane.node import Node, kube_router_flags, transfer_image
from .dataplane.scenario import ADDRESSES, CLIENT, PROTOCOLS, Outcome, Scenario
from .engine import Engine
from .errors import ConfigError, DataplaneError, KernelUnsupportedError, VMError
from .redact import redact, redact_data
from .vm.dockerhost import HOST_FROM_GUEST, docker_host
from .vm.kernel import KernelFiles, resolve

VERSION_LABEL = "io.github.kube-router-sctp.kube-router.version"
PATCHES_LABEL = "io.github.kube-router-sctp.patches"
SERIES_LABEL = "io.github.kube-router-sctp.patch-series"
LOG_TAIL_LINES = 400


@dataclass
class Run:
    """One image on one fresh node: what was checked, what was seen, how long it took."""

    role: str  # "candidate" or "control"
    image: str
    image_id: str = ""
    kube_router_version: str = ""
    series: str = ""
    patches: str = ""
    kernel: str = ""
    booted: dict[str, Any] = field(default_factory=dict)  # the kernel's packages and sha256s
    flags: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    evidence: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""  # set when the run could not finish its checks

    @property
    def met(self) -> bool:
        return not self.error and bool(self.outcomes) and all(o.met for o in self.outcomes)

    def record(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "image": self.image,
            "image_id": self.image_id,
            "kube_router_version": self.kube_router_version,
            "series": self.series,
            "patches": self.patches.split(),
            "kernel": self.kernel,
            "booted": self.booted,
            "flags": self.flags,
            "met": self.met,
            "error": self.error,
            "timings": {k: round(v, 1) for k, v in self.timings.items()},
            "outcomes": [o.record() for o in self.outcomes],
            "evidence": self.evidence,
        }


# -- running -----------------------------------------------------------------------------
def verify(settings: Settings, image: str, control: str | None, version: str | None) -> list[Run]:
    """For each kernel (``--kernel``, repeatable; Debian's by default), the candidate,
    then the control, each on its own fresh node."""
    builder = Engine(settings.docker_host)
    cache = Cache(settings.cache_dir)
    planned = [_planned(builder, image, "candidate", version)]
    if control:
        planned.append(_planned(builder, control, "control", planned[0].kube_router_version))
    runs: list[Run] = []
    for spec in dict.fromkeys(settings.smoke_kernels or ("debian",)):
        kernel = resolve(spec, settings.smoke_modules, cache, mirror=settings.mirrors.debian)
        for template in planned:
            run = dataclasses.replace(template, kernel=f"{kernel.version} ({spec}; QEMU, TCG)", booted=kernel.record())
            run.flags, run.outcomes, run.evidence, run.timings = [], [], {}, {}
            runs.append(run)
            try:
                with log.step("verify", f"{run.role} {run.image} (kube-router {run.kube_router_version}) on {spec}"):
                    run_one(run, builder, kernel, cache, settings.mirrors.debian)
            except (DataplaneError, VMError, KernelUnsupportedError) as exc:
                # The node never got as far as the checks (boot, image copy, a kernel that
                # lacks what the node needs): say so in the results and go on with the next
                # image or kernel, whose verdict stands on its own.
                run.error = exc.one_line()
                log.error(f"{run.role} run stopped: {run.error}")
    return runs


def _planned(builder: Engine, image: str, role: str, version: str | None) -> Run:
    inspected = builder.image(image)
    if inspected is None:
        raise ConfigError(f"{image} is not on {builder.describe()}", "build it first (python build.py build ...)")
    labels = (inspected.get("Config") or {}).get("Labels") or {}
    found = str(labels.get(VERSION_LABEL, ""))
    if version and found and found != version:
        raise ConfigError(
            f"{image} holds kube-router {found}, not {version}",
            "verify a candidate and a control of the same release (--kube-router-version names it)",
        )
    if not (version or found):
        raise ConfigError(f"{image} carries no kube-router version label", "pass --kube-router-version")
    return Run(
        role,
        image,
        image_id=str(inspected["Id"]),
        kube_router_version=found or str(version),
        series=str(labels.get(SERIES_LABEL, "")),
        patches=str(labels.get(PATCHES_LABEL, "")),
    )


def run_one(run: Run, builder: Engine, kernel: KernelFiles, cache: Cache, mirror: str | None) -> None:
    """Boot a node, run the checks, fill ``run``; the VM and the stand-in always go."""
    start = time.monotonic()
    run.kernel = run.kernel or f"{kernel.version} (QEMU, TCG)"
    with docker_host(kernel, cache, mirror=mirror) as host:
        run.timings["boot"] = host.boot_seconds
        mark = time.monotonic()
        with log.step("image into the node", run.image):
            image_id = transfer_image(builder, host.engine, run.image)
        run.timings["image copy"] = time.monotonic() - mark
        node = Node(host.engine, image_id)  # a digest reference has no name on the node
        with KubeAPIStandIn(Store(topology()), "127.0.0.1", 0, bookmark_interval=5.0) as api:
            port = api.url.rsplit(":", 1)[1]
            kubeconfig = api.kubeconfig(f"http://{HOST_FROM_GUEST}:{port}")
            scenario = Scenario(node, api.store, control=run.role == "control")
            try:
                _drive(run, node, scenario, kubeconfig)
            except DataplaneError as exc:
                run.error = exc.one_line()
                log.error(f"{run.role} run stopped: {run.error}")
                run.evidence["guest console (end)"] = host.guest.console_tail(40)
            finally:
                run.outcomes = scenario.outcomes
                run.evidence.update(scenario.evidence)
                run.evidence["kube-router log (end)"] = _tail(_safe_logs(node), LOG_TAIL_LINES)
                run.timings["first sync"] = scenario.sync_seconds
    run.timings["total"] = time.monotonic() - start


def topology() -> list[dict[str, Any]]:
    """The report's objects as an API server would serve them (with its defaults)."""
    return m.topology_2019()


def _drive(run: Run, node: Node, scenario: Scenario, kubeconfig: str) -> None:
    mark = time.monotonic()
    node.start_toolbox()
    run.evidence["node set-up"] = node.set_up()
    run.flags = kube_router_flags(node.kube_router_help())
    node.start_kube_router(run.flags, kubeconfig)
    run.timings["set-up"] = time.monotonic() - mark
    mark = time.monotonic()
    scenario.run()
    run.timings["checks"] = time.monotonic() - mark


def _safe_logs(node: Node) -> str:
    try:
        return node.kube_router_logs()
    except DataplaneError as exc:  # the guest may be gone: the log is evidence, not a verdict
        return f"(kube-router's log could not be read: {exc.message})"


def _tail(text: str, lines: int) -> str:
    kept = text.splitlines()
    return "\n".join(kept[-lines:])


def failures(runs: list[Run]) -> list[str]:
    """Every expectation not met, one line each."""
    lines = [f"{r.role} {r.image}: {r.error}" for r in runs if r.error]
    for run in runs:
        for o in run.outcomes:
            if not o.met:
                seen, wanted = _word(o.passed), _word(bool(o.expected))
                lines.append(f"{run.role} {run.image}: {o.name}: {seen}, expected {wanted}")
    return lines


# -- reporting ---------------------------------------------------------------------------
def _word(passed: bool) -> str:
    return "pass" if passed else "fail"


def _cell_text(outcome: Outcome | None) -> str:
    if outcome is None:
        return "not run"
    text = f"{_word(outcome.passed)} ({outcome.seconds:.1f} s)"
    return text if outcome.met else f"**{text.upper()}, expected {_word(bool(outcome.expected))}**"


def markdown_run(run: Run) -> str:
    on = f" on {run.kernel.split(' ', 1)[0]}" if run.kernel else ""
    title = f"### kube-router {run.kube_router_version}: {run.role} `{run.image}`{on}"
    verdict = "as expected" if run.met else "NOT as expected"
    times = ", ".join(f"{k} {v:.0f} s" for k, v in run.timings.items())
    lines = [
        title,
        "",
        f"- image `{run.image_id[:19]}`, series {run.series or 'n/a'}; kernel {run.kernel}",
        f"- patches: {', '.join(run.patches.split()) or 'none'}",
        f"- result: **{verdict}**; times: {times}",
    ]
    if run.error:
        lines.append(f"- stopped early: {run.error}")
    cells = {(o.address, o.protocol): o for o in run.outcomes if o.kind == "cell"}
    lines += ["", "| address | client | " + " | ".join(PROTOCOLS) + " |", "| --- | --- |" + " --- |" * len(PROTOCOLS)]
    for kind, ns, address in ADDRESSES:
        row = " | ".join(_cell_text(cells.get((kind, p))) for p in PROTOCOLS)
        lines.append(f"| {kind} {address} | {CLIENT[ns]} | {row} |")
    lines += ["", "| check | result | expected | time | detail |", "| --- | --- | --- | --- | --- |"]
    for o in (o for o in run.outcomes if o.kind == "check"):
        expected = "—" if o.expected is None else _word(o.expected)
        result = _word(o.passed) if o.met else f"**{_word(o.passed).upper()}**"
        detail = o.detail.replace("|", "\\|")
        lines.append(f"| {o.name} | {result} | {expected} | {o.seconds:.1f} s | {detail} |")
    return "\n".join(lines) + "\n"


def markdown(runs: list[Run]) -> str:
    return "\n".join(markdown_run(run) for run in runs)


def evidence_markdown(run: Run, keys: tuple[str, ...]) -> str:
    blocks = [f"#### {key}\n\n```\n{run.evidence[key].rstrip()}\n```\n" for key in keys if key in run.evidence]
    return "\n".join(blocks)


def results_paths(path: Path) -> tuple[Path, Path]:
    """``PATH.md`` and ``PATH.json`` for ``--results PATH``."""
    stem = path.with_suffix("") if path.suffix in (".md", ".json") else path  # "v0.3.2" keeps its dots
    return stem.parent / f"{stem.name}.md", stem.parent / f"{stem.name}.json"


def write_results(path: Path, runs: list[Run]) -> tuple[Path, Path]:
    """``PATH.md`` (the tables, then the firewall evidence) and ``PATH.json`` (everything)."""
    md, js = results_paths(path)
    evidence_keys = tuple(k for run in runs for k in run.evidence if k.startswith(("root cause", "ipset", "iptables")))
    body = markdown(runs)
    for run in runs:
        shown = evidence_markdown(run, tuple(dict.fromkeys(evidence_keys)))
        if shown:
            body += f"\n### Evidence: {run.role} `{run.image}`\n\n{shown}"
    safefs.write_output(md, redact(body).encode(), "the results")
    record = {"met": all(r.met for r in runs), "failures": failures(runs), "runs": [r.record() for r in runs]}
    safefs.write_output(js, (json.dumps(redact_data(record), indent=2) + "\n").encode(), "the results")
    return md, js
