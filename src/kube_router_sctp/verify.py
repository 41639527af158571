"""verify: prove on a real kernel that an image's kube-router forwards SCTP for ClusterIP,
NodePort and ExternalIP services, and (with ``--control``) that its patches are why.

Each image gets a node of its own: a fresh Docker-host VM on Debian's kernel under QEMU
(``vm.dockerhost``), the image copied into it from the building daemon, and a control
plane of its own on the host (``controlplane``: etcd, kube-apiserver and
kube-controller-manager, RBAC on). The manifests (the 2019 report's Service by default,
or ``--manifests DIR``) are applied with kubectl; a pod per Service is wired in the guest
(``dataplane.node``) and reported Running by the kubelet's stand-in
(``controlplane.kubelet``); the controllers make its Endpoints and EndpointSlices;
kube-router starts as its DaemonSet runs it, with its service account's token and its
ClusterRole; then the checks (``dataplane.scenario``). Everything is real except the
kubelet.

A candidate must pass every check. A negative control (the same release built with
``--negative-control``) must fail the three SCTP cells and pass the six TCP and UDP ones.
Any other result fails the run (exit status of DataplaneError).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from . import log, safefs, validate
from .cache import Cache, remove_tree
from .config import Settings
from .controlplane import build as cpbuild
from .controlplane.cluster import SERVICE_CIDR, ControlPlane
from .controlplane.kubectl import Kubectl, kubeconfig
from .controlplane.kubelet import Kubelet
from .dataplane import catalogue
from .dataplane import workload as w
from .dataplane.node import Node, kube_router_flags, transfer_image
from .dataplane.scenario import KUBE_ROUTER_USER, Outcome, Scenario
from .dataplane.situations import SituationResult, Situations
from .dataplane.twonode import NODE_A_IP6, POD_CIDR6_A, SERVICE_CIDR6
from .engine import Engine
from .errors import ConfigError, DataplaneError, KernelUnsupportedError, VMError
from .redact import redact, redact_data
from .render import LABEL_PREFIX, VERSION_LABEL
from .validate import semver_of
from .vm.dockerhost import HOST_FROM_GUEST, docker_host
from .vm.kernel import KernelFiles, resolve

PATCHES_LABEL = f"{LABEL_PREFIX}.patches"
SERIES_LABEL = f"{LABEL_PREFIX}.patch-series"
LOG_TAIL_LINES = 400
MANIFESTS = "resources/manifests"


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
    control_plane: dict[str, str] = field(default_factory=dict)  # component -> version
    manifests: str = ""
    flags: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    services: list[str] = field(default_factory=list)  # namespace/name of the Services proved
    skipped: list[str] = field(default_factory=list)  # Services the proof could not cover, and why
    evidence: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""  # set when the run could not finish its checks
    scenarios: list[str] = field(default_factory=list)  # --scenarios: the situations asked for
    situations: list[SituationResult] = field(default_factory=list)

    @property
    def met(self) -> bool:
        base = not self.error and bool(self.outcomes) and all(o.met for o in self.outcomes)
        return base and len(self.situations) == len(self.scenarios) and all(s.met for s in self.situations)

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
            "control_plane": self.control_plane,
            "manifests": self.manifests,
            "services": self.services,
            "skipped": self.skipped,
            "flags": self.flags,
            "met": self.met,
            "error": self.error,
            "timings": {k: round(v, 1) for k, v in self.timings.items()},
            "outcomes": [o.record() for o in self.outcomes],
            "scenarios": [s.record() for s in self.situations],
            "evidence": self.evidence,
        }


# -- inputs ------------------------------------------------------------------------------
def default_manifests() -> Path:
    """The 2019 report's Service (``sctp-service.yaml``)."""
    return Path(str(resources.files("kube_router_sctp").joinpath(f"{MANIFESTS}/2019")))


def rbac_manifest(version: str) -> Path:
    """kube-router's ServiceAccount, ClusterRole and binding, as its release's own
    DaemonSet manifests grant them."""
    name = "rbac-v2.yaml" if semver_of(version).major >= 2 else "rbac-v0.3-v1.yaml"
    return Path(str(resources.files("kube_router_sctp").joinpath(f"{MANIFESTS}/kube-router/{name}")))


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
MAX_MANIFEST_FILES = 1000
MAX_MANIFEST_BYTES = 16 << 20  # all files together
APPLIED_KINDS = ("Namespace", "Service")  # what the proof uses; nothing else is applied


def read_manifests(path: Path, into: Path) -> Path:
    """The user's manifests, read here before anything boots as every input is read, and
    copied into ``into`` (which kubectl then reads, so nothing changes in between): regular
    files only (a FIFO, a device or a link to /dev/zero is refused, not handed to kubectl),
    no link out of the directory, at most 128 levels, 1,000 files and 16 MiB."""
    root = Path(validate.local_path(str(path), "--manifests"))
    if not root.exists():
        raise ConfigError(f"--manifests {path} does not exist", "name a directory of Kubernetes YAML (or one file)")
    files = [root] if not root.is_dir() else _manifest_files(root)
    if not files:
        raise ConfigError(f"--manifests {path} holds no .yaml, .yml or .json file", "put the Services' manifests there")
    into.mkdir(parents=True, exist_ok=True)
    total = 0
    for index, file in enumerate(files):
        opened = safefs.open_regular(file)
        if opened is None:
            raise ConfigError(f"--manifests: {file} is not a regular file", "keep only YAML or JSON files there")
        with opened as handle:
            data = handle.read(MAX_MANIFEST_BYTES - total + 1)
        total += len(data)
        if total > MAX_MANIFEST_BYTES:
            raise ConfigError(f"--manifests {path} holds more than {MAX_MANIFEST_BYTES >> 20} MiB", "prove fewer files")
        suffix = file.suffix if file.suffix in MANIFEST_SUFFIXES else ".yaml"
        (into / f"{index:04d}{suffix}").write_bytes(data)
    return into


def _manifest_files(root: Path) -> list[Path]:
    """Manifest files below ``root`` (kubectl's suffixes), walked in a loop; a link may
    lead anywhere inside ``root`` but not out of it, nor round in a circle."""
    inside = root.resolve()
    found: list[Path] = []
    pending: list[tuple[Path, int]] = [(root, 0)]
    seen: set[tuple[int, int]] = set()
    while pending:
        directory, depth = pending.pop()
        info = directory.stat()
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        if depth > safefs.MAX_DEPTH:
            raise ConfigError(f"--manifests {root} nests more than {safefs.MAX_DEPTH} directories", "flatten it")
        for entry in sorted(directory.iterdir()):
            if entry.is_symlink() and not entry.resolve().is_relative_to(inside):
                raise ConfigError(f"--manifests: {entry} links out of {root}", "copy the file into the directory")
            if entry.is_dir():
                pending.append((entry, depth + 1))
            elif entry.suffix in MANIFEST_SUFFIXES:
                found.append(entry)
                if len(found) > MAX_MANIFEST_FILES:
                    raise ConfigError(f"--manifests {root} holds more than {MAX_MANIFEST_FILES} files", "split it")
    return sorted(found)


# -- running -----------------------------------------------------------------------------
def verify(
    settings: Settings,
    image: str,
    control: str | None,
    version: str | None,
    manifests: Path | None = None,
    scenarios: list[str] | None = None,
) -> list[Run]:
    """For each kernel (``--kernel``, repeatable; Debian's by default), the candidate,
    then the control, each on its own fresh node and control plane. ``scenarios`` (names
    from ``dataplane.catalogue``, or ``all``) run on the candidate after the base proof;
    what each must do is read from the candidate's release, patches and flags."""
    try:
        selected = [s.key for s in catalogue.select(scenarios)]
    except ValueError as exc:
        raise ConfigError(f"--scenarios: {exc}", "name scenarios from that list, comma-separated, or all") from exc
    builder = Engine(settings.docker_host)
    cache = Cache(settings.cache_dir)
    scratch = cache.scratch("manifests-")
    try:
        source = read_manifests(manifests, scratch / "manifests") if manifests else default_manifests()
        return _verify_all(settings, builder, cache, image, control, version, manifests, source, selected)
    finally:
        remove_tree(scratch)


def _verify_all(
    settings: Settings,
    builder: Engine,
    cache: Cache,
    image: str,
    control: str | None,
    version: str | None,
    manifests: Path | None,
    source: Path,
    selected: list[str],
) -> list[Run]:
    planned = [_planned(builder, image, "candidate", version)]
    if control:
        planned.append(_planned(builder, control, "control", planned[0].kube_router_version))
    binaries = cpbuild.binaries(settings, builder)
    runs: list[Run] = []
    for spec in dict.fromkeys(settings.smoke_kernels or ("debian",)):
        kernel = resolve(spec, settings.smoke_modules, cache, mirror=settings.mirrors.debian)
        for template in planned:
            where = _Where(settings, builder, cache, binaries, source, kernel, spec, manifests)
            runs.append(_once_more_after_a_panic(functools.partial(_attempt, template, where, selected)))
    return runs


@dataclass(frozen=True)
class _Where:
    """What every run of one kernel shares."""

    settings: Settings
    builder: Engine
    cache: Cache
    binaries: cpbuild.Binaries
    source: Path  # the manifests, as read
    kernel: KernelFiles
    spec: str
    manifests: Path | None  # as the user named them


def _attempt(template: Run, where: _Where, selected: list[str]) -> Run:
    """One run of ``template``'s image on a fresh node: its record, with ``error`` set if
    the node never got as far as a verdict."""
    run = dataclasses.replace(
        template, kernel=f"{where.kernel.version} ({where.spec}; QEMU, TCG)", booted=where.kernel.record()
    )
    run.flags, run.outcomes, run.evidence, run.timings = [], [], {}, {}
    run.control_plane, run.services, run.skipped = {}, [], []
    run.scenarios = selected if run.role == "candidate" else []
    run.situations = []
    run.manifests = log.clean(str(where.manifests)) if where.manifests else "the 2019 report's sctp-service.yaml"
    title = f"{run.role} {run.image} (kube-router {run.kube_router_version}) on {where.spec}"
    try:
        with log.step("verify", title):
            mirror = where.settings.mirrors.debian
            run_one(run, where.builder, where.kernel, where.cache, mirror, where.binaries, where.source)
    except (DataplaneError, VMError, KernelUnsupportedError) as exc:
        # The node never got as far as the checks (boot, image copy, control plane, a
        # kernel that lacks what the node needs): say so in the results and go on with the
        # next image or kernel, whose verdict stands on its own.
        run.error = exc.one_line()
        log.error(f"{run.role} run stopped: {run.error}")
    return run


PANIC = "Kernel panic - not syncing"


def _once_more_after_a_panic(attempt: Callable[[], Run]) -> Run:
    """One run; repeated once on a fresh node when the node's kernel panicked before the
    run had a verdict (seen under TCG: an int3 Oops in the page allocator of 6.12 with two
    vCPUs, in a run whose images were fine). A second panic stands; the first console is
    kept in the results either way."""
    run = attempt()
    console = run.evidence.get("guest console (end)", "")
    if not (run.error and PANIC in console):
        return run
    log.warn(f"{run.role}: the node's kernel panicked ({run.error}); booting a fresh node once more")
    again = attempt()
    again.evidence["the first node's kernel panic (the run was repeated once)"] = console
    return again


def _planned(builder: Engine, image: str, role: str, version: str | None) -> Run:
    inspected = builder.image(image)
    if inspected is None:
        raise ConfigError(f"{image} is not on {builder.describe()}", "build it first (python build.py build ...)")
    labels = (inspected.get("Config") or {}).get("Labels") or {}
    found = str(labels.get(VERSION_LABEL, ""))
    if found:
        # The label is the image's to write: checked here, before anything boots.
        try:
            found = validate.kube_router_version(found, f"kube-router version label ({VERSION_LABEL}) of {image}")
        except ConfigError as exc:
            fix = "build the image with this tool, or relabel it with a release such as v0.3.2"
            raise ConfigError(exc.message, fix) from exc
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


def run_one(
    run: Run,
    builder: Engine,
    kernel: KernelFiles,
    cache: Cache,
    mirror: str | None,
    binaries: cpbuild.Binaries,
    manifests: Path,
) -> None:
    """Boot a node and start a control plane, run the checks, fill ``run``; the VM and
    the control plane always go."""
    start = time.monotonic()
    run.kernel = run.kernel or f"{kernel.version} (QEMU, TCG)"
    with docker_host(kernel, cache, mirror=mirror) as host:
        run.timings["boot"] = host.boot_seconds
        mark = time.monotonic()
        with log.step("image into the node", run.image):
            image_id = transfer_image(builder, host.engine, run.image)
        run.timings["image copy"] = time.monotonic() - mark
        node = Node(host.engine, image_id)  # a digest reference has no name on the node
        mark = time.monotonic()
        workdir = cache.scratch("controlplane-")
        # The IPv6 scenario needs a dual-stack service range from the start (the API server's
        # range cannot grow while it runs); IPv4 stays the primary family, as the base proof wants.
        service_cidr = SERVICE_CIDR + (f",{SERVICE_CIDR6}" if "ipv6" in run.scenarios else "")
        with (
            log.step("control plane", f"etcd, kube-apiserver and kube-controller-manager {binaries.version}"),
            ControlPlane(
                binaries, workdir, HOST_FROM_GUEST, audited_users=[KUBE_ROUTER_USER], service_cidr=service_cidr
            ) as cp,
        ):
            run.timings["control plane"] = time.monotonic() - mark
            scenario: Scenario | None = None
            try:
                run.control_plane = _versions(cp)
                scenario = _prepare(run, node, cp, manifests)
                mark = time.monotonic()
                scenario.run()
                run.timings["checks"] = time.monotonic() - mark
                if run.scenarios:
                    mark = time.monotonic()
                    situations = _situations(run, node, cp, scenario.kubelet)
                    try:
                        situations.run()
                    finally:
                        run.situations = situations.results
                        run.evidence.update({f"scenarios: {k}": v for k, v in situations.evidence.items()})
                        run.timings["scenarios"] = time.monotonic() - mark
            except DataplaneError as exc:
                run.error = exc.one_line()
                log.error(f"{run.role} run stopped: {run.error}")
                run.evidence["guest console (end)"] = host.guest.console_tail(40)
            finally:
                if scenario is not None:
                    run.outcomes = scenario.outcomes
                    run.evidence.update(scenario.evidence)
                    run.timings["first sync"] = scenario.sync_seconds
                run.evidence["kube-router log (end)"] = _tail(_safe_logs(node), LOG_TAIL_LINES)
                for name, text in cp.logs(LOG_TAIL_LINES // 10).items():
                    run.evidence[f"{name} log (end)"] = text
    run.timings["total"] = time.monotonic() - start


def _situations(run: Run, node: Node, cp: ControlPlane, kubelet: Kubelet) -> Situations:
    """The scenarios for this image: its release, the series patches its label lists and
    the flags its --help lists decide what each part must do."""
    release = catalogue.Release(run.kube_router_version, tuple(run.patches.split()), node.kube_router_help())
    token = cp.token("kube-system", "kube-router")
    return Situations(
        node,
        cp.kubectl,
        kubelet,
        release,
        kubeconfig(cp.guest_url, cp.ca_pem, token, "kube-router"),
        HOST_FROM_GUEST,
        [catalogue.BY_KEY[key] for key in run.scenarios],
    )


def _versions(cp: ControlPlane) -> dict[str, str]:
    served = cp.version()
    return {
        "kube-apiserver": str(served.get("gitVersion", "?")),
        "kube-controller-manager": cp.binaries.version,
        "etcd": cp.etcd_version(),
        "kubectl": cp.kubectl.version(),
        "go (control plane)": str(served.get("goVersion", "?")),
    }


def _prepare(run: Run, node: Node, cp: ControlPlane, manifests: Path) -> Scenario:
    """Objects into the API, the pods' network into the node, kube-router started."""
    mark = time.monotonic()
    kubectl = cp.kubectl
    kubectl.apply_path(rbac_manifest(run.kube_router_version))
    _apply_manifests(kubectl, manifests)
    services = [
        w.service_from_api(item)
        for item in kubectl.items("services")
        if (item["metadata"].get("namespace"), item["metadata"]["name"]) != ("default", "kubernetes")
    ]
    workload = w.plan(services)
    run.services = [s.key for s in workload.services]
    run.skipped = workload.skipped
    for note in workload.skipped:
        log.warn(f"not covered: {note}")
    # The IPv6 scenario needs node A dual-stack from its registration: podCIDRs are immutable.
    dual = "ipv6" in run.scenarios and "--enable-ipv6" in node.kube_router_help()
    kubelet = Kubelet(
        kubectl,
        w.NODE_NAME,
        w.NODE_IP,
        w.NODE_POD_CIDR,
        node_ip6=NODE_A_IP6 if dual else "",
        pod_cidr6=POD_CIDR6_A if dual else "",
    )
    kubelet.register()
    node.start_toolbox()
    run.evidence["node set-up"] = node.set_up(workload.guest_pods(), workload.external_ips())
    for namespace in sorted({pod.spec.namespace for pod in workload.guest_pods()}):
        _wait_for_default_account(kubectl, namespace)
    kubelet.run([pod.spec for pod in workload.pods])
    token = cp.token("kube-system", "kube-router")
    run.flags = kube_router_flags(node.kube_router_help(), workload.external_ips())
    node.start_kube_router(run.flags, kubeconfig(cp.guest_url, cp.ca_pem, token, "kube-router"))
    run.timings["set-up"] = time.monotonic() - mark
    return Scenario(node, kubectl, kubelet, workload, control=run.role == "control", audit=cp.audit)


def _apply_manifests(kubectl: Kubectl, path: Path) -> None:
    """Apply the manifests, Namespaces first, creating any namespace they use but do not
    define (``kubectl apply`` takes files in name order and would fail on those)."""
    objects = _json_objects(kubectl.run(*_read_args(path), timeout=120))
    if not objects:
        raise ConfigError(f"the manifests in {path} hold no Kubernetes object", "check the files")
    for other in (o for o in objects if o["kind"] not in APPLIED_KINDS):
        meta = other.get("metadata", {})
        where = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        log.warn(f"not applied: {other['kind']} {where} (verify applies Namespaces and Services only)")
    objects = [o for o in objects if o["kind"] in APPLIED_KINDS]
    defined = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    used = {o.get("metadata", {}).get("namespace") for o in objects} - {None, "", "default", "kube-system"}
    missing = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}} for name in sorted(used - defined)]
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    rest = [o for o in objects if o["kind"] != "Namespace"]
    if namespaces or missing:
        kubectl.apply([*namespaces, *missing])
    kubectl.apply(rest)


def _json_objects(text: str) -> list[dict[str, Any]]:
    """kubectl's JSON output: one List, or objects one after another; Lists unpacked."""
    decoder, found, index = json.JSONDecoder(), [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        try:
            value, index = decoder.raw_decode(text, index)
        except (ValueError, RecursionError) as exc:
            raise ConfigError(
                f"kubectl's reading of the manifests is not usable JSON ({type(exc).__name__})", "check the files"
            ) from exc
        items = value.get("items", []) if isinstance(value, dict) and value.get("kind") == "List" else [value]
        found += [o for o in items if isinstance(o, dict) and o.get("kind")]
    return found


def _read_args(path: Path) -> list[str]:
    """kubectl's own reading of the manifests (every object as JSON), sent nowhere."""
    args = ["apply", "-f", str(path), "--dry-run=client", "-o", "json"]
    return args + (["--recursive"] if path.is_dir() else [])


def _wait_for_default_account(kubectl: Kubectl, namespace: str, timeout: float = 60.0) -> None:
    """Pod admission wants the namespace's ``default`` ServiceAccount, which the
    service-account controller makes a moment after the namespace appears."""
    deadline = time.monotonic() + timeout
    while not kubectl.exists("serviceaccount", "default", namespace):
        if time.monotonic() > deadline:
            raise DataplaneError(
                f"no default ServiceAccount in namespace {namespace} after {timeout:.0f}s",
                "see the controller-manager's log in the results",
            )
        time.sleep(0.5)


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
        for situation in run.situations:
            if situation.error:
                lines.append(f"{run.role} {run.image}: scenario {situation.situation.key}: {situation.error}")
            for part in situation.parts:
                if not part.met:
                    lines.append(
                        f"{run.role} {run.image}: scenario {part.situation}/{part.part}: {part.result}, "
                        f"expected {part.expected.verdict}"
                    )
        if len(run.situations) < len(run.scenarios):
            missing = sorted(set(run.scenarios) - {s.situation.key for s in run.situations})
            lines.append(f"{run.role} {run.image}: scenarios not run: {', '.join(missing)}")
    return lines


# -- reporting ---------------------------------------------------------------------------
def _word(passed: bool) -> str:
    return "pass" if passed else "fail"


def _cell_text(outcome: Outcome | None) -> str:
    if outcome is None:
        return "—"
    text = f"{_word(outcome.passed)} ({outcome.seconds:.1f} s)"
    return text if outcome.met else f"**{text.upper()}, expected {_word(bool(outcome.expected))}**"


_KINDS = ("ClusterIP", "NodePort", "ExternalIP")
_CLIENT = {"ClusterIP": "node (root netns)", "NodePort": "external host", "ExternalIP": "external host"}


def cell_tables(outcomes: list[Outcome]) -> list[str]:
    """One table per Service: a row per address, a column per port."""
    lines: list[str] = []
    cells = [o for o in outcomes if o.kind == "cell"]
    for service in dict.fromkeys(o.service for o in cells):
        mine = [o for o in cells if o.service == service]
        ports = list(dict.fromkeys((o.port, o.protocol) for o in mine))
        rows = list(dict.fromkeys((o.address, o.target.rsplit(":", 1)[0]) for o in mine))
        rows.sort(key=lambda row: _KINDS.index(row[0]) if row[0] in _KINDS else len(_KINDS))
        by = {(o.address, o.target.rsplit(":", 1)[0], o.port, o.protocol): o for o in mine}
        header = " | ".join(f"{port}/{protocol}" for port, protocol in ports)
        lines += [
            "",
            f"Service `{service}`:",
            "",
            f"| address | client | {header} |",
            "| --- | --- |" + " --- |" * len(ports),
        ]
        for kind, address in rows:
            row = []
            for port, protocol in ports:
                outcome = by.get((kind, address, port, protocol))
                text = _cell_text(outcome)
                if outcome is not None and not outcome.target.endswith(f":{port}"):
                    text += f" (:{outcome.target.rsplit(':', 1)[1]})"  # a node port other than the port
                row.append(text)
            lines.append(f"| {kind} {address} | {_CLIENT.get(kind, '?')} | {' | '.join(row)} |")
    return lines


def markdown_run(run: Run) -> str:
    # the version, series and patches come from the image's labels, the kernel from its
    # package: cells like any other text the image or a package can choose
    on = f" on {_cell(run.kernel.split(' ', 1)[0])}" if run.kernel else ""
    title = f"### kube-router {_cell(run.kube_router_version)}: {run.role} `{run.image}`{on}"
    verdict = "as expected" if run.met else "NOT as expected"
    times = ", ".join(f"{k} {v:.0f} s" for k, v in run.timings.items())
    plane = ", ".join(f"{k} {v}" for k, v in run.control_plane.items())
    lines = [
        title,
        "",
        f"- image `{run.image_id[:19]}`, series {_cell(run.series) or 'n/a'}; kernel {_cell(run.kernel)}",
        f"- patches: {_cell(', '.join(run.patches.split())) or 'none'}",
        f"- control plane: {plane or 'not started'}; manifests: {run.manifests or 'n/a'}",
        f"- result: **{verdict}**; times: {times}",
    ]
    if run.skipped:
        lines.append(f"- not covered: {'; '.join(run.skipped)}")
    if run.error:
        lines.append(f"- stopped early: {_cell(run.error)}")
    lines += cell_tables(run.outcomes)
    lines += ["", "| check | result | expected | time | detail |", "| --- | --- | --- | --- | --- |"]
    for o in (o for o in run.outcomes if o.kind == "check"):
        expected = "—" if o.expected is None else _word(o.expected)
        result = _word(o.passed) if o.met else f"**{_word(o.passed).upper()}**"
        lines.append(f"| {o.name} | {result} | {expected} | {o.seconds:.1f} s | {_cell(o.detail)} |")
    lines += scenario_tables(run)
    return "\n".join(lines) + "\n"


# What the guest printed reaches the results: a detail, an error, a block of evidence.
# Inline, it is one line with every character that could open a link, an image, HTML,
# code or emphasis escaped; a block is fenced with more backticks than it holds anywhere,
# so nothing in it ends the fence. Both are cleaned as the log is (control characters).
_MARKDOWN_RE = re.compile(r"[\\`*_\[\]<>|~]")


def _cell(text: str) -> str:
    """Text for a table cell or a list item: one line, nothing in it Markdown or HTML."""
    return _MARKDOWN_RE.sub(r"\\\g<0>", " ".join(log.clean(text).splitlines()))


def _block(title: str, text: str) -> str:
    """A block of evidence under its title, verbatim in a code fence it cannot end."""
    text = log.clean(text).rstrip()
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"#### {title}\n\n{fence}\n{text}\n{fence}\n"


def scenario_tables(run: Run) -> list[str]:
    """The scenarios: one row each (result, expected, time), then one row per part with
    what it measured."""
    if not run.scenarios:
        return []
    lines = [
        "",
        "| scenario | result | expected | time |",
        "| --- | --- | --- | --- |",
    ]
    for s in run.situations:
        result = s.result if s.met else f"**{s.result.upper()}**"
        stopped = f" (stopped: {_cell(s.error)})" if s.error else ""
        lines.append(
            f"| {s.situation.number}. {s.situation.title} | {result}{stopped} | {_cell(s.expected.text())} "
            f"| {s.seconds:.0f} s |"
        )
    lines += [
        "",
        "| scenario / part | result | expected | time | measured | detail |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in run.situations:
        for p in s.parts:
            result = p.result if p.met else f"**{p.result.upper()}**"
            measured = ", ".join(f"{k} {v:.1f} s" for k, v in p.measures.items())
            lines.append(
                f"| {p.situation} / {p.part} | {result} | {_cell(p.expected.text())} | {p.seconds:.1f} s "
                f"| {measured} | {_cell(p.detail)} |"
            )
    return lines


def markdown(runs: list[Run]) -> str:
    return "\n".join(markdown_run(run) for run in runs)


def evidence_markdown(run: Run, keys: tuple[str, ...]) -> str:
    blocks = [_block(key, run.evidence[key]) for key in keys if key in run.evidence]
    return "\n".join(blocks)


def results_paths(path: Path) -> tuple[Path, Path]:
    """``PATH.md`` and ``PATH.json`` for ``--results PATH``."""
    stem = path.with_suffix("") if path.suffix in (".md", ".json") else path  # "v0.3.2" keeps its dots
    return stem.parent / f"{stem.name}.md", stem.parent / f"{stem.name}.json"


def write_results(path: Path, runs: list[Run]) -> tuple[Path, Path]:
    """``PATH.md`` (the tables, then the firewall evidence) and ``PATH.json`` (everything)."""
    md, js = results_paths(path)
    shown_kinds = ("root cause", "ipset", "iptables", "kube-router's API requests", "Endpoints and EndpointSlices")
    evidence_keys = tuple(k for run in runs for k in run.evidence if k.startswith(shown_kinds))
    body = markdown(runs)
    for run in runs:
        shown = evidence_markdown(run, tuple(dict.fromkeys(evidence_keys)))
        if shown:
            body += f"\n### Evidence: {run.role} `{run.image}`\n\n{shown}"
        for situation in run.situations:
            blocks = [_block(k, v) for k, v in situation.evidence.items()]
            if blocks:
                body += f"\n### Evidence: scenario {situation.situation.key}\n\n" + "\n".join(blocks)
    safefs.write_output(md, redact(body).encode(), "the results")
    record = {"met": all(r.met for r in runs), "failures": failures(runs), "runs": [r.record() for r in runs]}
    safefs.write_output(js, (json.dumps(redact_data(record), indent=2) + "\n").encode(), "the results")
    return md, js
