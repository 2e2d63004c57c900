# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which migration phase the record allows (vllm_migration_check.yml documents it)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.module_utils.vllm_migration import check


def vllm_migration_check(record, *, phase, direction, soak_hours=48, force=False, now=""):
    """The problem with running `phase` given the record ("" when none), and the soak window's figures."""
    if record is not None and not isinstance(record, dict):
        raise AnsibleFilterError("vllm_migration_check expects the record's data (a mapping)")
    try:
        hours = float(soak_hours)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"vllm_migration_soak_hours must be a number of hours, not {soak_hours!r}") from None
    if hours < 0:
        raise AnsibleFilterError(f"vllm_migration_soak_hours must be >= 0, not {hours}")
    return check(
        dict(record or {}),
        phase=str(phase),
        direction=str(direction),
        soak_hours=hours,
        force=bool(force),
        now=str(now),
    )


class FilterModule:
    def filters(self):
        return {"vllm_migration_check": vllm_migration_check}
