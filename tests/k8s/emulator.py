"""An in-memory Kubernetes API server for tests, built on kmock's KubernetesEmulator.

kmock 0.8 ships the HTTP plumbing (an aiohttp server, request capture, Kubernetes-style error
bodies) and a discovery snapshot of 71 built-in resources. Its object handling, as shipped, cannot
serve kubernetes.core: Namespace paths are mis-parsed (``/api/v1/namespaces/NAME`` reads as
"namespace NAME, no resource"), lists carry no ``kind``/``apiVersion``, PUT is not routed, a
server-side apply of a new object fails, and objects get no ``uid``/``resourceVersion``.

``LlmopsEmulator`` keeps kmock's plumbing and discovery data and replaces the object layer:

* its own path parser (core and group paths, namespaced and cluster-scoped, subresources);
* create (POST), read (GET), list (GET on a collection, ``labelSelector`` honoured), replace (PUT,
  ``resourceVersion`` conflicts), patch (JSON merge, JSON patch, strategic merge for the list keys
  kubernetes.core knows, and server-side apply approximated as "the applied object wins" for a
  single field manager), delete (a Namespace takes its objects with it) and ``dryRun=All``;
* ``uid``, ``resourceVersion`` (bumped only when something changed, as the real server does),
  ``generation`` (bumped when anything outside metadata and status changes), ``creationTimestamp``;
* a ``status`` subresource where discovery declares one: writes to the object keep its status and
  ``PUT/PATCH .../status`` changes only the status, so a test can mark a Job ``Complete``/``Failed``
  or a Deployment available and exercise wait logic both ways (``set_status`` below);
* the pods' ``log`` subresource (``GET /api/v1/namespaces/NS/pods/NAME/log``, ``tailLines`` and
  ``limitBytes`` honoured, ``container``/``previous``/``sinceSeconds`` ignored) served as text from
  ``<pod-log-dir>/NS/NAME.log``, the files tests/k8s/node.py writes (default pod-log dir:
  ``<kubeconfig's directory>/pod-logs``): 404 when the pod does not exist, empty when it has no log;
* the pods' ``portforward`` subresource for the real ``kubectl port-forward`` (1.31+: SPDY/3.1 tunnelled
  through a WebSocket), connecting inside the pod's network namespace on the test node
  (tests/k8s/portforward.py; the plain SPDY/3.1 upgrade of older kubectls is refused with 400);
* CustomResourceDefinitions register their resources in discovery (and report ``Established``), so
  "create the ServiceMonitor only when its CRD exists" can be tested both ways;
* two normalisations the real API server does and that break idempotence when a role gets them
  wrong: resource quantities become strings (``cpu: 4`` reads back as ``"4"``) and a Secret's
  ``stringData`` is folded into base64 ``data``.

What it does NOT do (see docs/kubernetes-testing.md): no controllers (nothing creates ReplicaSets
or Pods; no status unless a test writes one or tests/k8s/node.py runs next to it), no scheduling,
probes, GPUs, PVC binding, admission, defaulting, schema validation (pair it with
tests/k8s/validate.py), RBAC or authentication, no watches, and field selectors are ignored.

Every write that succeeds (not a dry run) and every port-forward is logged as an ``audit`` line, so a test can tell
which objects were ever written (tests/k8s/test_internal_layout.py: nothing under vLLM's default name).

CLI (run with the tools virtualenv's Python)::

    python tests/k8s/emulator.py serve --port 0 --kubeconfig OUT [--pod-log-dir D] [--pidfile F] [--background]
    python tests/k8s/emulator.py stop --pidfile F
    python tests/k8s/emulator.py set-status --kubeconfig K --path /apis/batch/v1/namespaces/N/jobs/J \
        --status '{"conditions": [{"type": "Complete", "status": "True"}]}'
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import datetime
import gzip
import importlib.resources
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import portforward  # tests/k8s/portforward.py, next to this file

SERVER_VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-llmops-emulator", "platform": "linux/amd64"}
CRD_GROUP = "apiextensions.k8s.io"

# List merge keys for strategic merge patches (patchMergeKey in k8s.io/api), by the list's field name.
# Lists not named here are replaced whole, as for atomic lists in the real server.
STRATEGIC_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def body(self) -> dict:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


@dataclass(frozen=True)
class Route:
    """A parsed API path. ``plural is None`` means a discovery path."""

    group: str
    version: str
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_route(path: str) -> Route | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return Route(group, version)
    namespace = None
    # /namespaces/NS/<plural>/... is a namespaced resource; /namespaces[/NAME[/status|finalize]] is
    # the Namespace resource itself (kmock's parser confuses the two).
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return Route(group, version, plural, namespace, name, subresource)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch for the common cases: keyed lists merge, ``$patch: delete`` removes an
    element, ``$setElementOrder``/``$retainKeys`` directives are accepted and ignored, other lists
    are replaced."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in STRATEGIC_MERGE_KEYS and isinstance(result.get(key), list):
            merge_key = STRATEGIC_MERGE_KEYS[key]
            merged = [copy.deepcopy(item) for item in result[key]]
            for item in value:
                if not isinstance(item, dict) or merge_key not in item:
                    merged.append(copy.deepcopy(item))
                    continue
                index = next((i for i, old in enumerate(merged) if old.get(merge_key) == item[merge_key]), None)
                if item.get("$patch") == "delete":
                    if index is not None:
                        merged.pop(index)
                elif index is None:
                    merged.append(strategic_merge_patch({}, item))
                else:
                    merged[index] = strategic_merge_patch(merged[index], item)
            result[key] = merged
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, operations: list) -> Any:
    """RFC 6902 (add, remove, replace, test, copy, move)."""
    doc = copy.deepcopy(target)

    def split(pointer: str) -> list[str]:
        return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]

    def walk(pointer: str) -> tuple[Any, str]:
        parts = split(pointer)
        node = doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, parts[-1]

    def get(pointer: str) -> Any:
        node, key = walk(pointer)
        return node[int(key)] if isinstance(node, list) else node[key]

    def put(pointer: str, value: Any, insert: bool) -> None:
        node, key = walk(pointer)
        if isinstance(node, list):
            if key == "-":
                node.append(value)
            elif insert:
                node.insert(int(key), value)
            else:
                node[int(key)] = value
        else:
            node[key] = value

    def remove(pointer: str) -> Any:
        node, key = walk(pointer)
        return node.pop(int(key)) if isinstance(node, list) else node.pop(key)

    for op in operations:
        try:
            kind, path = op["op"], op["path"]
            if kind == "add":
                put(path, copy.deepcopy(op["value"]), insert=True)
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                get(path)
                put(path, copy.deepcopy(op["value"]), insert=False)
            elif kind == "test":
                if get(path) != op["value"]:
                    raise ApiError(422, "Invalid", f"json patch test failed at {path}")
            elif kind == "copy":
                put(path, copy.deepcopy(get(op["from"])), insert=True)
            elif kind == "move":
                put(path, remove(op["from"]), insert=True)
            else:
                raise ApiError(400, "BadRequest", f"unknown json patch op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"json patch {op!r} does not apply: {exc!r}") from exc
    return doc


_SELECTOR_TERM = re.compile(
    r"^\s*(!?)([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$"
)


def _split_selector(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return terms


def label_selector_matches(selector: str, labels: dict) -> bool:
    for term in _split_selector(selector):
        match = _SELECTOR_TERM.match(term)
        if not match:
            raise ApiError(400, "BadRequest", f"unable to parse label selector term {term!r}")
        negate, key, op, value, set_op, values = match.groups()
        if op in ("=", "=="):
            ok = labels.get(key) == value
        elif op == "!=":
            ok = labels.get(key) != value
        elif set_op:
            choices = {v.strip() for v in values.split(",")}
            ok = (labels.get(key) in choices) if set_op == "in" else (labels.get(key) not in choices)
        else:
            ok = (key not in labels) if negate else (key in labels)
        if not ok:
            return False
    return True


def _normalize_quantities(node: Any) -> None:
    """The API server stores resource quantities as strings; so does the emulator."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("limits", "requests") and isinstance(value, dict):
                for rkey, quantity in list(value.items()):
                    if isinstance(quantity, (int, float)) and not isinstance(quantity, bool):
                        value[rkey] = str(quantity)
            else:
                _normalize_quantities(value)
    elif isinstance(node, list):
        for item in node:
            _normalize_quantities(item)


@attrs.define(kw_only=True)
class LlmopsEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with a working object layer (see the module docstring)."""

    store: dict = attrs.field(factory=dict, init=False)
    crd_resources: dict = attrs.field(factory=dict, init=False)
    _counter: Any = attrs.field(factory=lambda: itertools.count(1000), init=False)
    _docs: list = attrs.field(factory=list, init=False)
    # Where the pods' logs are (<dir>/<namespace>/<pod>.log); None: the log subresource answers empty.
    pod_log_dir: Any = attrs.field(default=None)
    # Open `kubectl port-forward` sessions (tests/k8s/portforward.py), closed when the emulator stops.
    port_forwards: Any = attrs.field(factory=lambda: portforward.PortForwards(log=_log), init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        data = importlib.resources.files("kmock._internal").joinpath("resources.json.gz").read_bytes()
        self._docs = json.loads(gzip.decompress(data))

    # ---- discovery ------------------------------------------------------------------------------
    def _resource_lists(self) -> dict[str, dict]:
        lists = {doc["groupVersion"]: copy.deepcopy(doc) for doc in self._docs}
        for (group, version, plural), info in self.crd_resources.items():
            gv = f"{group}/{version}"
            doc = lists.setdefault(
                gv, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": []}
            )
            entry = {
                "name": plural,
                "singularName": info["singular"],
                "namespaced": info["namespaced"],
                "kind": info["kind"],
                "verbs": ["create", "delete", "get", "list", "patch", "update"],
            }
            doc["resources"].append(entry)
            for sub in info["subresources"]:
                doc["resources"].append({**entry, "name": f"{plural}/{sub}", "verbs": ["get", "patch", "update"]})
        return lists

    def _resource_info(self, route: Route) -> dict:
        gv = f"{route.group}/{route.version}" if route.group else route.version
        doc = self._resource_lists().get(gv)
        if doc is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({gv})")
        entries = {r["name"]: r for r in doc["resources"]}
        if route.plural not in entries:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({route.plural}.{gv})")
        entry = entries[route.plural]
        subs = {name.split("/", 1)[1] for name in entries if name.startswith(route.plural + "/")}
        return {"kind": entry["kind"], "namespaced": bool(entry.get("namespaced")), "subresources": subs, "gv": gv}

    def _discovery(self, route: Route | None, path: str) -> dict:
        lists = self._resource_lists()
        if path.rstrip("/") == "/version":
            return SERVER_VERSION
        if path.rstrip("/") == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        groups: dict[str, list[str]] = {}
        for gv in lists:
            if "/" in gv:
                group, version = gv.split("/", 1)
                groups.setdefault(group, []).append(version)

        def group_doc(group: str) -> dict:
            versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in groups[group]]
            return {
                "kind": "APIGroup",
                "apiVersion": "v1",
                "name": group,
                "versions": versions,
                "preferredVersion": versions[0],
            }

        if path.rstrip("/") == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_doc(g) for g in groups]}
        if route is None:
            if path.rstrip("/") in ("", "/"):
                return {
                    "paths": ["/api", "/api/v1", "/apis", "/version"] + [f"/apis/{gv}" for gv in lists if "/" in gv]
                }
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        gv = f"{route.group}/{route.version}" if route.group else route.version
        if gv in lists:
            return lists[gv]
        if route.group and route.group in groups and path.rstrip("/").endswith(f"/apis/{route.group}"):
            return group_doc(route.group)
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")

    # ---- object layer ---------------------------------------------------------------------------
    def _key(self, route: Route, info: dict, namespace: str | None, name: str) -> tuple:
        return (route.group, route.plural, namespace if info["namespaced"] else None, name)

    def _not_found(self, route: Route, name: str) -> ApiError:
        return ApiError(404, "NotFound", f'{route.plural} "{name}" not found', {"name": name, "kind": route.plural})

    def _require_namespace(self, info: dict, namespace: str | None) -> None:
        if info["namespaced"]:
            if not namespace:
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the request")
            if ("", "namespaces", None, namespace) not in self.store:
                raise ApiError(
                    404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
                )

    def _normalize(self, route: Route, info: dict, obj: dict, namespace: str | None) -> dict:
        obj = copy.deepcopy(obj)
        obj["apiVersion"] = info["gv"]
        obj["kind"] = info["kind"]
        meta = obj.setdefault("metadata", {})
        if info["namespaced"]:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace or meta.get("namespace")
        else:
            meta.pop("namespace", None)
        _normalize_quantities(obj.get("spec"))
        if info["kind"] == "Secret" and route.group == "" and "stringData" in obj:
            data = obj.setdefault("data", {}) or {}
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
        return obj

    def _commit(self, route: Route, info: dict, key: tuple, new: dict, *, status_only: bool, dry_run: bool) -> dict:
        old = self.store.get(key)
        has_status = "status" in info["subresources"]
        if old is not None:
            if status_only:
                candidate = copy.deepcopy(old)
                if "status" in new:
                    candidate["status"] = new["status"]
                else:
                    candidate.pop("status", None)
                new = candidate
            elif has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
            for field in ("uid", "creationTimestamp", "namespace", "name"):
                if field in old_meta:
                    meta[field] = old_meta[field]
                else:
                    meta.pop(field, None)
            meta["generation"] = old_meta.get("generation", 1)
            meta["resourceVersion"] = old_meta["resourceVersion"]
            meta.pop("managedFields", None)
            if new == old:
                return copy.deepcopy(old)
            outside = [k for k in set(new) | set(old) if k not in ("metadata", "status")]
            if any(new.get(k) != old.get(k) for k in outside):
                meta["generation"] = meta["generation"] + 1
        else:
            meta = new.setdefault("metadata", {})
            if not meta.get("name"):
                if meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                    key = (*key[:3], meta["name"])
                else:
                    raise ApiError(422, "Invalid", "metadata.name: Required value: name or generateName is required")
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            if has_status and not status_only:
                new.pop("status", None)
        meta["resourceVersion"] = str(next(self._counter))
        if dry_run:
            return new
        self.store[key] = new
        if info["kind"] == "CustomResourceDefinition" and route.group == CRD_GROUP:
            self._register_crd(new)
        return copy.deepcopy(new)

    def _register_crd(self, crd: dict) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for version in spec.get("versions", []):
            if version.get("served", True):
                self.crd_resources[(spec["group"], version["name"], names["plural"])] = {
                    "kind": names["kind"],
                    "singular": names.get("singular", names["kind"].lower()),
                    "namespaced": spec.get("scope", "Namespaced") == "Namespaced",
                    "subresources": sorted((version.get("subresources") or {}).keys()),
                }
        crd["status"] = {
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
            ],
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in spec.get("versions", []) if v.get("storage")],
        }

    def _unregister_crd(self, crd: dict) -> None:
        spec = crd.get("spec", {})
        for version in spec.get("versions", []):
            self.crd_resources.pop((spec.get("group"), version.get("name"), spec.get("names", {}).get("plural")), None)

    def _parse_body(self, body: bytes) -> Any:
        if not body:
            raise ApiError(400, "BadRequest", "the request has no body")
        try:
            return json.loads(body)
        except ValueError:
            try:
                return yaml.safe_load(body)
            except yaml.YAMLError as exc:
                raise ApiError(400, "BadRequest", f"the body is neither JSON nor YAML: {exc}") from exc

    def handle_object_request(
        self, method: str, route: Route, params: dict, headers: dict, body: bytes
    ) -> tuple[int, dict]:
        info = self._resource_info(route)
        dry_run = params.get("dryRun") == "All"
        if route.subresource not in (None, "status"):
            raise ApiError(404, "NotFound", f"the subresource {route.subresource!r} is not emulated")
        if route.subresource == "status" and "status" not in info["subresources"]:
            raise ApiError(404, "NotFound", f"{route.plural} has no status subresource")
        status_only = route.subresource == "status"

        if route.name is None:
            if method == "GET":
                if params.get("watch") in ("true", "1"):
                    raise ApiError(405, "MethodNotAllowed", "watch is not emulated; poll with GET")
                items = [
                    copy.deepcopy(obj)
                    for (group, plural, ns, _name), obj in sorted(self.store.items(), key=lambda kv: str(kv[0]))
                    if group == route.group
                    and plural == route.plural
                    and (route.namespace is None or ns == route.namespace)
                    and label_selector_matches(params.get("labelSelector", ""), obj["metadata"].get("labels") or {})
                ]
                rv = str(max([int(o["metadata"]["resourceVersion"]) for o in items] + [999]))
                return 200, {
                    "apiVersion": info["gv"],
                    "kind": info["kind"] + "List",
                    "metadata": {"resourceVersion": rv},
                    "items": items,
                }
            if method == "POST":
                obj = self._normalize(route, info, self._parse_body(body), route.namespace)
                namespace = obj["metadata"].get("namespace")
                self._require_namespace(info, namespace)
                name = obj["metadata"].get("name") or ""
                key = self._key(route, info, namespace, name)
                if name and key in self.store:
                    raise ApiError(
                        409,
                        "AlreadyExists",
                        f'{route.plural} "{name}" already exists',
                        {"name": name, "kind": route.plural},
                    )
                return 201, self._commit(route, info, key, obj, status_only=False, dry_run=dry_run)
            raise ApiError(405, "MethodNotAllowed", f"{method} on a collection is not emulated")

        key = self._key(route, info, route.namespace, route.name)
        current = self.store.get(key)
        if method == "GET":
            if current is None:
                raise self._not_found(route, route.name)
            return 200, copy.deepcopy(current)
        if method == "DELETE":
            if current is None:
                raise self._not_found(route, route.name)
            if not dry_run:
                del self.store[key]
                if info["kind"] == "Namespace" and route.group == "":
                    for other in [k for k in self.store if k[2] == route.name]:
                        del self.store[other]
                if info["kind"] == "CustomResourceDefinition" and route.group == CRD_GROUP:
                    self._unregister_crd(current)
            return 200, copy.deepcopy(current)
        if method == "PUT":
            if current is None:
                raise self._not_found(route, route.name)
            obj = self._normalize(route, info, self._parse_body(body), route.namespace)
            sent_rv = obj["metadata"].get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {route.plural} "{route.name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    {"name": route.name, "kind": route.plural},
                )
            return 200, self._commit(route, info, key, obj, status_only=status_only, dry_run=dry_run)
        if method == "PATCH":
            content_type = headers.get("Content-Type", headers.get("content-type", "")).split(";")[0].strip()
            patch = self._parse_body(body)
            if content_type == "application/apply-patch+yaml":
                # Server-side apply with one field manager: the applied configuration wins.
                if current is None:
                    obj = self._normalize(route, info, patch, route.namespace)
                    obj["metadata"]["name"] = route.name
                    self._require_namespace(info, obj["metadata"].get("namespace"))
                    return 201, self._commit(route, info, key, obj, status_only=False, dry_run=dry_run)
                merged = copy.deepcopy(patch)
                merged.setdefault("metadata", {})
                for field in ("labels", "annotations"):
                    if field not in merged["metadata"] and field in current["metadata"]:
                        merged["metadata"][field] = copy.deepcopy(current["metadata"][field])
            elif current is None:
                raise self._not_found(route, route.name)
            elif content_type == "application/merge-patch+json":
                merged = json_merge_patch(current, patch)
            elif content_type == "application/strategic-merge-patch+json":
                if info["kind"] not in {d["kind"] for doc in self._docs for d in doc["resources"]}:
                    raise ApiError(
                        415, "UnsupportedMediaType", "strategic merge patch is not supported for custom resources"
                    )
                merged = strategic_merge_patch(current, patch)
            elif content_type == "application/json-patch+json":
                merged = json_patch(current, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the patch content type {content_type!r} is not supported")
            obj = self._normalize(route, info, merged, route.namespace)
            return 200, self._commit(route, info, key, obj, status_only=status_only, dry_run=dry_run)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not emulated")

    def pod_log(self, route: Route, params: dict) -> str:
        """The text of a pod's log file (what tests/k8s/node.py wrote), like ``kubectl logs``."""
        if ("", "pods", route.namespace, route.name) not in self.store:
            raise self._not_found(route, route.name)
        if self.pod_log_dir is None:
            return ""
        path = Path(self.pod_log_dir) / str(route.namespace) / f"{route.name}.log"
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        tail = params.get("tailLines")
        if tail not in (None, ""):
            try:
                count = int(tail)
            except ValueError as exc:
                raise ApiError(400, "BadRequest", f"tailLines: invalid value {tail!r}") from exc
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-count:]) if count > 0 else ""
        limit = params.get("limitBytes")
        if limit not in (None, "") and str(limit).isdigit():
            text = text.encode()[: int(limit)].decode("utf-8", errors="ignore")
        return text

    def port_forward_target(self, route: Route, method: str, headers: Any) -> portforward.PodTarget:
        """The pod a ``pods/portforward`` request goes to, or the API error a real server gives."""
        pod = self.store.get(("", "pods", route.namespace, route.name))
        if pod is None:
            raise self._not_found(route, route.name)
        problem = portforward.upgrade_problem(headers)
        if problem is None and method != "GET":
            problem = f"unable to upgrade: a WebSocket upgrade is a GET, not {method}"
        if problem is not None:
            raise ApiError(400, "BadRequest", problem)
        return portforward.PodTarget(str(route.namespace), str(route.name), pod["metadata"].get("uid", ""))

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's request parser (kmock._internal.parsing.parse_path) raises on /api/v1/namespaces:
        # route every request here, with the parser above, before kmock sees it.
        body = await raw_request.read()
        path, method = raw_request.path, raw_request.method.upper()
        try:
            route = parse_route(path)
            if route is not None and route.group == "" and route.plural == "pods" and route.subresource == "log":
                if method != "GET":
                    raise ApiError(405, "MethodNotAllowed", f"{method} on pods/log is not allowed")
                async with self._lock:
                    text = self.pod_log(route, dict(raw_request.query))
                return aiohttp.web.Response(text=text, content_type="text/plain")
            if route is not None and (route.group, route.plural, route.subresource) == ("", "pods", "portforward"):
                async with self._lock:
                    target = self.port_forward_target(route, method, raw_request.headers)
                _log(f"audit PORTFORWARD pods {route.namespace}/{route.name}")
                return await self.port_forwards.serve(raw_request, target)
            if route is not None and route.plural is not None:
                async with self._lock:
                    code, payload = self.handle_object_request(
                        method, route, dict(raw_request.query), dict(raw_request.headers), body
                    )
                if method != "GET" and code < 300 and raw_request.query.get("dryRun") != "All":
                    _log(f"audit {method} {_written_name(route, payload)}")
            elif method == "GET":
                code, payload = 200, self._discovery(route, path)
            else:
                raise ApiError(405, "MethodNotAllowed", f"{method} {path} is not emulated")
        except ApiError as exc:
            return aiohttp.web.json_response(exc.body(), status=exc.code)
        return aiohttp.web.json_response(payload, status=code)


# ---- running it ---------------------------------------------------------------------------------
def _written_name(route: Route, payload: Any) -> str:
    """``<plural> <namespace>/<name>`` of a write, for the audit lines of the log (a test can read which objects were
    ever written, not only which exist now): the name from the path, or from the object a POST created."""
    name = route.name or ((payload or {}).get("metadata") or {}).get("name", "?")
    return f"{route.plural} {route.namespace or '-'}/{name}" + (f"/{route.subresource}" if route.subresource else "")


def _log(message: str) -> None:
    """A line in the emulator's log (its stdout: ``<pidfile>.log`` when started in the background)."""
    print(f"{_now()} {message}", flush=True)


def write_kubeconfig(path: Path, url: str, context: str = "llmops-emulator") -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": url}}],
        "users": [{"name": context, "user": {"token": "emulator-accepts-anything"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def server_url(kubeconfig: Path) -> str:
    config = yaml.safe_load(Path(kubeconfig).read_text())
    return config["clusters"][0]["cluster"]["server"]


def default_pod_log_dir(kubeconfig: Path) -> Path:
    """Where pod logs are read (and tests/k8s/node.py writes them) unless told otherwise."""
    return Path(kubeconfig).resolve().parent / "pod-logs"


async def _serve(
    host: str, port: int, kubeconfig: Path, ready_file: Path | None, pod_log_dir: Path | None = None
) -> None:
    emulator = LlmopsEmulator(pod_log_dir=pod_log_dir or default_pod_log_dir(kubeconfig))
    async with emulator, kmock.Server(emulator, host=host, port=port) as server:
        url = f"http://{host}:{server.port}"
        write_kubeconfig(kubeconfig, url)
        if ready_file is not None:
            ready_file.write_text(url)
        print(f"Kubernetes API emulator on {url}, kubeconfig {kubeconfig}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await emulator.port_forwards.close()


def _wait_ready(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/version", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def start_background(
    kubeconfig: Path,
    pidfile: Path,
    port: int = 0,
    host: str = "127.0.0.1",
    log: Path | None = None,
    *,
    pod_log_dir: Path | None = None,
) -> str:
    """Start the emulator in its own session; return its URL once it answers. Pod logs are served from
    ``pod_log_dir`` (default: ``<kubeconfig's directory>/pod-logs``)."""
    kubeconfig, pidfile = Path(kubeconfig), Path(pidfile)
    pod_log_dir = Path(pod_log_dir) if pod_log_dir else default_pod_log_dir(kubeconfig)
    ready = pidfile.with_suffix(".url")
    ready.unlink(missing_ok=True)
    log = log or pidfile.with_suffix(".log")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "serve",
                "--host",
                host,
                "--port",
                str(port),
                "--kubeconfig",
                str(kubeconfig),
                "--ready-file",
                str(ready),
                "--pod-log-dir",
                str(pod_log_dir),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pidfile.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise RuntimeError(
                f"the emulator did not start (exit {proc.poll()}); log:\n{Path(log).read_text()[-3000:]}"
            )
        time.sleep(0.05)
    url = ready.read_text().strip()
    _wait_ready(url)
    return url


def stop_background(pidfile: Path, timeout: float = 10.0) -> bool:
    """SIGTERM the emulator named in the pidfile; True if one was running."""
    pidfile = Path(pidfile)
    if not pidfile.exists():
        return False
    pid = int(pidfile.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Reap it when it is our child (tests); otherwise poll for the pid to disappear.
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    pidfile.with_suffix(".url").unlink(missing_ok=True)
    return True


def request(url: str, method: str, path: str, body: Any = None, content_type: str = "application/json") -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode()[:500]}") from exc


def set_status(url: str, object_path: str, status: dict) -> dict:
    """Write an object's status through the API (what a controller would do), e.g. mark a Job
    Complete or Failed or a Deployment available, so wait logic can be tested both ways."""
    return request(
        url, "PATCH", object_path.rstrip("/") + "/status", {"status": status}, "application/merge-patch+json"
    )


def deployment_available_status(replicas: int = 1, generation: int = 1) -> dict:
    """The status the Deployment controller reports once a rollout of ``generation`` has finished."""
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }


def job_finished_status(outcome: str) -> dict:
    """A Job's status after it completed (``Complete``) or gave up (``Failed``)."""
    if outcome not in ("Complete", "Failed"):
        raise ValueError(outcome)
    conditions = [{"type": outcome, "status": "True", "reason": "Emulated"}]
    if outcome == "Failed":
        conditions[0]["reason"] = "BackoffLimitExceeded"
        return {"failed": 1, "conditions": conditions}
    return {"succeeded": 1, "conditions": conditions}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the emulator (foreground unless --background)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0: a free port")
    serve.add_argument("--kubeconfig", type=Path, required=True, help="write a kubeconfig pointing at it here")
    serve.add_argument(
        "--pod-log-dir", type=Path, help="serve pods/log from DIR/NS/POD.log (default: KUBECONFIG's dir/pod-logs)"
    )
    serve.add_argument("--pidfile", type=Path, help="with --background: where the pid goes (default KUBECONFIG.pid)")
    serve.add_argument("--background", action="store_true", help="start detached, wait until it answers, exit")
    serve.add_argument("--ready-file", type=Path, help=argparse.SUPPRESS)
    stop = sub.add_parser("stop", help="stop a background emulator")
    stop.add_argument("--pidfile", type=Path, required=True)
    status = sub.add_parser("set-status", help="write an object's status (as a controller would)")
    status.add_argument("--kubeconfig", type=Path, required=True)
    status.add_argument("--path", required=True, help="the object's API path, e.g. /apis/batch/v1/namespaces/N/jobs/J")
    status.add_argument("--status", required=True, help="the status as JSON")
    args = parser.parse_args(argv)

    if args.command == "serve":
        if args.background:
            pidfile = args.pidfile or args.kubeconfig.with_suffix(".pid")
            url = start_background(args.kubeconfig, pidfile, args.port, args.host, pod_log_dir=args.pod_log_dir)
            print(json.dumps({"url": url, "kubeconfig": str(args.kubeconfig), "pidfile": str(pidfile)}))
            return 0
        asyncio.run(_serve(args.host, args.port, args.kubeconfig, args.ready_file, args.pod_log_dir))
        return 0
    if args.command == "stop":
        print("stopped" if stop_background(args.pidfile) else "not running")
        return 0
    result = set_status(server_url(args.kubeconfig), args.path, json.loads(args.status))
    print(json.dumps(result.get("status", {})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
