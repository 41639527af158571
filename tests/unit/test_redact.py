"""The one redaction: URL user-info, secret query values, header-like text, and the
secrets the configuration registered."""

from __future__ import annotations

import pytest

from kube_router_sctp import redact


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("git clone https://alice:pw1234@git.example/kr.git failed", "git clone https://***@git.example/kr.git failed"),
        ("https://ghp_abcdefghijklmnopqrstuvwxyz@github.com/x", "https://***@github.com/x"),
        ("GOPROXY=https://u:p%40ss@proxy.example|direct", "GOPROXY=https://***@proxy.example|direct"),
        ("https://mirror.example/d?token=abc123&arch=amd64", "https://mirror.example/d?token=***&arch=amd64"),
        ("https://s3.example/o?X-Amz-Signature=deadbeef", "https://s3.example/o?X-Amz-Signature=***"),
        ('{"auth": "dXNlcjpwYXNz"}', '{"auth": "***"}'),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
        (
            "no secret in https://mirror.example/debian?arch=amd64",
            "no secret in https://mirror.example/debian?arch=amd64",
        ),
        ("ssh://git@host/x and user@host:path", "ssh://***@host/x and user@host:path"),
    ],
)
def test_patterns(raw: str, shown: str) -> None:
    assert redact.redact(raw) == shown


def test_registered_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact, "_registered", set())
    redact.register_url("https://robot:p%40ssw0rd!@registry.example/v2/")
    assert redact.redact("login failed for p@ssw0rd!") == "login failed for ***"  # decoded
    assert redact.redact("sent p%40ssw0rd!") == "sent ***"  # as written
    assert redact.redact("Basic cm9ib3Q6cEBzc3cwcmQh") == "Basic ***"  # base64 of user:password
    assert redact.redact("the robot user") == "the robot user"  # a user name is no secret


def test_has_credentials() -> None:
    assert redact.has_credentials("https://u:p@proxy.example")
    assert redact.has_credentials("https://proxy.example/?access_token=x,direct")
    assert not redact.has_credentials("https://goproxy.example,direct")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("line", ["a-" * 100_000, "x." * 100_000 + "://", "w+" * 100_000 + "@"])
def test_a_long_line_is_redacted_in_linear_time(line: str) -> None:
    # The scheme's '[a-zA-Z0-9+.-]*' ran to the end of the line from every word start: a
    # 100 KB line of build output or a refused value took minutes (quadratic). A bound on
    # a hang, not a speed goal: linear time is milliseconds here.
    assert redact.redact(line) == line
    assert redact.value(line) == line


@pytest.mark.timeout(30)
@pytest.mark.parametrize("line", ["?" + "key" * 50_000, "#" + "pass" * 40_000 + "x", "&" + "a" * 100_000 + "token"])
def test_a_long_query_is_redacted_in_linear_time(line: str) -> None:
    assert redact.redact(line) == line  # no '=': nothing to hide, and no backtracking
    assert redact.redact(line + "&api_key=v1&x=1").endswith("&api_key=***&x=1")
