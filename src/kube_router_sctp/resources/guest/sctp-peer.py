#!/usr/bin/env python3
"""An SCTP echo server and client of the dataplane proof's own, run with the node's
python3 inside its network namespaces (socat cannot bind an association to two
addresses).

serve: answer every message with ``<message> pod=<name> port=<port> from=<the peer's
primary address> peers=<every address the peer gave in its INIT>``, one association per
thread, and log each association's addresses as a JSON line.

talk: bind to one or more local addresses (sctp_bindx, through setsockopt
SCTP_SOCKOPT_BINDX_ADD, so both go into the INIT), optionally from a fixed port, connect,
then send a numbered message every ``--every`` seconds for ``--for`` seconds, printing one
JSON line per message (its round trip or the error that ended the association) and, at
the start and the end, the addresses each side knows. Heartbeat interval and path
retransmissions come from the namespace's net.sctp sysctls, which the caller sets.

Standard library only: the node has python3 and nothing else of ours.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence

# linux/sctp.h
SCTP_SOCKOPT_BINDX_ADD = 100
SCTP_GET_PEER_ADDRS = 108
SCTP_GET_LOCAL_ADDRS = 109
IPPROTO_SCTP = getattr(socket, "IPPROTO_SCTP", 132)
SOCKADDR_IN_SIZE = 16
SOCKADDR_IN6_SIZE = 28
MAX_ADDRS = 16
MESSAGE_BYTES = 4096


def pack_sockaddr(address: str, port: int) -> bytes:
    """A struct sockaddr_in or sockaddr_in6, as the kernel reads it (family in host
    order, port and address in network order)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H4s", port, ip.packed) + bytes(8)
    return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI16sI", port, 0, ip.packed, 0)


def pack_addresses(addresses: Sequence[str], port: int) -> bytes:
    """sctp_bindx's packed array: the addresses one after another, each its own size."""
    return b"".join(pack_sockaddr(a, port) for a in addresses)


def unpack_getaddrs(buffer: bytes) -> list[str]:
    """struct sctp_getaddrs (assoc id, count, then packed sockaddrs) as ``addr:port``."""
    if len(buffer) < 8:
        return []
    _assoc, count = struct.unpack("=iI", buffer[:8])
    found, offset = [], 8
    for _ in range(count):
        if offset + 2 > len(buffer):
            break
        (family,) = struct.unpack("=H", buffer[offset : offset + 2])
        if family == socket.AF_INET and offset + SOCKADDR_IN_SIZE <= len(buffer):
            port, raw = struct.unpack("!H4s", buffer[offset + 2 : offset + 8])
            found.append(f"{ipaddress.IPv4Address(raw)}:{port}")
            offset += SOCKADDR_IN_SIZE
        elif family == socket.AF_INET6 and offset + SOCKADDR_IN6_SIZE <= len(buffer):
            port, _flow, raw = struct.unpack("!HI16s", buffer[offset + 2 : offset + 24])
            ip6 = ipaddress.IPv6Address(raw)
            # a v6 socket reports IPv4 peers as mapped addresses: show them as IPv4
            found.append(f"{ip6.ipv4_mapped}:{port}" if ip6.ipv4_mapped else f"[{ip6}]:{port}")
            offset += SOCKADDR_IN6_SIZE
        else:
            break
    return found


def addresses(sock: socket.socket, option: int) -> list[str]:
    try:
        raw = sock.getsockopt(IPPROTO_SCTP, option, 8 + MAX_ADDRS * SOCKADDR_IN6_SIZE)
    except OSError as exc:
        return [f"error: {exc.strerror}"]
    return unpack_getaddrs(raw)


def family_of(addresses_: Sequence[str]) -> int:
    return socket.AF_INET6 if any(ipaddress.ip_address(a).version == 6 for a in addresses_) else socket.AF_INET


def emit(record: dict[str, object]) -> None:
    print(json.dumps({"t": round(time.time(), 3), **record}), flush=True)


def reply_for(message: str, name: str, port: int, peer: str, peers: Sequence[str]) -> str:
    hosts = ",".join(p.rsplit(":", 1)[0].strip("[]") for p in peers)
    return f"{message} pod={name} port={port} from={peer} peers={hosts}"


# -- serve ----------------------------------------------------------------------------
def serve(port: int, name: str, bind: Sequence[str]) -> None:
    family = family_of(bind) if bind else socket.AF_INET6
    listener = socket.socket(family, socket.SOCK_STREAM, IPPROTO_SCTP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if bind:
        listener.bind((bind[0], port))
        if len(bind) > 1:
            listener.setsockopt(IPPROTO_SCTP, SCTP_SOCKOPT_BINDX_ADD, pack_addresses(bind[1:], port))
    else:
        listener.bind(("::", port))  # both families: a v6 wildcard socket takes v4 peers too
    listener.listen(64)
    emit({"event": "listening", "port": port, "local": addresses(listener, SCTP_GET_LOCAL_ADDRS)})
    while True:
        conn, peer = listener.accept()
        threading.Thread(target=_answer, args=(conn, peer, name, port), daemon=True).start()


def _answer(conn: socket.socket, peer: tuple[str, ...], name: str, port: int) -> None:
    host = ipaddress.ip_address(peer[0].split("%")[0])
    shown = str(host.ipv4_mapped or host) if isinstance(host, ipaddress.IPv6Address) else str(host)
    peers = addresses(conn, SCTP_GET_PEER_ADDRS)
    emit({"event": "association", "peer": shown, "peers": peers, "local": addresses(conn, SCTP_GET_LOCAL_ADDRS)})
    with conn:
        while True:
            try:
                data = conn.recv(MESSAGE_BYTES)
            except OSError as exc:
                emit({"event": "ended", "peer": shown, "error": exc.strerror})
                return
            if not data:
                emit({"event": "ended", "peer": shown, "error": ""})
                return
            text = data.decode(errors="replace").strip()
            peers = addresses(conn, SCTP_GET_PEER_ADDRS)
            conn.sendall((reply_for(text, name, port, shown, peers) + "\n").encode())


# -- talk -----------------------------------------------------------------------------
def talk(target: str, port: int, bind: Sequence[str], sport: int, every: float, duration: float, tag: str) -> int:
    """Exit status: 0 if every message came back, 1 if the association ended or a
    message went unanswered, 2 if it never came up."""
    family = family_of([target, *bind])
    try:
        sock = socket.socket(family, socket.SOCK_STREAM, IPPROTO_SCTP)
    except OSError as exc:  # a kernel without SCTP (no sctp module)
        emit({"event": "failed", "error": exc.strerror or str(exc)})
        return 2
    if sport:  # back from the same port while the old association may still linger
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Long enough for the peer to notice a dead path and move to another (path_max_retrans
    # retransmissions of at most rto_max each), short enough to end a dead association.
    sock.settimeout(max(every * 50, 10.0))
    try:
        if bind:
            sock.bind((bind[0], sport))
            if len(bind) > 1:
                sock.setsockopt(IPPROTO_SCTP, SCTP_SOCKOPT_BINDX_ADD, pack_addresses(bind[1:], sport))
        elif sport:
            # a fixed source port on every address, as a Diameter peer binds its own
            sock.bind(("0.0.0.0" if family == socket.AF_INET else "::", sport))  # noqa: S104
        start = time.monotonic()
        sock.connect((target, port))
    except OSError as exc:
        emit({"event": "failed", "error": exc.strerror or str(exc)})
        return 2
    emit(
        {
            "event": "up",
            "ms": round((time.monotonic() - start) * 1000),
            "local": addresses(sock, SCTP_GET_LOCAL_ADDRS),
            "peers": addresses(sock, SCTP_GET_PEER_ADDRS),
        }
    )
    status, seq, end = 0, 0, time.monotonic() + duration
    with sock:
        while time.monotonic() < end:
            seq += 1
            sent = time.monotonic()
            try:
                sock.sendall(f"{tag}-{seq}".encode())
                data = sock.recv(MESSAGE_BYTES)
            except OSError as exc:
                emit({"event": "ended", "seq": seq, "error": exc.strerror or type(exc).__name__})
                return 1
            if not data:
                emit({"event": "ended", "seq": seq, "error": "closed by the peer"})
                return 1
            emit({"seq": seq, "rtt_ms": round((time.monotonic() - sent) * 1000, 1), "reply": data.decode().strip()})
            time.sleep(max(0.0, every - (time.monotonic() - sent)))
        emit({"event": "done", "messages": seq, "peers": addresses(sock, SCTP_GET_PEER_ADDRS)})
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sctp-peer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--bind", action="append", default=[])
    t = commands.add_parser("talk")
    t.add_argument("--to", required=True)
    t.add_argument("--port", type=int, required=True)
    t.add_argument("--bind", action="append", default=[])
    t.add_argument("--sport", type=int, default=0)
    t.add_argument("--every", type=float, default=0.2)
    t.add_argument("--for", dest="duration", type=float, default=10.0)
    t.add_argument("--tag", default="krs")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.name, args.bind)
        return 0
    return talk(args.to, args.port, args.bind, args.sport, args.every, args.duration, args.tag)


if __name__ == "__main__":
    sys.exit(main())
