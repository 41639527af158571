"""Command line: parse options, resolve the configuration once, call the stages.

``python build.py`` runs the whole pipeline; the stage subcommands run it up to one stage.
Every handled failure prints one line (problem — fix) and exits with its class's code.
"""

from __future__ import annotations

import errno
import functools
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__, cachearchive, config, doctor, log, safefs, schema, validate
from . import plan as plan_module
from .cache import Cache
from .engine import Engine
from .errors import (
    ConfigError,
    DataplaneError,
    DockerError,
    DoctorFindings,
    FetchError,
    Interrupted,
    PatchCheckFailed,
    PipelineError,
)
from .options import OPTIONS, Option
from .pipeline import Pipeline
from .report import Report


def _flag(opt: Option) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click flag of an option of the schema (options.py)."""
    assert opt.flag_name is not None
    if isinstance(opt.kind, schema.Flag):
        return click.option(opt.flag_name, is_flag=True, default=None, help=opt.help)
    repeat = isinstance(opt.kind, schema.Array | schema.Map)
    return click.option(opt.flag_name, multiple=repeat, metavar=opt.metavar, help=opt.help)


# Flags of a run rather than of the configuration.
_RUN_FLAGS = [
    click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write a JSON build report."),
    click.option("--quiet", "-q", is_flag=True, default=None, help="Only errors and results."),
    click.option(
        "--verbose", "-v", is_flag=True, default=None, help="Also stream the tools' output (the Docker build log)."
    ),
]


def _options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every stage understands (on the group and on each subcommand)."""
    decorators = [_flag(opt) for opt in OPTIONS.values() if opt.flag_name] + _RUN_FLAGS
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _collect(ctx: click.Context, kwargs: dict[str, Any]) -> None:
    """Merge this command's flags over the group's (stored on the context)."""
    store: dict[str, Any] = ctx.ensure_object(dict)
    for name, value in kwargs.items():
        if value is None or value == ():
            continue
        store[name] = value


def _flags(ctx: click.Context) -> dict[str, Any]:
    """The option keys and values (TOML-typed) the user gave as flags."""
    store: dict[str, Any] = ctx.ensure_object(dict)
    flags: dict[str, Any] = {}
    for key, opt in OPTIONS.items():
        if opt.param is None or opt.param not in store:
            continue
        value = opt.kind.from_flag(store[opt.param])
        flags[key] = (not value) if opt.invert else value
    return flags


def _settings(ctx: click.Context) -> tuple[config.Settings, Path | None]:
    store: dict[str, Any] = ctx.ensure_object(dict)
    log.set_level(log.QUIET if store.get("quiet") else log.VERBOSE if store.get("verbose") else log.NORMAL)
    settings = config.load(_flags(ctx))
    log.set_log_dir(settings.cache_dir / "logs")
    return settings, store.get("report")


# Files the tool writes for the user, by the key their flag is stored under: read like
# every other path (``~`` expanded, ``~user`` of no such user and control characters
# refused) and checked before any work starts, so a symlink or device there costs nothing.
_OUTPUTS = {
    "report": ("--report", "the report"),
    "table_path": ("--table", "the check-patches table"),
    "save_context": ("--save-context", "the build context"),
    "results_path": ("--results", "the results"),
    "output": ("--output", "the patched tree"),
}


def _check_outputs(store: dict[str, Any]) -> None:
    for key, (flag, what) in _OUTPUTS.items():
        if store.get(key) is None:
            continue
        path = store[key] = Path(validate.local_path(str(store[key]), flag))
        if key == "results_path":
            from .verify import results_paths

            for each in results_paths(path):
                safefs.check_output(each, what)
        else:
            safefs.check_output(path, what, directory=key == "output")


def _os_error(exc: OSError) -> PipelineError:
    """An OSError as one line: what failed and where, and the fix for that error."""
    where = f" ({exc.filename})" if exc.filename else ""
    problem = f"{exc.strerror or exc}{where}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space there (the cache is --cache-dir), then run again"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        fix = "fix the permissions there, or choose a place this user may write (the cache is --cache-dir)"
    elif exc.errno == errno.EROFS:
        fix = "the file system is read-only: choose a writable place (the cache is --cache-dir)"
    elif exc.errno == errno.ENAMETOOLONG:
        fix = "use a shorter path"
    elif exc.errno == errno.ENOENT:
        fix = "check that the path exists"
    else:
        fix = f"check that place (error {errno.errorcode.get(exc.errno or 0, exc.errno)})"
    return PipelineError(problem, fix)


def _terminate_as_interrupt(_signum: int, _frame: object) -> None:
    # SIGTERM (CI cancelling a job, `kill`) takes the same clean path as Ctrl-C: containers
    # removed, temporary files deleted, the report written once.
    raise KeyboardInterrupt


def _handled(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn pipeline failures into one line and an exit code, and write the report."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
        ctx = click.get_current_context()
        report: Report = ctx.ensure_object(dict).setdefault("_report", Report())
        report_path: Path | None = None
        if isinstance(ctx.command, click.Group) and ctx.invoked_subcommand is not None:
            _collect(ctx, kwargs)  # the subcommand runs (and reports) with these flags
            return None
        code = 0
        result = None
        try:
            _collect(ctx, kwargs)
            _check_outputs(ctx.obj)
            report_path = ctx.obj.get("report")
            result = func(ctx)
            report.finish("succeeded")
        except PipelineError as exc:
            report.finish("failed", exc.one_line())
            log.error(exc.one_line())
            code = exc.exit_code
        except OSError as exc:
            # The work in progress was already cleaned up where it was written (temporary
            # files, scratch directories); say what failed and where.
            error = _os_error(exc)
            report.finish("failed", error.one_line())
            log.error(error.one_line())
            code = error.exit_code
        except KeyboardInterrupt:
            exc2 = Interrupted("interrupted", "nothing half-done was kept; run again to continue")
            report.finish("interrupted", exc2.one_line())
            log.error(exc2.one_line())
            code = exc2.exit_code
        finally:
            code = _finish(report, report_path, code)
        if code:
            sys.exit(code)
        return result

    return wrapper


def _finish(report: Report, report_path: Path | None, code: int) -> int:
    """Name the run's log file, write the report; a report that cannot be written makes
    the run fail (its exit code, or the write's own when the run had succeeded)."""
    written_log = log.log_path()
    if written_log is not None:
        report.set("log", str(written_log))
        (log.notice if code else log.info)(f"full log: {written_log}")
    log.close_log()
    log.set_log_dir(None)
    if report_path is None or report.data.get("status") == "running":
        return code
    try:
        report.write(report_path)
    except PipelineError as exc:
        log.error(f"could not write the report: {exc.one_line()}")
        return code or exc.exit_code
    except OSError as exc:
        error = _os_error(exc)
        log.error(f"could not write the report: {error.one_line()}")
        return code or error.exit_code
    return code


def _pipeline(ctx: click.Context) -> Pipeline:
    settings, _ = _settings(ctx)
    return Pipeline(plan_module.build(settings), ctx.obj["_report"])


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@_options
@click.version_option(__version__, prog_name="kube-router-sctp")
@_handled
def main(ctx: click.Context) -> None:
    """Build kube-router images whose IPVS service proxy forwards SCTP.

    With no subcommand, runs the whole job: fetch -> patch -> render -> build ->
    (push a candidate) -> smoke -> release tags (pushed with --push).
    """
    pipeline = _pipeline(ctx)
    settings = pipeline.plan.settings
    tags = pipeline.release(settings.push is not None, settings.smoke, _smoke_engine(settings))
    for reference, digest in tags.items():
        log.out(f"{reference} {digest}")


@main.command("fetch")
@_options
@click.option(
    "--import",
    "imports",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Put a file into the cache if its sha256 is pinned (air-gapped sites).",
)
@click.option("--versions", "versions", metavar="V1,V2,...", help="Fetch these releases (default: the configured one).")
@click.option(
    "--no-packages",
    is_flag=True,
    default=None,
    help="Do not put the builder's package stages into Docker's layer cache (they need the Debian mirror).",
)
@_handled
def fetch_command(ctx: click.Context) -> None:
    """Fetch and verify everything a build needs from the network into the cache.

    kube-router, ipvsadm, the Go toolchain, every Go module (verified against go.sum) and,
    when a Docker daemon answers, the builder's package stages: afterwards `--offline`
    builds of these releases need no network at all.
    """
    from . import validate

    settings, _ = _settings(ctx)
    store = ctx.obj
    versions = [validate.kube_router_version(v) for v in str(store.get("versions") or "").split(",") if v.strip()]
    flags = {key: value for key, value in _flags(ctx).items() if key != "build.kube-router-version"}
    report: Report = store["_report"]
    failures: list[str] = []
    for version in versions or [settings.kube_router_version]:
        pipeline = (
            _pipeline(ctx)
            if not versions
            else Pipeline(plan_module.build(config.load({**flags, "build.kube-router-version": version})), Report())
        )
        try:
            _fetch_one(pipeline, store, report)
        except PipelineError as exc:
            if not versions:
                raise
            failures.append(f"{version} ({exc.message})")
            log.warn(f"{version} not fetched: {exc.one_line()}")  # and on with the next release
    if failures:
        raise FetchError(
            f"{len(failures)} of {len(versions)} release(s) could not be fetched: {'; '.join(failures)}",
            "the others are in the cache; see the warnings above for the fixes",
        )


def _fetch_one(pipeline: Pipeline, store: dict[str, Any], report: Report) -> None:
    for path in store.get("imports", ()):
        known = pipeline.plan.settings.pins.pinned_files()
        stored = pipeline.downloader.import_file(path, known)
        if stored is None:
            raise ConfigError(f"{path} matches no pinned file", "only files with a pinned sha256 can be imported")
        log.info(f"imported {path} as {stored[1]} ({stored[0][:12]})")
    fetched = pipeline.fetch()
    modules = pipeline.go_modules()
    version = fetched.kube_router.version
    log.out(f"kube-router {version} {fetched.kube_router.path}")
    log.out(f"ipvsadm {pipeline.plan.ipvsadm_version} {fetched.ipvsadm.path}")
    if fetched.go_toolchain:
        log.out(f"go {pipeline.plan.line.go.value} {fetched.go_toolchain.path}")
    if modules is not None:
        size = sum(f.size for f in modules.files) / 1048576
        log.out(f"go-modules {version} {len(modules.files)} files {size:.1f} MiB")
    if not store.get("no_packages"):
        try:
            stages = pipeline.prepare_packages()
        except DockerError as exc:
            log.warn(f"package stages not prepared ({exc.one_line()}): an --offline build will need them")
        else:
            log.out(f"packages {version} {','.join(stages)} in Docker's layer cache")
    if pipeline.report is not report:  # one of several releases: its stages under its name
        record = {**pipeline.report.data["stages"], "bytes_downloaded": pipeline.downloader.bytes_downloaded}
        report.add(f"fetch_{version}", record)


@main.group("cache")
@_options
@_handled
def cache_group(ctx: click.Context) -> None:
    """Carry a filled cache to an air-gapped site: `cache export FILE` here, `cache import FILE` there."""


def _cache_archive(
    ctx: click.Context, step: str, act: Callable[[Cache, Path], cachearchive.Summary]
) -> tuple[Path, cachearchive.Summary]:
    """Run ``act`` (export or import) on the configured cache and the FILE argument."""
    settings, _ = _settings(ctx)
    path = Path(ctx.obj["file"])
    with log.step(step, str(path)):
        summary = act(Cache(settings.cache_dir), path)
    return path, summary


@cache_group.command("export")
@_options
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_handled
def cache_export_command(ctx: click.Context) -> None:
    """Write every verified entry of the cache (downloads, Go modules, source trees) to FILE."""
    dest, summary = _cache_archive(ctx, "cache export", cachearchive.export)
    log.out(
        f"{dest}: {summary.blobs} files, {summary.modules} Go module entries, {summary.trees} source trees, "
        f"{summary.bytes / 1048576:.1f} MiB"
    )


@cache_group.command("import")
@_options
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_handled
def cache_import_command(ctx: click.Context) -> None:
    """Verify every entry of FILE (written by `cache export`) and add them to the cache."""
    source, summary = _cache_archive(ctx, "cache import", cachearchive.import_archive)
    log.out(
        f"{source}: imported {summary.blobs} files, {summary.modules} Go module entries, {summary.trees} source trees"
    )


@main.command("patch")
@_options
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), help="Also write the patched tree here.")
@_handled
def patch_command(ctx: click.Context) -> None:
    """Apply the release's SCTP patch series (strictly) to the fetched tree."""
    pipeline = _pipeline(ctx)
    patched = pipeline.patch()
    output = ctx.obj.get("output")
    if output is not None:
        patched.materialize(output)
        log.out(f"patched tree written to {output}")
    for item in patched.applied:
        log.out(f"{item.name} {item.sha256[:12]} {item.description}")


@main.command("render")
@_options
@_handled
def render_command(ctx: click.Context) -> None:
    """Print the Dockerfile rendered from images/Dockerfile.j2 (configured base images)."""
    pipeline = _pipeline(ctx)
    resolve = pipeline.plan.settings.bootstrap_bases == "always"
    log.out(pipeline.render(resolve_bases=resolve).dockerfile, nl=False)


@main.command("build")
@_options
@click.option(
    "--save-context",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the exact build context (a tar with the Dockerfile) here.",
)
@_handled
def build_command(ctx: click.Context) -> None:
    """Build the image (tagged as a candidate; release tags need the smoke test)."""
    built = _pipeline(ctx).build(ctx.obj.get("save_context"))
    log.out(f"{built.reference} {built.image_id}")


@main.command("push")
@_options
@_handled
def push_command(ctx: click.Context) -> None:
    """Build, push a candidate, smoke-test it, then push the release tags."""
    pipeline = _pipeline(ctx)
    settings = pipeline.plan.settings
    if settings.push is None:
        raise ConfigError("push needs a registry", "pass --push REGISTRY[/NAMESPACE]")
    for reference, digest in pipeline.release(True, settings.smoke, _smoke_engine(settings)).items():
        log.out(f"{reference} {digest}")


@main.command("pin")
@_options
@click.argument("version")
@_handled
def pin_command(ctx: click.Context) -> None:
    """Print the pin (commit, date, tree digest) of a release from a git repository."""
    from . import validate
    from .download import Downloader
    from .pin import pin

    settings, _ = _settings(ctx)
    version = validate.kube_router_version(ctx.obj["version"])
    if not settings.kube_router_source:
        raise ConfigError("pin needs a git repository", "pass --kube-router-source PATH-OR-URL")
    cache = Cache(settings.cache_dir)
    pinned = pin(
        settings.kube_router_source,
        version,
        cache,
        Downloader(cache, offline=settings.offline),
        list(settings.pins.kube_router.vendor_restore),
        settings.mirrors.go_proxy,
        settings.offline,
    )
    log.out("[kube-router.releases]")
    log.out(pinned.toml())


@main.command("config")
@_options
@_handled
def config_command(ctx: click.Context) -> None:
    """Show the resolved configuration and where each value came from."""
    settings, _ = _settings(ctx)
    log.out(f"# user config: {config.user_config_path()}")
    for key, value, origin in config.rows(settings):
        log.out(f"{key} = {value}    # {schema.by_origin(origin).removeprefix('the ')}")


def _smoke_engine(settings: config.Settings) -> Engine | None:
    return Engine(settings.smoke_host) if settings.smoke and settings.smoke_host else None


@main.command("smoke")
@_options
@click.argument("image")
@_handled
def smoke_command(ctx: click.Context) -> None:
    """Check that IMAGE creates SCTP, TCP and UDP IPVS services on an IPVS kernel.

    Runs in a privileged container on --smoke-host (default: the building daemon), or
    boots each --kernel under QEMU with the image's root file system (one row per kernel).
    """
    from . import smokestage

    settings, _ = _settings(ctx)
    record = smokestage.check_image(settings, ctx.obj["image"], ctx.obj["_report"])
    ctx.obj["_report"].add("smoke", record)
    log.out(smokestage.summary(ctx.obj["image"], record))


@main.command("doctor")
@_options
@click.option("--image", metavar="IMAGE", help="Image to probe the daemon's kernel with (default: newest built).")
@_handled
def doctor_command(ctx: click.Context) -> None:
    """Check the Docker daemon, registry, kernel, QEMU and disk; say what to fix."""
    settings, _ = _settings(ctx)
    findings = doctor.run(settings, ctx.obj.get("image"))
    width = max(len(f.check) for f in findings)
    for finding in findings:
        log.out(f"[{finding.status:>4}] {finding.check:<{width}}  {finding.seen}")
        if finding.todo and finding.status != doctor.OK:
            log.out(f"{'':>7}{'':<{width}}  -> {finding.todo}")
    failed = [f for f in findings if f.status == doctor.FAIL]
    if failed:
        raise DoctorFindings(
            f"{len(failed)} check(s) failed: {', '.join(f.check for f in failed)}", "fix the items marked FAIL above"
        )


@main.command("check-patches")
@_options
@click.option("--versions", "versions", metavar="V1,V2,...", help="Releases to check (default: the configured one).")
@click.option("--all", "all_versions", is_flag=True, default=None, help="Every pinned release (about 48).")
@click.option("--control/--no-control", default=None, help="Also run the series' new tests on the unpatched tree.")
@click.option(
    "--table", "table_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the table (markdown)."
)
@_handled
def check_patches_command(ctx: click.Context) -> None:
    """Apply, vet, build and test each release's series in the Go of its line."""
    from . import checkpatches, validate

    settings, _ = _settings(ctx)
    store = ctx.obj
    if store.get("all_versions"):
        versions = checkpatches.all_versions(settings)
    elif store.get("versions"):
        versions = [validate.kube_router_version(v) for v in str(store["versions"]).split(",") if v.strip()]
    else:
        versions = [settings.kube_router_version]
    flags = {key: value for key, value in _flags(ctx).items() if key != "build.kube-router-version"}

    def show(row: checkpatches.Row) -> None:
        cells = " ".join(f"{c}={row.cells.get(c, '-')}" for c in checkpatches.COLUMNS)
        log.info(f"{row.version} [{row.series}] {cells} ({row.seconds:.0f}s)")
        for flake in row.flaky:
            log.warn(f"{row.version}: flaky upstream test in {flake}")
        if not row.passed and row.detail:
            log.detail(row.detail)

    start = time.monotonic()
    rows = checkpatches.run(versions, flags, bool(store.get("control")), show)
    text = checkpatches.table(rows)
    log.out(text)
    log.out(f"\n{len(rows)} release(s) in {time.monotonic() - start:.0f}s")
    if store.get("table_path"):
        safefs.write_output(Path(store["table_path"]), (log.clean(text) + "\n").encode(), "the check-patches table")
    ctx.obj["_report"].add("check_patches", {"rows": [vars(r) for r in rows]})
    failed = [r for r in rows if not r.passed]
    if failed:
        blocked = [r for r in failed if r.blocked]
        if len(blocked) == len(failed):
            raise PatchCheckFailed(
                "check-patches could not build " + "; ".join(f"{r.version}: {r.blocked}" for r in blocked),
                "point --go-proxy (or GOPROXY) at a module proxy that serves it",
            )
        raise PatchCheckFailed(
            "check-patches failed for "
            + ", ".join(f"{r.version}" + (f" ({r.blocked})" if r.blocked else "") for r in failed),
            "see the failing cells and output above",
        )


@main.command("verify")
@_options
@click.argument("image")
@click.option("--control", "control_image", metavar="IMAGE", help="The same release without the SCTP patches.")
@click.option(
    "--results",
    "results_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the results to PATH.md (tables, firewall evidence) and PATH.json (everything).",
)
@click.option(
    "--manifests",
    "manifests_path",
    type=click.Path(path_type=Path),
    help="Kubernetes YAML (a directory or a file) whose Services to prove (default: the 2019 report's).",
)
@click.option(
    "--scenarios",
    "scenarios",
    multiple=True,
    metavar="NAMES",
    help="After the proof, these SCTP scenarios on two nodes (comma-separated, repeatable; 'all': every one"
    " the release can run): two-nodes, local-traffic, affinity, loadbalancer, failover, multihoming, ipv6, dsr.",
)
@_handled
def verify_command(ctx: click.Context) -> None:
    """Prove IMAGE forwards SCTP (and TCP, UDP) for ClusterIP, NodePort and ExternalIP.

    Boots a fresh node per image and kernel (Debian's under QEMU; --kernel, repeatable,
    names others) and a real control plane
    (etcd, kube-apiserver, kube-controller-manager; RBAC on), applies the manifests with
    kubectl, runs kube-router on the node with its service account, and sends real
    messages through each Service port and address. With --control, the unpatched image
    must fail exactly the SCTP paths.
    """
    from . import verify

    settings, _ = _settings(ctx)
    store = ctx.obj
    version = store.get("kube_router_version")  # only when given: else from the image's labels
    runs = verify.verify(
        settings,
        store["image"],
        store.get("control_image"),
        version,
        store.get("manifests_path"),
        list(store.get("scenarios") or ()),
    )
    log.out(verify.markdown(runs))
    ctx.obj["_report"].add("verify", {"runs": [run.record() for run in runs]})
    if store.get("results_path"):
        md, js = verify.write_results(Path(store["results_path"]), runs)
        log.info(f"results written to {md} and {js}")
    problems = verify.failures(runs)
    if problems:
        summary = "; ".join(problems)
        raise DataplaneError(f"{len(problems)} result(s) not as expected: {summary}", "see the tables above")
