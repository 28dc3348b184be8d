"""A fault-injecting HTTP proxy in front of the real ``docker-registry``: each fault names the
requests it hits (method and a path pattern), what goes wrong, and how many times."""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
from dataclasses import dataclass

from tests.testbed import Proxy

# What a fault does to a request it hits:
#   "500"          answer 500 Internal Server Error without asking the registry
#   "drop"         close the connection before any answer
#   "truncate"     ask the registry, send its headers and half its body, close
#   "lose"         ask the registry (it acts on the request), then close without answering
#   "scope"        answer 401 with a Bearer challenge for error="insufficient_scope"
KINDS = ("500", "drop", "truncate", "lose", "scope")


@dataclass
class Fault:
    method: str
    path: str  # a regular expression searched in the request path
    kind: str
    times: int = 1_000_000  # how many matching requests it hits
    hits: int = 0

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind

    def matches(self, command: str, path: str) -> bool:
        return command == self.method and re.search(self.path, path) is not None


class FaultProxy(Proxy):
    """``faults`` are tried in order; the first that matches and has hits left acts."""

    def __init__(self, upstream: str, faults: list[Fault] | None = None) -> None:
        self.upstream = upstream
        self.faults = list(faults or [])
        self.lock = threading.Lock()
        super().__init__(upstream)

    def _fault_for(self, command: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.hits < fault.times and fault.matches(command, path):
                    fault.hits += 1
                    return fault
        return None

    def intercept(self, handler, body: bytes | None) -> bool:
        if handler.path.startswith("/token"):  # the realm of "scope" challenges: any token
            self.answer(handler, 200, b'{"token": "t"}', {"Content-Type": "application/json"})
            return True
        fault = self._fault_for(handler.command, handler.path)
        if fault is None:
            return False
        if fault.kind == "500":
            self.answer(handler, 500, b'{"errors":[{"code":"UNKNOWN","message":"injected"}]}')
        elif fault.kind == "drop":
            _hang_up(handler)
        elif fault.kind == "scope":
            challenge = (
                f'Bearer realm="http://{self.host}/token",service="fault",'
                'scope="repository:x:pull,push",error="insufficient_scope"'
            )
            self.answer(handler, 401, b"", {"WWW-Authenticate": challenge})
        else:
            status, headers, data = self._ask_upstream(handler, body)
            if fault.kind == "truncate":
                handler.send_response(status)
                for key, value in headers:
                    handler.send_header(key, value)
                handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                handler.wfile.write(data[: len(data) // 2])
                handler.wfile.flush()
            _hang_up(handler)
        return True

    def _ask_upstream(
        self, handler, body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
        headers["Host"] = self.upstream
        conn.request(handler.command, handler.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        passed = [
            (k, v)
            for k, v in response.getheaders()
            if k.lower() not in ("transfer-encoding", "connection", "content-length")
        ]
        conn.close()
        return response.status, passed, data

    def hits(self) -> int:
        return sum(f.hits for f in self.faults)


def _hang_up(handler) -> None:
    handler.close_connection = True
    with contextlib.suppress(OSError):
        handler.connection.shutdown(socket.SHUT_RDWR)
