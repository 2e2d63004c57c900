"""Real ``kubectl port-forward`` (1.31-1.33, their default WebSocket-tunnelled SPDY) through the API emulator to
pods the test node runs (tests/k8s/portforward.py): a Service's named targetPort, several connections at
once, a body larger than one frame, a server bound to the pod's localhost only, and the errors kubectl
reports (a refused port; the plain SPDY upgrade, which the emulator does not serve)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import portforward as pf
import pytest
import test_node
from k8s_harness import wait_for
from test_node import Cluster, deployment

# Registers the fixture `cluster` (an emulator with a running node) in this module.
node_cluster = test_node.cluster

# /usr/bin/kubectl here is the Google Cloud SDK's dispatcher (v1.32.4): it runs the kubectl of the server's minor
# version, 1.33 against the emulator. Its directory has the other minor versions as kubectl.1.NN.
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
# The versions whose default is the WebSocket tunnel the emulator serves (1.31 made it the default).
WEBSOCKET_KUBECTLS = [
    path
    for path in (Path(KUBECTL).resolve().parent / f"kubectl.1.{minor}" for minor in (31, 32, 33))
    if path.is_file() and os.access(path, os.X_OK)
]
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# The pod: a file server on 0.0.0.0:8080 (the Service's "http" port) and a second server on the pod's
# 127.0.0.1:9090 only, which nothing but a port-forward (the kubelet connects to localhost in the pod's
# network namespace) can reach.
SERVER = """
import functools, http.server, sys, threading
files = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
class Local(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"only on the pod's localhost\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
local = http.server.ThreadingHTTPServer(("127.0.0.1", 9090), Local)
threading.Thread(target=local.serve_forever, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), files).serve_forever()
"""


class KubectlForward:
    """``kubectl port-forward`` in the background; ``port`` is the local port kubectl chose."""

    def __init__(
        self,
        cluster: Cluster,
        ns: str,
        resource: str,
        remote: int,
        *,
        env: Optional[Dict[str, str]] = None,
        kubectl: str = KUBECTL,
    ):
        command = [kubectl, "--kubeconfig", str(cluster.api.kubeconfig), "--namespace", ns, "port-forward"]
        command += ["--address", "127.0.0.1", resource, f":{remote}"]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.stdout: List[str] = []
        self.stderr: List[str] = []
        self._ready = threading.Event()
        self.port = 0
        threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True).start()

    def _read(self, stream, lines: List[str]) -> None:
        for line in stream:
            lines.append(line)
            found = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> ", line)
            if found:
                self.port = int(found.group(1))
                self._ready.set()

    def wait_ready(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            assert self.proc.poll() is None, f"kubectl exited {self.proc.returncode}: {''.join(self.stderr)}"
            assert time.monotonic() < deadline, f"kubectl did not forward in {timeout}s: {''.join(self.stderr)}"
        return self.port

    def get(self, path: str) -> bytes:
        with NO_PROXY.open(f"http://127.0.0.1:{self.port}{path}", timeout=20) as response:
            assert response.status == 200
            return response.read()

    def wait_exit(self, timeout: float = 20) -> int:
        code = self.proc.wait(timeout)
        time.sleep(0.2)  # the reader threads take the last lines
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path):
    """A Deployment running SERVER with a Service ``web`` (port 80 -> targetPort "http")."""
    cluster: Cluster = request.getfixturevalue("node_cluster")
    ns = cluster.namespace("pf")
    www = tmp_path / "www"
    www.mkdir()
    (www / "hello.txt").write_text("hello through kubectl port-forward\n")
    (www / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # ~100 DATA frames of 32 KiB
    container = {
        "image": "local/python:3.11",
        "command": ["python", "-c", SERVER, str(www)],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
    }
    cluster.api.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("web", container))
    ports = [{"port": 80, "targetPort": "http"}]
    service = {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": ports}}
    cluster.api.create(f"/api/v1/namespaces/{ns}/services", service)

    def ready_pod():
        pods = cluster.pods(ns, "app=web")
        statuses = [s for p in pods for s in (p.get("status") or {}).get("containerStatuses") or []]
        return pods[0] if pods and statuses and all(s.get("ready") for s in statuses) else None

    pod = wait_for("the web pod ready", ready_pod, 30)
    forwards: List[KubectlForward] = []
    try:
        yield cluster, ns, pod, www, forwards
    finally:
        for forward in forwards:
            forward.stop()


def test_kubectl_forwards_a_service_and_a_pod_port(served) -> None:
    cluster, ns, pod, www, forwards = served
    name = pod["metadata"]["name"]
    forward = KubectlForward(cluster, ns, "svc/web", 80)
    forwards.append(forward)
    forward.wait_ready()
    # svc/web port 80 -> the pod's named port "http" = 8080, as kubectl resolved it from the objects.
    assert any(line.startswith(f"Forwarding from 127.0.0.1:{forward.port} -> 8080") for line in forward.stdout)

    assert forward.get("/hello.txt") == b"hello through kubectl port-forward\n"
    # Several connections at once, each its own pair of SPDY streams on the one tunnel.
    with ThreadPoolExecutor(max_workers=8) as pool:
        bodies = list(pool.map(lambda _: forward.get("/hello.txt"), range(24)))
        blobs = list(pool.map(lambda _: hashlib.sha256(forward.get("/blob.bin")).hexdigest(), range(3)))
    assert bodies == [b"hello through kubectl port-forward\n"] * 24
    assert blobs == [hashlib.sha256((www / "blob.bin").read_bytes()).hexdigest()] * 3
    assert sum("Handling connection for" in line for line in forward.stdout) >= 28
    # The kubelet's way in: the server saw the connections come from the pod's own localhost.
    log = cluster.log(ns, name)
    assert "127.0.0.1 - - " in log and '"GET /blob.bin HTTP/1.1" 200' in log, log[-2000:]

    # A server bound to the pod's 127.0.0.1 only: unreachable through the pod IP, reachable forwarded.
    ip = pod["status"]["podIP"]
    with pytest.raises(OSError):
        socket.create_connection((ip, 9090), timeout=3).close()
    local = KubectlForward(cluster, ns, f"pod/{name}", 9090)
    forwards.append(local)
    local.wait_ready()
    assert local.get("/") == b"only on the pod's localhost\n"
    assert forward.proc.poll() is None and local.proc.poll() is None, "a forward ended by itself"

    # Each kubectl minor version on this machine whose default is the WebSocket tunnel.
    assert WEBSOCKET_KUBECTLS, "no kubectl.1.31-1.33 next to the kubectl dispatcher"
    for kubectl in WEBSOCKET_KUBECTLS:
        versioned = KubectlForward(cluster, ns, "svc/web", 80, kubectl=str(kubectl))
        forwards.append(versioned)
        versioned.wait_ready()
        assert versioned.get("/hello.txt") == b"hello through kubectl port-forward\n", kubectl
        versioned.stop()

    # kubectl stopped: its tunnel is closed on the emulator's side too.
    forward.stop()
    local.stop()
    emulator_log = cluster.api.pidfile.with_suffix(".log")
    tunnels = 2 + len(WEBSOCKET_KUBECTLS)

    def closed() -> bool:
        return emulator_log.read_text().count(f"port-forward to pod {ns}/{name}") >= 2 * tunnels

    wait_for("the emulator to log both tunnels opened and closed", closed, 10)


def test_kubectl_reports_a_refused_port_and_the_unserved_spdy_upgrade(served) -> None:
    cluster, ns, pod, _www, forwards = served
    name = pod["metadata"]["name"]
    forward = KubectlForward(cluster, ns, f"pod/{name}", 7777)  # nothing listens on 7777 in the pod
    forwards.append(forward)
    forward.wait_ready()
    with socket.create_connection(("127.0.0.1", forward.port), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(1024) == b"", "a refused port must give the client nothing"
    # As against a real cluster: kubectl prints the error and ends the whole forward.
    assert forward.wait_exit() != 0
    stderr = "".join(forward.stderr)
    assert f"error forwarding port 7777 to pod {ns}/{name}" in stderr, stderr
    assert "dial tcp4 127.0.0.1:7777: connect: connection refused" in stderr, stderr
    assert "lost connection to pod" in stderr, stderr

    # kubectl's fallback path (plain SPDY/3.1 upgrade) is refused with the reason, not half-served.
    spdy = KubectlForward(cluster, ns, f"pod/{name}", 8080, env={"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"})
    forwards.append(spdy)
    assert spdy.wait_exit() != 0
    stderr = "".join(spdy.stderr)
    assert "unable to upgrade" in stderr and "not as a plain SPDY/3.1 upgrade" in stderr, stderr


def test_spdy_frames_round_trip_with_shared_header_compression() -> None:
    """The framer both ways (a client's framer writes, a server's reads), fed in odd-sized pieces: the
    zlib context carries across header blocks, as SPDY/3 requires."""
    client, server = pf.SpdyFramer(), pf.SpdyFramer()
    wire = b"".join(
        [
            client.syn_stream_frame(1, {"streamtype": "error", "port": "8080", "requestid": "0"}),
            client.syn_stream_frame(3, {"streamtype": "data", "port": "8080", "requestid": "0"}),
            pf.SpdyFramer.data_frame(3, b"GET / HTTP/1.1\r\n\r\n"),
            pf.SpdyFramer.data_frame(3, b"", fin=True),
            client.ping_frame(1),
            client.rst_stream_frame(3, pf.RST_CANCEL),
        ]
    )
    frames = []
    for start in range(0, len(wire), 7):
        frames += server.feed(wire[start : start + 7])
    kinds = [f.kind for f in frames]
    assert kinds == [pf.SYN_STREAM, pf.SYN_STREAM, 0, 0, pf.PING, pf.RST_STREAM]
    assert frames[1].headers == {"streamtype": ["data"], "port": ["8080"], "requestid": ["0"]}
    assert frames[2].data == b"GET / HTTP/1.1\r\n\r\n" and frames[3].fin and frames[5].value == pf.RST_CANCEL
    # The other direction: replies decompress with the reader's own, separate context.
    reply = server.syn_reply_frame(1) + server.syn_reply_frame(3, {"x-test": "yes"})
    assert [f.headers for f in client.feed(reply)] == [{}, {"x-test": ["yes"]}]
    # One context per direction and connection: a later block means nothing to a reader that missed the first.
    writer = pf.SpdyFramer()
    writer.syn_stream_frame(1, {"port": "1"})
    later = writer.syn_stream_frame(3, {"port": "1"})
    assert pf.SpdyFramer().feed(later[:5]) == []  # an incomplete frame waits for its bytes
    with pytest.raises(pf.SpdyError, match="decompress"):
        pf.SpdyFramer().feed(later)
