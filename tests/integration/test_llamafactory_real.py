"""A real LLaMA-Factory LoRA SFT and merge on the CPU, reporting to a real MLflow tracking server.

One pipeline per module (fixture `pipeline`), the tests then check its pieces:

1. `mlflow server` starts on 127.0.0.1 (free port, SQLite backend store, artifacts in a temporary dir).
2. ansible-playbook renders train.yaml and merge.yaml through the collection's own entry point
   (`include_role: llmops.platform.training_cluster, tasks_from: render_llamafactory`), so the files
   that run here are the ones the cluster's ConfigMap gets from the same templates.
3. `llamafactory-cli train train.yaml` fine-tunes a LoRA adapter on the tiny Llama ($LLMOPS_FIXTURES/
   models/tiny) with the tiny alpaca dataset, offline, `report_to: mlflow`.
4. `llamafactory-cli export merge.yaml` merges the adapter into the base model.

Then: the adapter files exist; MLflow holds the run with its per-step loss (checked against the
trainer's own log); the merged directory passes llmops.platform.model_manifest, differs from the base,
equals base + scaling * B @ A for every LoRA pair, and loads and generates in transformers; the real
vLLM CPU server (test also marked `vllm`) serves it and completes with the tokens transformers gives.

Environment: scripts/setup_llamafactory.sh ($LLMOPS_LF_VENV, requirements/llamafactory.lock).
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
import yaml
from itest_support import PlaybookRun, VllmServer, fixture_model, free_port, required_env, write_playbook
from llamafactory_env import MlflowServer, lf_venv, offline_env, run_cli, run_python

from ansible_collections.llmops.platform.plugins.module_utils.vllm_server import (
    lora_adapter_rank,
    normalize_server_config,
    render_server_args,
    server_environment,
)

pytestmark = pytest.mark.llamafactory

EXPERIMENT = "llmops-llamafactory-test"
RUN_NAME = "tiny-lora-sft"
MAX_STEPS = 4
LORA_RANK = 8
LORA_ALPHA = 16


def role_vars(tmp: Path, model: Path, datasets: Path) -> Dict[str, Any]:
    """The role variables for a CPU run on the tiny model (everything else: the role's defaults)."""
    return {
        "training_cluster_render_dir": str(tmp / "configs"),
        "training_cluster_base_model": str(model),
        "training_cluster_template": "default",
        "training_cluster_dataset": ["tiny_alpaca"],
        "training_cluster_dataset_dir": str(datasets),
        "training_cluster_cutoff_len": 128,
        "training_cluster_preprocessing_num_workers": 1,
        "training_cluster_lora_rank": LORA_RANK,
        "training_cluster_lora_alpha": LORA_ALPHA,
        "training_cluster_adapter_dir": str(tmp / "adapter"),
        "training_cluster_merged_model_dir": str(tmp / "merged"),
        "training_cluster_per_device_train_batch_size": 4,
        "training_cluster_gradient_accumulation_steps": 1,
        "training_cluster_learning_rate": 0.001,
        "training_cluster_max_steps": MAX_STEPS,
        "training_cluster_lr_scheduler_type": "constant",
        "training_cluster_warmup_ratio": 0.0,
        "training_cluster_logging_steps": 1,
        "training_cluster_save_steps": 1000,
        "training_cluster_precision": "fp32",
        "training_cluster_use_cpu": True,
        "training_cluster_report_to": "mlflow",
        "training_cluster_run_name": RUN_NAME,
        "training_cluster_export_size": 1,
        "training_cluster_export_device": "cpu",
    }


def render_configs(tmp: Path, variables: Dict[str, Any]) -> Path:
    """Render train.yaml / merge.yaml with ansible-playbook through the role's render_llamafactory."""
    task = {
        "name": "Render the LLaMA-Factory configs",
        "ansible.builtin.include_role": {
            "name": "llmops.platform.training_cluster",
            "tasks_from": "render_llamafactory",
        },
        "vars": variables,
    }
    playbook = PlaybookRun(write_playbook([task], tmp)).wait(timeout=300)
    assert playbook.rc == 0, f"render playbook failed\n{playbook.stdout[-4000:]}\n{playbook.stderr[-2000:]}"
    return Path(variables["training_cluster_render_dir"])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    venv = lf_venv()
    tmp = tmp_path_factory.mktemp("llamafactory")
    model = fixture_model("tiny")
    datasets = required_env("LLMOPS_FIXTURES") / "datasets"
    variables = role_vars(tmp, model, datasets)

    started = time.monotonic()
    configs = render_configs(tmp, variables)
    train_config, merge_config = configs / "train.yaml", configs / "merge.yaml"
    timings = {"render_s": time.monotonic() - started}

    started = time.monotonic()
    mlflow = MlflowServer(venv, tmp / "mlflow").start()
    timings["mlflow_start_s"] = time.monotonic() - started
    try:
        env = offline_env(mlflow.url, EXPERIMENT, tmp)
        train = run_cli(venv, "train", train_config, env, tmp)
        export = run_cli(venv, "export", merge_config, env, tmp) if train.rc == 0 else None
        timings.update(train_s=train.duration, export_s=export.duration if export else None)
        yield {
            "venv": venv,
            "tmp": tmp,
            "model": model,
            "variables": variables,
            "train_config": yaml.safe_load(train_config.read_text()),
            "merge_config": yaml.safe_load(merge_config.read_text()),
            "adapter": Path(variables["training_cluster_adapter_dir"]),
            "merged": Path(variables["training_cluster_merged_model_dir"]),
            "mlflow": mlflow,
            "train": train,
            "export": export,
            "timings": timings,
        }
    finally:
        mlflow.stop()


def require_train(p: Dict[str, Any]) -> None:
    assert p["train"].rc == 0, f"llamafactory-cli train exited {p['train'].rc}\n{p['train'].tail()}"


def require_export(p: Dict[str, Any]) -> None:
    require_train(p)
    assert p["export"].rc == 0, f"llamafactory-cli export exited {p['export'].rc}\n{p['export'].tail()}"


def test_configs_come_from_the_role(pipeline):
    """The files that ran are the role's rendering of the variables (not hand-written)."""
    timings = {name: None if seconds is None else round(seconds, 1) for name, seconds in pipeline["timings"].items()}
    print(f"llamafactory pipeline timings (s): {json.dumps(timings)}")  # shown with -rP or -s
    train, merge, v = pipeline["train_config"], pipeline["merge_config"], pipeline["variables"]
    assert train["model_name_or_path"] == merge["model_name_or_path"] == v["training_cluster_base_model"]
    assert train["output_dir"] == merge["adapter_name_or_path"] == v["training_cluster_adapter_dir"]
    assert merge["export_dir"] == v["training_cluster_merged_model_dir"]
    assert (train["stage"], train["finetuning_type"], train["dataset"]) == ("sft", "lora", "tiny_alpaca")
    assert (train["use_cpu"], train["bf16"], train["fp16"]) == (True, False, False)
    assert (train["report_to"], train["run_name"], train["max_steps"]) == ("mlflow", RUN_NAME, MAX_STEPS)
    assert (merge["export_device"], merge["export_legacy_format"]) == ("cpu", False)
    text = (Path(v["training_cluster_render_dir"]) / "train.yaml").read_text()
    assert "llamafactory-cli train" in text  # the role's header comment


def test_train_writes_the_lora_adapter(pipeline):
    require_train(pipeline)
    adapter = pipeline["adapter"]
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["base_model_name_or_path"] == str(pipeline["model"])
    assert (config["r"], config["lora_alpha"]) == (LORA_RANK, LORA_ALPHA)
    # lora_target "all": every linear layer of the Llama blocks
    assert set(config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    state = json.loads((adapter / "trainer_state.json").read_text())
    assert state["global_step"] == MAX_STEPS


def test_mlflow_has_the_run_with_per_step_loss(pipeline):
    require_train(pipeline)
    mlflow: MlflowServer = pipeline["mlflow"]
    runs = mlflow.runs(EXPERIMENT)
    assert [r["info"]["run_name"] for r in runs] == [RUN_NAME]
    run = runs[0]
    assert run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
    assert {"loss", "grad_norm", "learning_rate", "train_loss", "train_runtime"} <= metrics.keys()
    assert float(params["learning_rate"]) == pytest.approx(0.001)
    assert int(params["max_steps"]) == MAX_STEPS

    # One loss point per step (logging_steps 1), equal to what the trainer wrote to its own log.
    history = sorted(mlflow.metric_history(run["info"]["run_id"], "loss"), key=lambda m: m["step"])
    assert [m["step"] for m in history] == list(range(1, MAX_STEPS + 1))
    trainer_log = [
        e for e in json.loads((pipeline["adapter"] / "trainer_state.json").read_text())["log_history"] if "loss" in e
    ]
    assert [e["loss"] for e in trainer_log] == pytest.approx([m["value"] for m in history], rel=1e-6)
    assert all(math.isfinite(m["value"]) and m["value"] > 0 for m in history)
    results = json.loads((pipeline["adapter"] / "all_results.json").read_text())
    assert metrics["train_loss"] == pytest.approx(results["train_loss"], rel=1e-6)


def test_merged_model_passes_model_manifest_and_differs_from_base(pipeline, run_module):
    require_export(pipeline)
    merged, base = pipeline["merged"], pipeline["model"]
    result, playbook = run_module("llmops.platform.model_manifest", {"path": str(merged)})
    assert playbook.rc == 0, playbook.stdout[-3000:]
    assert result["valid"] is True and result["errors"] == []
    assert result["model_type"] == "llama" and result["weight_format"] == "safetensors"
    paths = {e["path"] for e in result["manifest"]}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= paths
    base_result, _pb = run_module("llmops.platform.model_manifest", {"path": str(base)})
    assert base_result["valid"] is True
    assert result["content_digest"] != base_result["content_digest"]
    weights = {e["path"]: e["sha256"] for e in result["manifest"]}
    base_weights = {e["path"]: e["sha256"] for e in base_result["manifest"]}
    assert weights["model.safetensors"] != base_weights["model.safetensors"]


def test_the_adapter_is_versioned_like_a_model(pipeline, run_module):
    """model_manifest kind lora_adapter (what model_sync_kind lora_adapter syncs with) accepts the real adapter
    LLaMA-Factory wrote, reads its rank and digests it without the trainer's leftovers; as a model it is refused."""
    require_train(pipeline)
    adapter = str(pipeline["adapter"])
    result, playbook = run_module("llmops.platform.model_manifest", {"path": adapter, "kind": "lora_adapter"})
    assert playbook.rc == 0, playbook.stdout[-3000:]
    assert result["valid"] is True and result["errors"] == [], result["errors"]
    assert (result["lora_rank"], result["base_model"]) == (LORA_RANK, str(pipeline["model"]))
    paths = {e["path"] for e in result["manifest"]}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= paths
    # the trainer's leftovers (checkpoint-4/ with the optimizer state, training_args.bin) are not the adapter
    assert (pipeline["adapter"] / "training_args.bin").is_file()
    assert not any(p.startswith("checkpoint-") or p == "training_args.bin" for p in paths), sorted(paths)
    as_model, _pb = run_module("llmops.platform.model_manifest", {"path": adapter, "fail_on_invalid": False})
    assert as_model["valid"] is False and "config.json: missing" in as_model["errors"]


MERGE_CHECK = r"""
import json, sys
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

base_dir, adapter_dir, merged_dir = sys.argv[1:4]
MAX_NEW_TOKENS = int(sys.argv[5])
base = load_file(f"{base_dir}/model.safetensors")
merged = load_file(f"{merged_dir}/model.safetensors")
lora = load_file(f"{adapter_dir}/adapter_model.safetensors")
cfg = json.load(open(f"{adapter_dir}/adapter_config.json"))
scaling = cfg["lora_alpha"] / cfg["r"]
out = {"keys_equal": sorted(base) == sorted(merged), "lora_pairs": 0, "max_err": 0.0, "min_delta": None,
       "untouched_equal": True}
touched = set()
for key, a in lora.items():
    if ".lora_A." not in key:
        continue
    b = lora[key.replace(".lora_A.", ".lora_B.")]
    name = key.replace("base_model.model.", "", 1).replace(".lora_A.weight", ".weight")
    expected = base[name] + scaling * (b @ a)
    out["max_err"] = max(out["max_err"], (merged[name] - expected).abs().max().item())
    delta = (merged[name] - base[name]).abs().max().item()
    out["min_delta"] = delta if out["min_delta"] is None else min(out["min_delta"], delta)
    out["lora_pairs"] += 1
    touched.add(name)
for name in base:
    if name not in touched and not torch.equal(base[name], merged[name]):
        out["untouched_equal"] = False

tok = AutoTokenizer.from_pretrained(merged_dir)
model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
base_model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
out["model_class"] = type(model).__name__
out["logits_differ"], out["logits_finite"], out["new_tokens"], out["texts"], out["base_texts"] = [], True, [], {}, {}
for prompt in json.loads(sys.argv[4]):
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
        out["logits_differ"].append(not torch.allclose(logits, base_model(ids).logits))
        out["logits_finite"] = out["logits_finite"] and bool(torch.isfinite(logits).all())
        for name, m in (("texts", model), ("base_texts", base_model)):
            generated = m.generate(ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
            out[name][prompt] = tok.decode(generated[0, ids.shape[1]:])
            out["new_tokens"].append(int(generated.shape[1] - ids.shape[1]))
print(json.dumps(out))
"""


PROMPTS = ["lora fleet deploy cluster", "red here copy ten at good deploy for"]
MAX_NEW_TOKENS = 16


@pytest.fixture(scope="module")
def merge_check(pipeline) -> Dict[str, Any]:
    """MERGE_CHECK run once with the LLaMA-Factory venv's torch and transformers."""
    require_export(pipeline)
    env = offline_env(pipeline["mlflow"].url, EXPERIMENT, pipeline["tmp"])
    args = [str(pipeline["model"]), str(pipeline["adapter"]), str(pipeline["merged"])]
    return run_python(pipeline["venv"], MERGE_CHECK, *args, json.dumps(PROMPTS), str(MAX_NEW_TOKENS), env=env)


def test_merged_model_is_base_plus_lora_and_loads_in_transformers(merge_check):
    out = merge_check
    # 2 layers x 7 target modules, each merged as W + (alpha / r) * B @ A
    assert out["keys_equal"] and out["lora_pairs"] == 14, out
    assert out["max_err"] < 1e-5, out
    assert out["min_delta"] > 0, out  # every targeted weight moved
    assert out["untouched_equal"], out  # embeddings, norms, lm_head as in the base
    assert out["model_class"] == "LlamaForCausalLM"
    assert out["logits_finite"] and all(out["logits_differ"]), out
    # greedy decoding never stops early on the tiny model (its special tokens' output rows are zero)
    assert set(out["new_tokens"]) == {MAX_NEW_TOKENS}, out
    assert all(text.strip() for text in out["texts"].values()), out
    assert out["texts"] != out["base_texts"], out


@pytest.mark.vllm
def test_vllm_serves_the_merged_model_like_transformers(pipeline, merge_check):
    """The real vLLM CPU server loads the merged directory; its greedy completions are the tokens
    transformers generates from the same files (and not the base model's)."""
    server = VllmServer(pipeline["merged"], pipeline["tmp"] / "vllm", served_model_name="merged-model")
    try:
        server.start().wait_healthy()
        for prompt in PROMPTS:
            body = {"model": "merged-model", "prompt": prompt, "max_tokens": MAX_NEW_TOKENS, "temperature": 0}
            request = urllib.request.Request(
                server.url + "/v1/completions",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                completion = json.loads(response.read())
            assert completion["model"] == "merged-model"
            assert completion["usage"]["completion_tokens"] == MAX_NEW_TOKENS
            assert completion["choices"][0]["text"].strip() == merge_check["texts"][prompt].strip(), (
                completion,
                merge_check,
            )
        assert server.is_running(), server.log_tail()
    finally:
        server.stop()


# -- LoRA adapters served without a merge or a restart ----------------------------------------------------------
BASE_NAME = "tiny-base"
ADAPTER_ONE, ADAPTER_TWO = "adapter-one", "adapter-two"
ADAPTER_TWO_RANK = 16


@pytest.fixture(scope="module")
def second_adapter(pipeline) -> Path:
    """A second, different adapter: the role's train.yaml with another dataset (each instruction answered with
    the next record's output), seed, rank and output directory; not reported to MLflow (the run of the first
    one is the experiment's only run)."""
    require_train(pipeline)
    tmp = pipeline["tmp"]
    datasets = tmp / "datasets-two"
    datasets.mkdir()
    source = required_env("LLMOPS_FIXTURES") / "datasets"
    records = json.loads((source / "tiny_alpaca.json").read_text())
    shifted = [dict(r, output=records[(i + 1) % len(records)]["output"]) for i, r in enumerate(records)]
    (datasets / "tiny_alpaca.json").write_text(json.dumps(shifted))
    (datasets / "dataset_info.json").write_text((source / "dataset_info.json").read_text())
    config = dict(pipeline["train_config"])
    config.update(
        dataset_dir=str(datasets),
        output_dir=str(tmp / "adapter-two"),
        seed=1234,
        lora_rank=ADAPTER_TWO_RANK,
        lora_alpha=2 * ADAPTER_TWO_RANK,
        learning_rate=0.005,
        report_to="none",
        run_name="tiny-lora-sft-two",
    )
    path = tmp / "configs" / "train-two.yaml"
    path.write_text(yaml.safe_dump(config))
    workdir = tmp / "train-two"  # its own log: llamafactory-train.log of the first run stays as it was
    workdir.mkdir()
    run = run_cli(pipeline["venv"], "train", path, offline_env(pipeline["mlflow"].url, EXPERIMENT, tmp), workdir)
    assert run.rc == 0, f"the second llamafactory-cli train exited {run.rc}\n{run.tail()}"
    return tmp / "adapter-two"


class RenderedVllmServer(VllmServer):
    """A real vLLM started with exactly the argv and environment the collection renders for a configuration."""

    def __init__(self, cfg: Dict[str, Any], workdir: Path) -> None:
        super().__init__(Path(cfg["model"]), workdir, served_model_name=cfg["served_model_name"], port=cfg["port"])
        self.args = render_server_args(cfg)
        self.server_env = server_environment(normalize_server_config(cfg))

    def command(self) -> list:
        python = required_env("LLMOPS_VLLM_VENV") / "bin" / "python"
        return [str(python), "-m", "vllm.entrypoints.openai.api_server", *self.args]

    def environment(self) -> Dict[str, str]:
        env = super().environment()
        env.pop("VLLM_ALLOW_RUNTIME_LORA_UPDATING", None)
        env.update(self.server_env)
        return env


def get_json(url: str, body: Optional[Dict[str, Any]] = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def answers(server: VllmServer, model: str) -> Dict[str, str]:
    """Temperature-0 completions of PROMPTS by `model` (the base or an adapter)."""
    out = {}
    for prompt in PROMPTS:
        body = {"model": model, "prompt": prompt, "max_tokens": MAX_NEW_TOKENS, "temperature": 0}
        completion = get_json(server.url + "/v1/completions", body)
        assert completion["model"] == model, completion
        assert completion["usage"]["completion_tokens"] == MAX_NEW_TOKENS, completion
        out[prompt] = completion["choices"][0]["text"]
    return out


def stripped(texts: Dict[str, str]) -> Dict[str, str]:
    return {prompt: text.strip() for prompt, text in texts.items()}


def listing(server: VllmServer) -> Dict[str, Any]:
    return {e["id"]: e for e in get_json(server.url + "/v1/models")["data"]}


@pytest.mark.vllm
def test_vllm_serves_lora_adapters_without_a_restart(pipeline, merge_check, second_adapter, run_playbook):
    """Real vLLM (CPU) on the BASE model, started with the argv and environment the collection renders for
    lora_adapters (adapter 1 from the real LLaMA-Factory run, its rank read from its adapter_config.json) and
    lora_runtime_updating; vllm_lora_adapter (a real module run) loads adapter 2 at runtime and unloads it."""
    adapter_one = pipeline["adapter"]
    assert lora_adapter_rank(str(adapter_one)) == LORA_RANK
    assert lora_adapter_rank(str(second_adapter)) == ADAPTER_TWO_RANK
    cfg = {
        "model": str(pipeline["model"]),
        "served_model_name": BASE_NAME,
        "host": "127.0.0.1",
        "port": free_port(),
        "device": "cpu",
        "dtype": "float32",
        "max_model_len": 256,
        "max_num_seqs": 4,
        "enforce_eager": True,
        "kv_cache_memory_bytes": "64M",
        "lora_adapters": [{"name": ADAPTER_ONE, "path": str(adapter_one), "rank": lora_adapter_rank(str(adapter_one))}],
        # sized for the adapter loaded later: runtime loads cannot raise it
        "max_lora_rank": ADAPTER_TWO_RANK,
        "max_loras": 2,
        "lora_runtime_updating": True,
    }
    server = RenderedVllmServer(cfg, pipeline["tmp"] / "vllm-lora")
    assert server.args[server.args.index("--lora-modules") + 1] == f"{ADAPTER_ONE}={adapter_one}"
    assert "--enable-lora" in server.args
    assert server.server_env == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    try:
        server.start().wait_healthy()
        pid = server.process.pid
        models = listing(server)
        assert models[ADAPTER_ONE]["parent"] == BASE_NAME and models[ADAPTER_ONE]["root"] == str(adapter_one), models
        assert models[BASE_NAME]["parent"] is None, models
        base, one = answers(server, BASE_NAME), answers(server, ADAPTER_ONE)
        # (transformers' decode of the new tokens has no leading space; vLLM's text has)
        assert stripped(base) == stripped(merge_check["base_texts"]), (base, merge_check)  # the base as it was
        assert one != base, one
        # served unmerged, adapter 1 answers what transformers gives for the merged model
        assert stripped(one) == stripped(merge_check["texts"]), (one, merge_check)

        connection = {"url": server.url, "request_timeout": 60}
        load = {"name": ADAPTER_TWO, "path": str(second_adapter), **connection}
        health = {"expected_adapters": [ADAPTER_ONE, ADAPTER_TWO], "model": ADAPTER_TWO, "timeout": 60, **connection}
        playbook = run_playbook(
            [
                {"name": "load", "llmops.platform.vllm_lora_adapter": load, "check_mode": True},
                {"name": "load", "llmops.platform.vllm_lora_adapter": load},
                {"name": "load again", "llmops.platform.vllm_lora_adapter": load},
                {"name": "health", "llmops.platform.openai_health": health},
            ]
        )
        assert playbook.rc == 0, playbook.stdout[-4000:]
        predicted, loaded, again, healthy = playbook.task_results()
        assert predicted["changed"] is True and predicted["actions"] == ["load"], predicted
        assert loaded["changed"] is True and loaded["actions"] == ["load"], loaded
        assert {"name": ADAPTER_TWO, "parent": BASE_NAME, "path": str(second_adapter)} in loaded["adapters"], loaded
        assert again["changed"] is False and again["actions"] == [], again
        assert healthy["ready"] is True and healthy["model"] == ADAPTER_TWO, healthy
        assert {a["name"] for a in healthy["adapters"]} == {ADAPTER_ONE, ADAPTER_TWO}, healthy

        assert listing(server)[ADAPTER_TWO]["parent"] == BASE_NAME
        two = answers(server, ADAPTER_TWO)
        assert two not in (base, one), (base, one, two)
        assert answers(server, ADAPTER_ONE) == one  # loading another adapter changed nothing for the first
        assert server.is_running() and server.process.pid == pid, "the server restarted"

        unload = {"name": ADAPTER_TWO, "state": "absent", **connection}
        playbook = run_playbook(
            [
                {"name": "unload", "llmops.platform.vllm_lora_adapter": unload},
                {"name": "unload again", "llmops.platform.vllm_lora_adapter": unload},
                {
                    "name": "health",
                    "llmops.platform.openai_health": dict(health, model=BASE_NAME),
                    "ignore_errors": True,
                },
            ]
        )
        unloaded, unloaded_again, missing = playbook.task_results()
        assert unloaded["changed"] is True and unloaded["actions"] == ["unload"], unloaded
        assert unloaded_again["changed"] is False, unloaded_again
        assert missing.get("failed") is True and f"missing: ['{ADAPTER_TWO}']" in missing["msg"], missing
        assert set(listing(server)) == {BASE_NAME, ADAPTER_ONE}
        assert answers(server, BASE_NAME) == base
        assert server.is_running() and server.process.pid == pid, "the server restarted"
    finally:
        server.stop()
