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
from typing import Any, Dict

import pytest
import yaml
from itest_support import PlaybookRun, VllmServer, fixture_model, required_env, write_playbook
from llamafactory_env import MlflowServer, lf_venv, offline_env, run_cli, run_python

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
