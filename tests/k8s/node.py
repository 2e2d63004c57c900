"""A test node for the Kubernetes API emulator: it makes workloads run, as the controllers, a kubelet
and kube-proxy of a real cluster would, with real processes on this machine (as root).

It polls the emulator (tests/k8s/emulator.py) over plain HTTP every half second and:

* **Jobs** (batch/v1): creates their pods (``<job>-<5 chars>``, the labels and ownerReferences the
  Job controller sets), retries failed pods up to ``backoffLimit`` (default 6) after a short back-off,
  enforces ``activeDeadlineSeconds``, honours ``completions``/``parallelism`` (non-indexed),
  ``suspend`` and ``ttlSecondsAfterFinished``, and writes the Job's status through the status
  subresource as Kubernetes 1.33 does (``startTime``, ``active``, ``succeeded``, ``failed``,
  ``ready``, ``terminating``, ``completionTime``, conditions ``SuccessCriteriaMet``+``Complete`` or
  ``FailureTarget``+``Failed`` with reason ``BackoffLimitExceeded``/``DeadlineExceeded``). A finished
  Job is never run again, also after a restart of the node.
* **Deployments** (apps/v1): one pod per replica (``<deploy>-<pod-template-hash>-<5 chars>``, owned
  by the Deployment itself: no ReplicaSet objects), rollouts on a template change (``Recreate``: the
  old pods are gone before a new one starts; ``RollingUpdate``: ``maxSurge``/``maxUnavailable``, with
  terminating pods counted until their processes are gone), scaling (also to 0), and the status that
  kubernetes.core's ``wait: true`` reads (observedGeneration, replicas, updated/ready/available/
  unavailableReplicas, conditions Available and Progressing).
* **Pods** (those it created, and standalone pods without a node): one network namespace per pod
  (a veth on a bridge of its own, 10.244.<n>.0/24), one mount namespace per container (``ip netns
  exec`` plus a small wrapper, ``node.py exec``, that bind-mounts the volumes, sets the hostname and
  execs the container's command with only the spec's environment). Volumes: persistentVolumeClaim
  (``<state-dir>/pvc/<ns>/<claim>``), configMap, secret, emptyDir (``medium: Memory``: a tmpfs).
  Env: value, valueFrom (secretKeyRef, configMapKeyRef, fieldRef), envFrom, ``$(VAR)`` expansion.
  Probes (startup, readiness, liveness; httpGet, tcpSocket, exec), restarts with a short back-off
  (1, 2, 4 ... 30 s), graceful termination (the preStop hook, SIGTERM, SIGKILL at the end of the
  grace period; postStart hooks are not run), status
  through the status subresource, logs in ``<pod-log-dir>/<ns>/<pod>.log`` (the emulator serves
  them as the pods' log subresource).
* **Services** (ClusterIP): a userspace proxy (kube-proxy's old mode): a virtual IP per Service from
  10.96.<m>.0/24 on a dummy interface, a TCP listener per port that forwards each connection to a
  ready pod (a Service with a selector) or to a ready address of the Service's EndpointSlices (a Service
  without one, e.g. pointing at hosts outside the cluster; the node publishes no EndpointSlices itself).
  Pods resolve ``svc``, ``svc.ns``, ``svc.ns.svc`` and ``svc.ns.svc.cluster.local`` through their own
  /etc/hosts (``/etc/netns/<netns>/hosts``). Service objects are never modified: the addresses are in
  ``<state-dir>/services.json`` (``service_address()``).
* a Node object ``llmops-test-node`` (Ready, with GPU labels) for realism.

What it does NOT do: scheduling (it has every label and takes every pod; nodeSelector, tolerations,
affinity, resources and GPUs are not enforced), securityContext (everything runs as root, with the
host's root filesystem: there are no images; ``--images`` maps image references to local software),
PID/IPC isolation, NetworkPolicy, DNS servers, headless/ExternalName Services, UDP, Endpoints
objects, an EndpointSlice controller (it reads EndpointSlices, never writes them), ReplicaSets,
StatefulSets, DaemonSets, CronJobs, indexed Jobs, pod failure policies, events.
See docs/kubernetes-testing.md, "The test node".

CLI (run with the tools virtualenv's Python, as root)::

    python tests/k8s/node.py run --kubeconfig K --state-dir D --images IMAGES.json \\
        [--pod-log-dir P] [--pidfile F] [--background]
    python tests/k8s/node.py stop --pidfile F
    python tests/k8s/node.py cleanup --state-dir D      # what a crashed node left behind

Only the standard library is imported at module level: ``node.py exec`` is the wrapper every
container starts through.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import ctypes
import datetime
import fcntl
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

NODE_NAME = "llmops-test-node"
NODE_PY = str(Path(__file__).resolve())
SYNC_INTERVAL = 0.5
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the API server's generateName uses
KUBELET_VERSION = "v1.33.0-llmops-test-node"
LOCK_FILE = Path("/run/lock/llmops-test-node.lock")
TERMINAL = ("Succeeded", "Failed")
MANAGED_OWNERS = ("Job", "Deployment")
MAX_BACKOFF = 30.0


# ---- small helpers ------------------------------------------------------------------------------
def now_iso() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    stamp = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()


def random_suffix(length: int = 5) -> str:
    return "".join(random.choice(NAME_ALPHABET) for _position in range(length))


def backoff_delay(failures: int) -> float:
    """The restart back-off: 1, 2, 4, ... 30 s (the kubelet's is 10 s ... 5 min; tests want it short)."""
    return min(MAX_BACKOFF, 2.0 ** max(0, failures - 1))


def expand_vars(text: str, env: Dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion: a defined VAR becomes its value, an undefined one stays as
    written, ``$$`` is a literal ``$`` (so ``$$(VAR)`` gives ``$(VAR)``)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def template_hash(template: Any) -> str:
    """A stable ``pod-template-hash`` of a pod template (10 characters of the generateName alphabet)."""
    value = int.from_bytes(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()[:8], "big")
    chars = []
    for _digit in range(10):
        value, index = divmod(value, len(NAME_ALPHABET))
        chars.append(NAME_ALPHABET[index])
    return "".join(chars)


def labels_match(selector: Dict[str, str], labels: Dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def condition(obj: Dict[str, Any], ctype: str) -> Optional[Dict[str, Any]]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def condition_true(obj: Dict[str, Any], ctype: str) -> bool:
    cond = condition(obj, ctype)
    return bool(cond and cond.get("status") == "True")


def pod_phase(pod: Dict[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def controller_ref(obj: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """An int-or-percent of ``total`` (maxSurge rounds up, maxUnavailable down)."""
    if isinstance(value, str) and value.endswith("%"):
        exact = total * int(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def set_condition(conditions: List[Dict[str, Any]], ctype: str, status: str, reason: str, message: str) -> None:
    """Add or update a condition; its times change only when its status, reason or message do."""
    stamp = now_iso()
    for cond in conditions:
        if cond["type"] == ctype:
            if (cond.get("status"), cond.get("reason"), cond.get("message")) != (status, reason, message):
                if cond.get("status") != status:
                    cond["lastTransitionTime"] = stamp
                cond.update(status=status, reason=reason, message=message)
                if "lastUpdateTime" in cond:
                    cond["lastUpdateTime"] = stamp
                if "lastProbeTime" in cond:
                    cond["lastProbeTime"] = stamp
            return
    conditions.append(
        {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastProbeTime": stamp,
            "lastTransitionTime": stamp,
        }
    )


def covered(path: str, mount_points: List[str]) -> bool:
    """Whether ``path`` lies under one of ``mount_points`` (so it is created in that volume, not on the
    host's root filesystem)."""
    return any(Path(path).is_relative_to(Path(point)) for point in mount_points)


def run_quiet(*command: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run a host command (ip, mount, ...); with check, raise with its stderr on failure."""
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env={"PATH": HOST_PATH})
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def write_in_place(path: Path, content: str) -> None:
    """Rewrite a file keeping its inode (it may be bind-mounted into pods); no-op when unchanged."""
    try:
        with open(path, "r+", encoding="utf-8") as handle:
            if handle.read() == content:
                return
            handle.seek(0)
            handle.truncate()
            handle.write(content)
    except FileNotFoundError:
        path.write_text(content, encoding="utf-8")


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


# ---- processes ----------------------------------------------------------------------------------
def _proc_stat(pid: int) -> Optional[List[str]]:
    """The fields of /proc/PID/stat after the command name (state is [0], session [3], start [19])."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()


def proc_start_time(pid: int) -> Optional[int]:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def session_members(session: int) -> List[int]:
    """Live (non-zombie) processes of a session: a container's processes, wherever they reparented."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields and fields[0] != "Z" and int(fields[3]) == session:
                members.append(int(entry))
    return members


def signal_session(session: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(session, sig)
    for pid in session_members(session):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# ---- the API ------------------------------------------------------------------------------------
class ApiError(RuntimeError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Api:
    """A minimal JSON client of the emulator (no proxies, no kubernetes client)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=10) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise ApiError(exc.code, f"{method} {path}: HTTP {exc.code}: {detail}") from exc
        return json.loads(raw) if raw else None

    def get(self, path: str) -> Optional[Dict[str, Any]]:
        try:
            return self.call("GET", path)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def items(self, path: str) -> List[Dict[str, Any]]:
        return self.call("GET", path)["items"]

    def create(self, path: str, obj: Dict[str, Any]) -> Dict[str, Any]:
        return self.call("POST", path, obj)

    def delete(self, path: str) -> bool:
        try:
            self.call("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    def merge_patch(self, path: str, patch: Dict[str, Any]) -> Dict[str, Any]:
        return self.call("PATCH", path, patch, "application/merge-patch+json")

    def put_status(self, path: str, obj: Dict[str, Any], status: Dict[str, Any]) -> bool:
        """Replace an object's whole status (PUT .../status); False when the object is gone."""
        meta = {k: obj["metadata"][k] for k in ("name", "namespace") if obj["metadata"].get(k)}
        body = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": meta, "status": status}
        try:
            self.call("PUT", path.rstrip("/") + "/status", body)
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise
        return True


def object_path(obj: Dict[str, Any]) -> str:
    """The API path of a namespaced object of the kinds the node manages."""
    kind, meta = obj["kind"], obj["metadata"]
    prefix = {"Pod": "/api/v1", "Job": "/apis/batch/v1", "Deployment": "/apis/apps/v1"}[kind]
    plural = {"Pod": "pods", "Job": "jobs", "Deployment": "deployments"}[kind]
    return f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"


def server_url(kubeconfig: Path) -> str:
    import yaml  # not needed by the container wrapper, which imports this module

    config = yaml.safe_load(Path(kubeconfig).read_text())
    return config["clusters"][0]["cluster"]["server"]


@dataclass
class Snapshot:
    """What the API holds this tick (one list per kind; the node keeps it current as it writes)."""

    pods: Dict[str, Dict[str, Any]]  # by uid
    jobs: List[Dict[str, Any]]
    deployments: List[Dict[str, Any]]
    services: List[Dict[str, Any]]
    endpointslices: List[Dict[str, Any]]
    configmaps: Dict[Tuple[str, str], Dict[str, Any]]
    secrets: Dict[Tuple[str, str], Dict[str, Any]]
    pvcs: Dict[Tuple[str, str], Dict[str, Any]]

    @classmethod
    def fetch(cls, api: Api) -> Snapshot:
        def keyed(path: str) -> Dict[Tuple[str, str], Dict[str, Any]]:
            return {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in api.items(path)}

        return cls(
            pods={o["metadata"]["uid"]: o for o in api.items("/api/v1/pods")},
            jobs=api.items("/apis/batch/v1/jobs"),
            deployments=api.items("/apis/apps/v1/deployments"),
            services=api.items("/api/v1/services"),
            endpointslices=api.items("/apis/discovery.k8s.io/v1/endpointslices"),
            configmaps=keyed("/api/v1/configmaps"),
            secrets=keyed("/api/v1/secrets"),
            pvcs=keyed("/api/v1/persistentvolumeclaims"),
        )

    def owned_by(self, uid: str) -> List[Dict[str, Any]]:
        return [p for p in self.pods.values() if (controller_ref(p) or {}).get("uid") == uid]


# ---- images -------------------------------------------------------------------------------------
@dataclass
class Image:
    """Local software standing in for an image: PATH entries, env, optional entrypoint/cmd."""

    path: List[str]
    env: Dict[str, str]
    entrypoint: Optional[List[str]] = None
    cmd: Optional[List[str]] = None


class ImageMap:
    """``--images``: a JSON list of ``{"match": REGEX, "path": [...], "env": {...}}``; first match wins."""

    def __init__(self, entries: List[Dict[str, Any]]) -> None:
        self.entries = [(re.compile(e["match"]), e) for e in entries]

    @classmethod
    def load(cls, path: Path) -> ImageMap:
        return cls(json.loads(Path(path).read_text()))

    def resolve(self, image: str) -> Optional[Image]:
        for pattern, entry in self.entries:
            if pattern.search(image or ""):
                return Image(
                    [str(p) for p in entry.get("path", [])],
                    {str(k): str(v) for k, v in (entry.get("env") or {}).items()},
                    entry.get("entrypoint"),
                    entry.get("cmd"),
                )
        return None


# ---- what the node created on the host (for a clean stop, and for cleaning up after a crash) -------
class HostRecord:
    """``<state-dir>/node.json``: every netns, link, /etc/netns dir, mount, created path and process
    session of this node, written *before* each is created so a crash leaves nothing unaccounted."""

    KINDS = ("sessions", "mounts", "netns", "links", "etc_netns", "created")

    def __init__(self, path: Path, data: Optional[Dict[str, Any]] = None) -> None:
        self.path = path
        self.data: Dict[str, Any] = data or {}
        for kind in self.KINDS:
            self.data.setdefault(kind, [])

    @classmethod
    def read(cls, path: Path) -> Optional[HostRecord]:
        try:
            return cls(path, json.loads(path.read_text()))
        except (OSError, ValueError):
            return None

    def add(self, kind: str, value: Any) -> None:
        if value not in self.data[kind]:
            self.data[kind].append(value)
            self.save()

    def discard(self, kind: str, value: Any) -> None:
        if value in self.data[kind]:
            self.data[kind].remove(value)
            self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data)


def cleanup_host(record: HostRecord, log: Callable[[str], None]) -> None:
    """Remove everything a record lists: processes, mounts, netns, links, /etc/netns dirs, created paths."""
    data = record.data
    for pid, start in data["sessions"]:
        if proc_start_time(pid) == start or session_members(pid):
            log(f"cleanup: killing leftover process session {pid}")
            signal_session(pid, signal.SIGKILL)
    for mount in reversed(data["mounts"]):
        run_quiet("umount", "-l", mount)
    for netns in data["netns"]:
        run_quiet("ip", "netns", "delete", netns)
    for link in data["links"]:
        run_quiet("ip", "link", "delete", link)
    for directory in data["etc_netns"]:
        shutil.rmtree(directory, ignore_errors=True)
    remove_created(data["created"])
    for kind in HostRecord.KINDS:
        data[kind] = []


def remove_created(paths: List[str]) -> None:
    """Remove the mount points the node created on the host (newest first), when still empty."""
    for path in reversed(paths):
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            elif os.path.isfile(path) and os.path.getsize(path) == 0:
                os.unlink(path)


@contextlib.contextmanager
def host_lock():
    """Serialise address-range choices between nodes starting at the same time."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- network ------------------------------------------------------------------------------------
def used_octets(prefix: str) -> set:
    """Third octets of ``prefix.X.0/24`` ranges already used on the host (addresses or routes)."""
    text = run_quiet("ip", "-4", "-o", "addr", "show").stdout + run_quiet("ip", "-4", "route", "show").stdout
    return {int(m) for m in re.findall(re.escape(prefix) + r"\.(\d+)\.", text)}


class Network:
    """The node's bridge (pods' gateway), the dummy interface holding Service VIPs, and one netns and
    veth per pod."""

    def __init__(self, prefix: str, record: HostRecord) -> None:
        self.bridge = prefix
        self.vip_link = prefix + "s"
        self.record = record
        self.gateway = ""
        self.pod_prefix = ""
        self.vip_prefix = ""
        self._pod_ips: set = set()
        self._next = 2

    def up(self) -> None:
        with host_lock():
            pod_octet = random.choice(sorted(set(range(1, 255)) - used_octets("10.244")))
            vip_octet = random.choice(sorted(set(range(1, 255)) - used_octets("10.96")))
            self.pod_prefix, self.vip_prefix = f"10.244.{pod_octet}.", f"10.96.{vip_octet}."
            self.gateway = self.pod_prefix + "1"
            self.record.add("links", self.bridge)
            run_quiet("ip", "link", "add", self.bridge, "type", "bridge", check=True)
            run_quiet("ip", "link", "set", self.bridge, "type", "bridge", "forward_delay", "0")
            run_quiet("ip", "addr", "add", self.gateway + "/24", "dev", self.bridge, check=True)
            run_quiet("ip", "link", "set", self.bridge, "up", check=True)
            self.record.add("links", self.vip_link)
            # A dummy interface where the kernel has the module; ifb or a port-less bridge otherwise:
            # any of them makes the VIPs local addresses of the host.
            for kind in ("dummy", "ifb", "bridge"):
                if run_quiet("ip", "link", "add", self.vip_link, "type", kind).returncode == 0:
                    break
            else:
                raise RuntimeError(f"cannot create the Service VIP interface {self.vip_link}")
            run_quiet("ip", "link", "set", self.vip_link, "up", check=True)

    def down(self) -> None:
        for link in (self.vip_link, self.bridge):
            run_quiet("ip", "link", "delete", link)
            self.record.discard("links", link)

    def allocate_ip(self) -> str:
        """Round-robin over .2-.254, so a just-freed address (and its ARP entries) rests a while."""
        for _candidate in range(253):
            octet = self._next
            self._next = octet + 1 if octet < 254 else 2
            address = f"{self.pod_prefix}{octet}"
            if address not in self._pod_ips:
                self._pod_ips.add(address)
                return address
        raise RuntimeError("the node's pod range is full (253 pods)")

    def add_pod(self, netns: str, address: str) -> str:
        """Create the pod's netns with eth0 (``address``/24, default route via the bridge) and lo."""
        octet = address.rsplit(".", 1)[1]
        host_end, pod_end = f"{self.bridge}v{octet}", f"{self.bridge}p{octet}"
        self.record.add("netns", netns)
        self.record.add("links", host_end)
        run_quiet("ip", "link", "delete", host_end)
        for command in (
            ("ip", "netns", "add", netns),
            ("ip", "link", "add", host_end, "type", "veth", "peer", "name", pod_end),
            ("ip", "link", "set", pod_end, "netns", netns),
            ("ip", "link", "set", host_end, "master", self.bridge, "up"),
            ("ip", "-n", netns, "link", "set", pod_end, "name", "eth0"),
            ("ip", "-n", netns, "addr", "add", address + "/24", "dev", "eth0"),
            ("ip", "-n", netns, "link", "set", "eth0", "up"),
            ("ip", "-n", netns, "link", "set", "lo", "up"),
            ("ip", "-n", netns, "route", "add", "default", "via", self.gateway),
        ):
            run_quiet(*command, check=True)
        return host_end

    def remove_pod(self, netns: str, address: Optional[str], host_end: Optional[str]) -> None:
        run_quiet("ip", "netns", "delete", netns)
        self.record.discard("netns", netns)
        if host_end:
            run_quiet("ip", "link", "delete", host_end)
            self.record.discard("links", host_end)
        if address:
            run_quiet("ip", "neigh", "flush", "to", address, "dev", self.bridge)
            self._pod_ips.discard(address)

    def add_vip(self, vip: str) -> None:
        run_quiet("ip", "addr", "replace", vip + "/32", "dev", self.vip_link, check=True)

    def remove_vip(self, vip: str) -> None:
        run_quiet("ip", "addr", "delete", vip + "/32", "dev", self.vip_link)


# ---- services -----------------------------------------------------------------------------------
@dataclass
class ServicePort:
    namespace: str
    service: str
    selector: Dict[str, str]
    port: int
    target: Any  # a number or a container port's name
    name: str = ""  # the port's name (EndpointSlice ports are matched by it)


class ServiceProxy:
    """kube-proxy's userspace mode: a VIP per Service, a TCP listener per port, one ready endpoint per
    connection (round robin). A Service with a selector leads to its ready pods; one without a selector to the
    ready endpoints of the EndpointSlices labelled kubernetes.io/service-name with its name (as kube-proxy: the
    slice's port whose name is the Service port's). No ready endpoint, or it refuses: the connection is closed."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.vips: Dict[Tuple[str, str], str] = {}
        self.ports: Dict[Tuple[str, str], Dict[str, int]] = {}
        self.listeners: Dict[Tuple[str, int], Tuple[asyncio.AbstractServer, ServicePort]] = {}
        self._round_robin = 0
        self._connections: set = set()
        self.slices: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}

    def _allocate_vip(self) -> str:
        used = set(self.vips.values())
        for octet in range(10, 255):
            vip = f"{self.node.network.vip_prefix}{octet}"
            if vip not in used:
                return vip
        raise RuntimeError("the node's Service range is full")

    async def update(self, services: List[Dict[str, Any]], slices: Optional[List[Dict[str, Any]]] = None) -> bool:
        """Follow the Services and EndpointSlices; True when the VIP table changed (hosts files and services.json)."""
        before = self.table()
        self.slices = {}
        for item in slices or []:
            owner = ((item.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/service-name")
            if owner:
                self.slices.setdefault((item["metadata"]["namespace"], owner), []).append(item)
        wanted: Dict[Tuple[str, int], ServicePort] = {}
        present = set()
        for svc in services:
            spec = svc.get("spec") or {}
            if spec.get("clusterIP") == "None" or spec.get("type") == "ExternalName":
                continue
            key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
            present.add(key)
            if key not in self.vips:
                self.vips[key] = self._allocate_vip()
                self.node.network.add_vip(self.vips[key])
            ports = {}
            for port in spec.get("ports") or []:
                if (port.get("protocol") or "TCP") != "TCP":
                    continue
                number = int(port["port"])
                ports[str(port.get("name") or number)] = number
                target = port.get("targetPort", number)
                wanted[(self.vips[key], number)] = ServicePort(
                    key[0], key[1], spec.get("selector") or {}, number, target, str(port.get("name") or "")
                )
            self.ports[key] = ports
        for key in [k for k in self.vips if k not in present]:
            self.node.network.remove_vip(self.vips.pop(key))
            self.ports.pop(key, None)
        for address in [a for a in self.listeners if a not in wanted]:
            server, _port = self.listeners.pop(address)
            server.close()
        for address, service_port in wanted.items():
            if address in self.listeners:
                self.listeners[address] = (self.listeners[address][0], service_port)
                continue
            try:
                server = await asyncio.start_server(
                    lambda r, w, a=address: self._handle(a, r, w), host=address[0], port=address[1], reuse_address=True
                )
            except OSError as exc:
                self.node.log(
                    f"service {service_port.namespace}/{service_port.service}: cannot listen on {address}: {exc}"
                )
                continue
            self.listeners[address] = (server, service_port)
        return self.table() != before

    def table(self) -> Dict[str, Dict[str, Any]]:
        return {
            f"{ns}/{name}": {"ip": vip, "ports": self.ports.get((ns, name), {})}
            for (ns, name), vip in self.vips.items()
        }

    def endpoints(self, service_port: ServicePort) -> List[Tuple[str, int]]:
        """Ready, not terminating pods of the Service's namespace matching its selector; without a selector, the
        ready addresses of its EndpointSlices, at the slice's port of the same name."""
        found = []
        if not service_port.selector:
            for item in self.slices.get((service_port.namespace, service_port.service), []):
                ports = [p for p in item.get("ports") or [] if str(p.get("name") or "") == service_port.name]
                if not ports or ports[0].get("port") is None or (ports[0].get("protocol") or "TCP") != "TCP":
                    continue
                for entry in item.get("endpoints") or []:
                    if (entry.get("conditions") or {}).get("ready") is False:
                        continue
                    found.extend((address, int(ports[0]["port"])) for address in entry.get("addresses") or [])
            return sorted(found)
        for runtime in self.node.runtimes.values():
            if runtime.namespace != service_port.namespace or runtime.terminating or not runtime.ip:
                continue
            if not runtime.ready() or not labels_match(service_port.selector, runtime.labels):
                continue
            port = runtime.resolve_port(service_port.target)
            if port is not None:
                found.append((runtime.ip, port))
        return sorted(found)

    async def _handle(self, address: Tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            _server, service_port = self.listeners.get(address, (None, None))
            targets = self.endpoints(service_port) if service_port else []
            if not targets:
                return
            self._round_robin += 1
            host, port = targets[self._round_robin % len(targets)]
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
            except (OSError, asyncio.TimeoutError):
                return
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()
            self._connections.discard(task)

    async def close(self) -> None:
        for server, _port in self.listeners.values():
            server.close()
        for task in list(self._connections):
            task.cancel()
        self.listeners.clear()
        for vip in self.vips.values():
            self.node.network.remove_vip(vip)
        self.vips.clear()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        writer.close()


# ---- pods: volumes, env, containers, probes ---------------------------------------------------------
class ConfigError(Exception):
    """Something a container needs is missing: it waits (reason, message), as the kubelet retries."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class PodFailure(Exception):
    """The pod cannot run on this node at all (an unsupported volume): the pod fails."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def _decoded(obj: Dict[str, Any], secret: bool) -> Dict[str, bytes]:
    """A ConfigMap's data+binaryData or a Secret's data, as bytes by key."""
    if secret:
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    values = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    values.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return values


class Probe:
    """One probe of a container: its timing, counters and the check in flight."""

    def __init__(self, kind: str, spec: Dict[str, Any], started: float) -> None:
        self.kind = kind
        self.spec = spec
        self.period = max(1, int(spec.get("periodSeconds", 10)))
        self.timeout = max(1, int(spec.get("timeoutSeconds", 1)))
        self.success_threshold = max(1, int(spec.get("successThreshold", 1)))
        self.failure_threshold = max(1, int(spec.get("failureThreshold", 3)))
        self.next_due = started + int(spec.get("initialDelaySeconds", 0))
        self.successes = 0
        self.failures = 0
        self.last_message = ""
        self.task: Optional[asyncio.Task] = None

    def due(self, now: float) -> bool:
        return self.task is None and now >= self.next_due

    def launch(self, check: Any, now: float) -> None:
        self.task = asyncio.get_running_loop().create_task(check)
        self.next_due = now + self.period

    def collect(self) -> Optional[bool]:
        """The outcome of the finished check (counters updated), None while none finished."""
        if self.task is None or not self.task.done():
            return None
        task, self.task = self.task, None
        try:
            ok, self.last_message = task.result()
        except Exception as exc:  # a probe's own error is a failed probe
            ok, self.last_message = False, repr(exc)
        if ok:
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.successes, self.failures = 0, self.failures + 1
        return ok

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None


class Container:
    """One container of a pod: its process, restarts, probes and status, like the kubelet's."""

    def __init__(self, pod: PodRuntime, spec: Dict[str, Any], init: bool, previous: Dict[str, Any]) -> None:
        self.pod = pod
        self.spec = spec
        self.name = spec["name"]
        self.init = init
        self.proc: Optional[subprocess.Popen] = None
        self.state: Dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Dict[str, Any] = previous.get("lastState") or {}
        self.restart_count = int(previous.get("restartCount") or 0)
        self.next_start = 0.0
        self.crashes = 0
        self.pulls = 0
        self.pulled_at = 0.0
        self.started = False
        self.ready = False
        self.done = False
        self.exit_code: Optional[int] = None
        self.started_at = 0.0
        self.kill_reason: Optional[str] = None
        self.kill_deadline: Optional[float] = None
        self.probes: Dict[str, Probe] = {}
        self.pre_stop: Optional[asyncio.Task] = None
        self.env: Dict[str, str] = {}

    # -- lifecycle --
    def tick(self, now: float) -> None:
        if self.proc is not None:
            self._watch(now)
        elif not self.done and now >= self.next_start:
            self._try_start(now)
        elif self.state.get("waiting", {}).get("reason") == "ErrImagePull" and now >= self.pulled_at + 1:
            self.state = {
                "waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{self.image}"'}
            }

    @property
    def image(self) -> str:
        return self.spec.get("image") or ""

    def _try_start(self, now: float) -> None:
        image = self.pod.node.images.resolve(self.image)
        if image is None:
            self.pulls += 1
            self.pulled_at = now
            self.next_start = now + backoff_delay(self.pulls)
            message = (
                f'Failed to pull image "{self.image}": the test node has no image mapping matching it '
                "(see its --images file)"
            )
            self._wait("ErrImagePull", message)
            return
        try:
            spec_env = self.pod.container_env(self.spec)
            command = self.pod.container_command(self.spec, image, spec_env)
            mounts = self.pod.container_mounts(self.spec)
        except ConfigError as exc:
            self._wait(exc.reason, exc.message)
            self.next_start = now + 1
            return
        self.env = {"PATH": ":".join([*image.path, IMAGE_DEFAULT_PATH]), "HOME": "/root"}
        self.env.update(image.env)
        self.env["HOSTNAME"] = self.pod.hostname
        self.env.update(spec_env)
        self._spawn(command, mounts, now)

    def _wait(self, reason: str, message: str) -> None:
        if self.state.get("waiting", {}).get("message") != message:
            self.pod.node.log(f"container {self.name} of pod {self.pod.key} waits: {reason}: {message}")
        self.state = {"waiting": {"reason": reason, "message": message}}

    def _spawn(self, command: List[str], mounts: List[Dict[str, Any]], now: float) -> None:
        pod = self.pod
        spec_file = pod.dir / f"{self.name}.json"
        error_file = pod.dir / f"{self.name}.err"
        error_file.unlink(missing_ok=True)
        working_dir = self.spec.get("workingDir") or ""
        if working_dir and not covered(working_dir, [m["target"] for m in mounts]):
            pod.node.make_host_path(working_dir, directory=True)
        spec = {
            "hostname": pod.hostname,
            "mounts": mounts,
            "workingDir": working_dir,
            "command": command,
            "env": self.env,
            "errorFile": str(error_file),
        }
        write_json_atomic(spec_file, spec)
        pod.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(pod.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", pod.netns, sys.executable, "-I", NODE_PY, "exec", str(spec_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env={"PATH": HOST_PATH},
            )
        pod.node.record.add("sessions", [self.proc.pid, proc_start_time(self.proc.pid)])
        self.started_at = now
        self.state = {"running": {"startedAt": now_iso()}}
        self.kill_reason = self.kill_deadline = None
        self.exit_code = None
        kinds = {"startup": "startupProbe", "liveness": "livenessProbe", "readiness": "readinessProbe"}
        self.probes = {kind: Probe(kind, self.spec[key], now) for kind, key in kinds.items() if self.spec.get(key)}
        self.started = "startup" not in self.probes
        self.ready = False
        pod.node.log(f"started container {self.name} of pod {pod.key} (pid {self.proc.pid}): {' '.join(command)}")

    def _watch(self, now: float) -> None:
        code = self.proc.poll()
        if code is None:
            if self.kill_deadline is not None and now >= self.kill_deadline:
                self.pod.node.log(f"killing container {self.name} of pod {self.pod.key} (SIGKILL)")
                if self.pre_stop is not None:
                    self.pre_stop.cancel()
                    self.pre_stop = None
                signal_session(self.proc.pid, signal.SIGKILL)
                self.kill_deadline = None
            elif self.kill_reason is not None:
                self._after_pre_stop()
            elif not self.pod.terminating:
                self._probe(now)
            return
        self._exited(code, now)

    def _exited(self, code: int, now: float) -> None:
        pid = self.proc.pid
        # The container's other processes go with it, as with PID 1 of a container's pid namespace.
        signal_session(pid, signal.SIGKILL)
        self.pod.node.forget_session(pid)
        self.proc = None
        for probe in self.probes.values():
            probe.cancel()
        if self.pre_stop is not None:
            self.pre_stop.cancel()
            self.pre_stop = None
        self.ready = self.started = False
        self.exit_code = code if code >= 0 else 128 - code
        terminated = {
            "exitCode": self.exit_code,
            "reason": "Completed" if self.exit_code == 0 else "Error",
            "startedAt": self.state.get("running", {}).get("startedAt", now_iso()),
            "finishedAt": now_iso(),
            "containerID": f"llmops-test-node://{pid}",
        }
        error_file = self.pod.dir / f"{self.name}.err"
        if error_file.exists() and error_file.stat().st_size:
            terminated.update(reason="StartError", message=error_file.read_text().strip())
        self.pod.node.log(
            f"container {self.name} of pod {self.pod.key} exited with code {self.exit_code} ({terminated['reason']})"
        )
        policy = self.pod.restart_policy
        restart = not self.pod.terminating and (
            (policy == "Always" and not self.init) or (policy != "Never" and self.exit_code != 0)
        )
        if not restart:
            self.state = {"terminated": terminated}
            self.done = True
            return
        self.last_state = {"terminated": terminated}
        self.restart_count += 1
        if now - self.started_at > 60:
            self.crashes = 0
        self.crashes += 1
        delay = backoff_delay(self.crashes)
        self.next_start = now + delay
        message = (
            f"back-off {int(delay)}s restarting failed container={self.name} "
            f"pod={self.pod.name}_{self.pod.namespace}({self.pod.uid})"
        )
        self.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}

    def kill(self, reason: str, grace: float, now: float) -> None:
        """Stop the container as the kubelet does: its preStop hook first (if any), then SIGTERM, and
        SIGKILL once ``grace`` seconds (the hook included) have passed: a stopped process never
        handles SIGTERM."""
        if self.proc is None or self.kill_reason is not None:
            return
        self.kill_reason = reason
        self.ready = False
        for probe in self.probes.values():
            probe.cancel()
        self.kill_deadline = now + grace
        hook = (self.spec.get("lifecycle") or {}).get("preStop")
        if hook:
            self.pod.node.log(f"running the preStop hook of container {self.name} of pod {self.pod.key}")
            self.pre_stop = asyncio.get_running_loop().create_task(self.pod.run_hook(self, hook))
        else:
            signal_session(self.proc.pid, signal.SIGTERM)

    def _after_pre_stop(self) -> None:
        """SIGTERM once the preStop hook has finished (failed or not, as the kubelet does)."""
        if self.pre_stop is None or not self.pre_stop.done():
            return
        task, self.pre_stop = self.pre_stop, None
        try:
            ok, message = task.result()
        except Exception as exc:  # a hook's own error is a failed hook
            ok, message = False, repr(exc)
        if not ok:
            self.pod.node.log(f"preStop hook of container {self.name} of pod {self.pod.key} failed: {message}")
        signal_session(self.proc.pid, signal.SIGTERM)

    # -- probes --
    def _probe(self, now: float) -> None:
        for kind in ("startup", "liveness", "readiness"):
            probe = self.probes.get(kind)
            if probe is None:
                continue
            outcome = probe.collect()
            if outcome is not None:
                self._judge(probe, outcome, now)
            if self.kill_reason is not None:
                return
            wanted = not self.started if kind == "startup" else self.started
            if wanted and probe.due(now):
                probe.launch(self.pod.run_probe(self, probe), now)
        if "readiness" not in self.probes:
            self.ready = self.started

    def _judge(self, probe: Probe, ok: bool, now: float) -> None:
        where = f"container {self.name} of pod {self.pod.key}"
        if probe.kind == "readiness":
            if ok and probe.successes >= probe.success_threshold and not self.ready:
                self.ready = True
                self.pod.node.log(f"{where} is ready")
            elif not ok and probe.failures >= probe.failure_threshold and self.ready:
                self.ready = False
                self.pod.node.log(f"{where} is not ready: {probe.last_message}")
            return
        if probe.kind == "startup" and ok:
            self.started = True
            self.pod.node.log(f"{where} passed its startup probe")
            return
        if not ok and probe.failures >= probe.failure_threshold:
            action = "restarting" if self.pod.restart_policy != "Never" else "killing"
            grace = probe.spec.get("terminationGracePeriodSeconds", self.pod.grace_period)
            self.pod.node.log(
                f"{probe.kind} probe failed {probe.failures} times: {action} container {self.name} "
                f"of pod {self.pod.key} ({probe.last_message})"
            )
            self.kill(f"{probe.kind} probe failed", float(grace), now)

    # -- status --
    def status(self) -> Dict[str, Any]:
        status: Dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready and self.proc is not None,
            "started": self.started and self.proc is not None,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.proc is not None:
            status["containerID"] = f"llmops-test-node://{self.proc.pid}"
        elif "terminated" in self.state:
            status["containerID"] = self.state["terminated"]["containerID"]
        return status


class PodRuntime:
    """A pod on this node: its sandbox (netns, hosts file, volumes) and containers, phase and status."""

    def __init__(self, node: Node, pod: Dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.node = node
        self.pod = pod
        self.uid, self.namespace, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.key = f"{self.namespace}/{self.name}"
        self.labels = dict(meta.get("labels") or {})
        self.spec = pod.get("spec") or {}
        self.owner_uid = (controller_ref(pod) or {}).get("uid")
        self.restart_policy = self.spec.get("restartPolicy") or "Always"
        self.grace_period = float(self.spec.get("terminationGracePeriodSeconds", 30))
        self.hostname = self.spec.get("hostname") or self.name
        self.netns = f"{node.prefix}-{self.uid[:8]}"
        self.dir = node.state_dir / "pods" / self.uid
        self.log_path = node.pod_log_dir / self.namespace / f"{self.name}.log"
        self.etc_dir = Path("/etc/netns") / self.netns
        self.ip: Optional[str] = None
        self.host_end: Optional[str] = None
        self.volumes: Optional[Dict[str, Tuple[str, bool]]] = None
        self.tmpfs: List[str] = []
        self.waiting: Optional[Tuple[str, str]] = None
        self.failure: Optional[Tuple[str, str]] = None
        self.start_time = (pod.get("status") or {}).get("startTime") or now_iso()
        self.terminating = False
        self.finished = False
        self.gone = False
        old = {s["name"]: s for s in (pod.get("status") or {}).get("containerStatuses") or []}
        old_init = {s["name"]: s for s in (pod.get("status") or {}).get("initContainerStatuses") or []}
        self.init_containers = [
            Container(self, c, True, old_init.get(c["name"], {})) for c in self.spec.get("initContainers") or []
        ]
        self.containers = [Container(self, c, False, old.get(c["name"], {})) for c in self.spec.get("containers") or []]
        self._condition_times: Dict[str, Tuple[str, str]] = {}

    # -- sandbox --
    def _ensure_sandbox(self) -> None:
        if self.ip is not None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        address = self.node.network.allocate_ip()
        try:
            self.host_end = self.node.network.add_pod(self.netns, address)
        except RuntimeError:
            self.node.network.remove_pod(self.netns, address, f"{self.node.network.bridge}v{address.rsplit('.', 1)[1]}")
            raise
        self.ip = address
        self.node.ensure_etc_netns()
        self.node.record.add("etc_netns", str(self.etc_dir))
        self.etc_dir.mkdir(parents=True, exist_ok=True)
        self.write_hosts()
        (self.etc_dir / "resolv.conf").write_text(
            "# no DNS server on the llmops test node: names resolve through /etc/hosts only\n"
            "nameserver 127.0.0.1\noptions ndots:0 timeout:1 attempts:1\n"
        )
        if Path("/etc/hostname").exists():
            (self.etc_dir / "hostname").write_text(self.hostname + "\n")
        self.node.log(f"pod {self.key} got sandbox {self.netns} with IP {address}")

    def write_hosts(self) -> None:
        if self.ip is None or not self.etc_dir.is_dir():
            return
        names = [self.hostname]
        if self.spec.get("subdomain"):
            sub = f"{self.hostname}.{self.spec['subdomain']}.{self.namespace}.svc"
            names[:0] = [f"{sub}.cluster.local", sub]
        lines = [
            "# written by the llmops test node",
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            f"{self.ip}\t{' '.join(names)}",
        ]
        for (ns, name), vip in sorted(self.node.proxy.vips.items()):
            fqdn = [f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
            lines.append(vip + "\t" + " ".join(([name] if ns == self.namespace else []) + fqdn))
        write_in_place(self.etc_dir / "hosts", "\n".join(lines) + "\n")

    def _ensure_volumes(self, snap: Snapshot) -> None:
        if self.volumes is not None:
            return
        volumes = {}
        for volume in self.spec.get("volumes") or []:
            volumes[volume["name"]] = self._volume(volume, snap)
        self.volumes = volumes

    def _volume(self, volume: Dict[str, Any], snap: Snapshot) -> Tuple[str, bool]:
        """Prepare one volume: (host path, read-only)."""
        name = volume["name"]
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if (self.namespace, claim) not in snap.pvcs:
                raise ConfigError(
                    "FailedMount",
                    f'Unable to attach or mount volumes: volume "{name}": persistentvolumeclaim "{claim}" not found',
                )
            self.node.bind_claim(snap.pvcs[(self.namespace, claim)])
            path = self.node.state_dir / "pvc" / self.namespace / claim
            path.mkdir(parents=True, exist_ok=True)
            return str(path), bool(volume["persistentVolumeClaim"].get("readOnly"))
        path = self.dir / "volumes" / name
        if "emptyDir" in volume:
            path.mkdir(parents=True, exist_ok=True)
            if (volume["emptyDir"] or {}).get("medium") == "Memory" and str(path) not in self.tmpfs:
                self.node.record.add("mounts", str(path))
                run_quiet("mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", str(path), check=True)
                self.tmpfs.append(str(path))
            return str(path), False
        for kind, secret in (("configMap", False), ("secret", True)):
            if kind in volume:
                self._write_keys(volume[kind], path, secret, snap)
                return str(path), True
        kinds = [k for k in volume if k != "name"]
        raise PodFailure(
            "UnsupportedVolume",
            f'volume "{name}" is of a kind the llmops test node does not emulate ({", ".join(kinds)}); '
            "it emulates persistentVolumeClaim, configMap, secret and emptyDir",
        )

    def _write_keys(self, source: Dict[str, Any], path: Path, secret: bool, snap: Snapshot) -> None:
        """A configMap or secret volume: one file per key (or per ``items`` entry)."""
        ref = source.get("secretName") if secret else source.get("name")
        what = "secret" if secret else "configmap"
        obj = (snap.secrets if secret else snap.configmaps).get((self.namespace, ref))
        if obj is None and not source.get("optional"):
            raise ConfigError("FailedMount", f'MountVolume.SetUp failed for volume: {what} "{ref}" not found')
        values = _decoded(obj, secret) if obj else {}
        default_mode = int(source.get("defaultMode", 0o400 if secret else 0o644))
        items = source.get("items") or [{"key": k, "path": k} for k in sorted(values)]
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        for item in items:
            if item["key"] not in values:
                if source.get("optional"):
                    continue
                raise ConfigError("FailedMount", f'MountVolume.SetUp failed: {what} "{ref}" has no key "{item["key"]}"')
            target = path / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(values[item["key"]])
            target.chmod(int(item.get("mode", default_mode)))

    # -- container config --
    def container_env(self, container: Dict[str, Any]) -> Dict[str, str]:
        """The container's environment from its spec (envFrom, then env), with $(VAR) expansion."""
        env: Dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, secret in (("configMapRef", False), ("secretRef", True)):
                if kind in source:
                    values = self._lookup(source[kind], secret, None)
                    env.update({prefix + k: v for k, v in (values or {}).items() if ENV_NAME.match(prefix + k)})
        for var in container.get("env") or []:
            if "valueFrom" in var:
                value = self._value_from(var["name"], var["valueFrom"])
                if value is None:
                    continue
                env[var["name"]] = value
            else:
                env[var["name"]] = expand_vars(str(var.get("value", "")), env)
        return env

    def _lookup(self, ref: Dict[str, Any], secret: bool, key: Optional[str]) -> Any:
        """A ConfigMap's/Secret's values (or one key's); None when optional and missing."""
        what = "secret" if secret else "configmap"
        obj = (self.node.snapshot.secrets if secret else self.node.snapshot.configmaps).get(
            (self.namespace, ref.get("name"))
        )
        if obj is None:
            if ref.get("optional"):
                return None
            raise ConfigError("CreateContainerConfigError", f'{what} "{ref.get("name")}" not found')
        values = {k: v.decode(errors="replace") for k, v in _decoded(obj, secret).items()}
        if key is None:
            return values
        if key not in values:
            if ref.get("optional"):
                return None
            kind = "Secret" if secret else "ConfigMap"
            raise ConfigError(
                "CreateContainerConfigError", f"couldn't find key {key} in {kind} {self.namespace}/{ref.get('name')}"
            )
        return values[key]

    def _value_from(self, name: str, source: Dict[str, Any]) -> Optional[str]:
        if "secretKeyRef" in source:
            return self._lookup(source["secretKeyRef"], True, source["secretKeyRef"].get("key"))
        if "configMapKeyRef" in source:
            return self._lookup(source["configMapKeyRef"], False, source["configMapKeyRef"].get("key"))
        if "fieldRef" in source:
            return self._field(source["fieldRef"].get("fieldPath", ""))
        raise ConfigError(
            "CreateContainerConfigError",
            f"env {name}: {', '.join(source)} is not emulated by the llmops test node "
            "(it emulates secretKeyRef, configMapKeyRef and fieldRef)",
        )

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.node.node_name,
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.podIP": self.ip or "",
            "status.podIPs": self.ip or "",
            "status.hostIP": self.node.network.gateway,
            "status.hostIPs": self.node.network.gateway,
        }
        if path in simple:
            return simple[path]
        match = re.match(r"^metadata\.(labels|annotations)\['([^']+)'\]$", path)
        if match:
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        raise ConfigError("CreateContainerConfigError", f"fieldRef {path!r} is not supported")

    def container_command(self, container: Dict[str, Any], image: Image, env: Dict[str, str]) -> List[str]:
        command = container.get("command") or image.entrypoint or []
        args = container.get("args") if "args" in container else (None if container.get("command") else image.cmd)
        argv = [expand_vars(str(a), env) for a in [*command, *(args or [])]]
        if not argv:
            raise ConfigError(
                "CreateContainerError",
                f'container "{container["name"]}" has no command, and its image mapping has no entrypoint',
            )
        return argv

    def container_mounts(self, container: Dict[str, Any]) -> List[Dict[str, Any]]:
        """The bind mounts for the wrapper, parents first; creates missing mount points on the host."""
        mounts = []
        for mount in sorted(container.get("volumeMounts") or [], key=lambda m: m["mountPath"].rstrip("/").count("/")):
            if mount["name"] not in (self.volumes or {}):
                raise ConfigError(
                    "CreateContainerConfigError", f'volumeMount "{mount["name"]}": no volume of that name'
                )
            source, read_only = self.volumes[mount["name"]]
            if mount.get("subPath"):
                source = os.path.join(source, mount["subPath"])
                if not os.path.exists(source):
                    os.makedirs(source)
            if not covered(mount["mountPath"], [m["target"] for m in mounts]):
                self.node.make_host_path(mount["mountPath"], directory=os.path.isdir(source))
            mounts.append(
                {"source": source, "target": mount["mountPath"], "readOnly": bool(mount.get("readOnly")) or read_only}
            )
        return mounts

    def resolve_port(self, port: Any) -> Optional[int]:
        """A port number, or the number of a named containerPort of this pod."""
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for container in self.containers:
            for entry in container.spec.get("ports") or []:
                if entry.get("name") == port:
                    return int(entry["containerPort"])
        return None

    # -- probes --
    async def run_probe(self, container: Container, probe: Probe) -> Tuple[bool, str]:
        try:
            return await asyncio.wait_for(self._check(container, probe.spec), probe.timeout)
        except asyncio.TimeoutError:
            return False, f"timed out after {probe.timeout}s"
        except OSError as exc:
            return False, str(exc)

    async def run_hook(self, container: Container, hook: Dict[str, Any]) -> Tuple[bool, str]:
        """A lifecycle hook (exec, httpGet or sleep); it may run as long as the grace period allows."""
        if "sleep" in hook:
            await asyncio.sleep(float(hook["sleep"].get("seconds", 0)))
            return True, "slept"
        return await self._check(container, hook)

    async def _check(self, container: Container, spec: Dict[str, Any]) -> Tuple[bool, str]:
        if "httpGet" in spec:
            get = spec["httpGet"]
            port = self.resolve_port(get.get("port"))
            if port is None:
                return False, f"port {get.get('port')!r} not found"
            return await http_check(get.get("host") or self.ip, port, get.get("path") or "/", get)
        if "tcpSocket" in spec:
            port = self.resolve_port(spec["tcpSocket"].get("port"))
            if port is None:
                return False, f"port {spec['tcpSocket'].get('port')!r} not found"
            _reader, writer = await asyncio.open_connection(spec["tcpSocket"].get("host") or self.ip, port)
            writer.close()
            return True, "connected"
        if "exec" in spec:
            return await self._exec_check(container, spec["exec"].get("command") or [])
        return False, f"probe handler {sorted(spec)} is not emulated"

    async def _exec_check(self, container: Container, command: List[str]) -> Tuple[bool, str]:
        """Run the command in the container's namespaces (net, mount, uts) with its environment."""
        if container.proc is None:
            return False, "container is not running"
        argv = ["nsenter", "-t", str(container.proc.pid), "-n", "-m", "-u"]
        if container.spec.get("workingDir"):
            argv.append(f"--wd={container.spec['workingDir']}")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            "--",
            *command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=container.env,
            start_new_session=True,
        )
        try:
            out, _err = await proc.communicate()
        finally:
            if proc.returncode is None:
                signal_session(proc.pid, signal.SIGKILL)
        text = out.decode(errors="replace").strip()[-200:]
        return proc.returncode == 0, f"exec exited {proc.returncode}: {text}"

    # -- lifecycle --
    def tick(self, now: float, snap: Snapshot) -> None:
        if self.gone:
            return
        if self.terminating:
            self._drive_termination(now)
            return
        if self.finished:
            return
        if self.failure is None:
            try:
                self._ensure_sandbox()
                self._ensure_volumes(snap)
                self._wait(None)
            except ConfigError as exc:
                self._wait((exc.reason, exc.message))
            except PodFailure as exc:
                self.failure = (exc.reason, exc.message)
                self.node.log(f"pod {self.key} failed: {exc.message}")
            except (OSError, RuntimeError) as exc:
                self._wait(("ContainerCreating", f"cannot create the pod's sandbox: {exc}"))
        if self.failure is None and self.waiting is None:
            for init in self.init_containers:
                if not (init.done and init.exit_code == 0):
                    init.tick(now)
                    break
            else:
                for container in self.containers:
                    container.tick(now)
        if self.phase() in TERMINAL:
            self.finished = True
            self.node.log(f"pod {self.key} {self.phase().lower()}")
            self.teardown()

    def _wait(self, why: Optional[Tuple[str, str]]) -> None:
        """Set (or clear) the pod-level waiting reason, logging each new one."""
        if why is not None and why != self.waiting:
            self.node.log(f"pod {self.key} waits: {why[0]}: {why[1]}")
        self.waiting = why

    def initialized(self) -> bool:
        return all(c.done and c.exit_code == 0 for c in self.init_containers)

    def ready(self) -> bool:
        return not self.terminating and self.phase() == "Running" and all(c.ready for c in self.containers)

    def alive(self) -> bool:
        return any(c.proc is not None for c in self.init_containers + self.containers)

    def phase(self) -> str:
        """The kubelet's getPhase, for this pod's containers."""
        if self.failure:
            return "Failed"
        if not self.initialized():
            return "Failed" if any(c.done and c.exit_code != 0 for c in self.init_containers) else "Pending"
        waiting = running = 0
        for container in self.containers:
            if container.proc is not None:
                running += 1
            elif not container.done and not container.last_state:
                waiting += 1
        if waiting:
            return "Pending"
        if running:
            return "Running"
        if self.containers and all(c.done for c in self.containers):
            return "Succeeded" if all(c.exit_code == 0 for c in self.containers) else "Failed"
        return "Running"

    def terminate(self, now: float, grace: Optional[float] = None, why: str = "") -> None:
        """Graceful termination: every running container gets its preStop hook, SIGTERM, and SIGKILL
        at the end of the grace period (a container already being killed keeps its own deadline,
        shortened to the pod's)."""
        if self.terminating:
            return
        self.terminating = True
        deadline = now + (self.grace_period if grace is None else grace)
        for container in self.init_containers + self.containers:
            for probe in container.probes.values():
                probe.cancel()
            if container.kill_reason is not None and container.kill_deadline is not None:
                container.kill_deadline = min(container.kill_deadline, deadline)
            container.kill(why or "the pod is deleted", deadline - now, now)
        self.node.log(f"stopping pod {self.key}{': ' + why if why else ''}")

    def _drive_termination(self, now: float) -> None:
        for container in self.init_containers + self.containers:
            if container.proc is not None:
                container._watch(now)
        if not self.alive():
            self.teardown()
            self.gone = True
            self.node.log(f"pod {self.key} stopped")

    def teardown(self) -> None:
        """Remove the sandbox: processes, netns and veth, /etc/netns dir, tmpfs, the pod's files."""
        for container in self.init_containers + self.containers:
            if container.proc is not None:
                signal_session(container.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    container.proc.wait(timeout=5)
                self.node.forget_session(container.proc.pid)
        if self.ip is not None:
            self.node.network.remove_pod(self.netns, self.ip, self.host_end)
        shutil.rmtree(self.etc_dir, ignore_errors=True)
        self.node.record.discard("etc_netns", str(self.etc_dir))
        for mount in self.tmpfs:
            run_quiet("umount", "-l", mount)
            self.node.record.discard("mounts", mount)
        self.tmpfs = []
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- status --
    def status(self) -> Dict[str, Any]:
        phase = self.phase()
        containers_ready = phase == "Running" and all(c.ready for c in self.containers)
        unready = [c.name for c in self.containers if not c.ready]
        done = phase in TERMINAL
        not_ready = (
            ("PodCompleted", "")
            if done
            else ("ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]")
        )
        init_pending = [c.name for c in self.init_containers if not (c.done and c.exit_code == 0)]
        conditions = [
            self._condition("PodReadyToStartContainers", self.ip is not None and not done, ("", "")),
            self._condition(
                "Initialized",
                not init_pending,
                ("ContainersNotInitialized", f"containers with incomplete status: [{' '.join(init_pending)}]"),
            ),
            self._condition("Ready", containers_ready, not_ready),
            self._condition("ContainersReady", containers_ready, not_ready),
            self._condition("PodScheduled", True, ("", "")),
        ]
        status: Dict[str, Any] = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.node.network.gateway,
            "hostIPs": [{"ip": self.node.network.gateway}],
            "startTime": self.start_time,
            "qosClass": "BestEffort",
            "containerStatuses": [self._container_status(c) for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [self._container_status(c) for c in self.init_containers]
        if self.ip:
            status.update(podIP=self.ip, podIPs=[{"ip": self.ip}])
        if self.failure:
            status.update(reason=self.failure[0], message=self.failure[1])
        return status

    def _container_status(self, container: Container) -> Dict[str, Any]:
        status = container.status()
        if self.waiting and container.proc is None and not container.done:
            status["state"] = {"waiting": {"reason": self.waiting[0], "message": self.waiting[1]}}
        return status

    def _condition(self, ctype: str, ok: bool, why: Tuple[str, str]) -> Dict[str, Any]:
        value = "True" if ok else "False"
        if self._condition_times.get(ctype, ("", ""))[0] != value:
            self._condition_times[ctype] = (value, now_iso())
        cond = {
            "type": ctype,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": self._condition_times[ctype][1],
        }
        if not ok and why[0]:
            cond["reason"] = why[0]
            if why[1]:
                cond["message"] = why[1]
        return cond


async def http_check(host: str, port: int, path: str, get: Dict[str, Any]) -> Tuple[bool, str]:
    """An HTTP GET as the kubelet sends it; 200-399 passes."""
    context = None
    if (get.get("scheme") or "HTTP").upper() == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        headers = "".join(f"{h['name']}: {h['value']}\r\n" for h in get.get("httpHeaders") or [])
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\n"
                f"Accept: */*\r\nConnection: close\r\n{headers}\r\n"
            ).encode()
        )
        await writer.drain()
        parts = (await reader.readline()).decode(errors="replace").split()
    finally:
        writer.close()
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return 200 <= code < 400, f"HTTP probe to {host}:{port}{path} answered {code or 'nothing'}"


# ---- controllers --------------------------------------------------------------------------------
@dataclass
class JobMemory:
    failed_seen: int = 0
    failed_at: float = 0.0


@dataclass
class RolloutMemory:
    generation: int = 0
    progress: Tuple = ()
    progressed_at: float = field(default_factory=time.monotonic)


def new_pod(owner: Dict[str, Any], name: str, labels: Dict[str, str], node_name: str) -> Dict[str, Any]:
    """A pod from an owner's template, as its controller creates it."""
    meta, template = owner["metadata"], owner["spec"]["template"]
    spec = copy.deepcopy(template.get("spec") or {})
    spec["nodeName"] = node_name
    if owner["kind"] == "Job":
        spec.setdefault("restartPolicy", "Never")
    pod_meta: Dict[str, Any] = {
        "name": name,
        "generateName": name.rsplit("-", 1)[0] + "-",
        "namespace": meta["namespace"],
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if (template.get("metadata") or {}).get("annotations"):
        pod_meta["annotations"] = dict(template["metadata"]["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec}


class Controllers:
    """The Job and Deployment controllers (and the garbage collector for their pods)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.jobs: Dict[str, JobMemory] = {}
        self.rollouts: Dict[str, RolloutMemory] = {}

    # -- shared --
    def create_pod(self, owner: Dict[str, Any], name: str, labels: Dict[str, str], snap: Snapshot) -> None:
        pod = new_pod(owner, name, labels, self.node.node_name)
        created = self.node.api.create(f"/api/v1/namespaces/{owner['metadata']['namespace']}/pods", pod)
        snap.pods[created["metadata"]["uid"]] = created
        self.node.log(
            f"{owner['kind'].lower()} {owner['metadata']['namespace']}/{owner['metadata']['name']}: created pod {name}"
        )

    def terminating(self, owner_uid: str) -> List[PodRuntime]:
        """Runtimes of an owner whose pod object is gone but whose processes still run."""
        return [r for r in self.node.runtimes.values() if r.owner_uid == owner_uid and r.terminating and r.alive()]

    def collect_garbage(self, snap: Snapshot) -> None:
        """Pods whose controlling Job/Deployment is gone are deleted (propagationPolicy Background)."""
        owners = {o["metadata"]["uid"] for o in snap.jobs + snap.deployments}
        for pod in list(snap.pods.values()):
            ref = controller_ref(pod)
            if ref and ref.get("kind") in MANAGED_OWNERS and ref.get("uid") not in owners and self.node.owns(pod):
                self.node.delete_pod(pod, snap, f"its owner {ref['kind']} {ref.get('name')} is gone")

    # -- Jobs --
    def sync_job(self, job: Dict[str, Any], snap: Snapshot, now: float) -> None:
        """One pass of the Job controller: count the pods, decide (fail, complete or run more), write
        the status. A finished Job only gets its TTL checked."""
        meta, spec = job["metadata"], job.get("spec") or {}
        uid = meta["uid"]
        pods = snap.owned_by(uid)
        active = [p for p in pods if pod_phase(p) not in TERMINAL]
        if condition_true(job, "Complete") or condition_true(job, "Failed"):
            for pod in active:
                self.node.delete_pod(pod, snap, f"job {meta['namespace']}/{meta['name']} has finished")
            self._expire(job)
            return
        status = copy.deepcopy(job.get("status") or {})
        status.setdefault("startTime", now_iso())
        succeeded, failed = self._job_counts(job, pods, now)
        completions = int(spec.get("completions") or 1)
        target = condition(job, "FailureTarget") if condition_true(job, "FailureTarget") else None
        if target is None:
            target = self._failure(job, status["startTime"], failed)
        if target is not None or succeeded >= completions:
            for pod in active:
                self.node.delete_pod(pod, snap, f"job {meta['namespace']}/{meta['name']} is finishing")
            if target is not None:
                failed += len(active)  # the pods a failing Job stops count as failed, as in Kubernetes
            active = []
        lingering = self.terminating(uid)
        if target is not None:
            self._set_job_finished(job, status, "Failed", target, lingering)
        elif succeeded >= completions:
            reached = {"reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"}
            self._set_job_finished(job, status, "Complete", reached, lingering)
        elif not spec.get("suspend") and now >= self.jobs[uid].failed_at + (backoff_delay(failed) if failed else 0):
            wanted = min(int(spec.get("parallelism", 1)), completions - succeeded) - len(active)
            for _replica in range(max(0, wanted)):
                self._create_job_pod(job, snap)
            active = [p for p in snap.owned_by(uid) if pod_phase(p) not in TERMINAL]
        status.update(
            active=len(active),
            succeeded=succeeded,
            failed=failed,
            ready=sum(condition_true(p, "Ready") for p in active),
            terminating=len(lingering),
            uncountedTerminatedPods={},
        )
        for counter in ("active", "succeeded", "failed"):
            if not status[counter]:
                del status[counter]
        self.node.write_status(job, status)

    def _job_counts(self, job: Dict[str, Any], pods: List[Dict[str, Any]], now: float) -> Tuple[int, int]:
        """Succeeded and failed pods (never fewer than the status already says); with restartPolicy
        OnFailure, container restarts count as failures. Remembers when the last failure was seen."""
        status = job.get("status") or {}
        succeeded = max(sum(pod_phase(p) == "Succeeded" for p in pods), int(status.get("succeeded") or 0))
        failed = sum(pod_phase(p) == "Failed" for p in pods)
        if job["spec"]["template"].get("spec", {}).get("restartPolicy") == "OnFailure":
            statuses = [c for p in pods for c in (p.get("status") or {}).get("containerStatuses") or []]
            failed += sum(int(c.get("restartCount", 0)) for c in statuses)
        failed = max(failed, int(status.get("failed") or 0))
        memory = self.jobs.setdefault(job["metadata"]["uid"], JobMemory())
        if failed > memory.failed_seen:
            memory.failed_seen, memory.failed_at = failed, now
        return succeeded, failed

    def _set_job_finished(
        self, job: Dict[str, Any], status: Dict[str, Any], outcome: str, why: Dict[str, str], lingering: List
    ) -> None:
        """Kubernetes >= 1.31: FailureTarget/SuccessCriteriaMet at once, Failed/Complete only when the
        Job's pods have terminated."""
        conditions = status.setdefault("conditions", [])
        first = "FailureTarget" if outcome == "Failed" else "SuccessCriteriaMet"
        key = f"{job['metadata']['namespace']}/{job['metadata']['name']}"
        if not condition_true(job, first):
            self.node.log(f"job {key} is finishing: {first} ({why['reason']}: {why['message']})")
        set_condition(conditions, first, "True", why["reason"], why["message"])
        if lingering:
            return
        set_condition(conditions, outcome, "True", why["reason"], why["message"])
        if outcome == "Complete":
            status["completionTime"] = now_iso()
            self.node.log(f"job {key} complete")
        else:
            self.node.log(f"job {key} failed: {why['reason']}")

    @staticmethod
    def _failure(job: Dict[str, Any], start_time: str, failed: int) -> Optional[Dict[str, str]]:
        """Why the Job fails now (backoffLimit, activeDeadlineSeconds), or None."""
        spec = job.get("spec") or {}
        if failed > int(spec.get("backoffLimit", 6)):
            return {"reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and time.time() - parse_iso(start_time) >= int(deadline):
            return {"reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}
        return None

    def _create_job_pod(self, job: Dict[str, Any], snap: Snapshot) -> None:
        meta = job["metadata"]
        labels = dict((job["spec"]["template"].get("metadata") or {}).get("labels") or {})
        labels.update(
            {
                "job-name": meta["name"],
                "batch.kubernetes.io/job-name": meta["name"],
                "controller-uid": meta["uid"],
                "batch.kubernetes.io/controller-uid": meta["uid"],
            }
        )
        self.create_pod(job, f"{meta['name']}-{random_suffix()}", labels, snap)

    def _expire(self, job: Dict[str, Any]) -> None:
        """ttlSecondsAfterFinished: delete the finished Job (its pods follow, as garbage)."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        status = job.get("status") or {}
        finished = status.get("completionTime") or (condition(job, "Failed") or {}).get("lastTransitionTime")
        if finished and time.time() >= parse_iso(finished) + int(ttl):
            self.node.api.delete(object_path(job))
            self.node.log(
                f"job {job['metadata']['namespace']}/{job['metadata']['name']} deleted: its TTL after finishing expired"
            )

    # -- Deployments --
    def sync_deployment(self, deploy: Dict[str, Any], snap: Snapshot, now: float) -> None:
        meta, spec = deploy["metadata"], deploy.get("spec") or {}
        uid = meta["uid"]
        replicas = int(spec.get("replicas", 1))
        pod_hash = template_hash(spec.get("template") or {})
        pods = snap.owned_by(uid)
        new = [p for p in pods if p["metadata"].get("labels", {}).get("pod-template-hash") == pod_hash]
        old = [p for p in pods if p not in new]
        lingering = self.terminating(uid)
        strategy = spec.get("strategy") or {}
        surge, unavailable = self._rolling_limits(strategy, replicas)
        if not spec.get("paused"):
            if strategy.get("type") == "Recreate":
                self._recreate(
                    deploy, snap, pod_hash=pod_hash, new=new, old=old, lingering=lingering, replicas=replicas
                )
            else:
                self._roll(
                    deploy,
                    snap,
                    pod_hash=pod_hash,
                    new=new,
                    old=old,
                    lingering=len(lingering),
                    replicas=replicas,
                    surge=surge,
                    unavailable=unavailable,
                )
        pods = snap.owned_by(uid)
        status = self._deployment_status(
            deploy, pods, pod_hash=pod_hash, replicas=replicas, unavailable=unavailable, now=now
        )
        self.node.write_status(deploy, status)

    @staticmethod
    def _rolling_limits(strategy: Dict[str, Any], replicas: int) -> Tuple[int, int]:
        if strategy.get("type") == "Recreate":
            return 0, 0
        rolling = strategy.get("rollingUpdate") or {}
        surge = scaled_value(rolling.get("maxSurge", "25%"), replicas, round_up=True)
        unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        return surge, unavailable

    def _scale_down(self, pods: List[Dict[str, Any]], count: int, snap: Snapshot, why: str) -> None:
        """Delete ``count`` pods: not-ready ones first, then the newest."""
        newest_first = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
        ordered = [p for p in newest_first if not condition_true(p, "Ready")]
        ordered += [p for p in newest_first if condition_true(p, "Ready")]
        for pod in ordered[: max(0, count)]:
            self.node.delete_pod(pod, snap, why)

    def _create_replicas(self, deploy: Dict[str, Any], snap: Snapshot, pod_hash: str, count: int) -> None:
        labels = dict((deploy["spec"]["template"].get("metadata") or {}).get("labels") or {})
        labels["pod-template-hash"] = pod_hash
        for _replica in range(max(0, count)):
            self.create_pod(deploy, f"{deploy['metadata']['name']}-{pod_hash}-{random_suffix()}", labels, snap)

    def _recreate(self, deploy, snap, *, pod_hash, new, old, lingering, replicas) -> None:
        """Recreate: every old pod is stopped (its processes gone) before any new one starts."""
        key = f"{deploy['metadata']['namespace']}/{deploy['metadata']['name']}"
        if old:
            for pod in old:
                self.node.delete_pod(pod, snap, f"deployment {key} recreates its pods")
            return
        if any(r.labels.get("pod-template-hash") != pod_hash for r in lingering):
            return
        if len(new) > replicas:
            self._scale_down(new, len(new) - replicas, snap, f"deployment {key} scaled down")
        else:
            self._create_replicas(deploy, snap, pod_hash, replicas - len(new))

    def _roll(self, deploy, snap, *, pod_hash, new, old, lingering, replicas, surge, unavailable) -> None:
        """RollingUpdate: at most replicas+maxSurge pods (terminating ones included), at least
        replicas-maxUnavailable ready ones."""
        key = f"{deploy['metadata']['namespace']}/{deploy['metadata']['name']}"
        if len(new) > replicas:
            self._scale_down(new, len(new) - replicas, snap, f"deployment {key} scaled down")
            new = [p for p in new if p["metadata"]["uid"] in snap.pods]
        room = min(replicas - len(new), replicas + surge - len(new) - len(old) - lingering)
        self._create_replicas(deploy, snap, pod_hash, room)
        if not old:
            return
        ready = sum(condition_true(p, "Ready") for p in new + old)
        unready_old = [p for p in old if not condition_true(p, "Ready")]
        removable = len(unready_old) + max(0, ready - (replicas - unavailable))
        if new and len(new) >= replicas and all(condition_true(p, "Ready") for p in new):
            removable = len(old)
        self._scale_down(old, min(len(old), removable), snap, f"deployment {key} rolls to {pod_hash}")
        if removable:
            self.node.log(f"deployment {key} rolled {min(len(old), removable)} pod(s) to template {pod_hash}")

    def _deployment_status(self, deploy, pods, *, pod_hash, replicas, unavailable, now) -> Dict[str, Any]:
        meta, spec = deploy["metadata"], deploy.get("spec") or {}
        status = copy.deepcopy(deploy.get("status") or {})
        conditions = status.setdefault("conditions", [])
        min_ready = int(spec.get("minReadySeconds", 0))
        new = [p for p in pods if p["metadata"].get("labels", {}).get("pod-template-hash") == pod_hash]
        ready = [p for p in pods if condition_true(p, "Ready")]
        available = [
            p for p in ready if time.time() >= parse_iso(condition(p, "Ready")["lastTransitionTime"]) + min_ready
        ]
        available_new = [p for p in new if p in available]
        counts = {
            "replicas": len(pods),
            "updatedReplicas": len(new),
            "readyReplicas": len(ready),
            "availableReplicas": len(available),
            "unavailableReplicas": max(0, len(pods) - len(available)),
        }
        status.update(observedGeneration=meta.get("generation", 1), **counts)
        for name, value in counts.items():
            if not value:
                del status[name]
        rs_name = f"{meta['name']}-{pod_hash}"
        if len(available) >= replicas - unavailable:
            set_deploy_condition(
                conditions, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
            )
        else:
            set_deploy_condition(
                conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        memory = self.rollouts.setdefault(meta["uid"], RolloutMemory())
        progress = (meta.get("generation"), len(new), len(available_new), len(pods))
        if progress != memory.progress:
            memory.progress, memory.progressed_at = progress, now
        complete = len(new) == replicas == len(pods) and len(available_new) == replicas
        deadline = int(spec.get("progressDeadlineSeconds", 600))
        if complete:
            set_deploy_condition(
                conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif now - memory.progressed_at > deadline:
            set_deploy_condition(
                conditions,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        else:
            set_deploy_condition(
                conditions, "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.'
            )
        return status


def set_deploy_condition(conditions: List[Dict[str, Any]], ctype: str, status: str, reason: str, message: str) -> None:
    """Deployment conditions carry lastUpdateTime instead of lastProbeTime."""
    for cond in conditions:
        if cond["type"] == ctype:
            break
    else:
        stamp = now_iso()
        conditions.append({"type": ctype, "status": status, "lastUpdateTime": stamp, "lastTransitionTime": stamp})
    set_condition(conditions, ctype, status, reason, message)


# ---- the node -----------------------------------------------------------------------------------
class Node:
    """The polling loop: read the API, collect garbage, run pods, control Jobs and Deployments, proxy
    Services, write statuses. One instance per process; its host objects are named ``lk<4 hex>``."""

    def __init__(
        self,
        api: Api,
        state_dir: Path,
        images: ImageMap,
        *,
        pod_log_dir: Path,
        node_name: str = NODE_NAME,
        shutdown_grace: float = 10.0,
    ) -> None:
        self.api = api
        self.state_dir = Path(state_dir).resolve()
        self.images = images
        self.pod_log_dir = Path(pod_log_dir).resolve()
        self.node_name = node_name
        self.shutdown_grace = shutdown_grace
        self.prefix = self._free_prefix()
        self.record = HostRecord(self.state_dir / "node.json", {"pid": os.getpid(), "prefix": self.prefix})
        self.network = Network(self.prefix, self.record)
        self.proxy = ServiceProxy(self)
        self.controllers = Controllers(self)
        self.runtimes: Dict[str, PodRuntime] = {}
        self.snapshot = Snapshot({}, [], [], [], [], {}, {}, {})
        self.stop = asyncio.Event()
        self._log = open(self.state_dir / "node.log", "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._api_down = False

    @staticmethod
    def _free_prefix() -> str:
        """``lk<4 hex>`` that no link or netns on the host uses yet."""
        names = run_quiet("ip", "-o", "link", "show").stdout
        if os.path.isdir("/run/netns"):
            names += "\n" + "\n".join(os.listdir("/run/netns"))
        taken = set(re.findall(r"\blk([0-9a-f]{4})", names))
        return "lk" + random.choice([f"{i:04x}" for i in range(1, 0x10000) if f"{i:04x}" not in taken])

    def log(self, message: str) -> None:
        self._log.write(f"{now_iso()} {message}\n")

    # -- host paths --
    def ensure_etc_netns(self) -> None:
        if not Path("/etc/netns").is_dir():
            self.record.add("created", "/etc/netns")
            Path("/etc/netns").mkdir(exist_ok=True)

    def make_host_path(self, path: str, directory: bool) -> None:
        """Create a missing mount point (or working dir) on the host, recording what was created."""
        target = Path(path)
        missing = []
        for parent in [target, *target.parents]:
            if parent.exists() or parent.is_symlink():
                break
            missing.append(parent)
        for created in reversed(missing):
            self.record.add("created", str(created))
            if created == target and not directory:
                created.touch()
            else:
                created.mkdir()

    def forget_session(self, pid: int) -> None:
        for entry in [e for e in self.record.data["sessions"] if e[0] == pid]:
            self.record.discard("sessions", entry)

    # -- API side --
    def owns(self, pod: Dict[str, Any]) -> bool:
        return (pod.get("spec") or {}).get("nodeName") in (None, "", self.node_name)

    def delete_pod(self, pod: Dict[str, Any], snap: Snapshot, why: str) -> None:
        uid = pod["metadata"]["uid"]
        self.api.delete(object_path(pod))
        snap.pods.pop(uid, None)
        runtime = self.runtimes.get(uid)
        if runtime is not None:
            runtime.terminate(time.monotonic(), why=why)
        else:
            self.log(f"deleted pod {pod['metadata']['namespace']}/{pod['metadata']['name']}: {why}")

    def write_status(self, obj: Dict[str, Any], status: Dict[str, Any]) -> None:
        if status != (obj.get("status") or {}) and self.api.put_status(object_path(obj), obj, status):
            obj["status"] = status

    def bind_claim(self, claim: Dict[str, Any]) -> None:
        """A used PVC reads Bound (its storage is a directory of the node)."""
        if (claim.get("status") or {}).get("phase") == "Bound":
            return
        spec = claim.get("spec") or {}
        status = {
            "phase": "Bound",
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")},
        }
        meta = claim["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/persistentvolumeclaims/{meta['name']}"
        with contextlib.suppress(ApiError):
            self.api.put_status(path, claim, status)
        claim["status"] = status

    def register(self) -> None:
        """The Node object: Ready, every label a GPU node of the roles might be selected by."""
        labels = {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "llmops-test-node",
            "nvidia.com/gpu": "true",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.count": "8",
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        }
        path = f"/api/v1/nodes/{self.node_name}"
        node = self.api.get(path)
        if node is None:
            node = self.api.create(
                "/api/v1/nodes",
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": self.node_name, "labels": labels},
                    "spec": {},
                },
            )
        else:
            node = self.api.merge_patch(path, {"metadata": {"labels": labels}})
        self.api.put_status(path, node, self._node_status("True", "KubeletReady", "kubelet is posting ready status"))

    def _node_status(self, ready: str, reason: str, message: str) -> Dict[str, Any]:
        stamp = now_iso()
        memory = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
        resources = {"cpu": str(os.cpu_count() or 1), "memory": f"{memory}Ki", "pods": "110", "nvidia.com/gpu": "8"}
        return {
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.network.gateway},
                {"type": "Hostname", "address": self.node_name},
            ],
            "capacity": resources,
            "allocatable": resources,
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "containerRuntimeVersion": "llmops-test-node://1",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "llmops test node",
                "kernelVersion": os.uname().release,
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    # -- the loop --
    async def sync(self) -> None:
        now = time.monotonic()
        try:
            snap = Snapshot.fetch(self.api)
            self._api_down = False
        except (OSError, ApiError) as exc:
            if not self._api_down:
                self.log(f"the API does not answer ({exc}); pods keep running")
            self._api_down = True
            for runtime in self.runtimes.values():
                runtime.tick(now, self.snapshot)
            return
        self.snapshot = snap
        self.controllers.collect_garbage(snap)
        for uid, runtime in list(self.runtimes.items()):
            if uid not in snap.pods and not runtime.terminating and not runtime.finished:
                runtime.terminate(now, why="its pod object was deleted")
            runtime.tick(now, snap)
            pod = snap.pods.get(uid)
            if pod is not None and not runtime.terminating:
                self.write_status(pod, runtime.status())
            if runtime.gone or (runtime.finished and uid not in snap.pods):
                del self.runtimes[uid]
        for job in snap.jobs:
            self._guarded(self.controllers.sync_job, job, snap, now)
        for deploy in snap.deployments:
            self._guarded(self.controllers.sync_deployment, deploy, snap, now)
        for uid, pod in snap.pods.items():
            if uid not in self.runtimes and self.owns(pod) and pod_phase(pod) not in TERMINAL:
                self.runtimes[uid] = PodRuntime(self, pod)
                self.log(f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']} accepted")
        if await self.proxy.update(snap.services, snap.endpointslices):
            write_json_atomic(self.state_dir / "services.json", self.proxy.table())
        for runtime in self.runtimes.values():
            runtime.write_hosts()

    def _guarded(self, step: Callable, obj: Dict[str, Any], snap: Snapshot, now: float) -> None:
        try:
            step(obj, snap, now)
        except ApiError as exc:
            self.log(f"{obj['kind'].lower()} {obj['metadata']['namespace']}/{obj['metadata']['name']}: {exc}")

    async def run(self, ready_file: Optional[Path] = None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        self.log(f"node {self.node_name} starting as {self.prefix} (pid {os.getpid()})")
        try:
            self.record.save()
            self.network.up()
            self.register()
            await self.sync()
            info = {
                "pid": os.getpid(),
                "prefix": self.prefix,
                "bridge": self.network.bridge,
                "vip_link": self.network.vip_link,
                "gateway": self.network.gateway,
                "pod_cidr": self.network.pod_prefix + "0/24",
                "service_cidr": self.network.vip_prefix + "0/24",
                "pod_log_dir": str(self.pod_log_dir),
            }
            write_json_atomic(self.state_dir / "node-info.json", info)
            if ready_file is not None:
                write_json_atomic(ready_file, info)
            self.log(f"node ready: pods in {info['pod_cidr']}, services in {info['service_cidr']}")
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    await self.sync()
                except Exception:  # one bad tick must not take the pods down
                    self.log("sync failed:\n" + traceback.format_exc())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), max(0.05, SYNC_INTERVAL - (time.monotonic() - started)))
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop every pod (SIGTERM, SIGKILL after at most the shutdown grace), remove everything."""
        self.log("node stopping")
        now = time.monotonic()
        for runtime in self.runtimes.values():
            runtime.terminate(now, min(runtime.grace_period, self.shutdown_grace), "the node stops")
        deadline = now + self.shutdown_grace + 5
        while any(r.alive() for r in self.runtimes.values()) and time.monotonic() < deadline:
            for runtime in self.runtimes.values():
                runtime.tick(time.monotonic(), self.snapshot)
            await asyncio.sleep(0.1)
        for runtime in self.runtimes.values():
            runtime.teardown()
        self.runtimes.clear()
        await self.proxy.close()
        self.network.down()
        with contextlib.suppress(OSError, ApiError):
            path = f"/api/v1/nodes/{self.node_name}"
            node = self.api.get(path)
            if node is not None:
                self.api.put_status(
                    path,
                    node,
                    self._node_status("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."),
                )
        cleanup_host(self.record, self.log)
        shutil.rmtree(self.state_dir / "pods", ignore_errors=True)
        (self.state_dir / "services.json").unlink(missing_ok=True)
        self.record.path.unlink(missing_ok=True)
        self.log("node stopped")
        self._log.close()


# ---- the container wrapper (runs inside `ip netns exec`, in the container's own mount namespace) -----
CLONE_NEWUTS = 0x04000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384


def container_exec(spec_file: str) -> None:
    """Set the hostname, bind-mount the volumes, enter workingDir and exec the command with exactly
    the given environment. ``ip netns exec`` already made a private mount namespace.

    Every source is opened before anything is mounted and bound from ``/proc/self/fd/N``: a source
    under another mount's target (a PVC kept under /tmp while the pod mounts an emptyDir on /tmp) would
    otherwise be hidden by that mount."""
    spec = json.loads(Path(spec_file).read_text())
    libc = ctypes.CDLL(None, use_errno=True)
    error_fd = os.open(spec["errorFile"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def fail(message: str) -> None:
        os.write(error_fd, message.encode())
        print(message, file=sys.stderr, flush=True)
        os._exit(128)

    def mount(source: Optional[str], target: str, flags: int) -> None:
        if libc.mount(source.encode() if source else None, target.encode(), None, flags, None) != 0:
            fail(f"failed to mount {source or target} on {target}: {os.strerror(ctypes.get_errno())}")

    if libc.unshare(CLONE_NEWUTS) == 0:
        with contextlib.suppress(OSError):
            socket.sethostname(spec["hostname"][:64])
    sources = []
    for entry in spec["mounts"]:
        try:
            sources.append((os.open(entry["source"], os.O_PATH), os.path.isdir(entry["source"])))
        except OSError as exc:
            fail(f"failed to open the volume source {entry['source']}: {exc.strerror}")
    for entry, (fd, is_dir) in zip(spec["mounts"], sources):
        target = entry["target"]
        if is_dir:
            os.makedirs(target, exist_ok=True)
        elif not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            Path(target).touch()
        mount(f"/proc/self/fd/{fd}", target, MS_BIND | MS_REC)
        if entry["readOnly"]:
            mount(None, target, MS_BIND | MS_REMOUNT | MS_RDONLY)
        os.close(fd)
    try:
        if spec["workingDir"]:
            os.makedirs(spec["workingDir"], exist_ok=True)  # as a runtime does, inside the mounts
        os.chdir(spec["workingDir"] or "/")
    except OSError as exc:
        fail(f"failed to enter workingDir {spec['workingDir']}: {exc.strerror}")
    command = spec["command"]
    try:
        os.execvpe(command[0], command, spec["env"])  # noqa: S606  (exec is the point)
    except OSError as exc:
        why = "executable file not found in $PATH" if isinstance(exc, FileNotFoundError) else exc.strerror
        fail(f'exec: "{command[0]}": {why}')


# ---- running it ---------------------------------------------------------------------------------
def default_pod_log_dir(kubeconfig: Path) -> Path:
    """The emulator's default: ``<kubeconfig's directory>/pod-logs``."""
    return Path(kubeconfig).resolve().parent / "pod-logs"


def cleanup(state_dir: Path) -> bool:
    """Remove what a node that did not stop cleanly left behind (per its node.json). True if any."""
    record = HostRecord.read(Path(state_dir) / "node.json")
    if record is None:
        return False
    pid = record.data.get("pid")
    if pid and pid != os.getpid() and Path(f"/proc/{pid}").exists():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if NODE_PY.encode() in cmdline and b"\0run\0" in cmdline:
            raise RuntimeError(f"a node (pid {pid}) still runs with the state dir {state_dir}")
    cleanup_host(record, lambda message: None)
    shutil.rmtree(Path(state_dir) / "pods", ignore_errors=True)
    (Path(state_dir) / "services.json").unlink(missing_ok=True)
    record.path.unlink(missing_ok=True)
    return True


def run_node(
    kubeconfig: Path,
    state_dir: Path,
    images_file: Path,
    *,
    pod_log_dir: Optional[Path] = None,
    ready_file: Optional[Path] = None,
    node_name: str = NODE_NAME,
) -> None:
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    cleanup(state_dir)
    api = Api(server_url(kubeconfig))
    images = ImageMap.load(images_file)

    async def main() -> None:
        log_dir = pod_log_dir or default_pod_log_dir(kubeconfig)
        node = Node(api, state_dir, images, pod_log_dir=log_dir, node_name=node_name)
        await node.run(ready_file)

    asyncio.run(main())


def start_background(
    kubeconfig: Path,
    state_dir: Path,
    images_file: Path,
    pidfile: Path,
    *,
    pod_log_dir: Optional[Path] = None,
    node_name: str = NODE_NAME,
    timeout: float = 60.0,
) -> Dict[str, Any]:
    """Start a node in its own session; return its info (pid, prefix, bridge, gateway, pod_cidr,
    service_cidr, pod_log_dir) once it runs. Its output goes to ``<state-dir>/node.out``."""
    state_dir, pidfile = Path(state_dir), Path(pidfile)
    state_dir.mkdir(parents=True, exist_ok=True)
    ready = state_dir / "node.ready"
    ready.unlink(missing_ok=True)
    command = [sys.executable, NODE_PY, "run", "--kubeconfig", str(kubeconfig), "--state-dir", str(state_dir)]
    command += ["--images", str(images_file), "--ready-file", str(ready)]
    command += ["--node-name", node_name]
    if pod_log_dir is not None:
        command += ["--pod-log-dir", str(pod_log_dir)]
    with open(state_dir / "node.out", "ab") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    pidfile.write_text(f"{proc.pid}\n")
    pidfile.with_suffix(".state").write_text(str(state_dir.resolve()))
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_background(pidfile)
            raise RuntimeError(
                f"the node did not start (exit {proc.poll()}); output:\n{(state_dir / 'node.out').read_text()[-3000:]}"
            )
        time.sleep(0.05)
    return json.loads(ready.read_text())


def stop_background(pidfile: Path, timeout: float = 60.0) -> bool:
    """SIGTERM the node named in the pidfile and wait; SIGKILL it after ``timeout`` and clean up what
    it left. True if one was running."""
    pidfile = Path(pidfile)
    if not pidfile.exists():
        return False
    pid = int(pidfile.read_text().strip())
    state_file = pidfile.with_suffix(".state")
    running = True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        running = False
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        try:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        if running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    if state_file.exists():
        cleanup(Path(state_file.read_text().strip()))
        state_file.unlink()
    pidfile.unlink(missing_ok=True)
    return running


def running_pod_processes(state_dir: Path) -> List[str]:
    """Command lines of the live processes of the pods of the node running with ``state_dir`` (the
    process sessions in its record; a container's children stay in its session). Empty when no node
    runs there: a node kills every pod process when it stops."""
    record = HostRecord.read(Path(state_dir) / "node.json")
    if record is None:
        return []
    found = []
    for session, _started in record.data["sessions"]:
        for pid in session_members(session):
            with contextlib.suppress(OSError):
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
    return found


def service_address(state_dir: Path, namespace: str, name: str) -> Tuple[str, Dict[str, int]]:
    """A Service's virtual IP on this node and its ports (by port name, or number when unnamed)."""
    table = json.loads((Path(state_dir) / "services.json").read_text())
    entry = table[f"{namespace}/{name}"]
    return entry["ip"], dict(entry["ports"])


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["exec"]:
        container_exec(argv[1])
        return 127
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a node (foreground unless --background)")
    run.add_argument("--kubeconfig", type=Path, required=True)
    run.add_argument("--state-dir", type=Path, required=True)
    run.add_argument("--images", type=Path, required=True, help="JSON list of {match, path, env} image mappings")
    run.add_argument("--pod-log-dir", type=Path, help="default: the kubeconfig's directory/pod-logs (the emulator's)")
    run.add_argument("--node-name", default=NODE_NAME)
    run.add_argument("--pidfile", type=Path, help="with --background: where the pid goes (default STATE_DIR/node.pid)")
    run.add_argument("--background", action="store_true", help="start detached, wait until it runs, exit")
    run.add_argument("--ready-file", type=Path, help=argparse.SUPPRESS)
    stop = sub.add_parser("stop", help="stop a background node")
    stop.add_argument("--pidfile", type=Path, required=True)
    clean = sub.add_parser("cleanup", help="remove what a crashed node left on the host")
    clean.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.background:
            pidfile = args.pidfile or args.state_dir / "node.pid"
            info = start_background(
                args.kubeconfig,
                args.state_dir,
                args.images,
                pidfile,
                pod_log_dir=args.pod_log_dir,
                node_name=args.node_name,
            )
            print(json.dumps({**info, "pidfile": str(pidfile)}))
            return 0
        run_node(
            args.kubeconfig,
            args.state_dir,
            args.images,
            pod_log_dir=args.pod_log_dir,
            ready_file=args.ready_file,
            node_name=args.node_name,
        )
        return 0
    if args.command == "stop":
        print("stopped" if stop_background(args.pidfile) else "not running")
        return 0
    print("cleaned up" if cleanup(args.state_dir) else "nothing to clean up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
