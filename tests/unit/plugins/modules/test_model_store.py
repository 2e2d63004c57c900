"""llmops.platform.model_store: main() on real directories and symlinks in a temp dir.

The store layout is the model_sync role's (versions/<v> with its .llmops-verified marker, staging, the
current and previous links); the role's end-to-end behaviour on a real host is in
tests/integration/hosts/test_model_sync.py.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from module_harness import ModuleExit, run_main  # noqa: E402

from ansible_collections.llmops.platform.plugins.module_utils import model_store as store_utils  # noqa: E402
from ansible_collections.llmops.platform.plugins.modules import model_store  # noqa: E402

V1, V2, V3, V4, V5 = "1111111111111111", "2222222222222222", "3333333333333333", "4444444444444444", "5555555555555555"
RUN, OTHER = "run-aaaaaaaaaaaa", "run-bbbbbbbbbbbb"


def run(
    params: Dict[str, Any], check_mode: bool = False, diff: bool = False, warnings: Optional[List[str]] = None
) -> ModuleExit:
    return run_main(model_store.main, dict(params, _ansible_check_mode=check_mode, _ansible_diff=diff), warnings)


def ok(
    params: Dict[str, Any], check_mode: bool = False, diff: bool = False, warnings: Optional[List[str]] = None
) -> Dict[str, Any]:
    outcome = run(params, check_mode, diff, warnings)
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
        ({"state": "pruned", "version": "../etc"}, "version must be 8-64 lowercase hex digits, got '../etc'"),
        ({"state": "pruned"}, "state is pruned but all of the following are missing: version"),
        ({"state": "locked"}, "state is locked but all of the following are missing: lock_owner"),
        ({"state": "unlocked"}, "state is unlocked but all of the following are missing: lock_owner"),
        ({"state": "locked", "lock_owner": " "}, "lock_owner must be a non-empty run id (or omitted)"),
        ({"state": "locked", "lock_owner": RUN, "lock_timeout": -1},
         "lock_timeout must be 0 (do not wait) or more seconds, got -1"),
        ({"lock_ttl": 0}, "lock_ttl must be 1 or more seconds, got 0"),
        ({"state": "prepared", "clean_staging": True}, "clean_staging needs version: the staging copy it must spare"),
    ],
)  # fmt: skip
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


# --- the lock -----------------------------------------------------------------------------------------------


def lock_params(path: Path, state: str = "locked", owner: str = RUN, **more: Any) -> Dict[str, Any]:
    return {"path": str(path), "state": state, "lock_owner": owner, **more}


def hold(path: Path, owner: str, age: float = 0) -> Path:
    """Another run's lock, as the module writes it, last refreshed `age` seconds ago."""
    path.mkdir(parents=True, exist_ok=True)
    lock = path / ".llmops-lock"
    record = {"owner": owner, "pid": 4242, "host": "ctl-2", "since": int(time.time() - age - 60)}
    lock.write_text(json.dumps(dict(record, info={"playbook": "site.yml"})) + "\n")
    os.utime(lock, (time.time() - age, time.time() - age))
    return lock


def lock_record(path: Path) -> Dict[str, Any]:
    return json.loads((path / ".llmops-lock").read_text())


def age_lock(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path / ".llmops-lock", (then, then))


def refreshed(path: Path) -> bool:
    return (path / ".llmops-lock").stat().st_mtime > time.time() - 10


class FakeClock:
    """The module_utils' `time`, with a monotonic clock that only sleep() advances (and records)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: List[float] = []
        self.on_sleep: Optional[Callable[[int], None]] = None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(store_utils, "time", fake)
    return fake


def test_locked_takes_the_lock_creating_the_store_directories(tmp_path):
    path = tmp_path / "models" / "merged-model"
    info = {"controller": "ctl-1", "playbook": "site.yml"}
    result = ok(lock_params(path, lock_info=info))
    assert result["changed"] is True and result["waited"] == 0 and result["lock_taken_over_from"] is None
    assert result["created"] == [str(tmp_path / "models"), str(path)]
    assert all((Path(d).stat().st_mode & 0o7777) == 0o755 for d in result["created"])
    record = lock_record(path)
    assert record == {"owner": RUN, "pid": os.getpid(), "host": socket.gethostname(), "since": record["since"],
                      "info": info}  # fmt: skip
    assert abs(record["since"] - time.time()) < 10
    assert result["lock"] == dict(record, age=0, stale=False)
    assert [p.name for p in path.iterdir()] == [".llmops-lock"]  # no temporary record left behind
    assert not (path / "versions").exists()  # that is `prepared`'s


def test_locked_again_by_the_same_run_refreshes_it_without_a_change(tmp_path):
    path = tmp_path / "merged-model"
    ok(lock_params(path))
    age_lock(path, 600)
    before = (path / ".llmops-lock").read_text()
    result = ok(lock_params(path, lock_info={"ignored": "on a refresh"}))
    assert result["changed"] is False and result["lock"]["owner"] == RUN and result["lock"]["age"] == 0
    assert refreshed(path) and (path / ".llmops-lock").read_text() == before


def test_another_live_runs_lock_fails_after_the_timeout_naming_it(tmp_path, clock):
    path = tmp_path / "merged-model"
    lock = hold(path, OTHER, age=120)
    content = lock.read_text()
    outcome = run(lock_params(path, lock_timeout=5))
    assert outcome.failed and clock.sleeps == [1.0] * 5
    since = json.loads(content)["since"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
    match = re.fullmatch(
        re.escape(f"model store {path} is locked by run {OTHER} (host ctl-2, pid 4242, since {iso}, ")
        + r"(\d+) s ago"
        + re.escape(
            "; playbook=site.yml); waited 5 s (lock_timeout=5). Wait for that run, or if it is dead remove "
            f"{path}/.llmops-lock; it also expires 3600 s after its last refresh (in "
        )
        + r"(\d+) s\)\.",
        outcome.result["msg"],
    )
    assert match, outcome.result["msg"]
    assert 180 <= int(match.group(1)) <= 185 and 3475 <= int(match.group(2)) <= 3480
    assert outcome.result["lock"]["owner"] == OTHER and outcome.result["lock"]["stale"] is False
    assert lock.read_text() == content


def test_without_a_timeout_locked_does_not_wait(tmp_path, clock):
    hold(tmp_path / "m", OTHER)
    outcome = run(lock_params(tmp_path / "m"))
    assert outcome.failed and clock.sleeps == [] and "; waited 0 s (lock_timeout=0). " in outcome.result["msg"]


def test_locked_waits_for_the_other_run_to_let_go(tmp_path, clock):
    path = tmp_path / "merged-model"
    lock = hold(path, OTHER)
    clock.on_sleep = lambda n: lock.unlink() if n == 2 else None
    result = ok(lock_params(path, lock_timeout=10))
    assert result["changed"] is True and result["waited"] == 2.0 and clock.sleeps == [1.0, 1.0]
    assert lock_record(path)["owner"] == RUN


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path):
    path = tmp_path / "merged-model"
    hold(path, OTHER, age=7200)
    warnings: List[str] = []
    result = ok(lock_params(path), warnings=warnings)
    assert result["changed"] is True and lock_record(path)["owner"] == RUN
    old = result["lock_taken_over_from"]
    assert old["owner"] == OTHER and old["host"] == "ctl-2" and old["stale"] is True and old["age"] >= 7200
    assert len(warnings) == 1
    assert warnings[0].startswith(f"took over the stale lock of model store {path} from run {OTHER} (host ctl-2,")
    assert re.search(r"; playbook=site\.yml\): not refreshed for 720\d s \(lock_ttl=3600\)$", warnings[0])
    assert [p.name for p in path.iterdir()] == [".llmops-lock"]


@pytest.mark.parametrize(("ttl", "stale"), [(60, True), (3600, False)])
def test_lock_ttl_decides_what_is_stale(tmp_path, ttl, stale):
    path = tmp_path / "merged-model"
    hold(path, OTHER, age=120)
    assert ok({"path": str(path), "lock_ttl": ttl})["lock"]["stale"] is stale
    outcome = run(lock_params(path, lock_ttl=ttl))
    assert outcome.failed is not stale
    assert lock_record(path)["owner"] == (RUN if stale else OTHER)


def test_an_unreadable_lock_blocks_until_it_goes_stale(tmp_path):
    path = tmp_path / "merged-model"
    path.mkdir()
    (path / ".llmops-lock").write_text("")
    outcome = run(lock_params(path))
    assert outcome.failed
    assert outcome.result["msg"].startswith(
        f"model store {path} is locked by an unreadable lock record (last refreshed 0 s ago); waited 0 s"
    )
    age_lock(path, 7200)
    assert ok(lock_params(path))["lock_taken_over_from"]["owner"] is None
    assert lock_record(path)["owner"] == RUN


def test_locked_in_check_mode_writes_nothing(tmp_path):
    path = tmp_path / "models" / "merged-model"
    free = ok(lock_params(path), check_mode=True, diff=True)
    assert free["changed"] is True and free["lock"]["owner"] == RUN
    assert free["created"] == [str(tmp_path / "models"), str(path)] and not (tmp_path / "models").exists()
    assert "lock: (none)" in free["diff"]["before"]
    assert f"lock: {RUN} on {socket.gethostname()}" in free["diff"]["after"]

    ok(lock_params(path))
    age_lock(path, 600)
    ours = ok(lock_params(path), check_mode=True)
    assert ours["changed"] is False and not refreshed(path)

    lock = hold(path, OTHER, age=7200)
    content = lock.read_text()
    warnings: List[str] = []
    stale = ok(lock_params(path), check_mode=True, warnings=warnings)
    assert stale["changed"] is True and stale["lock_taken_over_from"]["owner"] == OTHER
    assert len(warnings) == 1 and warnings[0].startswith("would take over the stale lock of model store")
    assert stale["lock"]["owner"] == RUN and lock.read_text() == content

    hold(path, OTHER)
    live = run(lock_params(path), check_mode=True)
    assert live.failed and f"is locked by run {OTHER} (host ctl-2" in live.result["msg"]


def test_unlocked_removes_only_this_runs_lock(tmp_path):
    path = tmp_path / "merged-model"
    ok(lock_params(path))
    would = ok(lock_params(path, "unlocked"), check_mode=True)
    assert would["changed"] is True and would["lock"] is None and (path / ".llmops-lock").exists()

    result = ok(lock_params(path, "unlocked"), diff=True)
    assert result["changed"] is True and result["lock"] is None and not (path / ".llmops-lock").exists()
    assert f"lock: {RUN} on" in result["diff"]["before"] and "lock: (none)" in result["diff"]["after"]
    again = ok(lock_params(path, "unlocked"))
    assert again["changed"] is False and "msg" not in again

    lock = hold(path, OTHER)
    warnings: List[str] = []
    theirs = ok(lock_params(path, "unlocked"), warnings=warnings)
    assert theirs["changed"] is False and lock.exists() and theirs["lock"]["owner"] == OTHER
    assert theirs["msg"].startswith(f"model store {path} is locked by run {OTHER} (host ctl-2, pid 4242, since ")
    assert theirs["msg"].endswith(f"; playbook=site.yml), not by this run ({RUN}); left it in place")
    assert warnings == [theirs["msg"]]


def test_unlocked_on_a_store_that_does_not_exist(tmp_path):
    result = ok(lock_params(tmp_path / "models" / "m", "unlocked"))
    assert result["changed"] is False and result["lock"] is None and not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    "params",
    [
        {"state": "prepared"},
        {"state": "installed", "version": V1, "digest": V1 + "ab" * 24},
        {"state": "current", "version": V1},
        {"state": "pruned", "version": V1, "keep": 1},
    ],
    ids=lambda p: p["state"],
)
def test_changing_states_need_this_runs_lock(store, params):
    (store / f".staging-{V3}").mkdir()  # what `pruned` would remove
    (store / "versions").chmod(0o700)  # what `prepared` would set right
    params = dict(params, path=str(store), lock_owner=RUN)
    absent = run(params)
    assert absent.failed
    assert absent.result["msg"] == (
        f"model store {store} is not locked by this run ({RUN}); take the lock first (state=locked)"
    )
    hold(store, OTHER)
    theirs = run(params)
    assert theirs.failed
    assert theirs.result["msg"].startswith(
        f"model store {store} is locked by run {OTHER} (host ctl-2, pid 4242, since "
    )
    assert theirs.result["msg"].endswith(
        f"; playbook=site.yml), not by this run ({RUN}); take the lock first (state=locked)"
    )
    assert theirs.result["lock"]["owner"] == OTHER
    assert not os.path.lexists(store / "current") and (store / f".staging-{V3}").is_dir()
    assert ((store / "versions").stat().st_mode & 0o7777) == 0o700

    (store / ".llmops-lock").unlink()
    ok(lock_params(store))
    age_lock(store, 600)
    result = ok(params)
    assert refreshed(store) and result["lock"]["owner"] == RUN and result["lock"]["age"] == 0


def test_in_check_mode_changing_states_stop_only_for_another_live_run(store):
    params = {"path": str(store), "version": V1, "state": "current", "lock_owner": RUN}
    assert ok(params, check_mode=True)["switched"] is True  # free: the check-mode `locked` took nothing
    hold(store, OTHER, age=7200)
    assert ok(params, check_mode=True)["switched"] is True  # stale: `locked` would have taken it over
    hold(store, OTHER)
    outcome = run(params, check_mode=True)
    assert outcome.failed and f"is locked by run {OTHER} (host ctl-2" in outcome.result["msg"]
    assert not os.path.lexists(store / "current")


def test_query_reports_the_lock_and_never_needs_it(tmp_path):
    path = tmp_path / "merged-model"
    assert ok({"path": str(path), "lock_owner": RUN})["lock"] is None
    hold(path, OTHER, age=100)
    lock = ok({"path": str(path), "lock_owner": RUN})["lock"]
    assert {k: lock[k] for k in ("owner", "host", "pid", "info", "stale")} == {
        "owner": OTHER, "host": "ctl-2", "pid": 4242, "info": {"playbook": "site.yml"}, "stale": False
    }  # fmt: skip
    assert 100 <= lock["age"] <= 105 and lock["since"] <= time.time() - 160


# --- abandoned staging copies and what pruning would reclaim -------------------------------------------------


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def stage(path: Path, version: str, size: int) -> Path:
    staging = path / f".staging-{version}"
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"\0" * size)
    return staging


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    """A store whose directories `prepared` made (so later `prepared` runs change nothing but what they test)."""
    path = tmp_path / "models" / "merged-model"
    ok({"path": str(path), "state": "prepared"})
    return path


def test_query_reports_abandoned_staging_copies_but_not_the_versions_own(store):
    stage(store, V3, 100)
    stage(store, V4, 2000)
    stage(store, V5, 30)
    (store / ".staging-link").symlink_to(store / f".staging-{V4}")  # not the role's: never counted or removed
    result = ok({"path": str(store), "version": V3})
    assert result["abandoned_staging"] == [f".staging-{V4}", f".staging-{V5}"]
    assert result["abandoned_staging_bytes"] == 2030 and result["staged_bytes"] == 100
    assert result["prunable_after_install"] == [] and result["reclaimable_bytes"] == 2030
    everything = ok({"path": str(store)})
    assert everything["abandoned_staging"] == [f".staging-{V3}", f".staging-{V4}", f".staging-{V5}"]
    assert everything["abandoned_staging_bytes"] == 2130


def test_prepared_cleans_abandoned_staging_but_never_the_versions_own(prepared):
    own = stage(prepared, V3, 100)
    stage(prepared, V4, 2000)
    params = {"path": str(prepared), "version": V3, "state": "prepared", "clean_staging": True}
    would = ok(params, check_mode=True, diff=True)
    assert would["changed"] is True and would["removed_staging"] == [f".staging-{V4}"]
    assert would["abandoned_staging"] == [] and would["abandoned_staging_bytes"] == 0 and would["staging"] == [V3]
    assert (prepared / f".staging-{V4}").is_dir()
    assert f".staging-{V4}" in would["diff"]["before"] and f".staging-{V4}" not in would["diff"]["after"]

    assert ok(dict(params, clean_staging=False))["changed"] is False and (prepared / f".staging-{V4}").is_dir()
    result = ok(params)
    assert result["changed"] is True and result["removed_staging"] == [f".staging-{V4}"] and result["created"] == []
    assert not (prepared / f".staging-{V4}").exists() and (own / "model.safetensors").stat().st_size == 100
    assert result["staging"] == [V3] and result["abandoned_staging"] == [] and result["reclaimable_bytes"] == 0
    assert ok(params)["changed"] is False


# Each layout: versions (name -> mtime), the links, the version to install, keep, record_previous, and what the
# switch to it would prune. The ordering is the prune's: newest first by mtime, a version not installed yet first.
LAYOUTS = {
    "rotation-keep-2": ({V1: 1000, V2: 2000, V3: 3000}, V3, V2, V4, 2, True, [V2, V1]),
    "rotation-keep-3": ({V1: 1000, V2: 2000, V3: 3000}, V3, V2, V4, 3, True, [V1]),
    "installed-older-version": ({V1: 1000, V2: 2000, V3: 3000, V4: 500}, V3, V2, V4, 2, True, [V1]),
    "already-current": ({V1: 1000, V2: 2000, V3: 3000}, V3, V1, V3, 1, True, [V2]),
    "no-current-yet": ({V1: 1000, V2: 2000, V3: 3000}, None, None, V4, 2, True, [V2, V1]),
    "keep-0-keeps-all": ({V1: 1000, V2: 2000, V3: 3000}, V3, V2, V4, 0, True, []),
    "rollback": ({V1: 1000, V2: 2000, V3: 3000}, V2, V1, V3, 1, False, [V2]),
}


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_prunable_after_install_is_what_the_switch_then_prunes(prepared, layout):
    versions, current, previous, version, keep, record_previous, expected = layout
    for name, mtime in versions.items():
        add_version(prepared, name, mtime)
    for name, target in (("current", current), ("previous", previous)):
        if target:
            (prepared / name).symlink_to(f"versions/{target}")
    stage(prepared, V5, 50)
    params = {"path": str(prepared), "version": version, "keep": keep, "record_previous": record_previous}
    query = ok(params)
    assert query["prunable_after_install"] == expected
    expected_bytes = sum(tree_bytes(prepared / "versions" / name) for name in expected)
    assert query["prunable_after_install_bytes"] == expected_bytes and (expected_bytes > 0) is bool(expected)
    assert query["reclaimable_bytes"] == expected_bytes + 50

    if version not in versions:  # copy it: install writes the marker, which makes it the newest
        stage(prepared, version, 10)
        ok({"path": str(prepared), "version": version, "digest": version + "ab" * 24, "state": "installed"})
    switched = ok(dict(params, state="current"))
    assert switched["pruned"] == expected and switched["prunable_after_install"] == []


def test_pruned_makes_room_before_the_copy(prepared):
    for name, mtime in {V1: 1000, V2: 2000, V3: 3000}.items():
        add_version(prepared, name, mtime)
    (prepared / "current").symlink_to(f"versions/{V3}")
    (prepared / "previous").symlink_to(f"versions/{V2}")
    own = stage(prepared, V4, 100)  # a copy of the new version, cut short: resumed next
    stage(prepared, V5, 2000)
    params = {"path": str(prepared), "version": V4, "keep": 2}
    query = ok(params)
    sizes = {name: tree_bytes(prepared / "versions" / name) for name in (V1, V2)}
    assert query["prunable_after_install"] == [V2, V1] and query["abandoned_staging"] == [f".staging-{V5}"]
    assert query["reclaimable_bytes"] == sizes[V1] + sizes[V2] + 2000

    would = ok(dict(params, state="pruned"), check_mode=True, diff=True)
    assert would["changed"] is True and would["pruned"] == [V2, V1] and would["removed_staging"] == [f".staging-{V5}"]
    assert [v["name"] for v in would["versions"]] == [V3] and would["reclaimable_bytes"] == 0
    assert sorted(p.name for p in (prepared / "versions").iterdir()) == [V1, V2, V3]
    assert (prepared / f".staging-{V5}").is_dir()
    assert f"versions/{V1}" in would["diff"]["before"] and f"versions/{V1}" not in would["diff"]["after"]

    result = ok(dict(params, state="pruned"))
    assert result["pruned"] == [V2, V1] and result["removed_staging"] == [f".staging-{V5}"]
    assert sorted(p.name for p in (prepared / "versions").iterdir()) == [V3]
    assert sorted(p.name for p in prepared.iterdir() if p.name.startswith(".staging-")) == [own.name]
    # The links are the switch's: `current` still serves V3; `previous` names V2 until the switch moves it to V3.
    assert link(prepared, "current") == f"versions/{V3}" and link(prepared, "previous") == f"versions/{V2}"
    assert result["reclaimable_bytes"] == 0 and ok(dict(params, state="pruned"))["changed"] is False


def test_pruned_never_removes_what_current_serves(prepared):
    for name, mtime in {V1: 1000, V2: 2000, V3: 3000}.items():
        add_version(prepared, name, mtime)
    (prepared / "current").symlink_to(f"versions/{V2}")
    params = {"path": str(prepared), "version": V3, "keep": 1, "record_previous": False}
    assert ok(params)["prunable_after_install"] == [V2, V1]  # a rollback to V3 drops V2 after the switch
    result = ok(dict(params, state="pruned"))
    assert result["pruned"] == [V1] and (prepared / "versions" / V2).is_dir()


# --- durability -----------------------------------------------------------------------------------------------


@pytest.fixture
def fsyncs(monkeypatch) -> List[Dict[str, Any]]:
    """Every directory flush, with the directory's entries and links at that moment."""
    calls: List[Dict[str, Any]] = []
    real = store_utils._fsync_path

    def record(path, directory=False):
        if directory:
            entries = sorted(os.listdir(path))
            links = {n: os.readlink(os.path.join(path, n)) for n in entries if os.path.islink(os.path.join(path, n))}
            calls.append({"path": path, "entries": entries, "links": links})
        real(path, directory)

    monkeypatch.setattr(store_utils, "_fsync_path", record)
    return calls


def test_a_switch_is_flushed_after_its_renames(store, fsyncs):
    ok({"path": str(store), "version": V1, "state": "current"})
    assert [(c["path"], c["links"]) for c in fsyncs] == [(str(store), {"current": f"versions/{V1}"})]
    fsyncs.clear()
    ok({"path": str(store), "version": V2, "state": "current"})
    assert [(c["path"], c["links"]) for c in fsyncs] == [
        (str(store), {"current": f"versions/{V2}", "previous": f"versions/{V1}"})
    ]
    fsyncs.clear()
    ok({"path": str(store), "version": V2, "state": "current"})
    ok({"path": str(store), "version": V1, "state": "current"}, check_mode=True)
    assert fsyncs == []


def test_prune_and_staging_cleanup_are_flushed_after_the_removals(prepared, fsyncs):
    for name, mtime in {V1: 1000, V2: 2000, V3: 3000}.items():
        add_version(prepared, name, mtime)
    stage(prepared, V5, 10)
    params = {"path": str(prepared), "version": V3, "keep": 1, "state": "pruned"}
    ok(params, check_mode=True)
    assert fsyncs == []
    ok(params)
    assert fsyncs == [
        {"path": str(prepared), "entries": ["versions"], "links": {}},
        {"path": str(prepared / "versions"), "entries": [V3], "links": {}},
    ]
    fsyncs.clear()
    add_version(prepared, V1, 1000)
    ok({"path": str(prepared), "version": V3, "keep": 1, "state": "current"})
    assert fsyncs[-1] == {"path": str(prepared / "versions"), "entries": [V3], "links": {}}


# --- real processes racing for the lock -----------------------------------------------------------------------


def _contend(path: str, owner: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        store_utils.acquire_lock(path, owner)
        results.put(owner)
    except store_utils.LockHeld:
        results.put(None)


def race(path: Path, contenders: int) -> List[str]:
    """`contenders` processes released together to take the lock; returns the owners that got it."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(contenders), context.Queue()
    processes = [
        context.Process(target=_contend, args=(str(path), f"run-{i}", barrier, results)) for i in range(contenders)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=30) for process in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    return [owner for owner in outcomes if owner]


@pytest.mark.parametrize("guarded", [True, False], ids=["flock-guard", "link-alone"])
@pytest.mark.parametrize("contenders", [2, 6])
def test_processes_racing_for_a_free_lock_one_wins(tmp_path, monkeypatch, guarded, contenders):
    if not guarded:  # the children inherit the patch: link(2) alone must still make one winner
        monkeypatch.setattr(store_utils, "_guard", lambda path: contextlib.nullcontext())
    for attempt in range(10):
        path = tmp_path / f"m{attempt}"
        path.mkdir()
        winners = race(path, contenders)
        assert len(winners) == 1 and lock_record(path)["owner"] == winners[0]
        assert [p.name for p in path.iterdir()] == [".llmops-lock"]


def test_processes_racing_to_take_over_a_stale_lock_one_wins(tmp_path):
    for attempt in range(10):
        path = tmp_path / f"m{attempt}"
        hold(path, OTHER, age=7200)
        winners = race(path, 4)
        assert len(winners) == 1 and lock_record(path)["owner"] == winners[0]
        assert [p.name for p in path.iterdir()] == [".llmops-lock"]
