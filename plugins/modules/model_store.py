#!/usr/bin/python
# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: model_store
short_description: Read, switch and prune the versioned model store of a serving host
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
      - V(query) only reads. V(prepared) creates the directories. V(installed) moves a verified staging
        copy into C(versions/). V(current) switches C(current) to O(version) and prunes.
    type: str
    choices: [query, prepared, installed, current]
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
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what a switch or a prune would change and changes nothing.
  diff_mode:
    support: full
    details: The links and the list of versions, before and after.
  platform:
    platforms: posix
seealso:
  - module: llmops.platform.model_manifest
"""

EXAMPLES = r"""
- name: Is this version already on the host?
  llmops.platform.model_store:
    path: /srv/vllm/models/merged-model
    version: 3f1c9a0be2d47c55
    keep: 3
  register: store

- name: Create the directories, copy into /srv/vllm/models/merged-model/.staging-<version>, verify it
  llmops.platform.model_store:
    path: /srv/vllm/models/merged-model
    state: prepared

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
  description: Directories created or whose mode was set (O(state=prepared)).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.platform.plugins.module_utils.model_store import (
    StoreError,
    install,
    prepare,
    prunable,
    prune,
    read_store,
    switch,
)


def _render(store):
    lines = [f"current -> {store['current_target'] or '(none)'}", f"previous -> {store['previous_target'] or '(none)'}"]
    lines += [f"versions/{v['name']}" for v in sorted(store["versions"], key=lambda v: v["name"])]
    return "\n".join(lines) + "\n"


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "version": {"type": "str"},
            "digest": {"type": "str"},
            "state": {"type": "str", "choices": ["query", "prepared", "installed", "current"], "default": "query"},
            "keep": {"type": "int", "default": 0},
            "record_previous": {"type": "bool", "default": True},
        },
        required_if=[("state", "current", ["version"]), ("state", "installed", ["version", "digest"])],
        supports_check_mode=True,
    )
    params = module.params
    path, version, keep = params["path"], params["version"], params["keep"]
    if keep < 0:
        module.fail_json(msg=f"keep must be 0 (keep all) or more, got {keep}")
    try:
        before = read_store(path, version, keep)
        result = {"changed": False, "switched": False, "switched_from": None, "pruned": [], "created": []}
        if params["state"] == "prepared":
            result["created"] = prepare(path, module.check_mode)
            result["changed"] = bool(result["created"])
            after = read_store(path, version, keep) if result["changed"] and not module.check_mode else before
        elif params["state"] == "installed":
            result["changed"] = install(path, version, params["digest"], module.check_mode)
            if module.check_mode and result["changed"]:
                after = dict(before, installed=True, staging=[n for n in before["staging"] if n != version])
            else:
                after = read_store(path, version, keep) if result["changed"] else before
        elif params["state"] == "current":
            changed, old_target = switch(path, version, params["record_previous"], module.check_mode)
            previous = before["previous"]
            if changed:
                result.update(changed=True, switched=True, switched_from=old_target)
                if params["record_previous"] and old_target:
                    previous = before["current"]
            result["pruned"] = prune(path, prunable(before["versions"], keep, {version, previous}), module.check_mode)
            if result["pruned"]:
                result["changed"] = True
            if not module.check_mode:
                after = read_store(path, version, keep) if result["changed"] else before
            else:  # what the store would look like
                after = dict(before, prunable=[])
                after["versions"] = [v for v in before["versions"] if v["name"] not in result["pruned"]]
                if changed:
                    after.update(current=version, current_target=f"versions/{version}", is_current=True)
                    if params["record_previous"] and old_target:
                        after.update(previous=previous, previous_target=old_target)
        else:
            after = before
    except StoreError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"model store {path}: {exc}")
    if module._diff and result["changed"]:
        result["diff"] = {"before": _render(before), "after": _render(after), "before_header": path}
        result["diff"]["after_header"] = path
    for key in ("versions", "current", "previous", "installed", "is_current", "staging", "staged_bytes",
                "free_bytes", "prunable", "rsync_path"):  # fmt: skip
        result[key] = after[key]
    result["path"] = path
    module.exit_json(**result)


if __name__ == "__main__":
    main()
