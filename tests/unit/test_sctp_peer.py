"""The scenarios' own SCTP client and server (resources/guest/sctp-peer.py), run with
the node's python3. What needs no SCTP in the kernel is tested here: the structures it
hands the kernel (sctp_bindx's packed addresses) and reads back (sctp_getaddrs), its
replies, and what it says on a kernel without SCTP — this host's, a real one (the
associations themselves run on the node, in tests/integration/test_scenarios.py)."""

from __future__ import annotations

import importlib.util
import json
import socket
import struct
import subprocess
import sys
from importlib import resources
from pathlib import Path
from types import ModuleType

import pytest

PEER = Path(str(resources.files("kube_router_sctp").joinpath("resources/guest/sctp-peer.py")))


@pytest.fixture(scope="module")
def peer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sctp_peer", PEER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sockaddrs_are_packed_as_the_kernel_reads_them(peer: ModuleType) -> None:
    v4 = peer.pack_sockaddr("10.101.51.85", 40000)
    assert len(v4) == 16 == peer.SOCKADDR_IN_SIZE
    assert struct.unpack("=H", v4[:2])[0] == socket.AF_INET
    assert v4[2:4] == (40000).to_bytes(2, "big") and v4[4:8] == bytes([10, 101, 51, 85]) and v4[8:] == bytes(8)
    v6 = peer.pack_sockaddr("fd00:101:50::85", 5000)
    assert len(v6) == 28 == peer.SOCKADDR_IN6_SIZE
    assert struct.unpack("=H", v6[:2])[0] == socket.AF_INET6 and v6[2:4] == (5000).to_bytes(2, "big")
    assert v6[8:24] == socket.inet_pton(socket.AF_INET6, "fd00:101:50::85")
    both = peer.pack_addresses(["10.101.50.85", "fd00:101:50::85"], 7)
    assert both == peer.pack_sockaddr("10.101.50.85", 7) + peer.pack_sockaddr("fd00:101:50::85", 7)


def test_getaddrs_is_read_back_with_mapped_ipv4_shown_as_ipv4(peer: ModuleType) -> None:
    mapped = bytes(10) + b"\xff\xff" + bytes([10, 101, 50, 85])
    raw = struct.pack("=iI", 0, 3)
    raw += peer.pack_sockaddr("10.101.51.85", 40000)
    raw += struct.pack("=H", socket.AF_INET6) + struct.pack("!HI16sI", 40000, 0, mapped, 0)
    raw += peer.pack_sockaddr("fd00::1", 40000)
    assert peer.unpack_getaddrs(raw) == ["10.101.51.85:40000", "10.101.50.85:40000", "[fd00::1]:40000"]
    assert peer.unpack_getaddrs(raw[:30]) == ["10.101.51.85:40000"]  # a short buffer: what fits
    assert peer.unpack_getaddrs(b"") == []


def test_the_reply_names_the_pod_the_primary_peer_and_every_peer_address(peer: ModuleType) -> None:
    reply = peer.reply_for("mh-3", "172.20.1.22", 5000, "10.101.50.117", ["10.101.50.85:1", "[fd00::1]:1"])
    assert reply == "mh-3 pod=172.20.1.22 port=5000 from=10.101.50.117 peers=10.101.50.85,fd00::1"


def test_on_a_kernel_without_sctp_the_client_says_so_and_exits_2(peer: ModuleType) -> None:
    """This host's kernel has no SCTP (ENVIRONMENT.md): the socket cannot be made."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, peer.IPPROTO_SCTP).close()
    except OSError:
        pass
    else:
        pytest.skip("this kernel has SCTP: the no-SCTP answer cannot be seen here")
    result = subprocess.run(
        [sys.executable, str(PEER), "talk", "--to", "127.0.0.1", "--port", "5000", "--for", "0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stdout.splitlines()
    record = json.loads(line)
    assert record["event"] == "failed" and record["error"] and isinstance(record["t"], float)


def test_the_command_line_wants_a_target(peer: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        peer.main(["talk", "--port", "5000"])
    assert stopped.value.code == 2 and "--to" in capsys.readouterr().err
    assert peer.family_of(["10.0.0.1", "fd00::1"]) == socket.AF_INET6
    assert peer.family_of(["10.0.0.1"]) == socket.AF_INET
