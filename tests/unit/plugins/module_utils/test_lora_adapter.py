"""Loading and unloading LoRA adapters on a running vLLM (lora_adapter.apply), and openai_health's
expected_adapters, against a scripted transport whose /v1/models follows the loads and unloads."""

from __future__ import annotations

import pytest

from ansible_collections.llmops.platform.plugins.module_utils import lora_adapter as la
from ansible_collections.llmops.platform.plugins.module_utils import openai_client as oc

BASE = "http://127.0.0.1:18000"


class FakeVllm:
    """/v1/models, /v1/load_lora_adapter and /v1/unload_lora_adapter of vLLM 0.32 serving `tiny`."""

    def __init__(self, adapters=None, runtime=True):
        self.adapters = dict(adapters or {})  # name -> path
        self.runtime = runtime

    def models(self, _call):
        data = [{"id": "tiny", "object": "model", "root": "/srv/models/tiny", "parent": None}]
        data += [{"id": n, "object": "model", "root": p, "parent": "tiny"} for n, p in self.adapters.items()]
        return 200, {"object": "list", "data": data}

    def load(self, call):
        if not self.runtime:
            return 404, {"detail": "Not Found"}
        name = call.payload["lora_name"]
        if name in self.adapters:
            return 400, {"error": {"message": f"The lora adapter '{name}' has already been loaded.", "code": 400}}
        self.adapters[name] = call.payload["lora_path"]
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, call):
        if not self.runtime:
            return 404, {"detail": "Not Found"}
        self.adapters.pop(call.payload["lora_name"])
        return 200, f"Success: LoRA adapter '{call.payload['lora_name']}' removed successfully."

    def routes(self):
        return {"/v1/models": self.models, "/v1/load_lora_adapter": self.load, "/v1/unload_lora_adapter": self.unload}


@pytest.fixture
def server(clock, make_transport):
    def make(**kwargs):
        vllm = FakeVllm(**kwargs)
        transport = make_transport(vllm.routes())
        endpoint = oc.OpenAIEndpoint(BASE, api_key="s3cret-key", transport=transport, clock=clock)
        return vllm, transport, endpoint

    return make


def posts(transport):
    return [(c.path, c.payload) for c in transport.calls if c.method == "POST"]


def test_load_then_idempotent_then_unload(server):
    vllm, transport, endpoint = server(adapters={"chat": "/a/chat"})
    result = la.apply(endpoint, "sql", "/a/sql", "present")
    assert result["changed"] is True and result["actions"] == ["load"]
    assert posts(transport) == [("/v1/load_lora_adapter", {"lora_name": "sql", "lora_path": "/a/sql"})]
    assert {"name": "sql", "parent": "tiny", "path": "/a/sql"} in result["adapters"]
    assert [a["name"] for a in result["before"]] == ["chat"]
    assert transport.calls[0].headers["Authorization"] == "Bearer s3cret-key"

    again = la.apply(endpoint, "sql", "/a/sql", "present")
    assert again["changed"] is False and again["actions"] == []
    assert len(posts(transport)) == 1  # nothing sent

    gone = la.apply(endpoint, "sql", None, "absent")
    assert gone["changed"] is True and gone["actions"] == ["unload"]
    assert "sql" not in vllm.adapters and [a["name"] for a in gone["adapters"]] == ["chat"]
    assert la.apply(endpoint, "sql", None, "absent")["changed"] is False


def test_another_path_is_unloaded_and_loaded_again(server):
    vllm, _transport, endpoint = server(adapters={"sql": "/a/sql/v1"})
    result = la.apply(endpoint, "sql", "/a/sql/v2", "present")
    assert result["actions"] == ["unload", "load"]
    assert vllm.adapters == {"sql": "/a/sql/v2"}


def test_check_mode_reads_and_sends_nothing(server):
    vllm, transport, endpoint = server()
    result = la.apply(endpoint, "sql", "/a/sql", "present", check_mode=True)
    assert result["changed"] is True and result["actions"] == ["load"]
    assert posts(transport) == [] and vllm.adapters == {}
    assert [c.path for c in transport.calls] == ["/v1/models"]


def test_a_server_without_runtime_updating_names_the_variable(server):
    _vllm, _transport, endpoint = server(runtime=False)
    with pytest.raises(la.LoraAdapterError) as info:
        la.apply(endpoint, "sql", "/a/sql", "present")
    assert info.value.details["status"] == 404
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in info.value.msg
    assert "vllm_host_lora_runtime_updating" in info.value.msg


def test_engine_error_500_names_the_variable_too(clock, make_transport):
    transport = make_transport(
        {
            "/v1/models": (200, {"data": [{"id": "tiny", "parent": None}]}),
            "/v1/load_lora_adapter": (500, "Internal Server Error"),
        }
    )
    endpoint = oc.OpenAIEndpoint(BASE, transport=transport, clock=clock)
    with pytest.raises(la.LoraAdapterError, match="lora_runtime_updating"):
        la.apply(endpoint, "sql", "/a/sql", "present")


def test_a_bad_adapter_reports_vllms_answer(server, clock, make_transport):
    transport = make_transport(
        {
            "/v1/models": (200, {"data": [{"id": "tiny", "parent": None}]}),
            "/v1/load_lora_adapter": (404, {"error": {"message": "No adapter found for /nope", "code": 404}}),
        }
    )
    endpoint = oc.OpenAIEndpoint(BASE, transport=transport, clock=clock)
    with pytest.raises(la.LoraAdapterError) as info:
        la.apply(endpoint, "sql", "/nope", "present")
    assert "No adapter found for /nope" in info.value.msg
    assert "RUNTIME" not in info.value.msg


def test_a_load_the_listing_does_not_show_fails(clock, make_transport):
    transport = make_transport(
        {"/v1/models": (200, {"data": [{"id": "tiny", "parent": None}]}), "/v1/load_lora_adapter": (200, "Success")}
    )
    endpoint = oc.OpenAIEndpoint(BASE, transport=transport, clock=clock)
    with pytest.raises(la.LoraAdapterError, match="does not list 'sql'"):
        la.apply(endpoint, "sql", "/a/sql", "present")


@pytest.mark.parametrize(
    ("name", "path", "state", "reason"),
    [
        ("../x", "/a", "present", "name:"),
        ("a/b", "/a", "present", "name:"),
        ("sql", "", "present", "path: required"),
        ("sql", "/a/../../etc", "present", "'..'"),
        ("tiny", "/a", "present", "served model of this server"),
    ],
)
def test_bad_parameters_fail_before_any_change(server, name, path, state, reason):
    vllm, transport, endpoint = server()
    with pytest.raises(la.LoraAdapterError, match=reason.replace("(", r"\(")):
        la.apply(endpoint, name, path, state)
    assert posts(transport) == [] and vllm.adapters == {}


def test_openai_health_expected_adapters(server, clock):
    _vllm, _transport, endpoint = server(adapters={"chat": "/a/chat"})
    check = oc.ReadinessCheck(
        endpoint, expected_adapters=["chat"], clock=clock, sleep=clock.sleep, wall_clock=clock.wall
    )
    result = check.run()
    assert result["adapters"] == [{"name": "chat", "parent": "tiny", "path": "/a/chat"}]
    assert result["model"] == "tiny"

    for expected, words in ((["chat", "sql"], "missing: ['sql']"), (["tiny"], "are served models, not adapters")):
        check = oc.ReadinessCheck(
            endpoint, expected_adapters=expected, clock=clock, sleep=clock.sleep, wall_clock=clock.wall
        )
        with pytest.raises(oc.ReadinessError) as info:
            check.run()
        assert words in info.value.msg, info.value.msg
        assert info.value.kind == "adapters" and not info.value.transient
