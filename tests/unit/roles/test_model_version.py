"""The merge Job's command (roles/training_cluster/files/model-version.py), run as the Job runs it: next to the
collection's model_manifest.py (as the ConfigMap mounts them), with a stand-in export command that writes a small
but well-formed model into the export_dir of the config it is given (LLaMA-Factory's own export runs in the
internal layout end to end, tests/k8s/test_internal_layout.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "roles" / "training_cluster" / "files" / "model-version.py"
MANIFEST = ROOT / "plugins" / "module_utils" / "model_manifest.py"

# The stand-in export: `export.py <mode> <config>` writes a model to the config's export_dir; mode `good`,
# `truncated` (the weights file cut short: model_manifest must refuse it) or `fail` (exit 1, half a model).
EXPORT = r"""
import json, os, struct, sys, yaml
mode, config = sys.argv[1], sys.argv[2]
out = yaml.safe_load(open(config))["export_dir"]
os.makedirs(out, exist_ok=True)
json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, open(os.path.join(out, "config.json"), "w"))
if mode == "fail":
    sys.exit(1)
json.dump({"version": "1.0"}, open(os.path.join(out, "tokenizer.json"), "w"))
header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
data = struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0)
open(os.path.join(out, "model.safetensors"), "wb").write(data[:-4] if mode == "truncated" else data)
"""


@pytest.fixture
def job(tmp_path):
    """The ConfigMap's directory (script + model_manifest.py + merge.yaml + the stand-in export) and the volume."""
    config = tmp_path / "config"
    config.mkdir()
    shutil.copy(SCRIPT, config / "model-version.py")
    shutil.copy(MANIFEST, config / "model_manifest.py")
    (config / "export.py").write_text(EXPORT)
    (config / "merge.yaml").write_text(yaml.safe_dump({"model_name_or_path": "base", "export_dir": "/nowhere"}))
    storage = tmp_path / "storage"
    (storage / "models").mkdir(parents=True)
    return config, storage


def merge(job, version, mode="good", keep=3, protect=()):
    config, storage = job
    argv = [
        sys.executable,
        str(config / "model-version.py"),
        "--config",
        str(config / "merge.yaml"),
        "--versions-dir",
        str(storage / "models" / "versions"),
        "--version",
        version,
        "--link",
        str(storage / "models" / "merged-model"),
        "--keep",
        str(keep),
        *[f"--protect={name}" for name in protect],
        "--",
        sys.executable,
        str(config / "export.py"),
        mode,
    ]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def record(proc):
    lines = [line for line in proc.stdout.splitlines() if line.startswith("LLMOPS_MODEL_VERSION ")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    return json.loads(lines[0].split(" ", 1)[1])


def test_a_merge_writes_a_sealed_version_and_links_it(job):
    _config, storage = job
    proc = merge(job, "v1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = record(proc)
    version = storage / "models" / "versions" / "v1"
    assert result["path"] == str(version)
    manifest = json.loads((version / ".llmops-manifest.json").read_text())
    assert manifest["content_digest"] == result["digest"] and manifest["file_count"] == 3
    assert {e["path"] for e in manifest["manifest"]} == {"config.json", "tokenizer.json", "model.safetensors"}
    link = storage / "models" / "merged-model"
    assert link.is_symlink() and os.readlink(link) == "versions/v1" and link.resolve() == version
    # The export was given a copy of the config that points at the new version's .part directory only.
    assert yaml.safe_load((job[0] / "merge.yaml").read_text())["export_dir"] == "/nowhere"
    assert not list((storage / "models" / "versions").glob("*.part"))


def test_the_same_content_gives_the_same_digest_and_a_version_is_never_overwritten(job):
    first, second = record(merge(job, "v1")), record(merge(job, "v2"))
    assert first["digest"] == second["digest"]
    again = merge(job, "v1")
    assert again.returncode == 2 and "never overwrites" in again.stdout
    assert os.readlink(job[1] / "models" / "merged-model") == "versions/v2"


@pytest.mark.parametrize(("mode", "rc", "words"), [("truncated", 3, "model.safetensors"), ("fail", 1, "export failed")])
def test_a_bad_or_failed_export_keeps_nothing_and_keeps_the_link(job, mode, rc, words):
    _config, storage = job
    assert merge(job, "v1").returncode == 0
    proc = merge(job, "v2", mode=mode)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert words in proc.stdout
    assert sorted(p.name for p in (storage / "models" / "versions").iterdir()) == ["v1"]
    assert os.readlink(storage / "models" / "merged-model") == "versions/v1"
    assert "LLMOPS_MODEL_VERSION" not in proc.stdout


def test_pruning_keeps_the_newest_and_every_protected_version(job):
    _config, storage = job
    for i in range(1, 5):
        assert merge(job, f"v{i}", keep=0).returncode == 0
        time.sleep(0.02)  # distinct manifest mtimes: newest first
    (storage / "models" / "versions" / "v9.part").mkdir()  # an earlier run that died half way
    proc = merge(job, "v5", keep=2, protect=["v1"])
    assert proc.returncode == 0, proc.stdout
    # keep 2 = the new v5 and the newest other (v4); v1 protected (served); v2, v3 and the leftover pruned.
    assert sorted(p.name for p in (storage / "models" / "versions").iterdir()) == ["v1", "v4", "v5"]
    assert "pruned" in proc.stdout


def test_a_directory_at_the_link_path_is_left_alone(job):
    _config, storage = job
    legacy = storage / "models" / "merged-model"
    legacy.mkdir()
    (legacy / "config.json").write_text("{}")
    proc = merge(job, "v1")
    assert proc.returncode == 0 and "left as it is" in proc.stdout
    assert legacy.is_dir() and not legacy.is_symlink() and (legacy / "config.json").read_text() == "{}"


@pytest.mark.parametrize("version", ["../escape", "v1/x", "-rm", "a" * 64, "v1\n", ""])
def test_a_bad_version_name_is_refused_before_anything_is_written(job, version):
    proc = merge(job, version)
    assert proc.returncode == 2 and "--version" in proc.stderr
    assert not (job[1] / "models" / "versions").exists()
