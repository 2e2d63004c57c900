"""llmops.platform.model_store: main() on real directories and symlinks in a temp dir.

The store layout is the model_sync role's (versions/<v> with its .llmops-verified marker, staging, the
current and previous links); the role's end-to-end behaviour on a real host is in
tests/integration/hosts/test_model_sync.py.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from module_harness import ModuleExit, run_main  # noqa: E402

from ansible_collections.llmops.platform.plugins.modules import model_store  # noqa: E402

V1, V2, V3, V4 = "1111111111111111", "2222222222222222", "3333333333333333", "4444444444444444"


def run(params: Dict[str, Any], check_mode: bool = False, diff: bool = False) -> ModuleExit:
    return run_main(model_store.main, dict(params, _ansible_check_mode=check_mode, _ansible_diff=diff))


def ok(params: Dict[str, Any], check_mode: bool = False, diff: bool = False) -> Dict[str, Any]:
    outcome = run(params, check_mode, diff)
    assert not outcome.failed, outcome.result.get("msg")
    return outcome.result


def add_version(store: Path, name: str, mtime: float, verified: bool = True) -> Path:
    version = store / "versions" / name
    version.mkdir(parents=True)
    (version / "config.json").write_text("{}")
    if verified:
        (version / ".llmops-verified").write_text(name + "ab" * 24 + "\n")
    os.utime(version, (mtime, mtime))
    return version


def link(store: Path, name: str) -> str:
    return os.readlink(store / name)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "merged-model"
    add_version(path, V1, 1000)
    add_version(path, V2, 2000)
    return path


def test_query_of_a_store_that_does_not_exist_yet(tmp_path):
    result = ok({"path": str(tmp_path / "models" / "m"), "version": V1, "keep": 3})
    assert result["changed"] is False
    assert result["installed"] is False and result["is_current"] is False
    assert result["versions"] == [] and result["current"] is None and result["previous"] is None
    assert result["free_bytes"] > 0 and result["prunable"] == [] and result["staging"] == []
    assert not (tmp_path / "models").exists()


def test_query_reports_versions_newest_first_links_and_staging(store):
    (store / "current").symlink_to(f"versions/{V2}")
    staging = store / f".staging-{V3}"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"\0" * 4096)
    result = ok({"path": str(store), "version": V3})
    assert [v["name"] for v in result["versions"]] == [V2, V1]
    assert all(v["verified"] for v in result["versions"])
    assert result["current"] == V2 and result["is_current"] is False and result["installed"] is False
    assert result["staging"] == [V3] and result["staged_bytes"] == 4096
    assert ok({"path": str(store), "version": V2})["is_current"] is True


def test_a_version_without_its_marker_is_not_installed(store):
    add_version(store, V3, 3000, verified=False)
    assert ok({"path": str(store), "version": V3})["installed"] is False
    outcome = run({"path": str(store), "version": V3, "state": "current"})
    assert outcome.failed
    assert outcome.result["msg"] == (
        f"version {V3} is not installed and verified under {store}/versions (no .llmops-verified naming it); "
        "nothing was switched"
    )
    assert not (store / "current").exists()


def test_first_switch_creates_current_without_previous(store):
    result = ok({"path": str(store), "version": V1, "state": "current"}, diff=True)
    assert result["changed"] is True and result["switched"] is True and result["switched_from"] is None
    assert link(store, "current") == f"versions/{V1}" and not os.path.lexists(store / "previous")
    assert result["current"] == V1 and result["previous"] is None and result["is_current"] is True
    assert "current -> (none)" in result["diff"]["before"] and f"current -> versions/{V1}" in result["diff"]["after"]


def test_switch_records_previous_and_a_second_run_changes_nothing(store):
    ok({"path": str(store), "version": V1, "state": "current"})
    result = ok({"path": str(store), "version": V2, "state": "current"})
    assert result["changed"] is True and result["switched_from"] == f"versions/{V1}"
    assert link(store, "current") == f"versions/{V2}" and link(store, "previous") == f"versions/{V1}"
    again = ok({"path": str(store), "version": V2, "state": "current"})
    assert again["changed"] is False and again["switched"] is False
    assert [p.name for p in store.iterdir() if p.name.startswith(".current") or p.name.startswith(".previous")] == []


def test_rollback_keeps_previous_on_the_good_version(store):
    ok({"path": str(store), "version": V1, "state": "current"})
    ok({"path": str(store), "version": V2, "state": "current"})
    result = ok({"path": str(store), "version": V1, "state": "current", "record_previous": False})
    assert result["changed"] is True
    assert link(store, "current") == f"versions/{V1}" and link(store, "previous") == f"versions/{V1}"


def test_check_mode_reports_the_switch_and_changes_nothing(store):
    ok({"path": str(store), "version": V1, "state": "current"})
    result = ok({"path": str(store), "version": V2, "state": "current"}, check_mode=True, diff=True)
    assert result["changed"] is True and result["switched"] is True
    assert result["current"] == V2 and result["previous"] == V1
    assert link(store, "current") == f"versions/{V1}" and not os.path.lexists(store / "previous")
    assert f"current -> versions/{V2}" in result["diff"]["after"]


def test_prune_keeps_the_newest_and_never_current_or_previous(store):
    add_version(store, V3, 3000)
    add_version(store, V4, 4000)
    (store / "current").symlink_to(f"versions/{V1}")  # the oldest one is current
    query = ok({"path": str(store), "version": V4, "keep": 2})
    assert query["prunable"] == [V2] and query["changed"] is False and (store / "versions" / V2).is_dir()

    would = ok({"path": str(store), "version": V4, "state": "current", "keep": 2}, check_mode=True)
    assert would["pruned"] == [V2] and sorted(p.name for p in (store / "versions").iterdir()) == [V1, V2, V3, V4]

    result = ok({"path": str(store), "version": V4, "state": "current", "keep": 2})
    # V4 is new current, V1 became previous, V3 is within the newest two: only V2 goes.
    assert result["pruned"] == [V2] and result["prunable"] == []
    assert sorted(p.name for p in (store / "versions").iterdir()) == [V1, V3, V4]
    assert link(store, "current") == f"versions/{V4}" and link(store, "previous") == f"versions/{V1}"


def test_keep_zero_keeps_every_version(store):
    add_version(store, V3, 3000)
    result = ok({"path": str(store), "version": V3, "state": "current", "keep": 0})
    assert result["pruned"] == [] and len(result["versions"]) == 3


def test_a_real_directory_named_current_is_refused(store):
    (store / "current").mkdir()
    outcome = run({"path": str(store), "version": V1, "state": "current"})
    assert outcome.failed
    assert outcome.result["msg"] == (
        f"{store}/current exists but is not a symlink; move it away (model_sync manages this path)"
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"keep": -1}, "keep must be 0 (keep all) or more, got -1"),
        ({"state": "current"}, "state is current but all of the following are missing: version"),
        ({"state": "current", "version": "../etc"}, "version must be 8-64 lowercase hex digits, got '../etc'"),
    ],
)
def test_bad_parameters_are_named(store, params, message):
    outcome = run({"path": str(store), **params})
    assert outcome.failed and outcome.result["msg"] == message
    assert not (store / "current").exists()


def test_prepared_creates_the_directories_0755_once(tmp_path):
    path = tmp_path / "models" / "merged-model"
    result = ok({"path": str(path), "state": "prepared"})
    assert result["changed"] is True
    assert result["created"] == [str(tmp_path / "models"), str(path), str(path / "versions")]
    for directory in result["created"]:
        assert (Path(directory).stat().st_mode & 0o7777) == 0o755
    assert ok({"path": str(path), "state": "prepared"})["changed"] is False
    (path / "versions").chmod(0o700)
    assert ok({"path": str(path), "state": "prepared"})["created"] == [str(path / "versions")]


def test_prepared_in_check_mode_creates_nothing(tmp_path):
    path = tmp_path / "models" / "merged-model"
    assert ok({"path": str(path), "state": "prepared"}, check_mode=True)["changed"] is True
    assert not (tmp_path / "models").exists()


def test_installed_marks_and_moves_the_staging_copy(tmp_path):
    path = tmp_path / "merged-model"
    ok({"path": str(path), "state": "prepared"})
    staging = path / f".staging-{V1}"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"weights")
    digest = V1 + "cd" * 24
    would = ok({"path": str(path), "version": V1, "digest": digest, "state": "installed"}, check_mode=True)
    assert would["changed"] is True and staging.is_dir() and not (path / "versions" / V1).exists()

    result = ok({"path": str(path), "version": V1, "digest": digest, "state": "installed"})
    assert result["changed"] is True and result["installed"] is True and result["staging"] == []
    assert not staging.exists()
    assert (path / "versions" / V1 / "model.safetensors").read_bytes() == b"weights"
    assert (path / "versions" / V1 / ".llmops-verified").read_text() == digest + "\n"
    again = ok({"path": str(path), "version": V1, "digest": digest, "state": "installed"})
    assert again["changed"] is False
    # and it can now become current
    assert ok({"path": str(path), "version": V1, "state": "current"})["current"] == V1


@pytest.mark.parametrize(
    ("setup", "digest", "message"),
    [
        ("none", V1 + "cd" * 24, "no staging copy {path}/.staging-" + V1 + " to install (copy and verify it first)"),
        ("staging", V2 + "cd" * 24, "digest '" + V2 + "cd" * 24 + "' does not belong to version " + V1),
        ("unmarked", V1 + "cd" * 24, "{path}/versions/" + V1 + " exists but is not a verified copy of " + V1 + "cd" * 24
         + "; remove it and re-run"),
    ],
)  # fmt: skip
def test_installed_refuses_what_it_cannot_vouch_for(tmp_path, setup, digest, message):
    path = tmp_path / "merged-model"
    ok({"path": str(path), "state": "prepared"})
    if setup == "staging":
        (path / f".staging-{V1}").mkdir()
    if setup == "unmarked":
        add_version(path, V1, 1000, verified=False)
        (path / f".staging-{V1}").mkdir()
    outcome = run({"path": str(path), "version": V1, "digest": digest, "state": "installed"})
    assert outcome.failed and outcome.result["msg"] == message.format(path=path)
    assert not (path / "current").exists()


def test_query_reports_rsync_on_the_host(tmp_path):
    assert ok({"path": str(tmp_path)})["rsync_path"] == shutil.which("rsync")
