"""What the node VM prints and the host reads back is input from the image under test,
which runs privileged in that VM: the SCTP client's lines, the guest's clock, ipvsadm,
iptables and the probe's status line. None of it crashes the host or passes for what it
is not, and nothing the guest printed ends a code fence, breaks a table row, opens a
link or reaches a terminal as an escape sequence in the results Markdown."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from kube_router_sctp.dataplane import situations as s
from kube_router_sctp.dataplane.node import Node, Shell
from kube_router_sctp.dataplane.scenario import Scenario, parse_ipvs
from kube_router_sctp.errors import DataplaneError
from kube_router_sctp.verify import Run, write_results
from tests.unit.test_scenario_results import V271, _result

GOOD = '{"t": 100.2, "seq": 1, "rtt_ms": 1.5, "reply": "x-1 pod=172.20.1.20 port=5000 from=10.101.50.118 peers=a"}'
HOSTILE_LINES = {
    "a status of 5000 digits": "KRS-TALK status=" + "9" * 5000,
    "JSON nested 100 000 deep": '{"a": ' + "[" * 100_000,
    "a record without its time": '{"seq": 2, "reply": "x-2 pod=172.20.1.20"}',
    "a time that is text": '{"t": "soon", "seq": 2, "reply": "x-2 pod=172.20.1.20"}',
    "a time that is null": '{"t": null, "event": "ended", "error": "x"}',
    "a time that is true": '{"t": true, "event": "ended", "error": "x"}',
    "a time that is NaN": '{"t": NaN, "event": "ended", "error": "x"}',
    "a time that is infinite": '{"t": Infinity, "seq": 2, "reply": "x-2 pod=172.20.1.20"}',
    "a time too large for a float": '{"t": 1' + "0" * 400 + ', "event": "ended"}',
    "a lone surrogate": '{"t": 101.0, "event": "ended", "error": "\\ud800"}',
    "a line of 10 MB": '{"t": 101.0, "event": "ended", "error": "' + "A" * 10_000_000 + '"}',
}


@pytest.mark.parametrize("line", HOSTILE_LINES.values(), ids=HOSTILE_LINES.keys())
def test_a_line_the_client_never_prints_is_skipped_and_crashes_nothing(line: str) -> None:
    talk = s.Talk.parse("\n".join([GOOD, line, "KRS-TALK status=0"]))
    assert talk.status == 0 and len(talk.records) == 1 and talk.pod == "172.20.1.20"
    assert talk.ended is None
    assert talk.gap_after(100.0) == pytest.approx(0.2)
    assert talk.first_reply_after(100.0) == pytest.approx(0.2)
    assert talk.summary().encode() == b"1 replies, still up"


def test_a_reply_inside_other_output_is_no_reply() -> None:
    """Only a whole line is a record: a reply quoted in the client's stderr or the
    shell's output is not taken for one."""
    forged = 'python3: warning: {"t": 100.2, "seq": 1, "reply": "x-1 pod=172.20.1.20"}'
    talk = s.Talk.parse(f"{forged}\n  {GOOD}x\nKRS-TALK status=2 ")
    assert talk.pod == "" and not talk.replies and talk.status == -1


@pytest.mark.parametrize(
    "said", ["", "nan", "inf", "-inf", "1e400", "9" * 5000, "1_700_000_000", "-5", "1700000000.N", "1700000000.5\n1"]
)
def test_a_clock_that_says_no_time_stops_the_scenario_in_one_line(said: str) -> None:
    node = SimpleNamespace(sh=lambda script: Shell(0, said))
    with pytest.raises(DataplaneError) as caught:
        s.Situations.guest_now(SimpleNamespace(node=node))
    assert "clock said" in caught.value.one_line() and len(caught.value.one_line()) < 200


def test_the_guests_clock_is_read_to_the_nanosecond() -> None:
    node = SimpleNamespace(sh=lambda script: Shell(0, "1700000000.123456789\n"))
    assert s.Situations.guest_now(SimpleNamespace(node=node)) == pytest.approx(1700000000.123456789)


def test_ipvsadm_lines_with_ports_of_5000_digits_are_skipped() -> None:
    huge = "9" * 5000
    table = (
        f"TCP  10.254.0.1:{huge} rr\n  -> 172.20.1.20:{huge}  Masq 1 0 0\n"
        "SCTP  10.254.0.9:5000 rr\n  -> 172.20.1.20:5000  Masq 1 0 0\n"
        f"  -> 172.20.1.21:{huge}  Masq 1 0 0\n"
    )
    assert parse_ipvs(table) == {("SCTP", "10.254.0.9", 5000): ["172.20.1.20"]}


def test_reject_lines_without_a_count_count_nothing() -> None:
    listing = "\n".join(
        [
            "Chain KUBE-ROUTER-SERVICES (1 references)",
            "    pkts      bytes target     prot opt in     out     source               destination",
            "       3      180 REJECT     sctp --  *      *       0.0.0.0/0            10.120.10.120",
            "REJECT everything",
            "9" * 5000 + " 0 REJECT all",
        ]
    )
    node = SimpleNamespace(in_kube_router=lambda *command: Shell(0, listing))
    assert Scenario.rejects(SimpleNamespace(node=node)) == 3


def test_a_probe_status_of_5000_digits_is_no_status() -> None:
    said = "m-1 pod=172.20.1.20\nKRS-PROBE status=0 ms=" + "9" * 5000 + "\n"
    probe = Node.probe(
        SimpleNamespace(sh=lambda script, timeout: Shell(0, said)), "ext", "sctp", "10.0.0.1", 5000, "m-1"
    )
    assert probe.ok and probe.ms == 0


# -- the results Markdown ------------------------------------------------------------------
INJECTED = (
    "```\n"
    "[the official results](https://evil.example/)\n"
    "<img src=https://evil.example/x.png>\n"
    "\x1b[2J\x1b]8;;https://evil.example\x07a link\x1b]8;;\x07\n"
    "````` \n"
)
DETAIL = "reply 'x | y' \\| z\n| forged | row |\r[click](https://evil.example/) <b>b</b> **PASS** \x1b[31mred"


def outside_fences(md: str) -> list[str]:
    """The lines a CommonMark reader takes for Markdown, not for code."""
    outside, fence = [], ""
    for line in md.splitlines():
        if fence:
            if re.fullmatch(rf" {{0,3}}{fence}`*\s*", line):
                fence = ""
        elif opening := re.match(r" {0,3}(`{3,})(?!.*`)", line):
            fence = opening[1]
        else:
            outside.append(line)
    return outside


def test_guest_output_neither_ends_its_fence_nor_breaks_a_row_nor_opens_a_link(tmp_path: Path) -> None:
    run = Run("candidate", "img", kube_router_version="v2.7.1", error=f"kube-router exited: {DETAIL}")
    run.scenarios = ["two-nodes"]
    run.evidence["iptables -L KUBE-ROUTER-SERVICES -v -n -x (after)"] = INJECTED
    situation = _result("two-nodes", V271, {"nodeport-via-b": False})
    situation.parts[0].detail = DETAIL
    situation.evidence["node-b: before"] = INJECTED
    run.situations = [situation]
    md, js = write_results(tmp_path / "v2.7.1", [run])
    text = md.read_text()
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    outside = outside_fences(text)
    assert text.count("[the official results](https://evil.example/)") == 2
    assert not [line for line in outside if "evil.example" in line and "click" not in line]
    assert not [line for line in outside if re.search(r"(?<!\\)[<\[]", line)]  # no link, image or HTML opens
    assert not [line for line in outside if line.startswith("| forged")]
    (row,) = [line for line in outside if line.startswith("| two-nodes / nodeport-via-b")]
    assert len(re.findall(r"(?<!\\)\|", row.replace("\\\\", ""))) == 7  # six cells, as the header has
    assert "\\*\\*PASS\\*\\*" in row
    record = json.loads(js.read_text())  # the JSON keeps what was said, escaped by JSON alone
    assert record["runs"][0]["scenarios"][0]["parts"][0]["detail"] == DETAIL


@pytest.mark.parametrize(("said", "code"), [("0\n", 0), ("KRS 3\n", 3), ("-1", -1), ("9" * 5000, None)])
def test_the_smoke_guests_status_is_a_whole_small_number(said: str, code: int | None) -> None:
    """The smoke guest's status port is written inside the image under test: a number of
    5000 digits is no status (one clear error), never an int() crash."""
    from kube_router_sctp.errors import VMError
    from kube_router_sctp.vm import kernelsmoke

    guest = SimpleNamespace(status=lambda: said, console=lambda: "", console_tail=lambda n=20: "")
    if code is None:
        with pytest.raises(VMError, match="without reporting an exit status"):
            kernelsmoke._exit_status(guest)  # type: ignore[arg-type]
    else:
        assert kernelsmoke._exit_status(guest) == code  # type: ignore[arg-type]


def test_the_images_labels_and_the_kernels_name_open_no_link_in_the_results(tmp_path: Path) -> None:
    """kube_router_version, series and patches are the image's labels, the kernel its
    package's: each is written as a cell, so none opens a link or HTML or carries ESC."""
    hostile = "[official](https://evil.example/) <img src=x> \x1b]8;;https://evil.example/\x07x"
    run = Run("candidate", "img", kube_router_version=hostile, series=hostile, patches=hostile, kernel=hostile)
    md, _ = write_results(tmp_path / "labels", [run])
    text = md.read_text()
    assert "\x1b" not in text and "\x07" not in text
    assert re.search(r"(?<!\\)\]\(", text) is None and re.search(r"(?<!\\)<img", text) is None
