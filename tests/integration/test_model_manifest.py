"""llmops.platform.model_manifest run through ansible-playbook on the real tiny model and broken copies.

The module runs with the system Python (/usr/bin/python3, no Ansible installed there), as on a managed
host. Hashes are checked against coreutils' sha256sum, an independent implementation.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from itest_support import fixture_model

MODULE = "llmops.platform.model_manifest"


def sha256sum_digest(root: Path) -> str:
    """content_digest computed with sha256sum: sha256 of "path\\0size\\0sha256\\n" lines sorted by path."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".llmops-"))
    out = subprocess.run(["sha256sum", *map(str, files)], check=True, capture_output=True, text=True).stdout
    sums = {Path(line.split(None, 1)[1].strip()): line.split()[0] for line in out.splitlines()}
    lines = "".join(f"{p.relative_to(root)}\0{p.stat().st_size}\0{sums[p]}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


@pytest.fixture
def tiny_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "models" / "tiny"
    shutil.copytree(fixture_model("tiny"), dest)
    for path in dest.iterdir():
        path.chmod(0o644)
    return dest


def test_real_tiny_model_is_valid_and_digest_matches_sha256sum(run_module):
    root = fixture_model("tiny")
    result, playbook = run_module(MODULE, {"path": str(root)})
    assert playbook.rc == 0, playbook.stdout[-3000:]
    assert result["changed"] is False
    assert result["valid"] is True and result["errors"] == []
    assert result["model_type"] == "llama" and result["weight_format"] == "safetensors"
    assert result["content_digest"] == sha256sum_digest(root)
    assert [e["path"] for e in result["manifest"]] == sorted(p.name for p in root.iterdir())


def test_cache_then_unchanged_rerun_hashes_nothing(run_module, tiny_copy):
    args = {"path": str(tiny_copy), "cache_file": str(tiny_copy / ".llmops-manifest.json")}
    first, _pb = run_module(MODULE, args)
    assert (first["changed"], first["hashed_files"], first["reused_files"]) == (True, 6, 0)
    second, _pb = run_module(MODULE, args)
    assert (second["changed"], second["hashed_files"], second["reused_files"]) == (False, 0, 6)
    assert second["content_digest"] == first["content_digest"] == sha256sum_digest(tiny_copy)
    cache = json.loads((tiny_copy / ".llmops-manifest.json").read_text())
    assert cache["content_digest"] == first["content_digest"]


def test_check_mode_does_not_write_the_cache(run_module, tiny_copy):
    cache = tiny_copy / ".llmops-manifest.json"
    args = {"path": str(tiny_copy), "cache_file": str(cache)}
    result, playbook = run_module(MODULE, args, check=True)
    assert playbook.rc == 0
    assert result["changed"] is True and result["cache_written"] is False and result["valid"] is True
    assert not cache.exists()
    run_module(MODULE, args)
    written = cache.read_bytes()
    result, _pb = run_module(MODULE, args, check=True)
    assert result["changed"] is False and result["reused_files"] == 6
    assert cache.read_bytes() == written


def test_verify_copies_against_the_source_manifest(run_playbook, tiny_copy, tmp_path):
    """One playbook: manifest of the source, then a good copy, a bit-flipped copy and a truncated copy."""
    good = tmp_path / "good"
    flipped = tmp_path / "flipped"
    truncated = tmp_path / "truncated"
    for dest in (good, flipped, truncated):
        shutil.copytree(tiny_copy, dest)
    data = bytearray((flipped / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x04
    (flipped / "model.safetensors").write_bytes(bytes(data))
    (truncated / "model.safetensors").write_bytes(bytes(data[: len(data) - 65536]))

    def verify(name: str, path: Path, **extra):
        args = {"path": str(path), "expected_manifest": "{{ source.manifest }}", "fail_on_invalid": False}
        args.update(extra)
        return {"name": name, MODULE: args, "register": name}

    playbook = run_playbook(
        [
            {"name": "source", MODULE: {"path": str(tiny_copy)}, "register": "source"},
            verify("good", good, expected_digest="{{ source.content_digest }}"),
            verify("flipped", flipped),
            verify("truncated", truncated),
            {"name": "strict", MODULE: {"path": str(truncated)}},
        ]
    )
    source, ok, bad, cut, strict = playbook.task_results()
    assert playbook.rc != 0  # the last task fails the play
    assert source["valid"] is True
    assert ok["valid"] is True and ok["content_digest"] == source["content_digest"]

    assert bad["valid"] is False and bad.get("failed") is not True
    assert bad["differences"] == {"missing": [], "extra": [], "changed": ["model.safetensors"]}
    assert bad["errors"] == [
        f"model.safetensors: sha256 {bad['manifest'][3]['sha256']} differs from the expected "
        f"{source['manifest'][3]['sha256']}"
    ]

    assert cut["valid"] is False
    assert cut["differences"]["changed"] == ["model.safetensors"]
    assert any(
        e.startswith("model.safetensors: tensors end at") and "file truncated by 65536 bytes" in e
        for e in cut["errors"]
    )
    assert any(e.startswith("model.safetensors: size ") for e in cut["errors"])

    assert strict["failed"] is True
    assert strict["msg"].startswith(f"model directory {truncated} failed ")
    assert "model.safetensors: tensors end at" in strict["msg"]
