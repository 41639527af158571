"""A real HTTP server whose routes misbehave on purpose, for download fault tests.

Each route is a Behaviour; the server counts requests per path so tests can assert how
often the pipeline retried. It binds to a free loopback port and runs in a thread.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    body: bytes = b""
    status: int = 200
    # failures before behaving: a list of statuses (e.g. [503, 503]) served first
    fail_first: list[int] = field(default_factory=list)
    truncate_at: int | None = None  # send Content-Length of the full body, then stop early
    corrupt: bool = False  # flip a byte in the middle
    stall: float = 0.0  # seconds to wait after the headers before the body
    declared_length: int | None = None  # lie about Content-Length
    redirect_to: str | None = None
    trickle: float = 0.0  # seconds between 4 KiB chunks: a slow mirror


class FaultServer:
    def __init__(self) -> None:
        self.routes: dict[str, Behaviour] = {}
        self.hits: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.hits[self.path] += 1
                behaviour = server.routes.get(self.path)
                if behaviour is None:
                    self.send_error(404)
                    return
                if behaviour.fail_first:
                    self.send_error(behaviour.fail_first.pop(0))
                    return
                if behaviour.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", behaviour.redirect_to)
                    self.end_headers()
                    return
                if behaviour.status != 200:
                    self.send_error(behaviour.status)
                    return
                body = behaviour.body
                if behaviour.corrupt and body:
                    middle = len(body) // 2
                    body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
                self.send_response(200)
                length = behaviour.declared_length if behaviour.declared_length is not None else len(body)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if behaviour.stall:
                    time.sleep(behaviour.stall)
                if behaviour.truncate_at is not None:
                    body = body[: behaviour.truncate_at]
                try:
                    if behaviour.trickle:
                        for start in range(0, len(body), 4096):
                            self.wfile.write(body[start : start + 4096])
                            self.wfile.flush()
                            time.sleep(behaviour.trickle)
                    else:
                        self.wfile.write(body)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if behaviour.truncate_at is not None or behaviour.declared_length is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
