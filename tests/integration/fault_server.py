"""A stand-in HTTP server for the faults a real vLLM cannot produce on demand.

Only for: /health answering 503 forever, garbage instead of JSON from /v1/models, a stall longer than the
client's request timeout, a completion with empty text. Everything else is tested against a real vLLM.

    with FaultServer({"/health": Fault(503, "Service Unavailable")}) as server:
        ... server.url ... server.requests ...

Paths without a fault answer like a healthy vLLM serving "tiny" (bodies as vLLM 0.32 sends them).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Tuple, Union


@dataclass
class Fault:
    status: int = 200
    body: Union[str, dict] = ""
    delay: float = 0.0  # seconds before answering: a stall when longer than the client's timeout


HEALTHY: Dict[str, Fault] = {
    "/health": Fault(200, ""),
    "/version": Fault(200, {"version": "0.32.0"}),
    "/v1/models": Fault(200, {"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "vllm"}]}),
    "/v1/completions": Fault(
        200,
        {
            "object": "text_completion",
            "model": "tiny",
            "choices": [{"index": 0, "text": " see adapter on will", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6},
        },
    ),
}


class FaultServer:
    """ThreadingHTTPServer on 127.0.0.1 (a free port) in a daemon thread; records each request."""

    def __init__(self, faults: Dict[str, Fault]) -> None:
        self.routes = dict(HEALTHY)
        self.routes.update(faults)
        self.requests: List[Tuple[float, str, str]] = []  # (monotonic time, method, path)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.requests.append((time.monotonic(), self.command, path))
                fault = server.routes.get(path, Fault(404, {"detail": "Not Found"}))
                if fault.delay and server._stop.wait(fault.delay):
                    return
                body = fault.body if isinstance(fault.body, str) else json.dumps(fault.body)
                data = body.encode()
                try:
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (request timeout): that is the point of a stall

            do_GET = _answer
            do_POST = _answer

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fault-server", daemon=True)

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def request_times(self, path: str) -> List[float]:
        with self._lock:
            return [at for at, _method, p in self.requests if p == path]
