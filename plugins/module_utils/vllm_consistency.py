# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Are two vLLM deployments the same server? (the logic of llmops.platform.vllm_consistency)

Hybrid promotion and migration move a model from one side (staging in the cluster, or the old layout) to
another (the production hosts, or the new layout). Before answers are compared, the two sides must run the
same vLLM release, serve the same model content and use the same effective server settings: otherwise a
parity failure (or worse, a parity pass) says nothing about the model. Each side's argv is read back into
the one server configuration model (module_utils/vllm_server.py, ``parse_server_args``), so the
spellings of different renderers (systemd unit, Deployment args, the production-stack chart) compare equal
when they mean the same.
"""

from typing import Any, Dict, List, Optional

from ansible_collections.llmops.platform.plugins.module_utils.vllm_server import (
    FIELDS,
    FIELDS_BY_NAME,
    VllmConfigError,
    parse_server_args,
)

# Settings that name where a side runs, not what it serves: they differ between layouts by design. The model
# directory differs too (a PVC path against a host's versions link); its content digest is compared instead.
DEFAULT_IGNORE = ("model", "host", "port")


class ConsistencyError(Exception):
    """A side's facts cannot be read (an argv that is not vLLM's, a field name that does not exist)."""


def side_config(label: str, args: Optional[List[str]]) -> Optional[Dict[str, Any]]:
    if args is None:
        return None
    try:
        return parse_server_args([str(word) for word in args])
    except VllmConfigError as exc:
        raise ConsistencyError(f"{label}.args cannot be read as vLLM server arguments: {exc}") from None


def _shown(value: Any) -> Any:
    return sorted(value) if isinstance(value, (list, tuple)) else value


def compare_sides(
    baseline: Dict[str, Any], candidate: Dict[str, Any], ignore: Optional[List[str]] = None
) -> Dict[str, Any]:
    """Every way the candidate differs from the baseline: vLLM version, model digest, each server setting.

    A fact given for one side only is a difference (it cannot be shown equal); a fact given for neither is
    not compared and is listed in ``not_compared``."""
    ignore = list(DEFAULT_IGNORE if ignore is None else ignore)
    unknown = [name for name in ignore if name not in FIELDS_BY_NAME]
    if unknown:
        raise ConsistencyError(
            "ignore names settings that do not exist: {}; known: {}".format(
                ", ".join(unknown), ", ".join(FIELDS_BY_NAME)
            )
        )
    differences: List[Dict[str, Any]] = []
    not_compared: List[str] = []
    for key, item in (("version", "vLLM version"), ("model_digest", "model content digest")):
        base, cand = baseline.get(key), candidate.get(key)
        if base is None and cand is None:
            not_compared.append(item)
        elif base != cand:
            differences.append(dict(item=item, baseline=base, candidate=cand))
    configs = {
        label: side_config(label, side.get("args"))
        for label, side in (("baseline", baseline), ("candidate", candidate))
    }
    base_cfg, cand_cfg = configs["baseline"], configs["candidate"]
    if base_cfg is None and cand_cfg is None:
        not_compared.append("server arguments")
    elif base_cfg is None or cand_cfg is None:
        differences.append(
            dict(
                item="server arguments", baseline="given" if base_cfg else None, candidate="given" if cand_cfg else None
            )
        )
    else:
        for field in FIELDS:
            if field.name in ignore:
                continue
            base, cand = base_cfg[field.name], cand_cfg[field.name]
            if field.name == "extra_args":
                base, cand = _shown(base), _shown(cand)
            if base != cand:
                item = f"{field.flag} ({field.name})" if field.flag else field.name
                differences.append(dict(item=item, baseline=base, candidate=cand))
    return dict(
        consistent=not differences,
        differences=differences,
        not_compared=not_compared,
        ignored=ignore,
        baseline_config=base_cfg,
        candidate_config=cand_cfg,
    )


def describe(differences: List[Dict[str, Any]], baseline: str, candidate: str) -> str:
    return "; ".join(
        f"{d['item']}: {d['baseline']!r} on {baseline}, {d['candidate']!r} on {candidate}" for d in differences
    )
