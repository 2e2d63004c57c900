"""plan_sync: the model_sync role's one-pass variable check.

Settings start from the role's defaults (roles/model_sync/defaults/main.yml through ``_model_sync_settings``
of roles/model_sync/vars/main.yml). The role-level test is tests/integration/roles/test_model_sync_preflight.py.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
from plan_support import role_settings

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.llmops.platform.plugins.module_utils.model_sync_plan import (  # noqa: E402
    HostPlanError,
    plan_sync,
)

INVENTORY = ["serve-1", "serve-2", "nfs-1"]
DIGEST = "0123456789abcdef" * 4


DEFAULTS = role_settings("model_sync")


def settings(**overrides: Any) -> Dict[str, Any]:
    return {**copy.deepcopy(DEFAULTS), **overrides}


def test_defaults_pass_and_give_the_store_and_numbers():
    out = plan_sync(settings(), INVENTORY)
    assert out["store"] == "/srv/vllm/models/merged-model"
    assert out["keep"] == 3 and out["lock_ttl"] == 21600 and out["tree_port"] == 8730 and out["tree_fanout"] == 2
    assert out["reload"] is True and out["compress"] is False
    numbers = [out[k] for k in ("keep", "disk_margin_mb", "bwlimit_kib", "chunk_mb", "lock_timeout")]
    assert all(isinstance(n, int) and not isinstance(n, bool) for n in numbers), numbers


def test_strings_from_extra_vars_are_converted():
    out = plan_sync(settings(keep="5", tree_port="9000", reload="no", compress="yes"), INVENTORY)
    assert out["keep"] == 5 and out["tree_port"] == 9000 and out["reload"] is False and out["compress"] is True


def test_valid_variants():
    plan_sync(settings(source_location="host", source="/mnt/share/merged-model"), INVENTORY)
    plan_sync(settings(source_location="remote", source_host="nfs-1"), INVENTORY)
    plan_sync(settings(expected_digest=DIGEST, distribution="tree", reload_instances=["a", "b-2"]), INVENTORY)
    plan_sync(settings(source="/storage/models/merged-model/"), INVENTORY)  # a trailing slash is rsync's business
    plan_sync(settings(kind="lora_adapter", root="/srv/vllm/models/adapters", name="sql"), INVENTORY)
    plan_sync(settings(keep=0, chunk_mb=0, hash_workers=0, lock_timeout=0), INVENTORY)
    plan_sync(settings(load_check_python="/opt/vllm-0.11/venv/bin/python3", load_checks=["architecture"]), INVENTORY)
    # The load check off: its interpreter and checks are not looked at.
    plan_sync(settings(load_check=False, load_check_python="", load_checks=[]), INVENTORY)


def test_a_controller_source_may_have_the_store_path():
    # The controller's /srv/vllm/... is not the serving host's store: no overlap to refuse.
    plan_sync(settings(source="/srv/vllm/models/merged-model/current"), INVENTORY)


FAILURES = {
    "name empty": ("name", {"name": ""}),
    "name with a slash": ("name", {"name": "org/model"}),
    "name ..": ("name", {"name": ".."}),
    "name hidden file": ("name", {"name": ".model"}),
    "name trailing newline": ("name", {"name": "model\n"}),
    "name too long": ("name", {"name": "m" * 65}),
    "root /": ("root", {"root": "/"}),
    "root /var/lib": ("root", {"root": "/var/lib"}),
    "root relative": ("root", {"root": "srv/models"}),
    "root with a space": ("root", {"root": "/srv/my models"}),
    "root with ..": ("root", {"root": "/srv/a/../b"}),
    "root under /tmp": ("root", {"root": "/tmp/models"}),
    "root under /root": ("root", {"root": "/root/models"}),
    "kind unknown": ("kind", {"kind": "adapter"}),
    "location unknown": ("source_location", {"source_location": "nfs"}),
    "source empty": ("source", {"source": ""}),
    "source relative": ("source", {"source": "models/m"}),
    "source /": ("source", {"source": "/"}),
    "source //": ("source", {"source": "//"}),
    "source /etc": ("source", {"source": "/etc"}),
    "host source in the store": ("source", {"source_location": "host", "source": "/srv/vllm/models/merged-model/v1"}),
    "host source is the store": ("source", {"source_location": "host", "source": "/srv/vllm/models/merged-model"}),
    "remote source holds the store": (
        "source",
        {"source_location": "remote", "source_host": "nfs-1", "source": "/srv/vllm"},
    ),
    "remote without host": ("source_host", {"source_location": "remote", "source_host": ""}),
    "remote host not in inventory": ("source_host", {"source_location": "remote", "source_host": "nfs-9"}),
    "digest short": ("expected_digest", {"expected_digest": "abc"}),
    "digest prefixed": ("expected_digest", {"expected_digest": "sha256:" + DIGEST}),
    "digest uppercase": ("expected_digest", {"expected_digest": DIGEST.upper()}),
    "digest trailing newline": ("expected_digest", {"expected_digest": DIGEST + "\n"}),
    "owner with a space": ("owner", {"owner": "bad name"}),
    "owner empty": ("owner", {"owner": ""}),
    "group trailing newline": ("group", {"group": "root\n"}),
    "reload instance with a space": ("reload_instances[0]", {"reload_instances": ["Main Server"]}),
    "reload instance number": ("reload_instances[1]", {"reload_instances": ["a", 1]}),
    "reload instance trailing newline": ("reload_instances[0]", {"reload_instances": ["main\n"]}),
    "reload instances string": ("reload_instances", {"reload_instances": "main"}),
    "keep negative": ("keep", {"keep": -1}),
    "keep float": ("keep", {"keep": 2.5}),
    "margin negative": ("disk_margin_mb", {"disk_margin_mb": -1}),
    "bwlimit words": ("bwlimit_kib", {"bwlimit_kib": "fast"}),
    "hash workers 257": ("hash_workers", {"hash_workers": 257}),
    "lock timeout beyond a day": ("lock_timeout", {"lock_timeout": 86401}),
    "lock ttl 59": ("lock_ttl", {"lock_ttl": 59}),
    "lock ttl bool": ("lock_ttl", {"lock_ttl": True}),
    "chunk negative": ("chunk_mb", {"chunk_mb": -1}),
    "fanout 0": ("tree_fanout", {"tree_fanout": 0}),
    "fanout 65": ("tree_fanout", {"tree_fanout": 65}),
    "port 22": ("tree_port", {"tree_port": 22}),
    "port 65536": ("tree_port", {"tree_port": 65536}),
    "reload not a bool": ("reload", {"reload": "sometimes"}),
    "compress not a bool": ("compress", {"compress": "gzip"}),
    "distribution mesh": ("distribution", {"distribution": "mesh"}),
    "load check not a bool": ("load_check", {"load_check": "maybe"}),
    "load check python relative": ("load_check_python", {"load_check_python": "venv/bin/python"}),
    "load check python empty": ("load_check_python", {"load_check_python": ""}),
    "load check python with ..": ("load_check_python", {"load_check_python": "/opt/vllm/../bin/python"}),
    "load checks empty": ("load_checks", {"load_checks": []}),
    "load checks string": ("load_checks", {"load_checks": "tokenizer"}),
    "load check unknown": ("load_checks[1]", {"load_checks": ["config", "weights"]}),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_bad_value_fails_naming_the_variable(case):
    variable, overrides = FAILURES[case]
    with pytest.raises(HostPlanError) as info:
        plan_sync(settings(**overrides), INVENTORY)
    assert str(info.value).startswith(f"model_sync_{variable}:"), str(info.value)


def test_messages_say_why():
    def message(**overrides):
        with pytest.raises(HostPlanError) as info:
            plan_sync(settings(**overrides), INVENTORY)
        return str(info.value)

    assert "overlaps the model store" in message(source_location="host", source="/srv/vllm")
    assert "inventory host" in message(source_location="remote", source_host="nfs-9")
    assert "64 lowercase hex digits" in message(expected_digest="abc")
    assert "hides" in message(root="/home/ops/models")
    assert "system directory" in message(root="/srv")


def test_an_empty_inventory_refuses_every_source_host():
    with pytest.raises(HostPlanError, match=r"^model_sync_source_host:"):
        plan_sync(settings(source_location="remote", source_host="nfs-1"))
