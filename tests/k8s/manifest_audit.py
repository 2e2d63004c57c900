"""Audits of a set of rendered manifests as a whole: API access and where secrets can show up.

* ``api_access_problems``: no workload gets a ServiceAccount token or an API permission it does not use.
  No Role, ClusterRole, RoleBinding or ClusterRoleBinding is rendered; every ServiceAccount and every pod
  template has ``automountServiceAccountToken: false``; every pod names its ``serviceAccountName`` and that
  account is among the rendered ones (``external_accounts``: ones another role renders).
* ``secret_exposure_problems``: a Secret's value never appears in a container's command, args or plain
  environment, nor in a ConfigMap; and no command line expands an environment variable that comes from a
  Secret (``$(VAR)`` by the kubelet; ``$VAR`` or ``${VAR}`` in a shell script, except as an argument of the
  shell's own ``printf``, a builtin that starts no process), because an expanded argv is readable by anyone
  who can list the node's processes (``/proc/PID/cmdline``).
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterable, List

from pod_security import pod_templates

RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")


def _name(doc: Dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def api_access_problems(docs: Iterable[Dict[str, Any]], external_accounts: Iterable[str] = ()) -> List[str]:
    docs = list(docs)
    problems = [f"{_name(d)}: no workload calls the Kubernetes API" for d in docs if d.get("kind") in RBAC_KINDS]
    accounts = {d["metadata"]["name"] for d in docs if d.get("kind") == "ServiceAccount"}
    for doc in docs:
        if doc.get("kind") == "ServiceAccount" and doc.get("automountServiceAccountToken") is not False:
            problems.append(f"{_name(doc)}: automountServiceAccountToken is not false")
        for template in pod_templates(doc):
            spec = template["spec"]
            if spec.get("automountServiceAccountToken") is not False:
                problems.append(f"{_name(doc)}: the pod's automountServiceAccountToken is not false")
            account = spec.get("serviceAccountName")
            if not account:
                problems.append(f"{_name(doc)}: the pod runs under the namespace's default ServiceAccount")
            elif account not in accounts and account not in external_accounts:
                problems.append(f"{_name(doc)}: serviceAccountName {account} is not rendered")
    return problems


def _env_from_secrets(container: Dict[str, Any]) -> List[str]:
    return [e["name"] for e in container.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})]


def secret_exposure_problems(docs: Iterable[Dict[str, Any]], secret_values: Iterable[str]) -> List[str]:
    docs = list(docs)
    values = [v for v in secret_values if v]
    problems = []
    for doc in docs:
        if doc.get("kind") == "ConfigMap":
            text = json.dumps(doc.get("data") or {}) + json.dumps(doc.get("binaryData") or {})
            problems += [f"{_name(doc)}: holds a Secret value" for v in values if v in text]
        for template in pod_templates(doc):
            for field in ("initContainers", "containers"):
                for container in template["spec"].get(field) or []:
                    where = f"{_name(doc)} container {container.get('name')}"
                    argv = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
                    joined = "\n".join(argv)
                    plain = json.dumps([e for e in container.get("env") or [] if "value" in e])
                    problems += [f"{where}: a Secret value is on its command line" for v in values if v in joined]
                    problems += [f"{where}: a Secret value is in its plain environment" for v in values if v in plain]
                    for name in _env_from_secrets(container):
                        for statement in _expansions(argv, name):
                            problems.append(
                                f"{where}: {statement!r} puts {name}, which comes from a Secret, on a command line"
                            )
    return problems


# Shell statement boundaries: newline, ; | & and the braces of a function body.
_STATEMENT_RE = re.compile(r"[\n;|&{}]")
SHELLS = ("sh", "bash", "ash", "dash", "/bin/sh", "/bin/bash")


def _expansions(argv: List[str], name: str) -> List[str]:
    """The statements of ``argv`` that expand ``name`` into a process's arguments."""
    kubelet = "$(" + name + ")"
    shell = re.compile(r"\$(\{" + re.escape(name) + r"[}:#%/-]|" + re.escape(name) + r"\b)")
    found = [word for word in argv if kubelet in word]
    if len(argv) >= 3 and argv[0] in SHELLS and argv[1] == "-c":
        for statement in _STATEMENT_RE.split(argv[2]):
            words = statement.split()
            if shell.search(statement) and words and words[0] != "printf":
                found.append(statement.strip())
    return found
