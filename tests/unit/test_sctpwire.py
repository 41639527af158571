"""The proof's reader of captured SCTP chunks: INIT and INIT-ACK address parameters,
heartbeats per path, aborts; link types tcpdump writes; hostile captures."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kube_router_sctp.dataplane import sctpwire


def chunk(kind: int, value: bytes, flags: int = 0) -> bytes:
    body = struct.pack("!BBH", kind, flags, 4 + len(value)) + value
    return body + bytes(-len(body) % 4)


def init_value(*addresses: bytes) -> bytes:
    fixed = struct.pack("!IIHHI", 0x11223344, 106496, 10, 10, 1)
    params = b""
    for raw in addresses:
        kind = sctpwire.PARAM_IPV4 if len(raw) == 4 else sctpwire.PARAM_IPV6
        params += struct.pack("!HH", kind, 4 + len(raw)) + raw
    params += struct.pack("!HH", 0xC000, 4)  # ECN capable: a parameter that is no address
    return fixed + params


def sctp(sport: int, dport: int, vtag: int, *chunks: bytes) -> bytes:
    return struct.pack("!HHII", sport, dport, vtag, 0) + b"".join(chunks)


def ipv4(src: bytes, dst: bytes, payload: bytes) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 132, 0, src, dst) + payload


def ipv6(src: bytes, dst: bytes, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), 132, 64, src, dst) + payload


def pcap(linktype: int, frames: list[bytes]) -> bytes:
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for index, frame in enumerate(frames):
        data += struct.pack("<IIII", 100 + index, 500000, len(frame), len(frame)) + frame
    return data


def ethernet(packet: bytes, ethertype: int = 0x0800) -> bytes:
    return bytes(6) + bytes(6) + struct.pack("!H", ethertype) + packet


def sll2(packet: bytes, protocol: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", protocol, 0, 3, 1, 0, 6, bytes(8)) + packet


CLIENT, CLIENT2 = bytes([10, 101, 50, 85]), bytes([10, 101, 51, 85])
VIP, POD = bytes([10, 254, 0, 9]), bytes([172, 20, 1, 22])


def test_init_and_init_ack_addresses_heartbeats_and_aborts_are_read() -> None:
    frames = [
        ethernet(ipv4(CLIENT, VIP, sctp(40000, 5000, 0, chunk(1, init_value(CLIENT, CLIENT2))))),
        ethernet(ipv4(VIP, CLIENT, sctp(5000, 40000, 0x11223344, chunk(2, init_value(POD))))),
        ethernet(ipv4(CLIENT2, VIP, sctp(40000, 5000, 0x55, chunk(4, b"\x00\x01\x00\x08abcd")))),
        ethernet(ipv4(VIP, CLIENT2, sctp(5000, 40000, 0x55, chunk(6, b"", flags=1)))),
        ethernet(ipv4(CLIENT, VIP, sctp(40000, 5000, 0x55, chunk(0, b"\x00" * 16), chunk(3, b"\x00" * 12)))),
    ]
    packets = sctpwire.read_pcap(pcap(sctpwire.LINKTYPE_ETHERNET, frames))
    assert len(packets) == 5
    assert sctpwire.init_addresses(packets) == {"INIT": ("10.101.50.85", "10.101.51.85"), "INIT_ACK": ("172.20.1.22",)}
    assert sctpwire.heartbeats(packets) == {
        ("HEARTBEAT", "10.101.51.85", "10.254.0.9"): 1,
        ("ABORT", "10.254.0.9", "10.101.51.85"): 1,
    }
    assert packets[4].names() == {"DATA", "SACK"}
    text = sctpwire.transcript(packets)
    assert "10.101.50.85:40000 > 10.254.0.9:5000 vtag=0x00000000 [INIT addrs=10.101.50.85,10.101.51.85]" in text
    assert "[ABORT T]" in text and text.splitlines()[0].startswith("   0.000 ")


def test_linux_cooked_v2_and_ipv6_captures_are_read() -> None:
    src, dst = bytes.fromhex("fd000101005000000000000000000085"), bytes.fromhex("fd000010025400000000000000001234")
    frames = [sll2(ipv6(src, dst, sctp(1, 5000, 0, chunk(1, init_value(src)))), protocol=0x86DD)]
    (packet,) = sctpwire.read_pcap(pcap(sctpwire.LINKTYPE_SLL2, frames))
    assert packet.src == "fd00:101:50::85" and packet.dst == "fd00:10:254::1234"
    assert packet.chunks[0].addresses == ("fd00:101:50::85",)
    assert packet.text().split()[1] == "[fd00:101:50::85]:1"


def test_other_traffic_and_truncated_records_are_skipped() -> None:
    tcp = bytearray(ipv4(CLIENT, VIP, bytes(20)))
    tcp[9] = 6
    good = ethernet(ipv4(CLIENT, VIP, sctp(1, 2, 3, chunk(4, b"ab"))))
    data = pcap(sctpwire.LINKTYPE_ETHERNET, [bytes(tcp), good, good[:30]])
    data = data[:-5]  # the last record cut short, as a capture stopped mid-write leaves it
    packets = sctpwire.read_pcap(data)
    assert [p.names() for p in packets] == [{"HEARTBEAT"}]


def test_a_file_that_is_not_pcap_is_refused() -> None:
    with pytest.raises(ValueError, match="not a pcap capture"):
        sctpwire.read_pcap(b"\x0a\x0d\x0d\x0a" + bytes(40))  # pcapng's section header


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_after_a_pcap_header_parse_or_are_skipped(tail: bytes) -> None:
    for linktype in (sctpwire.LINKTYPE_ETHERNET, sctpwire.LINKTYPE_SLL, sctpwire.LINKTYPE_SLL2, sctpwire.LINKTYPE_RAW):
        head = pcap(linktype, [])
        for packet in sctpwire.read_pcap(head + struct.pack("<IIII", 1, 0, len(tail), len(tail)) + tail):
            assert all(isinstance(c.name, str) for c in packet.chunks)


def test_a_capture_larger_than_any_the_guest_writes_is_refused_before_it_is_read() -> None:
    head = pcap(sctpwire.LINKTYPE_RAW, [])
    with pytest.raises(ValueError, match="more than the"):
        sctpwire.read_pcap(head + bytes(sctpwire.MAX_BYTES))


def test_chunks_and_addresses_are_bounded_however_many_a_packet_carries() -> None:
    """A 64 KB packet of 4-byte chunks was 16 000 chunks, and a capture of a hundred of
    them took the host 10 s and 230 MB to read and wrote an 11 MB transcript."""
    many = sctp(1, 2, 3, *[chunk(3, b"")] * 16000)
    addresses = [bytes([10, 0, i // 256, i % 256]) for i in range(1000)]
    init = sctp(1, 2, 0, chunk(1, init_value(*addresses)))
    frames = [ipv4(CLIENT, VIP, many)] * 100 + [ipv4(CLIENT, VIP, init)]
    packets = sctpwire.read_pcap(pcap(sctpwire.LINKTYPE_RAW, frames))
    assert len(packets) == 101
    assert all(len(p.chunks) == sctpwire.MAX_CHUNKS for p in packets[:100])
    assert len(packets[100].chunks[0].addresses) == sctpwire.MAX_ADDRESSES
    assert len(sctpwire.transcript(packets)) < 100_000


def test_packets_are_bounded_however_many_the_capture_holds() -> None:
    """Chunks the host holds at most: a few hundred thousand (about 100 MB), not millions."""
    assert sctpwire.MAX_PACKETS * sctpwire.MAX_CHUNKS <= 1_000_000
    frame = ipv4(CLIENT, VIP, sctp(1, 2, 3, chunk(4, b"ab")))
    packets = sctpwire.read_pcap(pcap(sctpwire.LINKTYPE_RAW, [frame] * (sctpwire.MAX_PACKETS + 10)))
    assert len(packets) == sctpwire.MAX_PACKETS
