"""LoRA adapters in the vLLM server configuration model and in both layouts' variable checks.

One declaration (``lora_adapters``: name, path, rank) becomes --enable-lora, --lora-modules NAME=PATH and
--max-lora-rank; ``lora_runtime_updating`` becomes VLLM_ALLOW_RUNTIME_LORA_UPDATING=True in the environment.
The roles take them from vllm_host_lora_adapters / vllm_k8s_lora_adapters and name those variables in errors.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
from plan_support import role_settings

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from test_k8s_plan import vllm as k8s_settings  # noqa: E402

from ansible_collections.llmops.platform.plugins.filter.vllm_server import FilterModule  # noqa: E402
from ansible_collections.llmops.platform.plugins.module_utils import vllm_server as vs  # noqa: E402
from ansible_collections.llmops.platform.plugins.module_utils.k8s_plan import K8sPlanError, plan_vllm_k8s  # noqa: E402
from ansible_collections.llmops.platform.plugins.module_utils.vllm_host_plan import (  # noqa: E402
    HostPlanError,
    plan_host,
)

BASE = {"model": "/srv/models/tiny/current", "served_model_name": "tiny", "device": "cpu"}
SQL = {"name": "sql", "path": "/srv/models/adapters/sql/current", "rank": 8}
CHAT = {"name": "chat-v2", "path": "/srv/models/adapters/chat/current", "rank": 32}


def config(**overrides: Any) -> Dict[str, Any]:
    return vs.normalize_server_config(dict(BASE, **overrides))


def error_of(**overrides: Any) -> vs.VllmConfigError:
    with pytest.raises(vs.VllmConfigError) as info:
        vs.normalize_server_config(dict(BASE, **overrides))
    return info.value


def test_adapters_render_enable_lora_modules_and_the_smallest_rank_that_fits():
    args = vs.render_server_args(dict(BASE, lora_adapters=[SQL, CHAT], max_loras=2))
    i = args.index("--lora-modules")
    assert args[i : i + 3] == [
        "--lora-modules",
        "chat-v2=/srv/models/adapters/chat/current",
        "sql=/srv/models/adapters/sql/current",
    ]
    assert "--enable-lora" in args
    assert args[args.index("--max-lora-rank") + 1] == "32"
    assert args[args.index("--max-loras") + 1] == "2"
    # rank 20 is no vLLM choice: the next one up
    assert config(lora_adapters=[dict(SQL, rank=20)])["max_lora_rank"] == 32
    # no rank given: vLLM's own default (16) applies, nothing rendered
    assert "--max-lora-rank" not in vs.render_server_args(dict(BASE, lora_adapters=[dict(SQL, rank=None)]))


def test_adapters_round_trip_through_the_argv_and_normalize_is_idempotent():
    cfg = config(lora_adapters=[SQL, CHAT], lora_runtime_updating=True)
    assert vs.normalize_server_config(cfg) == cfg
    parsed = vs.parse_server_args(vs.render_server_args(cfg))
    for key in ("enable_lora", "lora_modules", "max_lora_rank"):
        assert parsed[key] == cfg[key], key


def test_runtime_updating_is_an_environment_variable_not_a_flag():
    cfg = config(lora_adapters=[SQL], lora_runtime_updating=True)
    assert vs.server_environment(cfg) == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    assert not any("RUNTIME" in word.upper() for word in vs.render_server_args(cfg))
    assert vs.server_environment(config(lora_adapters=[SQL])) == {}
    # runtime updating alone (no adapter at start) still needs --enable-lora
    assert error_of(lora_runtime_updating=True).field == "lora_runtime_updating"
    cfg = config(enable_lora=True, lora_runtime_updating=True)
    assert "--enable-lora" in vs.render_server_args(cfg) and vs.server_environment(cfg)
    assert FilterModule().filters()["vllm_server_environment"](
        dict(BASE, enable_lora=True, lora_runtime_updating=True)
    ) == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


@pytest.mark.parametrize(
    ("adapters", "field", "reason"),
    [
        ([dict(SQL, name="../etc")], "lora_adapters[0].name", "letters, digits and ._-"),
        ([dict(SQL, name="a=b")], "lora_adapters[0].name", "no '='"),
        ([dict(SQL, name="org/sql")], "lora_adapters[0].name", "'/'"),
        ([dict(SQL, name="a b")], "lora_adapters[0].name", "spaces"),
        ([dict(SQL, name="")], "lora_adapters[0].name", "letters"),
        ([SQL, dict(CHAT, name="sql")], "lora_adapters[1].name", "declared twice"),
        ([dict(SQL, name="tiny")], "lora_adapters[0].name", "served model name"),
        ([dict(SQL, path="/srv/models/adapters/../../etc")], "lora_adapters[0].path", "'..'"),
        ([dict(SQL, path="")], "lora_adapters[0].path", "non-empty"),
        ([{"name": "sql"}], "lora_adapters[0].path", "is required"),
        ([dict(SQL, rank=0)], "lora_adapters[0].rank", "between 1 and 512"),
        ([dict(SQL, rank="eight")], "lora_adapters[0].rank", "LoRA rank"),
        ([dict(SQL, revision="x")], "lora_adapters[0].revision", "unknown key"),
        (["sql=/a"], "lora_adapters[0]", "mapping"),
        ({"sql": "/a"}, "lora_adapters", "must be a list"),
    ],
)
def test_bad_adapters_name_the_field(adapters, field, reason):
    exc = error_of(lora_adapters=adapters)
    assert exc.field == field, str(exc)
    assert reason in exc.message, str(exc)


def test_conflicts_with_other_fields_are_refused():
    exc = error_of(lora_adapters=[CHAT], max_lora_rank=16)
    assert exc.field == "lora_adapters[0].rank" and "above max_lora_rank 16" in exc.message
    assert error_of(lora_adapters=[SQL], enable_lora=False).field == "enable_lora"
    exc = error_of(lora_adapters=[SQL], enable_lora=True, lora_modules={"sql": "/elsewhere"})
    assert exc.field == "lora_adapters[0].name" and "another path" in exc.message
    assert error_of(enable_lora=True, lora_modules={"tiny": "/a"}).field == "lora_modules.tiny"


def test_lora_adapter_rank_reads_adapter_config(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    assert vs.lora_adapter_rank(str(tmp_path)) == 8
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ValueError, match="no LoRA rank"):
        vs.lora_adapter_rank(str(tmp_path))


# ---- vllm_host: the role variables reach every instance's argv and environment ---------------------------
HOST = role_settings("vllm_host")


def host(**overrides: Any) -> Dict[str, Any]:
    base = copy.deepcopy(HOST)
    base.update(
        profile="cpu",
        api_key="k3y-0123456789abcdef",
        model_path="/srv/models/tiny/current",
        served_model_name="tiny",
        tls_local_ca_dir="/srv/pki/ca",
    )
    base.update(overrides)
    return base


def host_fails(variable: str, reason: str, **overrides: Any) -> None:
    with pytest.raises(HostPlanError) as info:
        plan_host(host(**overrides))
    assert str(info.value).startswith(variable + ":"), str(info.value)
    assert reason in str(info.value), str(info.value)


def test_vllm_host_serves_the_adapters_on_every_instance():
    plan = plan_host(
        host(
            lora_adapters=[SQL],
            lora_runtime_updating=True,
            instances=[{"name": "a", "port": 8000}, {"name": "b", "port": 8001}],
        )
    )
    for server in plan["servers"]:
        assert "sql=/srv/models/adapters/sql/current" in server["args"]
        assert vs.server_environment(server["config"]) == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    assert "--enable-lora" not in plan_host(host())["servers"][0]["args"]


def test_vllm_host_errors_name_the_role_variable():
    host_fails("vllm_host_lora_adapters[0].name", "letters", lora_adapters=[dict(SQL, name="a/b")])
    host_fails("vllm_host_lora_adapters[0].name", "served model name", lora_adapters=[dict(SQL, name="tiny")])
    host_fails("vllm_host_lora_adapters[1].name", "declared twice", lora_adapters=[SQL, SQL])
    host_fails("vllm_host_lora_adapters[0].path", "'..'", lora_adapters=[dict(SQL, path="/srv/a/../../home/x")])
    host_fails("vllm_host_lora_runtime_updating", "boolean", lora_runtime_updating="maybe")
    host_fails(
        "vllm_host_instances[0].lora_modules.sql", "sandbox hides", lora_adapters=[dict(SQL, path="/home/x/sql")]
    )
    host_fails(
        "vllm_host_server_defaults.lora_adapters", "use vllm_host_lora_adapters", server_defaults={"lora_adapters": []}
    )
    host_fails(
        "vllm_host_instances[0].lora_runtime_updating",
        "use vllm_host_lora_runtime_updating",
        instances=[{"name": "main", "lora_runtime_updating": True}],
    )
    host_fails(
        "vllm_host_instances[0].environment.VLLM_ALLOW_RUNTIME_LORA_UPDATING",
        "vllm_host_lora_runtime_updating",
        instances=[{"name": "main", "environment": {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}}],
    )


# ---- vllm_k8s ------------------------------------------------------------------------------------------
K8S_SQL = {"name": "sql", "path": "/storage/output/lora-adapter", "rank": 8}


def k8s_fails(variable: str, reason: str, **overrides: Any) -> None:
    with pytest.raises(K8sPlanError) as info:
        plan_vllm_k8s(k8s_settings(**overrides))
    assert str(info.value).startswith(variable + ":"), str(info.value)
    assert reason in str(info.value), str(info.value)


def test_vllm_k8s_plans_the_adapters():
    plan = plan_vllm_k8s(k8s_settings(lora_adapters=[K8S_SQL], lora_runtime_updating=True))
    assert plan["config"]["lora_modules"] == {"sql": "/storage/output/lora-adapter"}
    assert plan["config"]["max_lora_rank"] == 8 and plan["config"]["enable_lora"] is True
    assert vs.server_environment(plan["config"]) == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


def test_vllm_k8s_errors_name_the_role_variable():
    k8s_fails(
        "vllm_k8s_lora_adapters[0].path", "not inside the model volume", lora_adapters=[dict(K8S_SQL, path="/srv/x")]
    )
    k8s_fails("vllm_k8s_lora_adapters[0].name", "served model name", lora_adapters=[dict(K8S_SQL, name="merged-model")])
    k8s_fails("vllm_k8s_lora_adapters[0].rank", "above max_lora_rank", lora_adapters=[dict(K8S_SQL, rank=64)],
              server={"max_lora_rank": 16})  # fmt: skip
    k8s_fails("vllm_k8s_server.lora_adapters", "use vllm_k8s_lora_adapters", server={"lora_adapters": [K8S_SQL]})
    k8s_fails(
        "vllm_k8s_environment.VLLM_ALLOW_RUNTIME_LORA_UPDATING",
        "vllm_k8s_lora_runtime_updating",
        environment={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
    )
