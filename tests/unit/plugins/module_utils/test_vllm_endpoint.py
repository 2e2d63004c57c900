"""The stable endpoint's objects (plugins/module_utils/vllm_endpoint.py) and its filters: what each target builds,
which slices a flip leaves stale, and every setting that has the right type but cannot work, refused naming it."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.filter.vllm_endpoint import FilterModule
from ansible_collections.llmops.platform.plugins.module_utils import vllm_endpoint as ve

FILTERS = FilterModule().filters()
INTERNAL_SVC = {
    "metadata": {"name": "vllm"},
    "spec": {"selector": {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "vllm"},
             "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]},
}  # fmt: skip
FRONTS = [
    {"host": "gpu-1", "address": "10.0.0.11", "port": 8000, "scheme": "https"},
    {"host": "gpu-2", "address": "10.0.0.12", "port": 8000, "scheme": "https"},
    {"host": "gpu-2", "address": "10.0.0.12", "port": 8001, "scheme": "https"},
]


def settings(**overrides):
    base = {
        "name": "vllm-api", "namespace": "llm-training", "port": 8000, "target": "internal", "labels": {},
        "external_endpoints": FRONTS, "internal_service_name": "vllm", "internal_service": INTERNAL_SVC,
        "current": None, "allow_scheme_change": False,
    }  # fmt: skip
    return {**base, **overrides}


def test_internal_copies_the_deployment_services_selector_and_target_port():
    out = ve.endpoint_objects(settings())
    spec = out["service"]["spec"]
    assert spec["selector"] == INTERNAL_SVC["spec"]["selector"]
    assert spec["ports"] == [
        {"name": "api", "port": 8000, "protocol": "TCP", "targetPort": "http", "appProtocol": "http"}
    ]
    assert out["slices"] == [] and out["scheme"] == "http"
    assert out["service"]["metadata"]["annotations"] == {ve.TARGET_ANNOTATION: "internal", ve.SCHEME_ANNOTATION: "http"}


def test_external_has_no_selector_and_one_slice_per_front_port():
    out = ve.endpoint_objects(settings(target="external"))
    assert "selector" not in out["service"]["spec"]
    assert [s["metadata"]["name"] for s in out["slices"]] == ["vllm-api-external-8000", "vllm-api-external-8001"]
    first = out["slices"][0]
    assert first["addressType"] == "IPv4"
    assert first["metadata"]["labels"][ve.SERVICE_NAME_LABEL] == "vllm-api"
    assert first["metadata"]["labels"][ve.MANAGED_BY_LABEL] == "llmops.platform"
    assert [e["addresses"] for e in first["endpoints"]] == [["10.0.0.11"], ["10.0.0.12"]]
    assert first["ports"] == [{"name": "api", "port": 8000, "protocol": "TCP", "appProtocol": "https"}]
    assert out["scheme"] == "https"


def test_a_flip_back_to_internal_leaves_only_the_managed_slices_stale():
    external = ve.endpoint_objects(settings(target="external"))["slices"]
    controllers = [
        {"metadata": {"name": "vllm-api-abcde", "labels": {ve.MANAGED_BY_LABEL: "endpointslice-controller.k8s.io"}}}
    ]
    out = FILTERS["vllm_endpoint_objects"](settings(), external + controllers)
    assert out["stale_slices"] == ["vllm-api-external-8000", "vllm-api-external-8001"]
    # Same target again: nothing stale.
    again = FILTERS["vllm_endpoint_objects"](settings(target="external"), external)
    assert again["stale_slices"] == []


def test_a_scheme_change_is_refused_unless_allowed():
    current = ve.endpoint_objects(settings())["service"]
    with pytest.raises(ve.EndpointError, match=r"from http to https.*vllm_endpoint_allow_scheme_change"):
        ve.endpoint_objects(settings(target="external", current=current))
    assert (
        ve.endpoint_objects(settings(target="external", current=current, allow_scheme_change=True))["scheme"] == "https"
    )
    plain = [dict(f, scheme="http") for f in FRONTS]
    assert (
        ve.endpoint_objects(settings(target="external", current=current, external_endpoints=plain))["scheme"] == "http"
    )


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"name": "Vllm_API"}, "vllm_endpoint_name"),
        ({"name": "a" * 64}, "vllm_endpoint_name"),
        ({"namespace": "../kube-system"}, "vllm_endpoint_namespace"),
        ({"port": 0}, "vllm_endpoint_port"),
        ({"port": True}, "vllm_endpoint_port"),
        ({"port": 70000}, "vllm_endpoint_port"),
        ({"target": "both"}, "vllm_endpoint_target"),
        ({"labels": {"kubernetes.io/service-name": "x"}}, "vllm_endpoint_labels"),
        ({"labels": {"team": "a b"}}, "vllm_endpoint_labels"),
        ({"internal_service": None}, "vllm_endpoint_internal_service"),
        ({"internal_service_name": "vllm-api"}, "vllm_endpoint_internal_service"),
        ({"target": "external", "internal_service_name": "vllm-api"}, "vllm_endpoint_internal_service"),
        ({"current": INTERNAL_SVC}, "vllm_endpoint_name"),
        ({"internal_service": {"spec": {"ports": [{"port": 8000}]}}}, "vllm_endpoint_internal_service"),
        ({"target": "external", "external_endpoints": []}, "vllm_endpoint_external_endpoints"),
        (
            {"target": "external", "external_endpoints": [{"address": "gpu-1.example.com", "port": 8000}]},
            "vllm_endpoint_external_endpoints[0]",
        ),
        (
            {"target": "external", "external_endpoints": [{"address": "127.0.0.1", "port": 8000}]},
            "vllm_endpoint_external_endpoints[0]",
        ),
        (
            {"target": "external", "external_endpoints": [{"address": "0.0.0.0", "port": 8000}]},
            "vllm_endpoint_external_endpoints[0]",
        ),
        (
            {"target": "external", "external_endpoints": [{"address": "10.0.0.1", "port": "80; rm"}]},
            "vllm_endpoint_external_endpoints[0].port",
        ),
        (
            {"target": "external", "external_endpoints": [{"address": "10.0.0.1", "port": 8000, "scheme": "ftp"}]},
            "vllm_endpoint_external_endpoints[0].scheme",
        ),
        ({"target": "external", "external_endpoints": [*FRONTS, FRONTS[0]]}, "vllm_endpoint_external_endpoints[3]"),
        (
            {"target": "external", "external_endpoints": [FRONTS[0], {"address": "fd00::1", "port": 8000}]},
            "vllm_endpoint_external_endpoints",
        ),
        (
            {"target": "external", "external_endpoints": [FRONTS[0], dict(FRONTS[1], scheme="http")]},
            "vllm_endpoint_external_endpoints",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(overrides, variable):
    with pytest.raises(AnsibleFilterError) as caught:
        FILTERS["vllm_endpoint_objects"](settings(**overrides))
    assert variable in str(caught.value)


def test_host_fronts_one_per_instance_with_the_fronts_scheme():
    hostvars = {
        "gpu-2": {
            "ansible_host": "10.0.0.12",
            "vllm_host_instances": [{"name": "a", "port": 8000}, {"name": "b", "port": 8001}],
        },
        "gpu-1": {"ansible_host": "10.0.0.11"},
        "gpu-3": {"ansible_host": "10.0.0.13", "vllm_host_tls": False},
    }  # fmt: skip
    fronts = FILTERS["vllm_host_fronts"](["gpu-2", "gpu-1", "gpu-3"], hostvars)
    assert [(f["host"], f["address"], f["port"], f["instance"], f["scheme"]) for f in fronts] == [
        ("gpu-1", "10.0.0.11", 8000, "main", "https"),
        ("gpu-2", "10.0.0.12", 8000, "a", "https"),
        ("gpu-2", "10.0.0.12", 8001, "b", "https"),
        ("gpu-3", "10.0.0.13", 8000, "main", "http"),
    ]
