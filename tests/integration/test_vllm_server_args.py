"""The rendered vLLM arguments are accepted by the real vLLM 0.32.0 argument parser, with the intended values.

No server is started: the vLLM virtualenv's own `make_arg_parser(FlexibleArgumentParser())` (the parser
`python -m vllm.entrypoints.openai.api_server` and `vllm serve` use) parses the argv the systemd unit and the
Kubernetes container get, and the argv the production-stack chart builds from the Helm values.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.llmops.platform.plugins.module_utils import vllm_server as vs  # noqa: E402

VLLM_PYTHON = Path(os.environ.get("LLMOPS_VLLM_VENV", "/nonexistent")) / "bin" / "python"

# Runs inside the vLLM virtualenv: parse each argv with vLLM's own parser, print the values as JSON.
PARSE = r"""
import json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
try:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
except ImportError:  # vLLM before the launchers package
    from vllm.entrypoints.openai.cli_args import make_arg_parser, validate_parsed_serve_args
import vllm
out = {"version": vllm.__version__, "parsed": []}
for argv in json.load(sys.stdin):
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    validate_parsed_serve_args(args)
    values = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None), list))}
    values["model"] = args.model_tag or args.model
    values["lora_modules"] = None if args.lora_modules is None else {m.name: m.path for m in args.lora_modules}
    out["parsed"].append(values)
print("RESULT " + json.dumps(out, default=str))
"""

CONFIGS = {
    "tiny-cpu": {
        "model": "/models/tiny",
        "served_model_name": "tiny",
        "host": "127.0.0.1",
        "port": 18123,
        "device": "cpu",
        "dtype": "float32",
        "max_model_len": 256,
        "max_num_seqs": 4,
        "enforce_eager": True,
        "kv_cache_memory_bytes": "64M",
    },
    "lora-cuda": {
        "model": "/models/base model",
        "served_model_name": ["base", "assistant"],
        "dtype": "bfloat16",
        "max_model_len": 8192,
        "tensor_parallel_size": 2,
        "pipeline_parallel_size": 2,
        "gpu_memory_utilization": 0.85,
        "trust_remote_code": True,
        "enable_lora": True,
        "lora_modules": {"sql": "/adapters/sql", "chat": "/adapters/chat v2"},
        "max_loras": 2,
        "max_lora_rank": 32,
        "enable_prefix_caching": False,
        "extra_args": ["--seed", "3", "--disable-log-stats", "--max-num-batched-tokens=2048"],
    },
    "defaults": {"model": "Qwen/Qwen2.5-0.5B-Instruct", "kv_cache_memory_bytes": 1073741824},
    "long-context": {"model": "/m", "max_model_len": 1048576, "enable_prefix_caching": True},
}

# vLLM's own defaults for what a config leaves unset (checked against the parser below).
VLLM_DEFAULTS = {"max_loras": 1, "max_lora_rank": 16}


def helm_spec(cfg):
    return vs.render_helm_model_spec(cfg, "m", "vllm/vllm-openai", "v0.32.0", container_port=cfg.get("port", 8000))


@pytest.fixture(scope="module")
def parsed():
    """vLLM's parse of [argv, helm argv] for every config that the chart can take, in one interpreter start."""
    if not VLLM_PYTHON.exists():
        pytest.skip("LLMOPS_VLLM_VENV is not set up (run through scripts/run after scripts/setup.sh)")
    batches, index = [], {}
    for name, cfg in CONFIGS.items():
        index[name, "argv"] = len(batches)
        batches.append(vs.render_server_args(cfg))
        if cfg.get("host", "0.0.0.0") == "0.0.0.0":
            index[name, "helm"] = len(batches)
            batches.append(vs.effective_args_from_helm_model_spec(helm_spec(cfg)))
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, VLLM_TARGET_DEVICE="cpu", VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1")
        env["VLLM_CACHE_ROOT"] = cache
        done = subprocess.run(
            [str(VLLM_PYTHON), "-c", PARSE],
            input=json.dumps(batches),
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["version"] == "0.32.0"
    return {key: result["parsed"][i] for key, i in index.items()}


def expected_values(cfg):
    norm = vs.normalize_server_config(cfg)
    values = {
        "model": norm["model"],
        "served_model_name": norm["served_model_name"],
        "host": norm["host"],
        "port": norm["port"],
        "dtype": norm["dtype"],
        "max_model_len": norm["max_model_len"],
        "tensor_parallel_size": norm["tensor_parallel_size"],
        "pipeline_parallel_size": norm["pipeline_parallel_size"],
        "max_num_seqs": norm["max_num_seqs"],
        "enforce_eager": norm["enforce_eager"],
        "trust_remote_code": norm["trust_remote_code"],
        "kv_cache_memory_bytes": (
            None if norm["kv_cache_memory_bytes"] is None else vs.size_to_bytes(norm["kv_cache_memory_bytes"])
        ),
        "lora_modules": norm["lora_modules"] or None,
        "max_loras": norm["max_loras"] or VLLM_DEFAULTS["max_loras"],
        "max_lora_rank": norm["max_lora_rank"] or VLLM_DEFAULTS["max_lora_rank"],
        "enable_prefix_caching": norm["enable_prefix_caching"],
    }
    if norm["gpu_memory_utilization"] is not None:
        values["gpu_memory_utilization"] = norm["gpu_memory_utilization"]
    return values


@pytest.mark.parametrize("name", CONFIGS)
def test_vllm_parses_the_rendered_argv_to_the_config(parsed, name):
    cfg = CONFIGS[name]
    got = parsed[name, "argv"]
    for key, value in expected_values(cfg).items():
        assert got[key] == value, f"{key}: vLLM parsed {got[key]!r}, the config says {value!r}"
    assert bool(got["enable_lora"]) is vs.normalize_server_config(cfg)["enable_lora"]
    assert got["api_key"] is None


def test_cpu_config_leaves_gpu_memory_utilization_at_vllm_default(parsed):
    defaults = parsed["defaults", "argv"]
    assert defaults["gpu_memory_utilization"] == 0.9  # rendered for cuda
    assert parsed["tiny-cpu", "argv"]["gpu_memory_utilization"] != 0.9  # not rendered: vLLM's own default


def test_extra_args_reach_vllm(parsed):
    got = parsed["lora-cuda", "argv"]
    assert got["seed"] == 3
    assert got["disable_log_stats"] is True
    assert got["max_num_batched_tokens"] == 2048


@pytest.mark.parametrize("name", [n for n, c in CONFIGS.items() if c.get("host", "0.0.0.0") == "0.0.0.0"])
def test_helm_values_give_vllm_the_same_settings(parsed, name):
    """What the chart starts vLLM with equals what the systemd unit and the container start it with."""
    from_argv = dict(parsed[name, "argv"])
    from_helm = dict(parsed[name, "helm"])
    if vs.normalize_server_config(CONFIGS[name])["enable_prefix_caching"] is None:
        # The chart always sets prefix caching; unset configs pin vLLM's generative default.
        assert from_helm.pop("enable_prefix_caching") is vs.HELM_PREFIX_CACHING_WHEN_UNSET
        assert from_argv.pop("enable_prefix_caching") is None
    # Positional model (`vllm serve MODEL`) versus --model: the same model either way.
    from_argv.pop("model_tag")
    from_helm.pop("model_tag")
    differing = {k: (from_argv[k], from_helm.get(k)) for k in from_argv if from_argv[k] != from_helm.get(k)}
    assert differing == {}
