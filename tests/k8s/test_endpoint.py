"""The stable in-cluster endpoint (playbooks/endpoint.yml, role vllm_endpoint) on the Kubernetes API emulator.

One Service, `vllm-api`, that in-cluster clients use whichever side serves: pointed at the in-cluster
Deployment's pods (target internal: the selector and target port of its Service `vllm-inference`), then flipped to
the external hosts' fronts of an inventory (target external: no selector, EndpointSlices listing every instance),
then rolled back. The Service and the EndpointSlices are read from the emulator before and after every flip and
validated strictly against three Kubernetes releases; check mode predicts the flip and writes nothing; each target
re-applied changes nothing; a flip that changes the scheme clients use, an in-cluster side with no Ready pod and a
front that is no address are refused before anything is written. What the emulator cannot show (no kube-proxy, no
EndpointSlice controller): traffic following the flip; tests/k8s/test_node.py's ServiceProxy follows the same
EndpointSlices with real connections, and tests/k8s/test_internal_layout.py's migration sends traffic through it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import emulator as emu  # noqa: E402
import validate  # noqa: E402
from k8s_harness import run_playbook  # noqa: E402

NS = "llm-training"
SERVICES = f"/api/v1/namespaces/{NS}/services"
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
SELECTOR = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "vllm-inference"}
HOSTS = {
    "gpu-1": {"ansible_host": "10.20.0.11"},
    "gpu-2": {
        "ansible_host": "10.20.0.12",
        "vllm_host_instances": [{"name": "a", "port": 8000}, {"name": "b", "port": 8001}],
    },
}  # fmt: skip


BAD_VALUES = [
    # A hostname: EndpointSlices that kube-proxy routes hold addresses only.
    ({"vllm_endpoint_external_endpoints": [{"address": "gpu-1.example.com", "port": 8000, "host": "gpu-1"}]},
     "vllm_endpoint_external_endpoints[0]"),
    # The in-cluster Deployment's own Service is never taken over (gates and port-forwards use it).
    ({"vllm_endpoint_name": "vllm-inference", "vllm_endpoint_internal_service": "vllm-engine"}, "vllm_endpoint_name"),
]  # fmt: skip


def cluster(emulator) -> None:
    """The in-cluster side as vllm_k8s leaves it: the namespace, the Service `vllm` and one Ready pod."""
    emu.request(
        emulator.url, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    )
    emu.request(emulator.url, "POST", SERVICES, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "vllm-inference", "namespace": NS},
        "spec": {"selector": SELECTOR, "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]},
    })  # fmt: skip
    emu.request(emulator.url, "POST", f"/api/v1/namespaces/{NS}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vllm-abc", "namespace": NS, "labels": SELECTOR},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
    })  # fmt: skip
    ready(emulator, True)


def ready(emulator, value: bool) -> None:
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if value else "False"}]}
    emu.set_status(emulator.url, f"/api/v1/namespaces/{NS}/pods/vllm-abc", status)


def endpoint(emulator, tmp_path: Path, target: str, *args: str, **extra):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"vllm_hosts": {"hosts": HOSTS}, "ungrouped": {"hosts": {"localhost": {}}}}))
    extra = {"vllm_endpoint_target": target, "vllm_endpoint_kubeconfig": str(emulator.kubeconfig),
             "vllm_endpoint_controller_timeout": 0, **extra}  # fmt: skip
    return run_playbook(ROOT / "playbooks" / "endpoint.yml", cwd=tmp_path, extra_vars=extra,
                        args=[f"--inventory={inventory}", *args])  # fmt: skip


def state(emulator) -> dict:
    """The endpoint as the cluster holds it: its selector, port, scheme and the managed slices' fronts."""
    svc = emulator.get(f"{SERVICES}/vllm-api")
    slices = emulator.items(SLICES)
    problems = [
        p for doc in [svc, *slices] for p in validate.validate_manifest(doc, validate.DEFAULT_VERSIONS, "emulator")
    ]
    assert problems == [], "\n".join(map(str, problems))
    return {
        "selector": svc["spec"].get("selector"),
        "port": svc["spec"]["ports"][0],
        "target": svc["metadata"]["annotations"]["llmops.io/endpoint-target"],
        "slices": {
            s["metadata"]["name"]: sorted(
                f"{a}:{s['ports'][0]['port']}" for e in s["endpoints"] for a in e["addresses"]
            )
            for s in slices
        },
        "service_names": sorted(s["metadata"]["labels"]["kubernetes.io/service-name"] for s in slices),
    }


def test_flip_to_the_external_fronts_and_back(k8s_emulator, tmp_path: Path) -> None:
    em = k8s_emulator
    cluster(em)

    # Values with the right type that cannot work are refused before anything is written (the rest of the value
    # checks: tests/unit/plugins/module_utils/test_vllm_endpoint.py).
    for extra, variable in BAD_VALUES:
        run = endpoint(em, tmp_path, "external", **extra)
        assert run.rc != 0 and run.stats.get("changed", 0) == 0, run.output[-2000:]
        assert any(variable in m for m in run.failures()), run.failures()
        assert em.items(SLICES) == []
        assert [s["metadata"]["name"] for s in em.items(SERVICES)] == ["vllm-inference"]

    check = endpoint(em, tmp_path, "internal", "--check", "--diff")
    assert check.rc == 0, check.output[-3000:]
    assert check.stats["changed"] >= 1 and not em.exists(f"{SERVICES}/vllm-api"), "check mode wrote the endpoint"

    first = endpoint(em, tmp_path, "internal")
    assert first.rc == 0 and first.stats["changed"] >= 1, first.output[-3000:]
    internal = state(em)
    assert internal["selector"] == SELECTOR and internal["slices"] == {} and internal["target"] == "internal"
    assert internal["port"]["targetPort"] == "http" and internal["port"]["appProtocol"] == "http"
    again = endpoint(em, tmp_path, "internal")
    assert again.rc == 0 and again.stats["changed"] == 0, again.results("Point the Service at the target")

    # The hosts' fronts speak https, the pods http: flipping would break clients, so it is refused unasked.
    refused = endpoint(em, tmp_path, "external")
    assert refused.rc != 0 and refused.stats.get("changed", 0) == 0
    assert any("vllm_endpoint_allow_scheme_change" in m and "from http to https" in m for m in refused.failures()), (
        refused.failures()
    )
    assert state(em) == internal

    predicted = endpoint(em, tmp_path, "external", "--check", "--diff", vllm_endpoint_allow_scheme_change=True)
    assert predicted.rc == 0 and predicted.stats["changed"] == 2, predicted.output[-3000:]  # the slices, the Service
    assert state(em) == internal, "check mode changed the endpoint"

    cutover = endpoint(em, tmp_path, "external", vllm_endpoint_allow_scheme_change=True)
    assert cutover.rc == 0, cutover.output[-3000:]
    external = state(em)
    assert external["selector"] is None and external["target"] == "external"
    assert external["port"]["appProtocol"] == "https"
    assert external["slices"] == {
        "vllm-api-external-8000": ["10.20.0.11:8000", "10.20.0.12:8000"],
        "vllm-api-external-8001": ["10.20.0.12:8001"],
    }
    assert external["service_names"] == ["vllm-api", "vllm-api"]
    # The in-cluster side is untouched (kept for rollback).
    assert em.get(f"{SERVICES}/vllm-inference")["spec"]["selector"] == SELECTOR
    same = endpoint(em, tmp_path, "external", vllm_endpoint_allow_scheme_change=True)
    assert same.rc == 0 and same.stats["changed"] == 0, same.output[-2000:]

    # Rollback refused while no in-cluster pod is Ready (the endpoint would lead nowhere), then done.
    ready(em, False)
    nowhere = endpoint(em, tmp_path, "internal", vllm_endpoint_allow_scheme_change=True)
    assert nowhere.rc != 0 and nowhere.stats.get("changed", 0) == 0
    assert any("vllm_endpoint_require_ready" in m for m in nowhere.failures()), nowhere.failures()
    assert state(em) == external
    ready(em, True)
    rollback = endpoint(em, tmp_path, "internal", vllm_endpoint_allow_scheme_change=True)
    assert rollback.rc == 0, rollback.output[-3000:]
    assert state(em) == internal
