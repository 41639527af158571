"""SCTP chunks read from a capture, where they decide a verdict.

tcpdump on the node writes the capture (``-w``, pcap); tcpdump's own printer names the
chunks but not the address parameters of INIT and INIT-ACK, which multi-homing turns on:
which addresses the client offered, and whether the pod offered its own pod IP behind
the service address. This reader is the proof's own: classic pcap only, link types
Ethernet, raw IP, Linux cooked v1 and v2 (``-i any``), IPv4 and IPv6 without extension
headers. A capture is input from the guest: every length is checked, a packet that does
not parse is skipped, never trusted, and what is read is bounded (the capture's size, its
packets, a packet's chunks, an INIT's addresses), so that no capture costs the host more
than seconds and tens of megabytes.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass, field

PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
NANO_MAGIC = {b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_RAW_ALT, LINKTYPE_SLL, LINKTYPE_SLL2 = 1, 101, 12, 113, 276
ETH_IPV4, ETH_IPV6, ETH_VLAN = 0x0800, 0x86DD, 0x8100
IPPROTO_SCTP = 132
# Bounds well above what the capture (tcpdump -s 256 -c 8000, scenario-lib.sh) can hold:
# 8000 records of at most 272 bytes, a snapshot of 256 bytes holds a few chunks, and an
# INIT carries the few addresses of its endpoint (sctp-peer.py reads at most 16).
MAX_BYTES = 8 << 20
MAX_PACKETS = 20_000
MAX_CHUNKS = 32  # per packet
MAX_ADDRESSES = 16  # per INIT or INIT-ACK

CHUNK_NAMES = {
    0: "DATA",
    1: "INIT",
    2: "INIT_ACK",
    3: "SACK",
    4: "HEARTBEAT",
    5: "HEARTBEAT_ACK",
    6: "ABORT",
    7: "SHUTDOWN",
    8: "SHUTDOWN_ACK",
    9: "ERROR",
    10: "COOKIE_ECHO",
    11: "COOKIE_ACK",
    14: "SHUTDOWN_COMPLETE",
    0x80: "ASCONF_ACK",
    0xC0: "FORWARD_TSN",
    0xC1: "ASCONF",
}
PARAM_IPV4, PARAM_IPV6 = 5, 6


@dataclass(frozen=True)
class Chunk:
    name: str
    flags: int
    addresses: tuple[str, ...] = ()  # INIT / INIT_ACK address parameters

    def text(self) -> str:
        extra = f" addrs={','.join(self.addresses)}" if self.addresses else ""
        t_bit = " T" if self.name == "ABORT" and self.flags & 1 else ""
        return f"{self.name}{t_bit}{extra}"


@dataclass(frozen=True)
class Packet:
    seconds: float
    src: str
    dst: str
    sport: int
    dport: int
    vtag: int
    chunks: tuple[Chunk, ...] = field(default_factory=tuple)

    def names(self) -> set[str]:
        return {c.name for c in self.chunks}

    def text(self, start: float = 0.0) -> str:
        chunks = " ".join(f"[{c.text()}]" for c in self.chunks)
        return (
            f"{self.seconds - start:8.3f} {_host(self.src)}:{self.sport} > {_host(self.dst)}:{self.dport} "
            f"vtag=0x{self.vtag:08x} {chunks}"
        )


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def read_pcap(data: bytes) -> list[Packet]:
    """Every SCTP packet of a pcap file, in capture order."""
    if len(data) < 24 or data[:4] not in PCAP_MAGIC:
        raise ValueError("not a pcap capture (pcapng is not read here: run tcpdump with -w, without --pcapng)")
    if len(data) > MAX_BYTES:
        raise ValueError(f"a capture of {len(data)} bytes, more than the {MAX_BYTES} a scenario's capture can hold")
    order = PCAP_MAGIC[data[:4]]
    divisor = 1e9 if data[:4] in NANO_MAGIC else 1e6
    (linktype,) = struct.unpack(order + "I", data[20:24])
    packets: list[Packet] = []
    offset = 24
    while offset + 16 <= len(data) and len(packets) < MAX_PACKETS:
        sec, frac, caplen, _origlen = struct.unpack(order + "IIII", data[offset : offset + 16])
        offset += 16
        frame = data[offset : offset + caplen]
        offset += caplen
        if len(frame) < caplen:
            break  # a truncated last record
        packet = _frame(linktype & 0x0FFFFFFF, frame, sec + frac / divisor)
        if packet is not None:
            packets.append(packet)
    return packets


def _frame(linktype: int, frame: bytes, seconds: float) -> Packet | None:
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        (ethertype,) = struct.unpack("!H", frame[12:14])
        body = frame[14:]
        if ethertype == ETH_VLAN and len(body) >= 4:
            (ethertype,) = struct.unpack("!H", body[2:4])
            body = body[4:]
        return _ip(ethertype, body, seconds)
    if linktype == LINKTYPE_SLL and len(frame) >= 16:
        return _ip(struct.unpack("!H", frame[14:16])[0], frame[16:], seconds)
    if linktype == LINKTYPE_SLL2 and len(frame) >= 20:
        return _ip(struct.unpack("!H", frame[0:2])[0], frame[20:], seconds)
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_ALT) and frame:
        return _ip(ETH_IPV4 if frame[0] >> 4 == 4 else ETH_IPV6, frame, seconds)
    return None


def _ip(ethertype: int, body: bytes, seconds: float) -> Packet | None:
    if ethertype == ETH_IPV4 and len(body) >= 20 and body[0] >> 4 == 4:
        header = (body[0] & 0x0F) * 4
        if body[9] != IPPROTO_SCTP or header < 20 or len(body) < header:
            return None
        (total,) = struct.unpack("!H", body[2:4])
        src, dst = str(ipaddress.IPv4Address(body[12:16])), str(ipaddress.IPv4Address(body[16:20]))
        return _sctp(body[header : max(header, min(total, len(body)))], src, dst, seconds)
    if ethertype == ETH_IPV6 and len(body) >= 40 and body[0] >> 4 == 6:
        if body[6] != IPPROTO_SCTP:
            return None
        (payload,) = struct.unpack("!H", body[4:6])
        src, dst = str(ipaddress.IPv6Address(body[8:24])), str(ipaddress.IPv6Address(body[24:40]))
        return _sctp(body[40 : 40 + payload], src, dst, seconds)
    return None


def _sctp(segment: bytes, src: str, dst: str, seconds: float) -> Packet | None:
    if len(segment) < 12:
        return None
    sport, dport, vtag = struct.unpack("!HHI", segment[:8])
    chunks: list[Chunk] = []
    offset = 12
    while offset + 4 <= len(segment) and len(chunks) < MAX_CHUNKS:
        kind, flags, length = struct.unpack("!BBH", segment[offset : offset + 4])
        if length < 4 or offset + length > len(segment):
            break
        value = segment[offset + 4 : offset + length]
        name = CHUNK_NAMES.get(kind, f"TYPE{kind}")
        found = _init_addresses(value) if kind in (1, 2) else ()
        chunks.append(Chunk(name, flags, found))
        offset += (length + 3) & ~3
    return Packet(seconds, src, dst, sport, dport, vtag, tuple(chunks))


def _init_addresses(value: bytes) -> tuple[str, ...]:
    """The IPv4 and IPv6 address parameters after INIT's 16 fixed bytes."""
    found: list[str] = []
    offset = 16
    while offset + 4 <= len(value) and len(found) < MAX_ADDRESSES:
        kind, length = struct.unpack("!HH", value[offset : offset + 4])
        if length < 4 or offset + length > len(value):
            break
        body = value[offset + 4 : offset + length]
        if kind == PARAM_IPV4 and len(body) == 4:
            found.append(str(ipaddress.IPv4Address(body)))
        elif kind == PARAM_IPV6 and len(body) == 16:
            found.append(str(ipaddress.IPv6Address(body)))
        offset += (length + 3) & ~3
    return tuple(found)


# -- what a run reports ------------------------------------------------------------------
def transcript(packets: list[Packet], limit: int = 120) -> str:
    """The capture as lines (time from the first packet), the first ``limit`` of them."""
    start = packets[0].seconds if packets else 0.0
    lines = [p.text(start) for p in packets[:limit]]
    if len(packets) > limit:
        lines.append(f"... {len(packets) - limit} more packet(s)")
    return "\n".join(lines)


def heartbeats(packets: list[Packet]) -> Counter[tuple[str, str, str]]:
    """HEARTBEAT, HEARTBEAT_ACK and ABORT counts per (chunk, source, destination): which
    paths carried heartbeats, and who aborted."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for packet in packets:
        for chunk in packet.chunks:
            if chunk.name in ("HEARTBEAT", "HEARTBEAT_ACK", "ABORT"):
                counts[(chunk.name, packet.src, packet.dst)] += 1
    return counts


def init_addresses(packets: list[Packet]) -> dict[str, tuple[str, ...]]:
    """The address parameters of the first INIT and the first INIT_ACK seen."""
    found: dict[str, tuple[str, ...]] = {}
    for packet in packets:
        for chunk in packet.chunks:
            if chunk.name in ("INIT", "INIT_ACK") and chunk.name not in found:
                found[chunk.name] = chunk.addresses
    return found
