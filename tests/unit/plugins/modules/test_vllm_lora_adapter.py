"""The vllm_lora_adapter module's main(): arguments in, JSON result out, with a scripted vLLM."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.llmops.platform.plugins.modules import vllm_lora_adapter


@pytest.fixture
def run_main(monkeypatch, capsys):
    def run(args, transport):
        monkeypatch.setattr(vllm_lora_adapter, "UrlTransport", lambda params: transport)
        with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
            vllm_lora_adapter.main()
        output = capsys.readouterr().out
        result = json.loads(output)
        result["_output"], result["_rc"] = output, exit_info.value.code
        return result

    return run


def vllm(make_transport, adapters, runtime=True):
    def models(_call):
        data = [{"id": "tiny", "parent": None, "root": "/m"}]
        data += [{"id": n, "parent": "tiny", "root": p} for n, p in adapters.items()]
        return 200, {"object": "list", "data": data}

    def load(call):
        if not runtime:
            return 404, {"detail": "Not Found"}
        adapters[call.payload["lora_name"]] = call.payload["lora_path"]
        return 200, "Success"

    return make_transport({"/v1/models": models, "/v1/load_lora_adapter": load})


URL = "http://127.0.0.1:18000"


def test_check_mode_and_diff_predict_without_loading(run_main, make_transport):
    adapters = {"chat": "/a/chat"}
    transport = vllm(make_transport, adapters)
    args = {"url": URL, "api_key": "s3cret-key", "name": "sql", "path": "/a/sql", "_ansible_check_mode": True}
    result = run_main(dict(args, _ansible_diff=True), transport)
    assert result["_rc"] == 0 and result["changed"] is True and result["actions"] == ["load"]
    assert result["diff"] == {"before": {"adapters": ["chat"]}, "after": {"adapters": ["chat", "sql"]}}
    assert adapters == {"chat": "/a/chat"}
    assert "s3cret-key" not in result["_output"]

    args.pop("_ansible_check_mode")
    result = run_main(args, transport)
    assert result["changed"] is True and adapters["sql"] == "/a/sql"
    assert run_main(args, transport)["changed"] is False


def test_failures_say_what_enables_runtime_loading(run_main, make_transport):
    transport = vllm(make_transport, {}, runtime=False)
    result = run_main({"url": URL, "name": "sql", "path": "/a/sql"}, transport)
    assert result["_rc"] == 1 and result["failed"] is True and result["changed"] is False
    assert result["status"] == 404 and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in result["msg"]


def test_state_present_needs_a_path(run_main, make_transport):
    result = run_main({"url": URL, "name": "sql"}, vllm(make_transport, {}))
    assert result["_rc"] == 1 and "path" in result["msg"]
