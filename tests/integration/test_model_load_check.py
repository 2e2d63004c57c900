"""llmops.platform.model_load_check through ansible-playbook, with real serving environments.

- vLLM's own virtualenv (the CPU build, transformers 5) loads the tiny model the fixtures saved with transformers 5.
- A transformers 4.57 environment, as the vLLM releases that pin transformers 4.x have (made once per machine from
  requirements/transformers4-probe.lock), cannot: the tokenizer was saved as `TokenizersBackend`, a class
  transformers 4 does not know - the failure the check exists for, named with both releases.
- A config whose model_type no transformers knows fails the config check; a missing interpreter is skipped only
  when asked; the architecture check asks vLLM's model registry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from itest_support import ROOT, fixture_model, required_env

MODULE = "llmops.platform.model_load_check"
LOCK = ROOT / "requirements" / "transformers4-probe.lock"

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def transformers4() -> Path:
    """The interpreter of a transformers 4.57 virtualenv, built once per machine (about a minute)."""
    cache = Path(os.environ.get("LLMOPS_CACHE", Path.home() / ".cache" / "llmops-platform"))
    venv = cache / f"venv-transformers4-{hashlib.sha256(LOCK.read_bytes()).hexdigest()[:12]}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".transformers4.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "-r", str(LOCK)],
                check=True, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            (venv / ".complete").touch()
    return venv / "bin" / "python"


def vllm_python() -> str:
    return str(required_env("LLMOPS_VLLM_VENV") / "bin" / "python")


def test_vllms_environment_loads_the_model_it_serves(run_module):
    result, run = run_module(MODULE, {"path": str(fixture_model("tiny")), "python": vllm_python()}, check=True)
    assert run.rc == 0, run.stdout[-2000:]
    assert result["checked"] and result["loadable"] and not result["errors"], result
    assert result["transformers_version"].startswith("5."), result
    assert result["tokenizer_class"] == "TokenizersBackend" and result["model_type"] == "llama", result
    assert result["saved_with"]["tokenizer_class"] == "TokenizersBackend", result


def test_a_transformers_4_environment_cannot_load_a_tokenizer_saved_by_transformers_5(run_module, transformers4):
    result, run = run_module(MODULE, {"path": str(fixture_model("tiny")), "python": str(transformers4)})
    assert run.rc != 0 and result["failed"], result
    assert result["checked"] and result["loadable"] is False, result
    assert result["transformers_version"] == "4.57.1", result
    # The config loads; the tokenizer does not, and the message says why in the operator's terms.
    assert set(result["errors"]) == {"tokenizer"} and "TokenizersBackend" in result["errors"]["tokenizer"], result
    for words in ("transformers 4.57.1", "tokenizer_class 'TokenizersBackend'", "cannot load the model"):
        assert words in result["msg"], result["msg"]


def test_an_unknown_model_type_fails_the_config_check(run_module, tmp_path):
    model = tmp_path / "future-model"
    shutil.copytree(fixture_model("tiny"), model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "llama-from-the-future"}))
    result, run = run_module(MODULE, {"path": str(model), "python": vllm_python(), "checks": ["config"]})
    assert run.rc != 0, result
    assert list(result["errors"]) == ["config"] and "llama-from-the-future" in result["msg"], result


def test_a_missing_interpreter_is_skipped_only_when_asked(run_module, tmp_path):
    missing = str(tmp_path / "no-venv" / "bin" / "python")
    skipped, run = run_module(MODULE, {"path": str(fixture_model("tiny")), "python": missing, "missing_python": "skip"})
    assert run.rc == 0 and skipped["checked"] is False and skipped["loadable"] is None, skipped
    failed, run = run_module(MODULE, {"path": str(fixture_model("tiny")), "python": missing})
    assert run.rc != 0 and "(python) is not an executable interpreter" in failed["msg"], failed


def test_the_architecture_check_asks_vllms_model_registry(run_module):
    result, run = run_module(
        MODULE, {"path": str(fixture_model("tiny")), "python": vllm_python(), "checks": ["architecture"]}
    )
    assert run.rc == 0 and result["loadable"], result
    assert result["vllm_version"] and result["architectures"] == ["LlamaForCausalLM"], result
