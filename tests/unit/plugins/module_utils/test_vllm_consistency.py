"""The consistency gate with argv from the collection's own renderers (systemd unit, Deployment, chart)."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.llmops.platform.plugins.module_utils import vllm_consistency as vc
from ansible_collections.llmops.platform.plugins.module_utils import vllm_server as vs
from ansible_collections.llmops.platform.plugins.modules import vllm_consistency

CFG = {
    "model": "/storage/models/merged-model/versions/3f2a",
    "served_model_name": "chat",
    "device": "cuda",
    "dtype": "bfloat16",
    "max_model_len": 8192,
    "gpu_memory_utilization": 0.9,
    "enable_prefix_caching": True,
    "extra_args": ["--seed", "7", "--disable-log-requests"],
}
DIGEST = "sha256:" + "ab" * 32


def host_args(**change):
    """What a production host's unit runs: another model path and port than the cluster."""
    return vs.render_server_args(dict(CFG, model="/srv/vllm/models/merged-model/current", port=8100, **change))


def chart_args(**change):
    spec = vs.render_helm_model_spec(dict(CFG, **change), "chat", "vllm/vllm-openai", "v0.32.0")
    return vs.effective_args_from_helm_model_spec(spec)


def side(args, version="0.32.0", digest=DIGEST, **more):
    return dict(version=version, model_digest=digest, args=args, **more)


def test_the_same_server_rendered_three_ways_is_consistent():
    deployment = vs.render_server_args(CFG)
    for other in (host_args(), chart_args()):
        result = vc.compare_sides(side(deployment), side(other))
        assert result["consistent"], result["differences"]
        assert result["not_compared"] == [] and result["ignored"] == ["model", "host", "port"]
        assert result["baseline_config"]["max_model_len"] == result["candidate_config"]["max_model_len"] == 8192


@pytest.mark.parametrize(
    ("candidate", "item", "base", "cand"),
    [
        (side(host_args(max_model_len=4096)), "--max-model-len (max_model_len)", 8192, 4096),
        (side(host_args(dtype="float16")), "--dtype (dtype)", "bfloat16", "float16"),
        (side(host_args(enable_prefix_caching=False)), "--enable-prefix-caching (enable_prefix_caching)", True, False),
        (
            side(host_args(served_model_name="chat-v2")),
            "--served-model-name (served_model_name)",
            ["chat"],
            ["chat-v2"],
        ),
        (
            side(host_args(extra_args=["--seed", "8", "--disable-log-requests"])),
            "extra_args",
            ["--disable-log-requests", "--seed", "7"],
            ["--disable-log-requests", "--seed", "8"],
        ),
        (side(host_args(), version="0.31.1"), "vLLM version", "0.32.0", "0.31.1"),
        (side(host_args(), digest="sha256:" + "cd" * 32), "model content digest", DIGEST, "sha256:" + "cd" * 32),
        (side(host_args(), version=None), "vLLM version", "0.32.0", None),
        (side(None), "server arguments", "given", None),
    ],
)
def test_each_kind_of_drift_is_named_with_both_values(candidate, item, base, cand):
    result = vc.compare_sides(side(vs.render_server_args(CFG)), candidate)
    assert not result["consistent"]
    assert len(result["differences"]) == 1, result["differences"]
    assert result["differences"][0] == {"item": item, "baseline": base, "candidate": cand}


def test_ignored_settings_and_facts_given_for_neither_side():
    base = {"args": vs.render_server_args(CFG)}
    cand = {"args": host_args(tensor_parallel_size=2)}
    assert not vc.compare_sides(base, cand)["consistent"]
    result = vc.compare_sides(base, cand, ["model", "host", "port", "tensor_parallel_size"])
    assert result["consistent"] and result["not_compared"] == ["vLLM version", "model content digest"]
    assert vc.compare_sides({}, {})["not_compared"] == ["vLLM version", "model content digest", "server arguments"]


def test_an_unknown_ignore_name_or_an_argv_that_is_not_vllm_is_refused():
    with pytest.raises(vc.ConsistencyError, match="ignore names settings that do not exist: max_len;"):
        vc.compare_sides(side(host_args()), side(host_args()), ["max_len"])
    with pytest.raises(vc.ConsistencyError, match=r"^candidate.args cannot be read as vLLM server arguments: .*dtype"):
        vc.compare_sides(side(host_args()), side(["--model", "/m", "--dtype", "float128"]))


def run_module(args, capsys):
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        vllm_consistency.main()
    return exit_info.value.code, json.loads(capsys.readouterr().out)


def test_the_module_fails_naming_each_difference_and_both_sides(capsys):
    args = {
        "baseline": dict(side(vs.render_server_args(CFG)), name="staging"),
        "candidate": dict(side(host_args(max_model_len=4096), digest="sha256:" + "cd" * 32), name="gpu-1"),
        "_ansible_check_mode": True,
    }
    rc, result = run_module(args, capsys)
    assert rc == 1 and result["consistent"] is False
    assert result["msg"] == (
        "staging and gpu-1 are not the same server: "
        f"model content digest: '{DIGEST}' on staging, 'sha256:{'cd' * 32}' on gpu-1; "
        "--max-model-len (max_model_len): 8192 on staging, 4096 on gpu-1"
    )
    args["candidate"] = dict(side(chart_args()), name="gpu-1")
    rc, result = run_module(args, capsys)
    assert rc == 0 and result["consistent"] is True and result["msg"] == "staging and gpu-1 run the same server"
