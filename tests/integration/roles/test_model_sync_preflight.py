"""Bad variables make model_sync fail in preflight, before any change, naming the variable.

Same one-run layout as test_vllm_host_preflight.py (itest_support.run_role_cases): every case is one
inventory host (``case-NNN``, ``ansible_connection: local``) with one bad setting on top of a valid
configuration, and ONE ansible-playbook run with ``--tags model_sync_preflight`` plays the real role
against all of them. With that tag only the role's argument spec and its one-pass variable check
(``model_sync_plan``, plugins/module_utils/model_sync_plan.py) run: no lock, no manifest, no copy. A bad
host must fail in one of those two, naming the variable, with changed=0; the valid controls must pass.
"""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
from itest_support import (
    LOCAL_HOST,
    CaseRun,
    assert_fails_in_variable_checks,
    assert_passes_variable_checks,
    case_hosts,
    case_overrides,
    run_role_cases,
    task_name,
)
from itest_support import VariableCase as Case

DIGEST = "9f" * 32  # a well-formed sha256 hex digest

HOST_SOURCE = {"model_sync_source_location": "host"}

CASES: Dict[str, Case] = {
    # --- the store on the serving hosts --------------------------------------------------------------
    "/ as the root": Case({"model_sync_root": "/"}, "model_sync_root", "system directory"),
    "/var/lib as the root": Case({"model_sync_root": "/var/lib"}, "model_sync_root", "system directory"),
    "/srv as the root": Case({"model_sync_root": "/srv"}, "model_sync_root", "system directory"),
    "relative root": Case({"model_sync_root": "srv/models"}, "model_sync_root", "absolute"),
    "root with a space": Case({"model_sync_root": "/srv/my models"}, "model_sync_root", "spaces"),
    "root with ..": Case({"model_sync_root": "/srv/models/../../etc"}, "model_sync_root", "normalized"),
    "root under /tmp": Case({"model_sync_root": "/tmp/models"}, "model_sync_root", "hides"),
    "root under /home": Case({"model_sync_root": "/home/ops/models"}, "model_sync_root", "hides"),
    "name that is a path": Case({"model_sync_name": "org/merged-model"}, "model_sync_name", "plain directory name"),
    "name ..": Case({"model_sync_name": ".."}, "model_sync_name", "plain directory name"),
    "empty name": Case({"model_sync_name": ""}, "model_sync_name", "empty"),
    "name with a newline": Case({"model_sync_name": "merged\nmodel"}, "model_sync_name", "control characters"),
    # --- the source ---------------------------------------------------------------------------------
    "empty source": Case({"model_sync_source": ""}, "model_sync_source", "empty"),
    "relative source": Case({"model_sync_source": "storage/models/merged-model"}, "model_sync_source", "absolute"),
    "/ as the source": Case({"model_sync_source": "/"}, "model_sync_source", "system directory"),
    "source with a quote": Case({"model_sync_source": "/storage/models/o'brien"}, "model_sync_source", "quotes"),
    "host source inside the store": Case(
        {**HOST_SOURCE, "model_sync_source": "/srv/vllm/models/merged-model/current"}, "model_sync_source", "overlaps"
    ),
    "host source holding the store": Case(
        {**HOST_SOURCE, "model_sync_source": "/srv/vllm"}, "model_sync_source", "overlaps"
    ),
    "remote source on a host outside the inventory": Case(
        {"model_sync_source_location": "remote", "model_sync_source_host": "nfs-gateway"},
        "model_sync_source_host",
        "inventory host",
    ),
    "remote source without a host": Case(
        {"model_sync_source_location": "remote", "model_sync_source_host": ""}, "model_sync_source_host", "empty"
    ),
    "unknown source location": Case({"model_sync_source_location": "nfs"}, "model_sync_source_location"),
    # --- what the copy must match --------------------------------------------------------------------
    "digest that is too short": Case({"model_sync_expected_digest": "abc123"}, "model_sync_expected_digest", "64"),
    "digest with an algorithm prefix": Case(
        {"model_sync_expected_digest": "sha256:" + DIGEST}, "model_sync_expected_digest", "64"
    ),
    "digest in capitals": Case({"model_sync_expected_digest": DIGEST.upper()}, "model_sync_expected_digest", "64"),
    "digest with a newline": Case(
        {"model_sync_expected_digest": DIGEST + "\n"}, "model_sync_expected_digest", "control characters"
    ),
    # --- accounts and instances ----------------------------------------------------------------------
    "owner with a space": Case({"model_sync_owner": "bad name"}, "model_sync_owner", "account name"),
    "group with a newline": Case({"model_sync_group": "root\nvllm"}, "model_sync_group", "control characters"),
    "empty owner": Case({"model_sync_owner": ""}, "model_sync_owner", "empty"),
    "instance to reload with a space": Case(
        {"model_sync_reload_instances": ["Main Server"]}, "model_sync_reload_instances[0]", "instance name"
    ),
    "instance to reload as a YAML number": Case(
        {"model_sync_reload_instances": ["main", 2]}, "model_sync_reload_instances[1]", "instance name"
    ),
    "instance to reload with a trailing newline": Case(
        {"model_sync_reload_instances": ["main\n"]}, "model_sync_reload_instances[0]", "instance name"
    ),
    "instances to reload as one string": Case(
        {"model_sync_reload_instances": "main"}, "model_sync_reload_instances", "must be a list"
    ),
    # --- numbers -------------------------------------------------------------------------------------
    "negative keep": Case({"model_sync_keep": -1}, "model_sync_keep", "at least 0"),
    "negative disk margin": Case({"model_sync_disk_margin_mb": -1}, "model_sync_disk_margin_mb", "at least 0"),
    "negative bandwidth cap": Case({"model_sync_bwlimit_kib": -5}, "model_sync_bwlimit_kib", "at least 0"),
    "hash workers beyond 256": Case({"model_sync_hash_workers": 1000}, "model_sync_hash_workers", "at most 256"),
    "lock timeout beyond a day": Case({"model_sync_lock_timeout": 100000}, "model_sync_lock_timeout", "at most"),
    "lock ttl under a minute": Case({"model_sync_lock_ttl": 59}, "model_sync_lock_ttl", "at least 60"),
    "lock ttl zero": Case({"model_sync_lock_ttl": 0}, "model_sync_lock_ttl", "at least 60"),
    "chunk size not a number": Case({"model_sync_chunk_mb": "big"}, "model_sync_chunk_mb"),
    "tree port 22": Case({"model_sync_tree_port": 22}, "model_sync_tree_port", "at least 1024"),
    "tree port 70000": Case({"model_sync_tree_port": 70000}, "model_sync_tree_port", "at most 65535"),
    "tree fanout 0": Case({"model_sync_tree_fanout": 0}, "model_sync_tree_fanout", "at least 1"),
    "tree fanout 100": Case({"model_sync_tree_fanout": 100}, "model_sync_tree_fanout", "at most 64"),
    "lock ttl as a boolean": Case({"model_sync_lock_ttl": True}, "model_sync_lock_ttl", "integer"),
    # --- switches and choices ------------------------------------------------------------------------
    "distribution mesh": Case({"model_sync_distribution": "mesh"}, "model_sync_distribution"),
    "reload that is not a boolean": Case({"model_sync_reload": "sometimes"}, "model_sync_reload"),
    "compression by name": Case({"model_sync_compress": "gzip"}, "model_sync_compress"),
}

VALID_CASES: Dict[str, Dict[str, Any]] = {
    "the baseline": {},
    "a share mounted on every host": {**HOST_SOURCE, "model_sync_source": "/mnt/storage/models/merged-model"},
    "a source host in the inventory": {"model_sync_source_location": "remote", "model_sync_source_host": "case-000"},
    "tree distribution with a digest": {
        "model_sync_distribution": "tree",
        "model_sync_expected_digest": DIGEST,
        "model_sync_tree_port": 8731,
    },
    "explicit instances, no reload": {"model_sync_reload_instances": ["a", "b"], "model_sync_reload": False},
    "source with a trailing slash": {"model_sync_source": "/storage/models/merged-model/"},
}

VARIABLE_CHECKS = ("[Validating arguments against arg spec", "[Check the model sync variables")
PLAN_TASK = "Check the model sync variables"


HOSTS = case_hosts([*CASES, *VALID_CASES])


@pytest.fixture(scope="module")
def preflight(tmp_path_factory: pytest.TempPathFactory) -> CaseRun:
    """One ansible-playbook run of the role's preflight against every case host."""
    work = tmp_path_factory.mktemp("model-sync-preflight")
    baseline = {**LOCAL_HOST, "model_sync_source": "/storage/models/merged-model"}
    hosts = case_overrides(HOSTS, CASES, VALID_CASES)
    return run_role_cases("llmops.platform.model_sync", "model_sync_preflight", baseline, hosts, work)


def task_names(report: Dict[str, Any]) -> List[str]:
    return [task_name(t) for p in report["plays"] for t in p["tasks"]]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_variable_fails_in_preflight_naming_it(preflight: CaseRun, case: str) -> None:
    assert_fails_in_variable_checks(
        preflight, case, HOSTS[case], CASES[case], variable_checks=VARIABLE_CHECKS, plan_task=PLAN_TASK
    )


@pytest.mark.parametrize("case", list(VALID_CASES))
def test_valid_variables_pass_the_preflight(preflight: CaseRun, case: str) -> None:
    assert_passes_variable_checks(preflight, case, HOSTS[case])  # no failure at all, tasks ran


def test_only_the_variable_checks_run(preflight: CaseRun) -> None:
    """The tag selects the argument spec and the variable check: no lock, manifest or copy is attempted."""
    names = task_names(preflight.report)
    assert len(names) == 2 and names[0].startswith("Validating arguments") and names[1].startswith(PLAN_TASK), names
    assert set(preflight.report["stats"]) == set(HOSTS.values())
    assert len(CASES) >= 20
