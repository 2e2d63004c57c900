"""Whether a pod may land on a node, by Kubernetes' own rules for labels and taints.

The API emulator and the test node schedule nothing (tests/k8s/node.py takes every pod), so the rules that keep
training and inference apart are evaluated here, on the rendered pod specs and node objects:

- ``nodeSelector``: every key is a node label with exactly that value;
- required node affinity (``requiredDuringSchedulingIgnoredDuringExecution``): the terms are ORed, a term's
  ``matchExpressions`` (and ``matchFields``, ``metadata.name`` only) ANDed; an empty term matches no node;
  operators ``In``, ``NotIn`` (true when the label is absent), ``Exists``, ``DoesNotExist``, ``Gt``/``Lt``
  (the label read as an integer; absent or not an integer: false) - k8s.io/component-helpers
  scheduling/corev1/nodeaffinity;
- taints: every taint with effect ``NoSchedule`` or ``NoExecute`` needs a toleration that tolerates it (an empty
  toleration effect matches every effect; an empty key with ``Exists`` every key; ``Exists`` any value; ``Equal``,
  the default operator, the same value) - ``Toleration.ToleratesTaint`` in k8s.io/api/core/v1.
  ``PreferNoSchedule`` only steers the scheduler, so it never forbids a node.

What it leaves out: resources (capacity, GPUs), preferred affinity, pod (anti-)affinity, topology spread, node
name, unschedulable nodes. ``reasons`` returns why a pod cannot land (empty: it can).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

HARD_EFFECTS = ("NoSchedule", "NoExecute")


def _expression_matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = expression["key"], expression["operator"]
    values = [str(v) for v in expression.get("values") or []]
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        try:
            have, bound = int(labels[key]), int(values[0])
        except (KeyError, ValueError, IndexError):
            return False
        return have > bound if operator == "Gt" else have < bound
    raise ValueError(f"unknown node selector operator {operator!r}")


def _term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    labels = node["metadata"].get("labels") or {}
    node_fields = {"metadata.name": node["metadata"]["name"]}
    return all(_expression_matches(e, labels) for e in expressions) and all(
        _expression_matches(f, node_fields) for f in fields
    )


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    effect = toleration.get("effect") or ""
    if effect and effect != taint["effect"]:
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if key and key != taint["key"]:
        return False
    if not key and operator != "Exists":
        return False
    if operator == "Exists":
        return True
    return (toleration.get("value") or "") == (taint.get("value") or "")


def reasons(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> List[str]:
    """Why the pod cannot land on the node; empty when it can (as far as labels and taints go)."""
    out = []
    labels = node["metadata"].get("labels") or {}
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != str(value):
            out.append(f"nodeSelector {key}={value} (node has {labels.get(key)!r})")
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required is not None and not any(_term_matches(t, node) for t in required.get("nodeSelectorTerms") or []):
        out.append("required node affinity matches no term")
    tolerations = pod_spec.get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint["effect"] in HARD_EFFECTS and not any(tolerates(t, taint) for t in tolerations):
            out.append(f"untolerated taint {taint['key']}={taint.get('value', '')}:{taint['effect']}")
    return out


def node(name: str, labels: Dict[str, str], taints: List[Dict[str, str]]) -> Dict[str, Any]:
    """A Node object with these labels and taints."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
    }
