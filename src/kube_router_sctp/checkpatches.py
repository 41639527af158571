"""check-patches: prove each release's series in the Go of its line.

For every version: export and apply the series strictly (host side), then, in the
go-toolchain image of that release line, ``go vet`` the touched packages, build
``./cmd/kube-router`` and run the touched packages' tests (the series' own
``*_sctp_test.go`` and upstream's). With ``--control`` the series' new tests also run
against the unpatched tree, where they must fail: they test the patch, not the tree.
Native releases (SCTP upstream) get the project's native checks instead of patches.
Module and build caches live in named Docker volumes, so repeated runs are quick.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from . import config, context, fetch, goproxy, log, render
from . import plan as plan_module
from .cache import remove_tree
from .errors import PipelineError
from .patch import PatchedTree, Series
from .pipeline import Pipeline

CA_PATH = "/etc/kube-router-sctp/ca-bundle.crt"
VOLUMES = {"kube-router-sctp-gomod": "/go/pkg/mod", "kube-router-sctp-gocache": "/root/.cache/go-build"}
_RESULT_RE = re.compile(r"^CHECK (\w+) (\d+) (\d+)$", re.M)
_FLAKY_RE = re.compile(r"^FLAKY (\./\S*) ([23]) ([A-Za-z0-9_ ]+)$", re.M)
_TEST_NAME = re.compile(r"Test[A-Za-z0-9_]{0,200}")
_TEST_FUNC = re.compile(rb"^func (Test[A-Za-z0-9_]{0,200})\(", re.M)
# `go` naming a module version the proxy will not serve: not the series' fault, and the
# fix is a proxy that serves it.


@dataclass
class Row:
    version: str
    series: str
    go: str = ""
    cells: dict[str, str] = field(default_factory=dict)  # column -> "ok" | "FAIL" | "-" | "skip"
    seconds: float = 0.0
    detail: str = ""
    blocked: str = ""  # why the toolchain could not even get the dependencies, if so
    flaky: list[str] = field(default_factory=list)  # upstream tests that passed only on a later try

    @property
    def passed(self) -> bool:
        return all(value in ("ok", "-") for value in self.cells.values())


COLUMNS = ("apply", "vet", "build", "tests", "control")


def _script(
    packages: list[str],
    steps: tuple[str, ...],
    test_run: Mapping[str, str] | None = None,
    own_tests: Iterable[str] = (),
) -> str:
    """The check as POSIX sh. ``test_run`` limits a package's tests to a -run pattern
    (upstream tests that need a live BGP peer or host network hang in a container).

    A package whose run fails only in upstream's tests is run twice more, whole and with
    the same pattern: some of upstream's tests race their own fake informers and fail now
    and then on a loaded machine (v0.4.0's Test_nodeHasEndpointsForService waits 10 s for
    a cache that may never fill). A package that passes on a later try is reported on a
    ``FLAKY`` line naming the first run's failed tests, never hidden; one that fails every
    try fails the cell, showing its first run. No second try where the first failure names
    one of ``own_tests`` (the tests the series or the project adds: a flaky test of ours
    is a defect to fix), names no test (a build error, ``os.Exit``) or panicked (a
    goroutine's panic, a test that hung)."""
    own = sorted(set(own_tests))
    for name in own:
        if not _TEST_NAME.fullmatch(name):
            raise ValueError(f"not a Go test name: {name!r}")
    tests = []
    for package in packages:
        pattern = (test_run or {}).get(package.strip("./").rstrip("/"))
        if pattern is not None and "'" in pattern:
            raise ValueError(f"a -run pattern may not hold a quote: {pattern!r}")
        tests.append(f"test_package {package} '{pattern or ''}' || rc=1")
    commands = {
        "vet": f"go vet {' '.join(packages)}",
        "build": "go build -o /tmp/kube-router ./cmd/kube-router",
        "tests": "run_tests",
        "control": "run_tests",
    }
    lines = [
        "set -u",
        "t=${TMPDIR:-/tmp}",
        f"own=' {' '.join(own)} '",
        "flaky=''",
        "go_test() {",
        "  pkg=$1; pattern=$2; shift 2",
        '  if [ -n "$pattern" ]; then go test -count=1 -timeout 600s -run "$pattern" "$pkg"',
        '  else go test -count=1 -timeout 600s "$pkg"; fi',
        "}",
        "test_package() {",
        '  go_test "$1" "$2" >"$t/package.log" 2>&1; first=$?',
        '  cat "$t/package.log"',
        "  [ $first -eq 0 ] && return 0",
        "  grep -q '^panic: ' \"$t/package.log\" && return $first",
        "  names=$(sed -n 's/^--- FAIL: \\([A-Za-z0-9_]\\{1,200\\}\\) (.*/\\1/p' \"$t/package.log\" | sort -u)",
        '  [ -n "$names" ] || return $first',
        # (sh has no locals: run() keeps its step in $name, so the loop uses $test.)
        "  for test in $names; do",
        '    case "$own" in *" $test "*) return $first;; esac',
        "  done",
        "  for try in 2 3; do",
        '    if go_test "$1" "$2" >/dev/null 2>&1; then',
        # Kept in the shell, not in a file a test could write.
        '      flaky="$flaky$(printf \'\\nFLAKY %s %s \' "$1" "$try")$(echo $names)"',
        "      return 0",
        "    fi",
        "  done",
        '  echo "(the package failed twice more, whole)"',
        "  return $first",
        "}",
        "run_tests() {",
        "  rc=0",
        *(f"  {line}" for line in tests),
        "  return $rc",
        "}",
        "run() {",
        '  name=$1; shift; t0=$(date +%s); "$@" >"$t/$name.log" 2>&1; rc=$?',
        '  echo "CHECK $name $rc $(( $(date +%s) - t0 ))"',
        '  [ $rc -eq 0 ] || tail -n 60 "$t/$name.log" | sed "s/^/  $name| /"',
        "}",
    ]
    lines += [f"run {step} {commands[step]}" for step in steps]
    lines.append('[ -z "$flaky" ] || printf \'%s\\n\' "$flaky"')
    return "\n".join(lines) + "\n"


def _test_names(sources: Iterable[bytes]) -> set[str]:
    """The top-level Go tests the given test files define."""
    return {m.decode() for source in sources for m in _TEST_FUNC.findall(source)}


def _added_tests(patched: PatchedTree) -> set[str]:
    """The Go tests the overlay adds: those its test files define that the same files of
    the unpatched tree do not (a series' new files, the project's native checks, and
    tests a patch adds to an upstream file). Upstream's own tests, even in a file a patch
    touches, are not among them."""
    added: set[str] = set()
    for path, content in patched.overlay.items():
        if content is None or not path.endswith("_test.go"):
            continue
        base = patched.base / path
        before = _test_names([base.read_bytes()]) if base.is_file() and not base.is_symlink() else set()
        added |= _test_names([content]) - before
    return added


def flaky_packages(output: str, packages: Iterable[str]) -> list[str]:
    """What the script's ``FLAKY`` lines say of the checked ``packages``: a package, its
    first run's failed tests, and the try that passed."""
    checked = set(packages)
    return [
        f"{m[1]}: {', '.join(m[3].split())} (failed, then passed on try {m[2]} of 3)"
        for m in _FLAKY_RE.finditer(output)
        if m[1] in checked
    ]


def toolchain_image(pipeline: Pipeline) -> str:
    """The go-toolchain stage of the release's Dockerfile as an image of its own: the
    environment every check runs in, so a series is checked in exactly the Go its
    release line builds with."""
    plan = pipeline.plan
    rendered = pipeline.render()
    go = plan.line.go
    toolchain = fetch.go_toolchain(plan, pipeline.downloader)
    reference = f"kube-router-sctp/go-toolchain:{go.kind}-{go.value.replace(':', '-').replace('/', '-')}-{plan.family}"
    with log.step("toolchain", reference):
        scratch = pipeline.cache.scratch("toolchain-")
        try:
            ctx = context.write(
                scratch / "context.tar", plan, rendered, go_toolchain=toolchain.path if toolchain else None
            )
            pipeline.engine.build(ctx.path, reference, target="go-toolchain", on_output=lambda _text: None)
        finally:
            remove_tree(scratch)
    return reference


def _packages(files: list[str]) -> list[str]:
    dirs = sorted({str(PurePosixPath(f).parent) for f in files if f.endswith(".go") and not f.startswith("vendor/")})
    return [f"./{d}/" if d != "." else "./" for d in dirs]


def _new_test_files(patched: PatchedTree) -> list[str]:
    return sorted(p for p, content in patched.overlay.items() if content is not None and p.endswith("_sctp_test.go"))


def _native_overlay(series: Series) -> dict[str, bytes]:
    """The project's native-SCTP checks for this range, placed by their relative paths;
    a later layer replaces a file of the same path in an earlier one."""
    return {
        path.relative_to(layer).as_posix(): path.read_bytes()
        for layer in series.checks
        for path in sorted(layer.rglob("*_test.go"))
    }


def _run_in_toolchain(
    pipeline: Pipeline, image: str, tree: PatchedTree, script: str, workdir: str
) -> tuple[dict[str, tuple[int, int]], str]:
    plan = pipeline.plan
    scratch = pipeline.cache.scratch("check-")
    try:
        # Unlike an image build, the checks download what `go test` needs from the Go proxy:
        # the image has GOPROXY=off, so name the proxy ("" is Go's default) and the CA.
        ca = plan.settings.mirrors.ca_bundle or config.host_ca_bundle()
        members = list(context.tree_members(tree, workdir.strip("/") + "/"))
        environment = {
            "GOFLAGS": "-buildvcs=false" + (" -mod=vendor" if plan.line.layout == "vendor" else ""),
            "GOPROXY": plan.settings.mirrors.go_proxy or "",
        }
        if ca is not None:
            members.append((CA_PATH.lstrip("/"), ca, 0o644))
            environment["SSL_CERT_FILE"] = CA_PATH
        tar = context.write_tar(scratch / "tree.tar", members, plan.pin.date if plan.pin else 0)
        result = pipeline.engine.run(
            image,
            ["-c", script],
            entrypoint=["/bin/sh"],
            environment=environment,
            volumes=VOLUMES,
            files=(tar.path, "/"),
            timeout=3600,
            labels={"io.github.kube-router-sctp.role": "check-patches"},
        )
    finally:
        remove_tree(scratch)
    return _results(result.output), result.output


def _results(output: str) -> dict[str, tuple[int, int]]:
    """Each step's exit status and seconds from its ``CHECK`` line. The code under check
    runs in the same container and could write a line of its own: a step with more than
    one is a failure, whatever they say."""
    results: dict[str, tuple[int, int]] = {}
    seen: set[str] = set()
    for m in _RESULT_RE.finditer(output):
        step = m[1]
        results[step] = (1, int(m[3])) if step in seen else (int(m[2]), int(m[3]))
        seen.add(step)
    return results


def check_version(version: str, flags: dict[str, object], control: bool) -> Row:
    start = time.monotonic()
    settings = config.load({**flags, "build.kube-router-version": version})
    plan = plan_module.build(settings)
    pipeline = Pipeline(plan)
    row = Row(version, plan.series.name + (" (native)" if plan.series.native else ""), render.go_version(plan))
    try:
        patched = pipeline.patch()
    except PipelineError as exc:
        row.cells = {"apply": "FAIL", "vet": "-", "build": "-", "tests": "-", "control": "-"}
        row.detail = exc.one_line()
        return row
    row.cells["apply"] = "ok"
    if plan.series.native:
        overlay = _native_overlay(plan.series)
        patched = PatchedTree(patched.base, overlay, patched.series, ())
        touched = list(overlay)
    else:
        touched = sorted({f for applied in patched.applied for f in applied.files})
    packages = _packages(touched)
    image = toolchain_image(pipeline)
    workdir = render.workdir(plan.line.layout)
    own = _added_tests(patched)
    script = _script(packages, ("vet", "build", "tests"), plan.series.test_run, own)
    results, output = _run_in_toolchain(pipeline, image, patched, script, workdir)
    row.flaky = flaky_packages(output, packages)
    for step in ("vet", "build", "tests"):
        rc = results.get(step, (None, 0))[0]
        row.cells[step] = "ok" if rc == 0 else "FAIL"
    failures = [line for line in output.splitlines() if line.startswith("  ")]
    refusal = goproxy.REFUSAL.search(output)
    if refusal and any(row.cells[step] == "FAIL" for step in ("vet", "build", "tests")):
        row.blocked = f"the Go proxy refused {refusal[1]}@{refusal[2]} (HTTP {refusal[3]})"
    if control and not plan.series.native:
        new_tests = _new_test_files(patched)
        unpatched = PatchedTree(patched.base, {p: patched.overlay[p] for p in new_tests}, patched.series, ())
        control_results, _ = _run_in_toolchain(
            pipeline, image, unpatched, _script(_packages(new_tests), ("control",), own_tests=own), workdir
        )
        # The control passes when the series' tests FAIL on the unpatched tree.
        rc = control_results.get("control", (0, 0))[0]
        row.cells["control"] = "ok" if rc != 0 and new_tests else "FAIL"
        if row.cells["control"] == "FAIL":
            failures.append("  control| the series' new tests pass on the unpatched tree (or there are none)")
    else:
        row.cells["control"] = "-"
    row.detail = "\n".join(failures[-40:])
    row.seconds = time.monotonic() - start
    return row


def run(versions: list[str], flags: dict[str, object], control: bool, on_row: Callable[[Row], None]) -> list[Row]:
    rows = []
    for version in versions:
        with log.step("check-patches", version):
            row = check_version(version, flags, control)
        on_row(row)
        rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    header = f"| version | series | {' | '.join(COLUMNS)} | seconds | Go |"
    rule = "|" + "---|" * (len(COLUMNS) + 4)
    lines = [header, rule]
    for row in rows:
        cells = " | ".join(row.cells.get(c, "-") for c in COLUMNS)
        lines.append(f"| {row.version} | {row.series} | {cells} | {row.seconds:.0f} | {row.go} |")
    return "\n".join(lines)


def all_versions(settings: config.Settings) -> list[str]:
    """Every pinned release (pins hold releases only, never pre-releases), oldest first."""
    from .validate import semver_of

    return sorted(settings.pins.releases, key=semver_of)
