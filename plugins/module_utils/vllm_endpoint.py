# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stable in-cluster endpoint of vLLM (role vllm_endpoint): one Service name that in-cluster clients use in
every layout, pointing either at the in-cluster Deployment's pods (a selector copied from that Deployment's own
Service) or at the external hosts' fronts (a Service without selector and EndpointSlices this collection manages).

Pure Python, no Ansible: `host_fronts` lists every front of the inventory's vLLM hosts (one per instance), and
`endpoint_objects` checks the settings and builds the objects, failing with a message that names the variable.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Dict, List, Optional, Tuple

MANAGER = "llmops.platform"
PORT_NAME = "api"
TARGETS = ("internal", "external")
# The in-cluster vLLM container serves plain HTTP on its `http` port (roles/vllm_k8s).
INTERNAL_SCHEME = "http"
SCHEME_ANNOTATION = "llmops.io/endpoint-scheme"
TARGET_ANNOTATION = "llmops.io/endpoint-target"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


class EndpointError(ValueError):
    """A setting that cannot work; the message names the variable."""


def host_fronts(hosts: List[Tuple[str, Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """One entry per vLLM instance of every host: the front clients reach (ansible_host and the instance's port).

    `hosts` is [(inventory name, its hostvars)]. A host's scheme is https unless it runs without TLS or without the
    front (vllm_host_tls, vllm_host_proxy), as the role configures it."""
    fronts = []
    for name, hv in sorted(hosts, key=lambda item: item[0]):
        tls = bool(hv.get("vllm_host_tls", True)) and bool(hv.get("vllm_host_proxy", True))
        for instance in hv.get("vllm_host_instances") or [{"name": "main", "port": 8000}]:
            fronts.append(
                {
                    "host": name,
                    "address": str(hv.get("ansible_host") or name),
                    "port": int(instance.get("port", 8000)),
                    "instance": instance.get("name", "main"),
                    "scheme": "https" if tls else "http",
                }
            )
    return fronts


def _port(value: Any, variable: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise EndpointError(f"{variable} must be a port number 1-65535, not {value!r}")
    port = int(value)
    if not 1 <= port <= 65535:
        raise EndpointError(f"{variable} must be a port number 1-65535, not {port}")
    return port


def _labels(labels: Any) -> Dict[str, str]:
    if not isinstance(labels, dict):
        raise EndpointError(f"vllm_endpoint_labels must be a mapping of label names to values, not {labels!r}")
    out = {}
    for key, value in labels.items():
        if not isinstance(key, str) or len(key) > 316 or not LABEL_NAME.match(key):
            raise EndpointError(f"vllm_endpoint_labels: {key!r} is not a valid label name")
        if key.startswith(
            ("kubernetes.io/", "endpointslice.kubernetes.io/", "app.kubernetes.io/managed-by", "llmops.io/")
        ):
            raise EndpointError(f"vllm_endpoint_labels: {key!r} is set by the role (reserved prefix)")
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            raise EndpointError(f"vllm_endpoint_labels: the value of {key!r} ({value!r}) is not a valid label value")
        out[key] = value
    return out


def _external(endpoints: Any) -> Tuple[str, str, Dict[int, List[str]]]:
    """(addressType, scheme, {port: [addresses]}) of the external fronts."""
    variable = "vllm_endpoint_external_endpoints"
    if not isinstance(endpoints, list) or not endpoints:
        raise EndpointError(
            f"{variable} is empty: target external needs the hosts' fronts (playbooks/endpoint.yml fills it from the "
            "inventory's vllm_hosts group)"
        )
    families, schemes, by_port, seen = set(), set(), {}, set()
    for index, entry in enumerate(endpoints):
        where = f"{variable}[{index}]"
        if not isinstance(entry, dict):
            raise EndpointError(f"{where} must be a mapping with address and port, not {entry!r}")
        label = entry.get("host") or where
        try:
            address = ipaddress.ip_address(str(entry.get("address", "")).strip())
        except ValueError:
            raise EndpointError(
                f"{where} ({label}): address {entry.get('address')!r} is not an IP address; EndpointSlices that "
                "kube-proxy routes hold addresses only (set the host's ansible_host to its address)"
            ) from None
        if address.is_loopback or address.is_unspecified or address.is_multicast or address.is_link_local:
            raise EndpointError(
                f"{where} ({label}): {address} cannot be reached from the cluster's pods (loopback, unspecified, "
                "multicast or link-local)"
            )
        port = _port(entry.get("port"), f"{where}.port")
        scheme = entry.get("scheme", "https")
        if scheme not in ("http", "https"):
            raise EndpointError(f"{where}.scheme must be http or https, not {scheme!r}")
        if (str(address), port) in seen:
            raise EndpointError(f"{where} ({label}): {address}:{port} is listed twice")
        seen.add((str(address), port))
        families.add(address.version)
        schemes.add(scheme)
        by_port.setdefault(port, []).append(str(address))
    if len(families) > 1:
        raise EndpointError(f"{variable} mixes IPv4 and IPv6 addresses: one Service serves one address family")
    if len(schemes) > 1:
        raise EndpointError(
            f"{variable}: some fronts speak https and some http ({sorted(schemes)}); clients of one Service use one "
            "scheme (vllm_host_tls must be the same on every host)"
        )
    return ("IPv4" if families == {4} else "IPv6"), schemes.pop(), {p: sorted(a) for p, a in by_port.items()}


def endpoint_objects(settings: Dict[str, Any]) -> Dict[str, Any]:
    """The checked objects for one target.

    settings: name, namespace, port, target, labels, external_endpoints, internal_service (the in-cluster
    Deployment's Service as read from the cluster, or None), internal_service_name, current (the endpoint Service as
    read from the cluster, or None), allow_scheme_change.
    Returns service, slices (EndpointSlices to apply), scheme, previous_scheme, previous_target, summary."""
    name = settings.get("name")
    if not isinstance(name, str) or len(name) > 63 or not DNS_1035.match(name):
        raise EndpointError(f"vllm_endpoint_name must be a DNS-1035 label (a-z, 0-9, '-', at most 63), not {name!r}")
    namespace = settings.get("namespace")
    if not isinstance(namespace, str) or len(namespace) > 63 or not DNS_1123.match(namespace):
        raise EndpointError(f"vllm_endpoint_namespace must be a DNS-1123 label, not {namespace!r}")
    port = _port(settings.get("port"), "vllm_endpoint_port")
    target = settings.get("target")
    if target not in TARGETS:
        raise EndpointError(f"vllm_endpoint_target must be one of {', '.join(TARGETS)}, not {target!r}")
    user_labels = _labels(settings.get("labels") or {})
    labels = {
        **user_labels,
        "app.kubernetes.io/name": "vllm-endpoint",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": MANAGER,
    }
    service_port: Dict[str, Any] = {"name": PORT_NAME, "port": port, "protocol": "TCP"}
    spec: Dict[str, Any] = {"type": "ClusterIP"}
    slices: List[Dict[str, Any]] = []
    follow = settings.get("internal_service_name")
    if follow == name:
        raise EndpointError(
            f"vllm_endpoint_name and vllm_endpoint_internal_service are both {name!r}: the endpoint is a Service of "
            "its own beside the in-cluster Deployment's (rewriting that one would cut the gates and port-forwards off)"
        )
    current = settings.get("current") or {}
    current_labels = (current.get("metadata") or {}).get("labels") or {}
    if current and current_labels.get("app.kubernetes.io/name") != "vllm-endpoint":
        raise EndpointError(
            f"vllm_endpoint_name: Service {name!r} already exists in {namespace} and is not a stable endpoint (its "
            f"labels: {current_labels}); choose another name, the role only takes over Services it created"
        )
    if target == "internal":
        svc = settings.get("internal_service")
        if not svc:
            raise EndpointError(
                f"vllm_endpoint_internal_service: there is no Service {follow!r} in namespace {namespace}; deploy the "
                "in-cluster side first (playbooks/internal.yml), or name its Service"
            )
        selector = (svc.get("spec") or {}).get("selector") or {}
        ports = (svc.get("spec") or {}).get("ports") or []
        if not selector or not ports:
            raise EndpointError(
                f"vllm_endpoint_internal_service: Service {follow!r} has no selector or no port, so it does not lead "
                "to the vLLM pods (it may itself be a stable endpoint)"
            )
        spec["selector"] = dict(selector)
        service_port["targetPort"] = ports[0].get("targetPort", ports[0].get("port"))
        scheme = INTERNAL_SCHEME
    else:
        address_type, scheme, by_port = _external(settings.get("external_endpoints"))
        service_port["targetPort"] = port
        for front_port, addresses in sorted(by_port.items()):
            slices.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{name}-external-{front_port}",
                        "namespace": namespace,
                        "labels": {
                            **labels,
                            SERVICE_NAME_LABEL: name,
                            MANAGED_BY_LABEL: MANAGER,
                        },
                    },
                    "addressType": address_type,
                    "ports": [{"name": PORT_NAME, "port": front_port, "protocol": "TCP", "appProtocol": scheme}],
                    "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
                }
            )
    service_port["appProtocol"] = scheme
    spec["ports"] = [service_port]
    annotations = (current.get("metadata") or {}).get("annotations") or {}
    previous_scheme = annotations.get(SCHEME_ANNOTATION)
    previous_target = annotations.get(TARGET_ANNOTATION)
    if previous_scheme and previous_scheme != scheme and not settings.get("allow_scheme_change"):
        raise EndpointError(
            f"vllm_endpoint_target: pointing {name} at the {target} side would change the scheme its clients use from "
            f"{previous_scheme} to {scheme} ({previous_scheme}://{name}.{namespace}.svc:{port} stops working). Make "
            "both sides speak the same scheme, or set vllm_endpoint_allow_scheme_change=true once the clients are ready"
        )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {TARGET_ANNOTATION: target, SCHEME_ANNOTATION: scheme},
        },
        "spec": spec,
    }
    if target == "internal":
        summary = f"{name} -> Service {settings.get('internal_service_name')} (selector {spec['selector']})"
    else:
        fronts = [f"{a}:{s['ports'][0]['port']}" for s in slices for e in s["endpoints"] for a in e["addresses"]]
        summary = f"{name} -> {len(fronts)} external front(s) {', '.join(fronts)} ({scheme})"
    return {
        "service": service,
        "slices": slices,
        "scheme": scheme,
        "previous_scheme": previous_scheme,
        "previous_target": previous_target,
        "summary": summary,
    }


def stale_slices(existing: Optional[List[Dict[str, Any]]], keep: List[Dict[str, Any]]) -> List[str]:
    """Names of the EndpointSlices this collection manages for the endpoint that are not in `keep`."""
    wanted = {s["metadata"]["name"] for s in keep}
    return sorted(
        s["metadata"]["name"]
        for s in existing or []
        if ((s.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGER
        and s["metadata"]["name"] not in wanted
    )
