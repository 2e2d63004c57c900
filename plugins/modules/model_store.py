#!/usr/bin/python
# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: model_store
short_description: Read, lock, switch and prune the versioned model store of a serving host
version_added: 0.1.0
description:
  - Manages the content-addressed store that the P(llmops.platform.model_sync#role) role keeps for one served model
    on a host. C(<path>/versions/<version>) holds verified copies (the version is the first 16 hex digits of
    the copy's content digest; C(.llmops-verified) inside holds the whole digest), C(<path>/current) is the
    link vLLM serves and C(<path>/previous) the link it had before the last switch.
  - O(state=query) reads everything in one pass (versions, links, copies left in staging, free space) and
    changes nothing, so one round trip decides whether a version must be copied at all.
  - O(state=prepared) creates the directories a copy lands in (the model root, O(path) and
    C(versions/), mode 0755).
  - O(state=installed) takes the staging copy C(<path>/.staging-<version>) that the caller has verified,
    flushes every file to disk, writes the C(.llmops-verified) marker holding O(digest) and renames the copy
    to C(versions/<version>), so a version is either complete and marked or not there at all.
  - O(state=current) points C(current) at O(version) by renaming a fresh symlink over it, so a reader sees
    the old or the new target and never a missing link; C(previous) then points at the version that was
    replaced. A version without its C(.llmops-verified) marker is refused and nothing is switched.
  - With O(keep), versions beyond the O(keep) most recent are removed when O(state=current) (listed in
    RV(prunable) when O(state=query)). C(current), C(previous) and O(version) are never removed.
  - O(state=pruned) makes room before a copy, removing now what the switch to O(version) would prune once
    O(version) is installed (RV(prunable_after_install)) and the copies other versions left in staging
    (RV(abandoned_staging)). It never removes the version C(current) serves, O(version) or its staging copy.
  - O(state=locked) takes the store's lock, C(<path>/.llmops-lock), for the run named by O(lock_owner), so two
    playbook runs never interleave on one host's store; O(state=unlocked) releases it. With O(lock_owner),
    O(state=prepared), O(state=installed), O(state=current) and O(state=pruned) first check that this run
    holds the lock (and refresh it), and fail otherwise. O(state=query) never needs the lock and reports it.
author:
  - llmops.platform maintainers (@llmops)
options:
  path:
    description:
      - The model's directory on the host (C(<model_sync_root>/<model_sync_name>)). It need not exist for
        O(state=query).
    type: path
    required: true
  version:
    description:
      - The version to look up (O(state=query)), install (O(state=installed)) or make current
        (O(state=current)); required for the last two.
    type: str
  digest:
    description:
      - The content digest of the verified copy (from P(llmops.platform.model_manifest#module)); O(version) is its
        first hex digits. Required with O(state=installed).
    type: str
  state:
    description:
      - V(query) only reads. V(prepared) creates the directories (and with O(clean_staging) removes abandoned
        staging copies). V(installed) moves a verified staging copy into C(versions/). V(current) switches
        C(current) to O(version) and prunes. V(pruned) removes what the switch to O(version) would prune, and
        abandoned staging copies, before a copy. V(locked) takes the store's lock for O(lock_owner),
        V(unlocked) releases it.
      - V(pruned) requires O(version); V(locked) and V(unlocked) require O(lock_owner).
    type: str
    choices: [query, prepared, installed, current, pruned, locked, unlocked]
    default: query
  keep:
    description:
      - Versions to keep, newest first by the time their copy was completed. V(0) keeps all.
    type: int
    default: 0
  record_previous:
    description:
      - Point C(previous) at the version C(current) is leaving. Set V(false) when rolling back, so that
        C(previous) keeps naming the good version rather than the one that failed.
    type: bool
    default: true
  clean_staging:
    description:
      - With O(state=prepared), remove the staging copies of versions other than O(version) (listed in
        RV(abandoned_staging)), copies cut short for a version nobody syncs any more. The staging copy of
        O(version), which a copy may resume, is never removed. Requires O(version).
    type: bool
    default: false
  lock_owner:
    description:
      - An opaque id of the run, chosen by the caller and the same for every task of the run (for example 16
        random characters drawn once per play). Required with O(state=locked) and O(state=unlocked).
      - With O(state=prepared), O(state=installed), O(state=current) or O(state=pruned), the task fails unless
        this run holds the lock, and refreshes it. In check mode, where O(state=locked) wrote no lock, a free
        or stale lock is enough; another live run's lock still fails the task.
    type: str
  lock_timeout:
    description:
      - With O(state=locked), how many seconds to wait (polling every second) for another run to release the
        lock. V(0) does not wait.
    type: int
    default: 0
  lock_ttl:
    description:
      - Seconds after its last refresh at which a lock is stale. O(state=locked) takes a stale lock over (with
        a warning, returning RV(lock_taken_over_from)). Every task given O(lock_owner) refreshes it, so this
        bounds the longest single task of a run (a copy), not the run.
    type: int
    default: 3600
  lock_info:
    description:
      - Free-form fields recorded in the lock with O(state=locked) (for example the controller host and the
        playbook), shown to runs that find the store locked. Never required.
    type: dict
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: >-
      Reports what a switch, a prune, a staging cleanup or a lock would change and changes nothing.
      O(state=locked) still waits for and fails on another live run's lock, as the real run would.
  diff_mode:
    support: full
    details: The links, the versions, the staging copies and the lock holder, before and after.
  platform:
    platforms: posix
seealso:
  - module: llmops.platform.model_manifest
"""

EXAMPLES = r"""
- name: Lock the store for this run (wait up to 10 minutes for another run to finish)
  llmops.platform.model_store:
    path: /srv/vllm/models/merged-model
    state: locked
    lock_owner: "{{ run_id }}"
    lock_timeout: 600
    lock_info:
      controller: "{{ lookup('ansible.builtin.pipe', 'hostname') }}"
      playbook: "{{ ansible_play_name }}"

- name: Is this version already on the host?
  llmops.platform.model_store:
    path: /srv/vllm/models/merged-model
    version: 3f1c9a0be2d47c55
    keep: 3
  register: store

- name: Make room before the copy (what the switch would prune anyway, abandoned staging copies)
  llmops.platform.model_store:
    path: /srv/vllm/models/merged-model
    version: 3f1c9a0be2d47c55
    keep: 3
    state: pruned
    lock_owner: "{{ run_id }}"
  when: store.free_bytes + store.staged_bytes < needed_bytes | int

- name: Create the directories, copy into /srv/vllm/models/merged-model/.staging-<version>, verify it
  llmops.platform.model_store:
    path: /srv/vllm/models/merged-model
    version: 3f1c9a0be2d47c55
    state: prepared
    clean_staging: true
    lock_owner: "{{ run_id }}"

- name: Install the verified copy
  llmops.platform.model_store:
    path: /srv/vllm/models/merged-model
    version: 3f1c9a0be2d47c55
    digest: "{{ manifest.content_digest }}"
    state: installed

- name: Serve it (previous keeps the version being replaced, older versions beyond 3 are removed)
  llmops.platform.model_store:
    path: /srv/vllm/models/merged-model
    version: 3f1c9a0be2d47c55
    state: current
    keep: 3
  when: not store.is_current or store.prunable | length > 0

- name: Roll back without overwriting `previous`
  llmops.platform.model_store:
    path: /srv/vllm/models/merged-model
    version: "{{ store.current }}"
    state: current
    record_previous: false

- name: Release the lock
  llmops.platform.model_store:
    path: /srv/vllm/models/merged-model
    state: unlocked
    lock_owner: "{{ run_id }}"
"""

RETURN = r"""
versions:
  description: The versions in the store, newest first, each with C(name), C(verified), C(digest), C(mtime).
  returned: always
  type: list
  elements: dict
current:
  description: The version C(current) points at after this task, null when it does not point into C(versions/).
  returned: always
  type: str
previous:
  description: The version C(previous) points at after this task, or null.
  returned: always
  type: str
installed:
  description: Whether O(version) is in the store and verified.
  returned: always
  type: bool
is_current:
  description: Whether C(current) points at O(version) (after this task).
  returned: always
  type: bool
rsync_path:
  description: Where C(rsync) is on the host (the receiving end of a copy), or null.
  returned: always
  type: str
staging:
  description: Versions with a copy in staging (in progress, or cut short and resumable).
  returned: always
  type: list
  elements: str
staged_bytes:
  description: Bytes already in the staging copy of O(version) (a resumed copy needs less free space).
  returned: always
  type: int
free_bytes:
  description: Free bytes on the filesystem holding O(path) (or its nearest existing parent).
  returned: always
  type: int
prunable:
  description: Versions beyond O(keep) that may be removed (O(state=query)); empty after a prune.
  returned: always
  type: list
  elements: str
switched:
  description: Whether this task moved C(current) (would move it, in check mode).
  returned: always
  type: bool
switched_from:
  description: The target C(current) had before this task switched it (null when it did not switch).
  returned: always
  type: str
pruned:
  description: Versions removed by this task (would be removed, in check mode).
  returned: always
  type: list
  elements: str
created:
  description: Directories created or whose mode was set (O(state=prepared)), or created for the lock
    (O(state=locked)).
  returned: always
  type: list
  elements: str
abandoned_staging:
  description: Staging directories (their names, C(.staging-<version>)) other than O(version)'s; without
    O(version), all of them.
  returned: always
  type: list
  elements: str
abandoned_staging_bytes:
  description: Bytes in RV(abandoned_staging).
  returned: always
  type: int
prunable_after_install:
  description:
    - The versions that O(state=current) to O(version) with O(keep) (and O(record_previous)) would prune once
      O(version) is installed and current; O(state=pruned) removes them now. Empty without O(version) or
      with O(keep=0).
    - The ordering of O(state=current)'s prune, with a version not installed yet counting as the newest. Never
      O(version) nor the version C(current) serves (the C(previous) the switch leaves); it can include the
      version C(previous) names now, which the switch stops naming. With O(record_previous=false) (a rollback)
      it can include the version C(current) serves now, which O(state=pruned) leaves to the switch.
  returned: always
  type: list
  elements: str
prunable_after_install_bytes:
  description: Bytes in RV(prunable_after_install).
  returned: always
  type: int
reclaimable_bytes:
  description: RV(abandoned_staging_bytes) plus RV(prunable_after_install_bytes), what O(state=pruned) frees
    (unless O(record_previous=false) puts the current version in RV(prunable_after_install)). Room for a copy
    of O(version) is RV(free_bytes) + RV(staged_bytes) + this.
  returned: always
  type: int
removed_staging:
  description: Staging directories removed by this task (would be removed, in check mode).
  returned: always
  type: list
  elements: str
lock:
  description:
    - The store's lock after this task, or null when it is free. With O(state=locked), the lock this run holds
      (would hold, in check mode). On failure with another run's lock, that run's.
    - C(owner), C(pid) (of the module process that took it), C(host), C(since) (epoch seconds), C(info)
      (O(lock_info)), C(age) (seconds since its last refresh) and C(stale) (older than O(lock_ttl)).
  returned: always
  type: dict
waited:
  description: Seconds O(state=locked) waited for another run's lock.
  returned: always
  type: float
lock_taken_over_from:
  description: The stale lock O(state=locked) replaced (as RV(lock)), or null. A warning names it too.
  returned: always
  type: dict
msg:
  description: With O(state=unlocked), why a lock held by another run was left in place.
  returned: when O(state=unlocked) finds another run's lock
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.platform.plugins.module_utils.model_store import (
    STAGING_PREFIX,
    LockHeld,
    StoreError,
    acquire_lock,
    check_version,
    clean_staging,
    describe_holder,
    install,
    prepare,
    prune,
    read_store,
    release_lock,
    require_lock,
    switch,
)

# The states that change the store: with lock_owner, each first proves this run holds the lock.
CHANGING = ("prepared", "installed", "current", "pruned")
STORE_KEYS = (
    "versions", "current", "previous", "installed", "is_current", "staging", "staged_bytes", "free_bytes",
    "prunable", "rsync_path", "abandoned_staging", "abandoned_staging_bytes", "prunable_after_install",
    "prunable_after_install_bytes", "reclaimable_bytes", "lock",
)  # fmt: skip


def _render(store):
    lines = [f"current -> {store['current_target'] or '(none)'}", f"previous -> {store['previous_target'] or '(none)'}"]
    lines += [f"versions/{v['name']}" for v in sorted(store["versions"], key=lambda v: v["name"])]
    lines += [STAGING_PREFIX + name for name in store["staging"]]
    lock = store["lock"]
    lines.append(f"lock: {lock.get('owner')} on {lock.get('host')}" if lock else "lock: (none)")
    return "\n".join(lines) + "\n"


def _without(store, versions=(), staging=()):
    """The store once the named versions and staging directories are gone: check mode's `after`.

    The callers remove all of `abandoned_staging` and of `prunable_after_install` (but for the current version
    `pruned` spares), so an emptied list has reclaimed its bytes; one that is not keeps its count.
    """
    after = dict(store)
    after["versions"] = [v for v in store["versions"] if v["name"] not in versions]
    after["staging"] = [n for n in store["staging"] if STAGING_PREFIX + n not in staging]
    after["prunable"] = [n for n in store["prunable"] if n not in versions]
    after["abandoned_staging"] = [n for n in store["abandoned_staging"] if n not in staging]
    after["prunable_after_install"] = [n for n in store["prunable_after_install"] if n not in versions]
    if not after["abandoned_staging"]:
        after["abandoned_staging_bytes"] = 0
    if not after["prunable_after_install"]:
        after["prunable_after_install_bytes"] = 0
    after["reclaimable_bytes"] = after["abandoned_staging_bytes"] + after["prunable_after_install_bytes"]
    return after


def _reread(module, before, result, versions=(), staging=()):
    """The store after this task: read again, or in check mode `before` less what would be removed."""
    params = module.params
    if not result["changed"]:
        return before
    if module.check_mode:
        return _without(before, versions, staging)
    return read_store(params["path"], params["version"], params["keep"], params["record_previous"], params["lock_ttl"])


def _prepared(module, before, result):
    params = module.params
    result["created"] = prepare(params["path"], module.check_mode)
    if params["clean_staging"]:
        result["removed_staging"] = clean_staging(params["path"], params["version"], module.check_mode)
    result["changed"] = bool(result["created"] or result["removed_staging"])
    return _reread(module, before, result, staging=result["removed_staging"])


def _installed(module, before, result):
    params = module.params
    version = params["version"]
    result["changed"] = install(params["path"], version, params["digest"], module.check_mode)
    if module.check_mode and result["changed"]:
        return dict(before, installed=True, staging=[n for n in before["staging"] if n != version])
    return _reread(module, before, result)


def _current(module, before, result):
    params = module.params
    path, version, record_previous = params["path"], params["version"], params["record_previous"]
    changed, old_target = switch(path, version, record_previous, module.check_mode)
    if changed:
        result.update(changed=True, switched=True, switched_from=old_target)
    # read_store worked out what this switch prunes, sparing `version` and the `previous` it leaves.
    result["pruned"] = prune(path, before["prunable_after_install"], module.check_mode)
    if result["pruned"]:
        result["changed"] = True
    after = _reread(module, before, result, versions=result["pruned"])
    if module.check_mode:  # what the store would look like
        after = dict(after, prunable=[])
        if changed:
            after.update(current=version, current_target=f"versions/{version}", is_current=True)
            if record_previous and old_target:
                after.update(previous=before["current"], previous_target=old_target)
    return after


def _pruned(module, before, result):
    params = module.params
    path, version = params["path"], params["version"]
    result["removed_staging"] = clean_staging(path, version, module.check_mode)
    # vLLM serves `current` until the switch: with record_previous=false the switch would prune it, not this.
    names = [n for n in before["prunable_after_install"] if n != before["current"]]
    result["pruned"] = prune(path, names, module.check_mode)
    result["changed"] = bool(result["pruned"] or result["removed_staging"])
    return _reread(module, before, result, versions=result["pruned"], staging=result["removed_staging"])


def _locked(module, before, result):
    params = module.params
    path, ttl = params["path"], params["lock_ttl"]
    outcome = acquire_lock(
        path,
        params["lock_owner"],
        info=params["lock_info"],
        timeout=params["lock_timeout"],
        ttl=ttl,
        check_mode=module.check_mode,
    )
    old = outcome["taken_over_from"]
    result.update(changed=outcome["changed"], created=outcome["created"], waited=round(outcome["waited"], 1))
    if old is not None:
        result["lock_taken_over_from"] = old
        module.warn(
            f"{'would take' if module.check_mode else 'took'} over the stale lock of model store {path} from "
            f"{describe_holder(old)}: not refreshed for {old['age']} s (lock_ttl={ttl})"
        )
    # Read after the wait: another run may have changed the store while we waited for it.
    after = read_store(path, params["version"], params["keep"], params["record_previous"], ttl)
    return dict(after, lock=outcome["lock"])


def _unlocked(module, before, result):
    params = module.params
    changed, held, warning = release_lock(params["path"], params["lock_owner"], params["lock_ttl"], module.check_mode)
    result["changed"] = changed
    if warning:
        module.warn(warning)
        result["msg"] = warning
    return dict(before, lock=None if changed else held)


STATES = {
    "query": lambda module, before, result: before,
    "prepared": _prepared,
    "installed": _installed,
    "current": _current,
    "pruned": _pruned,
    "locked": _locked,
    "unlocked": _unlocked,
}


def _bad_parameters(params):
    """The message for parameters AnsibleModule's spec cannot check, or None."""
    if params["keep"] < 0:
        return f"keep must be 0 (keep all) or more, got {params['keep']}"
    if params["lock_timeout"] < 0:
        return f"lock_timeout must be 0 (do not wait) or more seconds, got {params['lock_timeout']}"
    if params["lock_ttl"] < 1:
        return f"lock_ttl must be 1 or more seconds, got {params['lock_ttl']}"
    if params["lock_owner"] is not None and not params["lock_owner"].strip():
        return "lock_owner must be a non-empty run id (or omitted)"
    if params["state"] == "prepared" and params["clean_staging"] and not params["version"]:
        return "clean_staging needs version: the staging copy it must spare"
    return None


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "version": {"type": "str"},
            "digest": {"type": "str"},
            "state": {"type": "str", "choices": list(STATES), "default": "query"},
            "keep": {"type": "int", "default": 0},
            "record_previous": {"type": "bool", "default": True},
            "clean_staging": {"type": "bool", "default": False},
            "lock_owner": {"type": "str"},
            "lock_timeout": {"type": "int", "default": 0},
            "lock_ttl": {"type": "int", "default": 3600},
            "lock_info": {"type": "dict"},
        },
        required_if=[
            ("state", "current", ["version"]),
            ("state", "installed", ["version", "digest"]),
            ("state", "pruned", ["version"]),
            ("state", "locked", ["lock_owner"]),
            ("state", "unlocked", ["lock_owner"]),
        ],
        supports_check_mode=True,
    )
    params = module.params
    path, state, owner = params["path"], params["state"], params["lock_owner"]
    message = _bad_parameters(params)
    if message:
        module.fail_json(msg=message)
    result = {"changed": False, "switched": False, "switched_from": None, "pruned": [], "created": [],
              "removed_staging": [], "waited": 0.0, "lock_taken_over_from": None}  # fmt: skip
    try:
        if state == "pruned" or (state == "prepared" and params["clean_staging"]):
            check_version(params["version"])  # before anything is removed
        if owner and state in CHANGING:
            require_lock(path, owner, params["lock_ttl"], module.check_mode)
        before = read_store(path, params["version"], params["keep"], params["record_previous"], params["lock_ttl"])
        after = STATES[state](module, before, result)
    except LockHeld as exc:
        module.fail_json(msg=str(exc), lock=exc.holder)
    except StoreError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"model store {path}: {exc}")
    if module._diff and result["changed"]:
        result["diff"] = {"before": _render(before), "after": _render(after), "before_header": path}
        result["diff"]["after_header"] = path
    for key in STORE_KEYS:
        result[key] = after[key]
    result["path"] = path
    module.exit_json(**result)


if __name__ == "__main__":
    main()
