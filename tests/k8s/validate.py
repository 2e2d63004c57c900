"""Strict schema validation of rendered Kubernetes manifests against several Kubernetes versions.

Uses PyPI ``kubernetes-validate`` (the OpenAPI schemas of each Kubernetes release, in strict mode:
unknown fields are errors, as ``kubectl apply --validate=strict`` makes them). The API emulator
validates nothing, so every manifest a role renders goes through here too.

    python tests/k8s/validate.py FILE_OR_DIR...                 # YAML files, every document
    python tests/k8s/validate.py --role vllm_k8s [-e @vars.yml] # render the role, validate all it renders

Kinds without a built-in schema (custom resources such as monitoring.coreos.com/v1 ServiceMonitor)
are checked against the small structural schemas in CUSTOM_SCHEMAS, or reported as an error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
# Oldest and newest releases still in support when this was written, plus one between; the
# installed kubernetes-validate ships schemas for 1.25 to 1.37.
DEFAULT_VERSIONS = ("1.31", "1.33", "1.35")

_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": _LABELS, "matchExpressions": {"type": "array"}},
}
# prometheus-operator's ServiceMonitor (monitoring.coreos.com/v1), the fields this collection uses,
# strict like the built-in schemas. Source: the CRD's openAPIV3Schema in prometheus-operator.
CUSTOM_SCHEMAS: Dict[str, Dict[str, Any]] = {
    "monitoring.coreos.com/v1/ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "namespace": {"type": "string"},
                    "labels": _LABELS,
                    "annotations": _LABELS,
                },
                "additionalProperties": False,
            },
            "spec": {
                "type": "object",
                "required": ["selector"],
                "additionalProperties": False,
                "properties": {
                    "selector": _SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "jobLabel": {"type": "string"},
                    "endpoints": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "targetPort": {"type": ["string", "integer"]},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": {
                                    "type": "string",
                                    "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
                                },
                                "scrapeTimeout": {"type": "string"},
                                "honorLabels": {"type": "boolean"},
                                "authorization": {"type": "object"},
                                "bearerTokenSecret": {"type": "object"},
                                "relabelings": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "properties": {
                                            "sourceLabels": {"type": "array", "items": {"type": "string"}},
                                            "separator": {"type": "string"},
                                            "targetLabel": {"type": "string"},
                                            "regex": {"type": "string"},
                                            "modulus": {"type": "integer"},
                                            "replacement": {"type": "string"},
                                            "action": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    }
}


@dataclass
class Problem:
    source: str
    kind: str
    name: str
    version: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.kind}/{self.name} (Kubernetes {self.version}): {self.message}"


def validate_manifest(
    doc: Dict[str, Any], versions: Sequence[str] = DEFAULT_VERSIONS, source: str = "<doc>"
) -> List[Problem]:
    """Every problem of one manifest against each Kubernetes version (empty: valid everywhere)."""
    kind = str(doc.get("kind", "?"))
    name = str((doc.get("metadata") or {}).get("name", "?"))
    # The schemas are JSON: a YAML value that JSON cannot hold (a date, a set) is a problem too.
    try:
        doc = json.loads(json.dumps(doc))
    except TypeError as exc:
        return [Problem(source, kind, name, "-", f"not JSON-serialisable: {exc}")]
    problems = []
    custom = CUSTOM_SCHEMAS.get(f"{doc.get('apiVersion')}/{kind}")
    for version in versions:
        try:
            if custom is not None:
                jsonschema.validate(doc, custom)
            else:
                kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(Problem(source, kind, name, version, f"no schema for {doc.get('apiVersion')} {kind}"))
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            where = "/".join(str(p) for p in getattr(exc, "absolute_path", getattr(exc, "path", [])))
            problems.append(Problem(source, kind, name, version, f"{where or '<root>'}: {exc.message}"))
        if custom is not None:
            break  # one schema for every Kubernetes version
    return problems


def load_documents(paths: Iterable[Path]) -> List[tuple]:
    """(source, document) for every YAML document in the files (directories: *.yml, *.yaml)."""
    docs = []
    for path in paths:
        files = (
            sorted(p for p in Path(path).rglob("*") if p.suffix in (".yml", ".yaml"))
            if Path(path).is_dir()
            else [Path(path)]
        )
        for file in files:
            for index, doc in enumerate(yaml.safe_load_all(file.read_text())):
                if doc:
                    docs.append((f"{file}#{index}", doc))
    return docs


def render_role(role: str, extra_vars: Sequence[str], out_dir: Path) -> Path:
    """Run the role in render-only mode (no cluster needed) and return the directory it wrote."""
    play = out_dir / "render.yml"
    play.write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n"
        f"  roles:\n    - role: llmops.platform.{role}\n"
    )
    rendered = out_dir / "rendered"
    command = [
        "ansible-playbook",
        "-i",
        "localhost,",
        str(play),
        "-e",
        f"{role}_render_dir={rendered}",
        "-e",
        f"{role}_apply=false",
        "-e",
        "ansible_python_interpreter=" + sys.executable,
    ]
    for item in extra_vars:
        command += ["-e", item]
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
    }
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"rendering {role} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return rendered


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("paths", nargs="*", type=Path, help="YAML files or directories")
    parser.add_argument(
        "--version", action="append", dest="versions", help=f"Kubernetes version (default {DEFAULT_VERSIONS})"
    )
    parser.add_argument("--role", help="render this role of llmops.platform (render-only mode) and validate its output")
    parser.add_argument(
        "-e", "--extra-vars", action="append", default=[], help="passed to ansible-playbook with --role"
    )
    args = parser.parse_args(argv)
    versions = tuple(args.versions or DEFAULT_VERSIONS)
    with tempfile.TemporaryDirectory(prefix="k8s-validate-") as tmp:
        paths = list(args.paths)
        if args.role:
            paths.append(render_role(args.role, args.extra_vars, Path(tmp)))
        if not paths:
            parser.error("give files, directories or --role")
        # Helm values files are not manifests.
        docs = [(s, d) for s, d in load_documents(paths) if isinstance(d, dict) and "kind" in d]
        problems = [p for source, doc in docs for p in validate_manifest(doc, versions, source)]
    for problem in problems:
        print(problem, file=sys.stderr)
    print(
        f"{len(docs)} manifest(s) checked against Kubernetes {', '.join(versions)} (strict): {len(problems)} problem(s)"
    )
    return 1 if problems or not docs else 0


if __name__ == "__main__":
    sys.exit(main())
