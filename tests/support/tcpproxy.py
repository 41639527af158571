"""A TCP (or unix-socket) relay the tests can cut: 'the registry stopped in the middle of a
push', 'the Docker daemon went away during a build'. Real bytes flow through it to the real
server until the test pulls the plug."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path


class CuttableProxy:
    def __init__(self, target: tuple[str, int] | str, *, listen_unix: Path | None = None) -> None:
        self.target = target
        self.bytes_up = 0  # client -> server
        self.cut = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        if listen_unix is not None:
            listen_unix.unlink(missing_ok=True)
            self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.server.bind(str(listen_unix))
            self.address = f"unix://{listen_unix}"
        else:
            self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.server.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.server.listen(64)
        self.cut_after: int | None = None  # cut once this many bytes went up
        self.delay = 0.0  # seconds to wait per chunk going up: a slow link
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect(self) -> socket.socket:
        if isinstance(self.target, str):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
        else:
            upstream = socket.create_connection(self.target)
        return upstream

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                return
            try:
                upstream = self._connect()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, dest: socket.socket, up: bool) -> None:
        with contextlib.suppress(OSError):
            while not self.cut.is_set():
                data = source.recv(65536)
                if not data:
                    break
                dest.sendall(data)
                if up and self.delay:
                    time.sleep(self.delay)
                if up:
                    self.bytes_up += len(data)
                    if self.cut_after is not None and self.bytes_up >= self.cut_after:
                        self.pull_the_plug()
        with contextlib.suppress(OSError):
            dest.shutdown(socket.SHUT_WR)

    def pull_the_plug(self) -> None:
        """Drop every connection and stop accepting: the server is gone."""
        self.cut.set()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                    conn.close()
        with contextlib.suppress(OSError):
            self.server.close()

    def close(self) -> None:
        self.pull_the_plug()
        if self.address.startswith("unix://"):
            with contextlib.suppress(OSError):
                Path(self.address.removeprefix("unix://")).unlink()
