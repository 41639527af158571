"""Property-based hostile input: generated command lines, environments, config files, git
trees and tarballs — valid, malformed and hostile — run through the cheap stages (config,
render, pin, fetch, patch, doctor). For every case:

- the exit status is one the project documents (errors.py, or 0);
- no Python traceback, and a failure is one ``kube-router-sctp: error:`` line;
- nothing is created or changed outside the cache and the output paths the command names
  (a sentinel tree beside the sandbox is the target of every path and link payload);
- the planted secret (in URL user-info and query strings) appears in no output, report or
  rendered file, raw or base64-encoded.

Runs in-process through click's test runner (milliseconds per case), with a fresh sandbox
per case: HOME, the XDG directories, the working directory and the cache all inside it.
Profiles: ``ci`` (the default: a fixed seed and a bounded number of cases, so CI is
deterministic and fast) and ``deep`` (``KRS_HYPOTHESIS_PROFILE=deep``: many more, random).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kube_router_sctp import errors
from kube_router_sctp.cli import main

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "deep",
    max_examples=600,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("KRS_HYPOTHESIS_PROFILE", "ci"))

SECRET = "Hunter2krsPlanted"
USERINFO = f"krs:{SECRET}"
SECRET_FORMS = (SECRET, base64.b64encode(USERINFO.encode()).decode().rstrip("="))
# Flags every stage takes whose value is a URL (the planted secret rides on these).
URL_FLAGS = ("--kube-router-source", "--ipvsadm-mirror", "--debian-mirror", "--go-proxy", "--smoke-host")
STAGES = ("config", "render", "fetch", "patch", "pin", "doctor")


def documented_exit_codes() -> set[int]:
    codes = {0, 2}  # success; click's own usage errors (an unknown flag, a bad choice)
    stack: list[type[errors.PipelineError]] = [errors.PipelineError]
    while stack:
        kind = stack.pop()
        codes.add(kind.exit_code)
        stack.extend(kind.__subclasses__())
    return codes


# -- the sandbox ---------------------------------------------------------------------------
@dataclass
class Sandbox:
    root: Path
    sentinel: Path  # what every hostile path and link aims at
    home: Path
    cwd: Path
    cache: Path
    out: Path
    outputs: list[Path] = field(default_factory=list)  # files/dirs the command was told to write

    @classmethod
    @contextlib.contextmanager
    def make(cls) -> Iterator[Sandbox]:
        root = Path(tempfile.mkdtemp(prefix="krs-prop-"))
        try:
            box = cls(root, root / "sentinel", root / "home", root / "work", root / "cache", root / "out")
            for directory in (box.sentinel / "etc", box.home / ".config", box.cwd, box.out):
                directory.mkdir(parents=True)
            (box.sentinel / "victim.txt").write_text("untouched\n")
            (box.sentinel / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
            yield box
        finally:
            subprocess.run(["chmod", "-R", "u+rwX", str(root)], check=False, capture_output=True)
            shutil.rmtree(root, ignore_errors=True)

    def snapshot(self) -> dict[str, str]:
        """Every entry outside the cache and the named outputs: type, mode and content."""
        allowed = [self.cache, *self.outputs]
        seen: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            base = Path(dirpath)
            for name in sorted(dirnames + filenames):
                path = base / name
                if any(path == a or a in path.parents for a in allowed):
                    continue
                info = path.lstat()
                if path.is_symlink():
                    seen[str(path)] = f"link {path.readlink()}"
                elif path.is_file():
                    seen[str(path)] = f"file {info.st_mode:o} {hashlib.sha256(path.read_bytes()).hexdigest()}"
                elif path.is_dir():
                    seen[str(path)] = f"dir {info.st_mode:o}"
                else:
                    seen[str(path)] = f"other {info.st_mode:o}"
        return seen

    def env(self, extra: dict[str, str]) -> dict[str, str | None]:
        cleared: dict[str, str | None] = {k: None for k in os.environ if k.startswith("KUBE_ROUTER_SCTP_")}
        cleared.update(
            {
                "HOME": str(self.home),
                "XDG_CONFIG_HOME": str(self.home / ".config"),
                "XDG_CACHE_HOME": str(self.home / ".cache"),
                "KUBE_ROUTER_SCTP_CONFIG": str(self.home / "config.toml"),
                "GOPROXY": "off",  # nothing here may reach the real Go proxy
                "DOCKER_HOST": f"unix://{self.root}/no-docker.sock",  # doctor and friends: no daemon
                "SOURCE_DATE_EPOCH": None,
            }
        )
        cleared.update(extra)
        return cleared


@dataclass
class Run:
    result: Result
    args: list[str]
    texts: list[str]  # everything the run produced that a user or a file sees


def invoke(box: Sandbox, args: list[str], env: dict[str, str]) -> Run:
    runner = CliRunner()
    previous = Path.cwd()
    os.chdir(box.cwd)
    try:
        result = runner.invoke(main, args, env=box.env(env), catch_exceptions=True)
    finally:
        os.chdir(previous)
    texts = [result.stdout, result.stderr]
    for output in box.outputs:
        if output.is_file() and not output.is_symlink():
            texts.append(output.read_text(errors="replace"))
    return Run(result, args, texts)


def check(box: Sandbox, run: Run, before: dict[str, str]) -> None:
    result = run.result
    where = f"args={run.args!r}\nstderr={result.stderr[-3000:]}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"unhandled {type(result.exception).__name__}: {result.exception}\n{where}")
    assert "Traceback (most recent call last)" not in result.stderr, where
    assert result.exit_code in documented_exit_codes(), f"exit {result.exit_code} is not documented\n{where}"
    if result.exit_code != 0:
        ours = [line for line in result.stderr.splitlines() if line.startswith("kube-router-sctp: error:")]
        usage = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(ours) + len(usage) == 1, f"a failure must be one error line\n{where}"
    after = box.snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"written outside the cache and the outputs: {changed}\n{where}"
    for text in run.texts:
        for form in SECRET_FORMS:
            assert form not in text, f"the planted secret was shown ({form})\n{where}"


# -- values --------------------------------------------------------------------------------
def payloads(box_token: str) -> st.SearchStrategy[str]:
    """Strings that must never reach a shell, a path or a Dockerfile unchecked.
    ``box_token`` stands for the sentinel directory and is replaced per sandbox."""
    hostile = st.sampled_from(
        [
            "$(touch @S@/pwned)",
            "`touch @S@/pwned`",
            "v0.3.2; touch @S@/pwned",
            "v0.3.2\nRUN touch /pwned",
            "bookworm main\nRUN id",
            'x" && touch @S@/pwned && "',
            "x' ; touch @S@/pwned ; '",
            "../../../../@S@/pwned",
            "@S@/pwned",
            "@S@/etc/passwd",
            "-oProxyCommand=touch @S@/pwned",
            "--upload-pack=touch @S@/pwned",
            "\x1b]0;owned\x07\x1b[31mred",
            "~nosuchuser/x",
            "a" * 5000,
            "v00.3.2",
            "v0.03.2",
            "v0.3.2-rc.1",
            "1e308",
            "-1",
            "",
            " ",
            "%00",
            "\x00",
        ]
    )
    credentials = st.sampled_from(
        [
            f"https://{USERINFO}@127.0.0.1:9/kube-router.git",
            f"http://{USERINFO}@127.0.0.1:9/debian",
            f"https://127.0.0.1:9/goproxy?token={SECRET}",
            f"https://{USERINFO}@127.0.0.1:9/",
            f"file://{USERINFO}@/etc/passwd",
            f"git://{USERINFO}@127.0.0.1:9/kr",
            f"ssh://{USERINFO}@127.0.0.1:9/kr",
        ]
    )
    fuzz = st.text(min_size=0, max_size=40)
    return st.one_of(hostile, credentials, fuzz).map(lambda s: s.replace("@S@", box_token))


VALID = {
    "--kube-router-version": st.sampled_from(["v0.3.2", "v2.7.1", "v1.2.3", "v9.9.9"]),
    "--ipvsadm-version": st.sampled_from(["1.29", "1.30", "1.31", "1.99"]),
    "--base-family": st.sampled_from(["debian", "alpine"]),
    "--runtime-base": st.sampled_from(["debian:bookworm-slim", "127.0.0.1:5000/base:1"]),
    "--push": st.sampled_from(["127.0.0.1:5000", "registry:5000/team"]),
    "--label": st.sampled_from(["org.example.team=net", "a=b"]),
    "--platform": st.sampled_from(["linux/amd64", "linux/arm64"]),
    "--image-name": st.sampled_from(["kube-router", "team/kube-router"]),
}
STRING_FLAGS = (
    *VALID,
    *URL_FLAGS,
    "--ca-bundle",
    "--kernel",
    "--modules",
    "--fallback-kernel",
    "--smoke-registry",
    "--docker-host",
    "--bootstrap-bases",
)


@st.composite
def command_lines(draw: st.DrawFn, token: str) -> tuple[list[str], dict[str, str], str | None]:
    """A stage, its flags (valid, malformed and hostile values), environment variables
    and an optional user config file."""
    stage = draw(st.sampled_from(STAGES))
    args = [stage]
    for flag in draw(st.lists(st.sampled_from(STRING_FLAGS), max_size=4, unique=True)):
        valid = VALID.get(flag)
        value = draw(valid if valid is not None and draw(st.booleans()) else payloads(token))
        args += [flag, value]
    if draw(st.booleans()):
        args.append("--offline")
    if stage == "pin":
        args.append(draw(st.one_of(st.just("v0.3.2"), payloads(token))))
    env: dict[str, str] = {}
    for name in draw(
        st.lists(
            st.sampled_from(
                [
                    "KUBE_ROUTER_SCTP_KUBE_ROUTER_VERSION",
                    "KUBE_ROUTER_SCTP_OFFLINE",
                    "KUBE_ROUTER_SCTP_GO_PROXY",
                    "KUBE_ROUTER_SCTP_DEBIAN_MIRROR",
                    "KUBE_ROUTER_SCTP_IPVSADM_MIRRORS",
                    "KUBE_ROUTER_SCTP_KUBE_ROUTER_SOURCE",
                    "KUBE_ROUTER_SCTP_PLATFORMS",
                    "KUBE_ROUTER_SCTP_CACHE_DIR",
                    "GOPROXY",
                    "SOURCE_DATE_EPOCH",
                ]
            ),
            max_size=3,
            unique=True,
        )
    ):
        value = draw(payloads(token))
        if "\x00" not in value:
            env[name] = value
    config = draw(st.none() | config_files(token))
    return args, env, config


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string (non-BMP characters become invalid TOML: also a case)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)  # dates and the like, written bare


@st.composite
def config_files(draw: st.DrawFn, token: str) -> str:
    """A user config: options and data sections with right, wrong and hostile values."""
    anything = st.one_of(
        payloads(token),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from(["false", "true", "1979-05-27", "1979-05-27T07:32:00Z"]).map(lambda s: s),
        st.lists(payloads(token), max_size=2),
        st.dictionaries(st.sampled_from(["a", "name", "sha256"]), payloads(token), max_size=2),
    )
    bare = st.sampled_from(["1979-05-27", "1979-05-27T07:32:00Z", "07:32:00", "inf", "nan"])
    tables = {
        "build": [
            "kube-router-version",
            "kube-router-source",
            "ipvsadm-version",
            "base-family",
            "offline",
            "negative-control",
            "platforms",
            "push",
            "no-cache",
            "runtime-base",
        ],
        "mirrors": ["ipvsadm", "debian", "go-proxy", "ca-bundle"],
        "smoke": ["enabled", "kernel", "fallback-kernel", "host"],
        "paths": ["cache-dir"],
        "labels": ["org.example.x", "bad key"],
        "families.debian": ["suite", "runtime", "builder", "ipvsadm-builder", "tag-suffix"],
        'ipvsadm.releases."1.31"': ["files"],
        'go.toolchains."1.25.1"': ["linux-amd64"],
        "kube-router.releases": ['"v0.3.2"', '"v9.9.9"'],
    }
    lines: list[str] = []
    for table in draw(st.lists(st.sampled_from(sorted(tables)), max_size=4, unique=True)):
        lines.append(f"[{table}]")
        for key in draw(st.lists(st.sampled_from(tables[table]), min_size=1, max_size=3, unique=True)):
            if draw(st.integers(0, 9)) == 0:
                lines.append(f"{key} = {draw(bare)}")
            else:
                lines.append(f"{key} = {toml_value(draw(anything))}")
    if draw(st.integers(0, 5)) == 0:
        line = toml_value(
            {
                "name": draw(payloads(token)),
                "versions": draw(st.sampled_from([">=0.3.0, <0.4.0", "nonsense", ">=9.0.0"])),
                "layout": draw(st.sampled_from(["gopath", "modules", "evil"])),
                "version-package": draw(payloads(token)),
                "version-vars": [draw(payloads(token)), "buildDate"],
                "gobgp": {"dir": draw(payloads(token))},
                "go": {"debian": draw(st.sampled_from(["apt:golang-1.19-go", "image:evil\nRUN id", "apt:$(id)"]))},
            }
        )
        lines.append(f"[[kube-router.lines]]\n{line[2:-2].replace(', ', chr(10))}")
    return "\n".join(lines) + "\n"


# -- the properties (no daemon, registry or network needed: every address is a closed
# loopback port or a socket inside the sandbox) --------------------------------------------
@given(data=st.data())
def test_generated_command_lines_are_refused_or_run_cleanly(data: st.DataObject) -> None:
    with Sandbox.make() as box:
        args, env, config = data.draw(command_lines(str(box.sentinel)))
        if config is not None:
            (box.home / "config.toml").write_text(config)
        report = box.out / "report.json"
        box.outputs.append(report)
        args = [*args, "--cache-dir", str(box.cache), "--report", str(report)]
        if args[0] == "patch" and data.draw(st.booleans()):
            output = box.out / "tree"
            box.outputs.append(output)
            args += ["--output", str(output)]
        args = [*args, *([] if "--offline" in args else ["--offline"])]  # never the real network
        before = box.snapshot()
        check(box, invoke(box, args, env), before)


@given(data=st.data())
def test_non_utf8_config_files_are_one_line(data: st.DataObject) -> None:
    raw = data.draw(st.binary(min_size=1, max_size=200))
    with Sandbox.make() as box:
        (box.home / "config.toml").write_bytes(b'[build]\nkube-router-version = "' + raw + b'"\n')
        before = box.snapshot()
        check(box, invoke(box, ["config", "--cache-dir", str(box.cache)], {}), before)


# -- hostile git trees ---------------------------------------------------------------------
def _git(repo: Path, *args: str, data: bytes | None = None) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="x",
        GIT_AUTHOR_EMAIL="x@example.invalid",
        GIT_COMMITTER_NAME="x",
        GIT_COMMITTER_EMAIL="x@example.invalid",
        GIT_AUTHOR_DATE="1563950150 +0000",
        GIT_COMMITTER_DATE="1563950150 +0000",
    )
    out = subprocess.run(["git", f"--git-dir={repo}", *args], input=data, capture_output=True, check=True, env=env)
    return out.stdout.decode().strip()


Entry = tuple[str, str, bytes]  # (mode, path, content: a file's bytes or a link's target)


def git_repository(path: Path, entries: list[Entry], message: str) -> Path:
    """A bare repository whose tag v0.3.2 names a commit of exactly these entries, in this
    order, duplicates and all (git mktree writes what it is given)."""
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    tree = _tree(path, [(mode, name.split("/"), content) for mode, name, content in entries])
    commit = _git(path, "commit-tree", tree, "-m", message)
    _git(path, "update-ref", "refs/tags/v0.3.2", commit)
    return path


def _tree(repo: Path, entries: list[tuple[str, list[str], bytes]]) -> str:
    lines: list[str] = []
    subtrees: dict[str, list[tuple[str, list[str], bytes]]] = {}
    for mode, parts, content in entries:
        if len(parts) == 1:
            blob = _git(repo, "hash-object", "-w", "--stdin", data=content)
            lines.append(f"{mode} blob {blob}\t{parts[0]}")
        else:
            subtrees.setdefault(parts[0], []).append((mode, parts[1:], content))
    for name, children in subtrees.items():
        lines.append(f"040000 tree {_tree(repo, children)}\t{name}")
    return _git(repo, "mktree", data=("\n".join(lines) + "\n").encode())


@st.composite
def link_chain_trees(draw: st.DrawFn, sentinel: Path, depth: int) -> list[Entry]:
    """Symlinks to '.', chains whose target normalises inside the tree but resolves
    outside it (``a -> .`` makes ``a/a/a/../../..`` climb three real levels), absolute
    links, and files written through them: the outside review's attack and its relatives.
    ``depth`` is how far the export directory sits below the sandbox root; a chain of 16
    reaches ``/`` from anywhere, and the file's path then names the sentinel absolutely."""
    names = ["b", "c", "vendor", "pkg"]
    climb = {k: "/".join(["a"] * k + [".."] * k) for k in (depth, 16)}
    targets = st.sampled_from(
        [".", "a", climb[depth], climb[16], climb[depth] + "/sentinel", str(sentinel), "/", "../" * depth + "sentinel"]
    )
    inner = st.sampled_from(
        [
            "sentinel/pwned",  # after climbing to the sandbox root
            "sentinel/victim.txt",
            str(sentinel).lstrip("/") + "/pwned",  # after climbing to /
            "pwned",  # through a link that names the sentinel itself
            "victim.txt",
        ]
    )
    entries: list[Entry] = [("120000", "a", b".")]
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(names))
        entries.append(("120000", name, draw(targets).encode()))
        if draw(st.booleans()):
            entries.append((draw(st.sampled_from(["100644", "100755"])), f"{name}/{draw(inner)}", b"owned\n"))
    entries.append(("100644", "README.md", b"kube-router\n"))
    return entries


@given(data=st.data())
def test_git_trees_with_link_chains_write_nothing_outside(data: st.DataObject) -> None:
    with Sandbox.make() as box:
        # The sandbox's directories sit 3 levels below its root: ../../.. reaches the sentinel's parent.
        entries = data.draw(link_chain_trees(box.sentinel, depth=3))
        message = data.draw(st.sampled_from(["release", "\x1b]0;owned\x07\x1b[2Jclear", "x\r\x1b[1Aup"]))
        repo = git_repository(box.root / "src" / "kube-router.git", entries, message)
        before = box.snapshot()
        pin = invoke(box, ["pin", "--kube-router-source", str(repo), "v0.3.2", "--cache-dir", str(box.cache)], {})
        check(box, pin, before)
        if pin.result.exit_code != 0:
            return
        # A user who trusted the pin: fetch and patch the pinned (hostile) tree.
        (box.home / "config.toml").write_text(pin.result.stdout)
        for stage in ("fetch", "patch"):
            before = box.snapshot()
            args = [
                stage,
                "--kube-router-source",
                str(repo),
                "--cache-dir",
                str(box.cache),
                "--ipvsadm-version",
                "1.31",
            ]
            check(box, invoke(box, [*args, "--offline"], {}), before)


# -- hostile tarballs ------------------------------------------------------------------------
@st.composite
def tarballs(draw: st.DrawFn, sentinel: Path) -> bytes:
    """Release-archive-shaped tarballs with hostile members, truncations and odd names."""
    top = "kube-router-0.3.2"
    members: list[tuple[tarfile.TarInfo, bytes]] = []  # names may repeat: that is a case too

    def add(name: str, kind: bytes, link: str = "", data: bytes = b"") -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        members.append((info, data))

    add(f"{top}/", tarfile.DIRTYPE)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["file", "sym", "hard", "dir", "dev", "fifo", "through"]))
        name = draw(st.sampled_from(["a", "b", "a/b", "x" * 300, "dir/../../escape", "c\udcff"]))
        full = f"{top}/{name}"
        if kind == "file":
            add(full, tarfile.REGTYPE, data=b"owned\n")
        elif kind == "sym":
            add(full, tarfile.SYMTYPE, draw(st.sampled_from([".", "a/a/../..", "../..", str(sentinel), "/", "a"])))
        elif kind == "hard":
            add(full, tarfile.LNKTYPE, draw(st.sampled_from([f"{top}/a", str(sentinel / "victim.txt"), f"{top}/b"])))
        elif kind == "dir":
            add(full + "/", tarfile.DIRTYPE)
        elif kind == "dev":
            add(full, tarfile.CHRTYPE)
        elif kind == "fifo":
            add(full, tarfile.FIFOTYPE)
        else:
            add(f"{top}/a/victim.txt", tarfile.REGTYPE, data=b"owned\n")
    buffer = io.BytesIO()
    fmt = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]))
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    raw = buffer.getvalue()
    cut = draw(st.sampled_from([None, None, 512, 1024, len(raw) // 2]))
    return raw[:cut] if cut else raw


@given(data=st.data())
def test_hostile_tarballs_write_nothing_outside(data: st.DataObject) -> None:
    with Sandbox.make() as box:
        tarball = box.root / "src" / "kube-router.tar"
        tarball.parent.mkdir()
        tarball.write_bytes(data.draw(tarballs(box.sentinel)))
        for stage in ("fetch", "patch"):
            before = box.snapshot()
            args = [stage, "--kube-router-source", str(tarball), "--cache-dir", str(box.cache), "--offline"]
            check(box, invoke(box, [*args, "--ipvsadm-version", "1.31"], {}), before)


# -- output paths ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["symlink", "dangling-symlink", "fifo", "directory", "in-missing-dir"])
def test_report_path_is_never_followed_or_misused(kind: str) -> None:
    with Sandbox.make() as box:
        target = box.out / "r.json"
        if kind == "symlink":
            target.symlink_to(box.sentinel / "victim.txt")
        elif kind == "dangling-symlink":
            target.symlink_to(box.sentinel / "created-through-link.json")
        elif kind == "fifo":
            os.mkfifo(target)
        elif kind == "directory":
            target.mkdir()
        else:
            target = box.out / "missing" / "deeper" / "r.json"
            box.outputs.append(box.out / "missing")  # the named path's own parents may be made
        before = box.snapshot()
        run = invoke(box, ["config", "--cache-dir", str(box.cache), "--report", str(target)], {})
        check(box, run, before)
        if kind in ("symlink", "dangling-symlink", "fifo", "directory"):
            assert run.result.exit_code != 0, f"a report over a {kind} must fail, loudly"
