"""The smoke stage's verdicts per kernel, and the guest scripts' rendering. No kernel or
daemon needed: the runs here are records of what a real run reports."""

from __future__ import annotations

import pytest

from kube_router_sctp import guestscripts, smoke, smokestage
from kube_router_sctp.errors import KernelUnsupportedError, SmokeError, VMError
from kube_router_sctp.smoke import SmokeResult


def passed(spec: str) -> smokestage.KernelRun:
    result = SmokeResult(True, "kernel x under QEMU", "img", "table", "SMOKE-PASS", 9.0, {"timings": {"prepare": 1.0}})
    return smokestage.KernelRun(spec, {"release": "x"}, result, None, {"kernel": 1.0, "smoke": 8.0, "total": 9.0})


def failed(spec: str, error: Exception) -> smokestage.KernelRun:
    assert isinstance(error, (SmokeError, VMError))
    return smokestage.KernelRun(spec, {}, None, error, {"total": 2.0})


def test_each_kind_of_failure_has_its_own_verdict() -> None:
    lacks = KernelUnsupportedError("kernel 9.9 lacks what SCTP through IPVS needs: CONFIG_IP_VS is not set", "")
    image = SmokeError("smoke test failed: a binary is missing", "rebuild", 13)
    boot = VMError("the smoke guest's kernel panicked", "see the console")
    assert passed("debian:sid").verdict == "pass"
    assert failed("a", lacks).verdict == "kernel lacks: CONFIG_IP_VS is not set"
    assert failed("b", image).verdict.startswith("image fails (class 13)")
    assert failed("c", boot).verdict.startswith("could not run")
    assert (lacks.exit_code, image.exit_code, boot.exit_code) == (14, 8, 10)


def test_several_kernels_fail_with_the_image_first_then_the_guest_then_the_kernel() -> None:
    lacks = failed("k", KernelUnsupportedError("lacks: CONFIG_X is not set", "", smoke.KERNEL_LACKS))
    boot = failed("b", VMError("panicked", "console"))
    image = failed("i", SmokeError("binary missing", "rebuild", 13))
    error = smokestage._summary_error("img", [lacks, boot, image], 4)
    assert type(error) is SmokeError and error.smoke_class == 13 and "3 of 4 kernels" in error.message
    assert type(smokestage._summary_error("img", [lacks, boot], 3)) is VMError
    only = smokestage._summary_error("img", [lacks], 3)
    assert isinstance(only, KernelUnsupportedError) and only.exit_code == 14


def test_the_table_has_a_row_per_kernel() -> None:
    text = smokestage.table([passed("debian:trixie"), failed("debian:x", VMError("no boot", ""))])
    lines = text.splitlines()
    assert len(lines) == 4 and "| debian:trixie | x | pass |" in lines[2] and "could not run" in lines[3]


def test_guest_scripts_render_their_values_quoted_and_refuse_strays() -> None:
    script = smoke.script("v0.3.2-sctp.1-debian", "1.31")
    assert "KUBE_ROUTER_VERSION=v0.3.2-sctp.1-debian" in script and "@" not in script.split("fail()")[0]
    hostile = smoke.script("v1'; reboot; '", "1.31")
    assert "KUBE_ROUTER_VERSION='v1'\"'\"'; reboot; '\"'\"''" in hostile
    with pytest.raises(ValueError, match="placeholders without values"):
        guestscripts.render("kernelsmoke-init.sh", STATUS_PORTS="/dev/ttyS1")
