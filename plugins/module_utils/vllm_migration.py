# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration's bookkeeping (playbooks/migrate.yml, role vllm_migration): which phase the record allows, how long
the new side has served alone. Pure Python; the record is the ConfigMap's data (strings)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, Optional

PHASES = ("prepare", "parallel", "cutover", "soak", "cleanup", "rollback", "status")
DIRECTIONS = ("to_internal", "to_external")
# A record in one of these phases leaves no migration under way.
FINISHED = ("none", "cleaned", "rolled-back")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _parse(value: str) -> Optional[dt.datetime]:
    try:
        return dt.datetime.strptime(value, TIME_FORMAT).replace(tzinfo=dt.timezone.utc)
    except (TypeError, ValueError):
        return None


def check(
    record: Dict[str, Any], *, phase: str, direction: str, soak_hours: float, force: bool, now: str
) -> Dict[str, Any]:
    """{problem ("" when the phase may run), recorded (the record's phase), elapsed_hours since the cutover (None
    without one), remaining_hours of the soak window, cleanup_allowed}."""
    record = record or {}
    recorded = record.get("phase") or "none"
    moment = _parse(now) or dt.datetime.now(dt.timezone.utc)
    cut = _parse(record.get("cutover_at") or "")
    elapsed = round((moment - cut).total_seconds() / 3600, 2) if cut else None
    remaining = max(round(soak_hours - elapsed, 2), 0.0) if elapsed is not None else None
    same = (record.get("direction") or direction) == direction
    problem = ""
    if phase not in PHASES:
        problem = f"vllm_migration_phase must be one of {', '.join(PHASES)}"
    elif direction not in DIRECTIONS:
        problem = f"vllm_migration_direction must be one of {', '.join(DIRECTIONS)}"
    elif phase in ("soak", "status"):
        problem = ""
    elif not same and recorded not in FINISHED:
        problem = (
            f"a migration {record.get('direction')} is in phase {recorded}; finish it (cleanup) or roll it back "
            f"before a migration {direction}"
        )
    elif phase == "prepare" and recorded in ("cut-over", "cleaned") and same:
        problem = f"this migration is already {recorded}; preparing again would not change where traffic goes"
    elif phase == "parallel" and recorded not in ("prepared", "parallel-passed", "parallel-failed", "rolled-back"):
        problem = (
            "the parallel run compares two running sides: run vllm_migration_phase=prepare first "
            f"(the record says {recorded})"
        )
    elif phase == "cutover" and recorded not in ("parallel-passed", "cut-over"):
        problem = f"a cutover needs a passed parallel run (the record says {recorded}"
        if recorded == "parallel-failed":
            problem += f"; the last parallel run failed, see its report {record.get('report', '')}"
        problem += ")"
    elif phase == "cleanup" and recorded not in ("cut-over", "cleaned"):
        problem = f"cleanup removes the old side after a cutover, and the record says {recorded}"
    elif phase == "cleanup" and recorded == "cut-over" and elapsed is not None and elapsed < soak_hours and not force:
        problem = (
            f"the new side has served alone for {elapsed:.1f} h of the {soak_hours:.1f} h soak window (cut over at "
            f"{record.get('cutover_at')}): the old side stays for a rollback. Wait {remaining:.1f} h more, or set "
            "vllm_migration_force=true (vllm_migration_soak_hours sets the window)"
        )
    elif phase == "rollback" and recorded == "cleaned":
        problem = (
            f"the old side was removed at cleanup ({record.get('cleaned_at', '?')}); deploy it again with its own "
            "playbook (internal.yml or external.yml) and point the endpoint at it (endpoint.yml)"
        )
    return {
        "problem": problem,
        "recorded": recorded,
        "elapsed_hours": elapsed,
        "remaining_hours": remaining,
        "cleanup_allowed": recorded == "cut-over" and (force or (elapsed is not None and elapsed >= soak_hours)),
    }
