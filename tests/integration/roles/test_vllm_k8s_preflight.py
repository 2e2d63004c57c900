"""Bad variables make vllm_k8s fail before anything is applied, naming the variable.

Each case runs the whole role (every tag) through ansible-playbook against its own Kubernetes API
emulator with one bad setting on top of a valid configuration. The play must fail, a failure must
name the variable, nothing may change (changed=0) and the emulator must hold no object afterwards.
The valid baseline, on the same harness, does create the objects: the "nothing created" check can fail.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT / "tests" / "k8s") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "k8s"))

import k8s_harness  # noqa: E402
from k8s_harness import Emulator, run_playbook  # noqa: E402

# Registers the fixture in this module (pytest finds fixtures by module attribute).
k8s_emulator = k8s_harness.k8s_emulator

KEY = "s3cret-k8s-test-key"
VALID = {"vllm_k8s_api_key": KEY, "vllm_k8s_wait": False}

CASES = {
    "mode not a choice": ({"vllm_k8s_mode": "kustomize"}, "vllm_k8s_mode"),
    "namespace not a DNS label": ({"vllm_k8s_namespace": "LLM_Training"}, "vllm_k8s_namespace"),
    "name too long": ({"vllm_k8s_name": "v" * 60}, "vllm_k8s_name"),
    "negative replicas": ({"vllm_k8s_replicas": -1}, "vllm_k8s_replicas"),
    "model load timeout too short": ({"vllm_k8s_model_load_timeout": 5}, "vllm_k8s_model_load_timeout"),
    "startup period longer than the load timeout": (
        {"vllm_k8s_model_load_timeout": 60, "vllm_k8s_startup_probe_period": 120},
        "vllm_k8s_startup_probe_period",
    ),
    "tensor parallel size zero": (
        {"vllm_k8s_server": {"tensor_parallel_size": 0}},
        "vllm_k8s_server.tensor_parallel_size",
    ),
    "misspelled server key": ({"vllm_k8s_server": {"max_model_length": 4096}}, "vllm_k8s_server.max_model_length"),
    "api key in extra_args": ({"vllm_k8s_server": {"extra_args": ["--api-key", "x"]}}, "vllm_k8s_server.extra_args"),
    "loopback host": ({"vllm_k8s_server": {"host": "127.0.0.1"}}, "vllm_k8s_server.host"),
    "api key in the plain environment": ({"vllm_k8s_environment": {"VLLM_API_KEY": "x"}}, "vllm_k8s_environment"),
    "negative gpus": ({"vllm_k8s_gpus": -1}, "vllm_k8s_gpus"),
    "root user": ({"vllm_k8s_run_as_user": 0}, "vllm_k8s_run_as_user"),
    "image tag with a space": ({"vllm_k8s_image_tag": "v0.32 latest"}, "vllm_k8s_image_tag"),
    "pull policy not a choice": ({"vllm_k8s_image_pull_policy": "Sometimes"}, "vllm_k8s_image_pull_policy"),
    "shm size not a quantity": ({"vllm_k8s_shm_size": "lots"}, "vllm_k8s_shm_size"),
    "tolerations not a list of mappings": ({"vllm_k8s_tolerations": ["nvidia.com/gpu"]}, "vllm_k8s_tolerations"),
    "no key and no secret": ({"vllm_k8s_api_key": "", "vllm_k8s_api_key_secret_name": ""}, "vllm_k8s_api_key"),
    "helm mode without helm": (
        {"vllm_k8s_mode": "helm", "vllm_k8s_helm_binary": "/nonexistent/helm"},
        "vllm_k8s_helm_binary",
    ),
}

PLAY = textwrap.dedent(
    """\
    - hosts: localhost
      connection: local
      gather_facts: false
      vars:
        ansible_python_interpreter: "{{ ansible_playbook_python }}"
      roles:
        - llmops.platform.vllm_k8s
    """
)

# Everything the role can write, by API path.
WRITTEN = (
    "/api/v1/namespaces",
    "/api/v1/secrets",
    "/apis/apps/v1/deployments",
    "/api/v1/services",
    "/apis/networking.k8s.io/v1/networkpolicies",
    "/apis/policy/v1/poddisruptionbudgets",
)


def run_role(emulator: Emulator, tmp_path: Path, overrides: dict):
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    return run_playbook(
        play, cwd=tmp_path, extra_vars={**VALID, "vllm_k8s_kubeconfig": str(emulator.kubeconfig), **overrides}
    )


def objects(emulator: Emulator) -> list:
    return k8s_harness.written_objects(emulator, WRITTEN)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_variable_fails_before_anything_is_applied(k8s_emulator: Emulator, tmp_path: Path, case: str) -> None:
    overrides, variable = CASES[case]
    run = run_role(k8s_emulator, tmp_path, overrides)
    k8s_harness.assert_failed_before_apply(run, k8s_emulator, WRITTEN, case=case, variable=variable, secret=KEY)


def test_valid_variables_apply_the_objects(k8s_emulator: Emulator, tmp_path: Path) -> None:
    run = run_role(k8s_emulator, tmp_path, {})
    assert run.rc == 0, run.output[-3000:]
    assert run.stats["changed"] > 0
    written = objects(k8s_emulator)
    assert "/apis/apps/v1/deployments/vllm-inference" in written, written
    assert "/api/v1/secrets/vllm-api-key" in written, written
    assert KEY not in run.output, "the API key leaked into the output"


def test_first_check_mode_run_predicts_without_writing(k8s_emulator: Emulator, tmp_path: Path) -> None:
    """On an empty cluster a dry run cannot create objects in the not-yet-existing namespace; the role
    predicts the creations instead of failing, and writes nothing."""
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    run = run_playbook(
        play, cwd=tmp_path, extra_vars={**VALID, "vllm_k8s_kubeconfig": str(k8s_emulator.kubeconfig)}, args=["--check"]
    )
    assert run.rc == 0, run.output[-3000:]
    assert run.stats["changed"] >= 2, run.stats
    assert objects(k8s_emulator) == []
    assert KEY not in run.output
