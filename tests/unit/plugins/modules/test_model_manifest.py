"""llmops.platform.model_manifest: main() on copies of the real tiny fixture models.

What the module adds to module_utils is tested here: the cache file (written only when its content
changes, never in check mode, never counted in the manifest), expected digest and manifest, fail_on_invalid,
and the messages a playbook author reads.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from module_harness import ModuleExit, run_main  # noqa: E402

from ansible_collections.llmops.platform.plugins.modules import model_manifest  # noqa: E402


def run(params: Dict[str, Any], check_mode: bool = False) -> Tuple[ModuleExit, List[str]]:
    warnings: List[str] = []
    outcome = run_main(model_manifest.main, dict(params, _ansible_check_mode=check_mode), warnings)
    return outcome, warnings


def ok(params: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:
    outcome, _warnings = run(params, check_mode)
    assert not outcome.failed, outcome.result.get("msg")
    return outcome.result


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A private copy of the real tiny model (tests change files in it)."""
    value = os.environ.get("LLMOPS_FIXTURES")
    if not value:
        pytest.fail("$LLMOPS_FIXTURES is not set: run the tests through scripts/run")
    dest = tmp_path / "tiny"
    shutil.copytree(Path(value) / "models" / "tiny", dest)
    for path in dest.iterdir():
        path.chmod(0o644)
    return dest


def test_valid_model_without_cache_changes_nothing(tiny):
    result = ok({"path": str(tiny)})
    assert result["changed"] is False and result["valid"] is True and result["errors"] == []
    assert result["model_type"] == "llama" and result["architectures"] == ["LlamaForCausalLM"]
    assert result["weight_format"] == "safetensors" and result["sharded"] is False
    assert result["file_count"] == len(list(tiny.iterdir())) == len(result["manifest"])
    assert set(result["manifest"][0]) == {"path", "size", "mtime_ns", "sha256"}
    assert result["hashed_files"] == result["file_count"] and result["reused_files"] == 0
    assert result["cache_file"] is None and result["cache_written"] is False
    assert result["differences"] == {"missing": [], "extra": [], "changed": []}
    assert sorted(p.name for p in tiny.iterdir()) == [e["path"] for e in result["manifest"]]


def test_cache_written_once_then_reused_then_one_file_rehashed(tiny):
    cache = tiny / ".llmops-manifest.json"
    params = {"path": str(tiny), "cache_file": str(cache), "workers": 2}
    first = ok(params)
    assert (first["changed"], first["cache_written"], first["hashed_files"], first["reused_files"]) == (
        True,
        True,
        6,
        0,
    )
    document = json.loads(cache.read_text())
    assert document["content_digest"] == first["content_digest"]
    assert [e["path"] for e in document["manifest"]] == [e["path"] for e in first["manifest"]]
    assert ".llmops-manifest.json" not in [e["path"] for e in first["manifest"]]

    second = ok(params)
    assert (second["changed"], second["cache_written"], second["hashed_files"], second["reused_files"]) == (
        False,
        False,
        0,
        6,
    )
    assert second["content_digest"] == first["content_digest"]
    assert second["manifest"] == first["manifest"]

    st = (tiny / "tokenizer.json").stat()
    os.utime(tiny / "tokenizer.json", ns=(st.st_atime_ns, st.st_mtime_ns + 5))
    third = ok(params)
    assert (third["changed"], third["hashed_files"], third["reused_files"]) == (True, 1, 5)
    assert third["hashed_bytes"] == st.st_size
    assert third["content_digest"] == first["content_digest"]  # mtimes do not count


def test_check_mode_predicts_but_does_not_write_the_cache(tiny, tmp_path):
    cache = tmp_path / "cache.json"
    result = ok({"path": str(tiny), "cache_file": str(cache)}, check_mode=True)
    assert result["changed"] is True and result["cache_written"] is False
    assert result["valid"] is True and result["hashed_files"] == 6
    assert not cache.exists()
    ok({"path": str(tiny), "cache_file": str(cache)})
    before = cache.read_bytes()
    again = ok({"path": str(tiny), "cache_file": str(cache)}, check_mode=True)
    assert again["changed"] is False and again["reused_files"] == 6
    (tiny / "extra.txt").write_text("new file")
    predicted = ok({"path": str(tiny), "cache_file": str(cache)}, check_mode=True)
    assert predicted["changed"] is True and predicted["hashed_files"] == 1
    assert cache.read_bytes() == before


def test_cache_inside_the_model_is_left_out_even_with_custom_excludes(tiny):
    cache = tiny / "meta" / "manifest.json"
    cache.parent.mkdir()
    params = {"path": str(tiny), "cache_file": str(cache), "exclude": []}
    ok(params)
    second = ok(params)
    paths = [e["path"] for e in second["manifest"]]
    assert "meta/manifest.json" not in paths
    assert second["changed"] is False and second["reused_files"] == second["file_count"] == 6


def test_unusable_cache_warns_and_hashes_everything(tiny, tmp_path):
    cache = tmp_path / "cache.json"
    cache.write_text("{broken")
    outcome, warnings = run({"path": str(tiny), "cache_file": str(cache)})
    assert not outcome.failed
    assert outcome.result["hashed_files"] == 6 and outcome.result["changed"] is True
    assert len(warnings) == 1 and warnings[0].startswith(f"cache file {cache} is unreadable")
    assert json.loads(cache.read_text())["file_count"] == 6


def test_truncated_shard_fails_naming_the_file(tiny):
    data = (tiny / "model.safetensors").read_bytes()
    (tiny / "model.safetensors").write_bytes(data[:-1])
    outcome, _w = run({"path": str(tiny)})
    assert outcome.failed
    result = outcome.result
    assert result["valid"] is False
    assert result["msg"].startswith(f"model directory {tiny} failed 1 check(s): model.safetensors: tensors end at ")
    assert ": file truncated by 1 bytes (1 tensors past the end, first " in result["msg"]
    assert result["errors"] == [result["msg"].split("check(s): ", 1)[1]]
    assert result["file_count"] == 6  # the manifest is still reported


def test_fail_on_invalid_false_returns_the_errors(tiny):
    (tiny / "config.json").unlink()
    (tiny / "pytorch_model.bin").write_bytes(b"\x80\x04")
    result = ok({"path": str(tiny), "fail_on_invalid": False})
    assert result["valid"] is False and result["changed"] is False
    assert result["errors"] == [
        "config.json: missing",
        "pytorch_model.bin: pickled weights run code when loaded; convert to safetensors, exclude the file, "
        "or set allow_pickle: true",
    ]
    allowed = ok({"path": str(tiny), "fail_on_invalid": False, "allow_pickle": True})
    assert allowed["errors"] == ["config.json: missing"]


def test_missing_directory(tmp_path):
    outcome, _w = run({"path": str(tmp_path / "absent")})
    assert outcome.failed and outcome.result["errors"] == [f"{tmp_path / 'absent'}: does not exist"]
    result = ok({"path": str(tmp_path / "absent"), "fail_on_invalid": False, "cache_file": str(tmp_path / "c")})
    assert result["valid"] is False and result["file_count"] == 0
    assert result["changed"] is False and not (tmp_path / "c").exists()


def test_expected_digest(tiny):
    digest = ok({"path": str(tiny)})["content_digest"]
    assert ok({"path": str(tiny), "expected_digest": digest.upper()})["valid"] is True
    data = bytearray((tiny / "model.safetensors").read_bytes())
    data[-100] ^= 0x10
    (tiny / "model.safetensors").write_bytes(bytes(data))
    outcome, _w = run({"path": str(tiny), "expected_digest": digest})
    assert outcome.failed
    assert outcome.result["errors"] == [
        f"content_digest {outcome.result['content_digest']} differs from expected_digest {digest}"
    ]


def test_expected_manifest_names_changed_missing_and_extra_files(tiny, tmp_path):
    source = ok({"path": str(tiny)})
    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-100] ^= 0x10
    (copy / "model.safetensors").write_bytes(bytes(data))
    (copy / "chat_template.jinja").unlink()
    (copy / "notes.txt").write_text("left behind")

    outcome, _w = run({"path": str(copy), "expected_manifest": source})  # a whole registered result
    assert outcome.failed
    result = outcome.result
    assert result["differences"] == {
        "missing": ["chat_template.jinja"],
        "extra": ["notes.txt"],
        "changed": ["model.safetensors"],
    }
    assert [e.split(":")[0] for e in result["errors"]] == ["chat_template.jinja", "notes.txt", "model.safetensors"]
    assert "model.safetensors" in result["msg"] and "chat_template.jinja: missing" in result["msg"]

    clean = tmp_path / "clean"
    shutil.copytree(tiny, clean)
    os.utime(clean / "model.safetensors", ns=(0, 0))  # a different mtime is no difference
    same = ok({"path": str(clean), "expected_manifest": source["manifest"]})
    assert same["valid"] is True and same["content_digest"] == source["content_digest"]


def test_bad_arguments_fail_clearly(tiny):
    outcome, _w = run({"path": str(tiny), "expected_manifest": {"files": []}})
    assert outcome.failed and outcome.result["msg"] == "expected_manifest is a dict without a 'manifest' key"
    outcome, _w = run({"path": str(tiny), "workers": 0})
    assert outcome.failed and outcome.result["msg"] == "workers must be at least 1, got 0"


def test_message_is_capped_and_points_to_errors(tiny):
    for i in range(7):
        (tiny / f"w{i}.pt").write_bytes(b"\x80")
    outcome, _w = run({"path": str(tiny)})
    assert outcome.failed and len(outcome.result["errors"]) == 7
    assert outcome.result["msg"].endswith("; and 2 more (see errors)")


def test_cache_parent_is_created_private(tiny, tmp_path):
    cache = tmp_path / "no" / "such" / "dir" / "c.json"
    result = ok({"path": str(tiny), "cache_file": str(cache)})
    assert result["cache_written"] is True and json.loads(cache.read_text())
    assert (cache.parent.stat().st_mode & 0o777) == 0o700


def test_cache_write_failure_is_reported(tiny, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    outcome, _w = run({"path": str(tiny), "cache_file": str(tmp_path / "a-file" / "c.json")})
    assert outcome.failed and outcome.result["msg"].startswith(f"cannot write cache_file {tmp_path}/a-file/c.json")


def test_own_files_only_inside_the_model(tmp_path):
    root = str(tmp_path / "m")
    assert model_manifest.own_files(root, root + "/.llmops-manifest.json") == [
        ".llmops-manifest.json",
        ".llmops-manifest-*",
    ]
    assert model_manifest.own_files(root, root + "/a/b.json") == ["a/b.json", "a/.llmops-manifest-*"]
    assert model_manifest.own_files(root, str(tmp_path / "elsewhere.json")) == []
    assert model_manifest.own_files(root, str(tmp_path / "m2" / "x.json")) == []
