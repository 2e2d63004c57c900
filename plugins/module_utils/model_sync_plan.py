# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every variable check of the model_sync role in one pass (the ``llmops.platform.model_sync_plan`` filter).

Like the vllm_host checks (vllm_host_plan.py), it aims at values of the right type that cannot work on a
host: a system directory as the store's root, a source inside the store it is copied into, a name that
is a path, a digest that is not one, a port the daemon cannot use. Each problem raises HostPlanError
naming the variable. Standard library only, Python 3.8 compatible.
"""

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

import re
from typing import Any, Dict

from ansible_collections.llmops.platform.plugins.module_utils.vllm_host_plan import (
    ACCOUNT_RE,
    INSTANCE_NAME_RE,
    HostPlanError,
    _as_bool,
    _as_int,
    _as_list,
    _fail,
    _text,
    _within,
    check_path,
    hidden_by_sandbox,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
DIGEST_RE = re.compile(r"^[0-9a-f]{64}\Z")


def plan_sync(s: Dict[str, Any], inventory_hosts: Any = ()) -> Dict[str, Any]:
    """Check the role's variables (``s``: names without the ``model_sync_`` prefix); return the normalized ints."""
    name = _text(s["name"], "model_sync_name", allow_empty=False)
    if not NAME_RE.match(name):
        _fail("model_sync_name", f"must be a plain directory name (letters, digits, . _ -), got {name!r}")
    root = check_path(s["root"], "model_sync_root")
    hidden = hidden_by_sandbox(root)
    if hidden:
        _fail(
            "model_sync_root",
            f"{root} is under {hidden}, which the vllm@ unit's sandbox hides (ProtectHome, PrivateTmp): the "
            "instances could not read the models synced there; use a directory such as /srv/vllm/models",
        )
    if s["kind"] not in ("model", "lora_adapter"):
        _fail("model_sync_kind", f"must be model or lora_adapter, got {s['kind']!r}")
    location = s["source_location"]
    if location not in ("controller", "host", "remote"):
        _fail("model_sync_source_location", f"must be controller, host or remote, got {location!r}")
    source = _text(s["source"], "model_sync_source", allow_empty=False)
    source = check_path(source.rstrip("/") or "/", "model_sync_source", allow_system=False)
    store = root.rstrip("/") + "/" + name
    if location != "controller" and (_within(source, store) or _within(store, source)):
        _fail("model_sync_source", f"{source} overlaps the model store {store} it would be copied into")
    if location == "remote":
        host = _text(s["source_host"], "model_sync_source_host", allow_empty=False)
        if host not in list(inventory_hosts):
            _fail(
                "model_sync_source_host",
                f"must be an inventory host when model_sync_source_location is remote, got {host!r}",
            )
    digest = _text(s["expected_digest"], "model_sync_expected_digest")
    if digest and not DIGEST_RE.match(digest):
        _fail(
            "model_sync_expected_digest",
            f"must be empty or a sha256 hex digest (64 lowercase hex digits), got {digest!r}",
        )
    for var in ("owner", "group"):
        account = _text(s[var], "model_sync_" + var, allow_empty=False)
        if not ACCOUNT_RE.match(account):
            _fail("model_sync_" + var, f"must be an account name (a-z, 0-9, _ and -), got {account!r}")
    for i, instance in enumerate(_as_list(s["reload_instances"], "model_sync_reload_instances")):
        if not isinstance(instance, str) or not INSTANCE_NAME_RE.match(instance):
            _fail(
                f"model_sync_reload_instances[{i}]",
                f"must be an instance name of vllm_host_instances, got {instance!r}",
            )
    out = {}
    for var, minimum, maximum in (
        ("keep", 0, None),
        ("disk_margin_mb", 0, None),
        ("bwlimit_kib", 0, None),
        ("hash_workers", 0, 256),
        ("lock_timeout", 0, 86400),
        ("lock_ttl", 60, None),
        ("chunk_mb", 0, None),
        ("tree_fanout", 1, 64),
        ("tree_port", 1024, 65535),
    ):
        out[var] = _as_int(s[var], "model_sync_" + var, minimum=minimum, maximum=maximum)
    for var in ("reload", "compress", "load_check"):
        out[var] = _as_bool(s[var], "model_sync_" + var)
    if out["load_check"]:
        check_path(
            _text(s["load_check_python"], "model_sync_load_check_python", allow_empty=False),
            "model_sync_load_check_python",
        )
        checks = _as_list(s["load_checks"], "model_sync_load_checks")
        if not checks:
            _fail("model_sync_load_checks", "must name at least one of config, tokenizer, architecture")
        for i, check in enumerate(checks):
            if check not in ("config", "tokenizer", "architecture"):
                _fail(f"model_sync_load_checks[{i}]", f"must be config, tokenizer or architecture, got {check!r}")
    if s["distribution"] not in ("star", "tree"):
        _fail("model_sync_distribution", f"must be star or tree, got {s['distribution']!r}")
    out["store"] = store
    return out


__all__ = ["HostPlanError", "plan_sync"]
