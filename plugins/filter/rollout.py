# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that plan a rollout over many hosts (plugins/module_utils/rollout.py).

Documentation lives next to this file, one YAML file per filter (rollout_batch.yml, ...).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

from ansible_collections.llmops.platform.plugins.module_utils import rollout as _rollout


def _wrap(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise AnsibleFilterError(str(exc)) from exc


def rollout_batch(hosts, hostvars, variable=_rollout.ROLLOUT_BATCH_VARIABLE, default=_rollout.DEFAULT_BATCH):
    """The play `serial:` value every host of `hosts` agrees on (through `hostvars`)."""
    if hosts and not hostvars:
        # --syntax-check and --list-hosts/--list-tasks template `serial` without running the plays before it,
        # so hostvars does not exist yet; one host at a time is the answer that cannot do harm.
        Display().warning(
            f"rollout_batch: hostvars is empty, so {variable} cannot be read (a --syntax-check or --list-* run, or "
            "the first play of a playbook); using batches of one host"
        )
        return 1
    return _wrap(_rollout.rollout_batch, hosts, hostvars, variable, default)


def fanout_plan(targets, seeds, fanout=1, controller=_rollout.DEFAULT_CONTROLLER):
    """Rounds of {target, source} copies of a tree distribution."""
    return _wrap(_rollout.fanout_plan, targets, seeds, fanout, controller)


def copy_chunks(files, chunk_bytes):
    """A model manifest's files in copy chunks of about chunk_bytes."""
    return _wrap(_rollout.copy_chunks, files, chunk_bytes)


def copy_progress(chunk, started_at, now=None):
    """Progress text after a chunk from copy_chunks is copied."""
    return _wrap(_rollout.copy_progress, chunk, started_at, now)


class FilterModule:
    def filters(self):
        return {
            "rollout_batch": rollout_batch,
            "fanout_plan": fanout_plan,
            "copy_chunks": copy_chunks,
            "copy_progress": copy_progress,
        }
